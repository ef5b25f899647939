//! PgBouncer's timeouts while a client holds a server connection — `query_timeout`,
//! `transaction_timeout` (1.25), `idle_transaction_timeout` — and `server_fast_close`.
//! One timer per client task, made when a timeout is first armed and then only moved
//! (moving it later takes no lock in tokio's timer), so a transaction costs no
//! allocation; with every timeout off (the default) nothing is armed at all. As in
//! PgBouncer, a timeout closes the server connection and ends the client with FATAL
//! 08P01 naming it; a query past query_timeout is also cancelled on PostgreSQL, so that
//! its backend stops now rather than when it next writes.

use std::pin::Pin;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::super::protocol::sql_state::SqlState;
use super::super::protocol::startup;
use super::super::txn::TxStatus;
use super::{fatal, Active, End};
use crate::config::{PoolMode, PoolerConfig};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timeout {
    Query,
    Transaction,
    IdleTransaction,
}

impl Timeout {
    /// PgBouncer's reason, as the client reads it.
    fn message(self) -> &'static str {
        match self {
            Timeout::Query => "query timeout",
            Timeout::Transaction => "transaction timeout",
            Timeout::IdleTransaction => "idle transaction timeout",
        }
    }
}

/// The server connection's state the timeouts look at.
pub struct Busy {
    /// A reply is owed: a query runs.
    pub running: bool,
    /// Inside a transaction block.
    pub in_transaction: bool,
    /// In a transaction and waiting on the client (or on the rest of its message).
    pub idle_in_transaction: bool,
}

/// Which timeout ends first, and when.
pub fn next(
    config: &PoolerConfig,
    busy: &Busy,
    query_started: Instant,
    transaction_began: Instant,
) -> Option<(Instant, Timeout)> {
    let mut first: Option<(Instant, Timeout)> = None;
    let mut consider = |at: Option<Instant>, kind: Timeout| {
        if let Some(at) = at {
            if first.is_none_or(|(f, _)| at < f) {
                first = Some((at, kind));
            }
        }
    };
    if busy.running {
        consider(
            config.query_timeout.map(|t| query_started + t),
            Timeout::Query,
        );
    }
    if busy.running || busy.in_transaction {
        consider(
            config.transaction_timeout.map(|t| transaction_began + t),
            Timeout::Transaction,
        );
    }
    if busy.idle_in_transaction {
        consider(
            config.idle_transaction_timeout.map(|t| Instant::now() + t),
            Timeout::IdleTransaction,
        );
    }
    first
}

/// Whether any relay timeout is set (else `next` is not asked).
pub fn any(config: &PoolerConfig) -> bool {
    config.query_timeout.is_some()
        || config.transaction_timeout.is_some()
        || config.idle_transaction_timeout.is_some()
}

/// A client task's one timer.
#[derive(Default)]
pub struct Timer {
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Timer {
    /// Resolves at `deadline`; never without one.
    pub async fn until(&mut self, deadline: Option<Instant>) {
        let Some(deadline) = deadline else {
            return std::future::pending().await;
        };
        let at = tokio::time::Instant::from_std(deadline);
        let sleep = match &mut self.sleep {
            Some(sleep) => {
                if sleep.deadline() != at {
                    sleep.as_mut().reset(at);
                }
                sleep
            }
            None => self.sleep.insert(Box::pin(tokio::time::sleep_until(at))),
        };
        sleep.as_mut().await;
    }
}

/// query_wait_timeout for a client of `database` (its own or the global one), or
/// query_timeout if that ends the wait first, with the reason the client is told.
pub fn wait_limit(config: &PoolerConfig, database: &str) -> (Option<Duration>, &'static str) {
    let wait = config.query_wait_timeout_for(database);
    match (wait, config.query_timeout) {
        (Some(w), Some(q)) if q < w => (Some(q), "query_timeout"),
        (None, Some(q)) => (Some(q), "query_timeout"),
        (w, _) => (w, "query_wait_timeout"),
    }
}

impl Active {
    /// The server connection's state for `next`, if a timeout is set.
    pub(super) fn timeout_due(&mut self) -> Option<(Instant, Timeout)> {
        if !any(&self.config) {
            return None;
        }
        let owed = self.from_client.owed > 0;
        let conn = self.server.as_mut()?.conn();
        let running = !conn.tracker.nothing_pending();
        let in_transaction = conn.tracker.status() != TxStatus::Idle;
        let busy = Busy {
            running,
            in_transaction,
            idle_in_transaction: (!running && in_transaction) || owed,
        };
        next(
            &self.config,
            &busy,
            self.query_started,
            self.transaction_began,
        )
    }

