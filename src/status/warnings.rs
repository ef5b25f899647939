//! The warnings `pgplatform status` prints: pure rules over one snapshot, so each can be
//! tested without making its condition true on a real server.

use std::time::Duration;

use crate::config::StatusConfig;

/// The facts the rules look at.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    pub postgres_running: bool,
    pub postgres_state: String,
    pub connections_used: u64,
    pub connections_max: u64,
    pub archive_mode_on: bool,
    /// Age of the oldest WAL segment waiting to be archived.
    pub oldest_unarchived: Option<Duration>,
    /// The archiver's last attempt failed (its last failure is newer than its last
    /// success).
    pub archive_last_attempt_failed: bool,
    pub archive_last_error_age: Option<Duration>,
    pub pending_restart: Vec<String>,
    /// Per pool: (database, user, longest wait of a queued client).
    pub pools_waiting: Vec<(String, String, Duration)>,
    /// Percent of the data directory's filesystem still free.
    pub disk_free_percent: Option<f64>,
    pub postgres_restarts: u32,
    /// Age of the last successful base backup; `None` if this node never took one.
    pub backup_age: Option<Duration>,
    pub agent_uptime: Duration,
    /// The last restore drill failed: its first error.
    pub drill_failed: Option<String>,
    /// Tenants' redis-servers that do not answer: (tenant, state or last error).
    pub redis_down: Vec<(String, String)>,
    /// Tenants' redis-servers by memory used: (tenant, used bytes, maxmemory bytes).
    pub redis_memory: Vec<(String, u64, u64)>,
}

/// Warnings, most urgent first, each one line an operator can act on.
pub fn warnings(facts: &Facts, limits: &StatusConfig) -> Vec<String> {
    let mut out = Vec::new();
    if !facts.postgres_running {
        out.push(format!(
            "PostgreSQL is not running ({})",
            facts.postgres_state
        ));
        return out;
    }
    if let Some(percent) = (facts.connections_used * 100).checked_div(facts.connections_max) {
        if percent >= u64::from(limits.connections_warn_percent) {
            out.push(format!(
                "connections at {percent}% of max ({} of {})",
                facts.connections_used, facts.connections_max
            ));
        }
    }
    if facts.archive_mode_on && facts.archive_last_attempt_failed {
        if let Some(age) = facts
            .oldest_unarchived
            .filter(|age| *age >= limits.archive_failing_warn)
        {
            let last = facts
                .archive_last_error_age
                .map(|a| format!(", last failure {} ago", human(a)))
                .unwrap_or_default();
            out.push(format!(
                "WAL archiving failing for {}: the oldest segment waits{last}",
                human(age)
            ));
        }
    }
    let max_age = limits.backup_max_age;
    match facts.backup_age {
        Some(age) if age > max_age => out.push(format!(
            "no successful base backup in {} (the last is {} old)",
            human(max_age),
            human(age)
        )),
        None if facts.agent_uptime > max_age => out.push(format!(
            "no successful base backup yet, after {} of running; run `pgplatform backup run`",
            human(facts.agent_uptime)
        )),
        _ => {}
    }
    if let Some(error) = &facts.drill_failed {
        out.push(format!("the last restore drill FAILED: {error}"));
    }
    if let Some(free) = facts.disk_free_percent.filter(|f| *f < 10.0) {
        out.push(format!("data directory disk {free:.1}% free"));
    }
    for (database, user, wait) in &facts.pools_waiting {
        if *wait >= Duration::from_secs(1) {
            out.push(format!(
                "pool {database}/{user}: a client has waited {} for a server connection",
                human(*wait)
            ));
        }
    }
    for (tenant, why) in &facts.redis_down {
        out.push(format!("the Redis of tenant {tenant} is down ({why})"));
    }
    for (tenant, used, max) in &facts.redis_memory {
        if let Some(percent) = (used * 100).checked_div(*max).filter(|p| *p >= 90) {
            out.push(format!(
                "the Redis of tenant {tenant} uses {percent}% of its maxmemory; over it, its writes fail"
            ));
        }
    }
    if facts.postgres_restarts > 0 {
        out.push(format!(
            "PostgreSQL restarted {} time(s) since the agent started",
            facts.postgres_restarts
        ));
    }
    if !facts.pending_restart.is_empty() {
        out.push(format!(
            "settings wait for a PostgreSQL restart: {}",
            facts.pending_restart.join(", ")
        ));
    }
    out
}

