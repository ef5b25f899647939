//! `Pool`: the server connections of one (database, user) pair. Checkout waits for a free
//! connection (with PgBouncer's query_wait_timeout and reserve pool), and `Guard` puts the
//! connection back — or closes it — when the client is done with it.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use super::params::ClientParams;
use super::scram::ClientKey;
use super::server::{ServerConn, ServerError, ServerTarget};
use super::stats::{Activity, PoolStats};
use crate::config::{PoolMode, PoolerConfig};

/// Which pool: PostgreSQL database and role.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PoolKey {
    pub database: String,
    pub user: String,
}

/// What the pooler needs to log in to PostgreSQL as the pool's user by SCRAM
/// passthrough: the client key recovered from a client's proof, and the server key.
#[derive(Clone)]
pub struct Credentials {
    pub client_key: ClientKey,
    pub server_key: [u8; 32],
}

/// Settings of one pool, refreshed on reload.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    pub mode: PoolMode,
    pub size: u32,
    pub min_size: u32,
    pub reserve_size: u32,
    pub reserve_timeout: Duration,
    pub lifetime: Option<Duration>,
    pub idle_timeout: Option<Duration>,
    pub check_delay: Duration,
    pub check_query: String,
    pub connect_timeout: Duration,
}

impl PoolSettings {
    pub fn from_config(config: &PoolerConfig, database: &str) -> PoolSettings {
        let (mode, size) = config.for_database(database);
        PoolSettings {
            mode,
            size,
            min_size: config.min_pool_size.min(size),
            reserve_size: config.reserve_pool_size,
            reserve_timeout: config.reserve_pool_timeout,
            lifetime: config.server_lifetime,
            idle_timeout: config.server_idle_timeout,
            check_delay: config.server_check_delay,
            check_query: config.server_check_query.clone(),
            connect_timeout: config.server_connect_timeout,
        }
    }
}

/// Why a client got no server connection.
#[derive(Debug, thiserror::Error)]
pub enum CheckoutError {
    #[error("query_wait_timeout")]
    WaitTimeout,
    #[error("the pool was killed (KILL)")]
    Killed,
    #[error("no credentials to log in to PostgreSQL yet")]
    NoCredentials,
    #[error(transparent)]
    Server(#[from] ServerError),
}

struct Idle {
    conn: Box<ServerConn>,
    permits: Vec<OwnedSemaphorePermit>,
    since: Instant,
}

pub struct Pool {
    /// Shared with every client's `ClientInfo`.
    pub key: Arc<PoolKey>,
    settings: Mutex<Arc<PoolSettings>>,
    target: ServerTarget,
    idle: Mutex<VecDeque<Idle>>,
    slots: Arc<Semaphore>,
    reserve: Arc<Semaphore>,
    /// Slots and reserve sizes in effect, to resize the semaphores on reload.
    sizes: Mutex<(u32, u32)>,
    /// Shared limits across pools (max_db_connections / max_user_connections).
    limits: Vec<Arc<Semaphore>>,
    released: Notify,
    paused: AtomicBool,
    /// Bumped by KILL: every client of the pool is disconnected.
    kills: AtomicU64,
    credentials: Mutex<Option<Credentials>>,
    /// Bumped by RECONNECT: connections of an older generation are closed on release.
    generation: AtomicU64,
    /// Set by the first successful server login: the pair is known to be valid.
    pub validated: AtomicBool,
    /// The session parameters of a fresh server connection: what clients see at login
    /// and what a client that never SETs anything gets.
    /// Shared (not copied) by every client of the pool.
    defaults: Mutex<Arc<std::collections::HashMap<String, String>>>,
    /// The parameters every client that set nothing shares (`share_params`).
    plain_params: Mutex<Option<Arc<ClientParams>>>,
    pub stats: PoolStats,
    /// Every server connection of the pool, for SHOW SERVERS; dead entries are pruned.
    servers: Mutex<Vec<std::sync::Weak<super::server::ServerInfo>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

impl Pool {
    pub fn new(
        key: PoolKey,
        settings: PoolSettings,
        target: ServerTarget,
        limits: Vec<Arc<Semaphore>>,
    ) -> Pool {
        Pool {
            key: Arc::new(key),
            slots: Arc::new(Semaphore::new(settings.size as usize)),
            reserve: Arc::new(Semaphore::new(settings.reserve_size as usize)),
            sizes: Mutex::new((settings.size, settings.reserve_size)),
            settings: Mutex::new(Arc::new(settings)),
            target,
            idle: Mutex::new(VecDeque::new()),
            limits,
            released: Notify::new(),
            paused: AtomicBool::new(false),
            kills: AtomicU64::new(0),
            credentials: Mutex::new(None),
            generation: AtomicU64::new(0),
            validated: AtomicBool::new(false),
            defaults: Mutex::default(),
            plain_params: Mutex::default(),
            stats: PoolStats::default(),
            servers: Mutex::default(),
        }
    }

