//! SCRAM-SHA-256 (RFC 5802, RFC 7677) as PostgreSQL speaks it, in both roles the pooler plays:
//! [`ServerExchange`] authenticates a client against the role's stored [`Verifier`], and
//! [`ClientExchange`] logs in to PostgreSQL with the [`ClientKey`] that exchange recovered, so
//! the pooler never needs the plaintext password (SCRAM passthrough, as PgBouncer does it).
//!
//! Pure: no I/O, and nonces are passed in so tests are deterministic. Message formats and
//! PostgreSQL's deviations (the username in client-first is ignored, channel binding only with
//! `-PLUS`): <https://www.postgresql.org/docs/current/sasl-authentication.html>.

use std::sync::OnceLock;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The only mechanism the pooler offers: without TLS channel binding there is no `-PLUS`.
pub const MECHANISM: &str = "SCRAM-SHA-256";
const MECHANISM_PLUS: &str = "SCRAM-SHA-256-PLUS";

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

type Key = [u8; 32];

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

/// `ClientKey = HMAC(SaltedPassword, "Client Key")`: recovered from a client's proof, it lets
/// the pooler log in as that role without knowing the password. As good as a password for
/// that purpose, so it is never printed.
#[derive(Clone)]
pub struct ClientKey(Key);

impl ClientKey {
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

enum Secret {
    Real(Verifier),
    /// For a role that does not exist or has no SCRAM secret: a made-up verifier, so the
    /// exchange runs (and takes as long) as a real one and fails at the proof, like
    /// PostgreSQL's `scram_mock_salt`; probing cannot tell unknown roles from wrong passwords.
    Mock(Verifier),
}

enum ServerState {
    AwaitingClientFirst,
    AwaitingClientFinal {
        gs2_header: &'static [u8],
        client_first_bare: Vec<u8>,
        server_first: Vec<u8>,
        nonce: Vec<u8>,
    },
    Done,
}

/// The server side of one exchange: `client_first`, then `client_final`. Any error ends it.
pub struct ServerExchange {
    secret: Secret,
    server_nonce: String,
    state: ServerState,
}

impl ServerExchange {
    /// An exchange against `verifier`; production passes [`new_nonce`].
    pub fn new(verifier: Verifier, server_nonce: String) -> Self {
        Self::with_secret(Secret::Real(verifier), server_nonce)
    }

    /// An exchange that always ends in [`ScramError::WrongPassword`], with a salt derived from
    /// `username` and a per-process secret: the same role always gets the same salt, as a real
    /// role would, and nobody outside the process can predict it.
    pub fn mock(username: &str, server_nonce: String) -> Self {
        static SECRET: OnceLock<Key> = OnceLock::new();
        let secret = SECRET.get_or_init(rand::random::<Key>);
        let derive = |purpose: &[u8]| hmac(secret, &[purpose, username.as_bytes()].concat());
        let verifier = Verifier {
            iterations: DEFAULT_ITERATIONS,
            salt: derive(b"salt:")[..MOCK_SALT_LENGTH].to_vec(),
            stored_key: derive(b"stored-key:"),
            server_key: derive(b"server-key:"),
        };
        Self::with_secret(Secret::Mock(verifier), server_nonce)
    }

    fn with_secret(secret: Secret, server_nonce: String) -> Self {
        ServerExchange {
            secret,
            server_nonce,
            state: ServerState::AwaitingClientFirst,
        }
    }

    fn verifier(&self) -> &Verifier {
        match &self.secret {
            Secret::Real(verifier) | Secret::Mock(verifier) => verifier,
        }
    }

