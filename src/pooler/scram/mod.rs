//! SCRAM-SHA-256 (RFC 5802, RFC 7677) as PostgreSQL speaks it, in both roles the pooler plays:
//! [`ServerExchange`] authenticates a client against the role's stored [`Verifier`], and
//! [`ClientExchange`] logs in to PostgreSQL with the [`ClientKey`] that exchange recovered, so
//! the pooler never needs the plaintext password (SCRAM passthrough, as PgBouncer does it).
//!
//! Pure: no I/O, and nonces are passed in so tests are deterministic. Message formats and
//! PostgreSQL's deviations (the username in client-first is ignored, channel binding only with
//! `-PLUS`): <https://www.postgresql.org/docs/current/sasl-authentication.html>.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The mechanism the pooler offers everywhere; on TLS it offers `-PLUS` (channel binding
/// `tls-server-end-point`) first.
pub const MECHANISM: &str = "SCRAM-SHA-256";
pub const MECHANISM_PLUS: &str = "SCRAM-SHA-256-PLUS";

/// PostgreSQL's default `scram_iterations`, used for mock exchanges so that they look like the
/// verifiers PostgreSQL creates.
pub const DEFAULT_ITERATIONS: u32 = 4096;

/// `SCRAM_DEFAULT_SALT_LEN` in PostgreSQL's src/include/common/scram-common.h.
const MOCK_SALT_LENGTH: usize = 16;

/// The gs2 headers PostgreSQL accepts without `-PLUS`: "n" (client does not support channel
/// binding) and "y" (client does, but thinks the server does not). Their base64 forms are what
/// the client must echo in `c=`: `biws` and `eSws`.
const GS2_NO_BINDING: &[u8] = b"n,,";
const GS2_BINDING_UNUSED: &[u8] = b"y,,";
/// The gs2 header of -PLUS with the only binding type PostgreSQL (and the pooler) supports.
const GS2_TLS_SERVER_END_POINT: &[u8] = b"p=tls-server-end-point,,";

type Key = [u8; 32];

mod binding;
mod client;
mod server;
#[cfg(test)]
mod tests;

pub use self::binding::tls_server_end_point;
pub use self::client::ClientExchange;
pub use self::server::{mechanisms, ServerExchange};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScramError {
    /// The proof did not match (or the role does not exist): the client gets `28P01`.
    #[error("password authentication failed")]
    WrongPassword,
    /// A malformed or out-of-order message: the client gets `08P01`.
    #[error("SCRAM protocol violation: {0}")]
    Protocol(String),
}

fn violation(problem: &str) -> ScramError {
    ScramError::Protocol(problem.to_owned())
}

/// A role's stored SCRAM secret, as in `pg_authid.rolpassword`:
/// `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>` (base64 fields).
#[derive(Clone, PartialEq, Eq)]
pub struct Verifier {
    iterations: u32,
    salt: Vec<u8>,
    stored_key: Key,
    server_key: Key,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// Parses PostgreSQL's stored format; `None` for anything else (an MD5 hash, plaintext).
    pub fn parse(rolpassword: &str) -> Option<Verifier> {
        let rest = rolpassword.strip_prefix("SCRAM-SHA-256$")?;
        let (iterations_salt, keys) = rest.split_once('$')?;
        let (iterations, salt) = iterations_salt.split_once(':')?;
        let (stored_key, server_key) = keys.split_once(':')?;
        Some(Verifier {
            iterations: iterations.parse().ok().filter(|&i| i > 0)?,
            salt: BASE64.decode(salt).ok().filter(|s| !s.is_empty())?,
            stored_key: BASE64.decode(stored_key).ok()?.try_into().ok()?,
            server_key: BASE64.decode(server_key).ok()?.try_into().ok()?,
        })
    }

    /// Derives the verifier of `password`. PostgreSQL first normalizes passwords with SASLprep,
    /// which leaves printable ASCII unchanged; other passwords must be normalized by the caller.
    #[cfg(test)]
    pub fn from_password(password: &[u8], salt: &[u8], iterations: u32) -> Verifier {
        let salted_password = hi(password, salt, iterations);
        Verifier {
            iterations,
            salt: salt.to_vec(),
            stored_key: sha256(&hmac(&salted_password, b"Client Key")),
            server_key: hmac(&salted_password, b"Server Key"),
        }
    }

    /// The stored format [`Verifier::parse`] reads.
    #[cfg(test)]
    pub fn to_rolpassword(&self) -> String {
        format!(
            "SCRAM-SHA-256${}:{}${}:{}",
            self.iterations,
            BASE64.encode(&self.salt),
            BASE64.encode(self.stored_key),
            BASE64.encode(self.server_key)
        )
    }

