//! The local repository: files under a directory, each written to a hidden temporary
//! name, fsynced, renamed into place and its directory fsynced, so a crash leaves either
//! the whole object or none. Hidden names are never listed.
//!
//! The directory belongs to PostgreSQL's user (its `wal push` writes here) while the agent
//! may run as root: no path below the root is followed through a symbolic link, objects
//! are opened with O_NOFOLLOW and must be regular files, and temporary files are created
//! new, so a link planted here never makes root read, create or remove anything
//! elsewhere.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use bytes::Bytes;
use futures::StreamExt;

use super::{check_key, ByteStream, ObjectInfo};

pub struct LocalRepo {
    root: PathBuf,
}

impl LocalRepo {
    pub fn new(root: &Path) -> LocalRepo {
        LocalRepo {
            root: root.to_owned(),
        }
    }

    pub fn describe(&self) -> String {
        self.root.display().to_string()
    }

    fn path(&self, key: &str) -> anyhow::Result<PathBuf> {
        resolve(&self.root, key)
    }

    /// The object as a regular file, opened without following a link (and without
    /// blocking on a FIFO); `None` if there is none.
    fn open(&self, key: &str) -> anyhow::Result<Option<File>> {
        let path = self.path(key)?;
        crate::safe_file::open_regular_if_exists(&path)
            .with_context(|| format!("open {} in the repository", path.display()))
    }

    pub async fn put(&self, key: &str, data: Bytes) -> anyhow::Result<()> {
        let mut writer = self.writer(key).await?;
        writer.write(data).await?;
        writer.finish().await
    }

    pub async fn get(&self, key: &str) -> anyhow::Result<Option<Bytes>> {
        let path = self.root.join(key);
        let Some(mut file) = self.open(key)? else {
            return Ok(None);
        };
        tokio::task::spawn_blocking(move || {
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut file, &mut data)
                .with_context(|| format!("read {}", path.display()))?;
            Ok(Some(Bytes::from(data)))
        })
        .await?
    }

    pub async fn get_stream(&self, key: &str) -> anyhow::Result<ByteStream> {
        let path = self.root.join(key);
        let file = self
            .open(key)?
            .with_context(|| format!("open {}: not found", path.display()))?;
        let file = tokio::fs::File::from_std(file);
        let stream = tokio_util::io::ReaderStream::with_capacity(file, 1 << 20);
        Ok(stream
            .map(move |r| r.with_context(|| format!("read {}", path.display())))
            .boxed())
    }

    pub async fn list(&self, prefix: &str) -> anyhow::Result<Vec<ObjectInfo>> {
        let root = self.root.clone();
        let prefix = prefix.to_owned();
        tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            walk(&root, &root, &prefix, &mut out)?;
            Ok(out)
        })
        .await?
    }

    pub async fn delete(&self, key: &str) -> anyhow::Result<()> {
        let path = self.path(key)?;
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).with_context(|| format!("delete {}", path.display())),
        }
    }

    /// Removes temporary files older than `age` that a killed writer left behind.
    pub async fn remove_stale_temps(&self, age: std::time::Duration) -> anyhow::Result<usize> {
        let root = self.root.clone();
        tokio::task::spawn_blocking(move || {
            let mut removed = 0;
            remove_temps(&root, age, &mut removed)?;
            Ok(removed)
        })
        .await?
    }

    pub async fn writer(&self, key: &str) -> anyhow::Result<LocalWriter> {
        let path = self.path(key)?;
        let dir = path.parent().context("key has a directory")?.to_owned();
        let name = path
            .file_name()
            .context("key has a name")?
            .to_string_lossy()
            .into_owned();
        let temp = dir.join(format!(
            ".{name}.{}.{}.tmp",
            std::process::id(),
            rand::random::<u32>()
        ));
        let file = tokio::task::spawn_blocking({
            let (dir, temp) = (dir.clone(), temp.clone());
            let (root, key) = (self.root.clone(), key.to_owned());
            move || -> anyhow::Result<File> {
                fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
                // Again now that the directories exist: none of them is a link.
                resolve(&root, &key)?;
                crate::safe_file::create_new(&temp, 0o644)
                    .with_context(|| format!("create {}", temp.display()))
            }
        })
        .await??;
        Ok(LocalWriter {
            file: Some(file),
            temp,
            path,
            renamed: false,
        })
    }
}

/// The path of `key` under `root`; every directory below the root on the way must be a
/// real directory (or not exist yet), never a symbolic link.
fn resolve(root: &Path, key: &str) -> anyhow::Result<PathBuf> {
    check_key(key)?;
    let mut dir = root.to_owned();
    let mut parts: Vec<&str> = key.split('/').collect();
    parts.pop();
    for part in parts {
        dir.push(part);
        match fs::symlink_metadata(&dir) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => anyhow::bail!(
                "{} in the repository is not a directory (a symbolic link?); refusing to go \
                 through it",
                dir.display()
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
            Err(e) => return Err(e).with_context(|| format!("inspect {}", dir.display())),
        }
    }
    Ok(root.join(key))
}

