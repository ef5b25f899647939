//! What a transaction-mode client gets from the pooler itself, with no server connection:
//! a named Parse, Close and Sync outside a transaction, a statement-name error and the
//! messages it skips up to the Sync, and the replies the pooler sends for PostgreSQL.

use bytes::BytesMut;

use super::super::prepared;
use super::super::protocol::backend::{encode as be, TransactionStatus};
use super::super::protocol::error_fields::{ErrorReport, Severity};
use super::super::protocol::frontend::{FrontendMessage, ObjectKind};
use super::super::txn::Synthetic;
use super::Active;

impl Active {
    /// Outside a transaction, a named Parse and a Sync need no server: the statement is
    /// remembered and prepared on whichever server runs it. Answering them here is what
    /// keeps libpq's blocking PQprepare (pgbench -M prepared) from waiting for a server
    /// connection that its own thread's other clients hold in open transactions.
    pub(super) fn answer_without_server(&mut self, message: &FrontendMessage) -> bool {
        match message {
            FrontendMessage::Parse {
                name,
                query,
                param_types,
            } if !name.is_empty() => {
                if self.client.statements.contains(name) {
                    let error = prepared::StatementError::already_exists(name);
                    let message = error.message();
                    let report = ErrorReport::new(Severity::Error, error.code(), &message);
                    be::error_response(&mut self.to_client, &report);
                    self.client.skip_to_sync = true;
                    return true;
                }
                let text = prepared::StatementText {
                    query: query.clone(),
                    param_types: param_types.clone(),
                };
                self.client
                    .statements
                    .parse(&self.client.pooler.catalog, name, text);
                let parses = &self.client.pool.stats.client_parse_count;
                parses.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                be::parse_complete(&mut self.to_client);
                true
            }
            FrontendMessage::Sync => {
                be::ready_for_query(&mut self.to_client, TransactionStatus::Idle);
                true
            }
            FrontendMessage::Close {
                kind: ObjectKind::PreparedStatement,
                name,
            } if !name.is_empty() => {
                self.client
                    .statements
                    .remove(&String::from_utf8_lossy(name));
                be::close_complete(&mut self.to_client);
                true
            }
            FrontendMessage::Flush => true,
            _ => false,
        }
    }

    /// After an error the pooler answered itself, everything up to the Sync is ignored;
    /// no server was assigned, so no transaction is open.
    pub(super) fn skip_to_sync(&mut self, message: &FrontendMessage) {
        if *message == FrontendMessage::Sync {
            be::ready_for_query(&mut self.to_client, TransactionStatus::Idle);
            self.client.skip_to_sync = false;
        }
    }
}

pub(super) fn write_synthetic(out: &mut BytesMut, replies: &[Synthetic]) {
    for reply in replies {
        match reply {
            Synthetic::ParseComplete => be::parse_complete(out),
            Synthetic::CloseComplete => be::close_complete(out),
            Synthetic::Error(error) => {
                let message = error.message();
                be::error_response(
                    out,
                    &ErrorReport::new(Severity::Error, error.code(), &message),
                );
            }
        }
    }
}
