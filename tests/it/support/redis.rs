//! Tenants' Redis under test: the `[redis]` config on free ports, redis-cli, and the
//! server's pid.

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{command, run, stderr_of, stdout_of, TestAgent};

/// Whether redis-server and redis-cli are installed; if not, the calling test fails
/// (or, with skipping allowed, reports a skip and should return).
pub fn require_redis() -> bool {
    let found = ["redis-server", "redis-cli"].iter().all(|tool| {
        command("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success())
    });
    if !found {
        super::skip("redis-server and redis-cli (Debian packages redis-server, redis-tools)");
    }
    found
}

/// `[redis]` with `ports` ports starting at a port free right now.
pub fn redis_toml(ports: u16) -> String {
    let first = loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if port.checked_add(ports).is_some() {
            break port;
        }
    };
    format!("[redis]\nport_range = \"{first}-{}\"\n", first + ports - 1)
}

/// redis-cli with the URL, its stdout and stderr together, trimmed.
pub fn cli(url: &str, args: &[&str]) -> String {
    let out = run(
        command("redis-cli")
            .args(["--no-auth-warning", "-u", url])
            .args(args),
        Duration::from_secs(30),
    );
    format!("{}{}", stdout_of(&out), stderr_of(&out))
        .trim()
        .to_owned()
}

/// redis-cli over TLS, trusting only the certificate `ca`.
pub fn cli_tls(url: &str, ca: &Path, args: &[&str]) -> String {
    let out = run(
        command("redis-cli")
            .args(["--no-auth-warning", "--tls", "--cacert"])
            .arg(ca)
            .args(["-u", url])
            .args(args),
        Duration::from_secs(30),
    );
    format!("{}{}", stdout_of(&out), stderr_of(&out))
        .trim()
        .to_owned()
}

/// redis-cli without logging in, to `port`.
pub fn cli_anonymous(port: u16, args: &[&str]) -> String {
    let out = run(
        command("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .args(args),
        Duration::from_secs(30),
    );
    format!("{}{}", stdout_of(&out), stderr_of(&out))
        .trim()
        .to_owned()
}

/// The port in a `redis://user:pw@host:port/0` URL.
pub fn port_of(url: &str) -> u16 {
    url.rsplit_once(':')
        .and_then(|(_, rest)| rest.split('/').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {url}"))
}

impl TestAgent {
    /// The tenant's `redis_url`.
    pub fn redis_url(&self, tenant: &str) -> String {
        self.secret(tenant, "redis_url")
    }

    /// The tenant's redis-server's own directory.
    pub fn redis_dir(&self, tenant: &str) -> PathBuf {
        self.data_dir().join("redis").join(tenant)
    }

    /// The pid of the tenant's redis-server, from its pid file, if it runs.
    pub fn redis_pid(&self, tenant: &str) -> Option<i32> {
        let text = fs::read_to_string(self.redis_dir(tenant).join("redis.pid")).ok()?;
        let pid: i32 = text.trim().parse().ok()?;
        super::process_alive(pid).then_some(pid)
    }
}

/// The directories under `<data>/redis/dropped`.
pub fn dropped(data_dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(data_dir.join("redis").join("dropped"))
        .map(|entries| {
            entries
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}
