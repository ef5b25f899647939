//! Encoders for frontend messages: what the pooler sends to PostgreSQL on its own account
//! (authentication, preparing statements under its own names, reset queries, `Terminate`).
//!
//! Each function appends one complete message to `buf`. Startup-phase packets are in
//! [`crate::pooler::protocol::startup`].

use bytes::BytesMut;

use super::super::writer::{i16_count, MessageWriter};
use super::{tag, ObjectKind};

/// `Query`: run `sql` with the simple query protocol.
pub fn query(buf: &mut BytesMut, sql: &[u8]) {
    MessageWriter::tagged(buf, tag::QUERY).cstr(sql).finish();
}

/// `Parse`: prepare `query` as statement `name` (empty for the unnamed statement). A type OID
/// of 0 leaves the parameter's type to the server.
pub fn parse(buf: &mut BytesMut, name: &[u8], query: &[u8], param_types: &[u32]) {
    let (count, written) = i16_count(param_types.len());
    let mut message = MessageWriter::tagged(buf, tag::PARSE);
    message.cstr(name).cstr(query).i16(count);
    for &oid in param_types.iter().take(written) {
        message.u32(oid);
    }
    message.finish();
}

/// `Bind` from its parts: `rest` is everything after the statement name (parameter formats,
/// values and result formats), as [`super::FrontendMessage::Bind`] keeps it.
pub fn bind(buf: &mut BytesMut, portal: &[u8], statement: &[u8], rest: &[u8]) {
    MessageWriter::tagged(buf, tag::BIND)
        .cstr(portal)
        .cstr(statement)
        .bytes(rest)
        .finish();
}

/// `Describe` a prepared statement or a portal.
pub fn describe(buf: &mut BytesMut, kind: ObjectKind, name: &[u8]) {
    MessageWriter::tagged(buf, tag::DESCRIBE)
        .u8(kind.as_byte())
        .cstr(name)
        .finish();
}

/// `Close` a prepared statement or a portal.
pub fn close(buf: &mut BytesMut, kind: ObjectKind, name: &[u8]) {
    MessageWriter::tagged(buf, tag::CLOSE)
        .u8(kind.as_byte())
        .cstr(name)
        .finish();
}

/// `Execute` a portal; `max_rows` 0 means no limit.
pub fn execute(buf: &mut BytesMut, portal: &[u8], max_rows: i32) {
    MessageWriter::tagged(buf, tag::EXECUTE)
        .cstr(portal)
        .i32(max_rows)
        .finish();
}

pub fn sync(buf: &mut BytesMut) {
    MessageWriter::tagged(buf, tag::SYNC).finish();
}

pub fn flush(buf: &mut BytesMut) {
    MessageWriter::tagged(buf, tag::FLUSH).finish();
}

pub fn terminate(buf: &mut BytesMut) {
    MessageWriter::tagged(buf, tag::TERMINATE).finish();
}

/// `CopyData`; the same format in both directions.
pub fn copy_data(buf: &mut BytesMut, data: &[u8]) {
    MessageWriter::tagged(buf, tag::COPY_DATA)
        .bytes(data)
        .finish();
}

/// `CopyDone`; the same format in both directions.
pub fn copy_done(buf: &mut BytesMut) {
    MessageWriter::tagged(buf, tag::COPY_DONE).finish();
}

/// `CopyFail`: abort a `COPY FROM STDIN` with `message` as the reason.
pub fn copy_fail(buf: &mut BytesMut, message: &[u8]) {
    MessageWriter::tagged(buf, tag::COPY_FAIL)
        .cstr(message)
        .finish();
}

/// `PasswordMessage`: a cleartext password or an MD5 hash (`md5...`).
pub fn password_message(buf: &mut BytesMut, password: &[u8]) {
    MessageWriter::tagged(buf, tag::PASSWORD_MESSAGE)
        .cstr(password)
        .finish();
}

/// `SASLInitialResponse`: the chosen mechanism and the client-first-message.
pub fn sasl_initial_response(buf: &mut BytesMut, mechanism: &str, data: &[u8]) {
    let length = i32::try_from(data.len()).unwrap_or(i32::MAX);
    let written = data.get(..length.unsigned_abs() as usize).unwrap_or(data);
    MessageWriter::tagged(buf, tag::PASSWORD_MESSAGE)
        .cstr(mechanism.as_bytes())
        .i32(length)
        .bytes(written)
        .finish();
}

/// `SASLResponse`: a later SASL message (for SCRAM, the client-final-message).
pub fn sasl_response(buf: &mut BytesMut, data: &[u8]) {
    MessageWriter::tagged(buf, tag::PASSWORD_MESSAGE)
        .bytes(data)
        .finish();
}
