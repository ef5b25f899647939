//! The per-client task after login: glue between the client socket, the pool and the pure
//! layers (`route`, `txn`, `params`). In transaction mode the server connection is taken
//! for one transaction and given back when ReadyForQuery says idle and nothing is owed.

use std::future::Future;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::cancel::ClientInfo;
use super::params::ClientParams;
use super::pool::{CheckoutError, Guard, Pool};
use super::prepared::ClientStatements;
use super::protocol::backend::{encode as be, tag as bt, TransactionStatus};
use super::protocol::frame::{peek_frame, HEADER_LENGTH};
use super::protocol::frontend::{self, FrontendMessage};
use super::protocol::sql_state::SqlState;
use super::protocol::{split_frame, split_frame_limited};
use super::route::{self, Rewrite, Routed};
use super::server::ServerError;
use super::session::{fatal, send_fatal, Counted, Fatal, Session};
use super::stats::Activity;
use super::stream::ClientStream;
use super::txn::TxStatus;
use super::{Call, Pooler};
use crate::config::PoolMode;

mod large;
mod pinning;
mod timeouts;
mod without_server;

use large::{client_message_refused, let_go_if_grown, server_message_refused, Passing};
use without_server::write_synthetic;

const MAX_BACKEND_MESSAGE: usize = 0x3fff_fffe;

/// Read buffer space while a transaction runs, and for an idle client's next request
/// (under glibc's per-thread cache limit, so a transaction's first read is cheap; a
/// request that fills it grows the buffer to ACTIVE_BUFFER).
const ACTIVE_BUFFER: usize = 16 * 1024;
pub const IDLE_READ: usize = 1000;

/// Client bytes not yet written to PostgreSQL beyond which the client is not read.
const MAX_BACKLOG: usize = 1024 * 1024;

/// A buffer larger than this (grown for a large message) is dropped when the client
/// goes idle.
const MAX_KEPT_BUFFER: usize = 64 * 1024;

/// Why the client's session ended.
enum End {
    /// The client closed or sent Terminate.
    Left,
    /// Tell the client why, then close.
    Fatal(Fatal),
    /// The server connection failed; the client cannot continue.
    ServerLost,
    /// PostgreSQL refused a new connection; its error frame goes to the client.
    Refused(bytes::Bytes),
    /// The server sent what the pooler refuses to relay (over max_packet_size): its
    /// connection is closed and the client told why.
    BadServerMessage(Fatal),
}

/// A logged-in client between transactions: what it keeps wherever it waits, in a
/// lounge (`lounge.rs`) or in its own task. Kept small: idle clients are the common case.
pub struct Client {
    pooler: Counted,
    pool: Arc<Pool>,
    mode: PoolMode,
    /// The pooler answered a message of this batch with an error without a server:
    /// as PostgreSQL would, the client's messages are ignored up to its Sync.
    skip_to_sync: bool,
    pub stream: ClientStream,
    /// Bytes of a request not complete yet; usually empty, holding no buffer.
    pub buf: BytesMut,
    statements: ClientStatements,
    /// Shared with the pool's other clients until the client sets something.
    params: Arc<ClientParams>,
    pub info: Arc<ClientInfo>,
    /// The pool's KILL count when the client logged in.
    kills: u64,
}

impl Drop for Client {
    fn drop(&mut self) {
        self.pool.stats.clients_active.fetch_sub(1, Relaxed);
        self.pool.db.client_left();
        if self.info.pinned.load(Relaxed) != 0 {
            self.pool.stats.clients_pinned.fetch_sub(1, Relaxed);
        }
        self.pooler.clients.unregister(self.info.cancel_key);
    }
}

impl Client {
    pub fn pooler(&self) -> &Arc<Pooler> {
        &self.pooler.0
    }

    /// KILL was run on the client's pool since it logged in, or KILL_CLIENT on it.
    pub fn is_killed(&self) -> bool {
        self.pool.kills() != self.kills || self.info.killed.load(Relaxed)
    }
}

/// What ended a client's wait in a lounge.
pub enum Woke {
    Read(std::io::Result<usize>),
    IdleTimeout,
    Killed,
    Draining,
}

