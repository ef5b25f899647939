//! `pgplatform backup …`: base backups, listing, verifying, drills, expiry and tenant
//! dumps. These run in the CLI process (progress on the terminal) against the same
//! repository and PostgreSQL the agent uses; a lock keeps two backups from overlapping.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use serde_json::json;

use super::output::{self, ByteProgress};
use crate::backup::base::{self, Progress};
use crate::backup::catalog;
use crate::backup::context::Context;
use crate::config::Config;

#[derive(Debug, clap::Subcommand)]
pub enum BackupCommand {
    /// Take a full base backup of the running cluster now (then apply retention).
    Run {
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List base backups: id, start and stop time, LSN range, size, duration.
    List {
        /// Print the list as JSON.
        #[arg(long)]
        json: bool,
    },
}

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
            let progress = ByteProgress::new();
            let manifest = base::run(&ctx, &progress).await?;
            progress.finish();
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
            });
            if json {
                return output::json(&summary);
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
            Ok(())
        }
        BackupCommand::List { json } => {
            let backups = catalog::base_backups(&ctx.repo).await?;
            let rows: Vec<serde_json::Value> = backups
                .iter()
                .map(|b| {
                    json!({
                        "id": b.id,
                        "kind": "base",
                        "started_at": b.started_at,
                        "stopped_at": b.stopped_at,
                        "start_lsn": b.start_lsn,
                        "stop_lsn": b.stop_lsn,
                        "timeline": b.timeline,
                        "data_bytes": b.data_bytes,
                        "stored_bytes": b.object.size,
                        "duration_seconds": (b.stopped_at - b.started_at).num_milliseconds() as f64 / 1000.0,
                    })
                })
                .collect();
            if json {
                return output::json(&rows);
            }
            let table: Vec<Vec<String>> = backups
                .iter()
                .map(|b| {
                    vec![
                        b.id.clone(),
                        "base".into(),
                        b.started_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                        b.stopped_at.format("%H:%M:%S").to_string(),
                        format!("{} – {}", b.start_lsn, b.stop_lsn),
                        output::size(b.object.size as i64),
                        format!(
                            "{:.1} s",
                            (b.stopped_at - b.started_at).num_milliseconds() as f64 / 1000.0
                        ),
                    ]
                })
                .collect();
            output::table(
                &[
                    "ID", "KIND", "STARTED", "STOPPED", "LSN", "SIZE", "DURATION",
                ],
                &table,
            );
            Ok(())
        }
    }
}
