//! Messages from client to server (after startup): a typed view of a [`Frame`], and the
//! encoders for what the pooler itself sends to PostgreSQL ([`encode`]).
//!
//! Decoding keeps every variable-length field as a zero-copy `Bytes` slice of the frame, so
//! looking at a message costs no allocation beyond `Parse`'s parameter types. SQL text and
//! statement or portal names stay bytes because they are in the client's `client_encoding`.
//! Formats: <https://www.postgresql.org/docs/current/protocol-message-formats.html>.

pub mod encode;

#[cfg(test)]
mod tests;

use bytes::{Bytes, BytesMut};

use super::frame::{Frame, AUTH_MESSAGE_LIMIT, LARGE_MESSAGE_LIMIT, SMALL_MESSAGE_LIMIT};
use super::reader::Reader;
use super::ProtocolError;

/// Frontend message type bytes, from the message-formats page linked above.
pub mod tag {
    pub const BIND: u8 = b'B';
    pub const CLOSE: u8 = b'C';
    pub const COPY_DATA: u8 = b'd';
    pub const COPY_DONE: u8 = b'c';
    pub const COPY_FAIL: u8 = b'f';
    pub const DESCRIBE: u8 = b'D';
    pub const EXECUTE: u8 = b'E';
    pub const FLUSH: u8 = b'H';
    pub const FUNCTION_CALL: u8 = b'F';
    pub const PARSE: u8 = b'P';
    /// `PasswordMessage`, `SASLInitialResponse`, `SASLResponse` and `GSSResponse` share this
    /// tag; which one it is depends on what the server asked for.
    pub const PASSWORD_MESSAGE: u8 = b'p';
    pub const QUERY: u8 = b'Q';
    pub const SYNC: u8 = b'S';
    pub const TERMINATE: u8 = b'X';
}

/// What a `Describe` or `Close` is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectKind {
    /// `'S'`: a prepared statement.
    PreparedStatement,
    /// `'P'`: a portal.
    Portal,
}

impl ObjectKind {
    pub fn as_byte(self) -> u8 {
        match self {
            ObjectKind::PreparedStatement => b'S',
            ObjectKind::Portal => b'P',
        }
    }

    pub fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            b'S' => Some(ObjectKind::PreparedStatement),
            b'P' => Some(ObjectKind::Portal),
            _ => None,
        }
    }
}

/// A decoded frontend message. The empty name is the unnamed statement or portal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrontendMessage {
    Query {
        sql: Bytes,
    },
    Parse {
        name: Bytes,
        query: Bytes,
        param_types: Vec<u32>,
    },
    /// Only the names are parsed; `rest` (parameter formats, values, result formats) is kept
    /// raw so the message can be re-encoded with another statement name (see
    /// [`rewrite_bind_statement`]) without touching the values.
    Bind {
        portal: Bytes,
        statement: Bytes,
        rest: Bytes,
    },
    Describe {
        kind: ObjectKind,
        name: Bytes,
    },
    Close {
        kind: ObjectKind,
        name: Bytes,
    },
    Execute {
        portal: Bytes,
        max_rows: i32,
    },
    Sync,
    Flush,
    Terminate,
    CopyData {
        data: Bytes,
    },
    CopyDone,
    CopyFail {
        message: Bytes,
    },
    /// The pooler only forwards function calls, so the body is not parsed.
    FunctionCall {
        body: Bytes,
    },
    /// Any `'p'` message; decode the body with [`decode_password_message`] or
    /// [`decode_sasl_initial_response`] depending on the authentication in progress (a
    /// `SASLResponse` body is the SASL data itself).
    PasswordMessage {
        body: Bytes,
    },
}

/// Splits the one message a client may send while it authenticates: a `'p'` (password or SASL
/// response) of at most [`AUTH_MESSAGE_LIMIT`] bytes. Any other tag is refused from its first
/// byte and an oversized `'p'` from its header, so before authentication nothing larger than
/// the auth limit is ever buffered, whatever the tag (PostgreSQL's `pq_getmessage` with
/// `PG_MAX_AUTH_TOKEN_LENGTH` does the same).
pub fn split_auth_response(buf: &mut BytesMut) -> Result<Option<Frame>, ProtocolError> {
    match buf.first() {
        None => Ok(None),
        Some(&tag::PASSWORD_MESSAGE) => super::frame::split_frame(buf, AUTH_MESSAGE_LIMIT),
        Some(&tag) => Err(ProtocolError::UnexpectedMessage {
            tag,
            expected: "a password or SASL response",
        }),
    }
}

/// The largest body PostgreSQL accepts for each message type (`SocketBackend` in
/// src/backend/tcop/postgres.c), for use with [`super::split_frame_limited`]: large for
/// messages that carry SQL or data, small for control messages. Unknown tags get the small
/// limit; [`decode`] rejects them anyway.
pub fn max_body_length(tag: u8) -> usize {
    match tag {
        tag::QUERY | tag::PARSE | tag::BIND | tag::FUNCTION_CALL | tag::COPY_DATA => {
            LARGE_MESSAGE_LIMIT
        }
        tag::PASSWORD_MESSAGE => AUTH_MESSAGE_LIMIT,
        _ => SMALL_MESSAGE_LIMIT,
    }
}

