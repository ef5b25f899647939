//! Counters behind SHOW POOLS / SHOW STATS and the pgbouncer-exporter metrics. Atomics,
//! so the per-message path never takes a lock for them.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Default)]
pub struct PoolStats {
    pub clients_active: AtomicI64,
    clients_waiting: AtomicI64,
    /// When each waiting client began to wait, oldest first (for maxwait). Waits mostly
    /// end in the order they began, so the one ending is found at the front.
    waiting_since: Mutex<VecDeque<Instant>>,
    servers_active: AtomicI64,
    servers_open: AtomicI64,
    servers_login: AtomicI64,
    pub xact_count: AtomicU64,
    pub query_count: AtomicU64,
    pub bytes_received: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub xact_time_us: AtomicU64,
    pub query_time_us: AtomicU64,
    pub wait_time_us: AtomicU64,
}

/// A snapshot for SHOW POOLS.
#[derive(Debug, Clone, Copy)]
pub struct PoolCounts {
    pub clients_active: i64,
    pub clients_waiting: i64,
    pub servers_active: i64,
    pub servers_login: i64,
    pub servers_open: i64,
    pub max_wait: Duration,
}

impl PoolStats {
    pub fn waiting_started(&self, at: Instant) {
        self.clients_waiting.fetch_add(1, Relaxed);
        if let Ok(mut w) = self.waiting_since.lock() {
            // Clocks read on two threads may disagree by a little: keep the order.
            let place = w.iter().rposition(|t| *t <= at).map_or(0, |i| i + 1);
            w.insert(place, at);
        }
    }

    /// A wait that began `at` ended at `ended`.
    pub fn waiting_ended(&self, at: Instant, ended: Instant) {
        self.clients_waiting.fetch_sub(1, Relaxed);
        self.wait_time_us.fetch_add(
            ended.saturating_duration_since(at).as_micros() as u64,
            Relaxed,
        );
        if let Ok(mut w) = self.waiting_since.lock() {
            if let Some(i) = w.iter().position(|t| *t == at) {
                w.remove(i);
            }
        }
    }

    pub fn login_started(&self) {
        self.servers_login.fetch_add(1, Relaxed);
    }
    pub fn login_ended(&self) {
        self.servers_login.fetch_sub(1, Relaxed);
    }
    pub fn server_opened(&self) {
        self.servers_open.fetch_add(1, Relaxed);
    }
    pub fn server_closed(&self) {
        self.servers_open.fetch_sub(1, Relaxed);
    }
    pub fn server_activated(&self) {
        self.servers_active.fetch_add(1, Relaxed);
    }
    pub fn server_deactivated(&self) {
        self.servers_active.fetch_sub(1, Relaxed);
    }
    pub fn servers_open(&self) -> u32 {
        self.servers_open.load(Relaxed).max(0) as u32
    }

    pub fn counts(&self) -> PoolCounts {
        let max_wait = self
            .waiting_since
            .lock()
            .ok()
            .and_then(|w| w.front().map(|t| t.elapsed()))
            .unwrap_or_default();
        PoolCounts {
            clients_active: self.clients_active.load(Relaxed),
            clients_waiting: self.clients_waiting.load(Relaxed),
            servers_active: self.servers_active.load(Relaxed),
            servers_login: self.servers_login.load(Relaxed),
            servers_open: self.servers_open.load(Relaxed),
            max_wait,
        }
    }
}

/// What a client or server connection is doing, as SHOW CLIENTS / SHOW SERVERS name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activity {
    Idle,
    Active,
    Waiting,
    Login,
}

impl Activity {
    const ALL: [Activity; 4] = [
        Activity::Idle,
        Activity::Active,
        Activity::Waiting,
        Activity::Login,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Activity::Idle => "idle",
            Activity::Active => "active",
            Activity::Waiting => "waiting",
            Activity::Login => "login",
        }
    }
}

/// A connection's `Activity`; an atomic, since it changes on every transaction.
#[derive(Debug)]
pub struct ConnState(std::sync::atomic::AtomicU8);

impl ConnState {
    pub fn new(activity: Activity) -> ConnState {
        ConnState(std::sync::atomic::AtomicU8::new(activity as u8))
    }

    pub fn set(&self, activity: Activity) {
        self.0.store(activity as u8, Relaxed);
    }

    pub fn get(&self) -> &'static str {
        let index = usize::from(self.0.load(Relaxed));
        Activity::ALL
            .get(index)
            .copied()
            .unwrap_or(Activity::Idle)
            .as_str()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maxwait_is_the_oldest_wait_still_running() {
        let stats = PoolStats::default();
        let now = Instant::now();
        let ago = |ms| now.checked_sub(Duration::from_millis(ms)).unwrap();
        let (t0, t1, t2) = (ago(30), ago(29), ago(28));
        stats.waiting_started(t1);
        stats.waiting_started(t0); // read on another thread a moment earlier
        stats.waiting_started(t2);
        stats.waiting_started(t2);
        assert_eq!(stats.counts().clients_waiting, 4);
        let at_least = t0.elapsed();
        assert!(stats.counts().max_wait >= at_least);
        // Waits may end out of order; the oldest running one still sets maxwait.
        stats.waiting_ended(t1, t2);
        stats.waiting_ended(t0, t2);
        let at_least = t2.elapsed();
        let max_wait = stats.counts().max_wait;
        assert!(max_wait >= at_least && max_wait < t1.elapsed());
        stats.waiting_ended(t2, t2);
        assert_eq!(stats.counts().clients_waiting, 1);
        stats.waiting_ended(t2, t2 + Duration::from_millis(3));
        assert_eq!(stats.counts().clients_waiting, 0);
        assert_eq!(stats.counts().max_wait, Duration::ZERO);
        // 1 + 2 + 0 + 3 ms waited in all.
        assert_eq!(stats.wait_time_us.load(Relaxed), 6_000);
    }

    #[test]
    fn activities_keep_pgbouncer_names() {
        for activity in Activity::ALL {
            let state = ConnState::new(Activity::Login);
            state.set(activity);
            assert_eq!(state.get(), activity.as_str());
        }
        assert_eq!(ConnState::new(Activity::Waiting).get(), "waiting");
    }
}
