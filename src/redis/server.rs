//! One tenant's redis-server as a child of the agent: started, watched until it answers
//! the agent's PING, restarted with backoff when it dies (Redis replays its AOF on
//! start), stopped with SIGTERM (Redis flushes its AOF) and SIGKILL after a timeout; and
//! one left running by an agent that was killed is stopped before a new one starts.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};
use tokio::process::Child;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::resp::Connection;
use crate::run_as::RunAs;
use crate::supervisor::Backoff;

/// How long a stopping server may take to flush before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a starting server may take to answer (loading a large AOF included).
const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// A log line of redis-server's longer than this is cut.
const MAX_LOG_LINE: u64 = 16 << 10;

/// Where a tenant's server is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Starting,
    Running,
    /// Exited or failed to start; waiting out the backoff.
    Restarting,
    Stopped,
}

/// What the supervision task publishes.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Status {
    pub state: State,
    pub pid: Option<u32>,
    /// Unplanned restarts since this server was started by the agent.
    pub restarts: u32,
    /// Why the last start failed, if it did.
    pub last_error: Option<String>,
}

/// Everything needed to run and reach one server.
#[derive(Debug, Clone)]
pub struct Process {
    pub tenant: String,
    pub bin: PathBuf,
    pub dir: PathBuf,
    pub run_as: Option<RunAs>,
    pub admin_password: String,
}

impl Process {
    pub fn conf(&self) -> PathBuf {
        self.dir.join("redis.conf")
    }
    pub fn socket(&self) -> PathBuf {
        self.dir.join("redis.sock")
    }

    /// An authenticated admin connection over the unix socket.
    pub async fn connect(&self) -> anyhow::Result<Connection> {
        Connection::open(
            &self.socket(),
            super::conf::ADMIN_USER,
            &self.admin_password,
        )
        .await
    }
}

/// Runs the server until `stop`: start, wait until ready, restart after an exit.
pub async fn supervise(process: Process, stop: CancellationToken, status: watch::Sender<Status>) {
    let tenant = process.tenant.clone();
    if let Err(e) = stop_orphan(&process.dir).await {
        tracing::error!(tenant = %tenant, "{e:#}");
    }
    let mut backoff = Backoff::default();
    loop {
        let delay = backoff.next_delay();
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = stop.cancelled() => break,
        }
        let started = Instant::now();
        let mut child = match spawn(&process) {
            Ok(child) => child,
            Err(e) => {
                tracing::error!(tenant = %tenant, "start redis-server (retrying after backoff): {e:#}");
                status.send_modify(|s| {
                    s.state = State::Restarting;
                    s.last_error = Some(format!("{e:#}"));
                });
                continue;
            }
        };
        status.send_modify(|s| {
            s.state = State::Starting;
            s.pid = child.id();
        });
        let ready = tokio::select! {
            ready = wait_ready(&process, &mut child) => ready,
            () = stop.cancelled() => {
                stop_child(&tenant, &mut child).await;
                break;
            }
        };
        match ready {
            Ok(()) => {
                tracing::info!(tenant = %tenant, pid = child.id(), "redis-server accepts connections");
                status.send_modify(|s| {
                    s.state = State::Running;
                    s.last_error = None;
                });
            }
            Err(e) => {
                tracing::error!(tenant = %tenant, "redis-server did not start (retrying after backoff): {e:#}");
                let _ = child.start_kill();
                let _ = child.wait().await;
                backoff.ran_for(started.elapsed());
                status.send_modify(|s| {
                    s.state = State::Restarting;
                    s.pid = None;
                    s.last_error = Some(format!("{e:#}"));
                });
                continue;
            }
        }
        tokio::select! {
            exit = child.wait() => {
                let exit = exit.map_or_else(|e| e.to_string(), |s| s.to_string());
                tracing::error!(tenant = %tenant, "redis-server exited unexpectedly ({exit}); restarting it");
                backoff.ran_for(started.elapsed());
                status.send_modify(|s| {
                    s.state = State::Restarting;
                    s.pid = None;
                    s.restarts += 1;
                    s.last_error = Some(format!("exited: {exit}"));
                });
            }
            () = stop.cancelled() => {
                stop_child(&tenant, &mut child).await;
                break;
            }
        }
    }
    status.send_modify(|s| {
        s.state = State::Stopped;
        s.pid = None;
    });
}

