//! Messages from server to client: a typed view of a [`Frame`], and the encoders for what the
//! pooler itself sends to clients ([`encode`]).
//!
//! Only what the pooler acts on is parsed (authentication, parameters, keys, transaction
//! status, errors); result rows and the like are recognised by tag and forwarded as frames.
//! Formats: <https://www.postgresql.org/docs/current/protocol-message-formats.html>.

pub mod encode;

#[cfg(test)]
mod tests;

use bytes::Bytes;

use super::error_fields::ErrorFields;
use super::frame::Frame;
use super::reader::Reader;
use super::startup::MAX_CANCEL_KEY_LENGTH;
use super::ProtocolError;

/// Backend message type bytes, from the message-formats page linked above.
pub mod tag {
    pub const AUTHENTICATION: u8 = b'R';
    pub const BACKEND_KEY_DATA: u8 = b'K';
    pub const BIND_COMPLETE: u8 = b'2';
    pub const CLOSE_COMPLETE: u8 = b'3';
    pub const COMMAND_COMPLETE: u8 = b'C';
    pub const COPY_BOTH_RESPONSE: u8 = b'W';
    pub const COPY_DATA: u8 = b'd';
    pub const COPY_DONE: u8 = b'c';
    pub const COPY_IN_RESPONSE: u8 = b'G';
    pub const COPY_OUT_RESPONSE: u8 = b'H';
    pub const DATA_ROW: u8 = b'D';
    pub const EMPTY_QUERY_RESPONSE: u8 = b'I';
    pub const ERROR_RESPONSE: u8 = b'E';
    pub const FUNCTION_CALL_RESPONSE: u8 = b'V';
    pub const NEGOTIATE_PROTOCOL_VERSION: u8 = b'v';
    pub const NO_DATA: u8 = b'n';
    pub const NOTICE_RESPONSE: u8 = b'N';
    pub const NOTIFICATION_RESPONSE: u8 = b'A';
    pub const PARAMETER_DESCRIPTION: u8 = b't';
    pub const PARAMETER_STATUS: u8 = b'S';
    pub const PARSE_COMPLETE: u8 = b'1';
    pub const PORTAL_SUSPENDED: u8 = b's';
    pub const READY_FOR_QUERY: u8 = b'Z';
    pub const ROW_DESCRIPTION: u8 = b'T';
}

/// Authentication request codes (the Int32 after tag `'R'`).
mod auth_code {
    pub const OK: i32 = 0;
    pub const CLEARTEXT_PASSWORD: i32 = 3;
    pub const MD5_PASSWORD: i32 = 5;
    pub const SASL: i32 = 10;
    pub const SASL_CONTINUE: i32 = 11;
    pub const SASL_FINAL: i32 = 12;
}

/// An `Authentication*` message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authentication {
    Ok,
    CleartextPassword,
    Md5Password {
        salt: [u8; 4],
    },
    /// The SASL mechanisms the server offers, in its order of preference.
    Sasl {
        mechanisms: Vec<String>,
    },
    SaslContinue {
        data: Bytes,
    },
    SaslFinal {
        data: Bytes,
    },
    /// Kerberos, GSSAPI, SSPI and anything newer: the pooler does not speak them.
    Other {
        code: i32,
    },
}

/// The transaction status in `ReadyForQuery`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransactionStatus {
    /// `'I'`: not in a transaction block.
    Idle,
    /// `'T'`: in a transaction block.
    InTransaction,
    /// `'E'`: in a failed transaction block; queries are rejected until it ends.
    Failed,
}

impl TransactionStatus {
    pub fn as_byte(self) -> u8 {
        match self {
            TransactionStatus::Idle => b'I',
            TransactionStatus::InTransaction => b'T',
            TransactionStatus::Failed => b'E',
        }
    }

    pub fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            b'I' => Some(TransactionStatus::Idle),
            b'T' => Some(TransactionStatus::InTransaction),
            b'E' => Some(TransactionStatus::Failed),
            _ => None,
        }
    }
}

/// A decoded backend message. Variants without fields are recognised by tag only; their
/// bodies are not inspected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendMessage {
    Authentication(Authentication),
    /// Values are decoded lossily; to replay a parameter to a client exactly, keep the frame.
    ParameterStatus {
        name: String,
        value: String,
    },
    /// The key is 4 bytes in protocol 3.0 and up to 256 bytes in 3.2.
    BackendKeyData {
        process_id: i32,
        secret_key: Bytes,
    },
    ReadyForQuery {
        status: TransactionStatus,
    },
    ErrorResponse(ErrorFields),
    NoticeResponse(ErrorFields),
    /// The newest minor version the server speaks and the `_pq_.` options it did not know.
    NegotiateProtocolVersion {
        newest_minor: i32,
        unrecognized_options: Vec<String>,
    },
    /// The command tag, e.g. `INSERT 0 1`.
    CommandComplete {
        tag: Bytes,
    },
    CopyData {
        data: Bytes,
    },
    ParseComplete,
    BindComplete,
    CloseComplete,
    DataRow,
    RowDescription,
    NoData,
    EmptyQueryResponse,
    PortalSuspended,
    ParameterDescription,
    CopyInResponse,
    CopyOutResponse,
    CopyBothResponse,
    CopyDone,
    NotificationResponse,
    FunctionCallResponse,
}

