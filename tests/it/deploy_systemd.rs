//! The systemd unit: `systemd-analyze verify` is clean (with and without the run-as-root
//! drop-in), its hardening scores as the README says, and the agent speaks systemd's
//! readiness protocol: `READY=1` on `$NOTIFY_SOCKET` only once `/health` answers 200,
//! `STOPPING=1` on SIGTERM. systemd is not PID 1 on the test machine, so the agent runs
//! with the unit's `ExecStart` command line and a socket standing in for systemd's.

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::{Pid, User};

use crate::support::ports::Ports;
use crate::support::{command, run, stderr_of, stdout_of, BIN, COMMAND_TIMEOUT};

pub fn deploy(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(path)
}

/// The unit's `ExecStart` arguments after the program (one line in the file).
pub fn exec_start() -> Vec<String> {
    let unit = fs::read_to_string(deploy("systemd/pgplatform.service")).unwrap();
    let line = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("the unit has ExecStart");
    let mut words = line.split_whitespace().map(str::to_owned);
    assert_eq!(words.next().as_deref(), Some("/usr/bin/pgplatform"));
    words.collect()
}

/// An agent started the way the unit starts it: `program` with `args`, as `user` (None =
/// as the test, i.e. root), with `NOTIFY_SOCKET` when given; SIGTERM and wait on drop.
pub struct UnitProcess {
    child: Option<Child>,
    pub log: PathBuf,
}

impl UnitProcess {
    pub fn start(
        program: &Path,
        args: &[String],
        user: Option<&User>,
        notify_socket: Option<&Path>,
        log: PathBuf,
    ) -> UnitProcess {
        let mut cmd = command(program);
        if let Some(socket) = notify_socket {
            cmd.env("NOTIFY_SOCKET", socket);
        }
        if let Some(user) = user {
            cmd.uid(user.uid.as_raw()).gid(user.gid.as_raw());
            cmd.env("HOME", &user.dir).env("USER", &user.name);
        }
        UnitProcess::spawn(cmd, args, log)
    }

    /// `program ARGS` as the test's user with `env` added.
    pub fn start_with_env(
        program: &Path,
        args: &[String],
        env: &[(&str, String)],
        log: PathBuf,
    ) -> UnitProcess {
        let mut cmd = command(program);
        cmd.envs(env.iter().map(|(k, v)| (k, v)));
        UnitProcess::spawn(cmd, args, log)
    }

    fn spawn(mut cmd: std::process::Command, args: &[String], log: PathBuf) -> UnitProcess {
        let file = fs::File::create(&log).unwrap();
        cmd.args(args)
            .env_remove("PGPLATFORM_CONFIG")
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file);
        let child = cmd.spawn().unwrap();
        UnitProcess {
            child: Some(child),
            log,
        }
    }

    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child.as_ref().expect("running").id() as i32)
    }

    pub fn exited(&mut self) -> bool {
        self.child
            .as_mut()
            .is_none_or(|c| !matches!(c.try_wait(), Ok(None)))
    }

    pub fn log_text(&self) -> String {
        String::from_utf8_lossy(&fs::read(&self.log).unwrap_or_default()).into_owned()
    }

    /// SIGTERM as `systemctl stop` sends it; whether it exited 0 within the unit's
    /// TimeoutStopSec.
    pub fn stop(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return false;
        };
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }
}

impl Drop for UnitProcess {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- {} ----\n{}\n----",
                self.log.display(),
                self.log_text()
            );
        }
        self.stop();
    }
}

