//! Frontend codec tests: every encoder roundtrips through framing and decoding, every prefix
//! needs more bytes, and malformed bodies are errors.

use bytes::{Bytes, BytesMut};

use super::*;
use crate::pooler::protocol::split_frame;

fn frame_of(write: impl FnOnce(&mut BytesMut)) -> Frame {
    let mut buf = BytesMut::new();
    write(&mut buf);
    let whole = buf.clone();
    for cut in 0..whole.len() {
        let mut prefix = BytesMut::from(&whole[..cut]);
        assert_eq!(split_frame(&mut prefix, LARGE_MESSAGE_LIMIT), Ok(None));
        assert_eq!(&prefix[..], &whole[..cut]);
    }
    let frame = split_frame(&mut buf, LARGE_MESSAGE_LIMIT).unwrap().unwrap();
    assert!(buf.is_empty(), "encoder wrote more than one message");
    assert_eq!(frame.as_bytes(), &whole);
    frame
}

fn roundtrip(write: impl FnOnce(&mut BytesMut), expected: FrontendMessage) {
    assert_eq!(decode(&frame_of(write)).unwrap(), expected);
}

fn b(s: &'static [u8]) -> Bytes {
    Bytes::from_static(s)
}

#[test]
fn every_encoded_message_decodes_to_itself() {
    roundtrip(
        |buf| encode::query(buf, b"SELECT 1"),
        FrontendMessage::Query {
            sql: b(b"SELECT 1"),
        },
    );
    roundtrip(
        |buf| encode::parse(buf, b"s1", b"SELECT $1, $2", &[23, 0]),
        FrontendMessage::Parse {
            name: b(b"s1"),
            query: b(b"SELECT $1, $2"),
            param_types: vec![23, 0],
        },
    );
    roundtrip(
        |buf| encode::bind(buf, b"", b"s1", b"\0\0\0\x01\0\0\0\x011\0\0"),
        FrontendMessage::Bind {
            portal: b(b""),
            statement: b(b"s1"),
            rest: b(b"\0\0\0\x01\0\0\0\x011\0\0"),
        },
    );
    for kind in [ObjectKind::PreparedStatement, ObjectKind::Portal] {
        roundtrip(
            |buf| encode::describe(buf, kind, b"x"),
            FrontendMessage::Describe {
                kind,
                name: b(b"x"),
            },
        );
        roundtrip(
            |buf| encode::close(buf, kind, b""),
            FrontendMessage::Close { kind, name: b(b"") },
        );
    }
    roundtrip(
        |buf| encode::execute(buf, b"p", 100),
        FrontendMessage::Execute {
            portal: b(b"p"),
            max_rows: 100,
        },
    );
    roundtrip(encode::sync, FrontendMessage::Sync);
    roundtrip(encode::flush, FrontendMessage::Flush);
    roundtrip(encode::terminate, FrontendMessage::Terminate);
    roundtrip(
        |buf| encode::copy_data(buf, b"1\t2\n"),
        FrontendMessage::CopyData { data: b(b"1\t2\n") },
    );
    roundtrip(encode::copy_done, FrontendMessage::CopyDone);
    roundtrip(
        |buf| encode::copy_fail(buf, b"oops"),
        FrontendMessage::CopyFail {
            message: b(b"oops"),
        },
    );
    roundtrip(
        |buf| encode::password_message(buf, b"md5abc"),
        FrontendMessage::PasswordMessage {
            body: b(b"md5abc\0"),
        },
    );
    roundtrip(
        |buf| encode::sasl_response(buf, b"c=biws,r=x,p=y"),
        FrontendMessage::PasswordMessage {
            body: b(b"c=biws,r=x,p=y"),
        },
    );
}

#[test]
fn non_utf8_sql_and_names_are_accepted() {
    roundtrip(
        |buf| encode::query(buf, b"SELECT '\xe9'"),
        FrontendMessage::Query {
            sql: b(b"SELECT '\xe9'"),
        },
    );
    roundtrip(
        |buf| encode::close(buf, ObjectKind::PreparedStatement, b"caf\xe9"),
        FrontendMessage::Close {
            kind: ObjectKind::PreparedStatement,
            name: b(b"caf\xe9"),
        },
    );
}

#[test]
fn function_call_body_is_kept_raw() {
    let mut buf = BytesMut::from(&b"F\0\0\0\x0a\0\0\x04\xd2\0\0"[..]);
    let frame = split_frame(&mut buf, LARGE_MESSAGE_LIMIT).unwrap().unwrap();
    assert_eq!(
        decode(&frame).unwrap(),
        FrontendMessage::FunctionCall {
            body: b(b"\0\0\x04\xd2\0\0")
        }
    );
}

#[test]
fn bind_is_rewritten_with_a_new_statement_name_and_the_same_values() {
    let rest: &[u8] = b"\0\x01\0\x01\0\x01\0\0\0\x04\0\0\0\x2a\0\0";
    let frame = frame_of(|buf| encode::bind(buf, b"portal", b"client_stmt", rest));
    let rewritten = rewrite_bind_statement(&frame, b"pgplatform_7").unwrap();
    let mut buf = BytesMut::from(&rewritten[..]);
    let frame = split_frame(&mut buf, LARGE_MESSAGE_LIMIT).unwrap().unwrap();
    assert!(buf.is_empty());
    assert_eq!(
        decode(&frame).unwrap(),
        FrontendMessage::Bind {
            portal: b(b"portal"),
            statement: b(b"pgplatform_7"),
            rest: Bytes::copy_from_slice(rest),
        }
    );
    let sync = frame_of(encode::sync);
    assert!(rewrite_bind_statement(&sync, b"x").is_err());
}