fn spawn(process: &Process) -> anyhow::Result<Child> {
    let mut child = crate::pg::process::command(&process.bin, process.run_as.as_ref())
        .current_dir(&process.dir)
        .arg(process.conf())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("run {}", process.bin.display()))?;
    if let Some(out) = child.stdout.take() {
        tokio::spawn(relay(out, process.tenant.clone()));
    }
    if let Some(err) = child.stderr.take() {
        tokio::spawn(relay(err, process.tenant.clone()));
    }
    Ok(child)
}

/// Re-emits redis-server's log lines through tracing, each cut at `MAX_LOG_LINE`.
async fn relay(output: impl AsyncRead + Unpin, tenant: String) {
    let mut reader = BufReader::new(output);
    loop {
        let mut line = Vec::new();
        match (&mut reader)
            .take(MAX_LOG_LINE)
            .read_until(b'\n', &mut line)
            .await
        {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end();
        if !text.is_empty() {
            tracing::info!(component = "redis", tenant = %tenant, "{text}");
        }
    }
}

/// Until the server answers the admin user's PING, failing if it exits first.
async fn wait_ready(process: &Process, child: &mut Child) -> anyhow::Result<()> {
    let deadline = Instant::now() + READY_TIMEOUT;
    let mut last_error = None;
    while Instant::now() < deadline {
        if let Some(exit) = child.try_wait().context("check redis-server")? {
            bail!("redis-server exited during startup ({exit}); its log lines above say why");
        }
        match ping(process).await {
            Ok(()) => return Ok(()),
            Err(e) => last_error = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!(
        "redis-server did not answer within {READY_TIMEOUT:?}: {:#}",
        last_error.unwrap_or_else(|| anyhow::anyhow!("no attempt"))
    )
}

async fn ping(process: &Process) -> anyhow::Result<()> {
    let mut connection = process.connect().await?;
    let pong = connection.command(&["PING"]).await?.text()?;
    if pong != "PONG" {
        bail!("PING answered {pong:?}");
    }
    Ok(())
}

/// SIGTERM (Redis writes out its AOF and exits), SIGKILL after `STOP_TIMEOUT`.
async fn stop_child(tenant: &str, child: &mut Child) {
    if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
    }
    match tokio::time::timeout(STOP_TIMEOUT, child.wait()).await {
        Ok(_) => tracing::info!(tenant = %tenant, "redis-server stopped"),
        Err(_) => {
            tracing::warn!(tenant = %tenant, "redis-server did not stop within {STOP_TIMEOUT:?}; killing it");
            let _ = child.kill().await;
        }
    }
}

/// Stops a redis-server a killed agent left running on `dir`. The pid file is the
/// server's user's to write, so its word is not enough: the process must run in `dir`
/// as the owner of `dir`, or a planted pid would have root signal any process.
pub(super) async fn stop_orphan(dir: &Path) -> anyhow::Result<()> {
    let Some(pid) = running_server(dir) else {
        return Ok(());
    };
    tracing::warn!(
        pid,
        dir = %dir.display(),
        "a redis-server from a previous agent is still running; stopping it"
    );
    let pid = Pid::from_raw(pid);
    for (signal, wait) in [
        (Signal::SIGTERM, STOP_TIMEOUT),
        (Signal::SIGKILL, Duration::from_secs(10)),
    ] {
        let _ = kill(pid, signal);
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline {
            if kill(pid, None).is_err() || running_server(dir).is_none() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    bail!(
        "the old redis-server (pid {pid}) on {} did not stop",
        dir.display()
    )
}

fn running_server(dir: &Path) -> Option<i32> {
    let text = crate::safe_file::read_to_string(&dir.join("redis.pid")).ok()?;
    let pid: i32 = text.trim().parse().ok()?;
    if pid <= 1 || !crate::supervisor::runs_in(pid, dir) {
        return None;
    }
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok()?;
    exe.file_name()?
        .to_string_lossy()
        .starts_with("redis")
        .then_some(pid)
}
