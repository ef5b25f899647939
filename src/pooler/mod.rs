//! The built-in, PgBouncer-compatible connection pooler.
//!
//! Layers: `protocol` (SANS-IO codec) and `scram` are pure; `txn`, `prepared`, `params`
//! and `admin::command` are pure decisions; `login`, `client`, `server` and `pool` are the
//! I/O shell that reads sockets and calls them. `Pooler` is the state every client task
//! shares: pools, the cancel registry, the statement catalog, the client list.

mod admin;
pub mod auth;
mod cancel;
mod client;
mod db_limits;
mod login;
mod lounge;
mod params;
mod pin;
mod pool;
mod pool_key;
mod pool_settings;
mod prepared;
pub mod protocol;
pub mod scram;
mod server;
mod server_stream;
mod session;
mod stats;
mod stream;
mod target;
mod verifier_lookup;
pub use target::PgTarget;
pub(crate) mod tls;
mod txn;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::task::AtomicWaker;
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use self::cancel::ClientInfo;
use self::pool::{Pool, PoolSettings};
use self::pool_key::PoolKey;
use self::server::ServerTarget;
use self::stream::ClientStream;
use crate::config::{ClientTls, PoolerConfig};

/// What the agent hands the pooler.
pub struct PoolerSetup {
    pub config: watch::Receiver<Arc<PoolerConfig>>,
    pub pg_socket_dir: PathBuf,
    pub pg_port: u16,
    /// In an HA cluster, where server connections go (the primary, or for the read-only
    /// listener the replicas); the pooler follows it.
    pub route: Option<watch::Receiver<Vec<crate::pooler::PgTarget>>>,
    /// Listen here instead of `pooler.listen_port` (the read-only listener).
    pub listen_port: Option<u16>,
    pub tls_dir: PathBuf,
    pub tls_hosts: Vec<String>,
    /// The admin console's RELOAD asks the agent to reload its config file.
    pub reload: mpsc::Sender<crate::shutdown::ReloadRequest>,
    /// The admin console's SHUTDOWN stops the agent.
    pub agent_shutdown: CancellationToken,
    /// The agent's own directory (`<data>/run`, written by the agent alone, on the same
    /// file system as the socket directory): it holds the key unknown roles' fake SCRAM
    /// salts derive from, and the unix socket is made there before it moves beside
    /// PostgreSQL's.
    pub run_dir: PathBuf,
}

pub struct Pooler {
    /// The running settings: the file's, with the console's SETs since the last reload.
    config: watch::Receiver<Arc<PoolerConfig>>,
    /// Where the console's SET publishes the running settings.
    running: watch::Sender<Arc<PoolerConfig>>,
    /// The file's settings as the agent (re)loads them; a reload replaces the running ones.
    file_config: watch::Receiver<Arc<PoolerConfig>>,
    /// DISABLE, SUSPEND, SHUTDOWN WAIT_FOR_*: the console's state.
    console: admin::ConsoleState,
    target: ServerTarget,
    pools: Mutex<HashMap<PoolKey, Arc<Pool>>>,
    db_limits: db_limits::DbLimits,
    user_limits: Mutex<HashMap<String, Arc<Semaphore>>>,
    auth: auth::AuthSource,
    catalog: prepared::Catalog,
    /// Every logged-in client, by cancel key.
    clients: cancel::ClientRegistry,
    client_count: AtomicUsize,
    next_client_id: AtomicU64,
    tls: Option<tokio_rustls::TlsAcceptor>,
    /// The served certificate's `tls-server-end-point` data: SCRAM-SHA-256-PLUS is offered
    /// on TLS connections when it is known.
    channel_binding: Option<Arc<[u8]>>,
    reload: mpsc::Sender<crate::shutdown::ReloadRequest>,
    agent_shutdown: CancellationToken,
    /// Cancelled when the pooler stops accepting; clients finish their transaction.
    draining: CancellationToken,
    /// The same, as a flag clients read on every transaction without taking a lock.
    drain_started: AtomicBool,
    /// Every pool, including ones created meanwhile, is paused (HA switchover).
    paused_all: AtomicBool,
    /// Bumped on every reload, so that clients re-read `config` only when it changed.
    config_version: AtomicU32,
    /// Where SHOW STATS' averages start (moved by `maintain` every stats period).
    stats_window: admin::StatsWindow,
    /// The lounges' doors; a client rests in the one its id picks.
    lounges: Vec<lounge::Door>,
    /// Bumped by KILL and draining: the lounges look at every client they hold.
    kills: watch::Sender<u64>,
    /// Bumped by KILL, draining and once a second, then every client task in `in_task`
    /// is woken: clients idle in their own task move to a lounge (or end). Registering
    /// the waker costs a transaction one atomic exchange, where a watch or Notify waiter
    /// takes a lock.
    calls: AtomicU64,
    /// The wakers of the clients that have a task of their own, by client id; a client
    /// resting in a lounge has none, so it costs no memory here.
    in_task: Mutex<HashMap<u64, Arc<AtomicWaker>>>,
    /// Every client's task, so that shutdown can wait for them.
    tracker: TaskTracker,
}

