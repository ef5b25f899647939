//! A `pgbouncer.ini` translated into `[pooler]` and `[pooler.databases.NAME]` TOML (pure:
//! text in, text out). Settings with PgBouncer's name and meaning here are written as
//! TOML; every other line is kept as a comment that says why it does not apply. The
//! tables below are also the README's compatibility table (a test keeps them in step).

use std::fmt::Write as _;

/// How a PgBouncer value is written in TOML.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Integer,
    /// Seconds, as PgBouncer's time settings (fractions allowed).
    Seconds,
    Text,
    /// 0/1 (or yes/no, on/off, true/false).
    Bool,
    /// A comma-separated list.
    List,
    /// session | transaction (statement pooling does not exist here).
    PoolMode,
    /// `client_tls_sslmode`, written as `client_tls`.
    ClientTls,
}

/// What becomes of a PgBouncer setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// The same name, unit and meaning.
    Same(Kind),
    /// Another name or form here, and how.
    Different(Kind, &'static str),
    /// Not applicable here, and why.
    NotApplicable(&'static str),
}

const LOGS: &str = "the agent logs to stderr (text or JSON lines) for journald or a shipper";
const AUTH: &str = "clients log in by SCRAM against PostgreSQL's own verifiers (pg_authid, read at every login) and the pooler logs in with the client's proof, so no password list or query is needed";
const HBA: &str =
    "PostgreSQL's pg_hba.conf decides, since the pooler logs in as the client's own role";
const SOCKET: &str = "the unix socket is <data>/run/socket/.s.PGSQL.<port>, beside PostgreSQL's, mode 0777 as PgBouncer's default";
const DNS: &str =
    "no DNS: the server is the local PostgreSQL's socket or, in HA, a verified member's address";
const SERVER_TLS: &str =
    "the pooler reaches the local PostgreSQL over its unix socket (in HA, the primary's pg_hba decides)";
const CLIENT_TLS_OPTIONS: &str =
    "rustls' defaults: TLS 1.2 and 1.3 with its safe cipher suites and curves";
const TCP: &str = "the operating system's defaults";
const ONE_PROCESS: &str = "one agent per node: no peers, no socket takeover; roll nodes one at a time (switchover) instead";
const USERS: &str =
    "no per-user settings: the [pooler] and [pooler.databases.*] values apply to every role";

/// `[pgbouncer]`: every PgBouncer 1.25 setting, in the order of its doc/config.md.
pub const PGBOUNCER: &[(&str, Fate)] = &[
    ("logfile", Fate::NotApplicable(LOGS)),
    ("pidfile", Fate::NotApplicable("the agent runs in the foreground (systemd); <data>/run/agent.json names the running agent")),
    ("listen_addr", Fate::Different(Kind::Text, "one address; `*` is written as 0.0.0.0; default 127.0.0.1 (PgBouncer: none, the unix socket only)")),
    ("listen_port", Fate::Same(Kind::Integer)),
    ("unix_socket_dir", Fate::NotApplicable(SOCKET)),
    ("unix_socket_mode", Fate::NotApplicable(SOCKET)),
    ("unix_socket_group", Fate::NotApplicable(SOCKET)),
    ("user", Fate::NotApplicable("the agent's OS user; PostgreSQL runs as `postgres`")),
    ("pool_mode", Fate::Different(Kind::PoolMode, "session or transaction (no statement mode); default transaction (PgBouncer: session)")),
    ("max_client_conn", Fate::Different(Kind::Integer, "default 10000 (PgBouncer: 100)")),
    ("default_pool_size", Fate::Same(Kind::Integer)),
    ("min_pool_size", Fate::Same(Kind::Integer)),
    ("reserve_pool_size", Fate::Same(Kind::Integer)),
    ("reserve_pool_timeout", Fate::Same(Kind::Seconds)),
    ("max_db_connections", Fate::Same(Kind::Integer)),
    ("max_db_client_connections", Fate::Same(Kind::Integer)),
    ("max_user_connections", Fate::Same(Kind::Integer)),
    ("max_user_client_connections", Fate::NotApplicable("not supported: max_client_conn and max_db_client_connections bound clients")),
    ("server_round_robin", Fate::NotApplicable("one PostgreSQL per pool: nothing to balance")),
    ("track_extra_parameters", Fate::Same(Kind::List)),
    ("ignore_startup_parameters", Fate::Same(Kind::List)),
    ("peer_id", Fate::NotApplicable(ONE_PROCESS)),
    ("disable_pqexec", Fate::NotApplicable("not supported: the simple query protocol is always allowed")),
    ("application_name_add_host", Fate::NotApplicable("not supported")),
    ("conffile", Fate::NotApplicable("the config file is --config or $PGPLATFORM_CONFIG")),
    ("service_name", Fate::NotApplicable("Windows only")),
    ("job_name", Fate::NotApplicable("Windows only")),
    ("stats_period", Fate::NotApplicable("fixed at PgBouncer's default, 60 s: SHOW STATS' averages cover the last one to two minutes")),
    ("max_prepared_statements", Fate::Same(Kind::Integer)),
    ("scram_iterations", Fate::NotApplicable("the verifier in pg_authid carries its own iterations (PostgreSQL's scram_iterations)")),
    ("auth_type", Fate::NotApplicable("SCRAM-SHA-256 always; the console trusts the platform's OS users on the unix socket (peer)")),
    ("auth_hba_file", Fate::NotApplicable(HBA)),
    ("auth_ident_file", Fate::NotApplicable(HBA)),
    ("auth_file", Fate::NotApplicable(AUTH)),
    ("auth_user", Fate::NotApplicable(AUTH)),
    ("auth_query", Fate::NotApplicable(AUTH)),
    ("auth_dbname", Fate::NotApplicable(AUTH)),
    ("auth_ldap_options", Fate::NotApplicable("LDAP is PostgreSQL's to do (pg_hba.conf); the pooler checks SCRAM verifiers")),
    ("syslog", Fate::NotApplicable(LOGS)),
    ("syslog_ident", Fate::NotApplicable(LOGS)),
    ("syslog_facility", Fate::NotApplicable(LOGS)),
    ("log_connections", Fate::NotApplicable(LOGS)),
    ("log_disconnections", Fate::NotApplicable(LOGS)),
    ("log_pooler_errors", Fate::NotApplicable(LOGS)),
    ("log_stats", Fate::NotApplicable("SHOW STATS and /metrics carry the numbers")),
    ("verbose", Fate::NotApplicable(LOGS)),
    ("admin_users", Fate::Different(Kind::List, "a TOML list; these roles log in to the console with their PostgreSQL password")),
    ("stats_users", Fate::Different(Kind::List, "a TOML list; these roles log in to the console with their PostgreSQL password")),
    ("server_reset_query", Fate::Same(Kind::Text)),
    ("server_reset_query_always", Fate::Same(Kind::Bool)),
    ("server_check_delay", Fate::Same(Kind::Seconds)),
    ("server_check_query", Fate::Different(Kind::Text, "default `select 1` (PgBouncer 1.25: an empty query)")),
    ("server_fast_close", Fate::Same(Kind::Bool)),
    ("server_lifetime", Fate::Same(Kind::Seconds)),
    ("server_idle_timeout", Fate::Same(Kind::Seconds)),
    ("server_connect_timeout", Fate::Same(Kind::Seconds)),
    ("server_login_retry", Fate::NotApplicable("not supported: a failed server login is reported to the clients waiting for it")),
    ("client_login_timeout", Fate::Same(Kind::Seconds)),
    ("autodb_idle_timeout", Fate::NotApplicable("every database of the platform is reachable, as through PgBouncer's `*` entry; a pool lives while it has connections")),
    ("dns_max_ttl", Fate::NotApplicable(DNS)),
    ("dns_nxdomain_ttl", Fate::NotApplicable(DNS)),
    ("dns_zone_check_period", Fate::NotApplicable(DNS)),
    ("resolv_conf", Fate::NotApplicable(DNS)),
    ("query_wait_notify", Fate::NotApplicable("not supported: a waiting client gets no NOTICE")),
    ("client_tls_sslmode", Fate::Different(Kind::ClientTls, "named `client_tls`: disable, allow (PgBouncer's allow and prefer) or require; no client certificates (verify-ca/verify-full); default allow with a generated certificate")),
    ("client_tls_key_file", Fate::Same(Kind::Text)),
    ("client_tls_cert_file", Fate::Same(Kind::Text)),
    ("client_tls_ca_file", Fate::NotApplicable("client certificates are not checked: clients prove a password by SCRAM, with channel binding over TLS")),
    ("client_tls_protocols", Fate::NotApplicable(CLIENT_TLS_OPTIONS)),
    ("client_tls_ciphers", Fate::NotApplicable(CLIENT_TLS_OPTIONS)),
    ("client_tls13_ciphers", Fate::NotApplicable(CLIENT_TLS_OPTIONS)),
    ("client_tls_ecdhcurve", Fate::NotApplicable(CLIENT_TLS_OPTIONS)),
    ("client_tls_dheparams", Fate::NotApplicable(CLIENT_TLS_OPTIONS)),
    ("server_tls_sslmode", Fate::NotApplicable(SERVER_TLS)),
    ("server_tls_ca_file", Fate::NotApplicable(SERVER_TLS)),
    ("server_tls_key_file", Fate::NotApplicable(SERVER_TLS)),
    ("server_tls_cert_file", Fate::NotApplicable(SERVER_TLS)),
    ("server_tls_protocols", Fate::NotApplicable(SERVER_TLS)),
    ("server_tls_ciphers", Fate::NotApplicable(SERVER_TLS)),
    ("server_tls13_ciphers", Fate::NotApplicable(SERVER_TLS)),
    ("query_timeout", Fate::Same(Kind::Seconds)),
    ("query_wait_timeout", Fate::Same(Kind::Seconds)),
    ("cancel_wait_timeout", Fate::NotApplicable("not supported: a cancel request is relayed at once to the server running the client's query")),
    ("client_idle_timeout", Fate::Same(Kind::Seconds)),
    ("idle_transaction_timeout", Fate::Same(Kind::Seconds)),
    ("transaction_timeout", Fate::Same(Kind::Seconds)),
    ("suspend_timeout", Fate::NotApplicable("SUSPEND flushes nothing: every write is flushed before a client's task goes on")),
    ("pkt_buf", Fate::NotApplicable("buffers grow with the message (bounded by max_packet_size; over 64 KiB streamed) and shrink back")),
    ("max_packet_size", Fate::Same(Kind::Integer)),
    ("listen_backlog", Fate::NotApplicable(TCP)),
    ("sbuf_loopcnt", Fate::NotApplicable("the relay yields to other clients on its own (tokio's budget)")),
    ("so_reuseport", Fate::NotApplicable(ONE_PROCESS)),
    ("tcp_defer_accept", Fate::NotApplicable(TCP)),
    ("tcp_socket_buffer", Fate::NotApplicable(TCP)),
    ("tcp_keepalive", Fate::NotApplicable(TCP)),
    ("tcp_keepcnt", Fate::NotApplicable(TCP)),
    ("tcp_keepidle", Fate::NotApplicable(TCP)),
    ("tcp_keepintvl", Fate::NotApplicable(TCP)),
    ("tcp_user_timeout", Fate::NotApplicable(TCP)),
];

const ROUTE: &str =
    "the platform's own PostgreSQL (in HA, the primary; the read-only listener, the replicas)";

/// A `[databases]` entry's connection-string keys.
pub const DATABASE: &[(&str, Fate)] = &[
    (
        "dbname",
        Fate::NotApplicable("no aliases: a client names the PostgreSQL database itself"),
    ),
    ("host", Fate::NotApplicable(ROUTE)),
    ("port", Fate::NotApplicable(ROUTE)),
    (
        "user",
        Fate::NotApplicable("no forced user: every client logs in as its own role"),
    ),
    ("password", Fate::NotApplicable(AUTH)),
    ("auth_user", Fate::NotApplicable(AUTH)),
    ("auth_query", Fate::NotApplicable(AUTH)),
    ("auth_dbname", Fate::NotApplicable(AUTH)),
    ("pool_size", Fate::Same(Kind::Integer)),
    ("min_pool_size", Fate::Same(Kind::Integer)),
    ("reserve_pool_size", Fate::Same(Kind::Integer)),
    ("connect_query", Fate::Same(Kind::Text)),
    (
        "pool_mode",
        Fate::Different(Kind::PoolMode, "session or transaction"),
    ),
    ("load_balance_hosts", Fate::NotApplicable(ROUTE)),
    ("max_db_connections", Fate::Same(Kind::Integer)),
    ("max_db_client_connections", Fate::Same(Kind::Integer)),
    ("server_lifetime", Fate::Same(Kind::Seconds)),
    (
        "client_encoding",
        Fate::NotApplicable("set it on the database: ALTER DATABASE … SET client_encoding"),
    ),
    (
        "datestyle",
        Fate::NotApplicable("set it on the database: ALTER DATABASE … SET DateStyle"),
    ),
    (
        "timezone",
        Fate::NotApplicable("set it on the database: ALTER DATABASE … SET TimeZone"),
    ),
];

/// Defaults that differ, written out when the file does not set them, so that the
/// translated pooler behaves as the PgBouncer did.
const PGBOUNCER_DEFAULTS: &[(&str, &str)] =
    &[("pool_mode", "\"session\""), ("max_client_conn", "100")];

/// The TOML for `ini`.
pub fn translate(ini: &str) -> String {
    let mut pooler: Vec<String> = Vec::new();
    let mut databases: Vec<String> = Vec::new();
    let mut rest: Vec<String> = Vec::new();
    let mut section = String::new();
    let mut set: Vec<String> = Vec::new();
    for raw in ini.lines() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with(';') || line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.trim().to_ascii_lowercase();
            continue;
        }
        if line.starts_with("%include") {
            rest.push(comment(
                line,
                "not followed: translate the included file too and merge it",
            ));
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            rest.push(comment(line, "not a `key = value` line"));
            continue;
        };
        let (key, value) = (key.trim(), value.trim());
        match section.as_str() {
            "pgbouncer" => {
                let key = key.to_ascii_lowercase();
                set.push(key.clone());
                pooler.push(setting(PGBOUNCER, &key, value));
            }
            "databases" => databases.extend(database(key, value)),
            "users" => rest.push(comment(&format!("[users] {key} = {value}"), USERS)),
            "peers" => rest.push(comment(&format!("[peers] {key} = {value}"), ONE_PROCESS)),
            other => rest.push(comment(
                &format!("[{other}] {key} = {value}"),
                "not a PgBouncer section",
            )),
        }
    }
    for (key, value) in PGBOUNCER_DEFAULTS {
        if !set.iter().any(|k| k == key) {
            pooler.push(format!(
                "{key} = {value}  # PgBouncer's default, which pgplatform's differs from"
            ));
        }
    }
    let mut out = String::from(
        "# From a pgbouncer.ini by `pgplatform pooler import-ini`: PgBouncer's settings that\n\
         # apply here, and each one that does not, commented with the reason.\n[pooler]\n",
    );
    for line in pooler.iter().chain(&databases).chain(&rest) {
        let _ = writeln!(out, "{line}");
    }
    out
}

