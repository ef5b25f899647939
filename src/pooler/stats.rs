//! Counters behind SHOW POOLS / SHOW STATS and the pgbouncer-exporter metrics. Atomics,
//! so the per-message path never takes a lock for them.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use super::prepared::StatementCounts;

#[derive(Debug, Default)]
pub struct PoolStats {
    pub clients_active: AtomicI64,
    /// Clients pinned to their server connection (`client/pinning.rs`).
    pub clients_pinned: AtomicI64,
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
    /// Times a server connection was handed to a client (`server_activated`).
    pub server_assignment_count: AtomicU64,
    /// Clients that logged in to this pool (the console's excepted).
    pub client_login_count: AtomicU64,
    /// Named statements: Parses from clients, Parses the pooler sent to servers, and
    /// Binds of them, added when a server connection is released (`StatementCounts`).
    pub client_parse_count: AtomicU64,
    pub server_parse_count: AtomicU64,
    pub bind_count: AtomicU64,
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
        self.server_assignment_count.fetch_add(1, Relaxed);
    }
    pub fn server_deactivated(&self) {
        self.servers_active.fetch_sub(1, Relaxed);
    }
    /// A released server connection's statement counts (usually all zero).
    pub fn add_statements(&self, counts: StatementCounts) {
        if counts != StatementCounts::default() {
            self.client_parse_count
                .fetch_add(counts.client_parses, Relaxed);
            self.server_parse_count
                .fetch_add(counts.server_parses, Relaxed);
            self.bind_count.fetch_add(counts.binds, Relaxed);
        }
    }
    pub fn servers_open(&self) -> u32 {
        self.servers_open.load(Relaxed).max(0) as u32
    }

    /// The counters, with the waiting clients the pool's line has (`Pool::counts`).
    pub fn counts(&self, clients_waiting: i64, max_wait: Duration) -> PoolCounts {
        PoolCounts {
            clients_active: self.clients_active.load(Relaxed),
            clients_waiting,
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
    fn activities_keep_pgbouncer_names() {
        for activity in Activity::ALL {
            let state = ConnState::new(Activity::Login);
            state.set(activity);
            assert_eq!(state.get(), activity.as_str());
        }
        assert_eq!(ConnState::new(Activity::Waiting).get(), "waiting");
    }
}