    pub fn defaults(&self) -> Arc<std::collections::HashMap<String, String>> {
        lock(&self.defaults).clone()
    }

    /// `params` as a client keeps them: the pool's one shared copy when the client set
    /// nothing (most clients, so an idle client carries no parameters of its own).
    pub fn share_params(&self, params: ClientParams) -> Arc<ClientParams> {
        if !params.is_plain() {
            return Arc::new(params);
        }
        let mut plain = lock(&self.plain_params);
        match plain.as_ref() {
            Some(shared) if shared.is_plain_with(params.defaults()) => shared.clone(),
            _ => plain.insert(Arc::new(params)).clone(),
        }
    }

    pub fn settings(&self) -> Arc<PoolSettings> {
        lock(&self.settings).clone()
    }

    /// Applies new settings; a smaller pool shrinks as connections come back.
    pub fn reconfigure(&self, settings: PoolSettings) {
        let mut sizes = lock(&self.sizes);
        resize(&self.slots, &mut sizes.0, settings.size);
        resize(&self.reserve, &mut sizes.1, settings.reserve_size);
        *lock(&self.settings) = Arc::new(settings);
        self.released.notify_waiters();
    }

    /// Remembers the latest client key: after a rotation, new server logins use the new
    /// password while existing connections stay logged in.
    pub fn set_credentials(&self, credentials: Credentials) {
        *lock(&self.credentials) = Some(credentials);
    }

    pub fn has_credentials(&self) -> bool {
        lock(&self.credentials).is_some()
    }

    /// A server connection for one client, waiting up to `wait_timeout`; a client that
    /// logged in at KILL count `kills` stops waiting when the pool is killed.
    pub async fn checkout(
        self: &Arc<Self>,
        wait_timeout: Option<Duration>,
        kills: u64,
    ) -> Result<Guard, CheckoutError> {
        // Fast path, the common case under load: an idle connection is there.
        if !self.is_paused() {
            if let Some(guard) = self.take_idle().await {
                return Ok(guard);
            }
        }
        // Boxed: waiting needs a timer and a notification, which would otherwise enlarge
        // every client's task (and its allocation) by half a kilobyte.
        Box::pin(self.wait_for_server(wait_timeout, kills)).await
    }

    async fn wait_for_server(
        self: &Arc<Self>,
        wait_timeout: Option<Duration>,
        kills: u64,
    ) -> Result<Guard, CheckoutError> {
        let started = Instant::now();
        let deadline = wait_timeout.map(|t| started + t);
        self.stats.waiting_started(started);
        let result = self.checkout_loop(deadline, started, kills).await;
        let ended = result
            .as_ref()
            .map_or_else(|_| Instant::now(), |guard| guard.taken);
        self.stats.waiting_ended(started, ended);
        result
    }

    async fn checkout_loop(
        self: &Arc<Self>,
        deadline: Option<Instant>,
        started: Instant,
        kills: u64,
    ) -> Result<Guard, CheckoutError> {
        // One timer for the whole wait, moved only when the wake-up time changes: a
        // waiter may loop many times, and each new timer is a registration in the wheel.
        let mut timer = std::pin::pin!(tokio::time::sleep_until(started.into()));
        let mut timer_at = None;
        loop {
            let notified = self.released.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.kills() != kills {
                return Err(CheckoutError::Killed);
            }
            // PAUSE and RESUME notify every waiter too, so one notification covers them.
            if !self.is_paused() {
                if let Some(guard) = self.take_idle().await {
                    return Ok(guard);
                }
                if let Some(permits) = self.try_acquire(started) {
                    return self.connect(permits).await;
                }
            }
            let settings = self.settings();
            let reserve_at = started + settings.reserve_timeout;
            let mut wake = deadline;
            if settings.reserve_size > 0 && Instant::now() < reserve_at {
                wake = Some(wake.map_or(reserve_at, |d| d.min(reserve_at)));
            }
            if wake != timer_at {
                if let Some(at) = wake {
                    timer.as_mut().reset(at.into());
                }
                timer_at = wake;
            }
            let timed_out = tokio::select! {
                biased;
                () = notified => false,
                () = timer.as_mut(), if timer_at.is_some() => true,
            };
            // The timer may have woken for the reserve pool rather than the deadline.
            if timed_out && deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(CheckoutError::WaitTimeout);
            }
        }
    }

