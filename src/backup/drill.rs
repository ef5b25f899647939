//! `backup drill`: proves the newest backup restores. It is restored into a scratch
//! directory and started as a throwaway PostgreSQL (unix socket only, archiving off).
//! Phase 1 replays WAL to the position the manifest's row counts hold at, pauses, and
//! compares every tenant table's count. Phase 2 replays to the end of the archive and
//! promotes; then amcheck verifies every B-tree index of every tenant database. The
//! result is kept in `run/drill.json` for `status` and the metrics.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::catalog::{self, Target};
use super::context::Context;
use super::lock;
use super::manifest::BaseManifest;
use super::restore::{self, Goal, Use};
use crate::pg::sql::quote_ident;
use crate::supervisor::{self, LogTail, PostmasterSpec};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DrillResult {
    pub ok: bool,
    pub backup_id: String,
    pub finished_at: DateTime<Utc>,
    pub restore_seconds: f64,
    pub replay_seconds: f64,
    pub check_seconds: f64,
    pub total_seconds: f64,
    pub tables_compared: usize,
    pub indexes_checked: usize,
    pub errors: Vec<String>,
}

pub fn result_path(ctx: &Context) -> PathBuf {
    ctx.data_dir.run().join("drill.json")
}

/// The last drill's result, if one ran on this node.
pub fn last_result(run_dir: &Path) -> Option<DrillResult> {
    let text = std::fs::read_to_string(run_dir.join("drill.json")).ok()?;
    serde_json::from_str(&text).ok()
}

pub async fn drill(
    ctx: &Context,
    progress: Arc<AtomicU64>,
    phase: &(dyn Fn(&str) + Sync),
) -> anyhow::Result<DrillResult> {
    let _lock = lock::acquire(&ctx.data_dir.run(), "drill")?;
    // Held throughout: expiry must not remove the WAL this drill is replaying.
    let _reading = lock::read_repository(&ctx.data_dir.run())?;
    let started = Instant::now();
    let mut result = DrillResult {
        ok: false,
        backup_id: String::new(),
        finished_at: Utc::now(),
        restore_seconds: 0.0,
        replay_seconds: 0.0,
        check_seconds: 0.0,
        total_seconds: 0.0,
        tables_compared: 0,
        indexes_checked: 0,
        errors: Vec::new(),
    };
    let scratch = ctx.data_dir.root.join("drill");
    let outcome = async {
        let scan = catalog::scan(&ctx.repo).await?;
        // A drill proves the newest backup: a refused newest one fails it, by name.
        if let Some(refused) = scan.newest_refused() {
            result.backup_id = refused.id.clone();
            anyhow::bail!("{refused}");
        }
        let backup = scan
            .backups
            .last()
            .context("the repository has no base backup to drill; run `pgplatform backup run`")?
            .clone();
        result.backup_id = backup.id.clone();
        if scratch.exists() {
            std::fs::remove_dir_all(&scratch)
                .with_context(|| format!("remove {}", scratch.display()))?;
        }
        phase("restoring");
        restore::restore(
            ctx,
            &scratch,
            &Goal {
                target: Target::Latest,
                inclusive: true,
            },
            Some(&backup.id),
            Use::Copy,
            progress,
        )
        .await?;
        result.restore_seconds = started.elapsed().as_secs_f64();
        run_checks(ctx, &backup, &scratch, &mut result, phase).await
    }
    .await;
    if let Err(e) = outcome {
        result.errors.push(format!("{e:#}"));
    }
    let _ = std::fs::remove_dir_all(&scratch);
    result.ok = result.errors.is_empty();
    result.finished_at = Utc::now();
    result.total_seconds = started.elapsed().as_secs_f64();
    let path = result_path(ctx);
    std::fs::write(&path, serde_json::to_vec_pretty(&result)?)
        .with_context(|| format!("write {}", path.display()))?;
    Ok(result)
}

