//! `backup expire` (also run after every backup): retention. Removes base backups beyond
//! `retention_full` (and older than `retention_days`, if set) — never the newest — then
//! the WAL no remaining backup needs, dumps beyond `dump_retention` per tenant, and the
//! leftovers of interrupted backups. A manifest goes before its data, so an interrupted
//! expiry leaves only leftovers, which the next one removes.

use std::collections::BTreeMap;

use chrono::{Duration, Utc};
use serde::Serialize;

use super::catalog;
use super::context::Context;
use super::lock;

#[derive(Debug, Default, Serialize)]
pub struct Expired {
    pub backups: Vec<String>,
    pub dumps: Vec<String>,
    pub wal_files: usize,
    pub leftover_objects: usize,
}

pub async fn expire(ctx: &Context) -> anyhow::Result<Expired> {
    let lock = lock::backup(&ctx.data_dir.run())?;
    expire_locked(ctx, &lock).await
}

/// `expire` for a caller that holds the backup lock already (`backup run`).
pub async fn expire_locked(ctx: &Context, _lock: &lock::BackupLock) -> anyhow::Result<Expired> {
    let _readers = lock::expire_repository(&ctx.data_dir.run())?;
    let repo = &ctx.repo;
    let mut out = Expired::default();
    let backups = catalog::base_backups(repo).await?;
    let ids: Vec<_> = backups
        .iter()
        .map(|b| (b.id.clone(), b.stopped_at))
        .collect();
    let expired = catalog::expired(
        &ids,
        ctx.config.retention_full,
        ctx.config.retention_days,
        Utc::now(),
    );
    for id in &expired {
        repo.delete(&super::layout::base_manifest_key(id)).await?;
        for object in repo.list(&format!("base/{id}/")).await? {
            repo.delete(&object.key).await?;
        }
    }
    out.backups = expired.clone();

    // With the lock held no backup is being written: data without a manifest is debris.
    let mut by_id: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for object in repo.list("base/").await? {
        if let Some((id, _)) = object.key.trim_start_matches("base/").split_once('/') {
            by_id
                .entry(id.to_owned())
                .or_default()
                .push(object.key.clone());
        }
    }
    for (id, keys) in by_id {
        if !keys.iter().any(|k| k.ends_with("/manifest")) {
            for key in keys {
                repo.delete(&key).await?;
                out.leftover_objects += 1;
            }
            tracing::info!("removed the leftovers of interrupted backup {id}");
        }
    }

    // After a point-in-time restore a newer backup can start below an older one (on a
    // new timeline): keep everything from the lowest start of any kept backup.
    let kept_starts: Vec<&str> = backups
        .iter()
        .filter(|b| !expired.contains(&b.id))
        .map(|b| b.start_wal.as_str())
        .collect();
    if let Some(oldest) = catalog::lowest_segment(&kept_starts) {
        let wal: Vec<String> = repo
            .list("wal/")
            .await?
            .into_iter()
            .map(|o| o.key)
            .collect();
        for key in catalog::wal_to_delete(&wal, oldest) {
            repo.delete(&key).await?;
            out.wal_files += 1;
        }
    }

    out.dumps = expire_dumps(ctx).await?;
    out.leftover_objects += repo.remove_stale_temps().await?;
    Ok(out)
}

async fn expire_dumps(ctx: &Context) -> anyhow::Result<Vec<String>> {
    let repo = &ctx.repo;
    // dump/<tenant>/<id>/<file>
    let mut tenants: BTreeMap<String, BTreeMap<String, Vec<String>>> = BTreeMap::new();
    for object in repo.list("dump/").await? {
        let parts: Vec<&str> = object.key.splitn(4, '/').collect();
        if let [_, tenant, id, _] = parts.as_slice() {
            tenants
                .entry((*tenant).to_owned())
                .or_default()
                .entry((*id).to_owned())
                .or_default()
                .push(object.key.clone());
        }
    }
    let mut removed = Vec::new();
    let stale = super::layout::new_id(Utc::now() - Duration::days(1));
    for (tenant, dumps) in tenants {
        let complete: Vec<&String> = dumps
            .iter()
            .filter(|(_, keys)| keys.iter().any(|k| k.ends_with("/manifest")))
            .map(|(id, _)| id)
            .collect();
        let keep = (ctx.config.dump_retention as usize).min(complete.len());
        let expired: Vec<String> = complete[..complete.len() - keep]
            .iter()
            .map(|s| s.to_string())
            .collect();
        for (id, keys) in &dumps {
            // A dump without a manifest may still be running; after a day it is debris.
            let debris =
                !keys.iter().any(|k| k.ends_with("/manifest")) && id.as_str() < stale.as_str();
            if expired.contains(id) || debris {
                let (manifests, data): (Vec<&String>, Vec<&String>) =
                    keys.iter().partition(|k| k.ends_with("/manifest"));
                for key in manifests.into_iter().chain(data) {
                    repo.delete(key).await?;
                }
                removed.push(format!("{tenant}/{id}"));
            }
        }
    }
    Ok(removed)
}
