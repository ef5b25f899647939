//! Serves a router over HTTP/1 (hyper, by hand rather than `axum::serve`) so that no
//! client holds the API for free: a connection must send its headers (and finish its
//! TLS handshake) within `header_timeout`, which also closes idle keep-alive
//! connections; its body within `body_timeout` and `MAX_BODY_BYTES`; and read its
//! response without stalling for `body_timeout`. At most `max_connections` are served
//! at once (the rest wait in the kernel's backlog) and `max_connections_per_address` per
//! client address (IPv6 by /64); more are closed at once. Accept errors such as EMFILE
//! back off and are logged once per interval, not once per error (`accept_errors.rs`,
//! shared with the pooler).

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv6Addr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::accept_errors::AcceptErrors;
use crate::config::ApiConfig;

/// The largest request body any endpoint takes (they take small JSON documents).
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// The largest request head (request line and headers) read before answering 431.
const MAX_HEAD_BYTES: usize = 64 << 10;

/// How often a repeated problem (refused addresses) reaches the log.
const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// The bounds a listener serves under.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_connections: usize,
    pub max_connections_per_address: u32,
    pub header_timeout: Duration,
    pub body_timeout: Duration,
}

impl Limits {
    pub fn from_config(api: &ApiConfig) -> Limits {
        Limits {
            max_connections: api.max_connections as usize,
            max_connections_per_address: api.max_connections_per_address,
            header_timeout: api.header_timeout,
            body_timeout: api.body_timeout,
        }
    }
}

/// Serves `router` on `listener` until `shutdown`, then lets in-flight requests finish.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Option<TlsAcceptor>,
    limits: Limits,
    shutdown: CancellationToken,
    what: &'static str,
) -> anyhow::Result<()> {
    let router = router.layer(axum::middleware::from_fn_with_state(
        limits.body_timeout,
        bounded_body,
    ));
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let per_address = Arc::new(PerAddress::new(limits.max_connections_per_address));
    let connections = TaskTracker::new();
    let mut accept_errors = AcceptErrors::new(what);
    let mut refusals = Throttle::default();
    loop {
        let permit = tokio::select! {
            permit = slots.clone().acquire_owned() => permit?,
            () = shutdown.cancelled() => break,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shutdown.cancelled() => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => {
                accept_errors.succeeded();
                accepted
            }
            Err(e) => {
                let pause = accept_errors.failed(&e, Instant::now());
                tokio::select! {
                    () = tokio::time::sleep(pause) => continue,
                    () = shutdown.cancelled() => break,
                }
            }
        };
        let Some(address_slot) = per_address.take(peer.ip()) else {
            if let Some(repeats) = refusals.ready() {
                tracing::warn!(
                    listener = what,
                    client = %peer.ip(),
                    repeats,
                    "closed a connection: the client address holds {} already \
                     (api.max_connections_per_address)",
                    limits.max_connections_per_address
                );
            }
            continue;
        };
        let _ = stream.set_nodelay(true);
        let connection = Connection {
            router: router.clone(),
            limits: limits.clone(),
            shutdown: shutdown.clone(),
        };
        let tls = tls.clone();
        connections.spawn(async move {
            let _slots = (permit, address_slot);
            match tls {
                None => connection.serve(stream).await,
                Some(acceptor) => {
                    let handshake = acceptor.accept(stream);
                    match tokio::time::timeout(connection.limits.header_timeout, handshake).await {
                        Ok(Ok(stream)) => connection.serve(stream).await,
                        Ok(Err(e)) => tracing::debug!(client = %peer, "TLS handshake failed: {e}"),
                        Err(_) => tracing::debug!(client = %peer, "TLS handshake timed out"),
                    }
                }
            }
        });
    }
    connections.close();
    connections.wait().await;
    Ok(())
}

struct Connection {
    router: Router,
    limits: Limits,
    shutdown: CancellationToken,
}

impl Connection {
    async fn serve<S>(self, stream: S)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let io = TokioIo::new(WriteStallLimit::new(stream, self.limits.body_timeout));
        let service = hyper_util::service::TowerToHyperService::new(self.router);
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(self.limits.header_timeout)
            .max_buf_size(MAX_HEAD_BYTES);
        let connection = builder.serve_connection(io, service);
        tokio::pin!(connection);
        let result = tokio::select! {
            result = connection.as_mut() => result,
            () = self.shutdown.cancelled() => {
                connection.as_mut().graceful_shutdown();
                connection.await
            }
        };
        if let Err(e) = result {
            tracing::debug!("API connection ended: {e}");
        }
    }
}

