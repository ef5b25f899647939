//! The pooler as SCRAM server toward a client: verify its proof against the role's
//! verifier and recover its client key.

use std::sync::Arc;

use super::*;

enum ServerState {
    AwaitingClientFirst,
    AwaitingClientFinal {
        /// The client-final's `c=` must decode to this, followed for -PLUS by the
        /// channel binding data.
        gs2_header: &'static [u8],
        plus: bool,
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
    /// The TLS connection's `tls-server-end-point` data when -PLUS was offered.
    channel_binding: Option<Arc<[u8]>>,
    state: ServerState,
}

impl ServerExchange {
    /// An exchange against `verifier` (tests; the pooler goes through `with_secret`).
    #[cfg(test)]
    pub fn new(verifier: Verifier, server_nonce: String) -> Self {
        Self::with_secret(Secret::Real(verifier), server_nonce)
    }

    /// An exchange against a role's secret, real or mock (a mock one always ends in
    /// [`ScramError::WrongPassword`]).
    pub fn with_secret(secret: Secret, server_nonce: String) -> Self {
        ServerExchange {
            secret,
            server_nonce,
            channel_binding: None,
            state: ServerState::AwaitingClientFirst,
        }
    }

    /// Offers SCRAM-SHA-256-PLUS with this `tls-server-end-point` data (see
    /// [`super::tls_server_end_point`]); only on a TLS connection.
    pub fn with_channel_binding(mut self, binding: Arc<[u8]>) -> Self {
        self.channel_binding = Some(binding);
        self
    }

    fn verifier(&self) -> &Verifier {
        self.secret.verifier()
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
        let plus = match mechanism {
            MECHANISM => false,
            MECHANISM_PLUS if self.channel_binding.is_some() => true,
            MECHANISM_PLUS => return Err(violation("channel binding was not offered")),
            _ => return Err(violation("unsupported SASL mechanism")),
        };
        // RFC 5802 §6 and PostgreSQL: -PLUS must name the binding type; without -PLUS, "y"
        // (the client could bind but thinks the server cannot) is a downgrade when the
        // server offered -PLUS, and "p" is not allowed.
        let gs2_header = if plus {
            if !data.starts_with(GS2_TLS_SERVER_END_POINT) {
                return Err(violation("unsupported or missing channel binding type"));
            }
            GS2_TLS_SERVER_END_POINT
        } else {
            match data.get(..3) {
                Some(GS2_NO_BINDING) => GS2_NO_BINDING,
                Some(GS2_BINDING_UNUSED) if self.channel_binding.is_some() => {
                    return Err(violation(
                        "the client supports channel binding but thinks the server does not; \
                         this server does",
                    ))
                }
                Some(GS2_BINDING_UNUSED) => GS2_BINDING_UNUSED,
                _ if data.starts_with(b"p=") => {
                    return Err(violation("channel binding requires SCRAM-SHA-256-PLUS"))
                }
                _ if data.starts_with(b"n,a=") || data.starts_with(b"y,a=") => {
                    return Err(violation("authorization identity is not supported"))
                }
                _ => return Err(violation("malformed gs2 header")),
            }
        };
        let client_first_bare = data.get(gs2_header.len()..).unwrap_or_default();
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
            plus,
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
            plus,
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
        let bound = binding.strip_prefix(gs2_header).is_some_and(|data| {
            if plus {
                let expected = self.channel_binding.as_deref().unwrap_or_default();
                !expected.is_empty() && bool::from(data.ct_eq(expected))
            } else {
                data.is_empty()
            }
        });
        if !bound {
            return Err(violation(
                "channel binding does not match (the TLS connection is not the client's)",
            ));
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

/// The mechanisms to offer in AuthenticationSASL, preferred first: the `-PLUS` one only
/// where the connection has TLS and the pooler a channel binding for it.
pub fn mechanisms(channel_binding: bool) -> &'static [&'static str] {
    if channel_binding {
        &[MECHANISM_PLUS, MECHANISM]
    } else {
        &[MECHANISM]
    }
}