    /// A slot in the pool (and in the shared limits), or after the reserve timeout one in
    /// the reserve pool.
    fn try_acquire(&self, started: Instant) -> Option<Vec<OwnedSemaphorePermit>> {
        // No permit left is the usual case while clients wait: spare the Arc's count.
        let free = (self.slots.available_permits() > 0)
            .then(|| self.slots.clone().try_acquire_owned().ok())
            .flatten();
        let slot = free.or_else(|| {
            let settings = self.settings();
            (settings.reserve_size > 0 && started.elapsed() >= settings.reserve_timeout)
                .then(|| self.reserve.clone().try_acquire_owned().ok())
                .flatten()
        })?;
        let mut permits = Vec::with_capacity(1 + self.limits.len());
        permits.push(slot);
        for limit in &self.limits {
            permits.push(limit.clone().try_acquire_owned().ok()?);
        }
        Some(permits)
    }

    async fn take_idle(self: &Arc<Self>) -> Option<Guard> {
        loop {
            let idle = lock(&self.idle).pop_back()?;
            let settings = self.settings();
            let Idle {
                mut conn,
                permits,
                since,
            } = idle;
            // One clock read: this runs for every transaction.
            let now = Instant::now();
            let idle_for = now.saturating_duration_since(since);
            // A connection idle for a while may have been terminated meanwhile; probing
            // costs a syscall, so only those are probed.
            let stale = idle_for >= Duration::from_millis(50) && conn.is_dead_now();
            if self.expired(&conn, &settings, now) || stale {
                self.stats.server_closed();
                continue;
            }
            let due = settings.check_delay.is_zero() || idle_for >= settings.check_delay;
            if due && Box::pin(conn.check(&settings.check_query)).await.is_err() {
                self.stats.server_closed();
                continue;
            }
            self.stats.server_activated();
            conn.info.set_state(Activity::Active);
            return Some(Guard {
                taken: now,
                conn: Some(conn),
                permits,
                pool: self.clone(),
            });
        }
    }

    fn expired(&self, conn: &ServerConn, settings: &PoolSettings, now: Instant) -> bool {
        conn.generation != self.generation.load(Ordering::Relaxed)
            || settings
                .lifetime
                .is_some_and(|l| now.saturating_duration_since(conn.created) >= l)
    }

    async fn connect(
        self: &Arc<Self>,
        permits: Vec<OwnedSemaphorePermit>,
    ) -> Result<Guard, CheckoutError> {
        let credentials = lock(&self.credentials)
            .clone()
            .ok_or(CheckoutError::NoCredentials)?;
        let settings = self.settings();
        self.stats.login_started();
        // Boxed: a rare path whose state would otherwise enlarge every client's task.
        let result = Box::pin(ServerConn::connect(
            &self.target,
            &self.key,
            &credentials,
            settings.connect_timeout,
        ))
        .await;
        self.stats.login_ended();
        // Boxed, so that a client holding it (a `Guard` in its task) stays small.
        let mut conn = Box::new(result?);
        {
            let mut defaults = lock(&self.defaults);
            if defaults.is_empty() {
                *defaults = Arc::new(conn.params.clone());
            }
            conn.synced = super::params::SyncedTo::fresh(&conn.params, &defaults);
        }
        conn.generation = self.generation.load(Ordering::Relaxed);
        self.validated.store(true, Ordering::Relaxed);
        self.stats.server_opened();
        self.stats.server_activated();
        lock(&self.servers).push(Arc::downgrade(&conn.info));
        Ok(Guard {
            taken: Instant::now(),
            conn: Some(conn),
            permits,
            pool: self.clone(),
        })
    }

    /// Closes idle connections past server_idle_timeout or server_lifetime, keeping
    /// min_pool_size; called periodically.
    pub fn close_stale_idle(&self) {
        let settings = self.settings();
        let mut idle = lock(&self.idle);
        let before = idle.len();
        let min = settings.min_size as usize;
        let mut kept = VecDeque::with_capacity(before);
        let now = Instant::now();
        for entry in idle.drain(..) {
            let too_old = self.expired(&entry.conn, &settings, now);
            let idle_too_long = settings
                .idle_timeout
                .is_some_and(|t| entry.since.elapsed() >= t);
            if too_old || (idle_too_long && kept.len() >= min) {
                self.stats.server_closed();
            } else {
                kept.push_back(entry);
            }
        }
        *idle = kept;
        if idle.len() != before {
            self.released.notify_waiters();
        }
    }