/// Reads the whole request body within `limit` and `MAX_BODY_BYTES` before any handler
/// (or the token check) runs, so no handler waits on a slow client.
async fn bounded_body(State(limit): State<Duration>, request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return refuse(StatusCode::PAYLOAD_TOO_LARGE, "request body too large");
    }
    match tokio::time::timeout(limit, axum::body::to_bytes(body, MAX_BODY_BYTES)).await {
        Ok(Ok(bytes)) => {
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        Ok(Err(e)) => {
            let too_large = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            if too_large {
                refuse(StatusCode::PAYLOAD_TOO_LARGE, "request body too large")
            } else {
                refuse(StatusCode::BAD_REQUEST, "cannot read the request body")
            }
        }
        Err(_) => refuse(
            StatusCode::REQUEST_TIMEOUT,
            "the request body did not arrive in time (api.body_timeout_seconds)",
        ),
    }
}

/// An error answer after which the connection closes (the body may be half read).
fn refuse(status: StatusCode, message: &str) -> Response {
    (
        status,
        [(header::CONNECTION, "close")],
        axum::Json(serde_json::json!({ "error": message })),
    )
        .into_response()
}

/// Lets one occurrence of a repeated event through per `LOG_INTERVAL`, counting the rest.
#[derive(Default)]
pub(crate) struct Throttle {
    last: Option<Instant>,
    suppressed: u64,
}

