//! The producer side of a base backup, on a blocking thread: PGDATA's files into one tar
//! stream, compressed by zstd with `parallel` workers, cut into chunks for the uploader.
//! Each file's CRC-32C is taken as it is read, so the manifest describes exactly the
//! bytes stored.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::Context as _;
use bytes::{Bytes, BytesMut};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::manifest::FileEntry;
use super::walk::Entry;

const CHUNK: usize = 8 << 20;

/// Compressed bytes out to the uploader, with their running SHA-256 and size.
pub struct ChunkSink {
    buf: BytesMut,
    tx: mpsc::Sender<Bytes>,
    sha: Sha256,
    size: u64,
}

impl ChunkSink {
    pub fn new(tx: mpsc::Sender<Bytes>) -> ChunkSink {
        ChunkSink {
            buf: BytesMut::with_capacity(CHUNK),
            tx,
            sha: Sha256::new(),
            size: 0,
        }
    }

    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = self.buf.split().freeze();
        self.tx
            .blocking_send(chunk)
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the upload stopped"))
    }

    /// Sends what is left; returns (stored size, SHA-256 hex).
    pub fn finish(mut self) -> io::Result<(u64, String)> {
        self.send()?;
        Ok((self.size, super::envelope::hex(&self.sha.finalize())))
    }
}

impl Write for ChunkSink {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.sha.update(data);
        self.size += data.len() as u64;
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Exactly `remaining` bytes of a file that PostgreSQL may be writing meanwhile: a file
/// that shrank is padded with zeros, one that grew is cut (WAL replay repairs both,
/// as with pg_basebackup).
struct ExactReader<'a> {
    file: File,
    remaining: u64,
    crc: u32,
    eof: bool,
    progress: &'a AtomicU64,
}

impl Read for ExactReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            return Ok(0);
        }
        let want = out.len().min(self.remaining as usize);
        let n = if self.eof {
            0
        } else {
            self.file.read(&mut out[..want])?
        };
        let n = if n == 0 {
            self.eof = true;
            out[..want].fill(0);
            want
        } else {
            n
        };
        self.crc = crc32c::crc32c_append(self.crc, &out[..n]);
        self.remaining -= n as u64;
        self.progress.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

pub struct Produced {
    pub files: Vec<FileEntry>,
    pub data_bytes: u64,
    pub stored_bytes: u64,
    pub sha256: String,
}

/// What the producer needs after the files: the backup_label (and tablespace_map) that
/// only pg_backup_stop returns, or `None` to abort.
pub type LabelFiles = Option<Vec<(String, Vec<u8>)>>;

#[allow(clippy::too_many_arguments)]
pub fn produce(
    pgdata: &Path,
    entries: Vec<Entry>,
    level: i32,
    workers: u32,
    tx: mpsc::Sender<Bytes>,
    files_done: tokio::sync::oneshot::Sender<()>,
    labels: std::sync::mpsc::Receiver<LabelFiles>,
    progress: Arc<AtomicU64>,
) -> anyhow::Result<Produced> {
    let mut encoder = zstd::stream::write::Encoder::new(ChunkSink::new(tx), level)?;
    if workers > 1 {
        encoder.multithread(workers).context("start zstd workers")?;
    }
    let mut tar = tar::Builder::new(encoder);
    let mut files = Vec::new();
    let mut data_bytes = 0;
    for entry in entries {
        let mut header = tar::Header::new_gnu();
        if entry.is_dir {
            header.set_entry_type(tar::EntryType::Directory);
            header.set_mode(0o700);
            header.set_size(0);
            tar.append_data(&mut header, &entry.path, io::empty())
                .with_context(|| format!("write {} to the backup", entry.path))?;
            continue;
        }
        let path = pgdata.join(&entry.path);
        // Not through a link the PostgreSQL user swapped in since the walk.
        let file = match crate::safe_file::open_regular(&path) {
            Ok(f) => f,
            // Dropped since the walk: PostgreSQL will not need it.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("open {}", path.display())),
        };
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(0o600);
        header.set_size(entry.size);
        let mut reader = ExactReader {
            file,
            remaining: entry.size,
            crc: 0,
            eof: false,
            progress: &progress,
        };
        tar.append_data(&mut header, &entry.path, &mut reader)
            .with_context(|| format!("copy {} into the backup", path.display()))?;
        data_bytes += entry.size;
        files.push(FileEntry {
            path: entry.path,
            size: entry.size,
            crc32c: reader.crc,
        });
    }
    let _ = files_done.send(());
    let label_files = labels
        .recv()
        .ok()
        .flatten()
        .context("the backup was stopped before pg_backup_stop returned")?;
    for (name, content) in label_files {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(0o600);
        header.set_size(content.len() as u64);
        tar.append_data(&mut header, &name, content.as_slice())
            .with_context(|| format!("write {name} to the backup"))?;
        files.push(FileEntry {
            path: name,
            size: content.len() as u64,
            crc32c: crc32c::crc32c(&content),
        });
        data_bytes += content.len() as u64;
    }
    let encoder = tar.into_inner().context("finish the tar stream")?;
    let sink = encoder.finish().context("finish compressing")?;
    let (stored_bytes, sha256) = sink.finish().context("send the last chunk")?;
    Ok(Produced {
        files,
        data_bytes,
        stored_bytes,
        sha256,
    })
}
