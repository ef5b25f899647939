//! The one place where Unix signals become a shutdown token and reload requests, and
//! the request the other ways to reload (the API, the pooler console) send.

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

/// Cancels `token` on the first SIGINT or SIGTERM; sends on `reload` for each SIGHUP.
pub fn install(
    token: CancellationToken,
    reload: mpsc::Sender<ReloadRequest>,
) -> anyhow::Result<()> {
    let mut interrupt = signal(SignalKind::interrupt()).context("install SIGINT handler")?;
    let mut terminate = signal(SignalKind::terminate()).context("install SIGTERM handler")?;
    let mut hangup = signal(SignalKind::hangup()).context("install SIGHUP handler")?;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = interrupt.recv() => { tracing::info!("SIGINT received, shutting down"); token.cancel(); }
                _ = terminate.recv() => { tracing::info!("SIGTERM received, shutting down"); token.cancel(); }
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
