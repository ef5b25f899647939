//! The S3-compatible repository (AWS S3, MinIO, Cloudflare R2, OCI Object Storage) through
//! `object_store`, which signs requests and retries. A PUT is atomic on S3; a streamed
//! upload is a multipart upload, invisible until completed.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::{ClientOptions, ObjectStore, RetryConfig, WriteMultipart};

use super::{check_key, ByteStream, ObjectInfo};
use crate::config::S3Config;

pub struct S3Repo {
    store: AmazonS3,
    /// For streamed downloads of large objects: the same, with a request limit of hours.
    streamer: AmazonS3,
    prefix: String,
    description: String,
}

impl S3Repo {
    pub fn new(config: &S3Config) -> anyhow::Result<S3Repo> {
        let store = Self::client(config, config.timeout)?;
        let streamer = Self::client(config, Duration::from_secs(6 * 3600))?;
        Ok(S3Repo {
            store,
            streamer,
            prefix: config.prefix.clone(),
            description: describe(config),
        })
    }

    fn client(config: &S3Config, timeout: Duration) -> anyhow::Result<AmazonS3> {
        // AWS_* variables first, then the file and the config file's own keys win.
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(&config.bucket)
            .with_region(&config.region)
            .with_virtual_hosted_style_request(!config.path_style)
            .with_retry(RetryConfig {
                max_retries: 2,
                retry_timeout: timeout * 2,
                ..RetryConfig::default()
            })
            .with_client_options(
                ClientOptions::new()
                    .with_connect_timeout(Duration::from_secs(5).min(config.timeout))
                    .with_timeout(timeout)
                    .with_allow_http(true),
            );
        if let Some(endpoint) = &config.endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        if let Some(file) = &config.credentials_file {
            let credentials = read_credentials(file)?;
            builder = builder
                .with_access_key_id(credentials.key_id)
                .with_secret_access_key(credentials.secret);
            if let Some(token) = credentials.token {
                builder = builder.with_token(token);
            }
        }
        builder
            .build()
            .with_context(|| format!("configure the S3 repository {}", describe(config)))
    }

    pub fn describe(&self) -> String {
        self.description.clone()
    }

    fn path(&self, key: &str) -> anyhow::Result<ObjectPath> {
        check_key(key)?;
        Ok(if self.prefix.is_empty() {
            ObjectPath::from(key)
        } else {
            ObjectPath::from(format!("{}/{key}", self.prefix))
        })
    }

    fn context(&self, verb: &str, key: &str) -> String {
        format!("{verb} {key} in {}", self.description)
    }

    pub async fn put(&self, key: &str, data: Bytes) -> anyhow::Result<()> {
        self.store
            .put(&self.path(key)?, data.into())
            .await
            .with_context(|| self.context("upload", key))?;
        Ok(())
    }

    pub async fn get(&self, key: &str) -> anyhow::Result<Option<Bytes>> {
        match self.store.get(&self.path(key)?).await {
            Ok(result) => Ok(Some(
                result
                    .bytes()
                    .await
                    .with_context(|| self.context("download", key))?,
            )),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e).with_context(|| self.context("download", key)),
        }
    }

    pub async fn get_stream(&self, key: &str) -> anyhow::Result<ByteStream> {
        let result = self
            .streamer
            .get(&self.path(key)?)
            .await
            .with_context(|| self.context("download", key))?;
        let what = self.context("download", key);
        Ok(result
            .into_stream()
            .map_err(move |e| anyhow::Error::new(e).context(what.clone()))
            .boxed())
    }

    pub async fn list(&self, prefix: &str) -> anyhow::Result<Vec<ObjectInfo>> {
        // object_store lists by directory; filter the last part of the prefix ourselves.
        let (dir, _) = prefix.rsplit_once('/').unwrap_or(("", prefix));
        let base = match (self.prefix.is_empty(), dir.is_empty()) {
            (true, true) => None,
            (true, false) => Some(ObjectPath::from(dir)),
            (false, true) => Some(ObjectPath::from(self.prefix.as_str())),
            (false, false) => Some(ObjectPath::from(format!("{}/{dir}", self.prefix))),
        };
        let strip = if self.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.prefix)
        };
        let objects: Vec<_> = self
            .store
            .list(base.as_ref())
            .try_collect()
            .await
            .with_context(|| self.context("list", prefix))?;
        Ok(objects
            .into_iter()
            .filter_map(|o| {
                let key = o.location.as_ref().strip_prefix(&strip)?.to_owned();
                key.starts_with(prefix)
                    .then_some(ObjectInfo { key, size: o.size })
            })
            .collect())
    }

    pub async fn delete(&self, key: &str) -> anyhow::Result<()> {
        match self.store.delete(&self.path(key)?).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e).with_context(|| self.context("delete", key)),
        }
    }

    pub async fn writer(&self, key: &str) -> anyhow::Result<S3Writer> {
        let upload = self
            .store
            .put_multipart(&self.path(key)?)
            .await
            .with_context(|| self.context("start uploading", key))?;
        Ok(S3Writer {
            upload: WriteMultipart::new_with_chunk_size(upload, 16 << 20),
            what: self.context("upload", key),
        })
    }
}

pub struct S3Writer {
    upload: WriteMultipart,
    what: String,
}

impl S3Writer {
    pub async fn write(&mut self, chunk: Bytes) -> anyhow::Result<()> {
        // At most a few parts in flight: memory stays bounded, uploads overlap.
        self.upload
            .wait_for_capacity(4)
            .await
            .with_context(|| self.what.clone())?;
        self.upload.put(chunk);
        Ok(())
    }

    pub async fn finish(self) -> anyhow::Result<()> {
        self.upload
            .finish()
            .await
            .with_context(|| self.what.clone())?;
        Ok(())
    }

    pub async fn abort(self) {
        let _ = self.upload.abort().await;
    }
}

fn describe(config: &S3Config) -> String {
    format!(
        "s3://{}/{} ({})",
        config.bucket,
        config.prefix,
        config.endpoint.as_deref().unwrap_or("AWS")
    )
}

struct Credentials {
    key_id: String,
    secret: String,
    token: Option<String>,
}

/// `aws_access_key_id = …` / `aws_secret_access_key = …` (optionally
/// `aws_session_token`), as in ~/.aws/credentials or as KEY=value lines. The file must
/// not be readable by group or others.
fn read_credentials(path: &Path) -> anyhow::Result<Credentials> {
    let meta = std::fs::metadata(path)
        .with_context(|| format!("read S3 credentials {}", path.display()))?;
    anyhow::ensure!(
        meta.mode() & 0o077 == 0,
        "S3 credentials file {} is readable by group or others (mode {:o}); chmod 600 it",
        path.display(),
        meta.mode() & 0o777
    );
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("read S3 credentials {}", path.display()))?;
    let mut key_id = None;
    let mut secret = None;
    let mut token = None;
    for line in text.lines() {
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let v = v.trim().trim_matches('"').to_owned();
        match k.trim().to_ascii_lowercase().as_str() {
            "aws_access_key_id" => key_id = Some(v),
            "aws_secret_access_key" => secret = Some(v),
            "aws_session_token" => token = Some(v),
            _ => {}
        }
    }
    match (key_id, secret) {
        (Some(key_id), Some(secret)) => Ok(Credentials {
            key_id,
            secret,
            token,
        }),
        _ => anyhow::bail!(
            "S3 credentials file {} needs aws_access_key_id and aws_secret_access_key",
            path.display()
        ),
    }
}