    /// Takes the `SASLInitialResponse` and returns the server-first-message for
    /// `AuthenticationSASLContinue`.
    pub fn client_first(&mut self, mechanism: &str, data: &[u8]) -> Result<Vec<u8>, ScramError> {
        if !matches!(
            std::mem::replace(&mut self.state, ServerState::Done),
            ServerState::AwaitingClientFirst
        ) {
            return Err(violation("unexpected client-first-message"));
        }
        match mechanism {
            MECHANISM => {}
            MECHANISM_PLUS => return Err(violation("channel binding was not offered")),
            _ => return Err(violation("unsupported SASL mechanism")),
        }
        let gs2_header = match data.get(..3) {
            Some(GS2_NO_BINDING) => GS2_NO_BINDING,
            Some(GS2_BINDING_UNUSED) => GS2_BINDING_UNUSED,
            _ if data.starts_with(b"p=") => {
                return Err(violation("channel binding is not supported"))
            }
            _ if data.starts_with(b"n,a=") || data.starts_with(b"y,a=") => {
                return Err(violation("authorization identity is not supported"))
            }
            _ => return Err(violation("malformed gs2 header")),
        };
        let client_first_bare = data.get(3..).unwrap_or_default();
        let mut attributes = client_first_bare.split(|&b| b == b',');
        match attributes.next() {
            Some(user) if user.starts_with(b"n=") => {} // PostgreSQL uses the startup packet's user.
            Some(extension) if extension.starts_with(b"m=") => {
                return Err(violation("unsupported mandatory extension"))
            }
            _ => return Err(violation("missing username attribute")),
        }
        let client_nonce = attributes
            .next()
            .and_then(|attribute| attribute.strip_prefix(b"r="))
            .filter(|nonce| is_valid_nonce(nonce))
            .ok_or_else(|| violation("missing or invalid client nonce"))?;
        let mut nonce = client_nonce.to_vec();
        nonce.extend_from_slice(self.server_nonce.as_bytes());
        let verifier = self.verifier();
        let mut server_first = b"r=".to_vec();
        server_first.extend_from_slice(&nonce);
        let salt = BASE64.encode(&verifier.salt);
        server_first.extend_from_slice(format!(",s={salt},i={}", verifier.iterations).as_bytes());
        self.state = ServerState::AwaitingClientFinal {
            gs2_header,
            client_first_bare: client_first_bare.to_vec(),
            server_first: server_first.clone(),
            nonce,
        };
        Ok(server_first)
    }

    /// Takes the client-final-message (`SASLResponse`) and, if the proof is right, returns the
    /// server-final-message for `AuthenticationSASLFinal` and the client's [`ClientKey`].
    pub fn client_final(&mut self, data: &[u8]) -> Result<(Vec<u8>, ClientKey), ScramError> {
        let ServerState::AwaitingClientFinal {
            gs2_header,
            client_first_bare,
            server_first,
            nonce,
        } = std::mem::replace(&mut self.state, ServerState::Done)
        else {
            return Err(violation("unexpected client-final-message"));
        };
        let (without_proof, proof) = split_proof(data)?;
        let mut attributes = without_proof.split(|&b| b == b',');
        let binding = attributes
            .next()
            .and_then(|attribute| attribute.strip_prefix(b"c="))
            .and_then(|value| BASE64.decode(value).ok())
            .ok_or_else(|| violation("missing channel binding attribute"))?;
        if binding != gs2_header {
            return Err(violation("channel binding does not match the gs2 header"));
        }
        if attributes
            .next()
            .and_then(|attribute| attribute.strip_prefix(b"r="))
            != Some(nonce.as_slice())
        {
            return Err(violation("nonce does not match"));
        }
        let verifier = self.verifier();
        let auth_message = [
            client_first_bare.as_slice(),
            server_first.as_slice(),
            without_proof,
        ]
        .join(&b","[..]);
        let client_signature = hmac(&verifier.stored_key, &auth_message);
        let client_key: Key = std::array::from_fn(|i| proof[i] ^ client_signature[i]);
        let proof_matches = bool::from(sha256(&client_key).ct_eq(&verifier.stored_key));
        if !proof_matches || matches!(self.secret, Secret::Mock(_)) {
            return Err(ScramError::WrongPassword);
        }
        let server_signature = hmac(&verifier.server_key, &auth_message);
        let server_final = format!("v={}", BASE64.encode(server_signature)).into_bytes();
        Ok((server_final, ClientKey(client_key)))
    }
}

enum ClientState {
    AwaitingServerFirst,
    AwaitingServerFinal { server_signature: Key },
    Done,
}

/// The client side toward PostgreSQL, proving knowledge of the password with the
/// [`ClientKey`] alone: `client_first_message`, `server_first`, then `server_final`.
pub struct ClientExchange {
    client_key: ClientKey,
    server_key: Key,
    client_nonce: String,
    state: ClientState,
}

impl ClientExchange {
    /// `server_key` comes from the role's [`Verifier`]; production passes [`new_nonce`].
    pub fn new(client_key: ClientKey, server_key: Key, client_nonce: String) -> Self {
        ClientExchange {
            client_key,
            server_key,
            client_nonce,
            state: ClientState::AwaitingServerFirst,
        }
    }