/// A client in its own task: the client plus what relaying a transaction needs.
struct Active {
    client: Client,
    to_client: BytesMut,
    to_server: BytesMut,
    server: Option<Guard>,
    xact_started: Instant,
    query_started: Instant,
    /// `Pooler::config_version` when `config` was read.
    config_version: u32,
    /// The pooler settings, refreshed whenever the client is between transactions.
    config: Arc<crate::config::PoolerConfig>,
    /// A later call of the pooler (KILL, draining, the once-a-second move to a lounge)
    /// ends the client's wait between transactions.
    call: Call,
    /// The rest of a large client message relayed in pieces (`large.rs`).
    from_client: Passing,
    /// The rest of a large server message relayed in pieces.
    from_server: Passing,
    /// When the server connection last left idle: transaction_timeout counts from it.
    transaction_began: Instant,
    /// query_timeout, transaction_timeout and idle_transaction_timeout.
    timer: timeouts::Timer,
    /// How long a checkout may wait, and the reason given when it times out.
    wait_limit: (Option<Duration>, &'static str),
}

/// The task of a client that just logged in: it gets the login's replies and is served
/// like any other until it rests in a lounge. The client is built outside any future,
/// so that the task holds it once.
pub fn start(counted: Counted, session: Session) -> impl Future<Output = ()> + Send {
    let client = Client::new(counted, session);
    async move {
        match client {
            Ok((client, to_client)) => Active::new(client, to_client).run(None).await,
            Err((mut stream, error)) => send_fatal(&mut stream, &error).await,
        }
    }
}

/// The task of a client a lounge woke up.
pub async fn resume(client: Client, woke: Woke) {
    Active::new(client, BytesMut::new()).run(Some(woke)).await
}

impl Client {
    /// The client and the login's replies (ParameterStatus, BackendKeyData, ReadyForQuery).
    fn new(counted: Counted, session: Session) -> Result<(Self, BytesMut), (ClientStream, Fatal)> {
        let Session {
            stream,
            buf,
            key,
            startup_params,
            info,
            admitted,
            ..
        } = session;
        let pooler = &counted.0;
        let pool = pooler.pool(&key);
        let config = pooler.config();
        let ignored = &config.ignore_startup_parameters;
        let params = match ClientParams::new(pool.defaults(), &startup_params, ignored) {
            Ok(params) => params,
            Err(message) => {
                pooler.unregister_client(info.cancel_key);
                return Err((stream, fatal(SqlState::FEATURE_NOT_SUPPORTED, message)));
            }
        };
        let (params, parameter_status) = pool.share_params(params);
        // The login's replies, about 400 bytes, without regrowing the buffer.
        let mut to_client = BytesMut::with_capacity(1024);
        to_client.extend_from_slice(&parameter_status);
        let (process_id, secret_key) = info.cancel_key;
        be::backend_key_data(&mut to_client, process_id, &secret_key);
        be::ready_for_query(&mut to_client, TransactionStatus::Idle);
        let (mode, _) = config.for_database(&key.database);
        pool.stats.clients_active.fetch_add(1, Relaxed);
        // Counted until the client drops (`client_left`).
        if let Some(admitted) = admitted {
            admitted.keep();
        }
        pool.stats.client_login_count.fetch_add(1, Relaxed);
        let client = Client {
            kills: pool.kills(),
            pooler: counted,
            pool,
            mode,
            stream,
            buf,
            statements: ClientStatements::default(),
            skip_to_sync: false,
            params,
            info,
        };
        Ok((client, to_client))
    }
}

impl Active {
    fn new(client: Client, to_client: BytesMut) -> Active {
        let pooler = client.pooler();
        let config = pooler.config();
        Active {
            config_version: pooler.config_version(),
            wait_limit: timeouts::wait_limit(&config, &client.pool.key.database),
            config,
            call: pooler.answer_calls(client.info.id),
            client,
            to_client,
            to_server: BytesMut::new(),
            server: None,
            xact_started: Instant::now(),
            query_started: Instant::now(),
            from_client: Passing::default(),
            from_server: Passing::default(),
            transaction_began: Instant::now(),
            timer: timeouts::Timer::default(),
        }
    }

