//! `Pool`: the server connections of one (database, user) pair. Checkout waits in line
//! for a free connection (with PgBouncer's query_wait_timeout and reserve pool), and
//! `Guard` hands the connection to the next in line, puts it back, or closes it when the
//! client is done with it.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use std::task::{Context, Poll, Waker};

use bytes::{Bytes, BytesMut};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::params::ClientParams;
use super::pool_key::{Credentials, PoolKey};
pub use super::pool_settings::PoolSettings;
use super::protocol::backend::encode as be;
use super::server::{ServerConn, ServerError, ServerTarget};
use super::stats::{Activity, PoolCounts, PoolStats};

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

/// What the pool's one lock guards: the idle connections, the clients waiting for one,
/// and the settings both are judged by. One lock per checkout and per release is all a
/// transaction costs here.
struct State {
    idle: VecDeque<Idle>,
    /// Clients waiting for a connection, first come first served.
    waiters: VecDeque<Waiter>,
    /// Connections `release` handed to a waiter that has not picked them up yet.
    handed: Vec<(u64, Idle)>,
    /// Waits that query_wait_timeout ended, not yet seen by their waiter.
    timed_out: Vec<u64>,
    next_waiter: u64,
    settings: Arc<PoolSettings>,
}

struct Waiter {
    id: u64,
    since: Instant,
    deadline: Option<Instant>,
    waker: Waker,
}

impl State {
    /// A connection coming back: straight to the longest waiter (as PgBouncer does, so
    /// nobody barges in and nobody polls), or to the idle list. Returns whom to wake.
    fn put_back(&mut self, idle: Idle, paused: bool) -> Option<Waker> {
        if !paused {
            if let Some(waiter) = self.waiters.pop_front() {
                self.handed.push((waiter.id, idle));
                return Some(waiter.waker);
            }
        }
        self.idle.push_back(idle);
        None
    }

    fn remove_waiter(&mut self, id: u64) {
        if let Some(i) = self.waiters.iter().position(|w| w.id == id) {
            self.waiters.remove(i);
        }
    }

    fn wakers(&self) -> Vec<Waker> {
        self.waiters.iter().map(|w| w.waker.clone()).collect()
    }
}

pub struct Pool {
    /// Shared with every client's `ClientInfo`.
    pub key: Arc<PoolKey>,
    state: Mutex<State>,
    target: ServerTarget,
    slots: Arc<Semaphore>,
    reserve: Arc<Semaphore>,
    /// Slots and reserve sizes in effect, to resize the semaphores on reload.
    sizes: Mutex<(u32, u32)>,
    /// Shared limits across pools (max_db_connections / max_user_connections).
    limits: Vec<Arc<Semaphore>>,
    /// The database's limits (its semaphore is in `limits`), its client count.
    pub db: Arc<super::db_limits::DbLimit>,
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
    /// Recent logins' parameters and their ParameterStatus replies, newest last, shared
    /// by every client that logs in with the same ones (`share_params`).
    logins: Mutex<VecDeque<(Arc<ClientParams>, Bytes)>>,
    pub stats: PoolStats,
    /// Every server connection of the pool, for SHOW SERVERS; dead entries are pruned.
    servers: Mutex<Vec<std::sync::Weak<super::server::ServerInfo>>>,
}

/// How many recent logins' parameter sets a pool keeps for sharing.
const SHARED_LOGINS: usize = 8;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// What a checkout got from the pool under its lock.
enum Taken {
    /// From the idle list, with the settings it is checked by before use.
    Idle(Idle, Arc<PoolSettings>),
    /// Handed over by `release` just now: no check needed.
    Handed(Idle),
    /// A free slot: log in a new connection.
    Connect(Vec<OwnedSemaphorePermit>),
}

/// One client's checkout: its place in the waiters' line, left (and a connection handed
/// to it passed on) if the checkout is dropped.
struct Checkout<'a> {
    pool: &'a Pool,
    wait_timeout: Option<Duration>,
    kills: u64,
    /// The client's KILL_CLIENT flag.
    killed: &'a AtomicBool,
    /// In the line under this id.
    id: Option<u64>,
    /// When the wait began, if it had to.
    since: Option<Instant>,
}

