//! `SET key = value` on the console: one `[pooler]` setting changed in the running pooler,
//! validated exactly as the config file's value (the same parser and checks), kept until
//! the next reload or restart, which read the file again (as PgBouncer's RELOAD does).

use crate::config::reload::pooler_key_changeable;
use crate::config::{Config, ConfigFile, PoolerConfig};

/// Keys whose value is a TOML string (a bare word is quoted for them).
const STRING_KEYS: &[&str] = &["pool_mode", "server_reset_query", "server_check_query"];

/// The running config with `key` set to `value`, or why not (the error's DETAIL).
pub fn apply(running: &PoolerConfig, key: &str, value: &str) -> Result<PoolerConfig, String> {
    if !pooler_key_changeable(key) {
        return Err(format!(
            "{key} is read when the agent starts: change it in the config file and restart"
        ));
    }
    let literal = if STRING_KEYS.contains(&key) {
        toml_string(value)
    } else {
        value.to_owned()
    };
    let text = format!("[pooler]\n{key} = {literal}\n");
    let file: ConfigFile = toml::from_str(&text).map_err(|e| {
        let message = e.message().to_owned();
        if message.contains("unknown field") {
            format!("unknown or unsupported parameter: {key}")
        } else {
            format!("invalid value for {key}: {message}")
        }
    })?;
    let parsed = Config::from_file(file, std::path::Path::new("/"), None)
        .map_err(|e| e.to_string())?
        .pooler;
    let mut new = running.clone();
    if !copy_key(&mut new, &parsed, key) {
        return Err(format!("unknown or unsupported parameter: {key}"));
    }
    if new.min_pool_size > new.default_pool_size {
        return Err(
            "invalid value: pooler.min_pool_size must not exceed pooler.default_pool_size"
                .to_owned(),
        );
    }
    Ok(new)
}

/// Copies one live key from `from` to `into`; false for a key SET does not change.
fn copy_key(into: &mut PoolerConfig, from: &PoolerConfig, key: &str) -> bool {
    match key {
        "pool_mode" => into.pool_mode = from.pool_mode,
        "default_pool_size" => into.default_pool_size = from.default_pool_size,
        "min_pool_size" => into.min_pool_size = from.min_pool_size,
        "reserve_pool_size" => into.reserve_pool_size = from.reserve_pool_size,
        "reserve_pool_timeout" => into.reserve_pool_timeout = from.reserve_pool_timeout,
        "max_client_conn" => into.max_client_conn = from.max_client_conn,
        "max_db_connections" => into.max_db_connections = from.max_db_connections,
        "max_user_connections" => into.max_user_connections = from.max_user_connections,
        "query_wait_timeout" => into.query_wait_timeout = from.query_wait_timeout,
        "query_timeout" => into.query_timeout = from.query_timeout,
        "transaction_timeout" => into.transaction_timeout = from.transaction_timeout,
        "server_fast_close" => into.server_fast_close = from.server_fast_close,
        "max_db_client_connections" => {
            into.max_db_client_connections = from.max_db_client_connections;
        }
        "client_idle_timeout" => into.client_idle_timeout = from.client_idle_timeout,
        "client_login_timeout" => into.client_login_timeout = from.client_login_timeout,
        "idle_transaction_timeout" => {
            into.idle_transaction_timeout = from.idle_transaction_timeout;
        }
        "server_idle_timeout" => into.server_idle_timeout = from.server_idle_timeout,
        "server_lifetime" => into.server_lifetime = from.server_lifetime,
        "server_connect_timeout" => into.server_connect_timeout = from.server_connect_timeout,
        "server_reset_query" => into.server_reset_query = from.server_reset_query.clone(),
        "server_reset_query_always" => {
            into.server_reset_query_always = from.server_reset_query_always;
        }
        "server_check_query" => into.server_check_query = from.server_check_query.clone(),
        "server_check_delay" => into.server_check_delay = from.server_check_delay,
        "max_prepared_statements" => into.max_prepared_statements = from.max_prepared_statements,
        "max_packet_size" => into.max_packet_size = from.max_packet_size,
        "shutdown_timeout" => into.shutdown_timeout = from.shutdown_timeout,
        _ => return false,
    }
    true
}

/// `value` as a TOML basic string.
fn toml_string(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn running() -> PoolerConfig {
        let file: ConfigFile = toml::from_str("[pooler]\ndefault_pool_size = 4\n").unwrap();
        Config::from_file(file, std::path::Path::new("/"), None)
            .unwrap()
            .pooler
    }

    #[test]
    fn a_valid_value_changes_only_its_key() {
        let before = running();
        let after = apply(&before, "default_pool_size", "7").unwrap();
        assert_eq!(after.default_pool_size, 7);
        assert_eq!(after.query_wait_timeout, before.query_wait_timeout);
        let after = apply(&before, "query_wait_timeout", "0.5").unwrap();
        assert_eq!(
            after.query_wait_timeout,
            Some(std::time::Duration::from_millis(500))
        );
        assert_eq!(after.default_pool_size, 4);
        let after = apply(&before, "server_check_query", "select 'x'").unwrap();
        assert_eq!(after.server_check_query, "select 'x'");
        let after = apply(&before, "pool_mode", "session").unwrap();
        assert_eq!(after.pool_mode.as_str(), "session");
        let after = apply(&before, "query_timeout", "2.5").unwrap();
        assert_eq!(
            after.query_timeout,
            Some(std::time::Duration::from_millis(2500))
        );
        let after = apply(&before, "server_fast_close", "true").unwrap();
        assert!(after.server_fast_close);
        let after = apply(&before, "max_db_client_connections", "9").unwrap();
        assert_eq!(after.max_db_client_connections, 9);
    }

    #[test]
    fn values_are_checked_as_in_the_file() {
        let before = running();
        assert!(apply(&before, "default_pool_size", "0")
            .unwrap_err()
            .contains("at least 1"));
        assert!(apply(&before, "default_pool_size", "many").is_err());
        assert!(apply(&before, "query_wait_timeout", "-1").is_err());
        assert!(apply(&before, "pool_mode", "statement").is_err());
        assert!(apply(&before, "min_pool_size", "5")
            .unwrap_err()
            .contains("min_pool_size"));
        assert!(apply(&before, "max_packet_size", "10").is_err());
    }

    #[test]
    fn unknown_and_restart_only_keys_are_refused() {
        let before = running();
        assert!(apply(&before, "no_such_key", "1")
            .unwrap_err()
            .contains("unknown or unsupported parameter: no_such_key"));
        assert!(apply(&before, "listen_port", "7000")
            .unwrap_err()
            .contains("restart"));
        assert!(apply(&before, "admin_users", "x").is_err());
        assert!(apply(&before, "databases", "x").is_err());
    }
}
