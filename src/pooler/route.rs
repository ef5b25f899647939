//! Where each client message goes in transaction mode: forwarded as is, rewritten to a
//! pooler-wide statement name (with a Parse injected when this server connection lacks the
//! statement), or answered by the pooler itself. Every decision queues what the server
//! will answer, in `txn::Tracker`.

use bytes::{BufMut, BytesMut};

use super::prepared::{Catalog, ClientStatements, ServerStatements, StatementError, StatementText};
use super::protocol::frame::HEADER_LENGTH;
use super::protocol::frontend::{self, encode as fe, tag as ft, FrontendMessage, ObjectKind};
use super::protocol::streamed::{ClientHead, Fields};
use super::protocol::{Frame, ProtocolError};
use super::txn::{Pending, Reply, Tracker};

/// What the client task must do besides writing `out` to the server.
#[derive(Debug, PartialEq, Eq)]
pub enum Routed {
    Sent,
    /// A simple query that drops every prepared statement (DISCARD ALL, DEALLOCATE ALL).
    SentForgetStatements,
    /// A streamed simple query that might be one of those (only its start was seen): the
    /// server connection's statements are forgotten, to be prepared again if needed.
    SentMaybeForgetStatements,
}

/// What routing changes on a server connection (`ServerConn::book`): the replies it owes
/// and the statements prepared on it. Two references, so the relay passes it for free.
pub struct ServerBook<'a> {
    pub tracker: &'a mut Tracker,
    pub prepared: &'a mut ServerStatements,
}

/// Statement-rewriting context; `None` in session mode or with max_prepared_statements 0,
/// where names pass through untouched.
pub struct Rewrite<'a> {
    pub catalog: &'a Catalog,
    pub statements: &'a mut ClientStatements,
    pub max_prepared: usize,
}

/// Routes one decoded client message onto `server`, appending to `out`.
pub fn route(
    frame: &Frame,
    message: FrontendMessage,
    server: &mut ServerBook<'_>,
    rewrite: Option<Rewrite<'_>>,
    out: &mut BytesMut,
) -> Result<Routed, ProtocolError> {
    let forward = |out: &mut BytesMut| out.extend_from_slice(frame.as_bytes());
    let Some(rw) = rewrite else {
        let pending = pending_for(&message);
        forward(out);
        if let Some(p) = pending {
            server.tracker.push(p);
        }
        return Ok(routed_query(&message));
    };
    match message {
        FrontendMessage::Parse {
            name,
            query,
            param_types,
        } if !name.is_empty() => {
            if rw.statements.contains(&name) {
                fail(server, StatementError::already_exists(&name), out);
                return Ok(Routed::Sent);
            }
            let text = StatementText { query, param_types };
            let statement = rw.statements.parse(rw.catalog, &name, text);
            server.prepared.counts.client_parses += 1;
            if server.prepared.touch(&statement.server_name) {
                prepare(server, &statement, Reply::Forward, rw.max_prepared, out);
            } else {
                server.tracker.push(Pending::Parse {
                    reply: Reply::Synthesize,
                    server_name: None,
                });
            }
        }
        FrontendMessage::Bind { statement, .. } if !statement.is_empty() => {
            match ensure(server, &rw, &statement, out) {
                Some(server_name) => {
                    server.prepared.counts.binds += 1;
                    out.extend_from_slice(&frontend::rewrite_bind_statement(
                        frame,
                        server_name.as_bytes(),
                    )?);
                    server.tracker.push(Pending::Bind);
                }
                None => fail(server, StatementError::does_not_exist(&statement), out),
            }
        }
        FrontendMessage::Describe {
            kind: ObjectKind::PreparedStatement,
            name,
        } if !name.is_empty() => match ensure(server, &rw, &name, out) {
            Some(server_name) => {
                fe::describe(out, ObjectKind::PreparedStatement, server_name.as_bytes());
                server.tracker.push(Pending::Describe);
            }
            None => fail(server, StatementError::does_not_exist(&name), out),
        },
        FrontendMessage::Close {
            kind: ObjectKind::PreparedStatement,
            name,
        } if !name.is_empty() => {
            // The statement stays prepared on the server for whoever needs it next.
            rw.statements.remove(&String::from_utf8_lossy(&name));
            server.tracker.push(Pending::Close {
                reply: Reply::Synthesize,
            });
        }
        other => {
            let pending = pending_for(&other);
            forward(out);
            if let Some(p) = pending {
                server.tracker.push(p);
            }
            return Ok(routed_query(&other));
        }
    }
    Ok(Routed::Sent)
}