impl Checkout<'_> {
    fn poll_take(&mut self, cx: &mut Context<'_>) -> Poll<Result<Taken, CheckoutError>> {
        let pool = self.pool;
        let mut st = lock(&pool.state);
        if pool.kills() != self.kills || self.killed.load(Ordering::Acquire) {
            let next = self.leave(&mut st);
            drop(st);
            if let Some(waker) = next {
                waker.wake();
            }
            return Poll::Ready(Err(CheckoutError::Killed));
        }
        if let Some(id) = self.id {
            if let Some(i) = st.handed.iter().position(|(w, _)| *w == id) {
                let (_, idle) = st.handed.swap_remove(i);
                self.id = None;
                return Poll::Ready(Ok(Taken::Handed(idle)));
            }
            if let Some(i) = st.timed_out.iter().position(|w| *w == id) {
                st.timed_out.swap_remove(i);
                self.id = None;
                return Poll::Ready(Err(CheckoutError::WaitTimeout));
            }
        }
        if !pool.is_paused() {
            if let Some(idle) = st.idle.pop_back() {
                self.leave(&mut st);
                return Poll::Ready(Ok(Taken::Idle(idle, st.settings.clone())));
            }
            if let Some(permits) = pool.try_acquire(&st.settings, self.since) {
                self.leave(&mut st);
                return Poll::Ready(Ok(Taken::Connect(permits)));
            }
        }
        match self.id {
            Some(id) => match st.waiters.iter_mut().find(|w| w.id == id) {
                Some(w) => {
                    if !w.waker.will_wake(cx.waker()) {
                        w.waker = cx.waker().clone();
                    }
                }
                None => self.join(&mut st, cx),
            },
            None => self.join(&mut st, cx),
        }
        Poll::Pending
    }

    fn join(&mut self, st: &mut State, cx: &mut Context<'_>) {
        let since = *self.since.get_or_insert_with(Instant::now);
        let id = st.next_waiter;
        st.next_waiter += 1;
        st.waiters.push_back(Waiter {
            id,
            since,
            deadline: self.wait_timeout.map(|t| since + t),
            waker: cx.waker().clone(),
        });
        self.id = Some(id);
    }

    /// Out of the line; a connection already handed over goes to the next waiter.
    fn leave(&mut self, st: &mut State) -> Option<Waker> {
        let id = self.id.take()?;
        st.remove_waiter(id);
        st.timed_out.retain(|w| *w != id);
        let i = st.handed.iter().position(|(w, _)| *w == id)?;
        let (_, idle) = st.handed.swap_remove(i);
        st.put_back(idle, self.pool.is_paused())
    }
}

impl Drop for Checkout<'_> {
    fn drop(&mut self) {
        if self.id.is_some() {
            let waker = self.leave(&mut lock(&self.pool.state));
            if let Some(waker) = waker {
                waker.wake();
            }
        }
    }
}

impl Pool {
    pub fn new(
        key: PoolKey,
        settings: PoolSettings,
        target: ServerTarget,
        limits: Vec<Arc<Semaphore>>,
        db: Arc<super::db_limits::DbLimit>,
    ) -> Pool {
        Pool {
            key: Arc::new(key),
            slots: Arc::new(Semaphore::new(settings.size as usize)),
            reserve: Arc::new(Semaphore::new(settings.reserve_size as usize)),
            sizes: Mutex::new((settings.size, settings.reserve_size)),
            state: Mutex::new(State {
                idle: VecDeque::new(),
                waiters: VecDeque::new(),
                handed: Vec::new(),
                timed_out: Vec::new(),
                next_waiter: 0,
                settings: Arc::new(settings),
            }),
            target,
            limits,
            db,
            paused: AtomicBool::new(false),
            kills: AtomicU64::new(0),
            credentials: Mutex::new(None),
            generation: AtomicU64::new(0),
            validated: AtomicBool::new(false),
            defaults: Mutex::default(),
            logins: Mutex::default(),
            stats: PoolStats::default(),
            servers: Mutex::default(),
        }
    }