/// Decodes a frame received from a client.
pub fn decode(frame: &Frame) -> Result<FrontendMessage, ProtocolError> {
    let body = frame.body();
    let message = match frame.tag() {
        tag::QUERY => {
            let mut r = Reader::new(body, "Query");
            let sql = r.take_cstr()?;
            r.finish()?;
            FrontendMessage::Query {
                sql: frame.share(sql),
            }
        }
        tag::PARSE => decode_parse(frame)?,
        tag::BIND => {
            let mut r = Reader::new(body, "Bind");
            let portal = frame.share(r.take_cstr()?);
            let statement = frame.share(r.take_cstr()?);
            FrontendMessage::Bind {
                portal,
                statement,
                rest: frame.share(r.take_rest()),
            }
        }
        tag::DESCRIBE => {
            let (kind, name) = decode_object(frame, "Describe")?;
            FrontendMessage::Describe { kind, name }
        }
        tag::CLOSE => {
            let (kind, name) = decode_object(frame, "Close")?;
            FrontendMessage::Close { kind, name }
        }
        tag::EXECUTE => {
            let mut r = Reader::new(body, "Execute");
            let portal = frame.share(r.take_cstr()?);
            let max_rows = r.take_i32()?;
            r.finish()?;
            FrontendMessage::Execute { portal, max_rows }
        }
        tag::SYNC => empty(body, "Sync", FrontendMessage::Sync)?,
        tag::FLUSH => empty(body, "Flush", FrontendMessage::Flush)?,
        tag::TERMINATE => empty(body, "Terminate", FrontendMessage::Terminate)?,
        tag::COPY_DONE => empty(body, "CopyDone", FrontendMessage::CopyDone)?,
        tag::COPY_DATA => FrontendMessage::CopyData {
            data: frame.share(body),
        },
        tag::COPY_FAIL => {
            let mut r = Reader::new(body, "CopyFail");
            let message = frame.share(r.take_cstr()?);
            r.finish()?;
            FrontendMessage::CopyFail { message }
        }
        tag::FUNCTION_CALL => FrontendMessage::FunctionCall {
            body: frame.share(body),
        },
        tag::PASSWORD_MESSAGE => FrontendMessage::PasswordMessage {
            body: frame.share(body),
        },
        other => return Err(ProtocolError::UnknownTag { tag: other }),
    };
    Ok(message)
}

fn decode_parse(frame: &Frame) -> Result<FrontendMessage, ProtocolError> {
    let mut r = Reader::new(frame.body(), "Parse");
    let name = frame.share(r.take_cstr()?);
    let query = frame.share(r.take_cstr()?);
    let count = r.take_i16()?;
    let count = r.check_count(count.into(), 4)?;
    let mut param_types = Vec::with_capacity(count);
    for _ in 0..count {
        param_types.push(r.take_u32()?);
    }
    r.finish()?;
    Ok(FrontendMessage::Parse {
        name,
        query,
        param_types,
    })
}

fn decode_object(
    frame: &Frame,
    message: &'static str,
) -> Result<(ObjectKind, Bytes), ProtocolError> {
    let mut r = Reader::new(frame.body(), message);
    let kind = ObjectKind::from_byte(r.take_u8()?)
        .ok_or_else(|| r.malformed("kind must be 'S' or 'P'"))?;
    let name = frame.share(r.take_cstr()?);
    r.finish()?;
    Ok((kind, name))
}

fn empty(
    body: &[u8],
    message: &'static str,
    value: FrontendMessage,
) -> Result<FrontendMessage, ProtocolError> {
    Reader::new(body, message).finish().map(|()| value)
}

/// Re-encodes a `Bind` frame so it binds `new_statement` instead of the client's statement,
/// copying the portal name and parameter bytes unchanged. This is how the pooler maps a
/// client's statement names to its own on a shared server connection.
pub fn rewrite_bind_statement(frame: &Frame, new_statement: &[u8]) -> Result<Bytes, ProtocolError> {
    let FrontendMessage::Bind { portal, rest, .. } = decode(frame)? else {
        return Err(ProtocolError::Malformed {
            message: "Bind",
            problem: "not a Bind message",
        });
    };
    let mut buf = BytesMut::with_capacity(frame.as_bytes().len() + new_statement.len());
    encode::bind(&mut buf, &portal, new_statement, &rest);
    Ok(buf.freeze())
}

/// The body of a `SASLInitialResponse`: the mechanism the client chose and its first message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SaslInitialResponse<'a> {
    pub mechanism: &'a str,
    /// `None` when the client sent length -1 (no initial response).
    pub data: Option<&'a [u8]>,
}

/// Decodes the body of a `'p'` message sent in answer to `AuthenticationSASL`.
pub fn decode_sasl_initial_response(body: &[u8]) -> Result<SaslInitialResponse<'_>, ProtocolError> {
    let mut r = Reader::new(body, "SASLInitialResponse");
    let mechanism = r.take_str()?;
    let length = r.take_i32()?;
    let data = match length {
        -1 => None,
        length => {
            let length = usize::try_from(length).map_err(|_| r.malformed("negative length"))?;
            Some(r.take_bytes(length)?)
        }
    };
    r.finish()?;
    Ok(SaslInitialResponse { mechanism, data })
}

/// Decodes the body of a `'p'` message sent in answer to `AuthenticationCleartextPassword`
/// or `AuthenticationMD5Password`: the password (or MD5 hash) without its terminator.
pub fn decode_password_message(body: &[u8]) -> Result<&[u8], ProtocolError> {
    let mut r = Reader::new(body, "PasswordMessage");
    let password = r.take_cstr()?;
    r.finish()?;
    Ok(password)
}