    /// Serves the client until it leaves or rests in a lounge.
    async fn run(mut self, woke: Option<Woke>) {
        match self.serve(woke).await {
            Ok(deadline) => {
                let Active { mut client, .. } = self;
                if client.buf.is_empty() {
                    // No buffer while resting (the login's, at first).
                    client.buf = BytesMut::new();
                }
                let pooler = client.pooler().clone();
                if let Some(client) = pooler.rest(client, deadline) {
                    // The lounges are gone: the pooler is shutting down.
                    Box::pin(Active::new(client, BytesMut::new()).finish(shutdown())).await;
                }
            }
            Err(end) => Box::pin(self.finish(end)).await,
        }
    }
}

impl Active {
    /// Serves the client until it ends (`Err`) or may rest in a lounge (`Ok`, with the
    /// end of its client_idle_timeout). An idle client, just logged in or between
    /// transactions, waits in its task until the lounges' next call (within a second),
    /// so that a busy client, or one that connects for a single query, is not handed
    /// between tasks.
    async fn serve(&mut self, woke: Option<Woke>) -> Result<Option<Instant>, End> {
        match woke {
            None => self.flush_client().await?,
            Some(Woke::Read(read)) => self.on_client_read(read).await?,
            Some(Woke::IdleTimeout) => return Err(idle_timeout()),
            Some(Woke::Killed) => return Err(killed()),
            Some(Woke::Draining) => return Err(shutdown()),
        }
        loop {
            if self.server.is_some() {
                self.relay().await?;
            } else if let Some(deadline) = self.step_idle().await? {
                return Ok(deadline);
            }
        }
    }

    /// When client_idle_timeout ends for a client idle from now on.
    fn idle_deadline(&self) -> Option<Instant> {
        self.config.client_idle_timeout.map(|t| Instant::now() + t)
    }

    /// No server: wait for the client (idle timeout, shutdown, KILL); `Ok(Some)`, with
    /// the end of the idle timeout, when the lounges call.
    async fn step_idle(&mut self) -> Result<Option<Option<Instant>>, End> {
        let deadline = self.idle_deadline();
        self.set_state(Activity::Idle);
        // The buffers stay while the client waits in its task (it is likely busy); a
        // resting client drops them. One that grew for a large message is let go.
        for buf in [
            &mut self.client.buf,
            &mut self.to_client,
            &mut self.to_server,
        ] {
            let_go_if_grown(buf, 0);
        }
        // The config's Arc is shared by every client: refreshed only when it changed, so
        // that its reference count is not bounced between cores on every transaction.
        let version = self.client.pooler.config_version();
        if version != self.config_version {
            self.config = self.client.pooler.config();
            self.config_version = version;
            self.wait_limit = timeouts::wait_limit(&self.config, &self.client.pool.key.database);
        }
        if self.client.pooler.is_draining() {
            return Err(shutdown());
        }
        let timer = sleep_or_never(self.config.client_idle_timeout);
        // One waker for KILL, draining and the lounges' call, registered by an atomic
        // exchange: a lock-taking waiter here would cost every transaction.
        let called = self.call.called();
        let read = tokio::select! {
            biased;
            read = self.client.stream.read_when_ready(&mut self.client.buf, IDLE_READ) => read,
            () = timer => return Err(idle_timeout()),
            () = called => {
                return if self.client.pooler.is_draining() {
                    Err(shutdown())
                } else if self.client.is_killed() {
                    Err(killed())
                } else {
                    Ok(Some(deadline))
                };
            }
        };
        self.on_client_read(read).await?;
        Ok(None)
    }

    /// Relays both ways until the server connection goes back to the pool.
    async fn relay(&mut self) -> Result<(), End> {
        while self.server.is_some() {
            self.step_with_server().await?;
        }
        Ok(())
    }