    /// The client-first-message for `SASLInitialResponse`, with an empty username as libpq
    /// sends it (the server uses the startup packet's).
    pub fn client_first_message(&self) -> Vec<u8> {
        format!("n,,{}", self.client_first_bare()).into_bytes()
    }

    fn client_first_bare(&self) -> String {
        format!("n=,r={}", self.client_nonce)
    }

    /// Takes the server-first-message and returns the client-final-message.
    pub fn server_first(&mut self, data: &[u8]) -> Result<Vec<u8>, ScramError> {
        if !matches!(
            std::mem::replace(&mut self.state, ClientState::Done),
            ClientState::AwaitingServerFirst
        ) {
            return Err(violation("unexpected server-first-message"));
        }
        let mut attributes = data.split(|&b| b == b',');
        let nonce = attributes
            .next()
            .and_then(|attribute| attribute.strip_prefix(b"r="))
            .filter(|nonce| is_valid_nonce(nonce))
            .ok_or_else(|| violation("missing or invalid server nonce"))?;
        if nonce.len() <= self.client_nonce.len()
            || !nonce.starts_with(self.client_nonce.as_bytes())
        {
            return Err(violation("server nonce does not extend the client nonce"));
        }
        // Salt and iterations are those of the verifier the keys came from; they must only be
        // well-formed.
        let salt_ok = attributes
            .next()
            .and_then(|attribute| attribute.strip_prefix(b"s="))
            .is_some_and(|salt| BASE64.decode(salt).is_ok());
        let iterations_ok = attributes
            .next()
            .and_then(|attribute| attribute.strip_prefix(b"i="))
            .and_then(|i| std::str::from_utf8(i).ok()?.parse::<u32>().ok())
            .is_some_and(|i| i > 0);
        if !salt_ok || !iterations_ok {
            return Err(violation("malformed server-first-message"));
        }
        let mut without_proof = b"c=biws,r=".to_vec();
        without_proof.extend_from_slice(nonce);
        let auth_message = [
            self.client_first_bare().as_bytes(),
            data,
            without_proof.as_slice(),
        ]
        .join(&b","[..]);
        let client_key = self.client_key.as_bytes();
        let client_signature = hmac(&sha256(client_key), &auth_message);
        let proof: Key = std::array::from_fn(|i| client_key[i] ^ client_signature[i]);
        self.state = ClientState::AwaitingServerFinal {
            server_signature: hmac(&self.server_key, &auth_message),
        };
        without_proof.extend_from_slice(format!(",p={}", BASE64.encode(proof)).as_bytes());
        Ok(without_proof)
    }

    /// Checks the server-final-message: the server must prove it holds the ServerKey too.
    pub fn server_final(&mut self, data: &[u8]) -> Result<(), ScramError> {
        let ClientState::AwaitingServerFinal { server_signature } =
            std::mem::replace(&mut self.state, ClientState::Done)
        else {
            return Err(violation("unexpected server-final-message"));
        };
        if let Some(error) = data.strip_prefix(b"e=") {
            return Err(ScramError::Protocol(format!(
                "server reported {}",
                String::from_utf8_lossy(error)
            )));
        }
        let verifier = data
            .strip_prefix(b"v=")
            .and_then(|v| BASE64.decode(v).ok())
            .ok_or_else(|| violation("malformed server-final-message"))?;
        if bool::from(verifier.ct_eq(&server_signature)) {
            Ok(())
        } else {
            Err(violation("server signature does not match"))
        }
    }
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

#[cfg(test)]
mod tests {
    use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};

    use super::*;

    fn verifier(password: &[u8]) -> Verifier {
        Verifier::parse(&postgres_protocol::password::scram_sha_256(password)).unwrap()
    }

    /// rust-postgres's client against our server: the server's verdict, and the client must
    /// accept our server-final whenever the server accepted it.
    fn login(
        server: &mut ServerExchange,
        password: &[u8],
        binding: ChannelBinding,
    ) -> Result<ClientKey, ScramError> {
        let mut client = ScramSha256::new(password, binding);
        let server_first = server.client_first(MECHANISM, client.message())?;
        client.update(&server_first).unwrap();
        let (server_final, client_key) = server.client_final(client.message())?;
        client.finish(&server_final).unwrap();
        Ok(client_key)
    }

