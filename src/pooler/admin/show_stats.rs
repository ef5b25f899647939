//! SHOW POOLS and the statistics (STATS, STATS_TOTALS, STATS_AVERAGES, TOTALS) with
//! PgBouncer 1.25's columns in its order and its column types (counts `int4`, statistics
//! `numeric`), so exporters and dashboards read them unchanged. `client_login_count`
//! follows `bind_count`, where PgBouncer's next release puts it. Averages are PgBouncer's:
//! over the last `STATS_PERIOD` or two (`StatsWindow`, refreshed by the pooler's
//! once-a-second housekeeping), not over the pooler's life.

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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

/// PgBouncer's default `stats_period`: how often the averages' starting point moves.
const STATS_PERIOD: Duration = Duration::from_secs(60);

/// The counters as they were at the last two period boundaries, per database, as
/// PgBouncer keeps `older_stats` and `newer_stats`: an average runs from the older one
/// to now, so it covers between one and two periods.
#[derive(Debug)]
pub struct StatsWindow(Mutex<Snapshots>);

#[derive(Debug)]
struct Snapshots {
    older: (Instant, HashMap<String, Counters>),
    newer: (Instant, HashMap<String, Counters>),
}

impl StatsWindow {
    pub fn new(started: Instant) -> StatsWindow {
        StatsWindow(Mutex::new(Snapshots {
            older: (started, HashMap::new()),
            newer: (started, HashMap::new()),
        }))
    }

    /// Moves the window once a period has passed (called once a second).
    pub fn tick(&self, pools: &[Arc<Pool>]) {
        let now = Instant::now();
        let mut snapshots = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if now.saturating_duration_since(snapshots.newer.0) >= STATS_PERIOD {
            let newer = (now, per_database(pools).into_iter().collect());
            snapshots.older = std::mem::replace(&mut snapshots.newer, newer);
        }
    }

    /// When the window starts, and the counters of `database` then (zero if it had none).
    fn start(&self, database: &str) -> (Instant, Counters) {
        let snapshots = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let (at, counters) = &snapshots.older;
        (*at, counters.get(database).copied().unwrap_or([0; 12]))
    }
}

pub fn stats(pooler: &Pooler, pools: &[Arc<Pool>], what: Show, out: &mut BytesMut) {
    let window = &pooler.stats_window;
    let databases = per_database(pools);
    let average = |database: &str, totals: &Counters| {
        let (since, start) = window.start(database);
        averages(totals, &start, since.elapsed())
    };
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
                row.extend(average(database, totals).iter().map(t));
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
                    average(database, totals)
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
            let (mut sum, mut start): (Counters, Counters) = ([0; 12], [0; 12]);
            let mut since = Instant::now();
            for (database, totals) in &databases {
                let (at, then) = window.start(database);
                since = since.min(at);
                for i in 0..12 {
                    sum[i] += totals[i];
                    start[i] += then[i];
                }
            }
            let mut table = Table::new(&[("name", TEXT), ("value", NUMERIC)]);
            for (name, value) in TOTALS_NAMES.iter().zip(sum) {
                table.row(vec![t(format!("total_{name}")), t(value)]);
            }
            for (name, value) in TOTALS_NAMES
                .iter()
                .zip(averages(&sum, &start, since.elapsed()))
            {
                table.row(vec![t(format!("avg_{name}")), t(value)]);
            }
            table.write(out, "SHOW");
        }
    }
}

/// PgBouncer's averages from `start` to `totals` over `elapsed`: counts and bytes per
/// second, times per transaction, per query and per server assignment.
fn averages(totals: &Counters, start: &Counters, elapsed: Duration) -> Counters {
    let micros = elapsed.as_micros().max(1);
    let delta: Counters = std::array::from_fn(|i| totals[i].saturating_sub(start[i]));
    let per_second = |d: u64| (u128::from(d) * 1_000_000 / micros) as u64;
    let per = |total: u64, count: u64| total.checked_div(count).unwrap_or(0);
    let mut avg = delta.map(per_second);
    avg[5] = per(delta[5], delta[1]);
    avg[6] = per(delta[6], delta[2]);
    avg[7] = per(delta[7], delta[0]);
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
    fn averages_are_over_the_window_and_divide_times_by_their_own_counts() {
        let mut start: Counters = [0; 12];
        start[1] = 1000; // transactions before the window: not in the rates
        start[5] = 50_000;
        let mut totals = start;
        totals[0] = 4; // assignments
        totals[1] += 10; // transactions
        totals[2] = 20; // queries
        totals[5] += 1000; // xact time
        totals[6] = 400; // query time
        totals[7] = 80; // wait time
        let avg = averages(&totals, &start, Duration::from_secs(2));
        assert_eq!(avg[1], 5, "transactions per second");
        assert_eq!((avg[5], avg[6], avg[7]), (100, 20, 20));
        let zero = averages(&[0; 12], &[0; 12], Duration::ZERO);
        assert_eq!(zero, [0; 12], "no division by zero");
    }
}