/// The status code of `GET path` on `addr`, or None when nothing answers in 5 s.
pub fn http_status(addr: &str, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

fn verify(unit_dir: &Path) -> (bool, String) {
    let out = run(
        command("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(unit_dir.join("pgplatform.service")),
        COMMAND_TIMEOUT,
    );
    (
        out.status.success(),
        format!("{}{}", stdout_of(&out), stderr_of(&out)),
    )
}

#[test]
fn unit_verifies_clean_with_and_without_the_root_drop_in() {
    if !Path::new("/usr/bin/systemd-analyze").exists() {
        crate::support::skip("systemd-analyze (package systemd) is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // verify checks that ExecStart's program exists: point it at the built binary.
    let unit = fs::read_to_string(deploy("systemd/pgplatform.service")).unwrap();
    fs::write(
        dir.path().join("pgplatform.service"),
        unit.replace("/usr/bin/pgplatform", BIN),
    )
    .unwrap();
    let (ok, output) = verify(dir.path());
    assert!(ok && output.trim().is_empty(), "verify: {output}");

    let score = exposure(&dir.path().join("pgplatform.service"));
    let readme = fs::read_to_string(deploy("../README.md")).unwrap();
    assert!(
        readme.contains(&format!("exposure level {score}")),
        "the README records `systemd-analyze security` exposure level {score}"
    );

    let drop_ins = dir.path().join("pgplatform.service.d");
    fs::create_dir(&drop_ins).unwrap();
    fs::copy(
        deploy("systemd/run-as-root.conf"),
        drop_ins.join("run-as-root.conf"),
    )
    .unwrap();
    let (ok, output) = verify(dir.path());
    assert!(
        ok && output.trim().is_empty(),
        "verify with drop-in: {output}"
    );
}

/// `systemd-analyze security --offline`'s overall exposure level (0 best, 10 worst).
fn exposure(unit: &Path) -> String {
    let out = run(
        command("systemd-analyze")
            .args(["security", "--offline=true", "--no-pager"])
            .arg(unit),
        COMMAND_TIMEOUT,
    );
    let text = stdout_of(&out);
    let level = text
        .lines()
        .find_map(|l| l.split("exposure level for").nth(1))
        .and_then(|rest| rest.split(':').nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no exposure level in: {text}{}", stderr_of(&out)))
        .to_owned();
    let value: f64 = level.parse().unwrap();
    assert!(value < 5.0, "exposure {value} is above 'OK'");
    level
}

#[test]
fn ready_is_sent_only_once_health_answers_and_stopping_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let ports = Ports::pick();
    let config = dir.path().join("pgplatform.toml");
    fs::write(
        &config,
        format!(
            "data_dir = \"data\"\n[postgres]\nport = {}\n[postgres.parameters]\n\
             shared_buffers = \"32MB\"\nfsync = \"off\"\n[api]\nlisten = \"127.0.0.1:{}\"\n\
             [pooler]\nlisten_port = {}\n",
            ports.postgres, ports.api, ports.pooler
        ),
    )
    .unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(90)))
        .unwrap();

    let mut args = exec_start();
    let at = args.iter().position(|a| a == "--config").unwrap() + 1;
    args[at] = config.to_str().unwrap().to_owned();
    let mut agent = UnitProcess::start(
        Path::new(BIN),
        &args,
        None,
        Some(&socket_path),
        dir.path().join("agent.log"),
    );
    let api = format!("127.0.0.1:{}", ports.api);

    // The first notification must be READY=1, and /health must already answer 200.
    let first = receive(&socket);
    let health_at_ready = http_status(&api, "/health");
    assert!(
        first.lines().any(|l| l == "READY=1"),
        "first notification: {first:?}"
    );
    assert_eq!(health_at_ready, Some(200), "/health when READY=1 arrived");

    // Nothing more while it runs; STOPPING=1 on SIGTERM, then a clean exit.
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut buf = [0u8; 256];
    assert!(socket.recv(&mut buf).is_err(), "a second notification");
    kill(agent.pid(), Signal::SIGTERM).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    assert_eq!(receive(&socket), "STOPPING=1");
    assert!(agent.stop(), "the agent exits 0 on SIGTERM");
}

fn receive(socket: &UnixDatagram) -> String {
    let mut buf = [0u8; 512];
    let n = socket
        .recv(&mut buf)
        .unwrap_or_else(|e| panic!("no notification: {e}"));
    String::from_utf8_lossy(&buf[..n]).into_owned()
}
