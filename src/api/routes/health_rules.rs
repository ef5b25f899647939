//! Which health endpoint answers 200 for which node state, with Patroni's meanings so an
//! HAProxy or Kubernetes probe written for Patroni works unchanged. Pure: the handler
//! probes PostgreSQL and asks here.

use std::time::Duration;

/// What one probe of PostgreSQL found.
#[derive(Debug, Clone, PartialEq)]
pub struct Probe {
    pub running: bool,
    /// `pg_is_in_recovery()`.
    pub in_recovery: bool,
    /// A replica's WAL received but not yet replayed.
    pub lag_bytes: u64,
    /// Time since a replica's last replayed transaction, 0 when it has replayed all
    /// it received.
    pub lag: Duration,
    /// A replica's WAL receiver is streaming.
    pub streaming: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// PostgreSQL runs, any role.
    Health,
    /// The agent itself answers.
    Liveness,
    /// Ready for traffic: a running primary, or a streaming replica.
    Readiness,
    /// Writable primary (`/primary`, `/read-write`, `/master`, `/leader`).
    Primary,
    /// Running replica (`/replica`), within `?lag=` if given.
    Replica,
    /// Primary or replica, readable (`/read-only`), within `?lag=` for replicas.
    ReadOnly,
}

/// `?lag=` as Patroni reads it: bytes with PostgreSQL's memory units (`16MB`), or, our
/// addition, a time with its units (`10s`, `500ms`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaxLag {
    Bytes(u64),
    Time(Duration),
}

pub fn parse_lag(text: &str) -> Result<MaxLag, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("lag `{text}`: expected a number with an optional unit"))?;
    let bytes = |factor: u64| n.checked_mul(factor).map(MaxLag::Bytes);
    let time = |ms: u64| {
        n.checked_mul(ms)
            .map(|v| MaxLag::Time(Duration::from_millis(v)))
    };
    match unit.trim() {
        "" | "B" => Some(MaxLag::Bytes(n)),
        "kB" => bytes(1 << 10),
        "MB" => bytes(1 << 20),
        "GB" => bytes(1 << 30),
        "TB" => bytes(1 << 40),
        "ms" => time(1),
        "s" => time(1000),
        "min" => time(60_000),
        "h" => time(3_600_000),
        other => {
            return Err(format!(
                "lag `{text}`: unknown unit `{other}` (use B, kB, MB, GB, TB, ms, s, min or h)"
            ))
        }
    }
    .ok_or_else(|| format!("lag `{text}` is too large"))
}

/// Whether `check` answers 200.
pub fn passes(check: Check, probe: &Probe, max_lag: Option<MaxLag>) -> bool {
    // A replica that receives nothing has an unknown lag, not zero: it fails any limit.
    let within_lag = match max_lag {
        None => true,
        Some(_) if !probe.streaming => false,
        Some(MaxLag::Bytes(max)) => probe.lag_bytes <= max,
        Some(MaxLag::Time(max)) => probe.lag <= max,
    };
    let primary = probe.running && !probe.in_recovery;
    let replica = probe.running && probe.in_recovery;
    match check {
        Check::Liveness => true,
        Check::Health => probe.running,
        Check::Readiness => primary || (replica && probe.streaming),
        Check::Primary => primary,
        Check::Replica => replica && within_lag,
        Check::ReadOnly => primary || (replica && within_lag),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(running: bool, in_recovery: bool) -> Probe {
        Probe {
            running,
            in_recovery,
            lag_bytes: 0,
            lag: Duration::ZERO,
            streaming: true,
        }
    }

    #[test]
    fn a_primary_passes_primary_and_fails_replica() {
        let p = probe(true, false);
        for check in [
            Check::Health,
            Check::Readiness,
            Check::Primary,
            Check::ReadOnly,
        ] {
            assert!(passes(check, &p, None), "{check:?}");
        }
        assert!(!passes(Check::Replica, &p, None));
    }

    #[test]
    fn a_down_node_fails_all_but_liveness() {
        let p = probe(false, false);
        for check in [
            Check::Health,
            Check::Readiness,
            Check::Primary,
            Check::Replica,
            Check::ReadOnly,
        ] {
            assert!(!passes(check, &p, None), "{check:?}");
        }
        assert!(passes(Check::Liveness, &p, None));
    }

    #[test]
    fn a_replica_is_held_to_the_lag_threshold() {
        let mut p = probe(true, true);
        p.lag_bytes = 20 << 20;
        p.lag = Duration::from_secs(3);
        assert!(passes(Check::Replica, &p, None));
        assert!(!passes(Check::Primary, &p, None));
        assert!(!passes(Check::Replica, &p, Some(MaxLag::Bytes(16 << 20))));
        assert!(passes(Check::Replica, &p, Some(MaxLag::Bytes(32 << 20))));
        assert!(!passes(
            Check::ReadOnly,
            &p,
            Some(MaxLag::Time(Duration::from_secs(1)))
        ));
        assert!(passes(
            Check::ReadOnly,
            &p,
            Some(MaxLag::Time(Duration::from_secs(5)))
        ));
        p.streaming = false;
        assert!(!passes(Check::Readiness, &p, None));
        assert!(passes(Check::Replica, &p, None));
        assert!(
            !passes(Check::Replica, &p, Some(MaxLag::Bytes(1 << 30))),
            "unknown lag"
        );
    }

    #[test]
    fn lag_thresholds_parse_like_patroni() {
        assert_eq!(parse_lag("1048576"), Ok(MaxLag::Bytes(1 << 20)));
        assert_eq!(parse_lag("10MB"), Ok(MaxLag::Bytes(10 << 20)));
        assert_eq!(parse_lag("16kB"), Ok(MaxLag::Bytes(16 << 10)));
        assert_eq!(parse_lag("1s"), Ok(MaxLag::Time(Duration::from_secs(1))));
        assert_eq!(
            parse_lag("250ms"),
            Ok(MaxLag::Time(Duration::from_millis(250)))
        );
        assert!(parse_lag("10 parsecs")
            .unwrap_err()
            .contains("unknown unit"));
        assert!(parse_lag("MB").is_err());
        assert!(parse_lag("99999999999999999999TB").is_err());
    }
}