    /// A timeout fired: the server connection is closed (a running query cancelled
    /// first), and the client is told why.
    pub(super) fn timed_out(&mut self, kind: Timeout) -> End {
        if let Some(mut guard) = self.server.take() {
            let conn = guard.conn();
            if kind == Timeout::Query {
                let pooler = self.client.pooler().clone();
                let key = conn.key;
                tokio::spawn(async move {
                    let mut out = BytesMut::new();
                    startup::encode_cancel_request(&mut out, key.process_id, &key.secret_key);
                    let cancel = async {
                        let mut conn = pooler.target.open().await?;
                        conn.write_all(&out).await?;
                        // PostgreSQL closes the connection once the cancel is delivered.
                        let mut sink = [0u8; 1];
                        conn.read(&mut sink).await
                    };
                    let _ = tokio::time::timeout(Duration::from_secs(5), cancel).await;
                });
            }
            tracing::info!(database = %self.client.pool.key.database, "closing a server connection: {}", kind.message());
            // Dropped, so closed: whatever it was doing is rolled back.
            drop(guard);
        }
        self.client.info.cancel.set(None);
        End::Fatal(fatal(SqlState::PROTOCOL_VIOLATION, kind.message()))
    }

    /// server_fast_close in session mode: whether the server connection is marked to
    /// close (RECONNECT, the primary moved) and between transactions, so that it and its
    /// client are closed now rather than when the client leaves.
    pub(super) fn fast_close_watch(&self) -> bool {
        self.config.server_fast_close && self.client.mode == PoolMode::Session
    }

    /// The pooler called (once a second): close the session if server_fast_close says so.
    pub(super) fn on_call_with_server(&mut self) -> Result<(), End> {
        self.call.rearm();
        let ready = self.to_server.is_empty() && !self.mid_message();
        let Some(guard) = self.server.as_mut() else {
            return Ok(());
        };
        let conn = guard.conn();
        let ready = ready && conn.tracker.is_idle();
        if ready && self.client.pool.close_needed(&conn.info) {
            return Err(End::Fatal(fatal(
                SqlState::PROTOCOL_VIOLATION,
                "database configuration changed",
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(toml: &str) -> PoolerConfig {
        let section = toml::from_str(toml).unwrap();
        PoolerConfig::from_section(section).unwrap()
    }

    #[test]
    fn the_first_timeout_to_end_wins_and_only_in_its_state() {
        let c =
            config("query_timeout = 2\ntransaction_timeout = 5\nidle_transaction_timeout = 60\n");
        let t0 = Instant::now();
        let running = Busy {
            running: true,
            in_transaction: true,
            idle_in_transaction: false,
        };
        assert_eq!(
            next(&c, &running, t0, t0),
            Some((t0 + Duration::from_secs(2), Timeout::Query))
        );
        let began = t0 - Duration::from_secs(4);
        assert_eq!(
            next(&c, &running, t0, began),
            Some((began + Duration::from_secs(5), Timeout::Transaction))
        );
        let idle = Busy {
            running: false,
            in_transaction: true,
            idle_in_transaction: true,
        };
        assert_eq!(
            next(&c, &idle, t0, t0).map(|n| n.1),
            Some(Timeout::Transaction)
        );
        let outside = Busy {
            running: false,
            in_transaction: false,
            idle_in_transaction: false,
        };
        assert_eq!(next(&c, &outside, t0, t0), None);
        assert!(!any(&config("")), "all off by default, as PgBouncer");
    }

    #[test]
    fn waiting_ends_at_query_timeout_when_it_is_shorter() {
        let c = config("query_wait_timeout = 10\nquery_timeout = 3\n[databases.shop]\nquery_wait_timeout = 1\n");
        assert_eq!(
            wait_limit(&c, "crm"),
            (Some(Duration::from_secs(3)), "query_timeout")
        );
        assert_eq!(
            wait_limit(&c, "shop"),
            (Some(Duration::from_secs(1)), "query_wait_timeout")
        );
        let c = config("[databases.shop]\nquery_wait_timeout = 0\n");
        assert_eq!(wait_limit(&c, "shop"), (None, "query_wait_timeout"));
        assert_eq!(wait_limit(&c, "crm").0, Some(Duration::from_secs(120)));
    }
}