/// One `key = value` of `table`: TOML, or a comment saying why not.
fn setting(table: &[(&str, Fate)], key: &str, value: &str) -> String {
    let shown = format!("{key} = {value}");
    let Some((_, fate)) = table.iter().find(|(name, _)| *name == key) else {
        return comment(&shown, "not a PgBouncer 1.25 setting");
    };
    let kind = match fate {
        Fate::NotApplicable(why) => return comment(&shown, &format!("not applicable: {why}")),
        Fate::Same(kind) | Fate::Different(kind, _) => *kind,
    };
    let name = if kind == Kind::ClientTls {
        "client_tls"
    } else {
        key
    };
    let value = match value.trim() {
        "*" if key == "listen_addr" => "0.0.0.0",
        v if key == "listen_addr" && v.contains(',') => {
            return comment(&shown, "not translated: the pooler listens on one address");
        }
        v => v,
    };
    match toml_value(kind, value) {
        Ok(toml) => format!("{name} = {toml}"),
        Err(why) => comment(&shown, &why),
    }
}

fn comment(line: &str, why: &str) -> String {
    format!("# {line}  # {why}")
}

/// A `[databases]` entry: its section, or comments for the fallback `*`.
fn database(name: &str, connection: &str) -> Vec<String> {
    let name = unquote_identifier(name);
    let pairs = connection_pairs(connection);
    if name == "*" {
        let mut lines = vec![comment(
            &format!("[databases] * = {connection}"),
            "not needed: every database of the platform's PostgreSQL is reachable, as through this fallback",
        )];
        lines.extend(
            pairs
                .iter()
                .filter(|(k, _)| !matches!(k.as_str(), "host" | "port" | "dbname"))
                .map(|(k, v)| comment(&format!("{k} = {v}"), "a fallback's settings do not carry over: set them under [pooler] or per database")),
        );
        return lines;
    }
    let mut lines = vec![format!("\n[pooler.databases.{}]", toml_key(&name))];
    for (key, value) in &pairs {
        if key == "dbname" && *value == name {
            lines.push(comment(
                &format!("{key} = {value}"),
                "the entry's own name: nothing to translate",
            ));
            continue;
        }
        lines.push(setting(DATABASE, key, value));
    }
    lines
}

