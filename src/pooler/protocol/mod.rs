//! SANS-IO codec for the PostgreSQL v3 wire protocol, in both directions.
//!
//! Nothing here reads a socket, spawns a task or logs: every function takes bytes and returns
//! typed values (or writes bytes into a `BytesMut`), and no input can make it panic. The pooler's
//! I/O shell reads into a buffer, asks this module for one complete message, and mostly forwards
//! that message's bytes unchanged.
//!
//! # Map
//!
//! - [`split_frame`] / [`split_frame_limited`] split one complete tagged message (a [`Frame`],
//!   which keeps tag + length + body so it can be forwarded without re-encoding) off a buffer.
//!   `Ok(None)` means "need more bytes" and leaves the buffer untouched.
//! - [`startup`]: the untagged packets a client sends first — `StartupMessage`, `SSLRequest`,
//!   `GSSENCRequest`, `CancelRequest` ([`startup::decode`], [`startup::StartupPacket`]) — and their
//!   encoders for the pooler's own connections to PostgreSQL.
//! - [`frontend`]: messages from client to server. [`frontend::decode`] gives a borrowed
//!   [`frontend::FrontendMessage`]; [`frontend::rewrite_bind_statement`] renames the statement of
//!   a `Bind` cheaply; [`frontend::encode`] writes what the pooler sends to PostgreSQL.
//! - [`backend`]: messages from server to client. [`backend::decode`] gives a
//!   [`backend::BackendMessage`]; [`backend::encode`] writes what the pooler synthesizes for
//!   clients (authentication, `ReadyForQuery`, errors, admin-console rows).
//! - [`streamed`]: which messages larger than [`streamed::STREAM_ABOVE`] the pooler relays in
//!   pieces, and the leading names of a `Parse` or `Bind` it reads before the body passes.
//! - [`error_fields`]: `ErrorResponse` / `NoticeResponse` fields, both decoded
//!   ([`error_fields::ErrorFields`]) and to encode ([`error_fields::ErrorReport`]);
//!   [`sql_state::SqlState`] holds the error codes the pooler uses.
//!
//! # Limits
//!
//! Lengths are checked before anything is buffered or allocated: callers pass a maximum per
//! message (see the constants in [`frame`] and [`frontend::max_body_length`]), counts read from
//! the wire are checked against the bytes that remain, and every read is bounds-checked.
//!
//! Text the client sends (SQL, statement and portal names) is kept as bytes: it is in the
//! client's `client_encoding`, which need not be UTF-8, and the pooler must not reject valid
//! traffic because of it.
//!
//! Message formats: <https://www.postgresql.org/docs/current/protocol-message-formats.html>.

pub mod backend;
pub mod error_fields;
pub mod frame;
pub mod frontend;
pub mod sql_state;
pub mod startup;
pub mod streamed;

mod reader;
mod writer;

#[cfg(test)]
mod fuzz_smoke;

pub use frame::{split_frame, split_frame_limited, Frame};

/// Why a message could not be decoded. Any of these means the peer broke the protocol (or sent
/// something this codec refuses to buffer); the connection cannot continue.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// The length word announces more than the caller allows for this kind of message.
    #[error("message length {len} exceeds the limit of {max} bytes")]
    MessageTooLarge { len: usize, max: usize },

    /// The length word is smaller than the length word itself (or than the fixed part of a
    /// startup packet), or negative.
    #[error("invalid message length {len}")]
    BadLength { len: i64 },

    /// A startup packet for a protocol other than 3.x.
    #[error("unsupported frontend protocol {major}.{minor}: only protocol 3 is supported")]
    UnsupportedProtocolVersion { major: u16, minor: u16 },

    /// A startup packet with PostgreSQL's special major number 1234 but a request code this
    /// codec does not know.
    #[error("unknown startup request code {code}")]
    UnknownStartupCode { code: u32 },

    /// A message other than the one the current phase allows (before authentication, anything
    /// but a password or SASL response).
    #[error("expected {expected}, got message type {:?}", char::from(*tag))]
    UnexpectedMessage { tag: u8, expected: &'static str },

    /// A tagged message whose tag is not defined for its direction.
    #[error("unknown message type {:?}", char::from(*tag))]
    UnknownTag { tag: u8 },

    /// The body does not have the layout its tag promises.
    #[error("malformed {message} message: {problem}")]
    Malformed {
        message: &'static str,
        problem: &'static str,
    },
}