    #[test]
    fn right_password_from_a_real_client_succeeds_with_either_gs2_header() {
        for binding in [ChannelBinding::unsupported(), ChannelBinding::unrequested()] {
            let mut server = ServerExchange::new(verifier(b"pw"), new_nonce());
            assert!(login(&mut server, b"pw", binding).is_ok());
        }
    }

    #[test]
    fn wrong_password_from_a_real_client_is_wrong_password() {
        let mut server = ServerExchange::new(verifier(b"pw"), new_nonce());
        assert_eq!(
            login(&mut server, b"pW", ChannelBinding::unsupported()).unwrap_err(),
            ScramError::WrongPassword
        );
    }

    #[test]
    fn recovered_client_key_logs_in_to_postgresql_by_passthrough() {
        let verifier = verifier(b"pw");
        let mut from_client = ServerExchange::new(verifier.clone(), new_nonce());
        let client_key = login(&mut from_client, b"pw", ChannelBinding::unsupported()).unwrap();

        let mut postgres = ServerExchange::new(verifier.clone(), "srv".into());
        let mut pooler =
            ClientExchange::new(client_key.clone(), verifier.server_key(), "cli".into());
        assert_eq!(pooler.client_first_message(), b"n,,n=,r=cli");
        let server_first = postgres
            .client_first(MECHANISM, &pooler.client_first_message())
            .unwrap();
        let client_final = pooler.server_first(&server_first).unwrap();
        let (server_final, seen_by_postgres) = postgres.client_final(&client_final).unwrap();
        assert_eq!(seen_by_postgres, client_key);
        assert_eq!(pooler.server_final(&server_final), Ok(()));
        assert!(
            pooler.server_final(&server_final).is_err(),
            "a finished exchange takes no more messages"
        );
    }

    #[test]
    fn passthrough_rejects_a_server_that_cannot_prove_the_server_key() {
        let verifier = verifier(b"pw");
        let wrong_server_key = [7; 32];
        let client_key = {
            let mut server = ServerExchange::new(verifier.clone(), new_nonce());
            login(&mut server, b"pw", ChannelBinding::unsupported()).unwrap()
        };
        let mut postgres = ServerExchange::new(verifier, "srv".into());
        let mut pooler = ClientExchange::new(client_key, wrong_server_key, "cli".into());
        let server_first = postgres
            .client_first(MECHANISM, &pooler.client_first_message())
            .unwrap();
        let (server_final, _) = postgres
            .client_final(&pooler.server_first(&server_first).unwrap())
            .unwrap();
        assert!(matches!(
            pooler.server_final(&server_final),
            Err(ScramError::Protocol(_))
        ));
    }