/// A client task's line for the pooler's calls (KILL, draining, the move to a lounge):
/// `called` resolves at the first call after the task took the client.
pub struct Call {
    pooler: Arc<Pooler>,
    id: u64,
    waker: Arc<AtomicWaker>,
    seen: u64,
}

impl Call {
    /// Resolves once the pooler has called since the task began. The waker is registered
    /// before the count is read, so a call in between is not missed.
    pub fn called(&self) -> impl std::future::Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx| {
            self.waker.register(cx.waker());
            if self.pooler.calls() == self.seen {
                std::task::Poll::Pending
            } else {
                std::task::Poll::Ready(())
            }
        })
    }

    /// Waits for the next call only (a client that stays in its task after one).
    pub fn rearm(&mut self) {
        self.seen = self.pooler.calls();
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        lock(&self.pooler.in_task).remove(&self.id);
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

impl Pooler {
    fn config(&self) -> Arc<PoolerConfig> {
        self.config.borrow().clone()
    }

    /// The pool for (database, user), created on first use.
    fn pool(&self, key: &PoolKey) -> Arc<Pool> {
        if let Some(pool) = lock(&self.pools).get(key) {
            return pool.clone();
        }
        let config = self.config();
        // Every database has a limit, unlimited unless set: a reload may set it later.
        let db = self.db_limits.get(&config, &key.database);
        let mut limits = vec![db.servers.clone()];
        if config.max_user_connections > 0 {
            limits.push(limit(
                &self.user_limits,
                &key.user,
                config.max_user_connections,
            ));
        }
        let settings = PoolSettings::from_config(&config, &key.database);
        lock(&self.pools)
            .entry(key.clone())
            .or_insert_with(|| {
                let pool = Pool::new(key.clone(), settings, self.target.clone(), limits, db);
                if self.paused_all.load(Ordering::Acquire) {
                    pool.pause(true);
                }
                Arc::new(pool)
            })
            .clone()
    }

    /// Drops a pool whose first login PostgreSQL refused (wrong database, pg_hba), and
    /// the connection limits only it used, so that guessing names cannot pile up pools or
    /// limits.
    fn forget_unvalidated(&self, key: &PoolKey) {
        let mut pools = lock(&self.pools);
        if pools
            .get(key)
            .is_some_and(|p| !p.validated.load(Ordering::Relaxed))
        {
            pools.remove(key);
            // A limit is shared by its pools (and by connections they hold): one that
            // only this map holds belongs to no pool any more.
            lock(&self.user_limits).retain(|_, semaphore| Arc::strong_count(semaphore) > 1);
            self.db_limits.prune();
        }
    }

    fn pools(&self) -> Vec<Arc<Pool>> {
        let mut pools: Vec<Arc<Pool>> = lock(&self.pools).values().cloned().collect();
        pools.sort_by(|a, b| a.key.cmp(&b.key));
        pools
    }

    fn clients(&self) -> Vec<Arc<ClientInfo>> {
        self.clients.all()
    }

    /// Applies a reloaded config to every pool without dropping anyone.
    fn apply_config(&self) {
        self.config_version.fetch_add(1, Ordering::Release);
        let config = self.config();
        params::set_extra(&config.track_extra_parameters);
        self.db_limits.configure(&config);
        for pool in self.pools() {
            pool.reconfigure(PoolSettings::from_config(&config, &pool.key.database));
        }
    }
}

fn limit(map: &Mutex<HashMap<String, Arc<Semaphore>>>, name: &str, size: u32) -> Arc<Semaphore> {
    lock(map)
        .entry(name.to_owned())
        .or_insert_with(|| Arc::new(Semaphore::new(size as usize)))
        .clone()
}

/// A pooler whose sockets are bound (so `up` reports a taken port before it says ready),
/// not yet accepting.
/// What the rest of the agent may do to a running pooler (HA switchover).
#[derive(Clone)]
pub struct PoolerHandle(Arc<Pooler>);

impl PoolerHandle {
    /// PAUSE on every pool: running transactions finish (up to `timeout`), new queries
    /// wait. Idle server connections are closed.
    pub async fn pause_all(&self, timeout: std::time::Duration) -> anyhow::Result<()> {
        let pooler = &self.0;
        pooler.paused_all.store(true, Ordering::Release);
        let pools = pooler.pools();
        for pool in &pools {
            pool.pause(true);
        }
        let deadline = tokio::time::Instant::now() + timeout;
        while pools.iter().any(|p| p.counts().servers_active > 0) {
            if tokio::time::Instant::now() >= deadline {
                self.resume_all();
                anyhow::bail!("transactions were still running after {timeout:?}; resumed");
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        for pool in &pools {
            pool.close_idle();
        }
        Ok(())
    }

    /// RESUME every pool, on fresh server connections (the primary may have moved).
    pub fn resume_all(&self) {
        let pooler = &self.0;
        pooler.paused_all.store(false, Ordering::Release);
        for pool in pooler.pools() {
            pool.reconnect();
            pool.pause(false);
        }
    }
}

pub struct Listening {
    pooler: Arc<Pooler>,
    inboxes: Vec<lounge::Inbox>,
    tcp: TcpListener,
    unix: UnixListener,
    socket_path: PathBuf,
}

impl Listening {
    pub fn handle(&self) -> PoolerHandle {
        PoolerHandle(self.pooler.clone())
    }
}

/// Binds TCP and the unix socket beside PostgreSQL's and sets up TLS.
pub async fn bind(setup: PoolerSetup) -> anyhow::Result<Listening> {
    let config = setup.config.borrow().clone();
    let port = setup.listen_port.unwrap_or(config.listen_port);
    let addr: SocketAddr = format!("{}:{}", config.listen_addr, port)
        .parse()
        .or_else(|_| format!("[{}]:{}", config.listen_addr, port).parse())
        .with_context(|| {
            format!(
                "pooler.listen_addr `{}` is not an IP address",
                config.listen_addr
            )
        })?;
    let tcp = TcpListener::bind(addr)
        .await
        .with_context(|| format!("listen on {addr} (pooler.listen_addr/listen_port)"))?;
    let socket_path = setup.pg_socket_dir.join(format!(".s.PGSQL.{port}"));
    let unix = bind_unix_socket(&setup.run_dir, &socket_path, port)
        .with_context(|| format!("listen on {}", socket_path.display()))?;
    let (tls, channel_binding) = match config.client_tls {
        ClientTls::Disable => (None, None),
        ClientTls::Allow | ClientTls::Require => {
            let files = config
                .client_tls_cert_file
                .as_deref()
                .zip(config.client_tls_key_file.as_deref())
                .map(|(c, k)| (std::path::Path::new(c), std::path::Path::new(k)));
            let acceptor = tls::acceptor(files, &setup.tls_dir, &setup.tls_hosts)?;
            let cert_file = files.map_or_else(|| setup.tls_dir.join("server.crt"), |f| f.0.into());
            (Some(acceptor), channel_binding_of(&cert_file))
        }
    };
    let mock_key = auth::load_or_create_mock_key(&setup.run_dir.join("scram_mock_key"))?;
    // One lounge per worker thread, so that idle clients are spread over the workers.
    let workers = tokio::runtime::Handle::current().metrics().num_workers();
    let (lounges, inboxes) = (0..workers.max(1))
        .map(|_| mpsc::unbounded_channel())
        .unzip();
    params::set_extra(&setup.config.borrow().track_extra_parameters);
    let (running, running_config) = watch::channel(config.clone());
    let pooler = Arc::new(Pooler {
        config: running_config,
        running,
        file_config: setup.config.clone(),
        console: admin::ConsoleState::default(),
        target: ServerTarget {
            socket_dir: setup.pg_socket_dir.clone(),
            port: setup.pg_port,
            route: setup.route.clone(),
            next: Arc::default(),
        },
        pools: Mutex::default(),
        db_limits: db_limits::DbLimits::default(),
        user_limits: Mutex::default(),
        auth: auth::AuthSource::new(setup.pg_socket_dir.clone(), setup.pg_port, mock_key),
        catalog: prepared::Catalog::default(),
        clients: cancel::ClientRegistry::default(),
        client_count: AtomicUsize::new(0),
        next_client_id: AtomicU64::new(1),
        tls,
        channel_binding,
        reload: setup.reload,
        agent_shutdown: setup.agent_shutdown,
        draining: CancellationToken::new(),
        drain_started: AtomicBool::new(false),
        paused_all: AtomicBool::new(false),
        config_version: AtomicU32::new(0),
        stats_window: admin::StatsWindow::new(Instant::now()),
        lounges,
        kills: watch::channel(0).0,
        calls: AtomicU64::new(0),
        in_task: Mutex::default(),
        tracker: TaskTracker::new(),
    });
    tracing::info!(%addr, socket = %socket_path.display(), worker_threads = workers, "pooler listening");
    Ok(Listening {
        pooler,
        inboxes,
        tcp,
        unix,
        socket_path,
    })
}

/// The `tls-server-end-point` data of the first certificate in `cert_file` (the one TLS
/// serves), or `None` (with a warning: -PLUS is then not offered) if it cannot be had.
fn channel_binding_of(cert_file: &std::path::Path) -> Option<Arc<[u8]>> {
    use rustls_pki_types::pem::PemObject;
    let first = rustls_pki_types::CertificateDer::pem_file_iter(cert_file)
        .ok()
        .and_then(|mut certs| certs.next())
        .and_then(Result::ok);
    let binding = first.and_then(|cert| scram::tls_server_end_point(&cert));
    if binding.is_none() {
        tracing::warn!(
            cert = %cert_file.display(),
            "no channel binding data for this certificate (unreadable, or a signature \
             algorithm without a hash for tls-server-end-point); SCRAM-SHA-256-PLUS is not offered"
        );
    }
    binding.map(Arc::from)
}

/// Binds the unix socket at `socket_path` with mode 0777 (PgBouncer's default
/// unix_socket_mode: every local user may connect, SCRAM or peer identity decides). The
/// socket directory belongs to the PostgreSQL user, who could swap the name for a symlink
/// between a bind and a chmod there; so the socket is made and moded in `run_dir`, which
/// only the agent writes, then renamed into place (a rename replaces whatever is at the
/// name and never follows it).
fn bind_unix_socket(
    run_dir: &std::path::Path,
    socket_path: &std::path::Path,
    port: u16,
) -> anyhow::Result<UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    let staged = run_dir.join(format!(".pooler-{port}.sock"));
    match std::fs::remove_file(&staged) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("remove {}", staged.display())),
    }
    let unix = UnixListener::bind(&staged).with_context(|| format!("bind {}", staged.display()))?;
    std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o777))
        .with_context(|| format!("set the mode of {}", staged.display()))?;
    std::fs::rename(&staged, socket_path)
        .with_context(|| format!("move {} to {}", staged.display(), socket_path.display()))?;
    Ok(unix)
}

