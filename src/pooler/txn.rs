//! Pure bookkeeping of one server connection's conversation: which replies are still
//! owed to whom, and when the connection may go back to the pool.
//!
//! Every request forwarded to PostgreSQL (or answered by the pooler itself) is queued as a
//! `Pending`. Each backend message is matched against the queue front, in order, the way
//! PostgreSQL answers: https://www.postgresql.org/docs/current/protocol-flow.html

use std::collections::VecDeque;

use super::prepared::StatementError;

/// Transaction status from ReadyForQuery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxStatus {
    Idle,
    InTransaction,
    Failed,
}

/// A request whose reply has not fully arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pending {
    /// Parse. `reply` says what happens to its ParseComplete.
    Parse {
        reply: Reply,
        server_name: Option<String>,
    },
    Bind,
    /// Describe of a statement ('S': ParameterDescription then RowDescription/NoData) or
    /// a portal ('P': RowDescription/NoData).
    Describe,
    Execute,
    /// Close. `reply` says what happens to its CloseComplete.
    Close {
        reply: Reply,
    },
    Sync,
    /// A simple Query (or FunctionCall): ends with ReadyForQuery.
    Query,
    /// A message PostgreSQL answers with an error (see `route::fail`), standing for a
    /// client's statement-name error: that error replaces PostgreSQL's, which then skips
    /// to the Sync and aborts an open transaction block exactly as for its own errors.
    Fail(StatementError),
    /// CopyDone or CopyFail: owes nothing and is never queued, but ends the stretch in
    /// which PostgreSQL ignores the client's Syncs (see `Tracker::copy_open`).
    CopyEnd,
}

/// Who answers a Parse or Close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// PostgreSQL answers and the client gets the answer.
    Forward,
    /// PostgreSQL answers a request the pooler injected; the client must not see it.
    Swallow,
    /// The pooler answers (the statement already exists on this server, or the client's
    /// Close is kept server-side); PostgreSQL never sees the request.
    Synthesize,
}

/// A reply the pooler sends on PostgreSQL's behalf, at its place in the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Synthetic {
    ParseComplete,
    CloseComplete,
    Error(StatementError),
}

/// Results of a backend message: what to do with it, synthetic replies to send before it,
/// and statements that failed to prepare (so they are not recorded as prepared).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    pub before: Vec<Synthetic>,
    pub drop: bool,
    pub failed_statements: Vec<String>,
}

#[derive(Debug)]
pub struct Tracker {
    queue: VecDeque<Pending>,
    status: TxStatus,
    /// In COPY FROM STDIN: the client streams data until CopyDone/CopyFail.
    copy_in: bool,
    /// COPY FROM STDIN began and the client has not ended it: PostgreSQL ignores Sync (and
    /// Flush) in copy-in mode, so a Sync now owes no ReadyForQuery.
    copy_open: bool,
    /// Something was sent since the last ReadyForQuery. Extended-protocol messages before
    /// a Sync run in an implicit transaction even when every reply has arrived, so the
    /// connection is not free until a Sync has been answered.
    unsynced: bool,
    /// An error arrived before the client's Sync: PostgreSQL now ignores every message up
    /// to the next Sync, so they owe no reply.
    skipping: bool,
    /// Statements sent for preparation while PostgreSQL was skipping: not prepared.
    discarded: Vec<String>,
}

impl Default for Tracker {
    fn default() -> Self {
        Tracker {
            queue: VecDeque::new(),
            status: TxStatus::Idle,
            copy_in: false,
            copy_open: false,
            unsynced: false,
            skipping: false,
            discarded: Vec::new(),
        }
    }
}

impl Tracker {
    pub fn push(&mut self, pending: Pending) {
        match pending {
            Pending::CopyEnd => {
                self.copy_open = false;
                return;
            }
            Pending::Sync if self.copy_open => return,
            _ => {}
        }
        if self.skipping {
            match pending {
                Pending::Sync => self.skipping = false,
                Pending::Parse {
                    server_name: Some(name),
                    reply: Reply::Forward | Reply::Swallow,
                } => {
                    self.discarded.push(name);
                    return;
                }
                _ => return,
            }
        }
        let sent_to_server = !matches!(
            pending,
            Pending::Sync
                | Pending::Query
                | Pending::Parse {
                    reply: Reply::Synthesize,
                    ..
                }
                | Pending::Close {
                    reply: Reply::Synthesize
                }
        );
        if sent_to_server {
            self.unsynced = true;
        }
        self.queue.push_back(pending);
    }

