//! One connection from the pooler to PostgreSQL: login by SCRAM passthrough (the client key
//! recovered from a client's proof, never a password), then raw framed I/O for the client
//! task, plus the health check and reset the pool runs between clients.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::watch;

use super::cancel::ServerKey;
use super::pool_key::{Credentials, PoolKey};
use super::prepared::ServerStatements;
use super::protocol::backend::{self, Authentication, BackendMessage};
use super::protocol::error_fields::ErrorFields;
use super::protocol::{frontend, split_frame, startup, Frame, ProtocolError};
use super::route::ServerBook;
use super::scram::{self, ClientExchange};
use super::server_stream::ServerStream;
use super::stats::Activity;
use super::txn::Tracker;
use crate::pooler::PgTarget;

/// Where PostgreSQL listens: its unix socket (cheaper than TCP loopback), or in an HA
/// cluster whichever node is primary (or, for the read-only listener, the replicas).
#[derive(Debug, Clone)]
pub struct ServerTarget {
    pub socket_dir: PathBuf,
    pub port: u16,
    /// In an HA cluster, where to connect (from the HA loop): one target, or several that
    /// new connections take in turn; `None` on a single node.
    pub route: Option<watch::Receiver<Vec<PgTarget>>>,
    /// Turns over the targets, one new server connection at a time.
    pub next: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl ServerTarget {
    pub fn socket_path(&self) -> PathBuf {
        self.socket_dir.join(format!(".s.PGSQL.{}", self.port))
    }

    /// Connects to the local socket, or in an HA cluster to the route's next target.
    /// While none is known (an election), or the one known refuses (a primary that died
    /// and whose key has not expired yet), it waits for the route to change and tries
    /// again: clients wait through a failover instead of failing. The caller's connect
    /// timeout bounds it.
    pub async fn open(&self) -> std::io::Result<ServerStream> {
        let Some(route) = &self.route else {
            return Ok(ServerStream::Unix(
                UnixStream::connect(self.socket_path()).await?,
            ));
        };
        let mut route = route.clone();
        loop {
            let current = {
                let targets = route.borrow_and_update();
                let turn = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                targets
                    .get(turn % targets.len().max(1))
                    .cloned()
                    .unwrap_or(PgTarget::Unknown)
            };
            let connected = match current {
                PgTarget::Local => UnixStream::connect(self.socket_path())
                    .await
                    .map(ServerStream::Unix),
                PgTarget::Remote { host, port } => {
                    match tokio::net::TcpStream::connect((host.as_str(), port)).await {
                        Ok(stream) => stream.set_nodelay(true).map(|()| ServerStream::Tcp(stream)),
                        Err(e) => Err(e),
                    }
                }
                PgTarget::Unknown => Err(std::io::Error::other("no primary yet")),
            };
            if let Ok(stream) = connected {
                return Ok(stream);
            }
            tokio::select! {
                changed = route.changed() => {
                    changed.map_err(|_| std::io::Error::other("the HA loop has stopped"))?;
                }
                () = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
        }
    }
}

/// Why a server connection could not be made or used.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("connect to PostgreSQL: {0}")]
    Io(#[from] std::io::Error),
    /// PostgreSQL's ErrorResponse, decoded and as sent (to relay to the client as is).
    #[error("PostgreSQL refused: {}", .fields.message().unwrap_or("no message"))]
    Refused {
        fields: ErrorFields,
        frame: bytes::Bytes,
    },
    #[error("PostgreSQL broke the protocol: {0}")]
    Protocol(String),
    #[error("PostgreSQL did not answer within {0:?}")]
    Timeout(Duration),
}

impl From<ProtocolError> for ServerError {
    fn from(e: ProtocolError) -> Self {
        ServerError::Protocol(e.to_string())
    }
}

/// Largest backend message the pooler buffers whole (DataRows can be large).
const MAX_BACKEND_MESSAGE: usize = 0x3fff_fffe;

/// Server connections' ids, counted apart from the clients' (PgBouncer's KILL_CLIENT looks
/// among clients only).
static NEXT_SERVER_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// What SHOW SERVERS lists about one server connection.
#[derive(Debug)]
pub struct ServerInfo {
    /// SHOW SERVERS' `id`: stable for the connection's life.
    pub id: u64,
    /// The pool's RECONNECT generation the connection was opened in; an older one is
    /// SHOW SERVERS' `close_needed` and what WAIT_CLOSE waits for.
    pub generation: std::sync::atomic::AtomicU64,
    pub connect_time: std::time::SystemTime,
    pub remote_pid: i32,
    /// "active" while a client uses it, "idle" in the pool.
    pub state: super::stats::ConnState,
    /// The connection's socket while it is open (cleared by `ServerConn`'s drop, under
    /// this lock, before the descriptor closes), so that KILL can end a connection a
    /// client holds.
    socket: std::sync::Mutex<Option<std::os::fd::RawFd>>,
}

impl ServerInfo {
    pub fn set_state(&self, state: Activity) {
        self.state.set(state);
    }

    /// KILL: shuts the socket down, so that the client using the connection sees it end
    /// at once and PostgreSQL rolls its transaction back.
    pub fn shut_down(&self) {
        if let Ok(socket) = self.socket.lock() {
            if let Some(fd) = *socket {
                let _ = nix::sys::socket::shutdown(fd, nix::sys::socket::Shutdown::Both);
            }
        }
    }
}

pub struct ServerConn {
    pub stream: ServerStream,
    pub info: std::sync::Arc<ServerInfo>,
    pub read_buf: BytesMut,
    /// GUC_REPORT parameters as this session has them (client_encoding, TimeZone, …).
    pub params: HashMap<String, String>,
    /// Startup settings of clients the pooler SET on this session (not reported back).
    pub settings: std::collections::BTreeMap<String, String>,
    /// What the session's tracked parameters were last synced to, until the server
    /// reports a change.
    pub synced: Option<super::params::SyncedTo>,
    pub key: ServerKey,
    pub prepared: ServerStatements,
    pub tracker: Tracker,
    pub created: Instant,
    pub generation: u64,
    /// PostgreSQL reported a parameter the pooler does not track since the client task
    /// last looked (`client/pinning.rs`): the session may have changed.
    pub reported_state: bool,
    broken: bool,
}

/// Clears the socket KILL may shut down before the descriptor closes (fields drop after
/// this).
impl Drop for ServerConn {
    fn drop(&mut self) {
        if let Ok(mut socket) = self.info.socket.lock() {
            *socket = None;
        }
    }
}

impl ServerConn {
    /// What routing a client message onto this connection changes.
    pub fn book(&mut self) -> ServerBook<'_> {
        ServerBook {
            tracker: &mut self.tracker,
            prepared: &mut self.prepared,
        }
    }

    pub async fn connect(
        target: &ServerTarget,
        pool: &PoolKey,
        credentials: &Credentials,
        timeout: Duration,
    ) -> Result<ServerConn, ServerError> {
        tokio::time::timeout(timeout, Self::login(target, pool, credentials))
            .await
            .map_err(|_| ServerError::Timeout(timeout))?
    }

    async fn login(
        target: &ServerTarget,
        pool: &PoolKey,
        credentials: &Credentials,
    ) -> Result<ServerConn, ServerError> {
        let stream = target.open().await?;
        let mut conn = ServerConn {
            stream,
            read_buf: BytesMut::with_capacity(16 * 1024),
            params: HashMap::new(),
            settings: std::collections::BTreeMap::new(),
            synced: None,
            key: ServerKey {
                process_id: 0,
                secret_key: [0; 4],
            },
            prepared: ServerStatements::default(),
            tracker: Tracker::default(),
            info: std::sync::Arc::new(ServerInfo {
                id: NEXT_SERVER_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
                generation: Default::default(),
                connect_time: std::time::SystemTime::now(),
                remote_pid: 0,
                state: super::stats::ConnState::new(Activity::Login),
                socket: std::sync::Mutex::new(None),
            }),
            created: Instant::now(),
            generation: 0,
            reported_state: false,
            broken: false,
        };
        let mut out = BytesMut::new();
        startup::encode_startup_message(
            &mut out,
            0,
            &[("user", &pool.user), ("database", &pool.database)],
        );
        conn.stream.write_all(&out).await?;
        let mut exchange: Option<ClientExchange> = None;
        // Set by AuthenticationOk only after the server proved, in a verified SCRAM
        // server-final message, that it holds the role's ServerKey: a peer that just says
        // "ok" (a fake primary named in etcd, say) never gets a client's traffic.
        let mut authenticated = false;
        loop {
            let frame = conn.read_frame().await?;
            match backend::decode(&frame)? {
                BackendMessage::Authentication(Authentication::Ok) => {
                    if !exchange.as_ref().is_some_and(ClientExchange::is_complete) {
                        return Err(ServerError::Protocol(
                            "the server accepted the login without completing SCRAM \
                             authentication; refusing to use it"
                                .into(),
                        ));
                    }
                    authenticated = true;
                }
                BackendMessage::Authentication(Authentication::Sasl { mechanisms }) => {
                    if exchange.is_some() {
                        return Err(ServerError::Protocol("a second SASL request".into()));
                    }
                    if !mechanisms.iter().any(|m| m == scram::MECHANISM) {
                        return Err(ServerError::Protocol(format!(
                            "server offers no {}",
                            scram::MECHANISM
                        )));
                    }
                    let ex = ClientExchange::new(
                        credentials.client_key.clone(),
                        credentials.server_key,
                        scram::new_nonce(),
                    );
                    let mut out = BytesMut::new();
                    frontend::encode::sasl_initial_response(
                        &mut out,
                        scram::MECHANISM,
                        &ex.client_first_message(),
                    );
                    conn.stream.write_all(&out).await?;
                    exchange = Some(ex);
                }
                BackendMessage::Authentication(Authentication::SaslContinue { data }) => {
                    let ex = exchange
                        .as_mut()
                        .ok_or_else(|| ServerError::Protocol("SASLContinue before SASL".into()))?;
                    let reply = ex
                        .server_first(&data)
                        .map_err(|e| ServerError::Protocol(e.to_string()))?;
                    let mut out = BytesMut::new();
                    frontend::encode::sasl_response(&mut out, &reply);
                    conn.stream.write_all(&out).await?;
                }
                BackendMessage::Authentication(Authentication::SaslFinal { data }) => {
                    let ex = exchange
                        .as_mut()
                        .ok_or_else(|| ServerError::Protocol("SASLFinal before SASL".into()))?;
                    ex.server_final(&data)
                        .map_err(|e| ServerError::Protocol(e.to_string()))?;
                }
                BackendMessage::Authentication(other) => {
                    return Err(ServerError::Protocol(format!(
                        "unsupported authentication request {other:?}; tenants must use scram-sha-256"
                    )));
                }
                BackendMessage::ParameterStatus { name, value } => {
                    conn.params.insert(name, value);
                }
                BackendMessage::BackendKeyData {
                    process_id,
                    secret_key,
                } => {
                    let Ok(secret_key) = <[u8; 4]>::try_from(secret_key.as_ref()) else {
                        return Err(ServerError::Protocol(format!(
                            "BackendKeyData with a {}-byte secret under protocol 3.0",
                            secret_key.len()
                        )));
                    };
                    conn.key = ServerKey {
                        process_id,
                        secret_key,
                    };
                }
                BackendMessage::ErrorResponse(fields) => {
                    return Err(ServerError::Refused {
                        fields,
                        frame: frame.into_bytes(),
                    })
                }
                BackendMessage::ReadyForQuery { .. } => {
                    if !authenticated {
                        return Err(ServerError::Protocol(
                            "ReadyForQuery before authentication".into(),
                        ));
                    }
                    conn.info = std::sync::Arc::new(ServerInfo {
                        id: conn.info.id,
                        generation: Default::default(),
                        connect_time: std::time::SystemTime::now(),
                        remote_pid: conn.key.process_id,
                        state: super::stats::ConnState::new(Activity::Active),
                        socket: std::sync::Mutex::new(Some(conn.stream.as_raw_fd())),
                    });
                    return Ok(conn);
                }
                _ => {}
            }
        }
    }

    /// Reads one whole message (during login and internal queries).
    async fn read_frame(&mut self) -> Result<Frame, ServerError> {
        loop {
            if let Some(frame) = split_frame(&mut self.read_buf, MAX_BACKEND_MESSAGE)? {
                return Ok(frame);
            }
            if self.stream.read_buf(&mut self.read_buf).await? == 0 {
                self.broken = true;
                return Err(ServerError::Io(std::io::ErrorKind::UnexpectedEof.into()));
            }
        }
    }

    /// Runs `sql` (a check or reset query) and discards its results; errors if PostgreSQL
    /// reports one or the connection fails.
    pub async fn run_internal(&mut self, sql: &str) -> Result<(), ServerError> {
        let mut out = BytesMut::new();
        frontend::encode::query(&mut out, sql.as_bytes());
        if let Err(e) = self.stream.write_all(&out).await {
            self.broken = true;
            return Err(e.into());
        }
        let mut failure = None;
        loop {
            let frame = self.read_frame().await?;
            match frame.tag() {
                backend::tag::ERROR_RESPONSE => {
                    if let BackendMessage::ErrorResponse(fields) = backend::decode(&frame)? {
                        failure = Some(ServerError::Refused {
                            fields,
                            frame: frame.into_bytes(),
                        });
                    }
                }
                backend::tag::PARAMETER_STATUS => {
                    self.record_parameter(&frame);
                }
                backend::tag::READY_FOR_QUERY => break,
                _ => {}
            }
        }
        match failure {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    /// The pool's server_check_query before reuse after server_check_delay.
    pub async fn check(&mut self, sql: &str) -> Result<(), ServerError> {
        let result = tokio::time::timeout(Duration::from_secs(10), self.run_internal(sql))
            .await
            .unwrap_or(Err(ServerError::Timeout(Duration::from_secs(10))));
        if result.is_err() {
            self.broken = true;
        }
        result
    }

    /// Remembers a ParameterStatus the server sent; returns the (name, value) pair.
    pub fn record_parameter(&mut self, frame: &Frame) -> Option<(&str, &str)> {
        let Ok(BackendMessage::ParameterStatus { name, value }) = backend::decode(frame) else {
            return None;
        };
        if super::params::is_tracked(&name) {
            self.synced = None;
        } else if super::pin::reported_is_state(&name) {
            self.reported_state = true;
        }
        self.params.insert(name.clone(), value);
        self.params
            .get_key_value(&name)
            .map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// An idle connection has nothing to say; if it is readable, PostgreSQL closed it
    /// (pg_terminate_backend, restart) or sent a FATAL: not worth handing to a client.
    pub fn is_dead_now(&self) -> bool {
        let mut probe = [0u8; 1];
        !matches!(self.stream.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    }

    pub fn mark_broken(&mut self) {
        self.broken = true;
    }

    pub fn is_broken(&self) -> bool {
        self.broken
    }
}

#[cfg(test)]
#[path = "server_login_tests.rs"]
mod login_tests;