/// HA: when the primary moves, server connections to the old one are closed (idle ones
/// now, busy ones when released), as RECONNECT does; new ones go to the new primary.
async fn follow_primary(
    pooler: Arc<Pooler>,
    mut primary: watch::Receiver<Vec<crate::pooler::PgTarget>>,
    shutdown: CancellationToken,
) {
    let mut current = primary.borrow_and_update().clone();
    loop {
        tokio::select! {
            changed = primary.changed() => if changed.is_err() { return },
            () = shutdown.cancelled() => return,
        }
        let next = primary.borrow_and_update().clone();
        if next == current || next == [crate::pooler::PgTarget::Unknown] {
            continue;
        }
        tracing::info!(targets = ?next, "PostgreSQL moved; the pooler follows it");
        let pools: Vec<Arc<Pool>> = lock(&pooler.pools).values().cloned().collect();
        for pool in pools {
            pool.reconnect();
        }
        current = next;
    }
}

/// Starts the lounges; the accept loop and the housekeeping (`PoolerHandle::maintain`,
/// `PoolerHandle::follow_primary`) are the agent's supervised tasks.
pub fn start(listening: Listening) -> Accepting {
    let Listening {
        pooler,
        inboxes,
        tcp,
        unix,
        socket_path,
    } = listening;
    for inbox in inboxes {
        pooler.tracker.spawn(lounge::run(pooler.clone(), inbox));
    }
    Accepting {
        pooler,
        listeners: Arc::new(Mutex::new(Some((tcp, unix)))),
        socket_path,
    }
}

