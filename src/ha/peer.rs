//! Requests between the agents of one cluster, authenticated by the cluster secret.
//!
//! No bearer token travels: each request carries an HMAC (key derived from the cluster
//! secret) over the method, path and query, the SHA-256 of the body, the sender's and
//! the receiver's names, a timestamp and a random nonce. The receiver accepts it within
//! [`WINDOW`] of its own clock and only once (nonces it has seen are remembered for the
//! window), so a captured request is worth nothing later, nor at another node.
//!
//! Requests go only to members whose record in etcd verified (`keys.rs`), never follow
//! redirects, and reach an https API only if its certificate is the one pinned in that
//! verified record.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use axum::http::HeaderMap;
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};

use super::keys::MemberRecord;
use super::secret::{ClusterSecret, Purpose};
use super::Node;

/// How far a request's timestamp may be from the receiver's clock.
pub const WINDOW: Duration = Duration::from_secs(30);

pub const FROM: &str = "x-pgplatform-from";
pub const TIME: &str = "x-pgplatform-time";
pub const NONCE: &str = "x-pgplatform-nonce";
pub const SIGNATURE: &str = "x-pgplatform-signature";

/// Signed request bodies are small JSON documents.
pub const MAX_BODY: usize = 1024 * 1024;

/// Remembered nonces are bounded; only requests with a valid signature get here.
const MAX_NONCES: usize = 100_000;

/// This node's side of peer authentication: the nonces seen lately, the forged records
/// already reported, and the pin of this node's own API certificate.
#[derive(Default)]
pub struct Peers {
    seen: Mutex<HashMap<String, i64>>,
    reported: Mutex<HashMap<String, i64>>,
    api_cert_sha256: OnceLock<String>,
}

impl Peers {
    /// Pins this node's API certificate (DER) in the member record it publishes.
    pub fn set_api_certificate(&self, der: &[u8]) {
        let _ = self.api_cert_sha256.set(sha256_hex(der));
    }

    pub fn api_cert_sha256(&self) -> Option<String> {
        self.api_cert_sha256.get().cloned()
    }

    /// Logs each forged member record once per version of its key; forgets keys that
    /// are gone.
    pub fn report_forged(&self, forged: &[super::keys::Forged]) {
        let mut reported = lock(&self.reported);
        reported.retain(|key, _| forged.iter().any(|f| f.key == *key));
        for f in forged {
            if reported.insert(f.key.clone(), f.mod_revision) != Some(f.mod_revision) {
                tracing::warn!(
                    key = %f.key,
                    "ignoring an untrusted member record in etcd: {}; nothing is sent \
                     to the addresses it names",
                    f.why
                );
            }
        }
    }

    /// Records `nonce` (sent at `time`); false if it was seen already.
    fn first_use(&self, nonce: &str, time: i64, now: i64) -> bool {
        let mut seen = lock(&self.seen);
        let horizon = WINDOW.as_secs() as i64;
        if seen.len() >= MAX_NONCES / 2 {
            seen.retain(|_, t| (now - *t).abs() <= horizon);
        }
        if seen.len() >= MAX_NONCES || seen.contains_key(nonce) {
            return false;
        }
        seen.insert(nonce.to_owned(), time);
        true
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// What the signature covers, one field a line (none may contain a newline).
fn signed_text(r: &Request<'_>, time: i64, nonce: &str) -> Vec<u8> {
    format!(
        "pgplatform-request-v1\n{}\n{}\n{}\n{}\n{}\n{time}\n{nonce}",
        r.method,
        r.path_and_query,
        sha256_hex(r.body),
        r.from,
        r.to
    )
    .into_bytes()
}

/// What a request is, for signing: who sends it to whom, and what it asks.
pub struct Request<'a> {
    pub from: &'a str,
    pub to: &'a str,
    pub method: &'a str,
    pub path_and_query: &'a str,
    pub body: &'a [u8],
}

/// The headers that sign `request`, made at `time` (unix seconds; tests use an old time
/// to show what a late replay looks like).
pub fn sign_at(
    secret: &ClusterSecret,
    request: &Request<'_>,
    time: i64,
) -> Vec<(&'static str, String)> {
    let mut bytes = [0u8; 18];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let nonce = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let text = signed_text(request, time, &nonce);
    vec![
        (FROM, request.from.to_owned()),
        (TIME, time.to_string()),
        (NONCE, nonce),
        (SIGNATURE, secret.sign(Purpose::Request, &text)),
    ]
}

pub fn sign(secret: &ClusterSecret, request: &Request<'_>) -> Vec<(&'static str, String)> {
    sign_at(secret, request, unix_now())
}

/// Whether the request carries a peer signature at all.
pub fn is_signed(headers: &HeaderMap) -> bool {
    headers.contains_key(SIGNATURE)
}

/// Checks a signed request addressed to `me`; the sender's name when it verifies.
pub fn verify(
    secret: &ClusterSecret,
    me: &str,
    peers: &Peers,
    method: &str,
    path_and_query: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> anyhow::Result<String> {
    let header = |name: &str| -> anyhow::Result<&str> {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.contains('\n'))
            .with_context(|| format!("the signed request has no {name} header"))
    };
    let (from, time, nonce, signature) = (
        header(FROM)?,
        header(TIME)?,
        header(NONCE)?,
        header(SIGNATURE)?,
    );
    let time: i64 = time.parse().context("the request's time is not a number")?;
    let now = unix_now();
    if (now - time).abs() > WINDOW.as_secs() as i64 {
        bail!(
            "the request from {from} was signed {}s from now, outside the {}s window (replayed, or clocks apart)",
            time - now,
            WINDOW.as_secs()
        );
    }
    let request = Request {
        from,
        to: me,
        method,
        path_and_query,
        body,
    };
    if !secret.verify(
        Purpose::Request,
        &signed_text(&request, time, nonce),
        signature,
    ) {
        bail!("the request's signature does not verify with the cluster secret");
    }
    if !peers.first_use(nonce, time, now) {
        bail!("the request from {from} was already received once (replayed)");
    }
    Ok(from.to_owned())
}

/// A signed request to `member`'s agent (a verified member record). https only with the
/// certificate the record pins.
pub async fn call(
    node: &Node,
    member: &MemberRecord,
    method: reqwest::Method,
    path_and_query: &str,
    body: Vec<u8>,
    timeout: Duration,
) -> anyhow::Result<reqwest::Response> {
    let from = Sender {
        secret: &node.secret,
        name: &node.config.name,
    };
    call_as(&from, member, method, path_and_query, body, timeout).await
}

/// Who signs a request: a member's name and the cluster secret.
pub struct Sender<'a> {
    pub secret: &'a ClusterSecret,
    pub name: &'a str,
}

