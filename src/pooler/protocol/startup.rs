//! The untagged packets that open a connection: `StartupMessage`, `SSLRequest`,
//! `GSSENCRequest` and `CancelRequest`.
//!
//! They have no tag byte — `length (Int32, counting itself) | code (Int32) | body` — so they are
//! framed separately from every later message. Formats:
//! <https://www.postgresql.org/docs/current/protocol-message-formats.html>.

use bytes::{Bytes, BytesMut};

use super::reader::Reader;
use super::writer::MessageWriter;
use super::ProtocolError;

/// PostgreSQL's `MAX_STARTUP_PACKET_LENGTH` (src/include/libpq/pqcomm.h), the usual
/// `max_length` for [`decode`].
pub const MAX_STARTUP_PACKET_LENGTH: usize = 10_000;

/// Longest cancel key PostgreSQL accepts (`MAX_CANCEL_KEY_LENGTH`): protocol 3.2 (PostgreSQL
/// 18) made the key variable-length, while 3.0 keys are 4 bytes.
pub const MAX_CANCEL_KEY_LENGTH: usize = 256;

/// The server's one-byte answer to `SSLRequest`: go ahead with the TLS handshake.
pub const SSL_ACCEPTED: u8 = b'S';
/// The server's one-byte answer to `SSLRequest` or `GSSENCRequest`: continue unencrypted.
pub const ENCRYPTION_REFUSED: u8 = b'N';

/// Request codes, from src/include/libpq/pqcomm.h: the major half 1234 cannot be a protocol
/// version, which is how PostgreSQL tells these apart from a `StartupMessage`.
const CANCEL_REQUEST_CODE: u32 = (1234 << 16) | 5678;
const SSL_REQUEST_CODE: u32 = (1234 << 16) | 5679;
const GSSENC_REQUEST_CODE: u32 = (1234 << 16) | 5680;
const SPECIAL_MAJOR: u16 = 1234;
const PROTOCOL_MAJOR: u16 = 3;

/// Length word plus code.
const FIXED_LENGTH: usize = 8;

/// The first packet of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartupPacket {
    /// `StartupMessage` for protocol 3.`protocol_minor`. Whether a minor above what the pooler
    /// speaks gets a `NegotiateProtocolVersion`, and whether `user` is present, is the
    /// caller's business.
    Startup {
        protocol_minor: u16,
        params: Vec<(String, String)>,
    },
    SslRequest,
    GssEncRequest,
    /// `CancelRequest`: the key is 4 bytes in protocol 3.0 and up to 256 bytes in 3.2.
    Cancel {
        process_id: i32,
        secret_key: Bytes,
    },
}

impl StartupPacket {
    /// The value of a startup parameter (`user`, `database`, `application_name`, ...), if this
    /// is a `StartupMessage` that has it.
    pub fn param(&self, name: &str) -> Option<&str> {
        match self {
            StartupPacket::Startup { params, .. } => params
                .iter()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.as_str()),
            _ => None,
        }
    }
}

/// Splits one startup-phase packet off `buf`. `max_length` bounds the whole packet, length word
/// included, as PostgreSQL's `MAX_STARTUP_PACKET_LENGTH` does. `Ok(None)` means more bytes are
/// needed and `buf` is left as it was.
pub fn decode(
    buf: &mut BytesMut,
    max_length: usize,
) -> Result<Option<StartupPacket>, ProtocolError> {
    let Some(&[l0, l1, l2, l3]) = buf.first_chunk::<4>() else {
        return Ok(None);
    };
    let len = i32::from_be_bytes([l0, l1, l2, l3]);
    let length = usize::try_from(len)
        .ok()
        .filter(|&length| length >= FIXED_LENGTH)
        .ok_or(ProtocolError::BadLength { len: len.into() })?;
    if length > max_length {
        return Err(ProtocolError::MessageTooLarge {
            len: length,
            max: max_length,
        });
    }
    if buf.len() < length {
        return Ok(None);
    }
    let packet = buf.split_to(length).freeze();
    decode_packet(&packet).map(Some)
}