    #[test]
    fn rfc_7677_test_vector() {
        let salt = BASE64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let verifier = Verifier::from_password(b"pencil", &salt, 4096);
        let mut server = ServerExchange::new(verifier, "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0".into());
        let server_first = server
            .client_first(MECHANISM, b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO")
            .unwrap();
        let nonce = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
        assert_eq!(
            String::from_utf8(server_first).unwrap(),
            format!("r={nonce},s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")
        );
        let client_final =
            format!("c=biws,r={nonce},p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=");
        let (server_final, _) = server.client_final(client_final.as_bytes()).unwrap();
        assert_eq!(
            server_final,
            b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
    }

    #[test]
    fn verifiers_parse_postgresql_format_and_nothing_else() {
        let v = verifier(b"pw");
        assert_eq!(Verifier::parse(&v.to_rolpassword()), Some(v.clone()));
        assert!(!format!("{v:?}").contains(&BASE64.encode(v.server_key())));
        let key = BASE64.encode([1u8; 32]);
        for bad in [
            "md5d1bd5b8a7b3ba3c5d8ab4ba7d9e6c9a4".to_owned(),
            "pw".to_owned(),
            format!("SCRAM-SHA-256$0:c2FsdA==${key}:{key}"),
            format!("SCRAM-SHA-256$x:c2FsdA==${key}:{key}"),
            format!("SCRAM-SHA-256$4096:${key}:{key}"),
            format!("SCRAM-SHA-256$4096:!!${key}:{key}"),
            format!("SCRAM-SHA-256$4096:c2FsdA==${key}:c2FsdA=="),
            format!("SCRAM-SHA-256$4096:c2FsdA==${key}"),
            format!("SCRAM-SHA-1$4096:c2FsdA==${key}:{key}"),
        ] {
            assert_eq!(Verifier::parse(&bad), None, "{bad}");
        }
    }

    #[test]
    fn malformed_client_messages_are_protocol_errors() {
        let first_cases: &[(&str, &[u8])] = &[
            ("SCRAM-SHA-256-PLUS", b"p=tls-server-end-point,,n=,r=abc"),
            ("SCRAM-SHA-1", b"n,,n=,r=abc"),
            (MECHANISM, b"p=tls-server-end-point,,n=,r=abc"),
            (MECHANISM, b"n,a=admin,n=,r=abc"),
            (MECHANISM, b"x,,n=,r=abc"),
            (MECHANISM, b"n,,m=ext,n=,r=abc"),
            (MECHANISM, b"n,,r=abc"),
            (MECHANISM, b"n,,n=,r="),
            (MECHANISM, b"n,,n="),
            (MECHANISM, b"n,,n=,r=a\x01b"),
            (MECHANISM, b""),
            (MECHANISM, b"n"),
        ];
        for (mechanism, data) in first_cases {
            let mut server = ServerExchange::new(verifier(b"pw"), "srv".into());
            let error = server.client_first(mechanism, data).unwrap_err();
            assert!(matches!(error, ScramError::Protocol(_)), "{data:?}");
        }
        let proof = BASE64.encode([0u8; 32]);
        let final_cases = [
            format!("c=eSws,r=clisrv,p={proof}"),
            format!("c=biws,r=cliXXX,p={proof}"),
            format!("r=clisrv,p={proof}"),
            format!("c=biws,r=clisrv,p={}", BASE64.encode([0u8; 31])),
            "c=biws,r=clisrv,p=!!".to_owned(),
            "c=biws,r=clisrv".to_owned(),
            String::new(),
        ];
        for data in final_cases {
            let mut server = ServerExchange::new(verifier(b"pw"), "srv".into());
            server.client_first(MECHANISM, b"n,,n=,r=cli").unwrap();
            assert!(
                matches!(
                    server.client_final(data.as_bytes()),
                    Err(ScramError::Protocol(_))
                ),
                "{data}"
            );
        }
        let mut server = ServerExchange::new(verifier(b"pw"), "srv".into());
        assert!(matches!(
            server.client_final(b"c=biws"),
            Err(ScramError::Protocol(_))
        ));
        assert!(
            server.client_first(MECHANISM, b"n,,n=,r=cli").is_err(),
            "an exchange ends at its first error"
        );
    }

    #[test]
    fn malformed_server_messages_are_protocol_errors() {
        let server_first_cases: &[&[u8]] = &[
            b"r=other,s=c2FsdA==,i=4096",
            b"r=cli,s=c2FsdA==,i=4096",
            b"r=clisrv,s=!!,i=4096",
            b"r=clisrv,s=c2FsdA==,i=0",
            b"r=clisrv,s=c2FsdA==",
            b"m=ext,r=clisrv,s=c2FsdA==,i=4096",
            b"",
        ];
        for data in server_first_cases {
            let mut client = ClientExchange::new(ClientKey::new([1; 32]), [2; 32], "cli".into());
            assert!(
                matches!(client.server_first(data), Err(ScramError::Protocol(_))),
                "{data:?}"
            );
        }
        for data in [&b"e=invalid-proof"[..], b"v=!!", b"", b"x=1"] {
            let mut client = ClientExchange::new(ClientKey::new([1; 32]), [2; 32], "cli".into());
            client.server_first(b"r=clisrv,s=c2FsdA==,i=4096").unwrap();
            assert!(
                matches!(client.server_final(data), Err(ScramError::Protocol(_))),
                "{data:?}"
            );
        }
    }

    #[test]
    fn mock_exchange_looks_real_and_always_fails() {
        for password in [&b"pw"[..], b""] {
            let mut mock = ServerExchange::mock("nobody", new_nonce());
            assert_eq!(
                login(&mut mock, password, ChannelBinding::unsupported()).unwrap_err(),
                ScramError::WrongPassword
            );
        }
        let salt_of = |user: &str| {
            let first = ServerExchange::mock(user, "srv".into())
                .client_first(MECHANISM, b"n,,n=,r=cli")
                .unwrap();
            String::from_utf8(first).unwrap()
        };
        assert_eq!(salt_of("nobody"), salt_of("nobody"));
        assert_ne!(salt_of("nobody"), salt_of("somebody"));
        assert!(salt_of("nobody").ends_with(",i=4096"));
    }
}