/// As `call`, for `from`.
pub async fn call_as(
    from: &Sender<'_>,
    member: &MemberRecord,
    method: reqwest::Method,
    path_and_query: &str,
    body: Vec<u8>,
    timeout: Duration,
) -> anyhow::Result<reqwest::Response> {
    let base = member.api_url.trim_end_matches('/');
    let mut builder = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(3)))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy();
    if base.starts_with("https://") {
        let pin = member
            .api_cert_sha256
            .as_deref()
            .and_then(crate::tls_pin::parse_sha256_hex)
            .with_context(|| {
                format!(
                    "{}'s member record names an https API but pins no certificate",
                    member.name
                )
            })?;
        // Any certificate but the pinned one (the agents' are self-signed) is refused.
        builder = builder.use_preconfigured_tls(crate::tls_pin::client_config(
            pin,
            "the agent's certificate is not the one its member record pins".into(),
        )?);
    } else if !base.starts_with("http://") {
        bail!("{}'s API URL {base} is not http(s)", member.name);
    }
    let http = builder.build().context("build the HTTP client")?;
    let mut request = http
        .request(method.clone(), format!("{base}{path_and_query}"))
        .header(reqwest::header::CONTENT_TYPE, "application/json");
    let signed = Request {
        from: from.name,
        to: &member.name,
        method: method.as_str(),
        path_and_query,
        body: &body,
    };
    for (name, value) in sign(from.secret, &signed) {
        request = request.header(name, value);
    }
    request
        .body(body)
        .send()
        .await
        .with_context(|| format!("{}: {path_and_query}", member.name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(signed: Vec<(&'static str, String)>) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in signed {
            map.insert(name, value.parse().unwrap());
        }
        map
    }

    #[test]
    fn a_signed_request_verifies_once_and_only_as_signed() {
        let dir = tempfile::tempdir().unwrap();
        let secret = ClusterSecret::load(&dir.path().join("s"), true).unwrap();
        let other = ClusterSecret::load(&dir.path().join("o"), true).unwrap();
        let peers = Peers::default();
        let request = Request {
            from: "a",
            to: "b",
            method: "POST",
            path_and_query: "/pooler/pause",
            body: b"{}",
        };
        let signed = headers(sign(&secret, &request));
        let check = |me: &str, method: &str, path: &str, body: &[u8], h: &HeaderMap| {
            verify(&secret, me, &peers, method, path, h, body)
        };
        // Altered in any covered part: refused (and the nonce is not used up).
        assert!(check("c", "POST", "/pooler/pause", b"{}", &signed).is_err());
        assert!(check("b", "GET", "/pooler/pause", b"{}", &signed).is_err());
        assert!(check("b", "POST", "/pooler/resume", b"{}", &signed).is_err());
        assert!(check("b", "POST", "/pooler/pause", b"{ }", &signed).is_err());
        assert_eq!(
            check("b", "POST", "/pooler/pause", b"{}", &signed).unwrap(),
            "a"
        );
        let again = check("b", "POST", "/pooler/pause", b"{}", &signed).unwrap_err();
        assert!(again.to_string().contains("replayed"), "{again}");
        // Old, or signed with another secret.
        let old = headers(sign_at(&secret, &request, unix_now() - 31));
        let e = check("b", "POST", "/pooler/pause", b"{}", &old).unwrap_err();
        assert!(e.to_string().contains("window"), "{e}");
        let foreign = headers(sign(&other, &request));
        assert!(check("b", "POST", "/pooler/pause", b"{}", &foreign).is_err());
    }
}