    /// A server is assigned: relay both ways.
    async fn step_with_server(&mut self) -> Result<(), End> {
        if self.client.buf.capacity() - self.client.buf.len() < IDLE_READ / 2 {
            self.client.buf.reserve(ACTIVE_BUFFER);
        }
        // A server waiting for the rest of a client's large message waits on the client as
        // much as one idle in a transaction: a client cannot hold it by stopping half-way.
        let due = self.timeout_due();
        let fast_close = self.fast_close_watch();
        let Some(guard) = self.server.as_mut() else {
            return Ok(());
        };
        let conn = guard.conn();
        let timeout = self.timer.until(due.map(|d| d.0));
        let called = self.call.called();
        let backlog = !self.to_server.is_empty();
        let (mut server_read, mut server_write) = conn.stream.split();
        // Biased, which spares a random draw on every wake-up. PostgreSQL's replies come
        // first; the client is read once they pause, which they do: PostgreSQL answers
        // only what the client sent, at the pace the client reads.
        tokio::select! {
            biased;
            read = server_read.read_buf(&mut conn.read_buf) => match read {
                Ok(0) | Err(_) => Err(End::ServerLost),
                Ok(_) => self.on_server_data().await,
            },
            written = server_write.write(&self.to_server), if backlog => match written {
                Ok(0) | Err(_) => Err(End::ServerLost),
                Ok(n) => {
                    self.to_server.advance(n);
                    Ok(())
                }
            },
            read = self.client.stream.read_buf(&mut self.client.buf), if self.to_server.len() < MAX_BACKLOG => {
                self.on_client_read(read).await
            }
            () = timeout => Err(self.timed_out(due.map_or(timeouts::Timeout::IdleTransaction, |d| d.1))),
            () = called, if fast_close => self.on_call_with_server(),
        }
    }

    async fn on_client_read(&mut self, read: std::io::Result<usize>) -> Result<(), End> {
        match read {
            Ok(0) | Err(_) => return Err(End::Left),
            Ok(n) => self
                .client
                .pool
                .stats
                .bytes_received
                .fetch_add(n as u64, Relaxed),
        };
        let max_packet = self.config.max_packet_size;
        // PgBouncer's max_packet_size counts the whole message: tag, length and body.
        let max_body = (max_packet as usize).saturating_sub(HEADER_LENGTH);
        let max_prepared = self.config.max_prepared_statements as usize;
        let rewrite_on = self.client.mode == PoolMode::Transaction && max_prepared > 0;
        // A server assigned for this request: its clock reading starts the query too.
        let mut assigned = false;
        // Whether this request starts a transaction on a server kept between them.
        let was_ready = self.config.transaction_timeout.is_some()
            && self
                .server
                .as_mut()
                .is_some_and(|g| g.conn().tracker.is_idle());
        if self.from_client.owed > 0 {
            self.from_client
                .pass(&mut self.client.buf, &mut self.to_server);
        }
        loop {
            let frame = match split_frame_limited(&mut self.client.buf, |tag| {
                frontend::max_body_length(tag).min(max_body)
            }) {
                Ok(Some(frame)) => frame,
                Ok(None) => {
                    if self.client.buf.len() >= HEADER_LENGTH && self.from_client.owed == 0 {
                        assigned |= self.stream_from_client(rewrite_on, max_prepared).await?;
                    }
                    break;
                }
                Err(e) => return Err(client_message_refused(e, max_packet)),
            };
            let message = frontend::decode(&frame)
                .map_err(|e| End::Fatal(fatal(SqlState::PROTOCOL_VIOLATION, e.to_string())))?;
            match message {
                FrontendMessage::Terminate => return Err(End::Left),
                FrontendMessage::PasswordMessage { .. } => {
                    return Err(End::Fatal(fatal(
                        SqlState::PROTOCOL_VIOLATION,
                        "unexpected password message",
                    )))
                }
                _ => {}
            }
            if self.client.skip_to_sync {
                self.skip_to_sync(&message);
                continue;
            }
            let (frame, message) = self.check_session_state(frame, message)?;
            if self.server.is_none() && rewrite_on && self.answer_without_server(&message) {
                continue;
            }
            if self.server.is_none() {
                self.assign().await?;
                assigned = true;
            }
            let Some(guard) = self.server.as_mut() else {
                break;
            };
            let rewrite = rewrite_on.then(|| Rewrite {
                catalog: &self.client.pooler.catalog,
                statements: &mut self.client.statements,
                max_prepared,
            });
            let routed = route::route(
                &frame,
                message,
                &mut guard.conn().book(),
                rewrite,
                &mut self.to_server,
            )
            .map_err(|e| End::Fatal(fatal(SqlState::PROTOCOL_VIOLATION, e.to_string())))?;
            for name in guard.conn().tracker.take_discarded() {
                guard.conn().prepared.remove(&name);
            }
            if routed == Routed::SentForgetStatements {
                guard.conn().prepared.clear();
                self.client.statements = ClientStatements::default();
            }
        }
        if let Some(guard) = self.server.as_mut() {
            let conn = guard.conn();
            if !self.to_server.is_empty() {
                self.query_started = if assigned {
                    self.xact_started
                } else {
                    Instant::now()
                };
                if assigned || was_ready {
                    self.transaction_began = self.query_started;
                }
                // Usually all of it goes at once; what does not is written by
                // `step_with_server` while it keeps reading PostgreSQL's results, so a large
                // pipeline cannot deadlock both sides on full socket buffers.
                match conn.stream.try_write(&self.to_server) {
                    Ok(n) => self.to_server.advance(n),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(_) => return Err(End::ServerLost),
                }
            }
            let ready = conn.tracker.take_ready_synthetic();
            write_synthetic(&mut self.to_client, &ready);
        }
        self.flush_client().await
    }

