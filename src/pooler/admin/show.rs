//! SHOW results with PgBouncer's columns, in its order, so scripts and the pgbouncer
//! exporter read them unchanged: CLIENTS and SERVERS as 1.25 has them (with `id`), the
//! others as 1.18.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::BytesMut;

use super::command::Show;
use crate::pooler::cancel::ClientInfo;
use crate::pooler::pin::Cause;
use crate::pooler::pool::Pool;
use crate::pooler::protocol::backend::encode as be;
use crate::pooler::server::ServerInfo;
use crate::pooler::Pooler;

/// The PgBouncer release whose console (commands, columns, messages) this one follows.
pub(super) const PGBOUNCER_VERSION: &str = "1.25.2";

pub(super) const INT4: u32 = 23;
pub(super) const INT8: u32 = 20;
pub(super) const TEXT: u32 = 25;
pub(super) const NUMERIC: u32 = 1700;

/// A result set under construction: typed columns, text values.
pub(super) struct Table {
    columns: Vec<(&'static str, u32)>,
    rows: Vec<Vec<Option<String>>>,
}

impl Table {
    pub(super) fn new(columns: &[(&'static str, u32)]) -> Table {
        Table {
            columns: columns.to_vec(),
            rows: Vec::new(),
        }
    }
    pub(super) fn row(&mut self, values: Vec<Option<String>>) {
        self.rows.push(values);
    }
    pub(super) fn write(self, out: &mut BytesMut, tag: &str) {
        be::row_description_typed(out, &self.columns);
        for row in &self.rows {
            let values: Vec<Option<&[u8]>> = row
                .iter()
                .map(|v| v.as_deref().map(str::as_bytes))
                .collect();
            be::data_row(out, &values);
        }
        be::command_complete(out, tag);
    }
}

pub(super) fn t(s: impl ToString) -> Option<String> {
    Some(s.to_string())
}

fn ip_or_unix(ip: Option<std::net::IpAddr>) -> String {
    ip.map_or_else(|| "unix".to_owned(), |ip| ip.to_string())
}

fn timestamp(at: SystemTime) -> String {
    let secs = at
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let days = secs / 86_400;
    let (h, m, s) = (secs % 86_400 / 3600, secs % 3600 / 60, secs % 60);
    let (y, mo, d) = civil_from_days(days as i64);
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{m:02}:{s:02} UTC")
}

/// Days since 1970-01-01 to a calendar date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

pub fn show(pooler: &Pooler, what: Show, out: &mut BytesMut) {
    let config = pooler.config();
    let pools = pooler.pools();
    match what {
        Show::Help => super::control::help(out),
        Show::Pools => super::show_stats::pools(pooler, &pools, out),
        Show::Stats | Show::StatsTotals | Show::StatsAverages | Show::Totals => {
            super::show_stats::stats(pooler, &pools, what, out);
        }
        Show::Sockets => super::show_sockets::sockets(pooler, &pools, out),
        Show::Clients => {
            let mut columns = connection_columns();
            // Ours, after PgBouncer's: why the client is pinned to its server connection.
            columns.push(("pinned", TEXT));
            let mut table = Table::new(&columns);
            for c in pooler.clients() {
                let mut row = client_row(&c, c.state.get());
                row.push(t(
                    Cause::from_byte(c.pinned.load(Relaxed)).map_or("", Cause::name)
                ));
                table.row(row);
            }
            table.write(out, "SHOW");
        }
        Show::Servers => {
            let mut table = Table::new(&connection_columns());
            for pool in &pools {
                for server in pool.servers() {
                    table.row(server_row(pooler, pool, &server, server.state.get()));
                }
            }
            table.write(out, "SHOW");
        }
        Show::Databases => {
            let mut table = Table::new(super::show_databases::COLUMNS);
            for row in super::show_databases::rows(pooler, &config, &pools) {
                table.row(row);
            }
            table.write(out, "SHOW");
        }
        Show::Users => {
            // 1.25's columns; there are no per-user settings, so the overrides are NULL
            // and the limits are the global ones (0: unlimited, as PgBouncer's default).
            let mut table = Table::new(&[
                ("name", TEXT),
                ("pool_size", TEXT),
                ("reserve_pool_size", TEXT),
                ("pool_mode", TEXT),
                ("max_user_connections", INT4),
                ("current_connections", INT4),
                ("max_user_client_connections", INT4),
                ("current_client_connections", INT4),
            ]);
            let mut users: Vec<String> = pools.iter().map(|p| p.key.user.clone()).collect();
            users.sort();
            users.dedup();
            let clients = pooler.clients();
            for user in users {
                let servers: u32 = pools
                    .iter()
                    .filter(|p| p.key.user == user)
                    .map(|p| p.stats.servers_open())
                    .sum();
                let connected = clients.iter().filter(|c| c.key.user == user).count();
                table.row(vec![
                    t(&user),
                    None,
                    None,
                    None,
                    t(config.max_user_connections),
                    t(servers),
                    t(0),
                    t(connected),
                ]);
            }
            table.write(out, "SHOW");
        }
        Show::Config => {
            let mut table = Table::new(&[
                ("key", TEXT),
                ("value", TEXT),
                ("default", TEXT),
                ("changeable", TEXT),
            ]);
            let defaults = default_pooler_config().map(|d| config_rows(&d));
            for (key, value) in config_rows(&config) {
                let default = defaults
                    .as_ref()
                    .and_then(|rows| rows.iter().find(|(k, _)| *k == key))
                    .map(|(_, v)| v.clone());
                // As PgBouncer's column: whether a reload (or SET) changes it while
                // running, decided where a reload sorts its keys.
                let changeable = if crate::config::reload::pooler_key_changeable(key) {
                    "yes"
                } else {
                    "no"
                };
                table.row(vec![t(key), t(value), default, t(changeable)]);
            }
            table.write(out, "SHOW");
        }
        Show::Version => {
            // PgBouncer answers "PgBouncer 1.25.2"; tools split that on blanks or match
            // `PgBouncer (\d+\.\d+\.\d+)` to learn which columns to expect, so the
            // first two words are the release whose console this one follows, and the
            // rest says what answers.
            let mut table = Table::new(&[("version", TEXT)]);
            table.row(vec![t(format!(
                "PgBouncer {PGBOUNCER_VERSION} compatible (pgplatform {})",
                env!("CARGO_PKG_VERSION")
            ))]);
            table.write(out, "SHOW");
        }
        Show::Lists => {
            let mut table = Table::new(&[("list", TEXT), ("items", INT8)]);
            let clients = pooler.clients.len();
            let mut dbs: Vec<&str> = pools.iter().map(|p| p.key.database.as_str()).collect();
            dbs.sort();
            dbs.dedup();
            let mut users: Vec<&str> = pools.iter().map(|p| p.key.user.as_str()).collect();
            users.sort();
            users.dedup();
            let used_servers: i64 = pools.iter().map(|p| p.counts().servers_open).sum();
            for (name, value) in [
                ("databases", dbs.len() as i64),
                ("users", users.len() as i64),
                ("pools", pools.len() as i64),
                ("free_clients", 0),
                ("used_clients", clients as i64),
                ("login_clients", 0),
                ("free_servers", 0),
                ("used_servers", used_servers),
                ("dns_names", 0),
                ("dns_zones", 0),
                ("dns_queries", 0),
                ("dns_pending", 0),
            ] {
                table.row(vec![t(name), t(value)]);
            }
            table.write(out, "SHOW");
        }
        Show::State => {
            let mut table = Table::new(&[("key", TEXT), ("value", TEXT)]);
            let paused = !pools.is_empty() && pools.iter().all(|p| p.is_paused());
            table.row(vec![
                t("active"),
                t(if pooler.draining.is_cancelled() {
                    "no"
                } else {
                    "yes"
                }),
            ]);
            table.row(vec![t("paused"), t(if paused { "yes" } else { "no" })]);
            table.row(vec![t("suspended"), t("no")]);
            table.write(out, "SHOW");
        }
    }
}

/// A client's SHOW CLIENTS / SHOW SOCKETS row (PgBouncer's connection columns), with
/// `state` as the command names it.
pub(super) fn client_row(c: &ClientInfo, state: &str) -> Vec<Option<String>> {
    vec![
        t("C"),
        t(&c.key.user),
        t(&c.key.database),
        t("none"),
        t(state),
        t(ip_or_unix(c.addr)),
        t(c.port),
        t(ip_or_unix(c.local_addr)),
        t(c.local_port),
        t(timestamp(c.connect_time)),
        t(timestamp(c.connect_time)),
        t(0),
        t(0),
        t(0),
        t(format!("{:#x}", c.id)),
        None,
        t(0),
        if c.tls { t("TLS") } else { t("") },
        t(&c.application_name),
        t(0),
        t(c.id),
    ]
}

/// A server connection's SHOW SERVERS / SHOW SOCKETS row.
pub(super) fn server_row(
    pooler: &Pooler,
    pool: &Pool,
    server: &Arc<ServerInfo>,
    state: &str,
) -> Vec<Option<String>> {
    let since = t(timestamp(server.connect_time));
    vec![
        t("S"),
        t(&pool.key.user),
        t(&pool.key.database),
        t("none"),
        t(state),
        t("unix"),
        t(pooler.target.port),
        t("unix"),
        t(0),
        since.clone(),
        since,
        t(0),
        t(0),
        t(u8::from(pool.close_needed(server))),
        t(format!("{:p}", Arc::as_ptr(server))),
        None,
        t(server.remote_pid),
        t(""),
        t(""),
        t(0),
        t(server.id),
    ]
}

pub(super) fn connection_columns() -> Vec<(&'static str, u32)> {
    vec![
        ("type", TEXT),
        ("user", TEXT),
        ("database", TEXT),
        ("replication", TEXT),
        ("state", TEXT),
        ("addr", TEXT),
        ("port", INT8),
        ("local_addr", TEXT),
        ("local_port", INT8),
        ("connect_time", TEXT),
        ("request_time", TEXT),
        ("wait", INT8),
        ("wait_us", INT8),
        ("close_needed", INT8),
        ("ptr", TEXT),
        ("link", TEXT),
        ("remote_pid", INT8),
        ("tls", TEXT),
        ("application_name", TEXT),
        ("prepared_statements", INT8),
        ("id", INT8),
    ]
}

/// `[pooler]` with nothing set: SHOW CONFIG's `default` column.
fn default_pooler_config() -> Option<crate::config::PoolerConfig> {
    let file: crate::config::ConfigFile = toml::from_str("").ok()?;
    let config = crate::config::Config::from_file(file, std::path::Path::new("/"), None).ok()?;
    Some(config.pooler)
}

fn config_rows(c: &crate::config::PoolerConfig) -> Vec<(&'static str, String)> {
    let secs = |d: Option<std::time::Duration>| d.map_or(0.0, |d| d.as_secs_f64()).to_string();
    vec![
        ("admin_users", c.admin_users.join(",")),
        ("client_idle_timeout", secs(c.client_idle_timeout)),
        ("client_login_timeout", secs(c.client_login_timeout)),
        (
            "client_tls_sslmode",
            format!("{:?}", c.client_tls).to_lowercase(),
        ),
        ("default_pool_size", c.default_pool_size.to_string()),
        ("idle_transaction_timeout", secs(c.idle_transaction_timeout)),
        (
            "ignore_startup_parameters",
            c.ignore_startup_parameters.join(","),
        ),
        ("listen_addr", c.listen_addr.clone()),
        ("listen_port", c.listen_port.to_string()),
        ("max_client_conn", c.max_client_conn.to_string()),
        ("max_db_connections", c.max_db_connections.to_string()),
        (
            "max_db_client_connections",
            c.max_db_client_connections.to_string(),
        ),
        ("max_packet_size", c.max_packet_size.to_string()),
        (
            "max_prepared_statements",
            c.max_prepared_statements.to_string(),
        ),
        ("max_user_connections", c.max_user_connections.to_string()),
        ("min_pool_size", c.min_pool_size.to_string()),
        ("pool_mode", c.pool_mode.as_str().to_owned()),
        ("query_timeout", secs(c.query_timeout)),
        ("query_wait_timeout", secs(c.query_wait_timeout)),
        ("reserve_pool_size", c.reserve_pool_size.to_string()),
        (
            "reserve_pool_timeout",
            c.reserve_pool_timeout.as_secs_f64().to_string(),
        ),
        (
            "server_check_delay",
            c.server_check_delay.as_secs_f64().to_string(),
        ),
        ("server_check_query", c.server_check_query.clone()),
        (
            "server_connect_timeout",
            c.server_connect_timeout.as_secs_f64().to_string(),
        ),
        (
            "server_fast_close",
            u8::from(c.server_fast_close).to_string(),
        ),
        ("server_idle_timeout", secs(c.server_idle_timeout)),
        ("server_lifetime", secs(c.server_lifetime)),
        ("server_reset_query", c.server_reset_query.clone()),
        (
            "server_reset_query_always",
            u8::from(c.server_reset_query_always).to_string(),
        ),
        (
            "shutdown_timeout",
            c.shutdown_timeout.as_secs_f64().to_string(),
        ),
        ("stats_users", c.stats_users.join(",")),
        ("transaction_timeout", secs(c.transaction_timeout)),
    ]
}

#[cfg(test)]
mod tests {
    #[test]
    fn timestamps_are_utc_calendar_dates() {
        use std::time::{Duration, UNIX_EPOCH};
        assert_eq!(super::timestamp(UNIX_EPOCH), "1970-01-01 00:00:00 UTC");
        let t = UNIX_EPOCH + Duration::from_secs(1_795_350_000);
        assert_eq!(super::timestamp(t), "2026-11-22 12:20:00 UTC");
    }

    #[test]
    fn show_config_has_a_default_for_every_key() {
        let defaults = super::default_pooler_config().expect("an empty file is valid");
        let rows = super::config_rows(&defaults);
        assert!(rows
            .iter()
            .any(|(k, v)| *k == "max_client_conn" && v == "10000"));
        assert!(rows
            .iter()
            .any(|(k, v)| *k == "default_pool_size" && v == "20"));
    }
}