fn decode_packet(packet: &Bytes) -> Result<StartupPacket, ProtocolError> {
    let mut reader = Reader::new(packet.get(4..).unwrap_or_default(), "startup");
    let code = reader.take_u32()?;
    match code {
        SSL_REQUEST_CODE => {
            reader.finish()?;
            Ok(StartupPacket::SslRequest)
        }
        GSSENC_REQUEST_CODE => {
            reader.finish()?;
            Ok(StartupPacket::GssEncRequest)
        }
        CANCEL_REQUEST_CODE => {
            let mut reader = Reader::new(reader.take_rest(), "CancelRequest");
            let process_id = reader.take_i32()?;
            let key = reader.take_rest();
            if key.is_empty() || key.len() > MAX_CANCEL_KEY_LENGTH {
                return Err(reader.malformed("cancel key must be 1 to 256 bytes"));
            }
            Ok(StartupPacket::Cancel {
                process_id,
                secret_key: packet.slice_ref(key),
            })
        }
        _ => {
            let major = (code >> 16) as u16;
            let minor = (code & 0xffff) as u16;
            match major {
                PROTOCOL_MAJOR => decode_params(reader.take_rest(), minor),
                SPECIAL_MAJOR => Err(ProtocolError::UnknownStartupCode { code }),
                _ => Err(ProtocolError::UnsupportedProtocolVersion { major, minor }),
            }
        }
    }
}