    /// Synthetic replies now at the front: nothing precedes them, so they can go out
    /// at once (needed when the client waits on a Flush that PostgreSQL never answers).
    pub fn take_ready_synthetic(&mut self) -> Vec<Synthetic> {
        let mut out = Vec::new();
        while let Some(s) = self.front_synthetic() {
            self.queue.pop_front();
            out.push(s);
        }
        out
    }

    fn front_synthetic(&self) -> Option<Synthetic> {
        match self.queue.front()? {
            Pending::Parse {
                reply: Reply::Synthesize,
                ..
            } => Some(Synthetic::ParseComplete),
            Pending::Close {
                reply: Reply::Synthesize,
            } => Some(Synthetic::CloseComplete),
            _ => None,
        }
    }

    /// Matches one backend message (by tag) against the queue.
    pub fn on_backend(&mut self, tag: u8, ready_status: Option<TxStatus>) -> Outcome {
        let mut outcome = Outcome {
            before: self.take_ready_synthetic(),
            ..Outcome::default()
        };
        match tag {
            b'1' => {
                if let Some(Pending::Parse { reply, .. }) =
                    self.pop_if(|p| matches!(p, Pending::Parse { .. }))
                {
                    outcome.drop = reply == Reply::Swallow;
                }
            }
            b'2' => {
                self.pop_if(|p| *p == Pending::Bind);
            }
            b'3' => {
                if let Some(Pending::Close { reply }) =
                    self.pop_if(|p| matches!(p, Pending::Close { .. }))
                {
                    outcome.drop = reply == Reply::Swallow;
                }
            }
            b'T' | b'n' => {
                self.pop_if(|p| *p == Pending::Describe);
            }
            b'C' | b'I' | b's' => {
                self.pop_if(|p| *p == Pending::Execute);
            }
            b'G' => {
                // Syncs the client sent behind the COPY before it saw this (libpq and
                // tokio-postgres send Bind, Execute, Sync at once) reach PostgreSQL in
                // copy-in mode and are ignored: no ReadyForQuery answers them.
                self.copy_in = true;
                self.copy_open = true;
                let front = self.queue.pop_front();
                self.queue.retain(|p| *p != Pending::Sync);
                if let Some(front) = front {
                    self.queue.push_front(front);
                }
            }
            b'E' => {
                if let Some(Pending::Fail(error)) = self.queue.front() {
                    outcome.before.push(Synthetic::Error(error.clone()));
                    outcome.drop = true;
                }
                outcome.failed_statements = self.on_error();
            }
            b'Z' => {
                self.copy_in = false;
                self.copy_open = false;
                self.pop_if(|p| matches!(p, Pending::Sync | Pending::Query));
                if self.queue.is_empty() {
                    self.unsynced = false;
                }
                if let Some(status) = ready_status {
                    self.status = status;
                }
            }
            _ => {}
        }
        // What follows a popped request may be synthetic; it goes out after this message
        // on the next call or `take_ready_synthetic`.
        outcome
    }

    /// After an error, PostgreSQL skips extended-protocol messages up to the next Sync;
    /// their replies (real or synthetic) never come. Within a simple Query the error ends
    /// only the current statement.
    fn on_error(&mut self) -> Vec<String> {
        self.copy_in = false;
        self.copy_open = false;
        let mut failed = Vec::new();
        while let Some(front) = self.queue.front() {
            match front {
                Pending::Sync | Pending::Query => break,
                Pending::Parse {
                    server_name: Some(name),
                    reply: Reply::Forward | Reply::Swallow,
                } => failed.push(name.clone()),
                _ => {}
            }
            self.queue.pop_front();
        }
        // No Sync queued yet: what the client sends until its Sync is ignored.
        self.skipping = self.queue.is_empty();
        failed
    }

    /// Statements whose Parse PostgreSQL ignored (see `skipping`).
    pub fn take_discarded(&mut self) -> Vec<String> {
        std::mem::take(&mut self.discarded)
    }

    fn pop_if(&mut self, pred: impl Fn(&Pending) -> bool) -> Option<Pending> {
        if self.queue.front().is_some_and(pred) {
            self.queue.pop_front()
        } else {
            None
        }
    }

    /// Everything asked was answered and no transaction is open: in transaction mode the
    /// server connection can serve another client.
    pub fn is_idle(&self) -> bool {
        self.queue.is_empty() && self.status == TxStatus::Idle && !self.copy_in && !self.unsynced
    }

