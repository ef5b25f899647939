//! The PgBouncer-compatible admin console: the virtual database `pgbouncer`, answering
//! SHOW commands with PgBouncer's column names and order, and PgBouncer 1.25's commands
//! (PAUSE, RESUME, SUSPEND, DISABLE, ENABLE, RELOAD, SET, KILL, KILL_CLIENT, RECONNECT,
//! WAIT_CLOSE, SHUTDOWN [WAIT_FOR_SERVERS|WAIT_FOR_CLIENTS]).

mod command;
mod control;
mod set;
mod show;
mod show_databases;
mod show_sockets;
mod show_stats;

pub use self::control::ConsoleState;
pub use self::show_stats::StatsWindow;

/// The console's own database (login.rs's ADMIN_DATABASE; named here too so that the
/// console does not depend on the login module, which hands sessions to it).
const CONSOLE_DATABASE: &str = "pgbouncer";

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use self::command::{AdminCommand, ShutdownMode};
use self::control::POLL;
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
    let mut kills = pooler.kills.subscribe();
    let mut out = BytesMut::new();
    for (name, value) in [
        // PgBouncer's console says "1.25.2/bouncer".
        ("server_version", "1.25.2/pgplatform"),
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
                // KILL_CLIENT of this console session.
                changed = kills.changed() => {
                    if changed.is_err() || session_info.killed.load(Ordering::Acquire) {
                        return;
                    }
                }
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

fn error(out: &mut BytesMut, code: SqlState, message: &str) {
    be::error_response(out, &ErrorReport::new(Severity::Error, code, message));
}

/// PgBouncer's console errors: ERROR with SQLSTATE 08P01, logged too.
fn refuse(out: &mut BytesMut, message: &str) {
    tracing::info!("admin console: {message}");
    error(out, SqlState::PROTOCOL_VIOLATION, message);
}

async fn execute(pooler: &Arc<Pooler>, level: AdminLevel, statement: &str, out: &mut BytesMut) {
    let command = match command::parse(statement) {
        Ok(c) => c,
        Err(message) if command::is_specific_error(&message) => {
            return refuse(out, &message);
        }
        Err(_) => {
            // PgBouncer's wording, which scripts may match on.
            let message = format!("invalid command '{}', use SHOW HELP;", statement.trim());
            return error(out, SqlState::SYNTAX_ERROR, &message);
        }
    };
    if level == AdminLevel::Stats && !command.is_read_only() {
        return error(out, SqlState::INSUFFICIENT_PRIVILEGE, "admin access needed");
    }
    let pools_of = |db: &Option<String>| {
        pooler
            .pools()
            .into_iter()
            .filter(|p| db.as_ref().is_none_or(|d| &p.key.database == d))
            .collect::<Vec<_>>()
    };
    // A database is known once it has a pool or a [pooler.databases] entry.
    let known = |db: &str| {
        pooler.pools().iter().any(|p| p.key.database == db)
            || pooler.config().databases.contains_key(db)
    };
    let is_admin_db = |db: &str| db == CONSOLE_DATABASE;
    let console = &pooler.console;
    match command {
        AdminCommand::Show(what) => show::show(pooler, what, out),
        AdminCommand::Pause(db) => {
            if console.suspended.load(Ordering::Acquire) {
                return refuse(out, "already suspended/paused");
            }
            let pools = pools_of(&db);
            for pool in &pools {
                pool.pause(true);
            }
            // PAUSE returns once running transactions have finished.
            while pools.iter().any(|p| p.counts().servers_active > 0) {
                tokio::time::sleep(POLL).await;
            }
            for pool in &pools {
                pool.close_idle();
            }
            be::command_complete(out, "PAUSE");
        }
        AdminCommand::Resume(db) => {
            if console.shutting_down.load(Ordering::Acquire) {
                return refuse(out, "pooler is shutting down");
            }
            let pools = pools_of(&db);
            let suspended = console.suspended.load(Ordering::Acquire);
            match &db {
                None if !suspended && !pools.iter().any(|p| p.is_paused()) => {
                    return refuse(out, "pooler is not paused/suspended");
                }
                Some(db) if !known(db) => return refuse(out, &format!("no such database: {db}")),
                Some(db) if !pools.iter().any(|p| p.is_paused()) => {
                    return refuse(out, &format!("database {db} is not paused"));
                }
                _ => {}
            }
            if db.is_none() && console.suspended.swap(false, Ordering::AcqRel) {
                pooler.paused_all.store(false, Ordering::Release);
            }
            for pool in pools {
                pool.pause(false);
            }
            be::command_complete(out, "RESUME");
        }
        AdminCommand::Suspend => {
            if console.suspended.load(Ordering::Acquire) {
                return refuse(out, "already suspended/paused");
            }
            if pooler.pools().iter().any(|p| p.is_paused()) {
                return refuse(out, "cannot suspend with paused databases");
            }
            // Every write to a client is flushed before its task goes on, so there are no
            // buffers to drain: new transactions wait until RESUME, as after PAUSE, while
            // the server connections stay open.
            console.suspended.store(true, Ordering::Release);
            pooler.paused_all.store(true, Ordering::Release);
            for pool in pooler.pools() {
                pool.pause(true);
            }
            tracing::info!("SUSPEND from the admin console");
            be::command_complete(out, "SUSPEND");
        }
        AdminCommand::Disable(db) | AdminCommand::Enable(db) if is_admin_db(&db) => {
            refuse(out, &format!("cannot disable admin db: {db}"));
        }
        AdminCommand::Disable(db) => {
            tracing::info!(database = %db, "DISABLE from the admin console");
            console.set_disabled(&db, true);
            be::command_complete(out, "DISABLE");
        }
        AdminCommand::Enable(db) => {
            if !known(&db) && !console.is_disabled(&db) {
                return refuse(out, &format!("no such database: {db}"));
            }
            tracing::info!(database = %db, "ENABLE from the admin console");
            console.set_disabled(&db, false);
            be::command_complete(out, "ENABLE");
        }
        AdminCommand::Reload => match control::reload(pooler).await {
            Ok(()) => be::command_complete(out, "RELOAD"),
            // PgBouncer 1.25: "RELOAD failed, see logs for additional details", F0000; the
            // reason (the agent logged it too) goes in DETAIL.
            Err(detail) => {
                let report = ErrorReport::new(
                    Severity::Error,
                    SqlState::CONFIG_FILE_ERROR,
                    "RELOAD failed, see logs for additional details",
                )
                .with_detail(&detail);
                be::error_response(out, &report);
            }
        },
        AdminCommand::Set { key, value } => match control::set(pooler, &key, &value) {
            Ok(()) => be::command_complete(out, &format!("SET {key}={value}")),
            Err(detail) => {
                tracing::info!("admin console: SET failed: {detail}");
                let report =
                    ErrorReport::new(Severity::Error, SqlState::PROTOCOL_VIOLATION, "SET failed")
                        .with_detail(&detail);
                be::error_response(out, &report);
            }
        },
        AdminCommand::Kill(db) => {
            if console.suspended.load(Ordering::Acquire) {
                return refuse(out, "already suspended/paused");
            }
            if let Some(db) = &db {
                if is_admin_db(db) {
                    return refuse(out, &format!("cannot kill admin db: {db}"));
                }
                if !known(db) {
                    return refuse(out, &format!("no such database: {db}"));
                }
            }
            for pool in pools_of(&db) {
                pool.kill();
            }
            pooler.wake_idle_clients();
            be::command_complete(out, "KILL");
        }
        AdminCommand::KillClient(id) => {
            if !control::kill_client(pooler, id) {
                return refuse(out, "client not found");
            }
            be::command_complete(out, "KILL_CLIENT");
        }
        AdminCommand::Reconnect(db) => {
            for pool in pools_of(&db) {
                pool.reconnect();
            }
            be::command_complete(out, "RECONNECT");
        }
        AdminCommand::WaitClose(db) => {
            if let Some(db) = &db {
                if is_admin_db(db) {
                    return refuse(out, &format!("cannot wait in admin db: {db}"));
                }
                if !known(db) {
                    return refuse(out, &format!("no such database: {db}"));
                }
            }
            control::wait_close(pooler, db.as_deref()).await;
            be::command_complete(out, "WAIT_CLOSE");
        }
        AdminCommand::Shutdown(ShutdownMode::Immediate) => {
            tracing::warn!("SHUTDOWN from the admin console: stopping the agent at once");
            // PgBouncer's SHUTDOWN is its immediate shutdown: clients are not waited for.
            crate::shutdown::immediate().cancel();
            pooler.agent_shutdown.cancel();
            be::command_complete(out, "SHUTDOWN");
        }
        AdminCommand::Shutdown(mode) => {
            tracing::warn!(
                ?mode,
                "SHUTDOWN from the admin console: new clients are refused"
            );
            control::shutdown_waiting(pooler, mode);
            be::command_complete(out, "SHUTDOWN");
        }
    }
}