async fn run_checks(
    ctx: &Context,
    backup: &BaseManifest,
    scratch: &Path,
    result: &mut DrillResult,
    phase: &(dyn Fn(&str) + Sync),
) -> anyhow::Result<()> {
    let spec = private_spec(ctx, scratch);
    let replay = Instant::now();
    if let Some(lsn) = &backup.counts_lsn {
        phase("replaying to the counted position");
        // Checked when the manifest was read; checked again where it becomes a setting.
        anyhow::ensure!(
            super::manifest::is_lsn(lsn),
            "counts_lsn {lsn:?} is not an LSN"
        );
        let auto = scratch.join("postgresql.auto.conf");
        // The scratch dir belongs to the PostgreSQL user now: no writes through its links.
        let original =
            crate::safe_file::read_to_string(&auto).context("read postgresql.auto.conf")?;
        crate::safe_file::replace(
            &auto,
            format!(
                "{original}recovery_target_lsn = {}\nrecovery_target_inclusive = off\n\
                 recovery_target_action = 'pause'\n",
                crate::pg::conf::quote_value(lsn)
            )
            .as_bytes(),
            0o600,
            ctx.run_as.as_ref(),
        )?;
        let tail = LogTail::default();
        let mut child = supervisor::spawn(&spec, &tail)?;
        let mut guard = StopOnDrop(child.id());
        let compared = async {
            wait_until(&spec, &mut child, &tail, "SELECT pg_is_wal_replay_paused()").await?;
            compare_counts(&spec, backup, result).await
        }
        .await;
        supervisor::stop(&spec, &mut child).await;
        guard.0 = None;
        compared?;
        crate::safe_file::replace(&auto, original.as_bytes(), 0o600, ctx.run_as.as_ref())?;
    }
    phase("replaying to the end of the archive");
    let tail = LogTail::default();
    let mut child = supervisor::spawn(&spec, &tail)?;
    let mut guard = StopOnDrop(child.id());
    let checked = async {
        wait_until(&spec, &mut child, &tail, "SELECT NOT pg_is_in_recovery()").await?;
        result.replay_seconds = replay.elapsed().as_secs_f64();
        phase("checking indexes (amcheck)");
        let checks = Instant::now();
        amcheck(&spec, backup, result).await?;
        result.check_seconds = checks.elapsed().as_secs_f64();
        anyhow::Ok(())
    }
    .await;
    supervisor::stop(&spec, &mut child).await;
    guard.0 = None;
    checked
}

/// A throwaway PostgreSQL on the restored `dir`: its socket inside `dir`, no TCP, no
/// archiving (also `restore --check`).
pub(super) fn private_spec(ctx: &Context, dir: &Path) -> PostmasterSpec {
    PostmasterSpec {
        binaries: ctx.binaries.clone(),
        pgdata: dir.to_owned(),
        socket_dir: dir.to_owned(),
        port: ctx.port,
        run_as: ctx.run_as.clone(),
        stop_timeout: Duration::from_secs(60),
        options: [
            ("listen_addresses", ""),
            ("unix_socket_directories", &dir.to_string_lossy()),
            ("archive_mode", "off"),
            ("shared_buffers", "128MB"),
            ("hot_standby", "on"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect(),
    }
}

/// A drill cancelled mid-way (agent shutdown) must not leave its PostgreSQL running:
/// an immediate shutdown, since the scratch directory is thrown away anyway.
pub(super) struct StopOnDrop(pub(super) Option<u32>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGQUIT,
            );
        }
    }
}

