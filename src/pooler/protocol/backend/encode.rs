//! Encoders for backend messages: what the pooler sends to clients on its own account
//! (authentication, the startup parameters, `ReadyForQuery`, errors, admin-console results).
//!
//! Each function appends one complete message to `buf`. The one-byte answers to `SSLRequest`
//! are constants in [`crate::pooler::protocol::startup`].

use bytes::BytesMut;

use super::super::error_fields::ErrorReport;
use super::super::writer::{i16_count, MessageWriter};
use super::{auth_code, tag, TransactionStatus};

/// Type OID of `text` (src/include/catalog/pg_type.dat), the type of admin-console columns.
pub const TEXT_OID: u32 = 25;

pub fn authentication_ok(buf: &mut BytesMut) {
    authentication(buf, auth_code::OK, &[]);
}

pub fn authentication_cleartext_password(buf: &mut BytesMut) {
    authentication(buf, auth_code::CLEARTEXT_PASSWORD, &[]);
}

pub fn authentication_md5_password(buf: &mut BytesMut, salt: [u8; 4]) {
    authentication(buf, auth_code::MD5_PASSWORD, &salt);
}

/// `AuthenticationSASL` offering `mechanisms` (the pooler offers `SCRAM-SHA-256` only: no
/// `-PLUS`, as it does not do channel binding).
pub fn authentication_sasl(buf: &mut BytesMut, mechanisms: &[&str]) {
    let mut message = MessageWriter::tagged(buf, tag::AUTHENTICATION);
    message.i32(auth_code::SASL);
    for mechanism in mechanisms {
        message.cstr(mechanism.as_bytes());
    }
    message.u8(0).finish();
}

/// `AuthenticationSASLContinue` carrying the server-first-message.
pub fn authentication_sasl_continue(buf: &mut BytesMut, data: &[u8]) {
    authentication(buf, auth_code::SASL_CONTINUE, data);
}

/// `AuthenticationSASLFinal` carrying the server-final-message.
pub fn authentication_sasl_final(buf: &mut BytesMut, data: &[u8]) {
    authentication(buf, auth_code::SASL_FINAL, data);
}

fn authentication(buf: &mut BytesMut, code: i32, data: &[u8]) {
    MessageWriter::tagged(buf, tag::AUTHENTICATION)
        .i32(code)
        .bytes(data)
        .finish();
}

pub fn parameter_status(buf: &mut BytesMut, name: &str, value: &str) {
    MessageWriter::tagged(buf, tag::PARAMETER_STATUS)
        .cstr(name.as_bytes())
        .cstr(value.as_bytes())
        .finish();
}

/// `BackendKeyData`: the process id and cancel key the client will send back in a
/// `CancelRequest` (the pooler's own, not the server's).
pub fn backend_key_data(buf: &mut BytesMut, process_id: i32, secret_key: &[u8]) {
    MessageWriter::tagged(buf, tag::BACKEND_KEY_DATA)
        .i32(process_id)
        .bytes(secret_key)
        .finish();
}

pub fn ready_for_query(buf: &mut BytesMut, status: TransactionStatus) {
    MessageWriter::tagged(buf, tag::READY_FOR_QUERY)
        .u8(status.as_byte())
        .finish();
}

pub fn error_response(buf: &mut BytesMut, report: &ErrorReport<'_>) {
    report.encode(buf, tag::ERROR_RESPONSE);
}

pub fn notice_response(buf: &mut BytesMut, report: &ErrorReport<'_>) {
    report.encode(buf, tag::NOTICE_RESPONSE);
}

/// `CommandComplete` with a command tag such as `SHOW` or `SELECT 3`.
pub fn command_complete(buf: &mut BytesMut, command_tag: &str) {
    MessageWriter::tagged(buf, tag::COMMAND_COMPLETE)
        .cstr(command_tag.as_bytes())
        .finish();
}