/// A TOML key: bare when it can be, else a quoted string.
fn toml_key(name: &str) -> String {
    if !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        name.to_owned()
    } else {
        toml_string(name)
    }
}

/// `"na""me"` → `na"me`, as PgBouncer reads a quoted database name.
fn unquote_identifier(name: &str) -> String {
    match name.strip_prefix('"').and_then(|n| n.strip_suffix('"')) {
        Some(inner) => inner.replace("\"\"", "\""),
        None => name.to_owned(),
    }
}

/// `host=a port=5432 dbname='my db'` → pairs; values in single quotes may hold blanks,
/// `\'` or `''` inside them a quote.
fn connection_pairs(text: &str) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let key: String =
            std::iter::from_fn(|| chars.next_if(|c| *c != '=' && !c.is_whitespace())).collect();
        if key.is_empty() {
            break;
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next_if_eq(&'=').is_none() {
            pairs.push((key.to_ascii_lowercase(), String::new()));
            continue;
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '\'' if chars.next_if_eq(&'\'').is_some() => value.push('\''),
                    '\'' => break,
                    c => value.push(c),
                }
            }
        } else {
            value = std::iter::from_fn(|| chars.next_if(|c| !c.is_whitespace())).collect();
        }
        pairs.push((key.to_ascii_lowercase(), value));
    }
    pairs
}

