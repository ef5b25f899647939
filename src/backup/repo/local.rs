//! The local repository: files under a directory, each written to a hidden temporary
//! name, fsynced, renamed into place and its directory fsynced, so a crash leaves either
//! the whole object or none. Hidden names are never listed.

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
        check_key(key)?;
        Ok(self.root.join(key))
    }

    pub async fn put(&self, key: &str, data: Bytes) -> anyhow::Result<()> {
        let mut writer = self.writer(key).await?;
        writer.write(data).await?;
        writer.finish().await
    }

    pub async fn get(&self, key: &str) -> anyhow::Result<Option<Bytes>> {
        let path = self.path(key)?;
        match tokio::fs::read(&path).await {
            Ok(data) => Ok(Some(Bytes::from(data))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("read {}", path.display())),
        }
    }

    pub async fn get_stream(&self, key: &str) -> anyhow::Result<ByteStream> {
        let path = self.path(key)?;
        let file = tokio::fs::File::open(&path)
            .await
            .with_context(|| format!("open {}", path.display()))?;
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
            move || -> anyhow::Result<File> {
                fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
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
        let meta = entry
            .metadata()
            .with_context(|| format!("stat {}", path.display()))?;
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