/// Appends `root`-relative keys under `dir` that start with `prefix`, skipping hidden
/// (temporary) names.
fn walk(root: &Path, dir: &Path, prefix: &str, out: &mut Vec<ObjectInfo>) -> anyhow::Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("list {}", dir.display())),
    };
    for entry in entries {
        let entry = entry.with_context(|| format!("list {}", dir.display()))?;
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let path = entry.path();
        let key = path
            .strip_prefix(root)
            .unwrap_or(&path)
            .to_string_lossy()
            .into_owned();
        // Not followed: a link is neither a directory to walk nor an object.
        let meta = entry
            .metadata()
            .with_context(|| format!("stat {}", path.display()))?;
        if meta.file_type().is_symlink() {
            continue;
        }
        if meta.is_dir() {
            // Only descend where keys with this prefix can be.
            if prefix.starts_with(&format!("{key}/"))
                || key.starts_with(prefix)
                || prefix.is_empty()
            {
                walk(root, &path, prefix, out)?;
            }
        } else if key.starts_with(prefix) {
            out.push(ObjectInfo {
                key,
                size: meta.len(),
            });
        }
    }
    Ok(())
}

fn remove_temps(dir: &Path, age: std::time::Duration, removed: &mut usize) -> anyhow::Result<()> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let Ok(meta) = entry.metadata() else { continue };
        if meta.is_dir() {
            remove_temps(&path, age, removed)?;
        } else if name.starts_with('.') && name.ends_with(".tmp") {
            let old = meta
                .modified()
                .ok()
                .and_then(|m| m.elapsed().ok())
                .is_some_and(|e| e > age);
            if old && fs::remove_file(&path).is_ok() {
                *removed += 1;
            }
        }
    }
    Ok(())
}

pub struct LocalWriter {
    file: Option<File>,
    temp: PathBuf,
    path: PathBuf,
    renamed: bool,
}

impl LocalWriter {
    pub async fn write(&mut self, chunk: Bytes) -> anyhow::Result<()> {
        let mut file = self.file.take().context("writer already finished")?;
        let temp = self.temp.clone();
        let file = tokio::task::spawn_blocking(move || -> anyhow::Result<File> {
            file.write_all(&chunk)
                .with_context(|| format!("write {}", temp.display()))?;
            Ok(file)
        })
        .await??;
        self.file = Some(file);
        Ok(())
    }

    pub async fn finish(mut self) -> anyhow::Result<()> {
        let file = self.file.take().context("writer already finished")?;
        let (temp, path) = (self.temp.clone(), self.path.clone());
        self.renamed = true;
        tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
            let synced = file
                .sync_all()
                .with_context(|| format!("fsync {}", temp.display()));
            drop(file);
            if let Err(e) = synced.and_then(|()| {
                fs::rename(&temp, &path).with_context(|| format!("rename to {}", path.display()))
            }) {
                let _ = fs::remove_file(&temp);
                return Err(e);
            }
            if let Some(dir) = path.parent() {
                File::open(dir)
                    .and_then(|d| d.sync_all())
                    .with_context(|| format!("fsync {}", dir.display()))?;
            }
            Ok(())
        })
        .await?
    }

    pub async fn abort(self) {
        drop(self);
    }
}

impl Drop for LocalWriter {
    fn drop(&mut self) {
        // Not finished (aborted, failed or cancelled): leave no temporary file behind.
        if !self.renamed {
            self.file.take();
            let _ = fs::remove_file(&self.temp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn links_planted_in_the_repository_are_never_followed() {
        let dir = tempfile::tempdir().unwrap();
        let (root, elsewhere) = (dir.path().join("repo"), dir.path().join("elsewhere"));
        fs::create_dir_all(root.join("base/20260101T000000Z")).unwrap();
        fs::create_dir_all(&elsewhere).unwrap();
        fs::write(elsewhere.join("precious"), "keep").unwrap();
        let repo = LocalRepo::new(&root);
        // A directory of the repository replaced by a link to somewhere else.
        std::os::unix::fs::symlink(&elsewhere, root.join("wal")).unwrap();
        assert!(repo.put("wal/precious", Bytes::from("x")).await.is_err());
        assert!(repo.get("wal/precious").await.is_err());
        assert!(repo.delete("wal/precious").await.is_err());
        assert!(repo.list("wal/").await.unwrap().is_empty());
        // An object that is a link, or a FIFO.
        let id = root.join("base/20260101T000000Z");
        std::os::unix::fs::symlink(elsewhere.join("precious"), id.join("manifest")).unwrap();
        assert!(repo.get("base/20260101T000000Z/manifest").await.is_err());
        nix::unistd::mkfifo(&id.join("pgdata.tar.zst"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        assert!(repo
            .get_stream("base/20260101T000000Z/pgdata.tar.zst")
            .await
            .is_err());
        assert_eq!(
            repo.list("base/").await.unwrap(),
            vec![ObjectInfo {
                key: "base/20260101T000000Z/pgdata.tar.zst".into(),
                size: 0
            }],
            "links are not listed"
        );
        assert_eq!(
            fs::read_to_string(elsewhere.join("precious")).unwrap(),
            "keep"
        );
    }
}