    async fn on_server_data(&mut self) -> Result<(), End> {
        let Some(guard) = self.server.as_mut() else {
            return Ok(());
        };
        let conn = guard.conn();
        let mut ready_count = 0u64;
        let max_packet = self.config.max_packet_size;
        let max_body = MAX_BACKEND_MESSAGE.min((max_packet as usize).saturating_sub(HEADER_LENGTH));
        if self.from_server.owed > 0 {
            self.from_server
                .pass(&mut conn.read_buf, &mut self.to_client);
        }
        loop {
            // Each message is looked at in place and forwarded from the read buffer:
            // splitting it off would cost two reference count updates per message.
            let (tag, total) = match peek_frame(&conn.read_buf, |_| max_body) {
                Ok(Some(found)) => found,
                Ok(None) => {
                    if conn.read_buf.len() >= HEADER_LENGTH && self.from_server.owed == 0 {
                        large::stream_from_server(conn, &mut self.to_client, &mut self.from_server);
                    }
                    break;
                }
                Err(e) => return Err(server_message_refused(e, max_packet)),
            };
            let status = (tag == bt::READY_FOR_QUERY)
                .then(|| conn.read_buf.get(5).copied())
                .flatten()
                .and_then(TransactionStatus::from_byte)
                .map(|s| match s {
                    TransactionStatus::Idle => TxStatus::Idle,
                    TransactionStatus::InTransaction => TxStatus::InTransaction,
                    TransactionStatus::Failed => TxStatus::Failed,
                });
            let outcome = conn.tracker.on_backend(tag, status);
            write_synthetic(&mut self.to_client, &outcome.before);
            for name in &outcome.failed_statements {
                conn.prepared.remove(name);
            }
            if tag == bt::PARAMETER_STATUS {
                let frame = split_frame(&mut conn.read_buf, MAX_BACKEND_MESSAGE)
                    .ok()
                    .flatten()
                    .ok_or(End::ServerLost)?;
                if let Some((name, value)) = conn.record_parameter(&frame) {
                    Arc::make_mut(&mut self.client.params).reported(name, value);
                }
                if !outcome.drop {
                    self.to_client.extend_from_slice(frame.as_bytes());
                }
                continue;
            }
            if tag == bt::READY_FOR_QUERY {
                ready_count += 1;
            }
            if !outcome.drop {
                let message = conn.read_buf.get(..total).unwrap_or_default();
                self.to_client.extend_from_slice(message);
            }
            conn.read_buf.advance(total);
        }
        let ready = conn.tracker.take_ready_synthetic();
        write_synthetic(&mut self.to_client, &ready);
        let reported = conn.reported_state;
        let releasable = conn.tracker.is_idle() && self.to_server.is_empty() && !self.mid_message();
        if releasable && reported {
            self.check_reported_state();
        }
        let now = Instant::now();
        if ready_count > 0 {
            let stats = &self.client.pool.stats;
            stats.query_count.fetch_add(ready_count, Relaxed);
            stats.query_time_us.fetch_add(
                now.saturating_duration_since(self.query_started)
                    .as_micros() as u64,
                Relaxed,
            );
        }
        self.flush_client().await?;
        if releasable && self.client.mode == PoolMode::Session {
            self.let_go_of_grown_buffers();
        }
        // KILL shuts down the connections in use; one that finished its transaction just
        // before ends here.
        let draining = self.client.pooler.is_draining();
        if releasable && !draining && self.client.is_killed() {
            return Err(killed());
        }
        let pooled = self.client.mode == PoolMode::Transaction && !self.is_pinned();
        if releasable && (pooled || draining) {
            self.release(now).await;
            if draining {
                return Err(shutdown());
            }
        }
        Ok(())
    }