#[test]
fn sasl_initial_response_roundtrips() {
    let frame = frame_of(|buf| encode::sasl_initial_response(buf, "SCRAM-SHA-256", b"n,,n=,r=abc"));
    assert_eq!(frame.tag(), tag::PASSWORD_MESSAGE);
    assert_eq!(
        decode_sasl_initial_response(frame.body()).unwrap(),
        SaslInitialResponse {
            mechanism: "SCRAM-SHA-256",
            data: Some(b"n,,n=,r=abc")
        }
    );
    assert_eq!(
        decode_sasl_initial_response(b"SCRAM-SHA-256\0\xff\xff\xff\xff").unwrap(),
        SaslInitialResponse {
            mechanism: "SCRAM-SHA-256",
            data: None
        }
    );
}

#[test]
fn password_message_body_decodes() {
    assert_eq!(decode_password_message(b"secret\0").unwrap(), b"secret");
    assert!(decode_password_message(b"secret").is_err());
    assert!(decode_password_message(b"a\0b").is_err());
}

#[test]
fn malformed_bodies_are_errors() {
    let cases: &[(&str, u8, &[u8])] = &[
        ("query without NUL", b'Q', b"SELECT 1"),
        ("query with trailing bytes", b'Q', b"SELECT 1\0x"),
        ("parse without query", b'P', b"s\0"),
        ("parse without count", b'P', b"s\0q\0"),
        ("parse with negative count", b'P', b"s\0q\0\xff\xff"),
        ("parse count beyond body", b'P', b"s\0q\0\0\x02\0\0\0\x17"),
        ("parse with trailing bytes", b'P', b"s\0q\0\0\0x"),
        ("bind without statement", b'B', b"portal\0"),
        ("describe with bad kind", b'D', b"Xname\0"),
        ("describe without name", b'D', b"S"),
        ("close empty", b'C', b""),
        ("execute without max_rows", b'E', b"p\0\0\0"),
        ("sync with body", b'S', b"x"),
        ("flush with body", b'H', b"x"),
        ("terminate with body", b'X', b"x"),
        ("copy done with body", b'c', b"x"),
        ("copy fail without NUL", b'f', b"oops"),
        ("unknown tag", b'Z', b""),
    ];
    for (name, tag, body) in cases {
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&[*tag]);
        buf.extend_from_slice(&(body.len() as i32 + 4).to_be_bytes());
        buf.extend_from_slice(body);
        let frame = split_frame(&mut buf, LARGE_MESSAGE_LIMIT).unwrap().unwrap();
        assert!(decode(&frame).is_err(), "{name} was accepted");
    }
}

#[test]
fn malformed_sasl_initial_responses_are_errors() {
    let cases: &[&[u8]] = &[
        b"",
        b"SCRAM-SHA-256",
        b"SCRAM-SHA-256\0",
        b"SCRAM-SHA-256\0\0\0\0\x05abc",
        b"SCRAM-SHA-256\0\xff\xff\xff\xfe",
        b"SCRAM-SHA-256\0\0\0\0\x01ab",
        b"\xff\0\0\0\0\0",
    ];
    for body in cases {
        assert!(
            decode_sasl_initial_response(body).is_err(),
            "{body:?} was accepted"
        );
    }
}

#[test]
fn per_message_limits_follow_postgresql() {
    assert_eq!(max_body_length(tag::QUERY), LARGE_MESSAGE_LIMIT);
    assert_eq!(max_body_length(tag::COPY_DATA), LARGE_MESSAGE_LIMIT);
    assert_eq!(max_body_length(tag::SYNC), SMALL_MESSAGE_LIMIT);
    assert_eq!(max_body_length(tag::PASSWORD_MESSAGE), AUTH_MESSAGE_LIMIT);
}

#[test]
fn before_authentication_only_a_small_password_message_is_framed() {
    // A Query header announcing 1 GiB is refused from its tag alone, before any body.
    let mut query = BytesMut::from(&[tag::QUERY, 0x40, 0, 0, 4][..]);
    assert_eq!(
        split_auth_response(&mut query),
        Err(ProtocolError::UnexpectedMessage {
            tag: tag::QUERY,
            expected: "a password or SASL response"
        })
    );
    // Even a small message of another kind is refused, from its first byte.
    for other in [tag::SYNC, tag::TERMINATE, tag::COPY_DATA, 0] {
        assert!(split_auth_response(&mut BytesMut::from(&[other][..])).is_err());
    }
    // An oversized password message is refused from its header.
    let too_long = u32::try_from(AUTH_MESSAGE_LIMIT + 5).unwrap().to_be_bytes();
    let mut password = BytesMut::from(&[tag::PASSWORD_MESSAGE][..]);
    password.extend_from_slice(&too_long);
    assert!(matches!(
        split_auth_response(&mut password),
        Err(ProtocolError::MessageTooLarge { .. })
    ));
    // A well-formed one is framed; a partial one waits.
    let mut ok = BytesMut::new();
    encode::sasl_response(&mut ok, b"c=biws,r=abc,p=xyz");
    let whole = ok.clone();
    let mut partial = BytesMut::from(&whole[..whole.len() - 1]);
    assert_eq!(split_auth_response(&mut partial), Ok(None));
    assert_eq!(split_auth_response(&mut BytesMut::new()), Ok(None));
    let frame = split_auth_response(&mut ok).unwrap().unwrap();
    assert_eq!(frame.as_bytes(), &whole);
}
