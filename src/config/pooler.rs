//! `[pooler]`: PgBouncer's setting names and meanings, validated.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::{invalid, ConfigError};

/// `[pooler]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PoolerSection {
    /// Run the built-in pooler (default true).
    pub enabled: Option<bool>,
    /// "auto" or a number: threads of the agent's runtime, which relays clients.
    pub worker_threads: Option<WorkerThreads>,
    /// Address the pooler listens on (PgBouncer's listen_addr).
    pub listen_addr: Option<String>,
    /// Port the pooler listens on (PgBouncer's listen_port).
    pub listen_port: Option<u16>,
    /// transaction | session
    pub pool_mode: Option<PoolMode>,
    pub default_pool_size: Option<u32>,
    pub min_pool_size: Option<u32>,
    pub reserve_pool_size: Option<u32>,
    /// Seconds a client waits before the reserve pool may be used.
    pub reserve_pool_timeout: Option<f64>,
    pub max_client_conn: Option<u32>,
    /// 0 = unlimited.
    pub max_db_connections: Option<u32>,
    /// 0 = unlimited.
    pub max_user_connections: Option<u32>,
    /// Seconds; 0 = disabled.
    pub query_wait_timeout: Option<f64>,
    /// Seconds a query may run before its server connection is closed and its client
    /// told `query timeout`; 0 = disabled (PgBouncer's default).
    pub query_timeout: Option<f64>,
    /// Seconds a transaction may stay open (PgBouncer 1.25); 0 = disabled.
    pub transaction_timeout: Option<f64>,
    /// Session mode: close a server connection marked close_needed (RECONNECT, primary
    /// moved) as soon as it is between transactions, and its client with it.
    pub server_fast_close: Option<bool>,
    /// Clients per database at once (PgBouncer 1.24); 0 = unlimited.
    pub max_db_client_connections: Option<u32>,
    /// Startup parameters accepted and dropped (not applied on the server).
    pub ignore_startup_parameters: Option<Vec<String>>,
    pub client_idle_timeout: Option<f64>,
    pub client_login_timeout: Option<f64>,
    pub idle_transaction_timeout: Option<f64>,
    pub server_idle_timeout: Option<f64>,
    pub server_lifetime: Option<f64>,
    pub server_connect_timeout: Option<f64>,
    pub server_reset_query: Option<String>,
    pub server_reset_query_always: Option<bool>,
    pub server_check_query: Option<String>,
    pub server_check_delay: Option<f64>,
    /// Named prepared statements tracked per client in transaction mode; 0 disables.
    pub max_prepared_statements: Option<u32>,
    /// Parameters tracked per client besides PgBouncer's fixed five (default IntervalStyle).
    pub track_extra_parameters: Option<Vec<String>>,
    /// Largest message let through either way, counting tag, length and body (PgBouncer's
    /// meaning: one query or one result row); a larger one ends the client with 08P01.
    pub max_packet_size: Option<u32>,
    /// Seconds SIGTERM waits for running transactions before closing.
    pub shutdown_timeout: Option<f64>,
    /// disable | allow | require
    pub client_tls: Option<ClientTls>,
    pub client_tls_cert_file: Option<String>,
    pub client_tls_key_file: Option<String>,
    /// Roles allowed to run admin commands on the `pgbouncer` console.
    pub admin_users: Vec<String>,
    /// Roles allowed to run SHOW commands on the `pgbouncer` console.
    pub stats_users: Vec<String>,
    /// In transaction mode, what a client that leaves session state gets: pin | error |
    /// ignore (default pin).
    pub pin_on_session_state: Option<PinOnSessionState>,
    /// Per-database overrides, like PgBouncer's [databases].
    pub databases: BTreeMap<String, DatabaseSection>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseSection {
    pub pool_mode: Option<PoolMode>,
    pub pool_size: Option<u32>,
    pub pin_on_session_state: Option<PinOnSessionState>,
    pub min_pool_size: Option<u32>,
    pub reserve_pool_size: Option<u32>,
    /// 0 = the global max_db_connections (as PgBouncer).
    pub max_db_connections: Option<u32>,
    /// 0 = the global max_db_client_connections (as PgBouncer).
    pub max_db_client_connections: Option<u32>,
    /// Seconds; 0 = a server connection is used once.
    pub server_lifetime: Option<f64>,
    /// Seconds; 0 = wait forever.
    pub query_wait_timeout: Option<f64>,
    /// SQL run once on each new server connection, as the client's role, before any
    /// client uses it; its errors are logged and otherwise ignored.
    pub connect_query: Option<String>,
}