    /// Takes a server connection for this client and brings its session parameters in
    /// line with the client's.
    async fn assign(&mut self) -> Result<(), End> {
        self.set_state(Activity::Waiting);
        let (wait, wait_reason) = self.wait_limit;
        let kills = self.client.kills;
        let flag = &self.client.info.killed;
        let mut guard = match self.client.pool.checkout_for(wait, kills, flag).await {
            Ok(guard) => guard,
            Err(CheckoutError::Killed) => return Err(killed()),
            Err(CheckoutError::WaitTimeout) => {
                return Err(End::Fatal(fatal(SqlState::PROTOCOL_VIOLATION, wait_reason)))
            }
            Err(CheckoutError::Server(ServerError::Refused { frame, .. })) => {
                return Err(End::Refused(frame))
            }
            Err(e) => {
                tracing::warn!(database = %self.client.pool.key.database, "no server connection: {e}");
                return Err(End::Fatal(fatal(
                    SqlState::CONNECTION_FAILURE,
                    "server login failed",
                )));
            }
        };
        let conn = guard.conn();
        // Usually the session was last synced to a client with the same parameters: one
        // comparison instead of looking every parameter up.
        let params = &self.client.params;
        let in_sync = params.is_synced(conn.synced.as_ref()) && conn.settings == *params.extra();
        if !in_sync {
            if let Some(sql) = params.sync_sql(&conn.params, &conn.settings) {
                if let Err(e) = Box::pin(conn.run_internal(&sql)).await {
                    tracing::info!("re-applying client parameters failed: {e}");
                    return Err(match e {
                        ServerError::Refused { frame, .. } => End::Refused(frame),
                        _ => End::ServerLost,
                    });
                }
                conn.settings = params.extra().clone();
            }
            conn.synced = Some(params.synced_to());
        }
        self.client.info.cancel.set(Some(conn.key));
        self.xact_started = guard.taken;
        self.server = Some(guard);
        self.set_state(Activity::Active);
        Ok(())
    }

    /// Gives the server connection back after a transaction (or session) that ended
    /// at `now`.
    async fn release(&mut self, now: Instant) {
        let Some(mut guard) = self.server.take() else {
            return;
        };
        self.client.info.cancel.set(None);
        let stats = &self.client.pool.stats;
        stats.xact_count.fetch_add(1, Relaxed);
        stats.xact_time_us.fetch_add(
            now.saturating_duration_since(self.xact_started).as_micros() as u64,
            Relaxed,
        );
        // A read buffer grown for a large message is not kept in the pool.
        let_go_if_grown(&mut guard.conn().read_buf, ACTIVE_BUFFER);
        // A pinned client's connection keeps its state: closed, never handed on.
        let reusable = if self.is_pinned() {
            false
        } else if self.client.mode == PoolMode::Session || self.config.server_reset_query_always {
            let config = self.config.clone();
            Box::pin(reset(&mut guard, &config.server_reset_query)).await
        } else {
            true
        };
        guard.release(reusable, now);
    }