/// `RowDescription` of text columns (what the admin console returns, like PgBouncer's).
pub fn row_description(buf: &mut BytesMut, names: &[&str]) {
    let (count, written) = i16_count(names.len());
    let mut message = MessageWriter::tagged(buf, tag::ROW_DESCRIPTION);
    message.i16(count);
    for name in names.iter().take(written) {
        column(&mut message, name, TEXT_OID);
    }
    message.finish();
}

/// `RowDescription` of `(name, type OID)` columns, all in text format.
pub fn row_description_typed(buf: &mut BytesMut, columns: &[(&str, u32)]) {
    let (count, written) = i16_count(columns.len());
    let mut message = MessageWriter::tagged(buf, tag::ROW_DESCRIPTION);
    message.i16(count);
    for (name, type_oid) in columns.iter().take(written) {
        column(&mut message, name, *type_oid);
    }
    message.finish();
}

/// One field description: not from a table (table OID and column number 0), no type
/// modifier, text format.
fn column(message: &mut MessageWriter<'_>, name: &str, type_oid: u32) {
    message
        .cstr(name.as_bytes())
        .u32(0)
        .i16(0)
        .u32(type_oid)
        .i16(type_size(type_oid))
        .i32(-1)
        .i16(0);
}

/// `pg_type.typlen` for the fixed-size built-in types a pooler reports; -1 (variable length)
/// for everything else. Clients use it only as a hint.
fn type_size(type_oid: u32) -> i16 {
    match type_oid {
        16 => 1,                     // bool
        21 => 2,                     // int2
        23 | 26 | 700 => 4,          // int4, oid, float4
        20 | 701 | 1114 | 1184 => 8, // int8, float8, timestamp, timestamptz
        _ => -1,
    }
}

/// `DataRow`; `None` is SQL NULL. Values are in text format to match the descriptions above.
pub fn data_row(buf: &mut BytesMut, values: &[Option<&[u8]>]) {
    let (count, written) = i16_count(values.len());
    let mut message = MessageWriter::tagged(buf, tag::DATA_ROW);
    message.i16(count);
    for value in values.iter().take(written) {
        match value {
            None => {
                message.i32(-1);
            }
            Some(value) => {
                let length = i32::try_from(value.len()).unwrap_or(i32::MAX);
                let value = value.get(..length.unsigned_abs() as usize).unwrap_or(value);
                message.i32(length).bytes(value);
            }
        }
    }
    message.finish();
}

pub fn empty_query_response(buf: &mut BytesMut) {
    MessageWriter::tagged(buf, tag::EMPTY_QUERY_RESPONSE).finish();
}

pub fn parse_complete(buf: &mut BytesMut) {
    MessageWriter::tagged(buf, tag::PARSE_COMPLETE).finish();
}

pub fn bind_complete(buf: &mut BytesMut) {
    MessageWriter::tagged(buf, tag::BIND_COMPLETE).finish();
}

pub fn close_complete(buf: &mut BytesMut) {
    MessageWriter::tagged(buf, tag::CLOSE_COMPLETE).finish();
}

pub fn no_data(buf: &mut BytesMut) {
    MessageWriter::tagged(buf, tag::NO_DATA).finish();
}

/// `NegotiateProtocolVersion`: the newest minor version the pooler speaks and the `_pq_.`
/// startup options it does not recognise.
pub fn negotiate_protocol_version(
    buf: &mut BytesMut,
    newest_minor: i32,
    unrecognized_options: &[&str],
) {
    let count = i32::try_from(unrecognized_options.len()).unwrap_or(i32::MAX);
    let mut message = MessageWriter::tagged(buf, tag::NEGOTIATE_PROTOCOL_VERSION);
    message.i32(newest_minor).i32(count);
    for option in unrecognized_options
        .iter()
        .take(count.unsigned_abs() as usize)
    {
        message.cstr(option.as_bytes());
    }
    message.finish();
}