    pub fn defaults(&self) -> Arc<std::collections::HashMap<String, String>> {
        lock(&self.defaults).clone()
    }

    /// `params` as a client keeps them, and the ParameterStatus messages of its login.
    /// Clients of one application log in with the same parameters: they share one copy
    /// (an idle client carries none of its own), encoded once. A few sets are kept, so
    /// that logins of a handful of applications taking turns still share.
    pub fn share_params(&self, params: ClientParams) -> (Arc<ClientParams>, Bytes) {
        let mut logins = lock(&self.logins);
        if let Some((shared, replies)) = logins.iter().find(|(p, _)| p.same_as(&params)) {
            return (shared.clone(), replies.clone());
        }
        let mut replies = BytesMut::with_capacity(512);
        for (name, value) in params.for_login() {
            be::parameter_status(&mut replies, name, value);
        }
        if logins.len() == SHARED_LOGINS {
            logins.pop_front();
        }
        let shared = (Arc::new(params), replies.freeze());
        logins.push_back(shared.clone());
        shared
    }

    pub fn settings(&self) -> Arc<PoolSettings> {
        lock(&self.state).settings.clone()
    }

    /// Applies new settings; a smaller pool shrinks as connections come back.
    pub fn reconfigure(&self, settings: PoolSettings) {
        let mut sizes = lock(&self.sizes);
        resize(&self.slots, &mut sizes.0, settings.size);
        resize(&self.reserve, &mut sizes.1, settings.reserve_size);
        lock(&self.state).settings = Arc::new(settings);
        self.wake_waiters();
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
        static NEVER_KILLED: AtomicBool = AtomicBool::new(false);
        self.checkout_for(wait_timeout, kills, &NEVER_KILLED).await
    }

    /// `checkout` for a client, which also stops waiting when KILL_CLIENT sets `killed`.
    pub async fn checkout_for(
        self: &Arc<Self>,
        wait_timeout: Option<Duration>,
        kills: u64,
        killed: &AtomicBool,
    ) -> Result<Guard, CheckoutError> {
        let mut checkout = Checkout {
            pool: self,
            wait_timeout,
            kills,
            killed,
            id: None,
            since: None,
        };
        let result = loop {
            let taken = std::future::poll_fn(|cx| checkout.poll_take(cx)).await;
            match taken {
                Err(e) => break Err(e),
                Ok(Taken::Handed(idle)) => {
                    // The hand-over's clock reading serves as the checkout's.
                    let since = idle.since;
                    break Ok(self.activate(idle, since));
                }
                Ok(Taken::Idle(idle, settings)) => {
                    if let Some(guard) = self.check_idle(idle, &settings).await {
                        break Ok(guard);
                    }
                }
                Ok(Taken::Connect(permits)) => break Box::pin(self.connect(permits)).await,
            }
        };
        if let Some(since) = checkout.since {
            let ended = result
                .as_ref()
                .map_or_else(|_| Instant::now(), |guard| guard.taken);
            self.stats.wait_time_us.fetch_add(
                ended.saturating_duration_since(since).as_micros() as u64,
                Ordering::Relaxed,
            );
        }
        result
    }

    /// A connection from the idle list, if it is still fit for use: not past its
    /// lifetime or a RECONNECT, not terminated meanwhile, and answering
    /// server_check_query when it has been idle for server_check_delay.
    async fn check_idle(
        self: &Arc<Self>,
        mut idle: Idle,
        settings: &PoolSettings,
    ) -> Option<Guard> {
        // One clock read: it serves the checks and the guard.
        let now = Instant::now();
        let idle_for = now.saturating_duration_since(idle.since);
        // A connection idle for a while may have been terminated meanwhile; probing
        // costs a syscall, so only those are probed.
        let stale = idle_for >= Duration::from_millis(50) && idle.conn.is_dead_now();
        let due = settings.check_delay.is_zero() || idle_for >= settings.check_delay;
        // Boxed: a rare path whose state would otherwise enlarge every client's task.
        let fit = !self.expired(&idle.conn, settings, now)
            && !stale
            && (!due
                || Box::pin(idle.conn.check(&settings.check_query))
                    .await
                    .is_ok());
        if fit {
            return Some(self.activate(idle, now));
        }
        self.stats.server_closed();
        // Free the slot before waking a waiter, or the waiter finds it still taken.
        drop(idle);
        self.wake_first_waiter();
        None
    }

