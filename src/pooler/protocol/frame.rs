//! Framing of tagged messages: split exactly one complete message off a read buffer.
//!
//! After the startup packet every message in either direction is `tag (1 byte) | length (Int32,
//! counting itself but not the tag) | body`:
//! <https://www.postgresql.org/docs/current/protocol-overview.html#PROTOCOL-MESSAGE-CONCEPTS>.

use bytes::{Bytes, BytesMut};

use super::ProtocolError;

/// PostgreSQL's `PQ_SMALL_MESSAGE_LIMIT` (src/include/libpq/libpq.h): the largest body it
/// accepts for control messages such as `Sync`, `Describe` or `Execute`.
pub const SMALL_MESSAGE_LIMIT: usize = 10_000;

/// PostgreSQL's `PQ_LARGE_MESSAGE_LIMIT` (`MaxAllocSize - 1`): the largest body it accepts for
/// `Query`, `Parse`, `Bind`, `CopyData` and `FunctionCall`.
pub const LARGE_MESSAGE_LIMIT: usize = 0x3fff_fffe;

/// Largest body accepted for a password or SASL message from a client. SCRAM messages are a
/// few hundred bytes at most; a small limit means an unauthenticated peer cannot make the
/// pooler buffer much (neon's proxy uses the same figure).
pub const AUTH_MESSAGE_LIMIT: usize = 512;

/// Bytes before the body: the tag and the length word.
pub const HEADER_LENGTH: usize = 5;

/// One complete tagged message, kept whole (tag, length and body) so the pooler can forward it
/// without re-encoding. Only [`split_frame`] builds one, so `bytes` always holds at least the
/// header and agrees with its own length word.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    tag: u8,
    bytes: Bytes,
}

impl Frame {
    /// The message type byte.
    pub fn tag(&self) -> u8 {
        self.tag
    }

    /// The whole message: tag, length word and body, as it came off the wire.
    pub fn as_bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// The whole message, for forwarding.
    pub fn into_bytes(self) -> Bytes {
        self.bytes
    }

    /// The body: everything after the length word.
    pub fn body(&self) -> &[u8] {
        self.bytes.get(HEADER_LENGTH..).unwrap_or_default()
    }

    /// A zero-copy `Bytes` for `part`, which must be a sub-slice of [`Frame::body`] (decoders
    /// only call this with slices they read from the body).
    pub(crate) fn share(&self, part: &[u8]) -> Bytes {
        self.bytes.slice_ref(part)
    }
}

/// Splits one complete message off the front of `buf` if it is all there.
///
/// `max_body_length` bounds the body (the length word minus its own four bytes), as
/// PostgreSQL's `pq_getmessage(maxlen)` does. `Ok(None)` means more bytes are needed and `buf`
/// is left exactly as it was. The length is checked as soon as the header is in, so a peer
/// cannot make the caller buffer more than the limit.
pub fn split_frame(
    buf: &mut BytesMut,
    max_body_length: usize,
) -> Result<Option<Frame>, ProtocolError> {
    split_frame_limited(buf, |_| max_body_length)
}

/// Like [`split_frame`], with the limit chosen from the message tag (for example
/// [`super::frontend::max_body_length`], which mirrors PostgreSQL's per-message limits).
pub fn split_frame_limited(
    buf: &mut BytesMut,
    max_body_length: impl Fn(u8) -> usize,
) -> Result<Option<Frame>, ProtocolError> {
    let Some((tag, total)) = peek_frame(buf, max_body_length)? else {
        return Ok(None);
    };
    let bytes = buf.split_to(total).freeze();
    Ok(Some(Frame { tag, bytes }))
}

/// The tag and whole length (header included) of the complete message at the front of
/// `buf`, checked like [`split_frame_limited`] does, without splitting it off: a relay
/// that only looks at the tag forwards the bytes from its buffer as they are.
pub fn peek_frame(
    buf: &[u8],
    max_body_length: impl Fn(u8) -> usize,
) -> Result<Option<(u8, usize)>, ProtocolError> {
    let Some(&[tag, l0, l1, l2, l3]) = buf.first_chunk::<HEADER_LENGTH>() else {
        return Ok(None);
    };
    let len = i32::from_be_bytes([l0, l1, l2, l3]);
    let body_length = usize::try_from(len)
        .ok()
        .and_then(|len| len.checked_sub(4))
        .ok_or(ProtocolError::BadLength { len: len.into() })?;
    let max = max_body_length(tag);
    if body_length > max {
        return Err(ProtocolError::MessageTooLarge {
            len: body_length,
            max,
        });
    }
    let total = HEADER_LENGTH + body_length;
    if buf.len() < total {
        return Ok(None);
    }
    Ok(Some((tag, total)))
}