    async fn finish(&mut self, end: End) {
        match &end {
            End::Fatal(error) => send_fatal(&mut self.client.stream, error).await,
            End::ServerLost => {
                if let Some(mut guard) = self.server.take() {
                    guard.conn().mark_broken();
                }
                self.client.info.cancel.set(None);
                // KILL shuts the connection down under its client.
                let error = if self.client.is_killed() {
                    kill_error()
                } else {
                    fatal(SqlState::CONNECTION_FAILURE, "server conn crashed?")
                };
                send_fatal(&mut self.client.stream, &error).await;
            }
            End::Refused(frame) => {
                let _ = self.client.stream.write_all(frame).await;
            }
            End::BadServerMessage(error) => {
                if let Some(mut guard) = self.server.take() {
                    guard.conn().mark_broken();
                }
                self.client.info.cancel.set(None);
                tracing::warn!(database = %self.client.pool.key.database, "closing a server connection: {}", error.message);
                send_fatal(&mut self.client.stream, error).await;
            }
            End::Left => {}
        }
        // A client gone mid-transaction must not leave a dirty connection in the pool.
        let mid_message = self.mid_message();
        if let Some(mut guard) = self.server.take() {
            self.client.info.cancel.set(None);
            let conn = guard.conn();
            let clean = !mid_message
                && conn.tracker.nothing_pending()
                && (conn.tracker.status() == TxStatus::Idle
                    || Box::pin(conn.run_internal("ROLLBACK")).await.is_ok());
            if clean {
                conn.tracker = Default::default();
                self.server = Some(guard);
                self.release(Instant::now()).await;
            }
        }
    }

    async fn flush_client(&mut self) -> Result<(), End> {
        if self.to_client.is_empty() {
            return Ok(());
        }
        let n = self.to_client.len();
        let written = self.client.stream.write_all(&self.to_client).await;
        self.to_client.clear();
        self.client
            .pool
            .stats
            .bytes_sent
            .fetch_add(n as u64, Relaxed);
        written.map_err(|_| End::Left)
    }

    fn set_state(&self, state: Activity) {
        self.client.info.state.set(state);
    }
}

/// Session end (or server_reset_query_always): roll back and reset; unusable if it fails.
async fn reset(guard: &mut Guard, reset_query: &str) -> bool {
    let conn = guard.conn();
    if !conn.tracker.nothing_pending() {
        return false;
    }
    if conn.tracker.status() != TxStatus::Idle && conn.run_internal("ROLLBACK").await.is_err() {
        return false;
    }
    if !reset_query.trim().is_empty() && conn.run_internal(reset_query).await.is_err() {
        return false;
    }
    conn.tracker = Default::default();
    let query = reset_query.to_ascii_uppercase();
    if query.contains("DISCARD ALL") || query.contains("DEALLOCATE ALL") {
        conn.prepared.clear();
    }
    if query.contains("DISCARD ALL") || query.contains("RESET ALL") {
        conn.settings.clear();
    }
    true
}

fn idle_timeout() -> End {
    End::Fatal(fatal(SqlState::PROTOCOL_VIOLATION, "client_idle_timeout"))
}

fn shutdown() -> End {
    End::Fatal(fatal(
        SqlState::ADMIN_SHUTDOWN,
        "terminating connection due to administrator command",
    ))
}

fn killed() -> End {
    End::Fatal(kill_error())
}

fn kill_error() -> Fatal {
    fatal(
        SqlState::ADMIN_SHUTDOWN,
        "terminating connection due to administrator command (KILL)",
    )
}

/// The timer is boxed so that waiting without one costs the client's task no space.
async fn sleep_or_never(duration: Option<Duration>) {
    match duration {
        Some(d) => Box::pin(tokio::time::sleep(d)).await,
        None => std::future::pending().await,
    }
}
