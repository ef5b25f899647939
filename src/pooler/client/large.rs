//! Large messages: relayed in pieces (`protocol::streamed`), the header at once and the body
//! copied through as it arrives, so that a message's size never becomes the client task's
//! memory; or refused over max_packet_size, as PgBouncer does. Only a message found
//! incomplete, and larger than `STREAM_ABOVE`, is streamed: the usual small message never is.

use bytes::{Buf, BytesMut};

use super::super::protocol::frame::{peek_header, HEADER_LENGTH};
use super::super::protocol::sql_state::SqlState;
use super::super::protocol::streamed::{backend_streamable, client_head, Fields, STREAM_ABOVE};
use super::super::protocol::ProtocolError;
use super::super::route::{route_streamed, Rewrite, Routed};
use super::super::server::ServerConn;
use super::{fatal, write_synthetic, Active, End, MAX_KEPT_BUFFER};

/// A message being relayed in pieces: how many of its bytes are still to come.
#[derive(Debug, Default)]
pub(super) struct Passing {
    pub(super) owed: usize,
    /// False for a reply the client must not see (to a Parse the pooler injected): its
    /// bytes are skipped instead.
    forward: bool,
}

impl Passing {
    /// Moves what has arrived of the message from the front of `from` to the end of `to`.
    pub(super) fn pass(&mut self, from: &mut BytesMut, to: &mut BytesMut) {
        let n = self.owed.min(from.len());
        if self.forward {
            to.extend_from_slice(from.get(..n).unwrap_or_default());
        }
        from.advance(n);
        self.owed -= n;
    }
}

/// The message at the front of the server connection's buffer is incomplete: if the client
/// may get it in pieces, the tracker sees its tag now and what has arrived goes to
/// `to_client`; `passing` carries the rest as it arrives.
pub(super) fn stream_from_server(
    conn: &mut ServerConn,
    to_client: &mut BytesMut,
    passing: &mut Passing,
) {
    let Some((tag, body_length)) = peek_header(&conn.read_buf) else {
        return;
    };
    if body_length <= STREAM_ABOVE || !backend_streamable(tag) {
        return;
    }
    let outcome = conn.tracker.on_backend(tag, None);
    write_synthetic(to_client, &outcome.before);
    for name in &outcome.failed_statements {
        conn.prepared.remove(name);
    }
    *passing = Passing {
        owed: HEADER_LENGTH + body_length,
        forward: !outcome.drop,
    };
    passing.pass(&mut conn.read_buf, to_client);
}

/// Lets go of an empty buffer whose allocation grew beyond `MAX_KEPT_BUFFER`, so that the
/// memory goes back to the allocator; `fresh` is the capacity the replacement starts with.
/// (`try_reclaim` looks at the whole allocation, which `capacity` does not once bytes were
/// consumed from the front.)
pub(super) fn let_go_if_grown(buf: &mut BytesMut, fresh: usize) {
    if buf.is_empty() && buf.try_reclaim(MAX_KEPT_BUFFER + 1) {
        *buf = BytesMut::with_capacity(fresh);
    }
}

impl Active {
    /// The message at the front of the client's buffer is incomplete. If it is large and
    /// the pooler need not read it whole, a server is assigned, its head is routed and what
    /// has arrived of its body goes on; `from_client` carries the rest as it arrives. A
    /// named Parse in transaction mode is kept whole: the pooler prepares its text again on
    /// other server connections. Returns whether a server was assigned.
    pub(super) async fn stream_from_client(
        &mut self,
        rewrite_on: bool,
        max_prepared: usize,
    ) -> Result<bool, End> {
        let session_state = match client_head(&self.client.buf) {
            Ok(Some(head)) => {
                if let Fields::Parse { name } = head.fields {
                    if rewrite_on && !name.is_empty() {
                        return Ok(false);
                    }
                }
                self.streamed_session_state(&head)
            }
            Ok(None) => return Ok(false),
            Err(e) => return Err(protocol_violation(e)),
        };
        if let Some((cause, description)) = session_state {
            self.pin_streamed(cause, &description);
        }
        let assigned = self.server.is_none();
        if assigned {
            self.assign().await?;
        }
        let Some(guard) = self.server.as_mut() else {
            return Ok(assigned);
        };
        let conn = guard.conn();
        let (routed, head_length, body_rest) = {
            // The buffer is as it was before the wait for a server: the same head.
            let head = match client_head(&self.client.buf) {
                Ok(Some(head)) => head,
                Ok(None) => return Ok(assigned),
                Err(e) => return Err(protocol_violation(e)),
            };
            let rewrite = rewrite_on.then(|| Rewrite {
                catalog: &self.client.pooler.catalog,
                statements: &mut self.client.statements,
                max_prepared,
            });
            let routed = route_streamed(&head, &mut conn.book(), rewrite, &mut self.to_server)
                .map_err(protocol_violation)?;
            let fields = head.fields.length();
            (routed, HEADER_LENGTH + fields, head.body_length - fields)
        };
        self.client.buf.advance(head_length);
        for name in conn.tracker.take_discarded() {
            conn.prepared.remove(&name);
        }
        if routed == Routed::SentMaybeForgetStatements {
            conn.prepared.clear();
        }
        self.from_client = Passing {
            owed: body_rest,
            forward: true,
        };
        self.from_client
            .pass(&mut self.client.buf, &mut self.to_server);
        Ok(assigned)
    }

