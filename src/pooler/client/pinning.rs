//! Transaction mode and session state (`pin_on_session_state`): a client whose SQL leaves
//! state behind its transaction (`pin::scan`), or whose session PostgreSQL reports changed,
//! is pinned to its server connection until it leaves, and that connection is then closed,
//! never handed to another client; or its statement is refused; or, as PgBouncer does,
//! nothing happens. A pinned client holds its connection, which counts against the pool
//! size while it does.

use std::sync::atomic::Ordering::Relaxed;

use bytes::BytesMut;

use super::super::pin::{self, Cause, Found};
use super::super::protocol::frontend::{self, encode as fe, tag as ft, FrontendMessage};
use super::super::protocol::sql_state::SqlState;
use super::super::protocol::streamed::{ClientHead, Fields};
use super::super::protocol::{split_frame, Frame};
use super::{fatal, Active, End};
use crate::config::{PinOnSessionState, PoolMode};

impl Active {
    pub(super) fn is_pinned(&self) -> bool {
        self.client.info.pinned.load(Relaxed) != 0
    }

    /// Looks at a Query's or Parse's SQL for session state. Returns the message to route:
    /// the client's, or under `error` one that makes PostgreSQL refuse it with 0A000 (so
    /// that a transaction the client is in is aborted, as a failed statement aborts it).
    pub(super) fn check_session_state(
        &mut self,
        frame: Frame,
        message: FrontendMessage,
    ) -> Result<(Frame, FrontendMessage), End> {
        if self.client.mode != PoolMode::Transaction || self.is_pinned() {
            return Ok((frame, message));
        }
        let sql = match &message {
            FrontendMessage::Query { sql } => sql,
            FrontendMessage::Parse { query, .. } => query,
            _ => return Ok((frame, message)),
        };
        let Some(found) = pin::scan(sql) else {
            return Ok((frame, message));
        };
        match self.policy() {
            PinOnSessionState::Ignore => Ok((frame, message)),
            PinOnSessionState::Pin => {
                self.pin(found.cause, &found.describe());
                Ok((frame, message))
            }
            PinOnSessionState::Error => refuse(&found, &message),
        }
    }

    /// At the end of a transaction in transaction mode: if PostgreSQL reported a parameter
    /// the pooler does not track with a value other than the session started with, the
    /// session changed in a way the scan did not see.
    pub(super) fn check_reported_state(&mut self) {
        let transaction_mode = self.client.mode == PoolMode::Transaction;
        let defaults = self.client.pool.defaults();
        let Some(guard) = self.server.as_mut() else {
            return;
        };
        let conn = guard.conn();
        conn.reported_state = false;
        if !transaction_mode {
            return;
        }
        let changed = conn.params.iter().find(|(name, value)| {
            pin::reported_is_state(name)
                && defaults.get(*name) != Some(*value)
                // A startup setting of a client the pooler SET on this connection.
                && conn.settings.get(&name.to_ascii_lowercase()) != Some(*value)
        });
        let Some((name, _)) = changed else {
            return;
        };
        let name = name.clone();
        let cause = format!("a change of {name} reported by PostgreSQL");
        match self.policy() {
            PinOnSessionState::Ignore => {}
            PinOnSessionState::Pin if !self.is_pinned() => self.pin(Cause::Reported, &cause),
            PinOnSessionState::Pin => {}
            PinOnSessionState::Error => {
                // The statement ran: the connection is closed instead of going back dirty.
                tracing::warn!(
                    database = %self.client.pool.key.database,
                    user = %self.client.pool.key.user,
                    client = format_args!("{:#x}", self.client.info.id),
                    "closing the server connection after {cause} (pin_on_session_state = error)"
                );
                if let Some(guard) = self.server.as_mut() {
                    guard.conn().mark_broken();
                }
            }
        }
    }

    /// A Query relayed in pieces (over 64 KiB): what has arrived of its text is scanned.
    pub(super) fn streamed_session_state(&self, head: &ClientHead<'_>) -> Option<(Cause, String)> {
        let Fields::Opaque { text } = head.fields else {
            return None;
        };
        if head.tag != ft::QUERY || self.client.mode != PoolMode::Transaction || self.is_pinned() {
            return None;
        }
        pin::scan(text).map(|found| (found.cause, found.describe()))
    }

    /// A streamed Query cannot be swapped for a refusal: under `error` too, it pins.
    pub(super) fn pin_streamed(&mut self, cause: Cause, description: &str) {
        if self.policy() != PinOnSessionState::Ignore {
            self.pin(cause, description);
        }
    }

    fn policy(&self) -> PinOnSessionState {
        self.config.pin_policy(&self.client.pool.key.database)
    }

    fn pin(&mut self, cause: Cause, description: &str) {
        if self.client.info.pinned.swap(cause as u8, Relaxed) != 0 {
            return;
        }
        self.client.pool.stats.clients_pinned.fetch_add(1, Relaxed);
        tracing::info!(
            database = %self.client.pool.key.database,
            user = %self.client.pool.key.user,
            client = format_args!("{:#x}", self.client.info.id),
            cause = cause.name(),
            "client pinned to its server connection until it disconnects: {description} \
             outlives the transaction"
        );
    }
}

/// The client's Query or Parse replaced by one PostgreSQL answers with the pooler's error.
fn refuse(found: &Found<'_>, message: &FrontendMessage) -> Result<(Frame, FrontendMessage), End> {
    let description = found.describe();
    let text = format!(
        "transaction pooling: {description} would outlive the transaction and leak to other \
         clients (pin_on_session_state = error)"
    );
    let hint = "Use the tenant's direct_url (PostgreSQL's own port, session semantics) for \
                migrations and dump tools, or SET LOCAL / set_config(…, true) inside a \
                transaction.";
    let sql = format!(
        "DO $pgplatform_refused$BEGIN RAISE EXCEPTION USING ERRCODE = '{}', MESSAGE = {}, \
         HINT = {}; END$pgplatform_refused$",
        SqlState::FEATURE_NOT_SUPPORTED.as_str(),
        literal(&text),
        literal(hint)
    );
    let mut buf = BytesMut::new();
    match message {
        FrontendMessage::Parse {
            name, param_types, ..
        } => fe::parse(&mut buf, name, sql.as_bytes(), param_types),
        _ => fe::query(&mut buf, sql.as_bytes()),
    }
    let frame = split_frame(&mut buf, usize::MAX)
        .ok()
        .flatten()
        .ok_or_else(|| End::Fatal(fatal(SqlState::PROTOCOL_VIOLATION, "internal error")))?;
    let message = frontend::decode(&frame)
        .map_err(|e| End::Fatal(fatal(SqlState::PROTOCOL_VIOLATION, e.to_string())))?;
    Ok((frame, message))
}

/// A string literal for the refusal's DO block: quotes doubled, and no `$` that could end
/// its body.
fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''").replace('$', ""))
}