/// Polls `condition` (a boolean query) until it holds, failing with PostgreSQL's last log
/// lines if the server exits first (e.g. the archive ends before the target).
pub(super) async fn wait_until(
    spec: &PostmasterSpec,
    child: &mut tokio::process::Child,
    tail: &LogTail,
    condition: &str,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(3600);
    loop {
        if let Some(status) = child.try_wait()? {
            anyhow::bail!(
                "the throwaway PostgreSQL exited ({status}): {}",
                tail.last_lines(8)
            );
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "recovery took over an hour: {}",
            tail.last_lines(3)
        );
        let probe = async {
            let client = crate::pg::connect::superuser(&spec.socket_dir, spec.port, "postgres")
                .await
                .ok()?;
            client
                .query_one(condition, &[])
                .await
                .ok()?
                .try_get::<_, bool>(0)
                .ok()
        };
        if let Ok(Some(true)) = tokio::time::timeout(Duration::from_secs(5), probe).await {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn compare_counts(
    spec: &PostmasterSpec,
    backup: &BaseManifest,
    result: &mut DrillResult,
) -> anyhow::Result<()> {
    for tenant in &backup.tenants {
        let client =
            crate::pg::connect::superuser(&spec.socket_dir, spec.port, &tenant.name).await?;
        for (table, expected) in &tenant.tables {
            // Re-quoted from its parts: the name reaches SQL only as two identifiers.
            let Some((schema, name)) = super::manifest::split_qualified_name(table) else {
                result
                    .errors
                    .push(format!("{}: {table:?} is not a table name", tenant.name));
                continue;
            };
            let relation = format!("{}.{}", quote_ident(&schema), quote_ident(&name));
            // The superuser counts here: only a plain table may be read, never a view
            // or anything else that would run what the tenant wrote.
            let plain: Option<bool> = client
                .query_opt(
                    "SELECT c.relkind OPERATOR(pg_catalog.=) 'r' FROM pg_catalog.pg_class c
                      WHERE c.oid OPERATOR(pg_catalog.=) pg_catalog.to_regclass($1)",
                    &[&relation],
                )
                .await?
                .map(|row| row.try_get(0))
                .transpose()?;
            if plain != Some(true) {
                result.errors.push(format!(
                    "{}: {table} is not a table in the restored cluster",
                    tenant.name
                ));
                continue;
            }
            let found: i64 = match client
                .query_one(&format!("SELECT pg_catalog.count(*) FROM {relation}"), &[])
                .await
            {
                Ok(row) => row.try_get(0)?,
                Err(e) => {
                    result.errors.push(format!("{}: {table}: {e}", tenant.name));
                    continue;
                }
            };
            result.tables_compared += 1;
            if found != *expected {
                result.errors.push(format!(
                    "{}: {table} has {found} rows after restore; the manifest says {expected}",
                    tenant.name
                ));
            }
        }
    }
    Ok(())
}

async fn amcheck(
    spec: &PostmasterSpec,
    backup: &BaseManifest,
    result: &mut DrillResult,
) -> anyhow::Result<()> {
    for tenant in &backup.tenants {
        let client =
            crate::pg::connect::superuser(&spec.socket_dir, spec.port, &tenant.name).await?;
        // In a new schema of the superuser's own, named so no tenant could have made it
        // beforehand: the extension's script never resolves a name in a tenant's schema.
        // If the tenant was given amcheck, that one is used; either way the function
        // called is the extension's own member, never a look-alike beside it.
        let fresh = format!("pgplatform_amcheck_{:016x}", rand::random::<u64>());
        client
            .batch_execute(&format!(
                "CREATE SCHEMA {fresh}; CREATE EXTENSION IF NOT EXISTS amcheck SCHEMA {fresh}"
            ))
            .await
            .context("amcheck is not available with these PostgreSQL binaries")?;
        let schema: String = client
            .query_one(
                "SELECT pg_catalog.quote_ident(n.nspname::pg_catalog.text)
                   FROM pg_catalog.pg_proc p
                   JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) p.pronamespace
                   JOIN pg_catalog.pg_depend d ON d.objid OPERATOR(pg_catalog.=) p.oid
                    AND d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_proc'::pg_catalog.regclass
                    AND d.deptype OPERATOR(pg_catalog.=) 'e'
                   JOIN pg_catalog.pg_extension e ON e.oid OPERATOR(pg_catalog.=) d.refobjid
                  WHERE e.extname OPERATOR(pg_catalog.=) 'amcheck'
                    AND p.proname OPERATOR(pg_catalog.=) 'bt_index_check'
                    AND p.pronargs OPERATOR(pg_catalog.=) 2",
                &[],
            )
            .await
            .context("find amcheck's bt_index_check")?
            .try_get(0)?;
        // Checking that every heap tuple is indexed evaluates index expressions and
        // predicates, which may be the tenant's functions: those indexes get the
        // structural check only, which compares stored keys with built-in operators.
        let indexes = client
            .query(
                "SELECT c.oid::pg_catalog.regclass::pg_catalog.text,
                        i.indexprs IS NULL AND i.indpred IS NULL
                   FROM pg_catalog.pg_index i
                   JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) i.indexrelid
                   JOIN pg_catalog.pg_am a ON a.oid OPERATOR(pg_catalog.=) c.relam
                  WHERE a.amname OPERATOR(pg_catalog.=) 'btree' AND i.indisvalid AND i.indisready
                    AND c.relpersistence OPERATOR(pg_catalog.<>) 't' ORDER BY 1",
                &[],
            )
            .await?;
        for row in indexes {
            let index: String = row.try_get(0)?;
            let heap_too: bool = row.try_get(1)?;
            match client
                .query_one(
                    &format!("SELECT {schema}.bt_index_check(pg_catalog.to_regclass($1), $2)"),
                    &[&index, &heap_too],
                )
                .await
            {
                Ok(_) => result.indexes_checked += 1,
                Err(e) => result
                    .errors
                    .push(format!("{}: amcheck {index}: {e}", tenant.name)),
            }
        }
    }
    Ok(())
}
