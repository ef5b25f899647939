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

pub use self::log_relay::LogTail;
pub use self::postmaster::{runs_in, spawn, stop, PostmasterSpec};
pub use self::state::Backoff;
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

/// A request to hold PostgreSQL stopped (an in-place restore, an HA demotion or rewind):
/// `stopped` is answered once it is down; it starts again when `resume` fires or is
/// dropped. It is honoured even while PostgreSQL is being restarted.
pub struct Maintenance {
    pub stopped: tokio::sync::oneshot::Sender<()>,
    pub resume: tokio::sync::oneshot::Receiver<()>,
    /// Stop at once (SIGQUIT): an HA fence, where writes must end now.
    pub immediate: bool,
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
    let mut ctx = Runner {
        spec: &spec,
        tail: &tail,
        status: &status,
        maintenance: &mut maintenance,
        shutdown: &shutdown,
    };
    loop {
        let exit = tokio::select! {
            exit = child.wait() => exit,
            Some(request) = ctx.maintenance.recv() => {
                match ctx.hold(Some(&mut child), request).await {
                    Some(new_child) => child = new_child,
                    None => return Ok(()),
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
        match ctx.restart(&mut backoff).await {
            Some(new_child) => child = new_child,
            None => return Ok(()),
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

/// What starting and stopping needs, borrowed from `task_main`.
struct Runner<'a> {
    spec: &'a PostmasterSpec,
    tail: &'a LogTail,
    status: &'a watch::Sender<PostgresStatus>,
    maintenance: &'a mut tokio::sync::mpsc::Receiver<Maintenance>,
    shutdown: &'a CancellationToken,
}

impl Runner<'_> {
    /// Stops the child (if any), answers the request, waits for `resume`, then starts
    /// PostgreSQL again. `None` on shutdown, with PostgreSQL stopped.
    async fn hold(&mut self, child: Option<&mut Child>, request: Maintenance) -> Option<Child> {
        self.status
            .send_modify(|s| s.state = PostgresState::Stopping);
        if let Some(child) = child {
            if request.immediate {
                postmaster::stop_immediately(child).await;
            } else {
                postmaster::stop(self.spec, child).await;
            }
        }
        self.status.send_modify(|s| {
            s.state = PostgresState::Stopped;
            s.pid = None;
        });
        tracing::info!("PostgreSQL stopped and held for maintenance");
        let _ = request.stopped.send(());
        let _ = self.shutdown.run_until_cancelled(request.resume).await;
        if self.shutdown.is_cancelled() {
            return None;
        }
        tracing::info!("starting PostgreSQL after maintenance");
        self.restart(&mut Backoff::default()).await
    }

    /// Starts PostgreSQL again after the backoff, as often as needed, honouring hold
    /// requests meanwhile. `None` on shutdown, with PostgreSQL stopped.
    async fn restart(&mut self, backoff: &mut Backoff) -> Option<Child> {
        loop {
            let delay = backoff.next_delay();
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                Some(request) = self.maintenance.recv() => {
                    return Box::pin(self.hold(None, request)).await;
                }
                () = self.shutdown.cancelled() => return None,
            }
            let mut child = match postmaster::spawn(self.spec, self.tail) {
                Ok(child) => child,
                Err(e) => {
                    tracing::error!("restart PostgreSQL: {e:#}");
                    continue;
                }
            };
            self.status.send_modify(|s| {
                s.state = PostgresState::Starting;
                s.pid = child.id();
            });
            let ready = tokio::select! {
                ready = postmaster::wait_ready(self.spec, &mut child, self.tail) => ready,
                Some(request) = self.maintenance.recv() => {
                    return Box::pin(self.hold(Some(&mut child), request)).await;
                }
                () = self.shutdown.cancelled() => {
                    postmaster::stop(self.spec, &mut child).await;
                    return None;
                }
            };
            match ready {
                Ok(()) => {
                    self.status
                        .send_modify(|s| s.state = PostgresState::Running);
                    tracing::info!(
                        pid = child.id(),
                        "PostgreSQL started and accepts connections"
                    );
                    return Some(child);
                }
                Err(e) => tracing::error!("restart PostgreSQL (retrying after backoff): {e:#}"),
            }
        }
    }
}
