//! The console's commands that change the pooler's state beyond PAUSE/RESUME/KILL:
//! DISABLE/ENABLE, KILL_CLIENT, WAIT_CLOSE, SUSPEND, SET and SHUTDOWN WAIT_FOR_*, with
//! PgBouncer 1.25's semantics and messages; `ConsoleState` is what they leave behind.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::command::ShutdownMode;
use crate::pooler::Pooler;

/// How often WAIT_CLOSE, PAUSE and SHUTDOWN WAIT_FOR_* look again.
pub const POLL: Duration = Duration::from_millis(20);

/// What DISABLE, SUSPEND and SHUTDOWN WAIT_FOR_* leave on the pooler.
#[derive(Default)]
pub struct ConsoleState {
    /// Databases whose new clients are refused (DISABLE).
    disabled: Mutex<HashSet<String>>,
    /// Whether `disabled` has any entry: a login then reads one flag, not a lock.
    any_disabled: AtomicBool,
    /// SUSPEND: every pool paused until RESUME.
    pub suspended: AtomicBool,
    /// SHUTDOWN WAIT_FOR_*: new clients are refused, except on the console.
    pub shutting_down: AtomicBool,
}

impl ConsoleState {
    /// Why a new client of `database` is refused (PgBouncer's message), if it is.
    pub fn refusal(&self, database: &str) -> Option<String> {
        if self.shutting_down.load(Ordering::Acquire) {
            return Some("pooler is shutting down".to_owned());
        }
        if self.any_disabled.load(Ordering::Acquire) && self.is_disabled(database) {
            return Some(format!("database \"{database}\" is disabled"));
        }
        None
    }

    pub fn is_disabled(&self, database: &str) -> bool {
        super::super::lock(&self.disabled).contains(database)
    }

    pub fn set_disabled(&self, database: &str, disabled: bool) {
        let mut set = super::super::lock(&self.disabled);
        if disabled {
            set.insert(database.to_owned());
        } else {
            set.remove(database);
        }
        self.any_disabled.store(!set.is_empty(), Ordering::Release);
    }
}

/// KILL_CLIENT: ends client `id` (from SHOW CLIENTS) and the server connection it holds,
/// whose transaction PostgreSQL rolls back. `false` if no such client is connected.
pub fn kill_client(pooler: &Pooler, id: u64) -> bool {
    let Some(client) = pooler.clients().into_iter().find(|c| c.id == id) else {
        return false;
    };
    client.killed.store(true, Ordering::Release);
    tracing::info!(id, database = %client.key.database, user = %client.key.user, "KILL_CLIENT from the admin console");
    if let Some(server) = client.cancel.get() {
        for pool in pooler.pools() {
            for conn in pool.servers() {
                if conn.remote_pid == server.process_id {
                    conn.shut_down();
                }
            }
        }
    }
    if let Some(pool) = pooler.pools().iter().find(|p| *p.key == *client.key) {
        pool.wake_waiters();
    }
    pooler.wake_idle_clients();
    true
}

