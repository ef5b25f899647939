//! The backup repository: one small interface over a local directory (`local`) and
//! S3-compatible object storage (`s3`, through the `object_store` crate). Keys are
//! `/`-separated paths under the repository's root. A `put` is atomic — an object is
//! either complete under its key or absent — and returns only once it is durable.
//! A `Repo` also holds the repository key: what it returns is only bytes, and manifests
//! and WAL objects are trusted only once they verify under that key.

mod local;
mod s3;

use bytes::Bytes;
use futures::stream::BoxStream;

use super::key::RepositoryKey;
use crate::config::{BackupConfig, RepositoryConfig};

pub use self::local::LocalRepo;
pub use self::s3::S3Repo;

/// A stream of an object's bytes.
pub type ByteStream = BoxStream<'static, anyhow::Result<Bytes>>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
}

/// Where the objects are.
pub enum Store {
    Local(LocalRepo),
    S3(S3Repo),
}

pub struct Repo {
    store: Store,
    key: RepositoryKey,
}

impl Repo {
    /// The configured repository with its key (which must exist: see `key.rs`).
    pub fn open(config: &BackupConfig) -> anyhow::Result<Repo> {
        let store = match &config.repository {
            RepositoryConfig::Local { path } => Store::Local(LocalRepo::new(path)),
            RepositoryConfig::S3(s3) => Store::S3(S3Repo::new(s3)?),
        };
        let key = RepositoryKey::load(&config.repository_key_file)?;
        Ok(Repo { store, key })
    }

    #[cfg(test)]
    pub fn new(store: Store, key: RepositoryKey) -> Repo {
        Repo { store, key }
    }

    /// The key manifests and WAL objects of this repository are authenticated with.
    pub fn key(&self) -> &RepositoryKey {
        &self.key
    }

    /// Where the repository is, for messages: a path or `s3://bucket/prefix (endpoint)`.
    pub fn describe(&self) -> String {
        match &self.store {
            Store::Local(r) => r.describe(),
            Store::S3(r) => r.describe(),
        }
    }

    pub async fn put(&self, key: &str, data: Bytes) -> anyhow::Result<()> {
        match &self.store {
            Store::Local(r) => r.put(key, data).await,
            Store::S3(r) => r.put(key, data).await,
        }
    }

    /// The object, or `None` if there is none under `key`.
    pub async fn get(&self, key: &str) -> anyhow::Result<Option<Bytes>> {
        match &self.store {
            Store::Local(r) => r.get(key).await,
            Store::S3(r) => r.get(key).await,
        }
    }

    pub async fn get_stream(&self, key: &str) -> anyhow::Result<ByteStream> {
        match &self.store {
            Store::Local(r) => r.get_stream(key).await,
            Store::S3(r) => r.get_stream(key).await,
        }
    }

    /// Every object whose key starts with `prefix`, sorted by key.
    pub async fn list(&self, prefix: &str) -> anyhow::Result<Vec<ObjectInfo>> {
        let mut objects = match &self.store {
            Store::Local(r) => r.list(prefix).await?,
            Store::S3(r) => r.list(prefix).await?,
        };
        objects.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(objects)
    }

    /// Deletes `key`; a key already gone is not an error.
    pub async fn delete(&self, key: &str) -> anyhow::Result<()> {
        match &self.store {
            Store::Local(r) => r.delete(key).await,
            Store::S3(r) => r.delete(key).await,
        }
    }

    /// Removes what killed writers left: a local repository's old temporary files. (On
    /// S3 an interrupted multipart upload is invisible; a bucket lifecycle rule aborts it.)
    pub async fn remove_stale_temps(&self) -> anyhow::Result<usize> {
        match &self.store {
            Store::Local(r) => {
                r.remove_stale_temps(std::time::Duration::from_secs(3600))
                    .await
            }
            Store::S3(_) => Ok(0),
        }
    }

    /// Starts a streamed upload to `key`; nothing is visible under `key` until `finish`.
    pub async fn writer(&self, key: &str) -> anyhow::Result<ObjectWriter> {
        Ok(match &self.store {
            Store::Local(r) => ObjectWriter::Local(r.writer(key).await?),
            Store::S3(r) => ObjectWriter::S3(r.writer(key).await?),
        })
    }
}

/// A streamed upload in progress.
pub enum ObjectWriter {
    Local(local::LocalWriter),
    S3(s3::S3Writer),
}

impl ObjectWriter {
    pub async fn write(&mut self, chunk: Bytes) -> anyhow::Result<()> {
        match self {
            ObjectWriter::Local(w) => w.write(chunk).await,
            ObjectWriter::S3(w) => w.write(chunk).await,
        }
    }

    /// Makes the object visible, durably.
    pub async fn finish(self) -> anyhow::Result<()> {
        match self {
            ObjectWriter::Local(w) => w.finish().await,
            ObjectWriter::S3(w) => w.finish().await,
        }
    }

    /// Drops what was written; the key stays as it was.
    pub async fn abort(self) {
        match self {
            ObjectWriter::Local(w) => w.abort().await,
            ObjectWriter::S3(w) => w.abort().await,
        }
    }
}

/// Keys must be relative, `/`-separated, without `.`/`..` or empty parts.
pub fn check_key(key: &str) -> anyhow::Result<()> {
    let ok = !key.is_empty()
        && key
            .split('/')
            .all(|p| !p.is_empty() && p != "." && p != ".." && !p.starts_with('.'));
    anyhow::ensure!(ok, "invalid repository key `{key}`");
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn keys_stay_inside_the_repository() {
        assert!(super::check_key("wal/000000010000000000000001.zst").is_ok());
        for bad in ["", "/abs", "a//b", "../x", "a/./b", ".hidden", "a/"] {
            assert!(super::check_key(bad).is_err(), "{bad}");
        }
    }
}
