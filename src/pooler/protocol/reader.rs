//! Checked reads from a message body: every read returns a `ProtocolError` instead of
//! panicking when the body is too short, so no input can crash a decoder.

use super::ProtocolError;

/// A cursor over one message body. `message` names the message in errors.
pub(crate) struct Reader<'a> {
    rest: &'a [u8],
    message: &'static str,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(body: &'a [u8], message: &'static str) -> Self {
        Reader {
            rest: body,
            message,
        }
    }

    pub(crate) fn malformed(&self, problem: &'static str) -> ProtocolError {
        ProtocolError::Malformed {
            message: self.message,
            problem,
        }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.rest.len()
    }

    pub(crate) fn take_bytes(&mut self, len: usize) -> Result<&'a [u8], ProtocolError> {
        if len > self.rest.len() {
            return Err(self.malformed("truncated field"));
        }
        let (taken, rest) = self.rest.split_at(len);
        self.rest = rest;
        Ok(taken)
    }

    pub(crate) fn take_array<const N: usize>(&mut self) -> Result<[u8; N], ProtocolError> {
        let Some((taken, rest)) = self.rest.split_first_chunk::<N>() else {
            return Err(self.malformed("truncated field"));
        };
        self.rest = rest;
        Ok(*taken)
    }

    pub(crate) fn take_u8(&mut self) -> Result<u8, ProtocolError> {
        self.take_array::<1>().map(|[byte]| byte)
    }

    pub(crate) fn take_i16(&mut self) -> Result<i16, ProtocolError> {
        self.take_array().map(i16::from_be_bytes)
    }

    pub(crate) fn take_i32(&mut self) -> Result<i32, ProtocolError> {
        self.take_array().map(i32::from_be_bytes)
    }

    pub(crate) fn take_u32(&mut self) -> Result<u32, ProtocolError> {
        self.take_array().map(u32::from_be_bytes)
    }

    /// A NUL-terminated string, without its terminator.
    pub(crate) fn take_cstr(&mut self) -> Result<&'a [u8], ProtocolError> {
        let Some(end) = self.rest.iter().position(|&b| b == 0) else {
            return Err(self.malformed("missing NUL terminator"));
        };
        let value = self.take_bytes(end)?;
        self.take_bytes(1)?;
        Ok(value)
    }

    /// A NUL-terminated string that must be UTF-8 (used only where PostgreSQL's own values are
    /// ASCII: parameter names, mechanism names, protocol option names).
    pub(crate) fn take_str(&mut self) -> Result<&'a str, ProtocolError> {
        let value = self.take_cstr()?;
        std::str::from_utf8(value).map_err(|_| self.malformed("invalid UTF-8"))
    }

    /// A count of items that each take at least `min_item_length` bytes: checked for sign and
    /// against the bytes left before anyone allocates room for that many items.
    pub(crate) fn check_count(
        &self,
        count: i64,
        min_item_length: usize,
    ) -> Result<usize, ProtocolError> {
        let count = usize::try_from(count).map_err(|_| self.malformed("negative count"))?;
        match count.checked_mul(min_item_length) {
            Some(needed) if needed <= self.rest.len() => Ok(count),
            _ => Err(self.malformed("count exceeds message length")),
        }
    }

    /// Everything not read yet.
    pub(crate) fn take_rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.rest)
    }

    /// Fails if anything is left: like PostgreSQL's `pq_getmsgend`, a message longer than its
    /// fields is malformed.
    pub(crate) fn finish(&self) -> Result<(), ProtocolError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(self.malformed("trailing bytes after the last field"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_fields_in_order_and_fails_on_short_input() {
        let mut r = Reader::new(b"\x01\x00\x02\x00\x00\x00\x03ab\0", "Test");
        assert_eq!(r.take_u8().unwrap(), 1);
        assert_eq!(r.take_i16().unwrap(), 2);
        assert_eq!(r.take_i32().unwrap(), 3);
        assert_eq!(r.take_cstr().unwrap(), b"ab");
        assert!(r.finish().is_ok());
        assert!(r.take_u8().is_err());
        assert!(r.take_i32().is_err());
        assert!(r.take_cstr().is_err());
    }

    #[test]
    fn counts_are_checked_against_the_remaining_bytes() {
        let r = Reader::new(&[0; 8], "Test");
        assert_eq!(r.check_count(2, 4).unwrap(), 2);
        assert!(r.check_count(3, 4).is_err());
        assert!(r.check_count(-1, 4).is_err());
        assert!(r.check_count(i64::MAX, 4).is_err());
    }
}
