//! Backend codec tests: every encoder roundtrips through framing and decoding, every prefix
//! needs more bytes, and malformed bodies are errors.

use bytes::{Bytes, BytesMut};

use super::*;
use crate::pooler::protocol::error_fields::{ErrorReport, Severity};
use crate::pooler::protocol::frame::LARGE_MESSAGE_LIMIT;
use crate::pooler::protocol::split_frame;
use crate::pooler::protocol::sql_state::SqlState;

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
    frame
}

fn roundtrip(write: impl FnOnce(&mut BytesMut), expected: BackendMessage) {
    assert_eq!(decode(&frame_of(write)).unwrap(), expected);
}

fn frame_from(tag: u8, body: &[u8]) -> Frame {
    let mut buf = BytesMut::new();
    buf.extend_from_slice(&[tag]);
    buf.extend_from_slice(&(body.len() as i32 + 4).to_be_bytes());
    buf.extend_from_slice(body);
    split_frame(&mut buf, LARGE_MESSAGE_LIMIT).unwrap().unwrap()
}

#[test]
fn authentication_messages_roundtrip() {
    use BackendMessage::Authentication as Auth;
    roundtrip(encode::authentication_ok, Auth(Authentication::Ok));
    roundtrip(
        encode::authentication_cleartext_password,
        Auth(Authentication::CleartextPassword),
    );
    roundtrip(
        |buf| encode::authentication_md5_password(buf, [1, 2, 3, 4]),
        Auth(Authentication::Md5Password { salt: [1, 2, 3, 4] }),
    );
    roundtrip(
        |buf| encode::authentication_sasl(buf, &["SCRAM-SHA-256", "SCRAM-SHA-256-PLUS"]),
        Auth(Authentication::Sasl {
            mechanisms: vec!["SCRAM-SHA-256".into(), "SCRAM-SHA-256-PLUS".into()],
        }),
    );
    roundtrip(
        |buf| encode::authentication_sasl_continue(buf, b"r=abc,s=c2FsdA==,i=4096"),
        Auth(Authentication::SaslContinue {
            data: Bytes::from_static(b"r=abc,s=c2FsdA==,i=4096"),
        }),
    );
    roundtrip(
        |buf| encode::authentication_sasl_final(buf, b"v=xyz"),
        Auth(Authentication::SaslFinal {
            data: Bytes::from_static(b"v=xyz"),
        }),
    );
    let gss = frame_from(b'R', b"\0\0\0\x08token");
    assert_eq!(
        decode(&gss).unwrap(),
        Auth(Authentication::Other { code: 8 })
    );
}

#[test]
fn session_messages_roundtrip() {
    roundtrip(
        |buf| encode::parameter_status(buf, "server_version", "18.0"),
        BackendMessage::ParameterStatus {
            name: "server_version".into(),
            value: "18.0".into(),
        },
    );
    for key in [&[1u8, 2, 3, 4][..], &[5; 32][..]] {
        roundtrip(
            |buf| encode::backend_key_data(buf, 77, key),
            BackendMessage::BackendKeyData {
                process_id: 77,
                secret_key: Bytes::copy_from_slice(key),
            },
        );
    }
    for status in [
        TransactionStatus::Idle,
        TransactionStatus::InTransaction,
        TransactionStatus::Failed,
    ] {
        roundtrip(
            |buf| encode::ready_for_query(buf, status),
            BackendMessage::ReadyForQuery { status },
        );
    }
    roundtrip(
        |buf| encode::negotiate_protocol_version(buf, 0, &["_pq_.foo", "_pq_.bar"]),
        BackendMessage::NegotiateProtocolVersion {
            newest_minor: 0,
            unrecognized_options: vec!["_pq_.foo".into(), "_pq_.bar".into()],
        },
    );
    roundtrip(
        |buf| encode::negotiate_protocol_version(buf, 2, &[]),
        BackendMessage::NegotiateProtocolVersion {
            newest_minor: 2,
            unrecognized_options: vec![],
        },
    );
}

#[test]
fn error_and_notice_reports_roundtrip() {
    let plain = ErrorReport::new(
        Severity::Fatal,
        SqlState::INVALID_PASSWORD,
        "password authentication failed for user \"a\"",
    );
    let full = ErrorReport::new(Severity::Error, SqlState::FEATURE_NOT_SUPPORTED, "no")
        .with_detail("because")
        .with_hint("try later");
    for report in [plain, full] {
        roundtrip(
            |buf| encode::error_response(buf, &report),
            BackendMessage::ErrorResponse(report.to_fields()),
        );
        roundtrip(
            |buf| encode::notice_response(buf, &report),
            BackendMessage::NoticeResponse(report.to_fields()),
        );
    }
    let fields = full.to_fields();
    assert_eq!(fields.severity(), Some("ERROR"));
    assert_eq!(fields.code(), Some("0A000"));
    assert_eq!(fields.message(), Some("no"));
    assert_eq!(fields.detail(), Some("because"));
    assert_eq!(fields.hint(), Some("try later"));
}