/// The pooler and its listeners, so that a restarted accept loop serves the same pooler.
#[derive(Clone)]
pub struct Accepting {
    pooler: Arc<Pooler>,
    /// Taken by the running accept loop; given back if it panics, closed at shutdown.
    listeners: Arc<Mutex<Option<(TcpListener, UnixListener)>>>,
    socket_path: PathBuf,
}

/// The listeners while an accept loop holds them.
struct Lent {
    slot: Arc<Mutex<Option<(TcpListener, UnixListener)>>>,
    listeners: Option<(TcpListener, UnixListener)>,
}

impl Drop for Lent {
    fn drop(&mut self) {
        // A panicking loop leaves them for its successor; a loop that ends closes them.
        if std::thread::panicking() {
            *lock(&self.slot) = self.listeners.take();
        }
    }
}

impl Accepting {
    pub fn handle(&self) -> PoolerHandle {
        PoolerHandle(self.pooler.clone())
    }
}

impl PoolerHandle {
    /// The pooler's housekeeping (see `maintain`), until shutdown.
    pub async fn maintain(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let config = self.0.file_config.clone();
        maintain(self.0, config, shutdown).await;
        Ok(())
    }

    /// HA: follows the primary (or the replicas) as they move; without a route it has
    /// nothing to follow and ends.
    pub async fn follow_primary(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        if let Some(route) = self.0.target.route.clone() {
            follow_primary(self.0, route, shutdown).await;
        }
        Ok(())
    }
}

