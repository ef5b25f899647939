//! A new client connection up to ReadyForQuery: TLS negotiation, cancel requests, the
//! startup packet, SCRAM-SHA-256 against the role's verifier, and the first server login
//! for a new pool (so a bad database is reported like PostgreSQL reports it).

use std::net::IpAddr;
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::cancel::ClientInfo;
use super::pool_key::{Credentials, PoolKey};
use super::protocol::backend::encode as be;
use super::protocol::frontend;
use super::protocol::sql_state::SqlState;
use super::protocol::startup::{self, StartupPacket};
use super::protocol::{Frame, ProtocolError};
use super::scram::{self, ScramError, ServerExchange};
use super::server::ServerError;
use super::session::{fatal, send_fatal, AdminLevel, Counted, Fatal, Session};
use super::stats::Activity;
use super::stream::ClientStream;
use super::Pooler;

/// The pgbouncer-compatible admin console's database name.
pub const ADMIN_DATABASE: &str = "pgbouncer";

/// A new connection's task: log in, then serve the admin console, or hand the client
/// its login's replies and put it in a lounge.
pub async fn serve(pooler: Arc<Pooler>, stream: ClientStream) {
    let counted = Counted(pooler);
    let pooler = &counted.0;
    // Read from the config here, not kept across the login.
    let (max_client_conn, login_timeout) = {
        let config = pooler.config();
        (config.max_client_conn as usize, config.client_login_timeout)
    };
    if pooler.client_count.fetch_add(1, Ordering::Relaxed) >= max_client_conn {
        // Read the startup phase first (TLS included), so that the client can read the
        // reason instead of seeing a broken connection.
        let refuse = async {
            let mut buf = BytesMut::new();
            if let Ok(Some((mut stream, ..))) = negotiate(pooler, stream, &mut buf).await {
                let error = fatal(
                    SqlState::PROTOCOL_VIOLATION,
                    "no more connections allowed (max_client_conn)",
                );
                send_fatal(&mut stream, &error).await;
            }
        };
        let _ = Box::pin(tokio::time::timeout(Duration::from_secs(10), refuse)).await;
        return;
    }
    let login = async {
        let login = match login_timeout {
            Some(t) => tokio::time::timeout(t, login(pooler, stream))
                .await
                .unwrap_or(Ok(None)),
            None => login(pooler, stream).await,
        };
        match login {
            Ok(session) => session,
            Err((mut stream, error)) => {
                tracing::info!(code = %error.code, "client login failed: {}", error.message);
                send_fatal(&mut stream, &error).await;
                None
            }
        }
    };
    let Some(session) = Box::pin(login).await else {
        return;
    };
    if session.admin.is_some() {
        let id = session.info.cancel_key;
        Box::pin(super::admin::run(pooler, session)).await;
        pooler.unregister_client(id);
    } else {
        // From now on the client unregisters itself when it ends, whichever task or
        // lounge holds it then.
        super::client::start(counted, session).await;
    }
}

type LoginResult = Result<Option<Session>, (ClientStream, Fatal)>;

macro_rules! fail {
    ($stream:expr, $code:expr, $($msg:tt)*) => {
        return Err(($stream, fatal($code, format!($($msg)*))))
    };
}