#[test]
fn query_result_messages_roundtrip() {
    roundtrip(
        |buf| encode::command_complete(buf, "SELECT 3"),
        BackendMessage::CommandComplete {
            tag: Bytes::from_static(b"SELECT 3"),
        },
    );
    roundtrip(
        encode::empty_query_response,
        BackendMessage::EmptyQueryResponse,
    );
    roundtrip(encode::parse_complete, BackendMessage::ParseComplete);
    roundtrip(encode::bind_complete, BackendMessage::BindComplete);
    roundtrip(encode::close_complete, BackendMessage::CloseComplete);
    roundtrip(encode::no_data, BackendMessage::NoData);
    roundtrip(
        |buf| encode::row_description(buf, &["a"]),
        BackendMessage::RowDescription,
    );
    roundtrip(
        |buf| encode::row_description_typed(buf, &[("n", 23)]),
        BackendMessage::RowDescription,
    );
    roundtrip(
        |buf| encode::data_row(buf, &[Some(b"1"), None]),
        BackendMessage::DataRow,
    );
}

#[test]
fn row_description_and_data_row_have_the_documented_layout() {
    let mut buf = BytesMut::new();
    encode::row_description(&mut buf, &["db"]);
    let expected: &[u8] =
        b"T\0\0\0\x1b\0\x01db\0\0\0\0\0\0\0\0\0\0\x19\xff\xff\xff\xff\xff\xff\0\0";
    assert_eq!(&buf[..], expected);
    let mut buf = BytesMut::new();
    encode::row_description_typed(&mut buf, &[("n", 20)]);
    assert_eq!(
        &buf[buf.len() - 12..],
        b"\0\0\0\x14\0\x08\xff\xff\xff\xff\0\0"
    );
    let mut buf = BytesMut::new();
    encode::data_row(&mut buf, &[Some(b"ab"), None, Some(b"")]);
    let expected: &[u8] = b"D\0\0\0\x14\0\x03\0\0\0\x02ab\xff\xff\xff\xff\0\0\0\0";
    assert_eq!(&buf[..], expected);
}

#[test]
fn tag_only_messages_are_recognised() {
    let cases = [
        (tag::PORTAL_SUSPENDED, BackendMessage::PortalSuspended),
        (
            tag::PARAMETER_DESCRIPTION,
            BackendMessage::ParameterDescription,
        ),
        (tag::COPY_IN_RESPONSE, BackendMessage::CopyInResponse),
        (tag::COPY_OUT_RESPONSE, BackendMessage::CopyOutResponse),
        (tag::COPY_BOTH_RESPONSE, BackendMessage::CopyBothResponse),
        (tag::COPY_DONE, BackendMessage::CopyDone),
        (
            tag::NOTIFICATION_RESPONSE,
            BackendMessage::NotificationResponse,
        ),
        (
            tag::FUNCTION_CALL_RESPONSE,
            BackendMessage::FunctionCallResponse,
        ),
    ];
    for (tag, expected) in cases {
        assert_eq!(decode(&frame_from(tag, b"\0\0")).unwrap(), expected);
    }
    assert_eq!(
        decode(&frame_from(tag::COPY_DATA, b"row\n")).unwrap(),
        BackendMessage::CopyData {
            data: Bytes::from_static(b"row\n")
        }
    );
}

#[test]
fn malformed_bodies_are_errors() {
    let cases: &[(&str, u8, &[u8])] = &[
        ("auth without code", b'R', b"\0\0"),
        ("auth ok with trailing bytes", b'R', b"\0\0\0\0x"),
        ("md5 with short salt", b'R', b"\0\0\0\x05ab"),
        (
            "sasl without terminator",
            b'R',
            b"\0\0\0\x0aSCRAM-SHA-256\0",
        ),
        ("parameter status without value", b'S', b"name\0"),
        ("parameter status with trailing bytes", b'S', b"a\0b\0c"),
        ("key data without key", b'K', b"\0\0\0\x01"),
        ("key data with long key", b'K', &[1; 261]),
        ("key data short", b'K', b"\0\0"),
        ("ready for query unknown status", b'Z', b"X"),
        ("ready for query empty", b'Z', b""),
        ("ready for query long", b'Z', b"II"),
        ("error without terminator", b'E', b"SERROR\0"),
        ("notice truncated", b'N', b"S"),
        (
            "negotiate negative count",
            b'v',
            b"\0\0\0\0\xff\xff\xff\xff",
        ),
        (
            "negotiate count beyond body",
            b'v',
            b"\0\0\0\0\x7f\xff\xff\xffa\0",
        ),
        ("negotiate short", b'v', b"\0\0\0\0"),
        ("command complete without NUL", b'C', b"SELECT 1"),
        ("unknown tag", b'x', b""),
    ];
    for (name, tag, body) in cases {
        assert!(
            decode(&frame_from(*tag, body)).is_err(),
            "{name} was accepted"
        );
    }
}
