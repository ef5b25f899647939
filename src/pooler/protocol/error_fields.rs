//! The fields of `ErrorResponse` and `NoticeResponse`: decoded from a server's message
//! ([`ErrorFields`]) and composed for the pooler's own ([`ErrorReport`]).
//!
//! Field codes: <https://www.postgresql.org/docs/current/protocol-error-fields.html>.

use bytes::BytesMut;

use super::reader::Reader;
use super::sql_state::SqlState;
use super::writer::MessageWriter;
use super::ProtocolError;

/// Field type bytes, from the page linked above.
pub mod field {
    /// Localized severity (`ERROR`, `FATAL`, ... possibly translated).
    pub const SEVERITY: u8 = b'S';
    /// Severity never translated (PostgreSQL 9.6 and later).
    pub const SEVERITY_NONLOCALIZED: u8 = b'V';
    pub const CODE: u8 = b'C';
    pub const MESSAGE: u8 = b'M';
    pub const DETAIL: u8 = b'D';
    pub const HINT: u8 = b'H';
    pub const POSITION: u8 = b'P';
    pub const INTERNAL_POSITION: u8 = b'p';
    pub const INTERNAL_QUERY: u8 = b'q';
    pub const WHERE: u8 = b'W';
    pub const SCHEMA_NAME: u8 = b's';
    pub const TABLE_NAME: u8 = b't';
    pub const COLUMN_NAME: u8 = b'c';
    pub const DATA_TYPE_NAME: u8 = b'd';
    pub const CONSTRAINT_NAME: u8 = b'n';
    pub const FILE: u8 = b'F';
    pub const LINE: u8 = b'L';
    pub const ROUTINE: u8 = b'R';
}

/// Severity of a report. `ErrorResponse` uses the first three, `NoticeResponse` the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Fatal,
    Panic,
    Warning,
    Notice,
    Debug,
    Info,
    Log,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "ERROR",
            Severity::Fatal => "FATAL",
            Severity::Panic => "PANIC",
            Severity::Warning => "WARNING",
            Severity::Notice => "NOTICE",
            Severity::Debug => "DEBUG",
            Severity::Info => "INFO",
            Severity::Log => "LOG",
        }
    }
}

/// The fields of a decoded `ErrorResponse` or `NoticeResponse`, in wire order. Values are
/// decoded lossily (they are in the client encoding and meant for reading); forward the
/// frame itself when exact bytes matter.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ErrorFields {
    pub fields: Vec<(u8, String)>,
}

impl ErrorFields {
    /// The value of the first field of type `field` (see [`field`]).
    pub fn get(&self, field: u8) -> Option<&str> {
        self.fields
            .iter()
            .find(|(code, _)| *code == field)
            .map(|(_, value)| value.as_str())
    }

    /// The untranslated severity where the server sent one, else the localized one.
    pub fn severity(&self) -> Option<&str> {
        self.get(field::SEVERITY_NONLOCALIZED)
            .or_else(|| self.get(field::SEVERITY))
    }

    /// The SQLSTATE code, e.g. `"57P01"`; compare with [`SqlState::as_str`].
    pub fn code(&self) -> Option<&str> {
        self.get(field::CODE)
    }

    pub fn message(&self) -> Option<&str> {
        self.get(field::MESSAGE)
    }

    pub fn detail(&self) -> Option<&str> {
        self.get(field::DETAIL)
    }

    pub fn hint(&self) -> Option<&str> {
        self.get(field::HINT)
    }

    /// Decodes the body: `(type byte, NUL-terminated value)*` then a zero byte.
    pub(crate) fn decode(body: &[u8], message: &'static str) -> Result<Self, ProtocolError> {
        let mut r = Reader::new(body, message);
        // Each field takes at least two bytes, which bounds the allocation.
        let mut fields = Vec::with_capacity(r.remaining() / 2);
        loop {
            let code = r.take_u8()?;
            if code == 0 {
                break;
            }
            let value = r.take_cstr()?;
            fields.push((code, String::from_utf8_lossy(value).into_owned()));
        }
        r.finish()?;
        Ok(ErrorFields { fields })
    }
}