async fn login(pooler: &Arc<Pooler>, stream: ClientStream) -> LoginResult {
    let mut buf = BytesMut::with_capacity(512);
    let Some((mut stream, minor, params)) = negotiate(pooler, stream, &mut buf).await? else {
        return Ok(None);
    };
    let config = pooler.config();
    let param = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let Some(user) = param("user").filter(|u| !u.is_empty()) else {
        fail!(
            stream,
            SqlState::INVALID_AUTHORIZATION_SPECIFICATION,
            "no PostgreSQL user name specified in startup packet"
        );
    };
    let database = param("database")
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| user.clone());
    let is_unix = matches!(stream, ClientStream::Unix(_));
    if config.client_tls == crate::config::ClientTls::Require && !stream.is_tls() && !is_unix {
        fail!(
            stream,
            SqlState::INVALID_AUTHORIZATION_SPECIFICATION,
            "SSL required"
        );
    }
    let unknown_options: Vec<&str> = params
        .iter()
        .map(|(k, _)| k.as_str())
        .filter(|k| k.starts_with("_pq_."))
        .collect();
    if minor > 0 || !unknown_options.is_empty() {
        let mut out = BytesMut::new();
        be::negotiate_protocol_version(&mut out, 0, &unknown_options);
        if stream.write_all(&out).await.is_err() {
            return Ok(None);
        }
    }

    let admin = if database == ADMIN_DATABASE {
        // Operators on the unix socket are trusted by their OS identity (peer), like
        // PgBouncer's auth_type=peer; everyone else proves a role's password first.
        let operator = is_unix && peer_is_operator(&stream, pooler);
        if operator {
            let mut out = BytesMut::new();
            be::authentication_ok(&mut out);
            if stream.write_all(&out).await.is_err() {
                return Ok(None);
            }
        } else {
            stream = authenticate(pooler, stream, &mut buf, &user).await?.0;
        }
        if operator || config.admin_users.contains(&user) {
            Some(AdminLevel::Admin)
        } else if config.stats_users.contains(&user) {
            Some(AdminLevel::Stats)
        } else {
            fail!(
                stream,
                SqlState::INVALID_AUTHORIZATION_SPECIFICATION,
                "not allowed"
            );
        }
    } else {
        None
    };

    let mut key = Arc::new(PoolKey { database, user });
    let mut admitted = None;
    if admin.is_none() {
        let (s, credentials) = authenticate(pooler, stream, &mut buf, &key.user).await?;
        stream = s;
        // DISABLE and SHUTDOWN WAIT_FOR_*, after authentication as PgBouncer does.
        if let Some(refusal) = pooler.console.refusal(&key.database) {
            fail!(stream, SqlState::PROTOCOL_VIOLATION, "{refusal}");
        }
        let pool = pooler.pool(&key);
        // PgBouncer 1.24's max_db_client_connections, after authentication like DISABLE.
        let Some(counted) = pool.db.admit_client() else {
            pooler.forget_unvalidated(&key);
            fail!(
                stream,
                SqlState::PROTOCOL_VIOLATION,
                "client connections exceeded (max_db_client_connections)"
            );
        };
        admitted = Some(counted);
        pool.set_credentials(credentials);
        // Shared with the pool: no per-client copy of the names.
        key = pool.key.clone();
        if !pool.validated.load(Ordering::Relaxed) {
            // The first login to a pool proves the pair valid, as PostgreSQL would at
            // connect time: a missing database or a pg_hba refusal reaches the client now.
            let wait = config.query_wait_timeout_for(&key.database);
            match Box::pin(pool.checkout(wait, pool.kills())).await {
                Ok(guard) => guard.release(true, std::time::Instant::now()),
                Err(super::pool::CheckoutError::Server(ServerError::Refused { frame, .. })) => {
                    pooler.forget_unvalidated(&key);
                    let _ = stream.write_all(&frame).await;
                    return Ok(None);
                }
                Err(e) => fail!(
                    stream,
                    SqlState::CONNECTION_FAILURE,
                    "could not connect to the database: {e}"
                ),
            }
        }
    }
    let info = pooler
        .clients
        .register(|cancel_key| client_info(pooler, &stream, &key, &params, cancel_key));
    Ok(Some(Session {
        stream,
        buf,
        key,
        startup_params: params,
        info,
        admin,
        admitted,
    }))
}

