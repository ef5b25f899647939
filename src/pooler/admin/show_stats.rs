//! SHOW POOLS and the statistics (STATS, STATS_TOTALS, STATS_AVERAGES, TOTALS) with
//! PgBouncer 1.25's columns in its order and its column types (counts `int4`, statistics
//! `numeric`), so exporters and dashboards read them unchanged. `client_login_count`
//! follows `bind_count`, where PgBouncer's next release puts it.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use bytes::BytesMut;

use super::command::Show;
use super::show::{t, Table, INT4, NUMERIC, TEXT};
use crate::pooler::pool::Pool;
use crate::pooler::Pooler;

pub fn pools(pooler: &Pooler, pools: &[Arc<Pool>], out: &mut BytesMut) {
    let mut table = Table::new(&[
        ("database", TEXT),
        ("user", TEXT),
        ("cl_active", INT4),
        ("cl_waiting", INT4),
        ("cl_active_cancel_req", INT4),
        ("cl_waiting_cancel_req", INT4),
        ("sv_active", INT4),
        ("sv_active_cancel", INT4),
        ("sv_being_canceled", INT4),
        ("sv_idle", INT4),
        ("sv_used", INT4),
        ("sv_tested", INT4),
        ("sv_login", INT4),
        ("maxwait", INT4),
        ("maxwait_us", INT4),
        ("pool_mode", TEXT),
        // NULL, as PgBouncer's for a database with one host.
        ("load_balance_hosts", TEXT),
        // Ours, after PgBouncer's: clients pinned to a server connection.
        ("cl_pinned", INT4),
    ]);
    // PgBouncer lists its own console as a pool too.
    let console = pooler
        .clients()
        .iter()
        .filter(|c| c.key.database == super::CONSOLE_DATABASE)
        .count();
    let mut row = vec![t(super::CONSOLE_DATABASE), t(super::CONSOLE_DATABASE)];
    row.push(t(console));
    row.extend((0..12).map(|_| t(0)));
    row.extend([t("statement"), None, t(0)]);
    table.row(row);
    for pool in pools {
        let c = pool.counts();
        let wait = c.max_wait;
        table.row(vec![
            t(&pool.key.database),
            t(&pool.key.user),
            // 1.25: linked to a server connection or idle; everyone not waiting.
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
            t(pool.settings().mode.as_str()),
            None,
            t(pool.stats.clients_pinned.load(Relaxed).max(0)),
        ]);
    }
    table.write(out, "SHOW");
}

/// The counters of SHOW STATS, in PgBouncer's order: the column names of STATS_TOTALS
/// and, with `total_`/`avg_` in front, of SHOW STATS and SHOW TOTALS.
const COUNTERS: [&str; 12] = [
    "server_assignment_count",
    "xact_count",
    "query_count",
    "bytes_received",
    "bytes_sent",
    "xact_time",
    "query_time",
    "wait_time",
    "client_parse_count",
    "server_parse_count",
    "bind_count",
    "client_login_count",
];

/// SHOW STATS' columns after `database`: the totals, then the averages (PgBouncer keeps
/// older names for the bytes: `total_received`, `avg_recv`).
const STATS_COLUMNS: [&str; 24] = [
    "total_server_assignment_count",
    "total_xact_count",
    "total_query_count",
    "total_received",
    "total_sent",
    "total_xact_time",
    "total_query_time",
    "total_wait_time",
    "total_client_parse_count",
    "total_server_parse_count",
    "total_bind_count",
    "total_client_login_count",
    "avg_server_assignment_count",
    "avg_xact_count",
    "avg_query_count",
    "avg_recv",
    "avg_sent",
    "avg_xact_time",
    "avg_query_time",
    "avg_wait_time",
    "avg_client_parse_count",
    "avg_server_parse_count",
    "avg_bind_count",
    "avg_client_login_count",
];

/// SHOW TOTALS' names (`total_`/`avg_` in front), PgBouncer's `PgStats` field names.
const TOTALS_NAMES: [&str; 12] = [
    "server_assignment_count",
    "xact_count",
    "query_count",
    "client_bytes",
    "server_bytes",
    "xact_time",
    "query_time",
    "wait_time",
    "ps_client_parse_count",
    "ps_server_parse_count",
    "ps_bind_count",
    "client_login_count",
];

/// STATS_AVERAGES calls the statement averages `avg_…` (PgBouncer's own quirk).
const AVERAGES_COLUMNS: [&str; 12] = [
    "server_assignment_count",
    "xact_count",
    "query_count",
    "bytes_received",
    "bytes_sent",
    "xact_time",
    "query_time",
    "wait_time",
    "avg_client_parse_count",
    "avg_server_parse_count",
    "avg_bind_count",
    "client_login_count",
];

