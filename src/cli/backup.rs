//! `pgplatform backup …`: base backups, listing, verifying, drills, expiry and tenant
//! dumps. These run in the CLI process (progress on the terminal) against the same
//! repository and PostgreSQL the agent uses; a lock keeps two backups from overlapping.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use serde_json::json;

use super::output::{self, ByteProgress};
use crate::backup::base::{self, Progress};
use crate::backup::context::Context;
use crate::backup::{catalog, expire};
use crate::config::Config;

#[derive(Debug, clap::Subcommand)]
pub enum BackupCommand {
    /// Take a full base backup of the running cluster now (then apply retention).
    Run {
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Create a named restore point now (on the primary, through the agent) and record
    /// it in the repository, to return to later with `restore --name NAME` — e.g. just
    /// before a risky migration. NAME: up to 63 letters, digits, `_ - . :`.
    Mark {
        name: String,
        /// Print the recorded mark as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List base backups, tenant dumps and restore points (marks): id, kind, start, LSN
    /// range, size, duration.
    List {
        /// Print the list as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Re-read every object of backup ID (and the WAL it needs) and check its checksum;
    /// names any object that fails. Exits 1 if any does.
    Verify {
        id: String,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Restore the newest backup into a scratch directory, replay WAL to the newest
    /// archived point, check row counts and indexes (amcheck), clean up. Exits 1 on fail.
    Drill {
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Dump one tenant's database (pg_dump custom format, zstd) to the repository.
    Dump {
        tenant: String,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Apply retention now: old backups, the WAL they alone needed, old dumps, debris.
    Expire {
        /// Print what was removed as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// A failed check whose report was already printed: exit 1 without another message.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CheckFailed(pub String);

impl Progress for ByteProgress {
    fn start(&self, total_bytes: u64) {
        self.set_total(total_bytes);
    }
    fn phase(&self, message: &str) {
        self.set_message(message);
    }
    fn bytes(&self) -> Arc<AtomicU64> {
        self.counter()
    }
}

pub async fn run(config: &Config, command: BackupCommand) -> anyhow::Result<()> {
    let ctx = Context::new(config).await?;
    match command {
        BackupCommand::Run { json } => {
            // Held through retention: a second `backup run` meanwhile is refused, clearly.
            let lock = crate::backup::lock::backup(&ctx.data_dir.run())?;
            let progress = ByteProgress::new();
            let manifest = base::run_locked(&ctx, &progress, &lock).await?;
            progress.finish();
            let expired = expire::expire_locked(&ctx, &lock).await;
            drop(lock);
            let seconds =
                (manifest.stopped_at - manifest.started_at).num_milliseconds() as f64 / 1000.0;
            let summary = json!({
                "id": manifest.id,
                "start_lsn": manifest.start_lsn,
                "stop_lsn": manifest.stop_lsn,
                "data_bytes": manifest.data_bytes,
                "stored_bytes": manifest.object.size,
                "files": manifest.files.len(),
                "duration_seconds": seconds,
                "repository": ctx.repo.describe(),
                "expired": expired.as_ref().ok().map(|e| &e.backups),
            });
            let expired =
                expired.map_err(|e| e.context("the backup succeeded, but retention failed"));
            if json {
                output::json(&summary)?;
                return expired.map(|_| ());
            }
            output::line(&format!(
                "backup {} done: {} read, {} stored, {} files, {seconds:.1} s, LSN {} – {} in {}",
                manifest.id,
                output::size(manifest.data_bytes as i64),
                output::size(manifest.object.size as i64),
                manifest.files.len(),
                manifest.start_lsn,
                manifest.stop_lsn,
                ctx.repo.describe()
            ));
            let expired = expired?;
            if !expired.backups.is_empty() {
                output::line(&format!(
                    "retention removed backups {}",
                    expired.backups.join(", ")
                ));
            }
            Ok(())
        }
        BackupCommand::Mark { name, json } => {
            crate::backup::marks::check_name(&name)?;
            let scan = crate::backup::marks::scan(&ctx.repo).await?;
            anyhow::ensure!(
                scan.marks.iter().all(|m| m.name != name),
                "a restore point named {name:?} is already recorded; choose another name"
            );
            let agent = crate::api::client::AgentClient::discover(config)?;
            let mark: crate::backup::marks::Mark =
                agent.post("/backup/mark", &json!({ "name": name })).await?;
            anyhow::ensure!(
                mark.name == name,
                "the agent created restore point {:?}, not {name:?}",
                mark.name
            );
            crate::backup::marks::save(&ctx.repo, &mark).await?;
            if json {
                return output::json(&mark);
            }
            output::line(&format!(
                "restore point {} at LSN {} ({}); return to it with `pgplatform restore --name {}`",
                mark.name,
                mark.lsn,
                mark.time.format("%Y-%m-%d %H:%M:%S%.3f UTC"),
                mark.name
            ));
            Ok(())
        }
        BackupCommand::Verify { id, json } => {
            let progress = ByteProgress::new();
            progress.set_message("verifying");
            let verified = crate::backup::verify::verify(&ctx, &id, progress.counter()).await?;
            progress.finish();
            if json {
                output::json(&verified)?;
            } else {
                output::line(&format!(
                    "backup {}: {} objects, {} checked",
                    verified.id,
                    verified.objects_checked,
                    output::size(verified.bytes_checked as i64)
                ));
                for failure in &verified.failures {
                    output::line(&format!("  FAILED {failure}"));
                }
            }
            match verified.failures.len() {
                0 => Ok(()),
                n => Err(
                    CheckFailed(format!("backup {id}: {n} object(s) failed verification")).into(),
                ),
            }
        }
        BackupCommand::Drill { json } => {
            let progress = ByteProgress::new();
            let phase = |m: &str| progress.set_message(m);
            let result = crate::backup::drill::drill(&ctx, progress.counter(), &phase).await?;
            progress.finish();
            if json {
                output::json(&result)?;
            } else {
                output::line(&format!(
                    "drill of backup {}: {} (restore {:.1} s, replay {:.1} s, checks {:.1} s; {} tables compared, {} indexes checked)",
                    result.backup_id,
                    if result.ok { "PASS" } else { "FAIL" },
                    result.restore_seconds,
                    result.replay_seconds,
                    result.check_seconds,
                    result.tables_compared,
                    result.indexes_checked
                ));
                for error in &result.errors {
                    output::line(&format!("  {error}"));
                }
            }
            if result.ok {
                Ok(())
            } else {
                Err(CheckFailed(format!("the drill of backup {} failed", result.backup_id)).into())
            }
        }
        BackupCommand::Dump { tenant, json } => {
            let manifest =
                output::with_spinner("dumping", crate::backup::dump::dump(&ctx, &tenant)).await?;
            if json {
                return output::json(&manifest);
            }
            output::line(&format!(
                "dump {} of {tenant}: {} from pg_dump, {} stored",
                manifest.id,
                output::size(manifest.dump_bytes as i64),
                output::size(manifest.object.size as i64)
            ));
            Ok(())
        }
        BackupCommand::Expire { json } => {
            let expired = expire::expire(&ctx).await?;
            if json {
                return output::json(&expired);
            }
            output::line(&format!(
                "removed {} backup(s), {} WAL file(s), {} dump(s), {} leftover object(s)",
                expired.backups.len(),
                expired.wal_files,
                expired.dumps.len(),
                expired.leftover_objects
            ));
            Ok(())
        }
        BackupCommand::List { json } => {
            let scan = catalog::scan(&ctx.repo).await?;
            let marks = crate::backup::marks::scan(&ctx.repo).await?;
            let backups = scan.backups;
            let dumps = crate::backup::dump::all_dumps(&ctx).await?;
            let seconds = |a: chrono::DateTime<chrono::Utc>, b: chrono::DateTime<chrono::Utc>| {
                (b - a).num_milliseconds() as f64 / 1000.0
            };
            let mut rows: Vec<serde_json::Value> = backups
                .iter()
                .map(|b| {
                    json!({
                        "id": b.id, "kind": "base", "tenant": null,
                        "started_at": b.started_at, "stopped_at": b.stopped_at,
                        "start_lsn": b.start_lsn, "stop_lsn": b.stop_lsn, "timeline": b.timeline,
                        "data_bytes": b.data_bytes, "stored_bytes": b.object.size,
                        "duration_seconds": seconds(b.started_at, b.stopped_at),
                    })
                })
                .collect();
            rows.extend(dumps.iter().map(|d| {
                json!({
                    "id": d.id, "kind": "dump", "tenant": d.tenant,
                    "started_at": d.started_at, "stopped_at": d.stopped_at,
                    "start_lsn": null, "stop_lsn": null, "timeline": null,
                    "data_bytes": d.dump_bytes, "stored_bytes": d.object.size,
                    "duration_seconds": seconds(d.started_at, d.stopped_at),
                })
            }));
            rows.extend(marks.marks.iter().map(|m| {
                json!({
                    "id": m.name, "kind": "mark", "tenant": null,
                    "started_at": m.time, "stopped_at": m.time,
                    "start_lsn": m.lsn, "stop_lsn": m.lsn, "timeline": m.timeline,
                    "data_bytes": null, "stored_bytes": null, "duration_seconds": null,
                })
            }));
            if json {
                return output::json(&rows);
            }
            let text = |v: &serde_json::Value| v.as_str().unwrap_or("-").to_owned();
            let table: Vec<Vec<String>> = rows
                .iter()
                .map(|r| {
                    let kind = match (r["kind"].as_str(), r["tenant"].as_str()) {
                        (_, Some(t)) => format!("dump {t}"),
                        (Some(kind), None) => kind.to_owned(),
                        (None, None) => "-".into(),
                    };
                    let lsn = match (r["start_lsn"].as_str(), r["stop_lsn"].as_str()) {
                        (Some(a), Some(b)) if a == b => a.to_owned(),
                        (Some(a), Some(b)) => format!("{a} – {b}"),
                        _ => "-".into(),
                    };
                    vec![
                        text(&r["id"]),
                        kind,
                        text(&r["started_at"])
                            .replace('T', " ")
                            .chars()
                            .take(19)
                            .collect(),
                        lsn,
                        r["stored_bytes"].as_i64().map_or("-".into(), output::size),
                        r["duration_seconds"]
                            .as_f64()
                            .map_or("-".into(), |s| format!("{s:.1} s")),
                    ]
                })
                .collect();
            output::table(
                &["ID", "KIND", "STARTED (UTC)", "LSN", "SIZE", "DURATION"],
                &table,
            );
            for refused in scan.refused.iter().chain(&marks.refused) {
                output::line(&format!("REFUSED: {refused}"));
            }
            Ok(())
        }
    }
}
