//! `TestAgent`: the built `pgplatform up` in a throw-away directory on free ports, and ways to talk to it.

use std::fs::{self, OpenOptions, Permissions};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;
use tempfile::TempDir;

use super::http::Http;
use super::ports::Ports;
use super::{pgplatform, process_alive, run, stderr_of, stdout_of, COMMAND_TIMEOUT};

const START_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
const START_ATTEMPTS: usize = 3;

/// One agent with its own directory, config file, data dir, log file and ports.
pub struct TestAgent {
    child: Option<Child>,
    ports: Ports,
    /// The address it listens on and is reached at (127.0.0.1 unless in a network namespace).
    host: String,
    /// A network namespace to run `up` in (partition tests).
    netns: Option<String>,
    extra_toml: String,
    /// Environment variables set for `up` (test-only switches of the agent).
    env: Vec<(String, String)>,
    /// Where the current run's output starts in the log file (the file is appended to on restart).
    log_offset: usize,
    pub(super) http: Http,
    /// Last field: removed only after `Drop::drop` has stopped the agent and PostgreSQL.
    dir: TempDir,
}

impl TestAgent {
    /// Starts an agent with the harness's default config and waits until `/health` is 200.
    pub fn start() -> TestAgent {
        TestAgent::start_with("")
    }

    /// Like `start`, with `extra_toml` merged over the default config (tables are merged key by key).
    pub fn start_with(extra_toml: &str) -> TestAgent {
        TestAgent::start_at("127.0.0.1", None, extra_toml)
    }

    /// Like `start_with`, listening on `host`, and inside network namespace `netns`.
    pub fn start_at(host: &str, netns: Option<&str>, extra_toml: &str) -> TestAgent {
        TestAgent::start_full(host, netns, extra_toml, &[])
    }

    /// Like `start_with`, with `env` set in the agent's environment.
    pub fn start_with_env(extra_toml: &str, env: &[(&str, &str)]) -> TestAgent {
        TestAgent::start_full("127.0.0.1", None, extra_toml, env)
    }

    fn start_full(
        host: &str,
        netns: Option<&str>,
        extra_toml: &str,
        env: &[(&str, &str)],
    ) -> TestAgent {
        let dir = tempfile::Builder::new()
            .prefix("pgplatform-it-")
            .tempdir()
            .unwrap();
        // When the tests run as root, PostgreSQL runs as `postgres` and must traverse this dir.
        fs::set_permissions(dir.path(), Permissions::from_mode(0o755)).unwrap();
        let mut agent = TestAgent {
            child: None,
            ports: Ports::pick(),
            host: host.to_owned(),
            netns: netns.map(str::to_owned),
            extra_toml: extra_toml.to_owned(),
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            log_offset: 0,
            http: Http::new(),
            dir,
        };
        agent.start_again();
        agent
    }

    /// Runs `up` (again) on the same directory and waits for `/health` 200.
    /// If a port was taken by someone else meanwhile, retries with new ports.
    pub fn start_again(&mut self) {
        assert!(
            self.child.is_none(),
            "start_again while the agent is running"
        );
        for attempt in 1..=START_ATTEMPTS {
            self.write_config();
            self.spawn();
            match self.wait_healthy() {
                Ok(()) => return,
                Err(StartError::PortTaken) if attempt < START_ATTEMPTS => {
                    eprintln!(
                        "agent could not bind its ports {:?}; retrying with new ones",
                        self.ports
                    );
                    self.ports = Ports::pick();
                }
                Err(StartError::PortTaken) => {
                    panic!("agent could not bind its ports {START_ATTEMPTS} times")
                }
                Err(StartError::Failed(why)) => panic!("agent did not start: {why}"),
            }
        }
    }

