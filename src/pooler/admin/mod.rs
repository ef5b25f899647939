//! The PgBouncer-compatible admin console: the virtual database `pgbouncer`, answering
//! SHOW commands with PgBouncer's column names and order, and PAUSE / RESUME / RELOAD /
//! KILL / RECONNECT / SHUTDOWN.

mod command;
mod show;

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use self::command::AdminCommand;
use super::protocol::backend::{encode as be, TransactionStatus};
use super::protocol::error_fields::{ErrorReport, Severity};
use super::protocol::frontend::{self, FrontendMessage};
use super::protocol::split_frame_limited;
use super::protocol::sql_state::SqlState;
use super::session::{AdminLevel, Session};
use super::stats::Activity;
use super::Pooler;

pub async fn run(pooler: &Arc<Pooler>, session: Session) {
    let Session {
        mut stream,
        mut buf,
        admin,
        info: session_info,
        ..
    } = session;
    let level = admin.unwrap_or(AdminLevel::Stats);
    session_info.state.set(Activity::Active);
    let (process_id, secret_key) = session_info.cancel_key;
    let mut out = BytesMut::new();
    for (name, value) in [
        ("server_version", "1.18.0/pgplatform"),
        ("client_encoding", "UTF8"),
        ("server_encoding", "UTF8"),
        ("DateStyle", "ISO"),
        ("standard_conforming_strings", "on"),
        ("application_name", ""),
    ] {
        be::parameter_status(&mut out, name, value);
    }
    be::backend_key_data(&mut out, process_id, &secret_key);
    be::ready_for_query(&mut out, TransactionStatus::Idle);
    loop {
        if stream.write_all(&out).await.is_err() {
            return;
        }
        out.clear();
        let frame = loop {
            match split_frame_limited(&mut buf, frontend::max_body_length) {
                Ok(Some(frame)) => break frame,
                Ok(None) => {}
                Err(_) => return,
            }
            tokio::select! {
                read = stream.read_buf(&mut buf) => match read {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                },
                () = pooler.draining.cancelled() => return,
            }
        };
        match frontend::decode(&frame) {
            Ok(FrontendMessage::Query { sql }) => {
                let sql = String::from_utf8_lossy(&sql);
                for statement in sql.split(';').filter(|s| !s.trim().is_empty()) {
                    execute(pooler, level, statement, &mut out).await;
                }
                if sql.trim().trim_end_matches(';').is_empty() {
                    be::empty_query_response(&mut out);
                }
                be::ready_for_query(&mut out, TransactionStatus::Idle);
            }
            Ok(FrontendMessage::Terminate) | Err(_) => return,
            Ok(FrontendMessage::Sync) => be::ready_for_query(&mut out, TransactionStatus::Idle),
            Ok(_) => {
                let report = ErrorReport::new(
                    Severity::Error,
                    SqlState::FEATURE_NOT_SUPPORTED,
                    "the admin console supports the simple query protocol only",
                );
                be::error_response(&mut out, &report);
            }
        }
    }
}

async fn execute(pooler: &Arc<Pooler>, level: AdminLevel, statement: &str, out: &mut BytesMut) {
    let command = match command::parse(statement) {
        Ok(c) => c,
        Err(_) => {
            // PgBouncer's wording, which scripts may match on.
            let message = format!("invalid command '{}', use SHOW HELP;", statement.trim());
            let report = ErrorReport::new(Severity::Error, SqlState::SYNTAX_ERROR, &message);
            be::error_response(out, &report);
            return;
        }
    };
    if level == AdminLevel::Stats && !command.is_read_only() {
        let report = ErrorReport::new(
            Severity::Error,
            SqlState::INSUFFICIENT_PRIVILEGE,
            "admin access needed",
        );
        be::error_response(out, &report);
        return;
    }
    let pools_of = |db: &Option<String>| {
        pooler
            .pools()
            .into_iter()
            .filter(|p| db.as_ref().is_none_or(|d| &p.key.database == d))
            .collect::<Vec<_>>()
    };
    match command {
        AdminCommand::Show(what) => show::show(pooler, what, out),
        AdminCommand::Pause(db) => {
            let pools = pools_of(&db);
            for pool in &pools {
                pool.pause(true);
            }
            // PAUSE returns once running transactions have finished.
            while pools.iter().any(|p| p.counts().servers_active > 0) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            for pool in &pools {
                pool.close_idle();
            }
            be::command_complete(out, "PAUSE");
        }
        AdminCommand::Resume(db) => {
            for pool in pools_of(&db) {
                pool.pause(false);
            }
            be::command_complete(out, "RESUME");
        }
        AdminCommand::Reload => {
            let _ = pooler
                .reload
                .try_send(crate::shutdown::ReloadRequest::default());
            be::command_complete(out, "RELOAD");
        }
        AdminCommand::Kill(db) => {
            for pool in pools_of(&Some(db)) {
                pool.kill();
            }
            pooler.wake_idle_clients();
            be::command_complete(out, "KILL");
        }
        AdminCommand::Reconnect(db) => {
            for pool in pools_of(&db) {
                pool.reconnect();
            }
            be::command_complete(out, "RECONNECT");
        }
        AdminCommand::Shutdown => {
            tracing::warn!("SHUTDOWN from the admin console: stopping the agent");
            pooler.agent_shutdown.cancel();
            be::command_complete(out, "SHUTDOWN");
        }
    }
}
