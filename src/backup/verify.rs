//! `backup verify ID`: re-reads every object a backup needs — its data (SHA-256 of the
//! object, CRC-32C of every file inside) and each archived WAL segment from its start to
//! its end — and names whatever fails.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use serde::Serialize;

use super::catalog;
use super::context::Context;
use super::{envelope, wal};

#[derive(Debug, Serialize)]
pub struct Verified {
    pub id: String,
    pub objects_checked: usize,
    pub bytes_checked: u64,
    /// "key: what is wrong", one per failed object.
    pub failures: Vec<String>,
}

pub async fn verify(ctx: &Context, id: &str, progress: Arc<AtomicU64>) -> anyhow::Result<Verified> {
    let _reading = super::lock::read_repository(&ctx.data_dir.run())?;
    let scan = catalog::scan(&ctx.repo).await?;
    if let Some(refused) = scan.refused.iter().find(|r| r.id == id) {
        anyhow::bail!("{refused}");
    }
    let backup = scan
        .backups
        .iter()
        .find(|b| b.id == id)
        .ok_or_else(|| anyhow::anyhow!("no base backup {id}; see `pgplatform backup list`"))?;
    let mut failures = Vec::new();
    let mut checked = 1;
    let mut bytes = backup.object.size;
    if let Err(e) = super::unpack::unpack(ctx, backup, None, progress).await {
        failures.push(format!("{}: {e:#}", backup.object.key));
    }
    for name in super::layout::segments(&backup.start_wal, &backup.stop_wal) {
        // A backup taken without archiving carries its WAL inside (checked above).
        let inside = format!("pg_wal/{name}");
        if backup.files.iter().any(|f| f.path == inside) {
            continue;
        }
        let key = wal::key(&name);
        checked += 1;
        match ctx.repo.get(&key).await? {
            None => failures.push(format!(
                "{key}: missing (the backup needs it to be consistent)"
            )),
            Some(object) => {
                bytes += object.len() as u64;
                if let Err(e) = envelope::open(ctx.repo.key(), &name, &object) {
                    failures.push(format!("{key}: {e:#}"));
                }
            }
        }
    }
    Ok(Verified {
        id: id.to_owned(),
        objects_checked: checked,
        bytes_checked: bytes,
        failures,
    })
}
