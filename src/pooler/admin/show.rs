//! SHOW results with PgBouncer's columns, in its order, so scripts and the pgbouncer
//! exporter read them unchanged: CLIENTS and SERVERS as 1.25 has them (with `id`), the
//! others as 1.18.

use std::sync::atomic::Ordering::Relaxed;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::BytesMut;

use super::command::Show;
use crate::pooler::pin::Cause;
use crate::pooler::protocol::backend::encode as be;
use crate::pooler::Pooler;

const INT8: u32 = 20;
const TEXT: u32 = 25;

/// A result set under construction: typed columns, text values.
struct Table {
    columns: Vec<(&'static str, u32)>,
    rows: Vec<Vec<Option<String>>>,
}

impl Table {
    fn new(columns: &[(&'static str, u32)]) -> Table {
        Table {
            columns: columns.to_vec(),
            rows: Vec::new(),
        }
    }
    fn row(&mut self, values: Vec<Option<String>>) {
        self.rows.push(values);
    }
    fn write(self, out: &mut BytesMut, tag: &str) {
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

fn t(s: impl ToString) -> Option<String> {
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
        Show::Pools => {
            let mut table = Table::new(&[
                ("database", TEXT),
                ("user", TEXT),
                ("cl_active", INT8),
                ("cl_waiting", INT8),
                ("cl_active_cancel_req", INT8),
                ("cl_waiting_cancel_req", INT8),
                ("sv_active", INT8),
                ("sv_active_cancel", INT8),
                ("sv_being_canceled", INT8),
                ("sv_idle", INT8),
                ("sv_used", INT8),
                ("sv_tested", INT8),
                ("sv_login", INT8),
                ("maxwait", INT8),
                ("maxwait_us", INT8),
                ("pool_mode", TEXT),
                // Ours, after PgBouncer's: clients pinned to a server connection.
                ("cl_pinned", INT8),
            ]);
            // PgBouncer lists its own console as a pool too.
            let console = pooler
                .clients()
                .iter()
                .filter(|c| c.key.database == "pgbouncer")
                .count();
            table.row(vec![
                t("pgbouncer"),
                t("pgbouncer"),
                t(console),
                t(0),
                t(0),
                t(0),
                t(0),
                t(0),
                t(0),
                t(0),
                t(0),
                t(0),
                t(0),
                t(0),
                t(0),
                t("statement"),
                t(0),
            ]);
            for pool in &pools {
                let c = pool.counts();
                let mode = pool.settings().mode.as_str();
                let wait = c.max_wait;
                table.row(vec![
                    t(&pool.key.database),
                    t(&pool.key.user),
                    t((c.clients_active - c.clients_waiting).max(0)),
                    t(c.clients_waiting),
                    t(0),
                    t(0),
                    t(c.servers_active),
                    t(0),
                    t(0),
                    t(pool.idle_count()),
                    t(0),
                    t(0),
                    t(c.servers_login),
                    t(wait.as_secs()),
                    t(wait.subsec_micros()),
                    t(mode),
                    t(pool.stats.clients_pinned.load(Relaxed).max(0)),
                ]);
            }
            table.write(out, "SHOW");
        }
        Show::Stats => {
            let mut table = Table::new(&[
                ("database", TEXT),
                ("total_xact_count", INT8),
                ("total_query_count", INT8),
                ("total_received", INT8),
                ("total_sent", INT8),
                ("total_xact_time", INT8),
                ("total_query_time", INT8),
                ("total_wait_time", INT8),
                ("avg_xact_count", INT8),
                ("avg_query_count", INT8),
                ("avg_recv", INT8),
                ("avg_sent", INT8),
                ("avg_xact_time", INT8),
                ("avg_query_time", INT8),
                ("avg_wait_time", INT8),
            ]);
            let uptime = pooler.started.elapsed().as_secs().max(1);
            for (database, s) in per_database(&pools) {
                let avg = |total: u64, count: u64| total.checked_div(count).unwrap_or(0);
                table.row(vec![
                    t(&database),
                    t(s[0]),
                    t(s[1]),
                    t(s[2]),
                    t(s[3]),
                    t(s[4]),
                    t(s[5]),
                    t(s[6]),
                    t(s[0] / uptime),
                    t(s[1] / uptime),
                    t(s[2] / uptime),
                    t(s[3] / uptime),
                    t(avg(s[4], s[0])),
                    t(avg(s[5], s[1])),
                    t(avg(s[6], s[0])),
                ]);
            }
            table.write(out, "SHOW");
        }
        Show::StatsTotals | Show::StatsAverages => {
            let mut table = Table::new(&[
                ("database", TEXT),
                ("xact_count", INT8),
                ("query_count", INT8),
                ("bytes_received", INT8),
                ("bytes_sent", INT8),
                ("xact_time", INT8),
                ("query_time", INT8),
                ("wait_time", INT8),
            ]);
            let uptime = pooler.started.elapsed().as_secs().max(1);
            for (database, s) in per_database(&pools) {
                let v: Vec<u64> = if what == Show::StatsTotals {
                    s.to_vec()
                } else {
                    s.iter().map(|x| x / uptime).collect()
                };
                let mut row = vec![t(&database)];
                row.extend(v.iter().map(t));
                table.row(row);
            }
            table.write(out, "SHOW");
        }
        Show::Totals => {
            let mut sum = [0u64; 7];
            for (_, s) in per_database(&pools) {
                for (a, b) in sum.iter_mut().zip(s) {
                    *a += b;
                }
            }
            let uptime = pooler.started.elapsed().as_secs().max(1);
            let mut table = Table::new(&[("name", TEXT), ("value", INT8)]);
            let names = [
                "xact_count",
                "query_count",
                "client_bytes",
                "server_bytes",
                "xact_time",
                "query_time",
                "wait_time",
            ];
            for (name, value) in names.iter().zip(sum) {
                table.row(vec![t(format!("total_{name}")), t(value)]);
            }
            for (name, value) in names.iter().zip(sum) {
                table.row(vec![t(format!("avg_{name}")), t(value / uptime)]);
            }
            table.write(out, "SHOW");
        }
        Show::Clients => {
            let mut columns = connection_columns();
            // Ours, after PgBouncer's: why the client is pinned to its server connection.
            columns.push(("pinned", TEXT));
            let mut table = Table::new(&columns);
            for c in pooler.clients() {
                let state = c.state.get();
                table.row(vec![
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
                    t(Cause::from_byte(c.pinned.load(Relaxed)).map_or("", Cause::name)),
                ]);
            }
            table.write(out, "SHOW");
        }
        Show::Servers => {
            let mut table = Table::new(&connection_columns());
            for pool in &pools {
                for server in pool.servers() {
                    let state = server.state.get();
                    let since = t(timestamp(server.connect_time));
                    table.row(vec![
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
                        t(u8::from(pool.close_needed(&server))),
                        t(format!("{:p}", std::sync::Arc::as_ptr(&server))),
                        None,
                        t(server.remote_pid),
                        t(""),
                        t(""),
                        t(0),
                        t(server.id),
                    ]);
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
            let mut table = Table::new(&[("name", TEXT), ("pool_mode", TEXT)]);
            let mut users: Vec<String> = pools.iter().map(|p| p.key.user.clone()).collect();
            users.sort();
            users.dedup();
            for user in users {
                table.row(vec![t(user), t("")]);
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
            for (key, value) in config_rows(&config) {
                // Keys read only at start are not changeable, as PgBouncer's column says.
                let changeable = if super::set::RESTART_ONLY.contains(&key) {
                    "no"
                } else {
                    "yes"
                };
                table.row(vec![t(key), t(value), None, t(changeable)]);
            }
            table.write(out, "SHOW");
        }
        Show::Version => {
            let mut table = Table::new(&[("version", TEXT)]);
            table.row(vec![t(format!(
                "PgBouncer 1.18.0 compatible (pgplatform {})",
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

fn connection_columns() -> Vec<(&'static str, u32)> {
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

/// Per database: xact_count, query_count, received, sent, xact_time, query_time, wait_time.
fn per_database(pools: &[std::sync::Arc<crate::pooler::pool::Pool>]) -> Vec<(String, [u64; 7])> {
    let mut out: Vec<(String, [u64; 7])> = Vec::new();
    for pool in pools {
        let s = &pool.stats;
        let values = [
            s.xact_count.load(Relaxed),
            s.query_count.load(Relaxed),
            s.bytes_received.load(Relaxed),
            s.bytes_sent.load(Relaxed),
            s.xact_time_us.load(Relaxed),
            s.query_time_us.load(Relaxed),
            s.wait_time_us.load(Relaxed),
        ];
        match out.iter_mut().find(|(db, _)| *db == pool.key.database) {
            Some((_, sum)) => sum.iter_mut().zip(values).for_each(|(a, b)| *a += b),
            None => out.push((pool.key.database.clone(), values)),
        }
    }
    out
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
}