/// Accepts clients until `shutdown`, then lets running transactions finish (up to
/// shutdown_timeout) before closing.
pub async fn task_main(accepting: Accepting, shutdown: CancellationToken) -> anyhow::Result<()> {
    let Accepting {
        pooler,
        listeners,
        socket_path,
    } = accepting;
    let taken = lock(&listeners).take();
    let mut lent = Lent {
        slot: listeners,
        listeners: taken,
    };
    let Some((tcp, unix)) = lent.listeners.as_ref() else {
        anyhow::bail!("the pooler's listeners were lost");
    };
    let tracker = pooler.tracker.clone();
    let mut errors = crate::accept_errors::AcceptErrors::new("pooler");
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = tcp.accept() => accepted.map(|(stream, _)| {
                let _ = stream.set_nodelay(true);
                ClientStream::Tcp(stream)
            }),
            accepted = unix.accept() => accepted.map(|(stream, _)| ClientStream::Unix(stream)),
        };
        match accepted {
            Ok(stream) => {
                errors.succeeded();
                tracker.spawn(login::serve(pooler.clone(), stream));
            }
            Err(e) => {
                let pause = errors.failed(&e, Instant::now());
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(pause) => {}
                }
            }
        }
    }
    drop(lent.listeners.take());
    let _ = std::fs::remove_file(&socket_path);
    pooler.drain_started.store(true, Ordering::Release);
    pooler.draining.cancel();
    pooler.wake_idle_clients();
    tracker.close();
    let timeout = pooler.config().shutdown_timeout;
    let immediate = crate::shutdown::immediate();
    tokio::select! {
        waited = tokio::time::timeout(timeout, tracker.wait()) => if waited.is_err() {
            tracing::warn!("pooler: clients still connected after shutdown_timeout; closing them");
        },
        () = immediate.cancelled() => {
            tracing::warn!("pooler: immediate shutdown; closing clients without waiting");
        }
    }
    for pool in pooler.pools() {
        pool.close_idle();
    }
    Ok(())
}

