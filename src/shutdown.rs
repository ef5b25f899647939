//! The one place where Unix signals become a shutdown token and reload requests.

use anyhow::Context;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Cancels `token` on the first SIGINT or SIGTERM; sends on `reload` for each SIGHUP.
pub fn install(token: CancellationToken, reload: mpsc::Sender<()>) -> anyhow::Result<()> {
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
                    let _ = reload.try_send(());
                }
            }
        }
    });
    Ok(())
}