/// "3 s", "5 min", "26 h", "2 d": the largest unit that fits.
pub fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=119 => format!("{s} s"),
        120..=7199 => format!("{} min", s / 60),
        7200..=172_799 => format!("{} h", s / 3600),
        _ => format!("{} d", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> StatusConfig {
        StatusConfig {
            connections_warn_percent: 85,
            archive_failing_warn: Duration::from_secs(300),
            backup_max_age: Duration::from_secs(26 * 3600),
        }
    }

    fn healthy() -> Facts {
        Facts {
            postgres_running: true,
            postgres_state: "running".into(),
            connections_used: 10,
            connections_max: 97,
            disk_free_percent: Some(50.0),
            backup_age: Some(Duration::from_secs(3600)),
            ..Facts::default()
        }
    }

    #[test]
    fn a_healthy_node_has_no_warnings() {
        assert_eq!(warnings(&healthy(), &limits()), Vec::<String>::new());
    }

    #[test]
    fn connections_warn_at_the_threshold() {
        let mut f = healthy();
        f.connections_used = 82;
        assert!(warnings(&f, &limits()).is_empty());
        f.connections_used = 84;
        assert_eq!(
            warnings(&f, &limits()),
            ["connections at 86% of max (84 of 97)"]
        );
    }

    #[test]
    fn archiving_warns_only_when_failing_long_enough() {
        let mut f = healthy();
        f.archive_mode_on = true;
        f.archive_last_attempt_failed = true;
        f.oldest_unarchived = Some(Duration::from_secs(200));
        f.archive_last_error_age = Some(Duration::from_secs(20));
        assert!(warnings(&f, &limits()).is_empty());
        f.oldest_unarchived = Some(Duration::from_secs(400));
        assert_eq!(
            warnings(&f, &limits()),
            ["WAL archiving failing for 6 min: the oldest segment waits, last failure 20 s ago"]
        );
        f.archive_last_attempt_failed = false;
        assert!(warnings(&f, &limits()).is_empty(), "slow, not failing");
    }

    #[test]
    fn old_or_missing_backups_and_failed_drills_warn() {
        let mut f = healthy();
        f.backup_age = Some(Duration::from_secs(27 * 3600));
        assert_eq!(
            warnings(&f, &limits()),
            ["no successful base backup in 26 h (the last is 27 h old)"]
        );
        f.backup_age = None;
        f.agent_uptime = Duration::from_secs(3600);
        assert!(warnings(&f, &limits()).is_empty(), "a new node gets time");
        f.agent_uptime = Duration::from_secs(30 * 3600);
        assert_eq!(warnings(&f, &limits()).len(), 1);
        f.backup_age = Some(Duration::ZERO);
        f.drill_failed = Some("shop: t has 1 rows".into());
        assert_eq!(
            warnings(&f, &limits()),
            ["the last restore drill FAILED: shop: t has 1 rows"]
        );
    }

    #[test]
    fn a_stopped_postgres_is_the_only_warning() {
        let mut f = healthy();
        f.postgres_running = false;
        f.postgres_state = "restarting".into();
        f.connections_used = 97;
        assert_eq!(
            warnings(&f, &limits()),
            ["PostgreSQL is not running (restarting)"]
        );
    }

    #[test]
    fn disk_waiting_clients_restarts_and_pending_settings_warn() {
        let mut f = healthy();
        f.disk_free_percent = Some(4.25);
        f.pools_waiting = vec![("shop".into(), "shop".into(), Duration::from_secs(7))];
        f.postgres_restarts = 2;
        f.pending_restart = vec!["shared_buffers".into()];
        f.redis_down = vec![("blog".into(), "restarting: exited: signal: 9".into())];
        f.redis_memory = vec![("shop".into(), 95, 100), ("blog".into(), 10, 100)];
        assert_eq!(
            warnings(&f, &limits()),
            [
                "data directory disk 4.2% free",
                "pool shop/shop: a client has waited 7 s for a server connection",
                "the Redis of tenant blog is down (restarting: exited: signal: 9)",
                "the Redis of tenant shop uses 95% of its maxmemory; over it, its writes fail",
                "PostgreSQL restarted 2 time(s) since the agent started",
                "settings wait for a PostgreSQL restart: shared_buffers",
            ]
        );
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(human(Duration::from_secs(59)), "59 s");
        assert_eq!(human(Duration::from_secs(300)), "5 min");
        assert_eq!(human(Duration::from_secs(26 * 3600)), "26 h");
        assert_eq!(human(Duration::from_secs(3 * 86_400)), "3 d");
    }
}
