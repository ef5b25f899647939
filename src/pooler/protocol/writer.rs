//! Writes one message into a `BytesMut`, filling in the length word when the body is done.

use bytes::{BufMut, BytesMut};

/// An open message: created by [`MessageWriter::tagged`] or [`MessageWriter::untagged`], closed
/// by [`MessageWriter::finish`], which writes the length word.
pub(crate) struct MessageWriter<'a> {
    buf: &'a mut BytesMut,
    length_at: usize,
}

impl<'a> MessageWriter<'a> {
    /// A regular message: tag, then length.
    pub(crate) fn tagged(buf: &'a mut BytesMut, tag: u8) -> Self {
        buf.put_u8(tag);
        Self::untagged(buf)
    }

    /// A startup-phase packet, which has no tag.
    pub(crate) fn untagged(buf: &'a mut BytesMut) -> Self {
        let length_at = buf.len();
        buf.put_i32(0);
        MessageWriter { buf, length_at }
    }

    pub(crate) fn u8(&mut self, value: u8) -> &mut Self {
        self.buf.put_u8(value);
        self
    }

    pub(crate) fn i16(&mut self, value: i16) -> &mut Self {
        self.buf.put_i16(value);
        self
    }

    pub(crate) fn i32(&mut self, value: i32) -> &mut Self {
        self.buf.put_i32(value);
        self
    }

    pub(crate) fn u32(&mut self, value: u32) -> &mut Self {
        self.buf.put_u32(value);
        self
    }

    pub(crate) fn bytes(&mut self, value: &[u8]) -> &mut Self {
        self.buf.put_slice(value);
        self
    }

    /// A NUL-terminated string. A NUL inside `value` would end the field early on the peer's
    /// side and shift every later field, so the value is cut at its first NUL instead: the
    /// message stays well-formed whatever the caller passes.
    pub(crate) fn cstr(&mut self, value: &[u8]) -> &mut Self {
        let end = value.iter().position(|&b| b == 0).unwrap_or(value.len());
        self.buf.put_slice(value.get(..end).unwrap_or_default());
        self.buf.put_u8(0);
        self
    }

    /// Writes the length word (which counts itself and the body, not the tag).
    pub(crate) fn finish(&mut self) {
        let len = self.buf.len() - self.length_at;
        let len = u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes();
        if let Some(word) = self.buf.get_mut(self.length_at..self.length_at + 4) {
            word.copy_from_slice(&len);
        }
    }
}

/// Clamps a collection's size to what an Int16 count can say, so the count written and the
/// items written always agree (PostgreSQL's own limits, such as 1664 result columns, are far
/// below it).
pub(crate) fn i16_count(len: usize) -> (i16, usize) {
    let count = i16::try_from(len).unwrap_or(i16::MAX);
    (count, count.unsigned_abs().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_counts_itself_and_the_body() {
        let mut buf = BytesMut::new();
        MessageWriter::tagged(&mut buf, b'Q')
            .cstr(b"SELECT 1")
            .finish();
        assert_eq!(&buf[..], b"Q\0\0\0\x0dSELECT 1\0");
    }

    #[test]
    fn an_embedded_nul_cannot_break_the_framing() {
        let mut buf = BytesMut::new();
        MessageWriter::tagged(&mut buf, b'Q').cstr(b"a\0b").finish();
        assert_eq!(&buf[..], b"Q\0\0\0\x06a\0");
    }

    #[test]
    fn counts_are_clamped_to_int16() {
        assert_eq!(i16_count(3), (3, 3));
        assert_eq!(i16_count(100_000), (i16::MAX, 32_767));
    }
}