/// Routes the head of a client message whose body is streamed after it (see
/// `protocol::streamed`): the tracker learns what the message is owed, and `out` gets its
/// header and leading names, the statement renamed for a Bind of a pooler-wide statement.
/// The body that follows the names is the caller's to copy through unchanged. The caller
/// streams a named Parse only without `rewrite` (with it, the text is kept whole).
pub fn route_streamed(
    head: &ClientHead<'_>,
    server: &mut ServerBook<'_>,
    rewrite: Option<Rewrite<'_>>,
    out: &mut BytesMut,
) -> Result<Routed, ProtocolError> {
    let rest = head.body_length - head.fields.length();
    match head.fields {
        Fields::Opaque { text } => {
            put_header(out, head.tag, rest)?;
            if head.tag == ft::COPY_DATA {
                return Ok(Routed::Sent);
            }
            server.tracker.push(Pending::Query);
            // Only DISCARD ALL or DEALLOCATE ALL drowned in blanks could be that large.
            let first = text.iter().find(|b| !b.is_ascii_whitespace());
            if head.tag == ft::QUERY && first.is_none_or(|b| matches!(b, b'd' | b'D')) {
                return Ok(Routed::SentMaybeForgetStatements);
            }
        }
        Fields::Parse { name } => {
            put_header(out, head.tag, rest + name.len() + 1)?;
            put_cstr(out, name);
            server.tracker.push(Pending::Parse {
                reply: Reply::Forward,
                server_name: (!name.is_empty()).then(|| String::from_utf8_lossy(name).into_owned()),
            });
        }
        Fields::Bind { portal, statement } => {
            let renamed = match rewrite {
                Some(rw) if !statement.is_empty() => {
                    let renamed = ensure(server, &rw, statement, out);
                    server.prepared.counts.binds += u64::from(renamed.is_some());
                    if renamed.is_none() {
                        // PostgreSQL skips the Bind that follows the error.
                        fail(server, StatementError::does_not_exist(statement), out);
                    }
                    renamed
                }
                _ => None,
            };
            let statement = renamed.as_ref().map_or(statement, |name| name.as_bytes());
            put_header(out, head.tag, portal.len() + 1 + statement.len() + 1 + rest)?;
            put_cstr(out, portal);
            put_cstr(out, statement);
            server.tracker.push(Pending::Bind);
        }
    }
    Ok(Routed::Sent)
}

/// A message header announcing `body_length` bytes of body.
fn put_header(out: &mut BytesMut, tag: u8, body_length: usize) -> Result<(), ProtocolError> {
    let len = body_length
        .checked_add(4)
        .and_then(|len| i32::try_from(len).ok())
        .ok_or(ProtocolError::MessageTooLarge {
            len: body_length,
            max: i32::MAX as usize - 4,
        })?;
    out.reserve(HEADER_LENGTH);
    out.put_u8(tag);
    out.put_i32(len);
    Ok(())
}

fn put_cstr(out: &mut BytesMut, value: &[u8]) {
    out.extend_from_slice(value);
    out.put_u8(0);
}