/// Startup phase: SSLRequest, GSSENCRequest, CancelRequest, then the StartupMessage.
async fn negotiate(
    pooler: &Arc<Pooler>,
    mut stream: ClientStream,
    buf: &mut BytesMut,
) -> Result<Option<(ClientStream, u16, Vec<(String, String)>)>, (ClientStream, Fatal)> {
    loop {
        let packet = loop {
            match startup::decode(buf, startup::MAX_STARTUP_PACKET_LENGTH) {
                Ok(Some(packet)) => break packet,
                Ok(None) => {}
                Err(ProtocolError::UnsupportedProtocolVersion { major, minor }) => fail!(
                    stream,
                    SqlState::FEATURE_NOT_SUPPORTED,
                    "unsupported frontend protocol {major}.{minor}: server supports 3.0 to 3.0"
                ),
                Err(e) => fail!(stream, SqlState::PROTOCOL_VIOLATION, "{e}"),
            }
            match stream.read_buf(buf).await {
                Ok(0) | Err(_) => return Ok(None),
                Ok(_) => {}
            }
        };
        match packet {
            StartupPacket::SslRequest => {
                let tcp = match (stream, &pooler.tls) {
                    (ClientStream::Tcp(tcp), Some(_)) if buf.is_empty() => tcp,
                    (other, _) => {
                        stream = other;
                        if stream
                            .write_all(&[startup::ENCRYPTION_REFUSED])
                            .await
                            .is_err()
                        {
                            return Ok(None);
                        }
                        continue;
                    }
                };
                let Some(acceptor) = &pooler.tls else {
                    return Ok(None);
                };
                let mut tcp = tcp;
                if tcp.write_all(&[startup::SSL_ACCEPTED]).await.is_err() {
                    return Ok(None);
                }
                match Box::pin(acceptor.accept(tcp)).await {
                    Ok(tls) => stream = ClientStream::Tls(Box::new(tls)),
                    Err(e) => {
                        tracing::info!("client TLS handshake failed: {e}");
                        return Ok(None);
                    }
                }
            }
            StartupPacket::GssEncRequest => {
                if stream
                    .write_all(&[startup::ENCRYPTION_REFUSED])
                    .await
                    .is_err()
                {
                    return Ok(None);
                }
            }
            StartupPacket::Cancel {
                process_id,
                secret_key,
            } => {
                forward_cancel(pooler, process_id, &secret_key).await;
                return Ok(None);
            }
            StartupPacket::Startup {
                protocol_minor,
                params,
            } => return Ok(Some((stream, protocol_minor, params))),
        }
    }
}

/// Sends PostgreSQL a cancel for the server connection now running that client's query.
async fn forward_cancel(pooler: &Pooler, process_id: i32, secret_key: &Bytes) {
    let Some(server) = pooler.clients.lookup(process_id, secret_key) else {
        return;
    };
    let mut out = BytesMut::new();
    startup::encode_cancel_request(&mut out, server.process_id, &server.secret_key);
    let open = tokio::time::timeout(Duration::from_secs(5), pooler.target.open());
    if let Ok(Ok(mut conn)) = open.await {
        let _ = conn.write_all(&out).await;
        // PostgreSQL closes the connection when done; wait so the cancel is delivered.
        let mut sink = [0u8; 1];
        let _ = tokio::time::timeout(Duration::from_secs(5), conn.read(&mut sink)).await;
    }
}

/// SCRAM-SHA-256 with the client; returns the recovered credentials for passthrough.
async fn authenticate(
    pooler: &Arc<Pooler>,
    mut stream: ClientStream,
    buf: &mut BytesMut,
    user: &str,
) -> Result<(ClientStream, Credentials), (ClientStream, Fatal)> {
    // The mechanisms do not depend on the role: they are offered first, and the verifier
    // is read while the client answers, so that a login waits once for both replies
    // instead of once for PostgreSQL's and once for the client's.
    let binding = match (stream.is_tls(), &pooler.channel_binding) {
        (true, Some(binding)) => Some(binding.clone()),
        _ => None,
    };
    let mut out = BytesMut::new();
    be::authentication_sasl(&mut out, scram::mechanisms(binding.is_some()));
    if stream.write_all(&out).await.is_err() {
        fail!(stream, SqlState::CONNECTION_FAILURE, "client went away");
    }
    let (secret, first) = tokio::join!(
        Box::pin(pooler.auth.secret(user)),
        read_password_message(&mut stream, buf)
    );
    let secret = match secret {
        Ok(secret) => secret,
        Err(e) => {
            tracing::error!(user, "look up the password verifier: {e:#}");
            fail!(
                stream,
                SqlState::CANNOT_CONNECT_NOW,
                "the database system is not accepting connections"
            );
        }
    };
    let first = match first {
        Ok(Some(frame)) => frame,
        Ok(None) => fail!(stream, SqlState::CONNECTION_FAILURE, "client went away"),
        Err(e) => fail!(stream, SqlState::PROTOCOL_VIOLATION, "{e}"),
    };
    let server_key = match &secret {
        scram::Secret::Real(verifier) => Some(verifier.server_key()),
        scram::Secret::Mock(_) => None,
    };
    let mut exchange = ServerExchange::with_secret(secret, scram::new_nonce());
    if let Some(binding) = binding {
        exchange = exchange.with_channel_binding(binding);
    }
    let server_first = frontend::decode_sasl_initial_response(first.body())
        .map_err(|e| e.to_string())
        .and_then(|r| {
            exchange
                .client_first(r.mechanism, r.data.unwrap_or_default())
                .map_err(|e| e.to_string())
        });
    let server_first = match server_first {
        Ok(m) => m,
        Err(e) => fail!(
            stream,
            SqlState::PROTOCOL_VIOLATION,
            "malformed SCRAM message: {e}"
        ),
    };
    out.clear();
    be::authentication_sasl_continue(&mut out, &server_first);
    if stream.write_all(&out).await.is_err() {
        fail!(stream, SqlState::CONNECTION_FAILURE, "client went away");
    }
    let last = match read_password_message(&mut stream, buf).await {
        Ok(Some(frame)) => frame,
        Ok(None) => fail!(stream, SqlState::CONNECTION_FAILURE, "client went away"),
        Err(e) => fail!(stream, SqlState::PROTOCOL_VIOLATION, "{e}"),
    };
    let (server_final, client_key) = match exchange.client_final(last.body()) {
        Ok(done) => done,
        Err(ScramError::WrongPassword) => {
            fail!(
                stream,
                SqlState::INVALID_PASSWORD,
                "password authentication failed for user \"{user}\""
            )
        }
        Err(e) => fail!(
            stream,
            SqlState::PROTOCOL_VIOLATION,
            "malformed SCRAM message: {e}"
        ),
    };
    let Some(server_key) = server_key else {
        fail!(
            stream,
            SqlState::INVALID_PASSWORD,
            "password authentication failed for user \"{user}\""
        );
    };
    out.clear();
    be::authentication_sasl_final(&mut out, &server_final);
    be::authentication_ok(&mut out);
    if stream.write_all(&out).await.is_err() {
        fail!(stream, SqlState::CONNECTION_FAILURE, "client went away");
    }
    Ok((
        stream,
        Credentials {
            client_key,
            server_key,
        },
    ))
}