    /// What [`ClientExchange`] needs besides the client key.
    pub fn server_key(&self) -> Key {
        self.server_key
    }
}

/// What a login is checked against: the role's verifier, or for a role that does not exist,
/// cannot log in or has no SCRAM secret, a made-up one (like PostgreSQL's `scram_mock_salt`),
/// so the exchange runs the same way, takes as long, and fails at the proof: probing cannot
/// tell unknown roles from wrong passwords.
#[derive(Clone, Debug)]
pub enum Secret {
    Real(Verifier),
    Mock(Verifier),
}

impl Secret {
    pub fn verifier(&self) -> &Verifier {
        match self {
            Secret::Real(verifier) | Secret::Mock(verifier) => verifier,
        }
    }
}

/// The key from which mock verifiers are derived. Kept on disk so that a role's fake salt is
/// the same across restarts, as a real role's salt is; nobody without the file can predict it.
#[derive(Clone)]
pub struct MockKey(Key);

impl MockKey {
    pub fn new(bytes: Key) -> Self {
        MockKey(bytes)
    }

    /// The made-up verifier of `username`: the same for the same name and key, and shaped as
    /// PostgreSQL's own (4096 iterations, a 16-byte salt).
    pub fn mock(&self, username: &str) -> Secret {
        let derive = |purpose: &[u8]| hmac(&self.0, &[purpose, username.as_bytes()].concat());
        Secret::Mock(Verifier {
            iterations: DEFAULT_ITERATIONS,
            salt: derive(b"salt:")[..MOCK_SALT_LENGTH].to_vec(),
            stored_key: derive(b"stored-key:"),
            server_key: derive(b"server-key:"),
        })
    }
}

impl std::fmt::Debug for MockKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MockKey(..)")
    }
}

/// `ClientKey = HMAC(SaltedPassword, "Client Key")`: recovered from a client's proof, it lets
/// the pooler log in as that role without knowing the password. As good as a password for
/// that purpose, so it is never printed.
#[derive(Clone)]
pub struct ClientKey(Key);

impl ClientKey {
    #[cfg(test)]
    pub fn new(bytes: Key) -> Self {
        ClientKey(bytes)
    }

    pub fn as_bytes(&self) -> &Key {
        &self.0
    }
}

impl PartialEq for ClientKey {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl Eq for ClientKey {}

impl std::fmt::Debug for ClientKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientKey(..)")
    }
}

/// A fresh server or client nonce: 18 random bytes in base64, as PostgreSQL makes them.
pub fn new_nonce() -> String {
    BASE64.encode(rand::random::<[u8; 18]>())
}

/// Splits `...,p=<proof>` into the part the AuthMessage covers and the decoded proof.
fn split_proof(data: &[u8]) -> Result<(&[u8], Key), ScramError> {
    let comma = data
        .iter()
        .rposition(|&b| b == b',')
        .ok_or_else(|| violation("missing proof"))?;
    let (without_proof, proof) = data.split_at(comma);
    let proof = proof
        .strip_prefix(b",p=")
        .and_then(|p| BASE64.decode(p).ok())
        .and_then(|p| Key::try_from(p).ok())
        .ok_or_else(|| violation("missing or malformed proof"))?;
    Ok((without_proof, proof))
}

/// RFC 5802: a nonce is printable ASCII except ','.
fn is_valid_nonce(nonce: &[u8]) -> bool {
    !nonce.is_empty()
        && nonce
            .iter()
            .all(|&b| (0x21..=0x7e).contains(&b) && b != b',')
}

fn hmac(key: &[u8], message: &[u8]) -> Key {
    // RFC 2104 defines HMAC for keys of any length (long ones are hashed first), so the
    // error case of this constructor cannot happen.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        unreachable!("HMAC accepts keys of any length")
    };
    mac.update(message);
    mac.finalize().into_bytes().into()
}

fn sha256(data: &[u8]) -> Key {
    Sha256::digest(data).into()
}

/// `Hi()` of RFC 5802, which is PBKDF2-HMAC-SHA-256 with one output block.
#[cfg(test)]
fn hi(password: &[u8], salt: &[u8], iterations: u32) -> Key {
    let mut block = salt.to_vec();
    block.extend_from_slice(&1u32.to_be_bytes());
    let mut previous = hmac(password, &block);
    let mut result = previous;
    for _ in 1..iterations {
        previous = hmac(password, &previous);
        result.iter_mut().zip(previous).for_each(|(r, p)| *r ^= p);
    }
    result
}
