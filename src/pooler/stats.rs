//! Counters behind SHOW POOLS / SHOW STATS and the pgbouncer-exporter metrics. Atomics,
//! so the per-message path never takes a lock for them.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Default)]
pub struct PoolStats {
    pub clients_active: AtomicI64,
    clients_waiting: AtomicI64,
    waiting_since: Mutex<BTreeMap<Instant, u32>>,
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
            *w.entry(at).or_default() += 1;
        }
    }

    pub fn waiting_ended(&self, at: Instant) {
        self.clients_waiting.fetch_sub(1, Relaxed);
        self.wait_time_us
            .fetch_add(at.elapsed().as_micros() as u64, Relaxed);
        if let Ok(mut w) = self.waiting_since.lock() {
            if let Some(n) = w.get_mut(&at) {
                *n -= 1;
                if *n == 0 {
                    w.remove(&at);
                }
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
            .and_then(|w| w.keys().next().map(|t| t.elapsed()))
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

/// A connection's state as SHOW CLIENTS / SHOW SERVERS print it; an atomic, since it
/// changes on every transaction.
#[derive(Debug)]
pub struct ConnState(std::sync::atomic::AtomicU8);

impl ConnState {
    const NAMES: [&'static str; 4] = ["idle", "active", "waiting", "login"];

    pub fn new(name: &'static str) -> ConnState {
        let state = ConnState(std::sync::atomic::AtomicU8::new(0));
        state.set(name);
        state
    }

    pub fn set(&self, name: &'static str) {
        let index = Self::NAMES.iter().position(|n| *n == name).unwrap_or(0);
        self.0.store(index as u8, Relaxed);
    }

    pub fn get(&self) -> &'static str {
        Self::NAMES[usize::from(self.0.load(Relaxed)).min(Self::NAMES.len() - 1)]
    }
}
