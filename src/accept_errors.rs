//! What an accept loop (the pooler's, the API's) does when `accept` fails. Out of file
//! descriptors (`EMFILE`, `ENFILE`) the listen queue stays readable, so retrying at once
//! spins a core and logs one line per try; instead the loop pauses (10 ms, doubling up
//! to 1 s, as PgBouncer pauses its listeners) and logs once per `LOG_INTERVAL` with a
//! count of the failures it did not log.

use std::time::{Duration, Instant};

const FIRST_PAUSE: Duration = Duration::from_millis(10);
const MAX_PAUSE: Duration = Duration::from_secs(1);
/// At most one log line per this long while accepts keep failing.
pub const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// The state of one listener's consecutive accept failures.
#[derive(Debug)]
pub struct AcceptErrors {
    /// The listener's name, for the log ("pooler", "api.listen").
    listener: &'static str,
    pause: Duration,
    /// Failures since the last log line.
    unlogged: u64,
    /// Failures since the last successful accept.
    failures: u64,
    last_logged: Option<Instant>,
}

impl AcceptErrors {
    /// No failure yet.
    pub fn new(listener: &'static str) -> AcceptErrors {
        AcceptErrors {
            listener,
            pause: Duration::ZERO,
            unlogged: 0,
            failures: 0,
            last_logged: None,
        }
    }

    /// Records a failed accept: logs it unless a line went out less than `LOG_INTERVAL`
    /// ago, and returns how long to pause before accepting again.
    pub fn failed(&mut self, error: &std::io::Error, now: Instant) -> Duration {
        self.failures += 1;
        self.unlogged += 1;
        if self
            .last_logged
            .is_none_or(|at| now.duration_since(at) >= LOG_INTERVAL)
        {
            let out_of_files = matches!(
                error.raw_os_error(),
                Some(nix::libc::EMFILE | nix::libc::ENFILE)
            );
            tracing::warn!(
                failures = self.unlogged,
                out_of_files,
                "{}: accepting a connection failed: {error}; pausing accepts",
                self.listener
            );
            self.unlogged = 0;
            self.last_logged = Some(now);
        }
        self.pause = if self.pause.is_zero() {
            FIRST_PAUSE
        } else {
            (self.pause * 2).min(MAX_PAUSE)
        };
        self.pause
    }

    /// Records a successful accept; after failures, says once that accepting works again.
    pub fn succeeded(&mut self) {
        if self.failures > 0 {
            tracing::info!(
                failures = self.failures,
                "{}: accepting connections again",
                self.listener
            );
            *self = AcceptErrors::new(self.listener);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_grow_to_a_second_and_reset_after_a_success() {
        let mut errors = AcceptErrors::new("test");
        let emfile = std::io::Error::from_raw_os_error(nix::libc::EMFILE);
        let now = Instant::now();
        let pauses: Vec<Duration> = (0..10).map(|_| errors.failed(&emfile, now)).collect();
        assert_eq!(pauses[0], FIRST_PAUSE);
        assert_eq!(pauses[1], FIRST_PAUSE * 2);
        assert_eq!(pauses[9], MAX_PAUSE);
        errors.succeeded();
        assert_eq!(errors.failed(&emfile, now), FIRST_PAUSE);
    }

    #[test]
    fn logs_once_per_interval_and_counts_the_rest() {
        let mut errors = AcceptErrors::new("test");
        let emfile = std::io::Error::from_raw_os_error(nix::libc::EMFILE);
        let start = Instant::now();
        errors.failed(&emfile, start);
        assert_eq!((errors.unlogged, errors.last_logged), (0, Some(start)));
        for i in 1..1000 {
            errors.failed(&emfile, start + Duration::from_millis(i));
        }
        assert_eq!(errors.unlogged, 999, "nothing logged within the interval");
        errors.failed(&emfile, start + LOG_INTERVAL);
        assert_eq!(errors.unlogged, 0);
        assert_eq!(errors.last_logged, Some(start + LOG_INTERVAL));
    }
}