/// How often waiting clients' timeouts are checked: the precision of query_wait_timeout
/// and reserve_pool_timeout (PgBouncer's janitor checks them three times a second).
const WAIT_CHECK_INTERVAL: Duration = Duration::from_millis(100);

/// Once a second: apply reloaded settings, close stale idle connections, fill
/// min_pool_size. Ten times a second: end waits past query_wait_timeout and open the
/// reserve pool to those past reserve_pool_timeout.
async fn maintain(
    pooler: Arc<Pooler>,
    mut config: watch::Receiver<Arc<PoolerConfig>>,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut waits = tokio::time::interval(WAIT_CHECK_INTERVAL);
    waits.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = waits.tick() => {
                let pools: Vec<Arc<Pool>> = lock(&pooler.pools).values().cloned().collect();
                for pool in &pools {
                    pool.check_waits();
                }
                evict_for_waiters(&pools);
            }
            changed = config.changed() => {
                if changed.is_err() { return; }
                // A reload reads the file again: the console's SETs end here.
                let file = config.borrow_and_update().clone();
                pooler.running.send_replace(file);
                pooler.apply_config();
                tracing::info!("pooler settings reloaded");
            }
            _ = tick.tick() => {
                // Clients idle in their own task since the last tick move to a lounge.
                pooler.call_idle_clients();
                pooler.db_limits.settle();
                pooler.stats_window.tick(&pooler.pools());
                for pool in pooler.pools() {
                    pool.close_stale_idle();
                    if pool.has_credentials() && !pool.is_paused() {
                        for _ in 0..pool.missing_min() {
                            if let Err(e) = pool.open_one().await {
                                tracing::warn!(database = %pool.key.database, "min_pool_size: {e}");
                                break;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// PgBouncer's eviction: when a pool's clients wait only because its database is at
/// max_db_connections, the idle connection unused longest in another pool of the database
/// is closed, so that its place goes to them (otherwise it would wait for
/// server_idle_timeout). Called with the waits' checks, ten times a second.
fn evict_for_waiters(pools: &[Arc<Pool>]) {
    for waiting in pools {
        if waiting.db.servers.available_permits() > 0 || !waiting.waits_for_database() {
            continue;
        }
        let victim = pools
            .iter()
            .filter(|p| Arc::ptr_eq(&p.db, &waiting.db) && !Arc::ptr_eq(p, waiting))
            .filter_map(|p| p.oldest_idle().map(|since| (since, p)))
            .min_by_key(|(since, _)| *since);
        if let Some((_, pool)) = victim {
            pool.evict_oldest_idle();
            waiting.wake_waiters();
        }
    }
}

impl Pooler {
    /// After KILL or when draining: idle clients, in a lounge or not, look whether they
    /// must end.
    fn wake_idle_clients(&self) {
        self.kills.send_modify(|n| *n += 1);
        self.call_idle_clients();
    }

    /// Wakes every client idle in its own task, which then rests in a lounge or ends.
    fn call_idle_clients(&self) {
        self.calls.fetch_add(1, Ordering::SeqCst);
        for waker in lock(&self.in_task).values() {
            waker.wake();
        }
    }

    /// Registers the task of client `id` for the pooler's calls, until the `Call` drops.
    fn answer_calls(self: &Arc<Self>, id: u64) -> Call {
        let waker = Arc::new(AtomicWaker::new());
        lock(&self.in_task).insert(id, waker.clone());
        Call {
            pooler: self.clone(),
            id,
            waker,
            seen: self.calls(),
        }
    }

    /// How many times the pooler has called its idle clients.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }

    /// Puts an idle client in a lounge; gives it back if the lounges are closed.
    fn rest(&self, client: client::Client, deadline: Option<Instant>) -> Option<client::Client> {
        let door = &self.lounges[client.info.id as usize % self.lounges.len()];
        door.send(lounge::Resting { client, deadline })
            .err()
            .map(|e| e.0.client)
    }

    fn unregister_client(&self, key: cancel::ClientKey) {
        self.clients.unregister(key);
    }

    fn config_version(&self) -> u32 {
        self.config_version.load(Ordering::Acquire)
    }

    fn is_draining(&self) -> bool {
        self.drain_started.load(Ordering::Acquire)
    }

    fn next_id(&self) -> u64 {
        self.next_client_id.fetch_add(1, Ordering::Relaxed)
    }
}
mod route;
