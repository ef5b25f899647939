//! The consumer side of a restore, on a blocking thread: the backup's zstd tar stream
//! (arriving in chunks from the download) unpacked into the target directory, each
//! file's CRC-32C checked against the manifest, and every manifest file required.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Component, Path};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context as _;
use bytes::Bytes;

use super::manifest::FileEntry;

/// A `Read` over chunks sent from the async side.
pub struct ChunkReader {
    rx: tokio::sync::mpsc::Receiver<Bytes>,
    current: Bytes,
}

impl ChunkReader {
    pub fn new(rx: tokio::sync::mpsc::Receiver<Bytes>) -> ChunkReader {
        ChunkReader {
            rx,
            current: Bytes::new(),
        }
    }
}

impl Read for ChunkReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(chunk) => self.current = chunk,
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.current.len());
        out[..n].copy_from_slice(&self.current[..n]);
        self.current = self.current.slice(n..);
        Ok(n)
    }
}

/// Unpacks into `target` — or, with `None`, only checks every file; returns the bytes
/// of file data.
pub fn unpack(
    input: impl Read,
    target: Option<&Path>,
    files: &[FileEntry],
    progress: &AtomicU64,
) -> anyhow::Result<u64> {
    let expected: HashMap<&str, &FileEntry> = files.iter().map(|f| (f.path.as_str(), f)).collect();
    let mut seen = 0usize;
    let mut written = 0u64;
    let decoder = zstd::stream::read::Decoder::new(input).context("start decompressing")?;
    let mut archive = tar::Archive::new(decoder);
    let mut buf = vec![0u8; 1 << 20];
    for entry in archive.entries().context("read the backup's tar stream")? {
        let mut entry = entry.context("read the backup's tar stream")?;
        let path = entry.path().context("entry path")?.into_owned();
        anyhow::ensure!(
            path.components().all(|c| matches!(c, Component::Normal(_))),
            "unsafe path in backup: {}",
            path.display()
        );
        let dest = target.map(|t| t.join(&path));
        let rel = path.to_string_lossy().into_owned();
        match entry.header().entry_type() {
            tar::EntryType::Directory => {
                if let Some(dest) = &dest {
                    fs::create_dir_all(dest)
                        .with_context(|| format!("create {}", dest.display()))?;
                }
            }
            tar::EntryType::Regular => {
                let want = expected
                    .get(rel.as_str())
                    .with_context(|| format!("{rel} is in the backup but not in its manifest"))?;
                let mut out: Box<dyn Write> = match &dest {
                    Some(dest) => {
                        if let Some(parent) = dest.parent() {
                            fs::create_dir_all(parent)
                                .with_context(|| format!("create {}", parent.display()))?;
                        }
                        let file = File::create(dest)
                            .with_context(|| format!("create {}", dest.display()))?;
                        Box::new(BufWriter::with_capacity(1 << 20, file))
                    }
                    None => Box::new(io::sink()),
                };
                let mut crc = 0u32;
                let mut size = 0u64;
                loop {
                    let n = entry
                        .read(&mut buf)
                        .with_context(|| format!("read {rel} from the backup"))?;
                    if n == 0 {
                        break;
                    }
                    crc = crc32c::crc32c_append(crc, &buf[..n]);
                    out.write_all(&buf[..n])
                        .with_context(|| format!("write {rel}"))?;
                    size += n as u64;
                    progress.fetch_add(n as u64, Ordering::Relaxed);
                }
                out.flush().with_context(|| format!("write {rel}"))?;
                anyhow::ensure!(
                    size == want.size && crc == want.crc32c,
                    "{rel} does not match its manifest checksum: the backup is corrupt"
                );
                written += size;
                seen += 1;
            }
            other => anyhow::bail!("unexpected entry type {other:?} for {rel} in the backup"),
        }
    }
    anyhow::ensure!(
        seen == files.len(),
        "the backup stream ended after {seen} of {} files: it is truncated",
        files.len()
    );
    Ok(written)
}