/// What transaction mode does when a client does something whose effect outlives its
/// transaction (SET of an untracked parameter, LISTEN, a temporary table, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PinOnSessionState {
    /// Keep the client on its server connection until it disconnects; that connection is
    /// closed then, never handed to another client.
    Pin,
    /// Refuse the statement (0A000, naming the cause and the direct URL); state that
    /// PostgreSQL reports afterwards closes the server connection instead.
    Error,
    /// PgBouncer's behaviour: the state stays on the pooled connection.
    Ignore,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PoolMode {
    Session,
    Transaction,
}

impl PoolMode {
    pub fn as_str(self) -> &'static str {
        match self {
            PoolMode::Session => "session",
            PoolMode::Transaction => "transaction",
        }
    }
}

/// `worker_threads` as written: "auto" or a number.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum WorkerThreads {
    Count(i64),
    Word(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientTls {
    Disable,
    Allow,
    Require,
}

/// Validated pooler settings; `None` durations are disabled timeouts.
#[derive(Debug, Clone)]
pub struct PoolerConfig {
    pub enabled: bool,
    /// Threads of the agent's multi-threaded runtime; read at start only.
    pub worker_threads: usize,
    pub listen_addr: String,
    pub listen_port: u16,
    pub pool_mode: PoolMode,
    pub default_pool_size: u32,
    pub min_pool_size: u32,
    pub reserve_pool_size: u32,
    pub reserve_pool_timeout: Duration,
    pub max_client_conn: u32,
    pub max_db_connections: u32,
    pub max_user_connections: u32,
    pub query_wait_timeout: Option<Duration>,
    pub query_timeout: Option<Duration>,
    pub transaction_timeout: Option<Duration>,
    pub server_fast_close: bool,
    pub max_db_client_connections: u32,
    /// Lower case; `options` drops the whole `options` parameter's unknown settings.
    pub ignore_startup_parameters: Vec<String>,
    pub client_idle_timeout: Option<Duration>,
    pub client_login_timeout: Option<Duration>,
    pub idle_transaction_timeout: Option<Duration>,
    pub server_idle_timeout: Option<Duration>,
    /// Always `Some`: zero means a connection is used once (PgBouncer's meaning).
    pub server_lifetime: Option<Duration>,
    pub server_connect_timeout: Duration,
    pub server_reset_query: String,
    pub server_reset_query_always: bool,
    pub server_check_query: String,
    pub server_check_delay: Duration,
    pub max_prepared_statements: u32,
    /// In PostgreSQL's spelling, without the always-tracked five.
    pub track_extra_parameters: Vec<String>,
    pub max_packet_size: u32,
    pub shutdown_timeout: Duration,
    pub client_tls: ClientTls,
    pub client_tls_cert_file: Option<String>,
    pub client_tls_key_file: Option<String>,
    pub admin_users: Vec<String>,
    pub stats_users: Vec<String>,
    pub pin_on_session_state: PinOnSessionState,
    pub databases: BTreeMap<String, DatabaseOverride>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct DatabaseOverride {
    pub pool_mode: Option<PoolMode>,
    pub pool_size: Option<u32>,
    pub pin_on_session_state: Option<PinOnSessionState>,
    pub min_pool_size: Option<u32>,
    pub reserve_pool_size: Option<u32>,
    pub max_db_connections: Option<u32>,
    pub max_db_client_connections: Option<u32>,
    pub server_lifetime: Option<Duration>,
    /// `Some(None)`: set to 0, waits forever.
    pub query_wait_timeout: Option<Option<Duration>>,
    pub connect_query: Option<String>,
}

impl PoolerConfig {
    pub fn from_section(s: PoolerSection) -> Result<PoolerConfig, ConfigError> {
        let PoolerSection {
            enabled,
            worker_threads,
            listen_addr,
            listen_port,
            pool_mode,
            default_pool_size,
            min_pool_size,
            reserve_pool_size,
            reserve_pool_timeout,
            max_client_conn,
            max_db_connections,
            max_user_connections,
            query_wait_timeout,
            query_timeout,
            transaction_timeout,
            server_fast_close,
            max_db_client_connections,
            ignore_startup_parameters,
            client_idle_timeout,
            client_login_timeout,
            idle_transaction_timeout,
            server_idle_timeout,
            server_lifetime,
            server_connect_timeout,
            server_reset_query,
            server_reset_query_always,
            server_check_query,
            server_check_delay,
            max_prepared_statements,
            track_extra_parameters,
            max_packet_size,
            shutdown_timeout,
            client_tls,
            client_tls_cert_file,
            client_tls_key_file,
            admin_users,
            stats_users,
            pin_on_session_state,
            databases,
        } = s;
        let listen_port = listen_port.unwrap_or(6432);
        if listen_port == 0 {
            return Err(invalid("pooler.listen_port", "must be between 1 and 65535"));
        }
        let default_pool_size = default_pool_size.unwrap_or(20);
        if default_pool_size == 0 {
            return Err(invalid("pooler.default_pool_size", "must be at least 1"));
        }
        let min_pool_size = min_pool_size.unwrap_or(0);
        if min_pool_size > default_pool_size {
            return Err(invalid(
                "pooler.min_pool_size",
                "must not exceed pooler.default_pool_size",
            ));
        }
        let max_packet_size = max_packet_size.unwrap_or(i32::MAX as u32);
        if max_packet_size < 1024 {
            return Err(invalid(
                "pooler.max_packet_size",
                "must be at least 1024 bytes",
            ));
        }
        let mut database_overrides = BTreeMap::new();
        for (name, db) in databases {
            let o = database_override(&name, db, default_pool_size, min_pool_size)?;
            database_overrides.insert(name, o);
        }
        if client_tls_cert_file.is_some() != client_tls_key_file.is_some() {
            return Err(invalid(
                "pooler.client_tls_cert_file",
                "set both client_tls_cert_file and client_tls_key_file, or neither",
            ));
        }
        Ok(PoolerConfig {
            enabled: enabled.unwrap_or(true),
            worker_threads: worker_thread_count(worker_threads)?,
            listen_addr: listen_addr.unwrap_or_else(|| "127.0.0.1".to_owned()),
            listen_port,
            pool_mode: pool_mode.unwrap_or(PoolMode::Transaction),
            default_pool_size,
            min_pool_size,
            reserve_pool_size: reserve_pool_size.unwrap_or(0),
            reserve_pool_timeout: seconds(
                "pooler.reserve_pool_timeout",
                reserve_pool_timeout,
                5.0,
            )?
            .unwrap_or_default(),
            max_client_conn: max_client_conn.unwrap_or(10_000),
            max_db_connections: max_db_connections.unwrap_or(0),
            max_user_connections: max_user_connections.unwrap_or(0),
            query_wait_timeout: seconds("pooler.query_wait_timeout", query_wait_timeout, 120.0)?,
            query_timeout: seconds("pooler.query_timeout", query_timeout, 0.0)?,
            transaction_timeout: seconds("pooler.transaction_timeout", transaction_timeout, 0.0)?,
            server_fast_close: server_fast_close.unwrap_or(false),
            max_db_client_connections: max_db_client_connections.unwrap_or(0),
            ignore_startup_parameters: ignored_parameters(ignore_startup_parameters)?,
            client_idle_timeout: seconds("pooler.client_idle_timeout", client_idle_timeout, 0.0)?,
            client_login_timeout: seconds(
                "pooler.client_login_timeout",
                client_login_timeout,
                60.0,
            )?,
            idle_transaction_timeout: seconds(
                "pooler.idle_transaction_timeout",
                idle_transaction_timeout,
                0.0,
            )?,
            server_idle_timeout: seconds("pooler.server_idle_timeout", server_idle_timeout, 600.0)?,
            server_lifetime: Some(
                seconds("pooler.server_lifetime", server_lifetime, 3600.0)?.unwrap_or_default(),
            ),
            server_connect_timeout: seconds(
                "pooler.server_connect_timeout",
                server_connect_timeout,
                15.0,
            )?
            .unwrap_or(Duration::from_secs(15)),
            server_reset_query: server_reset_query.unwrap_or_else(|| "DISCARD ALL".to_owned()),
            server_reset_query_always: server_reset_query_always.unwrap_or(false),
            server_check_query: server_check_query.unwrap_or_else(|| "select 1".to_owned()),
            server_check_delay: seconds("pooler.server_check_delay", server_check_delay, 30.0)?
                .unwrap_or_default(),
            max_prepared_statements: max_prepared_statements.unwrap_or(200),
            track_extra_parameters: extra_tracked(track_extra_parameters)?,
            max_packet_size,
            shutdown_timeout: seconds("pooler.shutdown_timeout", shutdown_timeout, 30.0)?
                .unwrap_or_default(),
            client_tls: client_tls.unwrap_or(ClientTls::Allow),
            client_tls_cert_file,
            client_tls_key_file,
            admin_users,
            stats_users,
            pin_on_session_state: pin_on_session_state.unwrap_or(PinOnSessionState::Pin),
            databases: database_overrides,
        })
    }

    /// Pool size and mode for one database, with its overrides applied.
    pub fn for_database(&self, database: &str) -> (PoolMode, u32) {
        let o = self.databases.get(database);
        (
            o.and_then(|o| o.pool_mode).unwrap_or(self.pool_mode),
            o.and_then(|o| o.pool_size)
                .unwrap_or(self.default_pool_size),
        )
    }

    /// The override for one database (empty when it has none).
    pub fn database(&self, database: &str) -> &DatabaseOverride {
        static NONE: DatabaseOverride = DatabaseOverride {
            pool_mode: None,
            pool_size: None,
            pin_on_session_state: None,
            min_pool_size: None,
            reserve_pool_size: None,
            max_db_connections: None,
            max_db_client_connections: None,
            server_lifetime: None,
            query_wait_timeout: None,
            connect_query: None,
        };
        self.databases.get(database).unwrap_or(&NONE)
    }

    /// query_wait_timeout for one database: its own, else the global one.
    pub fn query_wait_timeout_for(&self, database: &str) -> Option<Duration> {
        self.database(database)
            .query_wait_timeout
            .unwrap_or(self.query_wait_timeout)
    }

    /// max_db_connections for one database (0 = unlimited): its own unless 0, else the
    /// global one, as PgBouncer's `database_max_connections`.
    pub fn max_db_connections_for(&self, database: &str) -> u32 {
        match self.database(database).max_db_connections {
            Some(n) if n > 0 => n,
            _ => self.max_db_connections,
        }
    }

    /// max_db_client_connections for one database (0 = unlimited), as PgBouncer's
    /// `database_max_client_connections`.
    pub fn max_db_client_connections_for(&self, database: &str) -> u32 {
        match self.database(database).max_db_client_connections {
            Some(n) if n > 0 => n,
            _ => self.max_db_client_connections,
        }
    }

    /// `pin_on_session_state` for one database, with its override applied.
    pub fn pin_policy(&self, database: &str) -> PinOnSessionState {
        self.databases
            .get(database)
            .and_then(|o| o.pin_on_session_state)
            .unwrap_or(self.pin_on_session_state)
    }
}

/// Always tracked, so not repeated in `track_extra_parameters` (PgBouncer's five).
const ALWAYS_TRACKED: [&str; 5] = [
    "client_encoding",
    "DateStyle",
    "TimeZone",
    "standard_conforming_strings",
    "application_name",
];

/// Parameters PostgreSQL reports (so a change could be seen) that must not be re-applied
/// per client: read-only, or the session's identity.
const NEVER_TRACKED: [&str; 7] = [
    "is_superuser",
    "session_authorization",
    "in_hot_standby",
    "integer_datetimes",
    "server_encoding",
    "server_version",
    "role",
];

/// PostgreSQL's spelling of other parameters it reports, to match its ParameterStatus.
const REPORTED_SPELLING: [&str; 3] = [
    "IntervalStyle",
    "default_transaction_read_only",
    "search_path",
];

/// A PostgreSQL parameter name as these lists accept it: a letter or `_`, then letters,
/// digits, `_` and `.` (custom `class.name` settings).
fn check_parameter_name(key: &str, name: &str) -> Result<(), ConfigError> {
    let mut chars = name.chars();
    let is_name = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
    if is_name {
        Ok(())
    } else {
        Err(invalid(
            key,
            format!("\"{}\" is not a parameter name", name.escape_debug()),
        ))
    }
}

/// `track_extra_parameters`: PgBouncer's default (IntervalStyle) when unset; names checked
/// and spelled as PostgreSQL reports them, duplicates and the always-tracked five dropped.
fn extra_tracked(names: Option<Vec<String>>) -> Result<Vec<String>, ConfigError> {
    const KEY: &str = "pooler.track_extra_parameters";
    let Some(names) = names else {
        return Ok(vec!["IntervalStyle".to_owned()]);
    };
    let mut out: Vec<String> = Vec::new();
    for name in names {
        check_parameter_name(KEY, &name)?;
        if NEVER_TRACKED.iter().any(|n| n.eq_ignore_ascii_case(&name)) {
            return Err(invalid(
                KEY,
                format!("\"{name}\" cannot be tracked per client"),
            ));
        }
        let known = ALWAYS_TRACKED.iter().any(|n| n.eq_ignore_ascii_case(&name))
            || out.iter().any(|n| n.eq_ignore_ascii_case(&name));
        if !known {
            let spelled = REPORTED_SPELLING
                .iter()
                .find(|n| n.eq_ignore_ascii_case(&name))
                .map_or(name, |n| (*n).to_owned());
            out.push(spelled);
        }
    }
    Ok(out)
}

/// One `[pooler.databases.NAME]` entry, checked; errors name the key.
fn database_override(
    name: &str,
    db: DatabaseSection,
    default_pool_size: u32,
    min_pool_size: u32,
) -> Result<DatabaseOverride, ConfigError> {
    let DatabaseSection {
        pool_mode,
        pool_size,
        pin_on_session_state,
        min_pool_size: db_min_pool_size,
        reserve_pool_size,
        max_db_connections,
        max_db_client_connections,
        server_lifetime,
        query_wait_timeout,
        connect_query,
    } = db;
    let key = |k: &str| format!("pooler.databases.{name}.{k}");
    if pool_size == Some(0) {
        return Err(invalid(&key("pool_size"), "must be at least 1"));
    }
    let size = pool_size.unwrap_or(default_pool_size);
    if db_min_pool_size.unwrap_or(min_pool_size.min(size)) > size {
        return Err(invalid(
            &key("min_pool_size"),
            "must not exceed the database's pool_size",
        ));
    }
    let server_lifetime = server_lifetime
        .map(|v| seconds(&key("server_lifetime"), Some(v), 0.0))
        .transpose()?
        .map(Option::unwrap_or_default);
    let query_wait_timeout = query_wait_timeout
        .map(|v| seconds(&key("query_wait_timeout"), Some(v), 0.0))
        .transpose()?;
    if connect_query.as_deref().is_some_and(|q| q.contains('\0')) {
        return Err(invalid(
            &key("connect_query"),
            "must not contain a NUL byte",
        ));
    }
    Ok(DatabaseOverride {
        pool_mode,
        pool_size,
        pin_on_session_state,
        min_pool_size: db_min_pool_size,
        reserve_pool_size,
        max_db_connections,
        max_db_client_connections,
        server_lifetime,
        query_wait_timeout,
        connect_query: connect_query.filter(|q| !q.trim().is_empty()),
    })
}

/// `ignore_startup_parameters`: names checked, kept in lower case (startup parameter
/// names are matched case-insensitively, as GUC names are).
fn ignored_parameters(names: Option<Vec<String>>) -> Result<Vec<String>, ConfigError> {
    const KEY: &str = "pooler.ignore_startup_parameters";
    let mut out: Vec<String> = Vec::new();
    for name in names.unwrap_or_default() {
        check_parameter_name(KEY, &name)?;
        let lower = name.to_ascii_lowercase();
        if ["user", "database", "replication"].contains(&lower.as_str()) {
            return Err(invalid(KEY, format!("\"{name}\" cannot be ignored")));
        }
        if !out.contains(&lower) {
            out.push(lower);
        }
    }
    Ok(out)
}

/// `auto` (the default) is half the CPUs, at least one, as Odyssey's `workers = auto`:
/// PostgreSQL's backends on the same machine need the rest, and on a small machine a
/// second relaying thread only adds wake-ups between threads (see the README's
/// performance section).
fn worker_thread_count(value: Option<WorkerThreads>) -> Result<usize, ConfigError> {
    const KEY: &str = "pooler.worker_threads";
    match value {
        None => Ok(auto_worker_threads()),
        Some(WorkerThreads::Word(word)) if word == "auto" => Ok(auto_worker_threads()),
        Some(WorkerThreads::Count(n)) if (1..=1024).contains(&n) => Ok(n as usize),
        Some(WorkerThreads::Count(_)) => {
            Err(invalid(KEY, "must be between 1 and 1024, or \"auto\""))
        }
        Some(WorkerThreads::Word(_)) => {
            Err(invalid(KEY, "must be \"auto\" or a number of threads"))
        }
    }
}

fn auto_worker_threads() -> usize {
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    (cpus / 2).max(1)
}

/// A number of seconds; 0 disables the timeout (`None`), negative is an error.
fn seconds(key: &str, value: Option<f64>, default: f64) -> Result<Option<Duration>, ConfigError> {
    let value = value.unwrap_or(default);
    if !value.is_finite() || value < 0.0 {
        return Err(invalid(key, "must be a number of seconds, 0 or more"));
    }
    Ok((value > 0.0).then(|| Duration::from_secs_f64(value)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(toml: &str) -> Result<PoolerConfig, String> {
        let section: PoolerSection = toml::from_str(toml).map_err(|e| e.to_string())?;
        PoolerConfig::from_section(section).map_err(|e| e.to_string())
    }

    #[test]
    fn pin_on_session_state_defaults_to_pin_and_is_overridden_per_database() {
        let config = section("").unwrap();
        assert_eq!(config.pin_policy("shop"), PinOnSessionState::Pin);
        let config = section(
            "pin_on_session_state = \"ignore\"\n[databases.shop]\npin_on_session_state = \"error\"\n",
        )
        .unwrap();
        assert_eq!(config.pin_policy("shop"), PinOnSessionState::Error);
        assert_eq!(config.pin_policy("crm"), PinOnSessionState::Ignore);
        let err = section("pin_on_session_state = \"sometimes\"\n").unwrap_err();
        assert!(err.contains("pin_on_session_state"), "{err}");
        assert!(err.contains("pin"), "{err}");
    }

    #[test]
    fn per_database_settings_fall_back_to_the_global_ones_as_in_pgbouncer() {
        let config = section(
            "max_db_connections = 8\nserver_lifetime = 0\n[databases.shop]\npool_size = 4\n\
             min_pool_size = 2\nreserve_pool_size = 1\nmax_db_connections = 3\n\
             max_db_client_connections = 5\nserver_lifetime = 60\nquery_wait_timeout = 0\n\
             connect_query = \"select 1\"\n",
        )
        .unwrap();
        let shop = config.database("shop");
        assert_eq!(shop.min_pool_size, Some(2));
        assert_eq!(shop.server_lifetime, Some(Duration::from_secs(60)));
        assert_eq!(shop.connect_query.as_deref(), Some("select 1"));
        assert_eq!(config.max_db_connections_for("shop"), 3);
        assert_eq!(config.max_db_connections_for("crm"), 8);
        assert_eq!(config.max_db_client_connections_for("shop"), 5);
        assert_eq!(config.max_db_client_connections_for("crm"), 0);
        assert_eq!(config.query_wait_timeout_for("shop"), None);
        assert_eq!(
            config.server_lifetime,
            Some(Duration::ZERO),
            "0 = used once"
        );
        for (bad, key) in [
            (
                "[databases.shop]\npool_size = 2\nmin_pool_size = 3\n",
                "pooler.databases.shop.min_pool_size",
            ),
            (
                "[databases.shop]\nserver_lifetime = -1\n",
                "pooler.databases.shop.server_lifetime",
            ),
            ("[databases.shop]\nreserve_pool = 1\n", "reserve_pool"),
            (
                "ignore_startup_parameters = [\"user\"]\n",
                "pooler.ignore_startup_parameters",
            ),
            ("query_timeout = -2\n", "pooler.query_timeout"),
        ] {
            let err = section(bad).unwrap_err();
            assert!(err.contains(key), "{bad}: {err}");
        }
    }

    fn names(list: &[&str]) -> Option<Vec<String>> {
        Some(list.iter().map(|n| (*n).to_owned()).collect())
    }

    #[test]
    fn extra_tracked_parameters_are_checked_and_spelled_as_postgresql_reports_them() {
        assert_eq!(extra_tracked(None).unwrap(), ["IntervalStyle"]);
        assert_eq!(
            extra_tracked(names(&[
                "intervalstyle",
                "datestyle",
                "IntervalStyle",
                "my.knob"
            ]))
            .unwrap(),
            ["IntervalStyle", "my.knob"]
        );
        assert!(extra_tracked(names(&[])).unwrap().is_empty());
        for bad in ["session_authorization", "bad name", "", "1x"] {
            let e = extra_tracked(names(&[bad])).unwrap_err().to_string();
            assert!(e.contains("pooler.track_extra_parameters"), "{bad}: {e}");
        }
    }
}