    /// Between a session's transactions, buffers grown for a large message go back
    /// (transaction mode does it in `release` and `step_idle`).
    pub(super) fn let_go_of_grown_buffers(&mut self) {
        let_go_if_grown(&mut self.client.buf, 0);
        let_go_if_grown(&mut self.to_client, 0);
        let_go_if_grown(&mut self.to_server, 0);
        if let Some(guard) = self.server.as_mut() {
            let_go_if_grown(&mut guard.conn().read_buf, super::ACTIVE_BUFFER);
        }
    }

    /// A message is half relayed in one direction or the other: the server connection is
    /// in the middle of it, and may serve no one else.
    pub(super) fn mid_message(&self) -> bool {
        self.from_client.owed > 0 || self.from_server.owed > 0
    }
}

/// A client message refused from its header: over max_packet_size in PgBouncer's words
/// (FATAL 08P01, "bad packet header"), else over PostgreSQL's own limit for its type.
pub(super) fn client_message_refused(e: ProtocolError, max_packet: u32) -> End {
    let message = match e {
        ProtocolError::MessageTooLarge { len, .. }
            if len.saturating_add(HEADER_LENGTH) > max_packet as usize =>
        {
            format!(
                "bad packet header: a message of {} bytes is over max_packet_size ({max_packet})",
                len.saturating_add(HEADER_LENGTH)
            )
        }
        e => e.to_string(),
    };
    End::Fatal(fatal(SqlState::PROTOCOL_VIOLATION, message))
}

/// A server message refused from its header: over max_packet_size, PgBouncer closes the
/// server connection and tells the client "bad pkt header".
pub(super) fn server_message_refused(e: ProtocolError, max_packet: u32) -> End {
    match e {
        ProtocolError::MessageTooLarge { len, .. } => End::BadServerMessage(fatal(
            SqlState::PROTOCOL_VIOLATION,
            format!(
                "bad pkt header: a server message of {} bytes is over max_packet_size ({max_packet})",
                len.saturating_add(HEADER_LENGTH)
            ),
        )),
        _ => End::ServerLost,
    }
}

fn protocol_violation(e: impl ToString) -> End {
    End::Fatal(fatal(SqlState::PROTOCOL_VIOLATION, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passing_moves_only_the_bytes_owed_and_keeps_what_follows() {
        let mut passing = Passing {
            owed: 5,
            forward: true,
        };
        let mut from = BytesMut::from(&b"abc"[..]);
        let mut to = BytesMut::new();
        passing.pass(&mut from, &mut to);
        assert_eq!((&to[..], from.len(), passing.owed), (&b"abc"[..], 0, 2));
        from.extend_from_slice(b"deNEXT");
        passing.pass(&mut from, &mut to);
        assert_eq!(
            (&to[..], &from[..], passing.owed),
            (&b"abcde"[..], &b"NEXT"[..], 0)
        );
    }

    #[test]
    fn a_swallowed_reply_is_skipped() {
        let mut passing = Passing {
            owed: 3,
            forward: false,
        };
        let mut from = BytesMut::from(&b"abcd"[..]);
        let mut to = BytesMut::new();
        passing.pass(&mut from, &mut to);
        assert_eq!((to.len(), &from[..]), (0, &b"d"[..]));
    }

    #[test]
    fn only_grown_empty_buffers_are_let_go() {
        let mut grown = BytesMut::with_capacity(4 * MAX_KEPT_BUFFER);
        grown.extend_from_slice(&[1; 3 * MAX_KEPT_BUFFER]);
        let_go_if_grown(&mut grown, 0);
        assert_eq!(grown.len(), 3 * MAX_KEPT_BUFFER, "a buffer in use is kept");
        grown.advance(3 * MAX_KEPT_BUFFER);
        let_go_if_grown(&mut grown, 16);
        assert!(grown.capacity() < MAX_KEPT_BUFFER, "{}", grown.capacity());
        let mut small = BytesMut::with_capacity(1024);
        let_go_if_grown(&mut small, 0);
        assert_eq!(small.capacity(), 1024);
    }
}