type Counters = [u64; 12];

pub fn stats(pooler: &Pooler, pools: &[Arc<Pool>], what: Show, out: &mut BytesMut) {
    let uptime = pooler.started.elapsed().as_secs().max(1);
    let databases = per_database(pools);
    let numeric = |names: &[&'static str]| -> Vec<(&'static str, u32)> {
        names.iter().map(|n| (*n, NUMERIC)).collect()
    };
    match what {
        Show::Stats => {
            let mut columns = vec![("database", TEXT)];
            columns.extend(numeric(&STATS_COLUMNS));
            let mut table = Table::new(&columns);
            for (database, totals) in &databases {
                let mut row = vec![t(database)];
                row.extend(totals.iter().map(t));
                row.extend(averages(totals, uptime).iter().map(t));
                table.row(row);
            }
            table.write(out, "SHOW");
        }
        Show::StatsTotals | Show::StatsAverages => {
            let averaged = what == Show::StatsAverages;
            let names = if averaged {
                &AVERAGES_COLUMNS
            } else {
                &COUNTERS
            };
            let mut columns = vec![("database", TEXT)];
            columns.extend(numeric(names));
            let mut table = Table::new(&columns);
            for (database, totals) in &databases {
                let values = if averaged {
                    averages(totals, uptime)
                } else {
                    *totals
                };
                let mut row = vec![t(database)];
                row.extend(values.iter().map(t));
                table.row(row);
            }
            table.write(out, "SHOW");
        }
        _ => {
            let mut sum: Counters = [0; 12];
            for (_, totals) in &databases {
                for (a, b) in sum.iter_mut().zip(totals) {
                    *a += b;
                }
            }
            let mut table = Table::new(&[("name", TEXT), ("value", NUMERIC)]);
            for (name, value) in TOTALS_NAMES.iter().zip(sum) {
                table.row(vec![t(format!("total_{name}")), t(value)]);
            }
            for (name, value) in TOTALS_NAMES.iter().zip(averages(&sum, uptime)) {
                table.row(vec![t(format!("avg_{name}")), t(value)]);
            }
            table.write(out, "SHOW");
        }
    }
}

/// PgBouncer's averages: counts and bytes per second, times per transaction, per
/// query and per server assignment (here over the pooler's whole life).
fn averages(totals: &Counters, seconds: u64) -> Counters {
    let per = |total: u64, count: u64| total.checked_div(count).unwrap_or(0);
    let mut avg = totals.map(|v| v / seconds.max(1));
    avg[5] = per(totals[5], totals[1]);
    avg[6] = per(totals[6], totals[2]);
    avg[7] = per(totals[7], totals[0]);
    avg
}

/// Each database's counters, summed over its pools (one per user), in first-seen order.
fn per_database(pools: &[Arc<Pool>]) -> Vec<(String, Counters)> {
    let mut out: Vec<(String, Counters)> = Vec::new();
    for pool in pools {
        let s = &pool.stats;
        let values = [
            s.server_assignment_count.load(Relaxed),
            s.xact_count.load(Relaxed),
            s.query_count.load(Relaxed),
            s.bytes_received.load(Relaxed),
            s.bytes_sent.load(Relaxed),
            s.xact_time_us.load(Relaxed),
            s.query_time_us.load(Relaxed),
            s.wait_time_us.load(Relaxed),
            s.client_parse_count.load(Relaxed),
            s.server_parse_count.load(Relaxed),
            s.bind_count.load(Relaxed),
            s.client_login_count.load(Relaxed),
        ];
        match out.iter_mut().find(|(db, _)| *db == pool.key.database) {
            Some((_, sum)) => sum.iter_mut().zip(values).for_each(|(a, b)| *a += b),
            None => out.push((pool.key.database.clone(), values)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn averages_divide_times_by_their_own_counts() {
        let mut totals: Counters = [0; 12];
        totals[0] = 4; // assignments
        totals[1] = 10; // transactions
        totals[2] = 20; // queries
        totals[5] = 1000; // xact time
        totals[6] = 400; // query time
        totals[7] = 80; // wait time
        let avg = averages(&totals, 2);
        assert_eq!(avg[1], 5, "transactions per second");
        assert_eq!((avg[5], avg[6], avg[7]), (100, 20, 20));
        assert_eq!(averages(&[0; 12], 0), [0; 12], "no division by zero");
    }
}