/// WAIT_CLOSE: returns once no server connection of `database` (or of any) is left to
/// close after a RECONNECT or KILL (SHOW SERVERS' close_needed).
pub async fn wait_close(pooler: &Pooler, database: Option<&str>) {
    loop {
        let waiting = pooler
            .pools()
            .iter()
            .filter(|p| database.is_none_or(|d| p.key.database == d))
            .any(|p| p.servers().iter().any(|s| p.close_needed(s)));
        if !waiting {
            return;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// SET key = value: the running settings change until the next reload or restart.
pub fn set(pooler: &Pooler, key: &str, value: &str) -> Result<(), String> {
    let running = pooler.config();
    let new = super::set::apply(&running, key, value)?;
    tracing::info!(
        key,
        value,
        "SET from the admin console (until the next reload)"
    );
    pooler.running.send_replace(Arc::new(new));
    pooler.apply_config();
    Ok(())
}

/// SHUTDOWN WAIT_FOR_SERVERS | WAIT_FOR_CLIENTS: refuses new clients at once, then, in
/// the background, waits for the servers to be released (every pool paused) or for the
/// clients to leave, and stops the agent as SHUTDOWN does.
pub fn shutdown_waiting(pooler: &Arc<Pooler>, mode: ShutdownMode) {
    pooler.console.shutting_down.store(true, Ordering::Release);
    if mode == ShutdownMode::WaitForServers {
        pooler.paused_all.store(true, Ordering::Release);
        for pool in pooler.pools() {
            pool.pause(true);
        }
    }
    let pooler = pooler.clone();
    tokio::spawn(async move {
        loop {
            let done = match mode {
                ShutdownMode::WaitForClients => !pooler
                    .clients()
                    .iter()
                    .any(|c| c.key.database != super::CONSOLE_DATABASE),
                _ => pooler
                    .pools()
                    .iter()
                    .all(|p| p.counts().servers_active == 0),
            };
            if done {
                break;
            }
            tokio::time::sleep(POLL).await;
        }
        tracing::warn!(?mode, "SHUTDOWN from the admin console: stopping the agent");
        pooler.agent_shutdown.cancel();
    });
}

/// RELOAD: the agent reads its file again (as SIGHUP does) and answers once it has; a
/// file with an error changes nothing and its reason comes back.
pub async fn reload(pooler: &Pooler) -> Result<(), String> {
    let (reply, outcome) = tokio::sync::oneshot::channel();
    let request = crate::shutdown::ReloadRequest { reply: Some(reply) };
    if pooler.reload.send(request).await.is_err() {
        return Err("the agent is stopping".to_owned());
    }
    match outcome.await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(reason)) => Err(without_file_text(&reason)),
        Err(_) => Err("the agent is stopping".to_owned()),
    }
}

/// The refusal without the lines of the file a TOML error quotes (`12 | key = …` and its
/// carets): a console user learns which key is wrong, not the file's contents, which the
/// log (read by the operator) keeps.
fn without_file_text(reason: &str) -> String {
    let quoted = |line: &&str| {
        let rest = line
            .trim_start()
            .trim_start_matches(|c: char| c.is_ascii_digit());
        rest.trim_start().starts_with('|')
    };
    let lines: Vec<&str> = reason.lines().filter(|l| !quoted(l)).collect();
    lines
        .join(" ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// SHOW HELP: a NOTICE "Console usage" whose DETAIL lists the commands, as PgBouncer.
pub fn help(out: &mut bytes::BytesMut) {
    use crate::pooler::protocol::backend::encode as be;
    use crate::pooler::protocol::error_fields::{ErrorReport, Severity};
    use crate::pooler::protocol::sql_state::SqlState;
    let report = ErrorReport::new(
        Severity::Notice,
        SqlState::SUCCESSFUL_COMPLETION,
        "Console usage",
    )
    .with_detail(HELP);
    be::notice_response(out, &report);
    be::command_complete(out, "SHOW");
}

/// SHOW HELP's list: the commands this console answers, PgBouncer's layout.
const HELP: &str = "\n\tSHOW HELP|CONFIG|DATABASES|POOLS|CLIENTS|SERVERS|USERS|VERSION\n\
\tSHOW LISTS|STATE|SOCKETS\n\
\tSHOW STATS|STATS_TOTALS|STATS_AVERAGES|TOTALS\n\
\tSET key = arg\n\
\tRELOAD\n\
\tPAUSE [<db>]\n\
\tRESUME [<db>]\n\
\tDISABLE <db>\n\
\tENABLE <db>\n\
\tRECONNECT [<db>]\n\
\tKILL [<db>]\n\
\tKILL_CLIENT <client_id>\n\
\tSUSPEND\n\
\tSHUTDOWN\n\
\tSHUTDOWN WAIT_FOR_SERVERS|WAIT_FOR_CLIENTS\n\
\tWAIT_CLOSE [<db>]";

#[cfg(test)]
mod tests {
    #[test]
    fn a_refusal_names_the_key_without_quoting_the_file() {
        let reason = "read /etc/pgplatform.toml: TOML parse error at line 3, column 1\n  |\n3 | secret_key = \"hunter2\"\n  | ^^^^^^^^^^\nunknown field `secret_key`, expected one of `a`, `b`\n";
        let shown = super::without_file_text(reason);
        assert!(!shown.contains("hunter2"), "{shown}");
        assert_eq!(
            shown,
            "read /etc/pgplatform.toml: TOML parse error at line 3, column 1 unknown field `secret_key`, expected one of `a`, `b`"
        );
    }
}