/// `name\0value\0` pairs ended by an empty name, which must be the last byte (PostgreSQL:
/// "invalid startup packet layout: expected terminator as last byte"). PostgreSQL takes these
/// as raw bytes; bytes that are not UTF-8 become U+FFFD rather than refusing the connection
/// (such a `user` or `database` then simply matches nothing).
fn decode_params(body: &[u8], protocol_minor: u16) -> Result<StartupPacket, ProtocolError> {
    let mut reader = Reader::new(body, "StartupMessage");
    // Each pair takes at least two bytes, which bounds the allocation below.
    let mut params = Vec::with_capacity(reader.remaining() / 2);
    loop {
        let name = reader.take_cstr()?;
        if name.is_empty() {
            break;
        }
        let value = reader.take_cstr()?;
        params.push((text(name), text(value)));
    }
    reader.finish()?;
    Ok(StartupPacket::Startup {
        protocol_minor,
        params,
    })
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Writes a `StartupMessage` for protocol 3.`protocol_minor` (the pooler opens its server
/// connections with 3.0).
pub fn encode_startup_message(buf: &mut BytesMut, protocol_minor: u16, params: &[(&str, &str)]) {
    let mut message = MessageWriter::untagged(buf);
    message.u32((u32::from(PROTOCOL_MAJOR) << 16) | u32::from(protocol_minor));
    for (name, value) in params {
        message.cstr(name.as_bytes()).cstr(value.as_bytes());
    }
    message.u8(0).finish();
}

/// Writes an `SSLRequest`.
pub fn encode_ssl_request(buf: &mut BytesMut) {
    MessageWriter::untagged(buf).u32(SSL_REQUEST_CODE).finish();
}

/// Writes a `GSSENCRequest`.
pub fn encode_gssenc_request(buf: &mut BytesMut) {
    MessageWriter::untagged(buf)
        .u32(GSSENC_REQUEST_CODE)
        .finish();
}

/// Writes a `CancelRequest` carrying the server's own process id and key (from its
/// `BackendKeyData`).
pub fn encode_cancel_request(buf: &mut BytesMut, process_id: i32, secret_key: &[u8]) {
    MessageWriter::untagged(buf)
        .u32(CANCEL_REQUEST_CODE)
        .i32(process_id)
        .bytes(secret_key)
        .finish();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(bytes: &[u8]) -> Result<Option<StartupPacket>, ProtocolError> {
        decode(&mut BytesMut::from(bytes), MAX_STARTUP_PACKET_LENGTH)
    }

    fn roundtrip(bytes: BytesMut, expected: StartupPacket) {
        for cut in 0..bytes.len() {
            let mut prefix = BytesMut::from(&bytes[..cut]);
            assert_eq!(decode(&mut prefix, MAX_STARTUP_PACKET_LENGTH), Ok(None));
            assert_eq!(&prefix[..], &bytes[..cut]);
        }
        let mut buf = bytes;
        buf.extend_from_slice(b"next");
        assert_eq!(
            decode(&mut buf, MAX_STARTUP_PACKET_LENGTH),
            Ok(Some(expected))
        );
        assert_eq!(&buf[..], b"next");
    }

    #[test]
    fn startup_message_roundtrips_with_params() {
        let mut buf = BytesMut::new();
        encode_startup_message(
            &mut buf,
            0,
            &[("user", "alice"), ("database", "app"), ("options", "")],
        );
        let packet = StartupPacket::Startup {
            protocol_minor: 0,
            params: vec![
                ("user".into(), "alice".into()),
                ("database".into(), "app".into()),
                ("options".into(), String::new()),
            ],
        };
        assert_eq!(packet.param("user"), Some("alice"));
        assert_eq!(packet.param("options"), Some(""));
        assert_eq!(packet.param("application_name"), None);
        roundtrip(buf, packet);
    }

    #[test]
    fn protocol_3_2_startup_keeps_its_minor_version() {
        let mut buf = BytesMut::new();
        encode_startup_message(&mut buf, 2, &[("user", "bob")]);
        let expected = StartupPacket::Startup {
            protocol_minor: 2,
            params: vec![("user".into(), "bob".into())],
        };
        roundtrip(buf, expected);
    }

    #[test]
    fn encryption_requests_roundtrip() {
        let mut ssl = BytesMut::new();
        encode_ssl_request(&mut ssl);
        assert_eq!(&ssl[..], &[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]);
        roundtrip(ssl, StartupPacket::SslRequest);
        let mut gss = BytesMut::new();
        encode_gssenc_request(&mut gss);
        roundtrip(gss, StartupPacket::GssEncRequest);
        assert_eq!(StartupPacket::SslRequest.param("user"), None);
    }

    #[test]
    fn cancel_requests_roundtrip_with_short_and_long_keys() {
        for key in [
            vec![1, 2, 3, 4],
            vec![7; 32],
            vec![9; MAX_CANCEL_KEY_LENGTH],
        ] {
            let mut buf = BytesMut::new();
            encode_cancel_request(&mut buf, 4242, &key);
            let expected = StartupPacket::Cancel {
                process_id: 4242,
                secret_key: Bytes::from(key),
            };
            roundtrip(buf, expected);
        }
    }

    #[test]
    fn other_protocol_versions_are_refused_clearly() {
        let v2 = [0, 0, 0, 9, 0, 2, 0, 0, 0];
        assert_eq!(
            decode_all(&v2),
            Err(ProtocolError::UnsupportedProtocolVersion { major: 2, minor: 0 })
        );
        let unknown = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x31];
        assert_eq!(
            decode_all(&unknown),
            Err(ProtocolError::UnknownStartupCode {
                code: (1234 << 16) | 5681
            })
        );
    }

    #[test]
    fn malformed_packets_are_errors() {
        let cases: &[(&str, &[u8])] = &[
            ("length below 8", &[0, 0, 0, 7, 0, 3, 0, 0]),
            ("negative length", &[0xff, 0xff, 0xff, 0xff, 0, 3, 0, 0]),
            ("no terminator", &[0, 0, 0, 8, 0, 3, 0, 0]),
            ("name without NUL", b"\0\0\0\x0b\0\x03\0\0use"),
            ("value without NUL", b"\0\0\0\x0e\0\x03\0\0user\0a"),
            ("bytes after terminator", b"\0\0\0\x0a\0\x03\0\0\0x"),
            (
                "SSLRequest with a body",
                &[0, 0, 0, 9, 0x04, 0xd2, 0x16, 0x2f, 0],
            ),
            (
                "cancel without key",
                &[0, 0, 0, 12, 0x04, 0xd2, 0x16, 0x2e, 0, 0, 0, 1],
            ),
            (
                "cancel without pid",
                &[0, 0, 0, 10, 0x04, 0xd2, 0x16, 0x2e, 0, 0],
            ),
        ];
        for (name, bytes) in cases {
            assert!(decode_all(bytes).is_err(), "{name} was accepted");
        }
        let mut long_key = BytesMut::new();
        encode_cancel_request(&mut long_key, 1, &[0; MAX_CANCEL_KEY_LENGTH + 1]);
        assert!(decode_all(&long_key).is_err());
    }

    #[test]
    fn non_utf8_params_are_kept_lossily_not_refused() {
        let packet = decode_all(b"\0\0\0\x0d\0\x03\0\0\xff\0a\0\0")
            .unwrap()
            .unwrap();
        assert_eq!(packet.param("\u{fffd}"), Some("a"));
    }

    #[test]
    fn oversized_packets_are_refused_before_buffering() {
        let header = 10_001u32.to_be_bytes();
        assert_eq!(
            decode_all(&header),
            Err(ProtocolError::MessageTooLarge {
                len: 10_001,
                max: MAX_STARTUP_PACKET_LENGTH
            })
        );
    }
}