/// PgBouncer's text for a setting as a TOML value, or why it cannot be.
fn toml_value(kind: Kind, value: &str) -> Result<String, String> {
    let value = unquote_value(value);
    match kind {
        Kind::Integer => value
            .parse::<i64>()
            .map(|n| n.to_string())
            .map_err(|_| format!("not translated: {value:?} is not a whole number")),
        Kind::Seconds => match value.parse::<f64>() {
            Ok(s) if s.is_finite() && s >= 0.0 => Ok(format!("{s:?}")),
            _ => Err(format!(
                "not translated: {value:?} is not a number of seconds"
            )),
        },
        Kind::Text => Ok(toml_string(&value)),
        Kind::Bool => match value.to_ascii_lowercase().as_str() {
            "1" | "yes" | "on" | "true" => Ok("true".to_owned()),
            "0" | "no" | "off" | "false" => Ok("false".to_owned()),
            _ => Err(format!("not translated: {value:?} is not 0 or 1")),
        },
        Kind::List => {
            let items: Vec<String> = value
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(toml_string)
                .collect();
            Ok(format!("[{}]", items.join(", ")))
        }
        Kind::PoolMode => match value.to_ascii_lowercase().as_str() {
            mode @ ("session" | "transaction") => Ok(toml_string(mode)),
            "statement" => Err("not applicable: no statement pooling; `transaction` is the nearest (it allows multi-statement transactions)".to_owned()),
            _ => Err(format!("not translated: unknown pool_mode {value:?}")),
        },
        Kind::ClientTls => match value.to_ascii_lowercase().as_str() {
            "disable" => Ok(toml_string("disable")),
            "allow" | "prefer" => Ok(toml_string("allow")),
            "require" => Ok(toml_string("require")),
            "verify-ca" | "verify-full" => Err(
                "not applicable: client certificates are not checked; `client_tls = \"require\"` with SCRAM channel binding is the nearest".to_owned(),
            ),
            _ => Err(format!("not translated: unknown client_tls_sslmode {value:?}")),
        },
    }
}

/// A value PgBouncer's ini parser would take without its surrounding quotes.
fn unquote_value(value: &str) -> String {
    for quote in ['\'', '"'] {
        if let Some(inner) = value
            .strip_prefix(quote)
            .and_then(|v| v.strip_suffix(quote))
        {
            return inner.to_owned();
        }
    }
    value.to_owned()
}

fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

#[cfg(test)]
#[path = "pgbouncer_ini_tests.rs"]
mod tests;