/// A report the pooler sends to a client, as `ErrorResponse` or `NoticeResponse` (see
/// `backend::encode::error_response`). Built with [`ErrorReport::new`], optionally
/// [`ErrorReport::with_detail`] and [`ErrorReport::with_hint`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorReport<'a> {
    pub severity: Severity,
    pub code: SqlState,
    pub message: &'a str,
    pub detail: Option<&'a str>,
    pub hint: Option<&'a str>,
}

impl<'a> ErrorReport<'a> {
    pub fn new(severity: Severity, code: SqlState, message: &'a str) -> Self {
        ErrorReport {
            severity,
            code,
            message,
            detail: None,
            hint: None,
        }
    }

    pub fn with_detail(self, detail: &'a str) -> Self {
        ErrorReport {
            detail: Some(detail),
            ..self
        }
    }

    pub fn with_hint(self, hint: &'a str) -> Self {
        ErrorReport {
            hint: Some(hint),
            ..self
        }
    }

    /// Writes the message with `tag` (`'E'` or `'N'`). Both severity fields are sent, as
    /// PostgreSQL does, so clients that key on `V` and older ones that read `S` both work.
    pub(crate) fn encode(&self, buf: &mut BytesMut, tag: u8) {
        let severity = self.severity.as_str().as_bytes();
        let mut message = MessageWriter::tagged(buf, tag);
        message
            .u8(field::SEVERITY)
            .cstr(severity)
            .u8(field::SEVERITY_NONLOCALIZED)
            .cstr(severity)
            .u8(field::CODE)
            .cstr(self.code.as_str().as_bytes())
            .u8(field::MESSAGE)
            .cstr(self.message.as_bytes());
        if let Some(detail) = self.detail {
            message.u8(field::DETAIL).cstr(detail.as_bytes());
        }
        if let Some(hint) = self.hint {
            message.u8(field::HINT).cstr(hint.as_bytes());
        }
        message.u8(0).finish();
    }

    /// The fields a client decodes from this report.
    pub fn to_fields(&self) -> ErrorFields {
        let severity = self.severity.as_str().to_owned();
        let mut fields = vec![
            (field::SEVERITY, severity.clone()),
            (field::SEVERITY_NONLOCALIZED, severity),
            (field::CODE, self.code.as_str().to_owned()),
            (field::MESSAGE, self.message.to_owned()),
        ];
        fields.extend(self.detail.map(|d| (field::DETAIL, d.to_owned())));
        fields.extend(self.hint.map(|h| (field::HINT, h.to_owned())));
        ErrorFields { fields }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accessors_find_fields_and_prefer_the_untranslated_severity() {
        let fields = ErrorFields::decode(
            b"SFEHLER\0VFATAL\0C57P01\0Mbye\0Dlater\0\0",
            "ErrorResponse",
        )
        .unwrap();
        assert_eq!(fields.severity(), Some("FATAL"));
        assert_eq!(fields.code(), Some(SqlState::ADMIN_SHUTDOWN.as_str()));
        assert_eq!(fields.message(), Some("bye"));
        assert_eq!(fields.detail(), Some("later"));
        assert_eq!(fields.hint(), None);
        let old_server = ErrorFields::decode(b"SERROR\0\0", "ErrorResponse").unwrap();
        assert_eq!(old_server.severity(), Some("ERROR"));
    }

    #[test]
    fn malformed_field_lists_are_errors() {
        for body in [&b""[..], b"SERROR\0", b"SERROR", b"SERROR\0\0x", b"S"] {
            assert!(
                ErrorFields::decode(body, "ErrorResponse").is_err(),
                "{body:?}"
            );
        }
    }
}