/// Reads the client's next SASL message. Before authentication nothing else is framed:
/// another tag or an oversized message is a protocol error decided from the header, so an
/// unauthenticated client never makes the pooler buffer more than the auth limit.
async fn read_password_message(
    stream: &mut ClientStream,
    buf: &mut BytesMut,
) -> Result<Option<Frame>, ProtocolError> {
    loop {
        if let Some(frame) = frontend::split_auth_response(buf)? {
            return Ok(Some(frame));
        }
        match stream.read_buf(buf).await {
            Ok(0) | Err(_) => return Ok(None),
            Ok(_) => {}
        }
    }
}

/// On the unix socket, the agent's own OS user, root, and the PostgreSQL OS user (the
/// socket directory's owner) are the platform's operators.
fn peer_is_operator(stream: &ClientStream, pooler: &Pooler) -> bool {
    let ClientStream::Unix(unix) = stream else {
        return false;
    };
    let Ok(cred) = unix.peer_cred() else {
        return false;
    };
    let uid = cred.uid();
    let postgres_uid = std::fs::metadata(&pooler.target.socket_dir)
        .map(|m| m.uid())
        .ok();
    uid == 0 || uid == nix::unistd::Uid::effective().as_raw() || Some(uid) == postgres_uid
}

fn client_info(
    pooler: &Pooler,
    stream: &ClientStream,
    key: &Arc<PoolKey>,
    params: &[(String, String)],
    cancel_key: super::cancel::ClientKey,
) -> ClientInfo {
    let (addr, port, local_addr, local_port) = match stream {
        ClientStream::Tcp(s) => addrs(s),
        ClientStream::Tls(s) => addrs(s.get_ref().0),
        ClientStream::Unix(_) => (None, 0, None, pooler.config().listen_port),
    };
    ClientInfo {
        id: pooler.next_id(),
        key: key.clone(),
        addr,
        port,
        local_addr,
        local_port,
        connect_time: SystemTime::now(),
        tls: stream.is_tls(),
        application_name: params
            .iter()
            .find(|(k, _)| k == "application_name")
            .map(|(_, v)| v.as_str())
            .unwrap_or_default()
            .into(),
        state: super::stats::ConnState::new(Activity::Idle),
        cancel_key,
        cancel: Default::default(),
        killed: Default::default(),
        pinned: Default::default(),
    }
}

fn addrs(s: &tokio::net::TcpStream) -> (Option<IpAddr>, u16, Option<IpAddr>, u16) {
    let peer = s.peer_addr().ok();
    let local = s.local_addr().ok();
    (
        peer.map(|a| a.ip()),
        peer.map_or(0, |a| a.port()),
        local.map(|a| a.ip()),
        local.map_or(0, |a| a.port()),
    )
}
