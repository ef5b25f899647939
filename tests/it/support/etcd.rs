//! A real etcd (Debian's `etcd-server`) on free loopback ports in a temp directory,
//! killed by pid when dropped.

use super::ports::free_port;
use std::process::{Child, Stdio};
use std::time::Duration;

use super::{command, skip, wait_for};

pub struct EtcdServer {
    child: Child,
    pub endpoint: String,
    _dir: tempfile::TempDir,
}

impl EtcdServer {
    /// Fails the test when etcd is not installed (`None`, saying why, if skipping is allowed).
    pub fn start() -> Option<EtcdServer> {
        EtcdServer::start_on("127.0.0.1")
    }

    /// Listening for clients on `host` (a partition test's bridge address).
    pub fn start_on(host: &str) -> Option<EtcdServer> {
        EtcdServer::start_custom(host, "http", &[])
    }

    /// With `scheme` ("http" or "https") for clients and `extra` etcd flags (TLS files,
    /// `--client-cert-auth`, token TTL).
    pub fn start_custom(host: &str, scheme: &str, extra: &[String]) -> Option<EtcdServer> {
        if !std::path::Path::new("/usr/bin/etcd").exists() {
            let reason = "etcd is not installed (apt-get install etcd-server); etcd test skipped";
            skip(reason);
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let (client, peer) = (free_port(), free_port());
        let endpoint = format!("{scheme}://{host}:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let child = command("/usr/bin/etcd")
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args([
                "--listen-client-urls",
                &endpoint,
                "--advertise-client-urls",
                &endpoint,
            ])
            .args([
                "--listen-peer-urls",
                &peer_url,
                "--initial-advertise-peer-urls",
                &peer_url,
            ])
            .args(["--initial-cluster", &format!("default={peer_url}")])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start etcd");
        let server = EtcdServer {
            child,
            endpoint,
            _dir: dir,
        };
        wait_for(Duration::from_secs(30), "etcd to answer", || {
            std::net::TcpStream::connect((host, client))
                .ok()
                .map(|_| ())
        });
        Some(server)
    }
}

impl EtcdServer {
    /// Freezes etcd (SIGSTOP): an outage in which connections hang, the worst kind.
    pub fn freeze(&self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    }

    pub fn thaw(&self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.thaw();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
