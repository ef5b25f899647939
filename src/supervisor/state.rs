//! Pure parts of supervision: the published PostgreSQL state and the restart backoff.

use std::time::Duration;

/// Where the supervised PostgreSQL is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PostgresState {
    Starting,
    Running,
    /// Exited unexpectedly; waiting out the backoff before the next start.
    Restarting,
    Stopping,
    Stopped,
}

/// What the supervisor publishes for health checks and `status`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PostgresStatus {
    pub state: PostgresState,
    /// The postmaster's pid while one runs.
    pub pid: Option<u32>,
    /// Unplanned restarts since the agent started.
    pub restarts: u32,
    pub version: String,
    pub port: u16,
}

/// Restart delays: immediately after a first crash, then doubling up to a cap, so a
/// PostgreSQL that cannot start does not spin; reset once it has run a while.
#[derive(Debug, Default)]
pub struct Backoff {
    failures: u32,
}

impl Backoff {
    const CAP: Duration = Duration::from_secs(30);
    /// A run at least this long counts as healthy and resets the delay.
    pub const HEALTHY_RUN: Duration = Duration::from_secs(30);

    /// The delay before the next start attempt; counts one more failure.
    pub fn next_delay(&mut self) -> Duration {
        let delay = match self.failures {
            0 => Duration::ZERO,
            n => Duration::from_millis(500u64.saturating_mul(1 << (n - 1).min(10))).min(Self::CAP),
        };
        self.failures = self.failures.saturating_add(1);
        delay
    }

    /// PostgreSQL ran for `uptime` before exiting.
    pub fn ran_for(&mut self, uptime: Duration) {
        if uptime >= Self::HEALTHY_RUN {
            self.failures = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap_and_reset_after_a_healthy_run() {
        let mut b = Backoff::default();
        let delays: Vec<u64> = (0..9).map(|_| b.next_delay().as_millis() as u64).collect();
        assert_eq!(
            delays,
            [0, 500, 1000, 2000, 4000, 8000, 16000, 30000, 30000]
        );
        b.ran_for(Duration::from_secs(5));
        assert_eq!(b.next_delay(), Backoff::CAP);
        b.ran_for(Backoff::HEALTHY_RUN);
        assert_eq!(b.next_delay(), Duration::ZERO);
    }
}
