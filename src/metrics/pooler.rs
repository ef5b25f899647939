//! `pgbouncer_*` metrics with the prometheus-community pgbouncer exporter's names and
//! labels, read from the built-in pooler's admin console.

use std::path::Path;

use super::console::{number, text, Console, Row};
use super::exposition::{Exposition, Kind};

/// (console column, metric name, help, kind, factor). Times in the console are
/// microseconds; the exporter reports seconds.
type Column = (&'static str, &'static str, &'static str, Kind, f64);

const US: f64 = 1e-6;

#[rustfmt::skip]
const STATS: &[Column] = &[
    ("total_query_count", "pgbouncer_stats_queries_pooled_total", "Total number of SQL queries pooled", Kind::Counter, 1.0),
    ("total_query_time", "pgbouncer_stats_queries_duration_seconds_total", "Total number of seconds spent by the pooler when actively connected to PostgreSQL, executing queries", Kind::Counter, US),
    ("total_received", "pgbouncer_stats_received_bytes_total", "Total volume in bytes of network traffic received by the pooler", Kind::Counter, 1.0),
    ("total_sent", "pgbouncer_stats_sent_bytes_total", "Total volume in bytes of network traffic sent by the pooler", Kind::Counter, 1.0),
    ("total_wait_time", "pgbouncer_stats_client_wait_seconds_total", "Time spent by clients waiting for a server in seconds", Kind::Counter, US),
    ("total_xact_count", "pgbouncer_stats_sql_transactions_pooled_total", "Total number of SQL transactions pooled", Kind::Counter, 1.0),
    ("total_xact_time", "pgbouncer_stats_server_in_transaction_seconds_total", "Total number of seconds spent by the pooler when connected to PostgreSQL in a transaction, either idle in transaction or executing queries", Kind::Counter, US),
];

#[rustfmt::skip]
const POOLS: &[Column] = &[
    ("cl_active", "pgbouncer_pools_client_active_connections", "Client connections linked to server connection and able to process queries", Kind::Gauge, 1.0),
    ("cl_waiting", "pgbouncer_pools_client_waiting_connections", "Client connections waiting on a server connection", Kind::Gauge, 1.0),
    ("cl_active_cancel_req", "pgbouncer_pools_client_active_cancel_connections", "Client connections that have forwarded query cancellations to the server and are waiting for the server response", Kind::Gauge, 1.0),
    ("cl_waiting_cancel_req", "pgbouncer_pools_client_waiting_cancel_connections", "Client connections that have not forwarded query cancellations to the server yet", Kind::Gauge, 1.0),
    ("sv_active", "pgbouncer_pools_server_active_connections", "Server connections linked to a client connection", Kind::Gauge, 1.0),
    ("sv_active_cancel", "pgbouncer_pools_server_active_cancel_connections", "Server connections that are currently forwarding a cancel request", Kind::Gauge, 1.0),
    ("sv_being_canceled", "pgbouncer_pools_server_being_canceled_connections", "Servers that normally could become idle but are waiting to do so until all in-flight cancel requests have completed", Kind::Gauge, 1.0),
    ("sv_idle", "pgbouncer_pools_server_idle_connections", "Server connections idle and ready for a client query", Kind::Gauge, 1.0),
    ("sv_used", "pgbouncer_pools_server_used_connections", "Server connections idle more than server_check_delay, needing server_check_query", Kind::Gauge, 1.0),
    ("sv_tested", "pgbouncer_pools_server_testing_connections", "Server connections currently running either server_reset_query or server_check_query", Kind::Gauge, 1.0),
    ("sv_login", "pgbouncer_pools_server_login_connections", "Server connections currently in the process of logging in", Kind::Gauge, 1.0),
];

#[rustfmt::skip]
const DATABASES: &[Column] = &[
    ("current_connections", "pgbouncer_databases_current_connections", "Current number of connections for this database", Kind::Gauge, 1.0),
    ("pool_size", "pgbouncer_databases_pool_size", "Maximum number of server connections", Kind::Gauge, 1.0),
    ("reserve_pool", "pgbouncer_databases_reserve_pool", "Maximum number of additional connections for this database", Kind::Gauge, 1.0),
    // PgBouncer 1.23+ names the column reserve_pool_size; the exporter's metric stays.
    ("reserve_pool_size", "pgbouncer_databases_reserve_pool", "Maximum number of additional connections for this database", Kind::Gauge, 1.0),
    ("max_connections", "pgbouncer_databases_max_connections", "Maximum number of allowed connections for this database", Kind::Gauge, 1.0),
    ("paused", "pgbouncer_databases_paused", "1 if this database is currently paused, else 0", Kind::Gauge, 1.0),
    ("disabled", "pgbouncer_databases_disabled", "1 if this database is currently disabled, else 0", Kind::Gauge, 1.0),
];

const DATABASE_LABELS: &[&str] = &[
    "name",
    "host",
    "port",
    "database",
    "force_user",
    "pool_mode",
];

/// Adds the pooler's families; `pgbouncer_up` says whether the console answered.
pub async fn collect(out: &mut Exposition, socket_dir: &Path, port: u16) {
    let mut read = Exposition::default();
    let up = read_all(&mut read, socket_dir, port).await;
    if let Err(e) = &up {
        tracing::debug!("pooler metrics: {e:#}");
    }
    out.gauge(
        "pgbouncer_up",
        "Whether the pooler's admin console answered",
        &[],
        if up.is_ok() { 1.0 } else { 0.0 },
    );
    if up.is_ok() {
        out.append(read);
    }
}

async fn read_all(out: &mut Exposition, socket_dir: &Path, port: u16) -> anyhow::Result<()> {
    let console = Console::connect(socket_dir, port).await?;
    for row in console.show("VERSION").await? {
        let version = text(&row, "version");
        let version = version.rsplit(' ').next().unwrap_or(version);
        out.gauge(
            "pgbouncer_version_info",
            "The pooler's PgBouncer-compatible version",
            &[("version", version)],
            1.0,
        );
    }
    for row in console.show("STATS").await? {
        columns(out, &row, STATS, &[("database", text(&row, "database"))]);
    }
    for row in console.show("POOLS").await? {
        let labels = [
            ("database", text(&row, "database")),
            ("user", text(&row, "user")),
        ];
        columns(out, &row, POOLS, &labels);
        let wait =
            number(&row, "maxwait").unwrap_or(0.0) + number(&row, "maxwait_us").unwrap_or(0.0) * US;
        out.gauge(
            "pgbouncer_pools_client_maxwait_seconds",
            "Age of the oldest unserved client connection",
            &labels,
            wait,
        );
        if let Some(pinned) = number(&row, "cl_pinned") {
            out.gauge(
                "pgplatform_pooler_pinned_clients",
                "Transaction-mode clients pinned to their server connection by session state",
                &labels,
                pinned,
            );
        }
    }
    for row in console.show("DATABASES").await? {
        let labels: Vec<(&str, &str)> = DATABASE_LABELS
            .iter()
            .map(|l| (*l, text(&row, l)))
            .collect();
        columns(out, &row, DATABASES, &labels);
    }
    for row in console.show("CONFIG").await? {
        let (metric, help) = match text(&row, "key") {
            "max_client_conn" => (
                "pgbouncer_config_max_client_connections",
                "Config maximum number of client connections",
            ),
            "max_user_connections" => (
                "pgbouncer_config_max_user_connections",
                "Config maximum number of server connections per user",
            ),
            _ => continue,
        };
        if let Some(value) = number(&row, "value") {
            out.gauge(metric, help, &[], value);
        }
    }
    Ok(())
}

fn columns(out: &mut Exposition, row: &Row, table: &[Column], labels: &[(&str, &str)]) {
    for (column, metric, help, kind, factor) in table {
        if let Some(value) = number(row, column) {
            out.add(metric, help, *kind, labels, value * factor);
        }
    }
}