    fn activate(self: &Arc<Self>, idle: Idle, now: Instant) -> Guard {
        let Idle { conn, permits, .. } = idle;
        self.stats.server_activated();
        conn.info.set_state(Activity::Active);
        Guard {
            taken: now,
            conn: Some(conn),
            permits,
            pool: self.clone(),
        }
    }

    /// A slot in the pool (and in the shared limits), or, for a client that has waited
    /// since `waiting` for longer than reserve_pool_timeout, one in the reserve pool.
    fn try_acquire(
        &self,
        settings: &PoolSettings,
        waiting: Option<Instant>,
    ) -> Option<Vec<OwnedSemaphorePermit>> {
        // No permit left is the usual case while clients wait: spare the Arc's count.
        let free = (self.slots.available_permits() > 0)
            .then(|| self.slots.clone().try_acquire_owned().ok())
            .flatten();
        let slot = free.or_else(|| {
            let due = waiting.is_some_and(|w| w.elapsed() >= settings.reserve_timeout);
            (settings.reserve_size > 0 && due)
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
        let conn = match self.login().await {
            Ok(conn) => conn,
            Err(e) => {
                // The slot is free again: the next waiter may try.
                drop(permits);
                self.wake_first_waiter();
                return Err(e);
            }
        };
        // Boxed, so that a client holding it (a `Guard` in its task) stays small.
        let mut conn = Box::new(conn);
        {
            let mut defaults = lock(&self.defaults);
            if defaults.is_empty() {
                *defaults = Arc::new(conn.params.clone());
            }
            conn.synced = super::params::SyncedTo::fresh(&conn.params, &defaults);
        }
        conn.generation = self.generation.load(Ordering::Relaxed);
        conn.info
            .generation
            .store(conn.generation, Ordering::Relaxed);
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

    /// A new server connection, logged in with the pool's latest credentials.
    async fn login(&self) -> Result<ServerConn, CheckoutError> {
        let credentials = lock(&self.credentials)
            .clone()
            .ok_or(CheckoutError::NoCredentials)?;
        let settings = self.settings();
        self.stats.login_started();
        let result = ServerConn::connect(
            &self.target,
            &self.key,
            &credentials,
            settings.connect_timeout,
        )
        .await;
        self.stats.login_ended();
        let mut conn = result?;
        if let Some(query) = &settings.connect_query {
            let timeout = settings.connect_timeout;
            let ran = super::pool_settings::run_connect_query(
                &mut conn,
                query,
                &self.key.database,
                timeout,
            );
            Box::pin(ran).await?;
        }
        Ok(conn)
    }

    /// Ends the waits past query_wait_timeout, and lets those past reserve_pool_timeout
    /// try the reserve pool; called several times a second (PgBouncer's janitor does
    /// the same three times a second), so that waiting costs no timer.
    pub fn check_waits(&self) {
        let mut st = lock(&self.state);
        if st.waiters.is_empty() {
            return;
        }
        let now = Instant::now();
        let mut wake = Vec::new();
        let State {
            waiters, timed_out, ..
        } = &mut *st;
        waiters.retain(|waiter| {
            let over = waiter.deadline.is_some_and(|d| now >= d);
            if over {
                timed_out.push(waiter.id);
                wake.push(waiter.waker.clone());
            }
            !over
        });
        let reserve = self.reserve.available_permits();
        if st.settings.reserve_size > 0 && reserve > 0 {
            let timeout = st.settings.reserve_timeout;
            wake.extend(
                st.waiters
                    .iter()
                    .filter(|w| now.saturating_duration_since(w.since) >= timeout)
                    .take(reserve)
                    .map(|w| w.waker.clone()),
            );
        }
        drop(st);
        for waker in wake {
            waker.wake();
        }
    }

    /// Every waiter looks again (PAUSE/RESUME, KILL, KILL_CLIENT, reload, connections
    /// closed).
    pub fn wake_waiters(&self) {
        let wakers = lock(&self.state).wakers();
        for waker in wakers {
            waker.wake();
        }
    }

    /// A slot was freed: the longest waiter may log in a new connection.
    fn wake_first_waiter(&self) {
        let waker = lock(&self.state).waiters.front().map(|w| w.waker.clone());
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Clients waiting for a connection, and the longest wait (SHOW POOLS' maxwait).
    fn waiting(&self) -> (i64, Duration) {
        let st = lock(&self.state);
        let count = st.waiters.len() + st.handed.len();
        let longest = st.waiters.front().map(|w| w.since.elapsed());
        (count as i64, longest.unwrap_or_default())
    }

    /// A snapshot for SHOW POOLS.
    pub fn counts(&self) -> PoolCounts {
        let (clients_waiting, max_wait) = self.waiting();
        self.stats.counts(clients_waiting, max_wait)
    }

    /// Closes idle connections past server_idle_timeout or server_lifetime, keeping
    /// min_pool_size; called periodically.
    pub fn close_stale_idle(&self) {
        let mut st = lock(&self.state);
        let settings = st.settings.clone();
        let idle = &mut st.idle;
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
        let closed = kept.len() != before;
        *idle = kept;
        drop(st);
        if closed {
            self.wake_waiters();
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
        let settings = self.settings();
        let Some(permits) = self.try_acquire(&settings, None) else {
            return Ok(());
        };
        let guard = Box::pin(self.connect(permits)).await?;
        guard.release(true, Instant::now());
        Ok(())
    }

    /// Closes every idle connection (KILL, RECONNECT, shutdown).
    pub fn close_idle(&self) {
        let closed: Vec<Idle> = lock(&self.state).idle.drain(..).collect();
        for _ in &closed {
            self.stats.server_closed();
        }
        drop(closed);
        self.wake_waiters();
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
        self.wake_waiters();
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

    /// Whether a server connection is to be closed when released (RECONNECT, KILL):
    /// SHOW SERVERS' close_needed, what WAIT_CLOSE waits on.
    pub fn close_needed(&self, server: &super::server::ServerInfo) -> bool {
        server.generation.load(Ordering::Relaxed) != self.generation.load(Ordering::Relaxed)
    }

    /// Whether clients wait here while the pool itself has room: what only the
    /// database's max_db_connections holds back.
    pub fn waits_for_database(&self) -> bool {
        self.slots.available_permits() > 0 && !lock(&self.state).waiters.is_empty()
    }

    /// Since when the idle connection unused longest has been idle.
    pub fn oldest_idle(&self) -> Option<Instant> {
        lock(&self.state).idle.front().map(|i| i.since)
    }

    /// Closes the idle connection unused longest, to make room in the database.
    pub fn evict_oldest_idle(&self) {
        let evicted = lock(&self.state).idle.pop_front();
        if evicted.is_some() {
            self.stats.server_closed();
        }
    }

    pub fn idle_count(&self) -> usize {
        lock(&self.state).idle.len()
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
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        let pool = &self.pool;
        pool.stats.add_statements(conn.prepared.take_counts());
        pool.stats.server_deactivated();
        conn.info.set_state(Activity::Idle);
        let permits = std::mem::take(&mut self.permits);
        let mut st = lock(&pool.state);
        if reusable && !pool.expired(&conn, &st.settings, now) && !conn.is_broken() {
            let idle = Idle {
                conn,
                permits,
                since: now,
            };
            let waker = st.put_back(idle, pool.is_paused());
            drop(st);
            if let Some(waker) = waker {
                waker.wake();
            }
        } else {
            drop(st);
            pool.stats.server_closed();
            // Free the slot before waking a waiter, or the waiter finds it still taken.
            drop(permits);
            drop(conn);
            pool.wake_first_waiter();
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(mut conn) = self.conn.take() {
            self.pool.stats.add_statements(conn.prepared.take_counts());
            drop(conn);
            self.pool.stats.server_deactivated();
            self.pool.stats.server_closed();
            self.permits.clear();
            self.pool.wake_first_waiter();
        }
    }
}