    /// How many connections min_pool_size still wants opened.
    pub fn missing_min(&self) -> u32 {
        let settings = self.settings();
        let open = self.stats.servers_open();
        settings.min_size.saturating_sub(open)
    }

    /// Opens one idle connection toward min_pool_size.
    pub async fn open_one(self: &Arc<Self>) -> Result<(), CheckoutError> {
        let Some(permits) = self.try_acquire(Instant::now()) else {
            return Ok(());
        };
        let guard = self.connect(permits).await?;
        guard.release(true, Instant::now());
        Ok(())
    }

    /// Closes every idle connection (KILL, RECONNECT, shutdown).
    pub fn close_idle(&self) {
        let closed = lock(&self.idle).drain(..).count();
        for _ in 0..closed {
            self.stats.server_closed();
        }
        self.released.notify_waiters();
    }

    /// RECONNECT: connections now in use are closed when released.
    pub fn reconnect(&self) {
        self.generation.fetch_add(1, Ordering::Relaxed);
        self.close_idle();
    }

    /// KILL: disconnect every client, close every server connection, and hold new
    /// clients until RESUME. Connections in use are shut down under their clients,
    /// whose transactions PostgreSQL rolls back (PgBouncer drops them at once too).
    pub fn kill(&self) {
        self.kills.fetch_add(1, Ordering::Release);
        self.pause(true);
        self.reconnect();
        for server in self.servers() {
            server.shut_down();
        }
    }

    /// How many times the pool was killed; a client compares it with its login's.
    pub fn kills(&self) -> u64 {
        self.kills.load(Ordering::Acquire)
    }

    pub fn pause(&self, paused: bool) {
        self.paused.store(paused, Ordering::SeqCst);
        self.released.notify_waiters();
    }

    pub fn is_paused(&self) -> bool {
        self.paused.load(Ordering::SeqCst)
    }

    /// The pool's live server connections.
    pub fn servers(&self) -> Vec<Arc<super::server::ServerInfo>> {
        let mut servers = lock(&self.servers);
        servers.retain(|w| w.strong_count() > 0);
        servers
            .iter()
            .filter_map(std::sync::Weak::upgrade)
            .collect()
    }

    pub fn idle_count(&self) -> usize {
        lock(&self.idle).len()
    }
}

fn resize(semaphore: &Semaphore, current: &mut u32, wanted: u32) {
    if wanted > *current {
        semaphore.add_permits((wanted - *current) as usize);
    } else if wanted < *current {
        // Only free permits can be forgotten; the rest of the shrink is retried at the
        // next reload, and `current` counts what really exists.
        let forgotten = semaphore.forget_permits((*current - wanted) as usize);
        *current -= forgotten as u32;
        return;
    }
    *current = wanted;
}

/// A checked-out server connection. `release` returns it to the pool; dropping it
/// closes it (the safe default when its state is unknown).
pub struct Guard {
    /// When the connection was handed out (one clock read serves the caller too).
    pub taken: Instant,
    conn: Option<Box<ServerConn>>,
    permits: Vec<OwnedSemaphorePermit>,
    pool: Arc<Pool>,
}

impl Guard {
    pub fn conn(&mut self) -> &mut ServerConn {
        self.conn
            .as_mut()
            .expect("a guard holds its connection until released")
    }

    /// Back to the pool, idle since `now`, if `reusable` and still current; closed
    /// otherwise.
    pub fn release(mut self, reusable: bool, now: Instant) {
        let Some(conn) = self.conn.take() else {
            return;
        };
        let pool = self.pool.clone();
        pool.stats.server_deactivated();
        let settings = pool.settings();
        conn.info.set_state(Activity::Idle);
        if reusable && !pool.expired(&conn, &settings, now) && !conn.is_broken() {
            lock(&pool.idle).push_back(Idle {
                conn,
                permits: std::mem::take(&mut self.permits),
                since: now,
            });
        } else {
            pool.stats.server_closed();
        }
        // Free the slot before waking a waiter, or the waiter finds it still taken.
        self.permits.clear();
        pool.released.notify_one();
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if self.conn.take().is_some() {
            self.pool.stats.server_deactivated();
            self.pool.stats.server_closed();
            self.permits.clear();
            self.pool.released.notify_one();
        }
    }
}
