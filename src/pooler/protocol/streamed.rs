//! Messages too large to buffer whole: which ones the pooler may relay in pieces as they
//! arrive, and the leading fields it must read before the rest of the body passes through.
//!
//! The pooler looks at most messages only by tag. A large one (a wide row, a bulk COPY, an
//! INSERT with a big literal or parameter) is then forwarded header first and body in pieces,
//! so its size never becomes the pooler's memory.

use super::backend::tag as bt;
use super::frame::{peek_header, HEADER_LENGTH};
use super::frontend::tag as ft;
use super::ProtocolError;

/// Bodies larger than this are streamed when the pooler need not see them whole; smaller ones
/// are buffered whole as before. 64 KiB: far above the messages of ordinary traffic (which
/// therefore take the usual path untouched), equal to what a client task keeps between
/// transactions (`client::MAX_KEPT_BUFFER`), and small against the few megabytes a large
/// message may cost (a read buffer or two of this size).
pub const STREAM_ABOVE: usize = 64 * 1024;

/// The head of a client message to stream: its header and the fields the pooler reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientHead<'a> {
    pub tag: u8,
    /// The body length the header announces.
    pub body_length: usize,
    pub fields: Fields<'a>,
}

/// What the pooler needs of a streamed client message's body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fields<'a> {
    /// Query, FunctionCall and CopyData: nothing but the tag. For a Query, `text` is what
    /// has arrived of its SQL (to notice a possible DISCARD ALL).
    Opaque { text: &'a [u8] },
    /// Parse: the statement name, read before the query text.
    Parse { name: &'a [u8] },
    /// Bind: the portal and statement names, read before the parameter values.
    Bind {
        portal: &'a [u8],
        statement: &'a [u8],
    },
}

impl Fields<'_> {
    /// Bytes of the body the fields take (the names with their terminators).
    pub fn length(&self) -> usize {
        match self {
            Fields::Opaque { .. } => 0,
            Fields::Parse { name } => name.len() + 1,
            Fields::Bind { portal, statement } => portal.len() + 1 + statement.len() + 1,
        }
    }
}

/// The head of the client message at the front of `buf` if it should be streamed: its body
/// is larger than [`STREAM_ABOVE`] and it is a message that carries SQL or data. `Ok(None)`
/// means buffer on: the message is small, of another kind, or its leading names have not
/// all arrived yet. Names that do not end within [`STREAM_ABOVE`] bytes are refused, so
/// waiting for them is bounded too. The caller has checked the length against its limits.
pub fn client_head(buf: &[u8]) -> Result<Option<ClientHead<'_>>, ProtocolError> {
    let Some((tag, body_length)) = peek_header(buf) else {
        return Ok(None);
    };
    if body_length <= STREAM_ABOVE {
        return Ok(None);
    }
    let body = buf.get(HEADER_LENGTH..).unwrap_or_default();
    let mut names = Names { body, at: 0 };
    let fields = match tag {
        ft::QUERY => Fields::Opaque { text: body },
        ft::FUNCTION_CALL | ft::COPY_DATA => Fields::Opaque { text: &[] },
        ft::PARSE => match names.next("Parse")? {
            Some(name) => Fields::Parse { name },
            None => return Ok(None),
        },
        ft::BIND => match (names.next("Bind")?, names.next("Bind")?) {
            (Some(portal), Some(statement)) => Fields::Bind { portal, statement },
            _ => return Ok(None),
        },
        _ => return Ok(None),
    };
    Ok(Some(ClientHead {
        tag,
        body_length,
        fields,
    }))
}

/// NUL-terminated names read one after the other from the start of a body that may not
/// have fully arrived.
struct Names<'a> {
    body: &'a [u8],
    at: usize,
}

impl<'a> Names<'a> {
    /// The next name, `None` if its terminator has not arrived yet.
    fn next(&mut self, message: &'static str) -> Result<Option<&'a [u8]>, ProtocolError> {
        let rest = self.body.get(self.at..).unwrap_or_default();
        match rest.iter().position(|&b| b == 0) {
            Some(end) if self.at + end < STREAM_ABOVE => {
                self.at += end + 1;
                Ok(rest.get(..end))
            }
            None if self.body.len() < STREAM_ABOVE => Ok(None),
            _ => Err(ProtocolError::Malformed {
                message,
                problem: "statement or portal name too long",
            }),
        }
    }
}

/// Whether a server message may be streamed to the client: every message but the two whose
/// content the pooler reads (ParameterStatus, to re-apply settings, and ReadyForQuery's
/// transaction status). PostgreSQL keeps both small.
pub fn backend_streamable(tag: u8) -> bool {
    !matches!(tag, bt::PARAMETER_STATUS | bt::READY_FOR_QUERY)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(tag: u8, body_length: usize) -> Vec<u8> {
        let mut bytes = vec![tag];
        bytes.extend_from_slice(&(body_length as u32 + 4).to_be_bytes());
        bytes
    }

    #[test]
    fn small_messages_and_partial_headers_are_buffered() {
        assert_eq!(client_head(&header(b'Q', STREAM_ABOVE)), Ok(None));
        assert_eq!(client_head(&header(b'Q', STREAM_ABOVE + 1)[..4]), Ok(None));
        // Control messages are never streamed, whatever their header says.
        assert_eq!(client_head(&header(b'S', STREAM_ABOVE + 1)), Ok(None));
    }

    #[test]
    fn large_query_and_copy_data_stream_from_their_header() {
        let mut query = header(b'Q', 1 << 20);
        query.extend_from_slice(b"insert");
        let head = client_head(&query).unwrap().unwrap();
        assert_eq!(head.body_length, 1 << 20);
        assert_eq!(head.fields, Fields::Opaque { text: b"insert" });
        let copy = header(b'd', 1 << 20);
        let head = client_head(&copy).unwrap().unwrap();
        assert_eq!((head.tag, head.fields.length()), (b'd', 0));
    }

    #[test]
    fn bind_waits_for_both_names_then_streams() {
        let mut bind = header(b'B', 1 << 20);
        bind.extend_from_slice(b"portal\0");
        assert_eq!(client_head(&bind), Ok(None));
        bind.extend_from_slice(b"s1\0\0\x01");
        let head = client_head(&bind).unwrap().unwrap();
        assert_eq!(
            head.fields,
            Fields::Bind {
                portal: b"portal",
                statement: b"s1"
            }
        );
        assert_eq!(head.fields.length(), 10);
    }

    #[test]
    fn names_that_never_end_are_refused_once_the_threshold_is_reached() {
        let mut parse = header(b'P', 1 << 20);
        parse.resize(HEADER_LENGTH + STREAM_ABOVE - 1, b'a');
        assert_eq!(client_head(&parse), Ok(None));
        parse.push(b'a');
        assert!(client_head(&parse).is_err());
    }

    #[test]
    fn only_parameter_status_and_ready_for_query_are_read_whole() {
        assert!(backend_streamable(b'D'));
        assert!(backend_streamable(b'd'));
        assert!(backend_streamable(b'E'));
        assert!(!backend_streamable(b'S'));
        assert!(!backend_streamable(b'Z'));
    }
}