impl Throttle {
    /// `Some(events suppressed since the last one logged)` when this one may be logged.
    pub(crate) fn ready(&mut self) -> Option<u64> {
        let now = Instant::now();
        if self.last.is_some_and(|last| now - last < LOG_INTERVAL) {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

/// Connections per client address. An entry lives only while its address has
/// connections, so the map is bounded by `max_connections`.
struct PerAddress {
    limit: u32,
    counts: Mutex<HashMap<IpAddr, u32>>,
}

/// One connection's place in `PerAddress`; given back on drop.
struct AddressSlot {
    map: Arc<PerAddress>,
    key: IpAddr,
}

impl PerAddress {
    fn new(limit: u32) -> PerAddress {
        PerAddress {
            limit,
            counts: Mutex::default(),
        }
    }

    fn take(self: &Arc<Self>, ip: IpAddr) -> Option<AddressSlot> {
        let key = address_key(ip);
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let count = counts.entry(key).or_insert(0);
        if *count >= self.limit {
            return None;
        }
        *count += 1;
        Some(AddressSlot {
            map: self.clone(),
            key,
        })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut counts = self.map.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = counts.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

/// IPv4 as is (also when mapped into IPv6); IPv6 by its /64, which one host usually
/// holds whole.
fn address_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
    }
}

/// Fails writes that make no progress for `limit`: a client that stops reading its
/// response cannot hold the connection. Reads are bounded by hyper's header timeout and
/// `bounded_body`; a request whose handler runs long reads and writes nothing, so the
/// limit only starts when a write is refused.
struct WriteStallLimit<S> {
    inner: S,
    limit: Duration,
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<S> WriteStallLimit<S> {
    fn new(inner: S, limit: Duration) -> WriteStallLimit<S> {
        WriteStallLimit {
            inner,
            limit,
            stalled: None,
        }
    }

    fn check<T>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if poll.is_ready() {
            self.stalled = None;
            return poll;
        }
        let limit = self.limit;
        let stalled = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match stalled.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client stopped reading its response",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteStallLimit<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteStallLimit<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.check(cx, poll)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_flush(cx);
        self.check(cx, poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.check(cx, poll)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn addresses_are_counted_per_host_and_given_back() {
        let map = Arc::new(PerAddress::new(2));
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let first = map.take(a).unwrap();
        let _second = map.take(a).unwrap();
        assert!(map.take(a).is_none());
        // The same host over IPv4-mapped IPv6 is the same address.
        assert!(map.take("::ffff:10.0.0.1".parse().unwrap()).is_none());
        assert!(map.take("10.0.0.2".parse().unwrap()).is_some());
        drop(first);
        assert!(map.take(a).is_some());
        // One /64 is one client.
        let _v6 = map.take("2001:db8::1".parse().unwrap()).unwrap();
        let _v6b = map.take("2001:db8::2:3".parse().unwrap()).unwrap();
        assert!(map.take("2001:db8::ffff".parse().unwrap()).is_none());
        assert!(map.take("2001:db8:0:1::1".parse().unwrap()).is_some());
    }

    #[test]
    fn entries_do_not_outlive_their_connections() {
        let map = Arc::new(PerAddress::new(5));
        let slots: Vec<_> = (0..100u8)
            .filter_map(|i| map.take(IpAddr::from([10, 0, 0, i])))
            .collect();
        assert_eq!(map.counts.lock().unwrap().len(), 100);
        drop(slots);
        assert!(map.counts.lock().unwrap().is_empty());
    }

    #[test]
    fn a_repeated_event_is_logged_once_per_interval() {
        let mut throttle = Throttle::default();
        assert_eq!(throttle.ready(), Some(0));
        for _ in 0..1000 {
            assert_eq!(throttle.ready(), None);
        }
        throttle.last = Some(Instant::now() - LOG_INTERVAL);
        assert_eq!(throttle.ready(), Some(1000));
    }

    fn limits(max_connections: usize) -> Limits {
        Limits {
            max_connections,
            max_connections_per_address: 100,
            header_timeout: Duration::from_millis(500),
            body_timeout: Duration::from_millis(500),
        }
    }

    async fn start(limits: Limits) -> (std::net::SocketAddr, CancellationToken) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = Router::new()
            .route("/", axum::routing::get(|| async { "ok" }))
            .route("/echo", axum::routing::post(|body: String| async { body }))
            .route("/big", axum::routing::get(|| async { vec![b'x'; BIG] }));
        let shutdown = CancellationToken::new();
        tokio::spawn(serve(
            listener,
            router,
            None,
            limits,
            shutdown.clone(),
            "test",
        ));
        (addr, shutdown)
    }

    /// Sends `request` and reads until the server closes; `None` if it did not close
    /// within `within`.
    async fn exchange(
        addr: std::net::SocketAddr,
        request: &[u8],
        within: Duration,
    ) -> Option<String> {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.write_all(request).await.unwrap();
        let mut answer = Vec::new();
        match tokio::time::timeout(within, stream.read_to_end(&mut answer)).await {
            Ok(_) => Some(String::from_utf8_lossy(&answer).into_owned()),
            Err(_) => None,
        }
    }

    #[tokio::test]
    async fn half_sent_heads_and_bodies_are_cut_off() {
        let (addr, shutdown) = start(limits(10)).await;
        let started = Instant::now();
        // A request line and no end of headers: closed after the header timeout.
        let answer = exchange(
            addr,
            b"GET / HTTP/1.1\r\nHost: x\r\n",
            Duration::from_secs(5),
        )
        .await
        .expect("closed by the server");
        assert!(started.elapsed() >= Duration::from_millis(400));
        assert!(!answer.contains("200 OK"), "{answer}");
        // A body that never arrives whole: 408, then closed.
        let answer = exchange(
            addr,
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc",
            Duration::from_secs(5),
        )
        .await
        .expect("closed by the server");
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        // A body over the limit is refused before it is read.
        let answer = exchange(
            addr,
            format!(
                "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
                MAX_BODY_BYTES + 1
            )
            .as_bytes(),
            Duration::from_secs(5),
        )
        .await
        .expect("closed by the server");
        assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
        // An idle keep-alive connection is closed too.
        let answer = exchange(
            addr,
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
            Duration::from_secs(5),
        )
        .await
        .expect("closed by the server");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        shutdown.cancel();
    }

    const BIG: usize = 64 << 20;

    #[tokio::test]
    async fn a_client_that_stops_reading_is_cut_off() {
        let (addr, shutdown) = start(limits(10)).await;
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        // Far longer than the limit (500 ms) with the socket buffers full.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let mut answer = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
            .await
            .expect("the server closed the connection");
        assert!(
            read.is_err() || answer.len() < BIG,
            "the whole answer arrived: the stalled writer was not cut off"
        );
        shutdown.cancel();
    }

    #[tokio::test]
    async fn the_connection_cap_holds_further_clients_until_a_slot_frees() {
        let (addr, shutdown) = start(limits(2)).await;
        let mut holders = Vec::new();
        for _ in 0..2 {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
            holders.push(s);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let started = Instant::now();
        let answer = exchange(
            addr,
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            Duration::from_secs(5),
        )
        .await
        .expect("served once a slot freed");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        // It waited for the holders' header timeout.
        assert!(
            started.elapsed() >= Duration::from_millis(300),
            "{:?}",
            started.elapsed()
        );
        shutdown.cancel();
    }
}
