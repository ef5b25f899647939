//! `pgplatform_*` metrics: the agent itself, its tenants and the data directory's disk.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::exposition::Exposition;
use crate::supervisor::PostgresStatus;

/// The agent's own facts, which need no PostgreSQL.
pub fn agent(out: &mut Exposition, started: SystemTime, postgres: &PostgresStatus) {
    out.gauge(
        "pgplatform_build_info",
        "pgplatform's version; always 1",
        &[("version", env!("CARGO_PKG_VERSION"))],
        1.0,
    );
    let start = started.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    out.gauge(
        "pgplatform_agent_start_time_seconds",
        "When the agent started, in seconds since the epoch",
        &[],
        start.as_secs_f64(),
    );
    let uptime = SystemTime::now()
        .duration_since(started)
        .unwrap_or(Duration::ZERO);
    out.gauge(
        "pgplatform_agent_uptime_seconds",
        "Seconds since the agent started",
        &[],
        uptime.as_secs_f64(),
    );
    out.counter(
        "pgplatform_postgres_restarts_total",
        "Unplanned PostgreSQL restarts by the supervisor since the agent started",
        &[],
        f64::from(postgres.restarts),
    );
}

/// The agent's supervised tasks: how often each died and was restarted (every task is
/// listed from the start, at 0).
pub fn task_restarts(out: &mut Exposition, restarts: &[(&str, u64)]) {
    for (task, count) in restarts {
        out.counter(
            "pgplatform_agent_task_restarts_total",
            "Times an agent task (HA loop, API, pooler, scheduler, ...) died and was restarted",
            &[("task", task)],
            *count as f64,
        );
    }
}

/// Free and total bytes of the filesystem holding `path`.
pub fn filesystem(path: &Path) -> Option<(u64, u64)> {
    let stat = nix::sys::statvfs::statvfs(path).ok()?;
    let fragment = stat.fragment_size() as u64;
    Some((
        (stat.blocks_available() as u64).saturating_mul(fragment),
        (stat.blocks() as u64).saturating_mul(fragment),
    ))
}

pub fn disk(out: &mut Exposition, data_dir: &Path) {
    let Some((avail, size)) = filesystem(data_dir) else {
        return;
    };
    let path = data_dir.display().to_string();
    let labels = [("path", path.as_str())];
    out.gauge(
        "pgplatform_data_dir_filesystem_avail_bytes",
        "Bytes available to unprivileged users on the data directory's filesystem",
        &labels,
        avail as f64,
    );
    out.gauge(
        "pgplatform_data_dir_filesystem_size_bytes",
        "Size in bytes of the data directory's filesystem",
        &labels,
        size as f64,
    );
}

/// Per tenant: database size and open connections, from the registry and PostgreSQL.
pub async fn tenants(out: &mut Exposition, client: &tokio_postgres::Client) -> anyhow::Result<()> {
    let tenants = crate::tenants::summaries(client).await?;
    out.gauge(
        "pgplatform_tenants",
        "Tenants provisioned and ready",
        &[],
        tenants.len() as f64,
    );
    for tenant in tenants {
        let labels = [("tenant", tenant.name.as_str())];
        out.gauge(
            "pgplatform_tenant_database_size_bytes",
            "Size of the tenant's database in bytes",
            &labels,
            tenant.size_bytes as f64,
        );
        out.gauge(
            "pgplatform_tenant_connections",
            "PostgreSQL backends connected to the tenant's database",
            &labels,
            tenant.connections as f64,
        );
    }
    Ok(())
}

/// The last base backup and restore drill this node recorded.
pub fn backups(out: &mut Exposition, run_dir: &Path) {
    let state = crate::backup::state::read(run_dir);
    if let Some(last) = &state.last_success {
        out.gauge(
            "pgplatform_backup_last_success_timestamp_seconds",
            "When the last successful base backup completed, in seconds since the epoch",
            &[],
            last.stopped_at.timestamp_millis() as f64 / 1000.0,
        );
        out.gauge(
            "pgplatform_backup_last_size_bytes",
            "Bytes the last successful base backup stored in the repository",
            &[],
            last.stored_bytes as f64,
        );
        out.gauge(
            "pgplatform_backup_last_duration_seconds",
            "How long the last successful base backup took",
            &[],
            last.duration_seconds,
        );
    }
    if let Some(failure) = &state.last_failure {
        out.gauge(
            "pgplatform_backup_last_failure_timestamp_seconds",
            "When a base backup last failed, in seconds since the epoch",
            &[],
            failure.at.timestamp_millis() as f64 / 1000.0,
        );
    }
    if let Some(drill) = crate::backup::drill::last_result(run_dir) {
        out.gauge(
            "pgplatform_drill_last_success",
            "1 if the last restore drill passed, 0 if it failed",
            &[("backup_id", drill.backup_id.as_str())],
            if drill.ok { 1.0 } else { 0.0 },
        );
        out.gauge(
            "pgplatform_drill_last_run_timestamp_seconds",
            "When the last restore drill finished, in seconds since the epoch",
            &[],
            drill.finished_at.timestamp_millis() as f64 / 1000.0,
        );
        out.gauge(
            "pgplatform_drill_last_duration_seconds",
            "How long the last restore drill took",
            &[],
            drill.total_seconds,
        );
    }
}
