//! One postmaster process: start it, wait until it accepts connections, stop it, and clear
//! away one left running by an agent that was killed.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::process::Child;

use super::log_relay::{self, LogTail};
use crate::pg::bin::Binaries;
use crate::pg::process::command;
use crate::run_as::RunAs;

/// Everything needed to run PostgreSQL on one data directory.
#[derive(Debug, Clone)]
pub struct PostmasterSpec {
    pub binaries: Binaries,
    pub pgdata: PathBuf,
    pub socket_dir: PathBuf,
    pub port: u16,
    pub run_as: Option<RunAs>,
    pub stop_timeout: Duration,
    /// `-c name=value` settings for this run only (a drill's throwaway instance).
    pub options: Vec<(String, String)>,
}

/// Starts `postgres -D` as a child whose stderr is relayed to the agent's log.
pub fn spawn(spec: &PostmasterSpec, tail: &LogTail) -> anyhow::Result<Child> {
    let mut child = command(&spec.binaries.path("postgres"), spec.run_as.as_ref())
        .current_dir(&spec.pgdata)
        .arg("-D")
        .arg(&spec.pgdata)
        .args(
            spec.options
                .iter()
                .flat_map(|(k, v)| ["-c".to_owned(), format!("{k}={v}")]),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("start postgres")?;
    if let Some(stderr) = child.stderr.take() {
        tokio::spawn(log_relay::relay(stderr, tail.clone()));
    }
    if let Some(stdout) = child.stdout.take() {
        tokio::spawn(log_relay::relay(stdout, tail.clone()));
    }
    Ok(child)
}

/// Waits until PostgreSQL accepts the agent's connections, failing if the child exits.
/// Crash recovery can take long, so there is no deadline while the child lives.
pub async fn wait_ready(
    spec: &PostmasterSpec,
    child: &mut Child,
    tail: &LogTail,
) -> anyhow::Result<()> {
    loop {
        if let Some(status) = child.try_wait().context("check postgres")? {
            bail!(
                "PostgreSQL exited during startup ({status}): {}",
                tail.last_lines(5)
            );
        }
        let connect = crate::pg::connect::superuser(&spec.socket_dir, spec.port, "postgres");
        if let Ok(Ok(client)) = tokio::time::timeout(Duration::from_secs(3), connect).await {
            if client.simple_query("SELECT 1").await.is_ok() {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Fast shutdown (SIGINT), then immediate (SIGQUIT) after the timeout, then SIGKILL.
/// Both are safe for committed data: an immediate shutdown recovers from WAL on start.
pub async fn stop(spec: &PostmasterSpec, child: &mut Child) {
    let Some(pid) = child.id() else {
        return;
    };
    let pid = Pid::from_raw(pid as i32);
    for (signal, wait) in [
        (Signal::SIGINT, spec.stop_timeout),
        (Signal::SIGQUIT, Duration::from_secs(10)),
    ] {
        let _ = kill(pid, signal);
        if let Ok(Ok(status)) = tokio::time::timeout(wait, child.wait()).await {
            tracing::info!("PostgreSQL stopped ({status})");
            return;
        }
        tracing::warn!("PostgreSQL did not stop after {signal} within {wait:?}");
    }
    let _ = child.kill().await;
}

/// Immediate shutdown (SIGQUIT): writes end now; the next start recovers from WAL.
pub async fn stop_immediately(child: &mut Child) {
    if let Some(pid) = child.id() {
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGQUIT);
        if let Ok(Ok(status)) = tokio::time::timeout(Duration::from_secs(10), child.wait()).await {
            tracing::info!("PostgreSQL stopped immediately ({status})");
            return;
        }
    }
    let _ = child.kill().await;
}

/// Stops a postmaster still running on `pgdata` that is not our child — left behind when a
/// previous agent was killed — so that we can start our own.
pub async fn stop_orphan(pgdata: &Path, stop_timeout: Duration) -> anyhow::Result<()> {
    let Some(pid) = running_postmaster(pgdata) else {
        return Ok(());
    };
    tracing::warn!(
        pid,
        "a PostgreSQL from a previous agent is still running; stopping it (fast)"
    );
    let pid = Pid::from_raw(pid);
    for (signal, wait) in [
        (Signal::SIGINT, stop_timeout),
        (Signal::SIGQUIT, Duration::from_secs(10)),
        (Signal::SIGKILL, Duration::from_secs(10)),
    ] {
        let _ = kill(pid, signal);
        let deadline = tokio::time::Instant::now() + wait;
        while tokio::time::Instant::now() < deadline {
            if kill(pid, None).is_err() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    bail!(
        "the old PostgreSQL (pid {pid}) on {} did not stop",
        pgdata.display()
    )
}

/// The pid in postmaster.pid if that process is alive and is a postgres for this PGDATA.
/// The file is the PostgreSQL user's to write, so its word is not enough: the process must
/// belong to PGDATA's owner and run in PGDATA, or a planted pid would have root signal
/// any process it names.
fn running_postmaster(pgdata: &Path) -> Option<i32> {
    let text = crate::safe_file::read_to_string(&pgdata.join("postmaster.pid")).ok()?;
    let mut lines = text.lines();
    let pid: i32 = lines.next()?.trim().parse().ok()?;
    let dir = lines.next()?.trim();
    if pid <= 0 || Path::new(dir) != pgdata {
        return None;
    }
    if !runs_in(pid, pgdata) {
        return None;
    }
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let is_postgres = String::from_utf8_lossy(&cmdline).contains("postgres");
    is_postgres.then_some(pid)
}

/// Whether process `pid` is alive, belongs to `dir`'s owner and runs in `dir`: what a pid
/// file in a directory the server's user can write must be checked against before the
/// agent signals the pid it names.
pub fn runs_in(pid: i32, dir: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let check = || -> Option<bool> {
        kill(Pid::from_raw(pid), None).ok()?;
        let owner = std::fs::metadata(dir).ok()?.uid();
        Some(
            std::fs::metadata(format!("/proc/{pid}")).ok()?.uid() == owner
                && std::fs::read_link(format!("/proc/{pid}/cwd")).ok()?
                    == std::fs::canonicalize(dir).ok()?,
        )
    };
    check() == Some(true)
}
