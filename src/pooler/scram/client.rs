//! The pooler as SCRAM client toward PostgreSQL, with a recovered client key instead of
//! a password (passthrough).

use super::*;

enum ClientState {
    AwaitingServerFirst,
    AwaitingServerFinal {
        server_signature: Key,
    },
    /// The server's signature matched.
    Verified,
    /// An exchange that failed or was used out of order.
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

    /// Whether the server-final-message was received and its signature verified: the only
    /// state in which the server has proved it knows the role's secret.
    pub fn is_complete(&self) -> bool {
        matches!(self.state, ClientState::Verified)
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
            self.state = ClientState::Verified;
            Ok(())
        } else {
            Err(violation("server signature does not match"))
        }
    }
}