/// A client's statement-name error at this point of the stream. PostgreSQL is sent a
/// Describe of an invalid subtype, which it answers with an ERROR right here and then
/// treats as any error of its own: it skips the client's messages up to the Sync and
/// aborts an open transaction block. The tracker swaps that ERROR for `error`.
fn fail(server: &mut ServerBook<'_>, error: StatementError, out: &mut BytesMut) {
    out.extend_from_slice(&[ft::DESCRIBE, 0, 0, 0, 6, b'!', 0]);
    server.tracker.push(Pending::Fail(error));
}

/// The server-side name for a client statement, preparing it on `server` first if needed;
/// `None` for a name the client never parsed (or closed).
fn ensure(
    server: &mut ServerBook<'_>,
    rw: &Rewrite<'_>,
    client_name: &[u8],
    out: &mut BytesMut,
) -> Option<String> {
    let statement = rw
        .statements
        .get(&String::from_utf8_lossy(client_name))?
        .clone();
    if server.prepared.touch(&statement.server_name) {
        prepare(server, &statement, Reply::Swallow, rw.max_prepared, out);
    }
    Some(statement.server_name.clone())
}

fn prepare(
    server: &mut ServerBook<'_>,
    statement: &super::prepared::Statement,
    reply: Reply,
    max_prepared: usize,
    out: &mut BytesMut,
) {
    for evicted in server
        .prepared
        .add(statement.server_name.clone(), max_prepared)
    {
        fe::close(out, ObjectKind::PreparedStatement, evicted.as_bytes());
        server.tracker.push(Pending::Close {
            reply: Reply::Swallow,
        });
    }
    // Should the bookkeeping ever disagree with the server (a DISCARD ALL inside a longer
    // query string), closing first turns "already exists" into a no-op: Close of a missing
    // statement is not an error.
    fe::close(
        out,
        ObjectKind::PreparedStatement,
        statement.server_name.as_bytes(),
    );
    server.tracker.push(Pending::Close {
        reply: Reply::Swallow,
    });
    fe::parse(
        out,
        statement.server_name.as_bytes(),
        &statement.text.query,
        &statement.text.param_types,
    );
    server.tracker.push(Pending::Parse {
        reply,
        server_name: Some(statement.server_name.clone()),
    });
}

/// The reply a forwarded message is owed.
fn pending_for(message: &FrontendMessage) -> Option<Pending> {
    Some(match message {
        FrontendMessage::Query { .. } | FrontendMessage::FunctionCall { .. } => Pending::Query,
        FrontendMessage::Parse { name, .. } => Pending::Parse {
            reply: Reply::Forward,
            server_name: (!name.is_empty()).then(|| String::from_utf8_lossy(name).into_owned()),
        },
        FrontendMessage::Bind { .. } => Pending::Bind,
        FrontendMessage::Describe { .. } => Pending::Describe,
        FrontendMessage::Close { .. } => Pending::Close {
            reply: Reply::Forward,
        },
        FrontendMessage::Execute { .. } => Pending::Execute,
        FrontendMessage::Sync => Pending::Sync,
        FrontendMessage::CopyDone | FrontendMessage::CopyFail { .. } => Pending::CopyEnd,
        _ => return None,
    })
}

fn routed_query(message: &FrontendMessage) -> Routed {
    if let FrontendMessage::Query { sql } = message {
        // Most queries start with another ASCII letter: spare them decoding.
        let first = sql.iter().find(|b| !b.is_ascii_whitespace());
        if first.is_some_and(|b| b.is_ascii() && !matches!(b, b'd' | b'D' | 0x0b)) {
            return Routed::Sent;
        }
        let text = String::from_utf8_lossy(sql);
        // Spare the rest the normalizing allocations.
        if !matches!(text.trim_start().chars().next(), Some('d' | 'D')) {
            return Routed::Sent;
        }
        let normalized: String = text
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .to_ascii_uppercase();
        let normalized = normalized.trim_end_matches(';');
        if normalized == "DISCARD ALL" || normalized == "DEALLOCATE ALL" {
            return Routed::SentForgetStatements;
        }
    }
    Routed::Sent
}
