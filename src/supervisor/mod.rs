//! Runs PostgreSQL as a child: first start, restart with backoff when it dies, clean stop on
//! shutdown. Publishes its state on a `watch` channel for health checks and `status`.

mod log_relay;
mod postmaster;
mod state;

use std::time::Instant;

use anyhow::Context;
use tokio::process::Child;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub use self::log_relay::{LogTail, LOG_LINE_PREFIX};
pub use self::postmaster::{spawn, stop, PostmasterSpec};
use self::state::Backoff;
pub use self::state::{PostgresState, PostgresStatus};

/// A PostgreSQL that has started once and accepts connections.
pub struct Started {
    child: Child,
    tail: LogTail,
    status: watch::Sender<PostgresStatus>,
}

/// Clears away an orphaned postmaster, starts PostgreSQL and waits until it accepts
/// connections. A failure here is fatal for `up`: it usually means bad settings.
pub async fn start(
    spec: &PostmasterSpec,
) -> anyhow::Result<(Started, watch::Receiver<PostgresStatus>)> {
    postmaster::stop_orphan(&spec.pgdata, spec.stop_timeout).await?;
    let tail = LogTail::default();
    let (status, status_rx) = watch::channel(PostgresStatus {
        state: PostgresState::Starting,
        pid: None,
        restarts: 0,
        version: spec.binaries.version.text.clone(),
        port: spec.port,
    });
    let mut child = postmaster::spawn(spec, &tail)?;
    status.send_modify(|s| s.pid = child.id());
    postmaster::wait_ready(spec, &mut child, &tail)
        .await
        .context("start PostgreSQL")?;
    status.send_modify(|s| s.state = PostgresState::Running);
    tracing::info!(
        pid = child.id(),
        "PostgreSQL {} is accepting connections",
        spec.binaries.version.text
    );
    Ok((
        Started {
            child,
            tail,
            status,
        },
        status_rx,
    ))
}

/// A request to stop PostgreSQL for maintenance (an in-place restore): `stopped` is
/// answered once it is down; it starts again when `resume` fires or is dropped.
pub struct Maintenance {
    pub stopped: tokio::sync::oneshot::Sender<()>,
    pub resume: tokio::sync::oneshot::Receiver<()>,
}

/// Keeps PostgreSQL running until `shutdown`, then stops it (fast, then immediate).
pub async fn task_main(
    spec: PostmasterSpec,
    started: Started,
    mut maintenance: tokio::sync::mpsc::Receiver<Maintenance>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let Started {
        mut child,
        tail,
        status,
    } = started;
    let mut backoff = Backoff::default();
    let mut running_since = Instant::now();
    loop {
        let exit = tokio::select! {
            exit = child.wait() => exit,
            Some(request) = maintenance.recv() => {
                status.send_modify(|s| s.state = PostgresState::Stopping);
                postmaster::stop(&spec, &mut child).await;
                status.send_modify(|s| {
                    s.state = PostgresState::Stopped;
                    s.pid = None;
                });
                tracing::info!("PostgreSQL stopped for maintenance");
                let _ = request.stopped.send(());
                let _ = shutdown.run_until_cancelled(request.resume).await;
                if shutdown.is_cancelled() {
                    return Ok(());
                }
                tracing::info!("starting PostgreSQL after maintenance");
                match restart(&spec, &tail, &status, &mut Backoff::default(), &shutdown).await {
                    Some(new_child) => child = new_child,
                    None => break,
                }
                running_since = Instant::now();
                continue;
            }
            () = shutdown.cancelled() => break,
        };
        let exit = exit.context("wait for postgres")?;
        backoff.ran_for(running_since.elapsed());
        status.send_modify(|s| {
            s.state = PostgresState::Restarting;
            s.pid = None;
            s.restarts += 1;
        });
        tracing::error!(
            "PostgreSQL exited unexpectedly ({exit}); restarting it: {}",
            tail.last_lines(3)
        );
        match restart(&spec, &tail, &status, &mut backoff, &shutdown).await {
            Some(new_child) => child = new_child,
            None => break,
        }
        running_since = Instant::now();
    }
    status.send_modify(|s| s.state = PostgresState::Stopping);
    postmaster::stop(&spec, &mut child).await;
    status.send_modify(|s| {
        s.state = PostgresState::Stopped;
        s.pid = None;
    });
    Ok(())
}

/// Starts PostgreSQL again after the backoff, as often as needed. `None` on shutdown.
async fn restart(
    spec: &PostmasterSpec,
    tail: &LogTail,
    status: &watch::Sender<PostgresStatus>,
    backoff: &mut Backoff,
    shutdown: &CancellationToken,
) -> Option<Child> {
    loop {
        let delay = backoff.next_delay();
        shutdown
            .run_until_cancelled(tokio::time::sleep(delay))
            .await?;
        let mut child = match postmaster::spawn(spec, tail) {
            Ok(child) => child,
            Err(e) => {
                tracing::error!("restart PostgreSQL: {e:#}");
                continue;
            }
        };
        status.send_modify(|s| {
            s.state = PostgresState::Starting;
            s.pid = child.id();
        });
        let ready = shutdown
            .run_until_cancelled(postmaster::wait_ready(spec, &mut child, tail))
            .await;
        match ready {
            Some(Ok(())) => {
                status.send_modify(|s| s.state = PostgresState::Running);
                tracing::info!(
                    pid = child.id(),
                    "PostgreSQL restarted and accepts connections"
                );
                return Some(child);
            }
            Some(Err(e)) => tracing::error!("restart PostgreSQL (retrying after backoff): {e:#}"),
            // Shutting down mid-start: the caller stops this child.
            None => return Some(child),
        }
    }
}
