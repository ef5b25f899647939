//! The one place where Unix signals become a shutdown token and reload requests, and
//! the request the other ways to reload (the API, the pooler console) send.

use std::sync::OnceLock;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// A request to read the config file again; `reply`, when set, learns how it went.
#[derive(Debug, Default)]
pub struct ReloadRequest {
    pub reply: Option<oneshot::Sender<Result<Reloaded, String>>>,
}

/// What a reload changed: keys applied live, and keys that wait for an agent restart.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reloaded {
    pub applied_live: Vec<String>,
    pub pending_restart: Vec<String>,
}

/// Cancelled by a second SIGINT or SIGTERM (or SIGQUIT): stop without waiting for
/// clients (PgBouncer's "immediate shutdown", which a signal received while a shutdown is
/// in progress triggers). One per process, since signals are.
pub fn immediate() -> CancellationToken {
    static IMMEDIATE: OnceLock<CancellationToken> = OnceLock::new();
    IMMEDIATE.get_or_init(CancellationToken::new).clone()
}

/// Cancels `token` on the first SIGINT or SIGTERM (a safe shutdown: running transactions
/// finish, up to `pooler.shutdown_timeout`), and `immediate()` on a second one or on
/// SIGQUIT; sends on `reload` for each SIGHUP.
pub fn install(
    token: CancellationToken,
    reload: mpsc::Sender<ReloadRequest>,
) -> anyhow::Result<()> {
    let mut interrupt = signal(SignalKind::interrupt()).context("install SIGINT handler")?;
    let mut terminate = signal(SignalKind::terminate()).context("install SIGTERM handler")?;
    let mut quit = signal(SignalKind::quit()).context("install SIGQUIT handler")?;
    let mut hangup = signal(SignalKind::hangup()).context("install SIGHUP handler")?;
    // PgBouncer's PAUSE and RESUME signals; by default they would end the process.
    let mut user1 = signal(SignalKind::user_defined1()).context("install SIGUSR1 handler")?;
    let mut user2 = signal(SignalKind::user_defined2()).context("install SIGUSR2 handler")?;
    tokio::spawn(async move {
        let stop = |name: &str| {
            if token.is_cancelled() {
                tracing::warn!("{name} received during shutdown: stopping at once, without waiting for clients");
                immediate().cancel();
            } else {
                tracing::info!("{name} received, shutting down (a second one stops at once)");
                token.cancel();
            }
        };
        loop {
            tokio::select! {
                _ = interrupt.recv() => stop("SIGINT"),
                _ = terminate.recv() => stop("SIGTERM"),
                _ = quit.recv() => {
                    tracing::warn!("SIGQUIT received: stopping at once, without waiting for clients");
                    token.cancel();
                    immediate().cancel();
                }
                _ = user1.recv() => tracing::warn!("SIGUSR1 ignored: use PAUSE on the pooler console"),
                _ = user2.recv() => tracing::warn!("SIGUSR2 ignored: use RESUME on the pooler console"),
                _ = hangup.recv() => {
                    tracing::info!("SIGHUP received, reloading configuration");
                    // A full queue means a reload is already pending; that one will do.
                    let _ = reload.try_send(ReloadRequest::default());
                }
            }
        }
    });
    Ok(())
}