    /// Stops the agent with SIGTERM (SIGKILL after 30 s) and returns how it exited.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        let _ = kill(pid_of(&child), Signal::SIGTERM);
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(50)),
                _ => {
                    eprintln!("agent ignored SIGTERM for {STOP_TIMEOUT:?}; sending SIGKILL");
                    let _ = child.kill();
                    return child.wait().ok();
                }
            }
        }
    }

    /// Replaces the extra TOML the next start merges over the default config.
    pub fn set_extra_toml(&mut self, extra_toml: &str) {
        self.extra_toml = extra_toml.to_owned();
    }

    /// The extra TOML the agent was started with.
    pub fn extra_toml(&self) -> &str {
        &self.extra_toml
    }

    /// SIGTERM, wait, start again on the same directory.
    pub fn restart(&mut self) {
        let status = self.stop();
        assert!(
            status.is_some_and(|s| s.success()),
            "agent exited with {status:?} on SIGTERM"
        );
        self.start_again();
    }

    /// Kills the agent process with SIGKILL (PostgreSQL, its child, is left to fend for itself).
    pub fn kill9_agent(&mut self) {
        let mut child = self.child.take().expect("agent is running");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// The agent's process id while it runs.
    pub fn pid(&self) -> Option<i32> {
        self.child.as_ref().map(|child| pid_of(child).as_raw())
    }

    /// Whether the agent process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir().join("pgplatform.toml")
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir().join("data")
    }

    /// PGDATA.
    pub fn pgdata(&self) -> PathBuf {
        self.data_dir().join("pg")
    }

    pub fn pg_port(&self) -> u16 {
        self.ports.postgres
    }

    pub fn pooler_port(&self) -> u16 {
        self.ports.pooler
    }

    pub fn api_url(&self) -> String {
        let scheme = if self.api_tls() { "https" } else { "http" };
        format!("{scheme}://{}:{}", self.host, self.ports.api)
    }

    /// Whether the extra TOML turns on the API's TLS (`[api] tls`).
    fn api_tls(&self) -> bool {
        toml::from_str::<toml::Table>(&self.extra_toml)
            .ok()
            .and_then(|t| Some(t.get("api")?.get("tls")?.as_str()? != "off"))
            .unwrap_or(false)
    }

    /// The postmaster pid from `<data>/pg/postmaster.pid`, if that file exists.
    pub fn postmaster_pid(&self) -> Option<i32> {
        let text = fs::read_to_string(self.pgdata().join("postmaster.pid")).ok()?;
        text.lines().next()?.trim().parse().ok()
    }

    // ---- the CLI ----

    /// Runs `pgplatform --config <file> ARGS…` and returns its output, whatever the exit code.
    pub fn cli(&self, args: &[&str]) -> Output {
        run(
            pgplatform()
                .arg("--config")
                .arg(self.config_path())
                .args(args),
            COMMAND_TIMEOUT,
        )
    }

    /// Runs the CLI, asserts success, returns stdout.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "pgplatform {args:?} failed ({}): {}",
            out.status,
            stderr_of(&out)
        );
        stdout_of(&out)
    }

    /// Runs the CLI, asserts failure with an `error:` message, returns stderr.
    pub fn cli_err(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        let stderr = stderr_of(&out);
        assert!(
            !out.status.success(),
            "pgplatform {args:?} succeeded but should fail: {}",
            stdout_of(&out)
        );
        assert!(
            stderr.starts_with("error:"),
            "pgplatform {args:?}: stderr does not start with error: {stderr:?}"
        );
        assert!(
            !stderr.contains("panicked"),
            "pgplatform {args:?} panicked: {stderr}"
        );
        stderr
    }

    /// Runs the CLI, asserts success, parses stdout as JSON.
    pub fn cli_json(&self, args: &[&str]) -> Value {
        let stdout = self.cli_ok(args);
        serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("pgplatform {args:?}: not JSON ({e}): {stdout}"))
    }

    // ---- the log ----

    pub fn log_path(&self) -> PathBuf {
        self.dir().join("agent.log")
    }

    /// Everything the agent wrote to stdout and stderr, over all runs.
    pub fn log_contents(&self) -> String {
        fs::read(self.log_path())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let log = self.log_contents();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    // ---- internals ----

    fn write_config(&self) {
        let Ports {
            postgres,
            api,
            pooler,
        } = self.ports;
        let host = &self.host;
        let base = format!(
            r#"
data_dir = "data"

[postgres]
listen_addresses = "{host}"
port = {postgres}

[postgres.parameters]
shared_buffers = "32MB"
max_connections = "30"
fsync = "off"

[api]
listen = "{host}:{api}"

[pooler]
listen_addr = "{host}"
listen_port = {pooler}

[log]
format = "json"
"#
        );
        let mut config: toml::Table = toml::from_str(&base).unwrap();
        let extra: toml::Table =
            toml::from_str(&self.extra_toml).expect("the test's extra TOML parses");
        merge(&mut config, extra);
        fs::write(self.config_path(), toml::to_string(&config).unwrap()).unwrap();
    }

    fn spawn(&mut self) {
        self.log_offset = self.log_contents().len();
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        let mut command = match &self.netns {
            Some(netns) => {
                let mut ip = super::command("/usr/sbin/ip");
                ip.args(["netns", "exec", netns])
                    .arg(pgplatform().get_program())
                    .env_remove("PGPLATFORM_CONFIG");
                ip
            }
            None => pgplatform(),
        };
        let child = command
            .arg("--config")
            .arg(self.config_path())
            .args(["up", "--log-format", "json"])
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    fn wait_healthy(&mut self) -> Result<(), StartError> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if self.health_code() == Some(200) {
                return Ok(());
            }
            let child = self.child.as_mut().expect("spawned");
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                let this_run = self
                    .log_contents()
                    .get(self.log_offset..)
                    .unwrap_or_default()
                    .to_owned();
                return Err(if port_taken(&this_run) {
                    StartError::PortTaken
                } else {
                    StartError::Failed(format!("it exited with {status} before /health was 200"))
                });
            }
            if Instant::now() > deadline {
                return Err(StartError::Failed(format!(
                    "/health was not 200 within {START_TIMEOUT:?}"
                )));
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops a postmaster left running on our PGDATA (after a kill -9 of the agent, or an agent
    /// bug), so no test leaves PostgreSQL behind. Only a process whose working directory is our
    /// PGDATA is touched.
    fn stop_leftover_postmaster(&self) {
        let Some(pid) = self.postmaster_pid() else {
            return;
        };
        let ours = fs::canonicalize(self.pgdata()).ok();
        if !process_alive(pid) || fs::read_link(format!("/proc/{pid}/cwd")).ok() != ours {
            return;
        }
        eprintln!("stopping postmaster {pid} that outlived the agent");
        let _ = kill(Pid::from_raw(pid), Signal::SIGQUIT);
        let deadline = Instant::now() + Duration::from_secs(10);
        while process_alive(pid) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(50));
        }
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
}

impl Drop for TestAgent {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!(
                "---- tail of {} ----\n{}\n----",
                self.log_path().display(),
                self.log_tail(80)
            );
        }
        self.stop();
        self.stop_leftover_postmaster();
    }
}

enum StartError {
    PortTaken,
    Failed(String),
}

fn pid_of(child: &Child) -> Pid {
    Pid::from_raw(i32::try_from(child.id()).expect("pids fit in i32"))
}

/// Whether the agent's output says it failed because one of its ports was in use.
fn port_taken(log: &str) -> bool {
    [
        "Address already in use",
        "address already in use",
        "could not bind",
        "could not create any TCP/IP sockets",
    ]
    .iter()
    .any(|needle| log.contains(needle))
}

/// Merges `extra` into `base`: tables key by key, everything else replaced.
fn merge(base: &mut toml::Table, extra: toml::Table) {
    for (key, value) in extra {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(base_table)), toml::Value::Table(extra_table)) => {
                merge(base_table, extra_table)
            }
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}