    /// Nothing is owed, though a transaction may be open (a ROLLBACK can clean it).
    pub fn nothing_pending(&self) -> bool {
        self.queue.is_empty() && !self.copy_in && !self.unsynced
    }

    pub fn status(&self) -> TxStatus {
        self.status
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forward_parse(name: &str) -> Pending {
        Pending::Parse {
            reply: Reply::Forward,
            server_name: Some(name.into()),
        }
    }

    #[test]
    fn extended_query_releases_after_ready_for_query() {
        let mut t = Tracker::default();
        for p in [
            forward_parse("s1"),
            Pending::Bind,
            Pending::Execute,
            Pending::Sync,
        ] {
            t.push(p);
        }
        for tag in [b'1', b'2', b'D', b'C'] {
            assert_eq!(t.on_backend(tag, None), Outcome::default());
            assert!(!t.is_idle());
        }
        t.on_backend(b'Z', Some(TxStatus::Idle));
        assert!(t.is_idle());
    }

    #[test]
    fn a_statement_error_replaces_the_servers_and_skips_to_sync() {
        let mut t = Tracker::default();
        t.push(Pending::Fail(StatementError::does_not_exist(b"x")));
        t.push(Pending::Execute);
        t.push(Pending::Sync);
        let outcome = t.on_backend(b'E', None);
        assert!(outcome.drop);
        assert_eq!(
            outcome.before,
            [Synthetic::Error(StatementError::does_not_exist(b"x"))]
        );
        // The Execute PostgreSQL skipped owes nothing; the Sync's ReadyForQuery ends it.
        t.on_backend(b'Z', Some(TxStatus::Idle));
        assert!(t.is_idle());
        // An error of PostgreSQL's own before the stand-in goes to the client unchanged.
        t.push(Pending::Execute);
        t.push(Pending::Fail(StatementError::already_exists(b"y")));
        t.push(Pending::Sync);
        assert_eq!(t.on_backend(b'E', None), Outcome::default());
        t.on_backend(b'Z', Some(TxStatus::Idle));
        assert!(t.is_idle());
    }

    #[test]
    fn answered_messages_without_sync_hold_the_server() {
        // A pipeline's inserts run in an implicit transaction until its Sync.
        let mut t = Tracker::default();
        t.push(Pending::Bind);
        t.push(Pending::Execute);
        t.on_backend(b'2', None);
        t.on_backend(b'C', None);
        assert!(!t.is_idle());
        assert!(!t.nothing_pending());
        t.push(Pending::Sync);
        t.on_backend(b'Z', Some(TxStatus::Idle));
        assert!(t.is_idle());
    }

    #[test]
    fn open_transaction_holds_the_server() {
        let mut t = Tracker::default();
        t.push(Pending::Query);
        t.on_backend(b'C', None);
        t.on_backend(b'Z', Some(TxStatus::InTransaction));
        assert!(!t.is_idle());
        assert!(t.nothing_pending());
        t.push(Pending::Query);
        t.on_backend(b'C', None);
        t.on_backend(b'Z', Some(TxStatus::Idle));
        assert!(t.is_idle());
    }

    #[test]
    fn synthetic_parse_complete_goes_out_in_order() {
        let mut t = Tracker::default();
        t.push(Pending::Parse {
            reply: Reply::Synthesize,
            server_name: Some("s1".into()),
        });
        t.push(Pending::Bind);
        t.push(Pending::Execute);
        t.push(Pending::Sync);
        let first = t.on_backend(b'2', None);
        assert_eq!(first.before, [Synthetic::ParseComplete]);
        assert!(!first.drop);
        t.on_backend(b'C', None);
        t.on_backend(b'Z', Some(TxStatus::Idle));
        assert!(t.is_idle());
    }

    #[test]
    fn synthetic_reply_to_a_flush_goes_out_at_once() {
        let mut t = Tracker::default();
        t.push(Pending::Parse {
            reply: Reply::Synthesize,
            server_name: None,
        });
        assert_eq!(t.take_ready_synthetic(), [Synthetic::ParseComplete]);
        assert!(t.is_idle());
    }

    #[test]
    fn injected_parse_reply_is_swallowed() {
        let mut t = Tracker::default();
        t.push(Pending::Parse {
            reply: Reply::Swallow,
            server_name: Some("s1".into()),
        });
        t.push(Pending::Bind);
        assert!(t.on_backend(b'1', None).drop);
        assert!(!t.on_backend(b'2', None).drop);
    }

    #[test]
    fn error_skips_to_sync_and_reports_failed_statements() {
        let mut t = Tracker::default();
        t.push(forward_parse("bad"));
        t.push(Pending::Bind);
        t.push(Pending::Execute);
        t.push(Pending::Close {
            reply: Reply::Synthesize,
        });
        t.push(Pending::Sync);
        let outcome = t.on_backend(b'E', None);
        assert_eq!(outcome.failed_statements, ["bad"]);
        assert!(outcome.before.is_empty());
        t.on_backend(b'Z', Some(TxStatus::Idle));
        assert!(t.is_idle());
    }

    #[test]
    fn after_an_error_before_sync_messages_up_to_the_sync_owe_nothing() {
        let mut t = Tracker::default();
        t.push(Pending::Bind);
        t.push(Pending::Execute);
        t.on_backend(b'E', None);
        // The client, unaware, pipelines more before its Sync.
        t.push(forward_parse("s2"));
        t.push(Pending::Bind);
        t.push(Pending::Execute);
        assert_eq!(t.take_discarded(), ["s2"]);
        t.push(Pending::Sync);
        t.on_backend(b'Z', Some(TxStatus::Idle));
        assert!(t.is_idle());
        // Later messages are tracked normally again.
        t.push(Pending::Bind);
        assert!(!t.is_idle());
    }

    #[test]
    fn error_inside_simple_query_waits_for_ready() {
        let mut t = Tracker::default();
        t.push(Pending::Query);
        t.on_backend(b'E', None);
        assert!(!t.is_idle());
        t.on_backend(b'Z', Some(TxStatus::Idle));
        assert!(t.is_idle());
    }

    #[test]
    fn copy_in_holds_until_ready() {
        let mut t = Tracker::default();
        t.push(Pending::Query);
        t.on_backend(b'G', None);
        assert!(!t.nothing_pending());
        t.on_backend(b'C', None);
        t.on_backend(b'Z', Some(TxStatus::Idle));
        assert!(t.is_idle());
    }

    #[test]
    fn syncs_sent_into_an_extended_protocol_copy_owe_nothing() {
        // tokio-postgres: Bind, Execute, Sync; CopyInResponse; CopyData, CopyDone, Sync;
        // then Close (kept by the pooler) and Sync. PostgreSQL ignores the first Sync.
        let mut t = Tracker::default();
        for p in [Pending::Bind, Pending::Execute, Pending::Sync] {
            t.push(p);
        }
        t.on_backend(b'2', None);
        t.on_backend(b'G', None);
        t.push(Pending::Sync); // in copy-in mode: ignored by PostgreSQL too
        t.push(Pending::CopyEnd);
        t.push(Pending::Sync);
        t.push(Pending::Close {
            reply: Reply::Synthesize,
        });
        t.push(Pending::Sync);
        t.on_backend(b'C', None);
        assert!(!t.is_idle());
        let after_copy = t.on_backend(b'Z', Some(TxStatus::Idle));
        assert!(after_copy.before.is_empty());
        assert_eq!(t.take_ready_synthetic(), [Synthetic::CloseComplete]);
        assert!(!t.is_idle());
        t.on_backend(b'Z', Some(TxStatus::Idle));
        assert!(t.is_idle());
    }

    #[test]
    fn a_simple_query_copy_is_tracked_as_before() {
        let mut t = Tracker::default();
        t.push(Pending::Query);
        t.on_backend(b'G', None);
        t.push(Pending::CopyEnd);
        t.on_backend(b'C', None);
        assert!(!t.is_idle());
        t.on_backend(b'Z', Some(TxStatus::Idle));
        assert!(t.is_idle());
    }

    #[test]
    fn pipelined_syncs_release_only_after_the_last() {
        let mut t = Tracker::default();
        for _ in 0..2 {
            t.push(Pending::Bind);
            t.push(Pending::Execute);
            t.push(Pending::Sync);
        }
        for tag in [b'2', b'C'] {
            t.on_backend(tag, None);
        }
        t.on_backend(b'Z', Some(TxStatus::Idle));
        assert!(!t.is_idle());
        for tag in [b'2', b'C'] {
            t.on_backend(tag, None);
        }
        t.on_backend(b'Z', Some(TxStatus::Idle));
        assert!(t.is_idle());
    }
}
