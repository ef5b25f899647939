//! A base backup's object streamed out of the repository, checked as it streams
//! (SHA-256 of the object, CRC-32C of each file), and unpacked into a directory or only
//! checked (`backup verify`).

use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use futures::StreamExt;
use sha2::{Digest, Sha256};

use super::context::Context;
use super::manifest::BaseManifest;
use super::untar;

/// Streams the backup's object into `target_dir` (or, with `None`, only checks it),
/// verifying the object's SHA-256 and every file's CRC-32C.
pub async fn unpack(
    ctx: &Context,
    backup: &BaseManifest,
    target_dir: Option<&Path>,
    progress: Arc<AtomicU64>,
) -> anyhow::Result<u64> {
    let mut stream = ctx.repo.get_stream(&backup.object.key).await?;
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let files = backup.files.clone();
    let dir = target_dir.map(Path::to_owned);
    let consumer = tokio::task::spawn_blocking(move || {
        untar::unpack(
            untar::ChunkReader::new(rx),
            dir.as_deref(),
            &files,
            &progress,
        )
    });
    let mut sha = Sha256::new();
    let mut size = 0u64;
    let mut download_error = None;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(chunk) => {
                sha.update(&chunk);
                size += chunk.len() as u64;
                // A closed channel means the consumer failed; its error says why.
                if tx.send(chunk).await.is_err() {
                    break;
                }
            }
            Err(e) => {
                download_error = Some(e);
                break;
            }
        }
    }
    drop(tx);
    let unpacked = consumer.await?;
    if let Some(e) = download_error {
        return Err(e);
    }
    let written = unpacked?;
    let digest = super::envelope::hex(&sha.finalize());
    anyhow::ensure!(
        size == backup.object.size && digest == backup.object.sha256,
        "{} does not match its checksum in the manifest: the stored backup is corrupt",
        backup.object.key
    );
    Ok(written)
}
