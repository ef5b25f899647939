//! systemd's readiness protocol (sd_notify(3)) without libsystemd: one datagram of
//! `KEY=VALUE` lines to the Unix socket named by `$NOTIFY_SOCKET` (a path, or `@name`
//! for the abstract namespace). Under `Type=notify`, `systemctl start` returns, and units
//! ordered after pgplatform start, only once `READY=1` arrives; the agent sends it when
//! `/health` would answer 200, i.e. PostgreSQL is running and answers a query.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::Path;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::supervisor::{PostgresState, PostgresStatus};

/// Where systemd listens for this service's notifications, read once at start.
#[derive(Debug, Clone)]
pub struct Notifier {
    address: String,
}

impl Notifier {
    /// `None` when not started by systemd with `Type=notify` (no `$NOTIFY_SOCKET`).
    pub fn from_env() -> Option<Notifier> {
        let address = std::env::var("NOTIFY_SOCKET").ok()?;
        (!address.is_empty()).then_some(Notifier { address })
    }

    /// Sends `state` (e.g. "READY=1"); a failure is logged, never fatal: the service
    /// manager then reports the start as timed out, which names the problem.
    pub fn send(&self, state: &str) {
        if let Err(e) = self.try_send(state) {
            tracing::warn!(socket = %self.address, "sd_notify {state:?}: {e}");
        }
    }

    fn try_send(&self, state: &str) -> std::io::Result<()> {
        let socket = UnixDatagram::unbound()?;
        match self.address.strip_prefix('@') {
            Some(name) => {
                let address = SocketAddr::from_abstract_name(name.as_bytes())?;
                socket.send_to_addr(state.as_bytes(), &address)?;
            }
            None => {
                socket.send_to(state.as_bytes(), Path::new(&self.address))?;
            }
        }
        Ok(())
    }
}

/// What the readiness wait needs to run `/health`'s check itself.
pub struct HealthCheck {
    pub postgres: watch::Receiver<PostgresStatus>,
    pub socket_dir: std::path::PathBuf,
    pub port: u16,
}

/// Waits until `/health` would answer 200 (the supervisor says running and a query on a
/// fresh superuser connection succeeds, as the probe does), then sends `READY=1` once.
pub async fn ready_when_healthy(
    notifier: Notifier,
    mut check: HealthCheck,
    shutdown: CancellationToken,
) {
    loop {
        if healthy(&check).await {
            notifier.send("READY=1\nSTATUS=PostgreSQL is running; pgplatform is ready");
            tracing::info!("told systemd the service is ready");
            return;
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = check.postgres.changed() => {}
            () = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
    }
}

async fn healthy(check: &HealthCheck) -> bool {
    if check.postgres.borrow().state != PostgresState::Running {
        return false;
    }
    let query = async {
        let client = crate::pg::connect::superuser(&check.socket_dir, check.port, "postgres")
            .await
            .ok()?;
        client.query_one("SELECT 1", &[]).await.ok()
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(3), query).await,
        Ok(Some(_))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_datagram_reaches_a_path_socket_and_an_abstract_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let receiver = UnixDatagram::bind(&path).unwrap();
        let notifier = Notifier {
            address: path.to_str().unwrap().to_owned(),
        };
        notifier.try_send("READY=1").unwrap();
        let mut buf = [0u8; 64];
        let n = receiver.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");

        let name = format!("pgplatform-notify-test-{}", std::process::id());
        let address = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let receiver = UnixDatagram::bind_addr(&address).unwrap();
        let notifier = Notifier {
            address: format!("@{name}"),
        };
        notifier.try_send("STOPPING=1").unwrap();
        let n = receiver.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STOPPING=1");
    }

    #[test]
    fn a_missing_socket_is_an_error_not_a_panic() {
        let notifier = Notifier {
            address: "/nonexistent/pgplatform-notify".to_owned(),
        };
        assert!(notifier.try_send("READY=1").is_err());
    }
}
