//! SIGHUP, `POST /reload` (`pgplatform reload`) and the pooler console's RELOAD: read the file again, hand what can change
//! live to every part through one `watch` of `Arc<Config>`, and name the rest.

use std::sync::Arc;

use anyhow::Context;
use tokio::sync::{mpsc, watch};

use super::prepare::{write_settings, Host};
use crate::config::reload::{diff, effective};
use crate::config::{Config, PoolerConfig};
use crate::shutdown::{ReloadRequest, Reloaded};

/// The running configuration and whom to tell when it changes.
pub(super) struct Reloader {
    /// As the agent started: what restart-only keys are compared against, so a key
    /// changed and changed back is no longer pending.
    started: Arc<Config>,
    /// Every part subscribes here (scheduler, status, metrics).
    pub config: watch::Sender<Arc<Config>>,
    /// Keys changed in the file that wait for an agent restart.
    pub pending_restart: watch::Sender<Vec<&'static str>>,
    /// The pooler has its own view of its section.
    pub pooler: watch::Sender<Arc<PoolerConfig>>,
    /// Where reload requests go (the API's `POST /reload` sends here too).
    pub requests: mpsc::Sender<ReloadRequest>,
}

impl Reloader {
    pub fn new(config: &Config, requests: mpsc::Sender<ReloadRequest>) -> Reloader {
        let started = Arc::new(config.clone());
        Reloader {
            config: watch::channel(started.clone()).0,
            pending_restart: watch::channel(Vec::new()).0,
            pooler: watch::channel(Arc::new(config.pooler.clone())).0,
            started,
            requests,
        }
    }

    /// Reads the file again and applies it (on any error nothing changes), and tells
    /// the requester how it went.
    pub async fn answer(&self, host: &Host, request: ReloadRequest) {
        let outcome = self.reload(host).await.map_err(|e| {
            tracing::error!("configuration not reloaded, keeping the running one: {e:#}");
            format!("{e:#}")
        });
        if let Some(reply) = request.reply {
            let _ = reply.send(outcome);
        }
    }

    async fn reload(&self, host: &Host) -> anyhow::Result<Reloaded> {
        let running = self.config.borrow().clone();
        let Some(path) = &running.source else {
            anyhow::bail!("the agent runs on built-in defaults; there is no config file to reload");
        };
        let new = Config::load(path)?;
        let applied = effective(&running, &new);
        let live = diff(&running, &applied).live;
        let pending = diff(&self.started, &new).restart;
        if write_settings(&applied, &host.data_dir, host.run_as.as_ref(), host.served)? {
            let client = crate::pg::connect::superuser(
                &host.data_dir.socket_dir(),
                running.postgres.port,
                "postgres",
            )
            .await?;
            client
                .execute("SELECT pg_reload_conf()", &[])
                .await
                .context("reload PostgreSQL")?;
            tracing::info!(
                "PostgreSQL settings reloaded; `pgplatform status` lists any that wait for a restart"
            );
        }
        self.pooler.send_replace(Arc::new(applied.pooler.clone()));
        self.config.send_replace(Arc::new(applied));
        if live.is_empty() {
            tracing::info!("configuration reloaded; nothing to apply live changed");
        } else {
            tracing::info!("configuration reloaded; applied live: {}", live.join(", "));
        }
        if !pending.is_empty() {
            tracing::warn!(
                "configuration: pending restart: {} (these keys take effect when the agent restarts)",
                pending.join(", ")
            );
        }
        self.pending_restart.send_replace(pending.clone());
        Ok(Reloaded {
            applied_live: live.iter().map(|k| k.to_string()).collect(),
            pending_restart: pending.iter().map(|k| k.to_string()).collect(),
        })
    }
}
