//! The integration-test harness: spawning processes with timeouts, polling, and small file/process checks.

pub mod agent;
pub mod backup;
pub mod cluster;
pub mod etcd;
pub mod http;
pub mod metrics;
pub mod netns;
pub mod pki;
pub mod pooler;
pub mod ports;
pub mod psql;
pub mod raw_client;
pub mod redis;
pub mod tenants;

use std::ffi::OsStr;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

pub use agent::TestAgent;

/// The binary under test, built by cargo for this test run.
pub const BIN: &str = env!("CARGO_BIN_EXE_pgplatform");

/// How long any one CLI or psql invocation may take before the test fails.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// A `Command` for `program`.
///
/// `Command::new` is banned in `src/` so that PostgreSQL is only spawned through `pg::process`;
/// the tests are black-box clients of the built binary and of psql, so they spawn directly.
#[allow(clippy::disallowed_methods)]
pub fn command(program: impl AsRef<OsStr>) -> Command {
    Command::new(program)
}

/// A `pgplatform` command that is not influenced by the environment of whoever runs the tests.
pub fn pgplatform() -> Command {
    let mut cmd = command(BIN);
    cmd.env_remove("PGPLATFORM_CONFIG");
    cmd
}

/// Runs `cmd` to completion with stdin closed, capturing stdout and stderr.
/// Panics (after killing it) if it runs longer than `timeout`.
pub fn run(cmd: &mut Command, timeout: Duration) -> Output {
    try_run(cmd, timeout).unwrap_or_else(|| panic!("{cmd:?} did not finish within {timeout:?}"))
}

/// Like `run`, but a command still running after `timeout` is killed and `None` returned.
pub fn try_run(cmd: &mut Command, timeout: Duration) -> Option<Output> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let stdout = read_in_background(child.stdout.take());
    let stderr = read_in_background(child.stderr.take());
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        thread::sleep(Duration::from_millis(20));
    };
    // A grandchild that inherited the pipes could keep them open forever: bound the wait.
    let collect =
        |rx: mpsc::Receiver<Vec<u8>>| rx.recv_timeout(Duration::from_secs(5)).unwrap_or_default();
    Some(Output {
        status,
        stdout: collect(stdout),
        stderr: collect(stderr),
    })
}

fn read_in_background(pipe: Option<impl Read + Send + 'static>) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    if let Some(mut pipe) = pipe {
        thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = pipe.read_to_end(&mut buf);
            let _ = tx.send(buf);
        });
    }
    rx
}

pub fn stdout_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Polls `probe` every 100 ms until it returns `Some`, or panics naming `what` after `timeout`.
pub fn wait_for<T>(timeout: Duration, what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        thread::sleep(Duration::from_millis(100));
    }
}

/// Like `wait_for`, but `None` on timeout so the caller can say what it last saw.
pub fn try_wait_for<T>(timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// Whether `pid` is a live process (zombies count as gone: they are only waiting to be reaped).
pub fn process_alive(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/status")) {
        Ok(status) => !status
            .lines()
            .any(|line| line.starts_with("State:") && line.contains("Z")),
        Err(_) => false,
    }
}

/// The permission bits of `path` (e.g. `0o600`).
pub fn mode(path: &Path) -> u32 {
    let meta = fs::metadata(path).unwrap_or_else(|e| panic!("stat {}: {e}", path.display()));
    meta.permissions().mode() & 0o777
}

/// The environment variable that lets a test whose prerequisite is missing pass instead of
/// fail. Off by default: `scripts/test` and `.ci/run` install every prerequisite, so a
/// missing one is a broken set-up, not a reason to report ok. Set it (to `1`) only when
/// running part of the suite by hand on a machine that lacks something.
pub const ALLOW_SKIP_ENV: &str = "PGPLATFORM_TEST_ALLOW_SKIP";

/// Whether this run was explicitly started in the mode that allows skipping.
pub fn skipping_allowed() -> bool {
    std::env::var(ALLOW_SKIP_ENV).as_deref() == Ok("1")
}

/// A prerequisite of the calling test is missing, for `reason`.
///
/// Fails the test (panics with the reason) unless `PGPLATFORM_TEST_ALLOW_SKIP=1`; then
/// writes the reason to stderr and returns, and the caller must return without testing.
/// The reason goes straight to the process's stderr, not through `eprintln!`, which
/// libtest captures and hides for passing tests.
pub fn skip(reason: &str) {
    assert!(
        skipping_allowed(),
        "prerequisite missing: {reason} (run scripts/test to install the prerequisites, or set \
         {ALLOW_SKIP_ENV}=1 to skip instead)"
    );
    // Nothing useful to do if stderr itself is gone.
    let _ = writeln!(std::io::stderr().lock(), "skipped: {reason}");
}