/// The tag and body length the header at the front of `buf` announces, whether or not the
/// body has arrived; `None` without a whole header or with a length below four. Callers check
/// the length with [`peek_frame`] first; this is for relaying a large body in pieces.
pub fn peek_header(buf: &[u8]) -> Option<(u8, usize)> {
    let &[tag, l0, l1, l2, l3] = buf.first_chunk::<HEADER_LENGTH>()?;
    let len = u32::from_be_bytes([l0, l1, l2, l3]);
    let body_length = usize::try_from(len).ok()?.checked_sub(4)?;
    Some((tag, body_length))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sync_then_query() -> Vec<u8> {
        let mut stream = vec![b'S', 0, 0, 0, 4];
        stream.extend_from_slice(&[b'Q', 0, 0, 0, 13]);
        stream.extend_from_slice(b"SELECT 1\0");
        stream
    }

    #[test]
    fn splits_consecutive_messages_and_keeps_them_whole() {
        let stream = sync_then_query();
        let mut buf = BytesMut::from(&stream[..]);
        let sync = split_frame(&mut buf, SMALL_MESSAGE_LIMIT).unwrap().unwrap();
        assert_eq!(sync.tag(), b'S');
        assert_eq!(sync.body(), b"");
        assert_eq!(&sync.as_bytes()[..], &stream[..5]);
        let query = split_frame(&mut buf, SMALL_MESSAGE_LIMIT).unwrap().unwrap();
        assert_eq!(query.tag(), b'Q');
        assert_eq!(query.body(), b"SELECT 1\0");
        assert_eq!(&query.into_bytes()[..], &stream[5..]);
        assert!(buf.is_empty());
        assert_eq!(split_frame(&mut buf, SMALL_MESSAGE_LIMIT), Ok(None));
    }

    #[test]
    fn every_prefix_needs_more_bytes_and_leaves_the_buffer_intact() {
        let stream = sync_then_query();
        // Past the first message, splitting it off first leaves a prefix of the second.
        for cut in 0..5 {
            let mut buf = BytesMut::from(&stream[..cut]);
            assert_eq!(split_frame(&mut buf, SMALL_MESSAGE_LIMIT), Ok(None));
            assert_eq!(&buf[..], &stream[..cut]);
        }
        for cut in 5..stream.len() {
            let mut buf = BytesMut::from(&stream[5..cut]);
            assert_eq!(split_frame(&mut buf, SMALL_MESSAGE_LIMIT), Ok(None));
            assert_eq!(&buf[..], &stream[5..cut]);
        }
    }

    #[test]
    fn length_below_four_or_negative_is_rejected() {
        for len in [0i32, 3, -1, i32::MIN] {
            let mut buf = BytesMut::new();
            buf.extend_from_slice(b"Q");
            buf.extend_from_slice(&len.to_be_bytes());
            assert_eq!(
                split_frame(&mut buf, SMALL_MESSAGE_LIMIT),
                Err(ProtocolError::BadLength { len: len.into() })
            );
        }
    }

    #[test]
    fn too_large_is_rejected_from_the_header_alone() {
        let mut buf = BytesMut::from(&[b'Q', 0, 0, 0x27, 0x15][..]);
        assert_eq!(
            split_frame(&mut buf, SMALL_MESSAGE_LIMIT),
            Err(ProtocolError::MessageTooLarge {
                len: 10_001,
                max: SMALL_MESSAGE_LIMIT
            })
        );
        let mut at_limit = BytesMut::from(&[b'Q', 0, 0, 0x27, 0x14][..]);
        assert_eq!(split_frame(&mut at_limit, SMALL_MESSAGE_LIMIT), Ok(None));
    }

    #[test]
    fn header_is_read_before_the_body_arrives() {
        assert_eq!(peek_header(&[b'D', 0, 1, 0, 4, 1, 2]), Some((b'D', 65536)));
        assert_eq!(peek_header(&[b'D', 0, 1, 0]), None);
        assert_eq!(peek_header(&[b'D', 0, 0, 0, 3]), None);
    }

    #[test]
    fn per_tag_limits_apply_to_their_tag_only() {
        let limit = |tag| if tag == b'p' { 8 } else { 100 };
        let mut password = BytesMut::from(&[b'p', 0, 0, 0, 13][..]);
        assert!(split_frame_limited(&mut password, limit).is_err());
        let mut query = BytesMut::from(&[b'Q', 0, 0, 0, 13][..]);
        assert_eq!(split_frame_limited(&mut query, limit), Ok(None));
    }
}