/// Decodes a frame received from a server.
pub fn decode(frame: &Frame) -> Result<BackendMessage, ProtocolError> {
    let body = frame.body();
    let message = match frame.tag() {
        tag::AUTHENTICATION => BackendMessage::Authentication(decode_authentication(frame)?),
        tag::PARAMETER_STATUS => {
            let mut r = Reader::new(body, "ParameterStatus");
            let name = String::from_utf8_lossy(r.take_cstr()?).into_owned();
            let value = String::from_utf8_lossy(r.take_cstr()?).into_owned();
            r.finish()?;
            BackendMessage::ParameterStatus { name, value }
        }
        tag::BACKEND_KEY_DATA => {
            let mut r = Reader::new(body, "BackendKeyData");
            let process_id = r.take_i32()?;
            let key = r.take_rest();
            if key.is_empty() || key.len() > MAX_CANCEL_KEY_LENGTH {
                return Err(r.malformed("cancel key must be 1 to 256 bytes"));
            }
            BackendMessage::BackendKeyData {
                process_id,
                secret_key: frame.share(key),
            }
        }
        tag::READY_FOR_QUERY => {
            let mut r = Reader::new(body, "ReadyForQuery");
            let status = TransactionStatus::from_byte(r.take_u8()?)
                .ok_or_else(|| r.malformed("unknown transaction status"))?;
            r.finish()?;
            BackendMessage::ReadyForQuery { status }
        }
        tag::ERROR_RESPONSE => {
            BackendMessage::ErrorResponse(ErrorFields::decode(body, "ErrorResponse")?)
        }
        tag::NOTICE_RESPONSE => {
            BackendMessage::NoticeResponse(ErrorFields::decode(body, "NoticeResponse")?)
        }
        tag::NEGOTIATE_PROTOCOL_VERSION => decode_negotiate_protocol_version(body)?,
        tag::COMMAND_COMPLETE => {
            let mut r = Reader::new(body, "CommandComplete");
            let tag = frame.share(r.take_cstr()?);
            r.finish()?;
            BackendMessage::CommandComplete { tag }
        }
        tag::COPY_DATA => BackendMessage::CopyData {
            data: frame.share(body),
        },
        tag::PARSE_COMPLETE => BackendMessage::ParseComplete,
        tag::BIND_COMPLETE => BackendMessage::BindComplete,
        tag::CLOSE_COMPLETE => BackendMessage::CloseComplete,
        tag::DATA_ROW => BackendMessage::DataRow,
        tag::ROW_DESCRIPTION => BackendMessage::RowDescription,
        tag::NO_DATA => BackendMessage::NoData,
        tag::EMPTY_QUERY_RESPONSE => BackendMessage::EmptyQueryResponse,
        tag::PORTAL_SUSPENDED => BackendMessage::PortalSuspended,
        tag::PARAMETER_DESCRIPTION => BackendMessage::ParameterDescription,
        tag::COPY_IN_RESPONSE => BackendMessage::CopyInResponse,
        tag::COPY_OUT_RESPONSE => BackendMessage::CopyOutResponse,
        tag::COPY_BOTH_RESPONSE => BackendMessage::CopyBothResponse,
        tag::COPY_DONE => BackendMessage::CopyDone,
        tag::NOTIFICATION_RESPONSE => BackendMessage::NotificationResponse,
        tag::FUNCTION_CALL_RESPONSE => BackendMessage::FunctionCallResponse,
        other => return Err(ProtocolError::UnknownTag { tag: other }),
    };
    Ok(message)
}

fn decode_authentication(frame: &Frame) -> Result<Authentication, ProtocolError> {
    let mut r = Reader::new(frame.body(), "Authentication");
    let authentication = match r.take_i32()? {
        auth_code::OK => Authentication::Ok,
        auth_code::CLEARTEXT_PASSWORD => Authentication::CleartextPassword,
        auth_code::MD5_PASSWORD => Authentication::Md5Password {
            salt: r.take_array()?,
        },
        auth_code::SASL => {
            let mut mechanisms = Vec::new();
            loop {
                let mechanism = r.take_str()?;
                if mechanism.is_empty() {
                    break;
                }
                mechanisms.push(mechanism.to_owned());
            }
            Authentication::Sasl { mechanisms }
        }
        auth_code::SASL_CONTINUE => Authentication::SaslContinue {
            data: frame.share(r.take_rest()),
        },
        auth_code::SASL_FINAL => Authentication::SaslFinal {
            data: frame.share(r.take_rest()),
        },
        // Other requests carry data (GSSAPI tokens) this codec does not look at.
        code => {
            r.take_rest();
            Authentication::Other { code }
        }
    };
    r.finish()?;
    Ok(authentication)
}

fn decode_negotiate_protocol_version(body: &[u8]) -> Result<BackendMessage, ProtocolError> {
    let mut r = Reader::new(body, "NegotiateProtocolVersion");
    let newest_minor = r.take_i32()?;
    let count = r.take_i32()?;
    let count = r.check_count(count.into(), 1)?;
    let mut unrecognized_options = Vec::with_capacity(count);
    for _ in 0..count {
        unrecognized_options.push(r.take_str()?.to_owned());
    }
    r.finish()?;
    Ok(BackendMessage::NegotiateProtocolVersion {
        newest_minor,
        unrecognized_options,
    })
}
