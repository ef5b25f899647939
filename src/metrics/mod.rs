//! Prometheus metrics for `GET /metrics`: PostgreSQL under postgres_exporter's names
//! (`postgres`, `settings`), the pooler under the pgbouncer exporter's (`pooler`, read
//! from its admin console via `console`), and the platform's own (`platform`), written by
//! `exposition`. A scrape is bounded: PostgreSQL gets `scrape_timeout`, then `pg_up 0`.

pub mod console;
mod exposition;
mod ha;
mod platform;
mod pooler;
mod postgres;
mod redis;
mod restarts;
mod settings;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use tokio::sync::watch;

use self::exposition::Exposition;
pub use self::platform::filesystem;
pub use self::restarts::Restarts;
use crate::config::{Config, MetricsConfig};
use crate::supervisor::{PostgresState, PostgresStatus};

/// Where a scrape reads from.
pub struct Sources {
    pub socket_dir: PathBuf,
    pub postgres_port: u16,
    /// The pooler's port, when the pooler is enabled (its console shares the socket dir).
    pub pooler_port: Option<u16>,
    pub data_dir: PathBuf,
    pub started: SystemTime,
    /// The running configuration, as reloads change it (metrics and status settings).
    pub config: watch::Receiver<Arc<Config>>,
    /// Changed keys that wait for an agent restart.
    pub pending_restart: watch::Receiver<Vec<&'static str>>,
    pub task_restarts: Arc<Restarts>,
    pub postgres: watch::Receiver<PostgresStatus>,
    /// The HA cluster as this node sees it; `None` without HA.
    pub cluster: Option<watch::Receiver<crate::ha::ClusterView>>,
    /// Tenants' redis-servers.
    pub redis: Arc<crate::redis::Fleet>,
}

impl Sources {
    /// The metrics settings now (a reload may have changed them).
    pub fn settings(&self) -> MetricsConfig {
        self.config.borrow().metrics.clone()
    }
}

/// One scrape, as Prometheus text.
pub async fn scrape(sources: &Sources) -> String {
    let settings = sources.settings();
    let mut out = Exposition::default();
    let status = sources.postgres.borrow().clone();
    let mut pg = Exposition::default();
    let up = status.state == PostgresState::Running
        && match tokio::time::timeout(
            settings.scrape_timeout,
            read_postgres(&mut pg, sources, &settings),
        )
        .await
        {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                tracing::warn!("metrics: reading PostgreSQL failed: {e:#}");
                false
            }
            Err(_) => {
                tracing::warn!(
                    "metrics: PostgreSQL did not answer within {:?} (metrics.scrape_timeout_seconds)",
                    settings.scrape_timeout
                );
                false
            }
        };
    out.gauge(
        "pg_up",
        "Whether the last scrape was able to connect to the server (1 for yes, 0 for no)",
        &[],
        if up { 1.0 } else { 0.0 },
    );
    if up {
        out.append(pg);
    }
    if let Some(port) = sources.pooler_port {
        let mut pooled = Exposition::default();
        let read = pooler::collect(&mut pooled, &sources.socket_dir, port);
        if tokio::time::timeout(settings.scrape_timeout, read)
            .await
            .is_ok()
        {
            out.append(pooled);
        } else {
            out.gauge(
                "pgbouncer_up",
                "Whether the pooler's admin console answered",
                &[],
                0.0,
            );
        }
    }
    redis::collect(&mut out, &sources.redis.observe().await);
    platform::agent(&mut out, sources.started, &status);
    platform::task_restarts(&mut out, &sources.task_restarts.snapshot());
    platform::disk(&mut out, &sources.data_dir);
    platform::backups(&mut out, &sources.data_dir.join("run"));
    if let Some(cluster) = &sources.cluster {
        let view = cluster.borrow().clone();
        ha::cluster(&mut out, &view);
    }
    out.render()
}

async fn read_postgres(
    out: &mut Exposition,
    sources: &Sources,
    settings: &MetricsConfig,
) -> anyhow::Result<()> {
    let client = crate::pg::connect::superuser(
        &sources.socket_dir,
        sources.postgres_port,
        crate::pg::AGENT_DATABASE,
    )
    .await?;
    // The server enforces the budget too, so a slow query is cancelled there rather
    // than left running after the scrape gave up on it.
    let budget = settings.scrape_timeout.max(Duration::from_millis(100));
    client
        .batch_execute(&format!(
            "SET statement_timeout = {ms}; SET lock_timeout = {ms}; SET application_name = 'pgplatform-metrics'",
            ms = budget.as_millis()
        ))
        .await
        .context("set the scrape's timeouts")?;
    postgres::collect(out, &client, settings.statements_top).await?;
    platform::tenants(out, &client).await?;
    Ok(())
}

/// Makes pg_stat_statements readable from the agent's database when the library is
/// preloaded; the metrics read it from there.
pub async fn prepare(socket_dir: &std::path::Path, port: u16) -> anyhow::Result<()> {
    let client = crate::pg::connect::superuser(socket_dir, port, crate::pg::AGENT_DATABASE).await?;
    client
        .batch_execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements SCHEMA public")
        .await
        .context("create extension pg_stat_statements in the agent's database")
}
