//! `pg_*` metrics with prometheus-community/postgres_exporter's names and labels, read
//! over the agent's own superuser connection under a statement timeout.

use tokio_postgres::{Client, Row};

use super::exposition::{Exposition, Kind};
use super::settings::setting_metric;

/// Reads everything; any error (including the statement timeout) fails the whole read so
/// the caller reports `pg_up 0` rather than half a picture.
pub async fn collect(
    out: &mut Exposition,
    client: &Client,
    statements_top: u32,
) -> anyhow::Result<()> {
    let version: i32 = client
        .query_one("SELECT current_setting('server_version_num')::int", &[])
        .await?
        .try_get(0)?;
    server(out, client).await?;
    databases(out, client).await?;
    activity(out, client).await?;
    locks(out, client).await?;
    settings(out, client).await?;
    bgwriter(out, client, version).await?;
    replication(out, client).await?;
    archiver(out, client).await?;
    if statements_top > 0 {
        statements(out, client, version, statements_top).await?;
    }
    Ok(())
}

/// A float column that may be NULL.
fn num(row: &Row, i: usize) -> anyhow::Result<Option<f64>> {
    Ok(row.try_get::<_, Option<f64>>(i)?)
}

fn text(row: &Row, i: usize) -> anyhow::Result<String> {
    Ok(row.try_get::<_, Option<String>>(i)?.unwrap_or_default())
}

/// The row's first columns as text label values, named by `names` in order.
fn label_values(row: &Row, names: &[&'static str]) -> anyhow::Result<Vec<(&'static str, String)>> {
    names
        .iter()
        .enumerate()
        .map(|(i, name)| Ok((*name, text(row, i)?)))
        .collect()
}

/// Borrowed form of `label_values` for `Exposition`.
fn borrowed<'a>(labels: &'a [(&'static str, String)]) -> Vec<(&'a str, &'a str)> {
    labels.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

async fn server(out: &mut Exposition, client: &Client) -> anyhow::Result<()> {
    let row = client
        .query_one(
            "SELECT extract(epoch FROM pg_postmaster_start_time())::float8, version(),
                    current_setting('server_version')",
            &[],
        )
        .await?;
    if let Some(start) = num(&row, 0)? {
        out.gauge(
            "pg_postmaster_start_time_seconds",
            "Time at which postmaster started",
            &[],
            start,
        );
    }
    let (version, short) = (text(&row, 1)?, text(&row, 2)?);
    let short = short.split_whitespace().next().unwrap_or_default();
    out.gauge(
        "pg_static",
        "Version string as reported by postgres",
        &[("short_version", short), ("version", &version)],
        1.0,
    );
    Ok(())
}

#[rustfmt::skip]
const STAT_DATABASE: &[(&str, &str, Kind)] = &[
    ("numbackends", "Number of backends currently connected to this database", Kind::Gauge),
    ("xact_commit", "Number of transactions in this database that have been committed", Kind::Counter),
    ("xact_rollback", "Number of transactions in this database that have been rolled back", Kind::Counter),
    ("blks_read", "Number of disk blocks read in this database", Kind::Counter),
    ("blks_hit", "Number of times disk blocks were found already in the buffer cache", Kind::Counter),
    ("tup_returned", "Number of rows returned by queries in this database", Kind::Counter),
    ("tup_fetched", "Number of rows fetched by queries in this database", Kind::Counter),
    ("tup_inserted", "Number of rows inserted by queries in this database", Kind::Counter),
    ("tup_updated", "Number of rows updated by queries in this database", Kind::Counter),
    ("tup_deleted", "Number of rows deleted by queries in this database", Kind::Counter),
    ("conflicts", "Number of queries canceled due to conflicts with recovery in this database", Kind::Counter),
    ("temp_files", "Number of temporary files created by queries in this database", Kind::Counter),
    ("temp_bytes", "Total amount of data written to temporary files by queries in this database", Kind::Counter),
    ("deadlocks", "Number of deadlocks detected in this database", Kind::Counter),
    ("blk_read_time", "Time spent reading data file blocks by backends in this database, in milliseconds", Kind::Counter),
    ("blk_write_time", "Time spent writing data file blocks by backends in this database, in milliseconds", Kind::Counter),
];

async fn databases(out: &mut Exposition, client: &Client) -> anyhow::Result<()> {
    let columns: Vec<String> = STAT_DATABASE
        .iter()
        .map(|(c, _, _)| format!("{c}::float8"))
        .collect();
    let sql = format!(
        "SELECT datid::text, datname, extract(epoch FROM stats_reset)::float8, {}
           FROM pg_stat_database WHERE datname IS NOT NULL ORDER BY datname",
        columns.join(", ")
    );
    for row in client.query(&sql, &[]).await? {
        let (datid, datname) = (text(&row, 0)?, text(&row, 1)?);
        let labels = [("datid", datid.as_str()), ("datname", datname.as_str())];
        for (i, (column, help, kind)) in STAT_DATABASE.iter().enumerate() {
            if let Some(v) = num(&row, i + 3)? {
                out.add(
                    &format!("pg_stat_database_{column}"),
                    help,
                    *kind,
                    &labels,
                    v,
                );
            }
        }
        let reset = num(&row, 2)?.unwrap_or(0.0);
        out.counter(
            "pg_stat_database_stats_reset",
            "Time at which these statistics were last reset",
            &labels,
            reset,
        );
    }
    let sql = "SELECT datname, pg_database_size(oid)::float8, datconnlimit::float8,
                      age(datfrozenxid)::float8, mxid_age(datminmxid)::float8, datallowconn
                 FROM pg_database ORDER BY datname";
    for row in client.query(sql, &[]).await? {
        let datname = text(&row, 0)?;
        let labels = [("datname", datname.as_str())];
        out.gauge(
            "pg_database_size_bytes",
            "Disk space used by the database",
            &labels,
            num(&row, 1)?.unwrap_or(0.0),
        );
        out.gauge(
            "pg_database_connection_limit",
            "Connection limit set for the database",
            &labels,
            num(&row, 2)?.unwrap_or(0.0),
        );
        if row.try_get::<_, bool>(5)? {
            if let (Some(xid), Some(mxid)) = (num(&row, 3)?, num(&row, 4)?) {
                out.gauge("pg_database_wraparound_age_datfrozenxid_seconds", "Age of the oldest transaction ID that has not been frozen (a count of transactions)", &labels, xid);
                out.gauge("pg_database_wraparound_age_datminmxid_seconds", "Age of the oldest multi-transaction ID that has been replaced with a transaction ID (a count)", &labels, mxid);
            }
        }
    }
    Ok(())
}

/// Every (database, state) pair appears, 0 when idle, as the exporter does, so rates
/// and alerts never see a series vanish.
async fn activity(out: &mut Exposition, client: &Client) -> anyhow::Result<()> {
    let sql = "
        WITH states(state) AS (VALUES ('active'), ('idle'), ('idle in transaction'),
                 ('idle in transaction (aborted)'), ('fastpath function call'), ('disabled')),
             a AS (SELECT datname, state, usename, application_name, count(*) AS n,
                          max(extract(epoch FROM now() - xact_start)) AS max_tx
                     FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND state IS NOT NULL
                    GROUP BY 1, 2, 3, 4)
        SELECT d.datname, s.state, COALESCE(a.usename, ''), COALESCE(a.application_name, ''),
               COALESCE(a.n, 0)::float8, COALESCE(a.max_tx, 0)::float8
          FROM pg_database d CROSS JOIN states s
          LEFT JOIN a ON a.datname = d.datname AND a.state = s.state
         ORDER BY 1, 2, 3, 4";
    for row in client.query(sql, &[]).await? {
        let owned = label_values(&row, &["datname", "state", "usename", "application_name"])?;
        let labels = borrowed(&owned);
        out.gauge(
            "pg_stat_activity_count",
            "Number of connections in this state",
            &labels,
            num(&row, 4)?.unwrap_or(0.0),
        );
        out.gauge(
            "pg_stat_activity_max_tx_duration",
            "Max duration in seconds any active transaction has been running",
            &labels,
            num(&row, 5)?.unwrap_or(0.0),
        );
    }
    Ok(())
}

async fn locks(out: &mut Exposition, client: &Client) -> anyhow::Result<()> {
    let sql = "
        WITH modes(mode) AS (VALUES ('accesssharelock'), ('rowsharelock'), ('rowexclusivelock'),
                 ('shareupdateexclusivelock'), ('sharelock'), ('sharerowexclusivelock'),
                 ('exclusivelock'), ('accessexclusivelock'), ('sireadlock')),
             l AS (SELECT database, lower(mode) AS mode, count(*) AS n FROM pg_locks
                    WHERE database IS NOT NULL GROUP BY 1, 2)
        SELECT d.datname, m.mode, COALESCE(l.n, 0)::float8
          FROM pg_database d CROSS JOIN modes m
          LEFT JOIN l ON l.database = d.oid AND l.mode = m.mode ORDER BY 1, 2";
    for row in client.query(sql, &[]).await? {
        let (datname, mode) = (text(&row, 0)?, text(&row, 1)?);
        let labels = [("datname", datname.as_str()), ("mode", mode.as_str())];
        out.gauge(
            "pg_locks_count",
            "Number of locks",
            &labels,
            num(&row, 2)?.unwrap_or(0.0),
        );
    }
    Ok(())
}

async fn settings(out: &mut Exposition, client: &Client) -> anyhow::Result<()> {
    let sql = "SELECT name, setting, COALESCE(unit, ''), vartype FROM pg_settings
                WHERE vartype IN ('bool', 'integer', 'real') ORDER BY name";
    for row in client.query(sql, &[]).await? {
        let name = text(&row, 0)?;
        let unit = text(&row, 2)?;
        if let Some((metric, value)) =
            setting_metric(&name, &text(&row, 1)?, &unit, &text(&row, 3)?)
        {
            let help = match metric.rsplit('_').next() {
                Some("seconds" | "bytes") if !unit.is_empty() => {
                    format!(
                        "Server Parameter: {name} [Units converted to {}.]",
                        metric.rsplit('_').next().unwrap_or_default()
                    )
                }
                _ => format!("Server Parameter: {name}"),
            };
            out.gauge(&metric, &help, &[], value);
        }
    }
    Ok(())
}

async fn bgwriter(out: &mut Exposition, client: &Client, version: i32) -> anyhow::Result<()> {
    // PostgreSQL 17 moved the checkpoint columns to pg_stat_checkpointer.
    let columns: &[&str] = if version >= 170_000 {
        &["buffers_clean", "maxwritten_clean", "buffers_alloc"]
    } else {
        &[
            "checkpoints_timed",
            "checkpoints_req",
            "checkpoint_write_time",
            "checkpoint_sync_time",
            "buffers_checkpoint",
            "buffers_clean",
            "maxwritten_clean",
            "buffers_backend",
            "buffers_backend_fsync",
            "buffers_alloc",
        ]
    };
    let select: Vec<String> = columns.iter().map(|c| format!("{c}::float8")).collect();
    let sql = format!(
        "SELECT {}, COALESCE(extract(epoch FROM stats_reset), 0)::float8 FROM pg_stat_bgwriter",
        select.join(", ")
    );
    let row = client.query_one(&sql, &[]).await?;
    for (i, column) in columns.iter().chain(["stats_reset"].iter()).enumerate() {
        if let Some(v) = num(&row, i)? {
            let help = format!("pg_stat_bgwriter.{column}");
            out.counter(&format!("pg_stat_bgwriter_{column}_total"), &help, &[], v);
        }
    }
    if version >= 170_000 {
        let row = client
            .query_one(
                "SELECT num_timed::float8, num_requested::float8, write_time::float8,
                        sync_time::float8, buffers_written::float8
                   FROM pg_stat_checkpointer",
                &[],
            )
            .await?;
        for (i, column) in [
            "num_timed",
            "num_requested",
            "write_time",
            "sync_time",
            "buffers_written",
        ]
        .iter()
        .enumerate()
        {
            if let Some(v) = num(&row, i)? {
                out.counter(
                    &format!("pg_stat_checkpointer_{column}_total"),
                    &format!("pg_stat_checkpointer.{column}"),
                    &[],
                    v,
                );
            }
        }
    }
    Ok(())
}

async fn replication(out: &mut Exposition, client: &Client) -> anyhow::Result<()> {
    let row = client
        .query_one(
            "SELECT pg_is_in_recovery(),
                    CASE WHEN NOT pg_is_in_recovery()
                              OR pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0
                         ELSE GREATEST(0, extract(epoch FROM now() - pg_last_xact_replay_timestamp()))
                    END::float8,
                    CASE WHEN pg_is_in_recovery()
                         THEN GREATEST(0, extract(epoch FROM now() - pg_last_xact_replay_timestamp()))
                         ELSE 0 END::float8",
            &[],
        )
        .await?;
    let replica: bool = row.try_get(0)?;
    out.gauge(
        "pg_replication_lag_seconds",
        "Replication lag behind master in seconds",
        &[],
        num(&row, 1)?.unwrap_or(0.0),
    );
    out.gauge(
        "pg_replication_is_replica",
        "Indicates if the server is a replica",
        &[],
        if replica { 1.0 } else { 0.0 },
    );
    out.gauge(
        "pg_replication_last_replay_seconds",
        "Age of last replay in seconds",
        &[],
        num(&row, 2)?.unwrap_or(0.0),
    );
    let sql = "
        SELECT r.application_name, COALESCE(host(r.client_addr), ''), COALESCE(r.state, ''),
               COALESCE(s.slot_name, ''),
               pg_wal_lsn_diff(CASE WHEN pg_is_in_recovery() THEN pg_last_wal_receive_lsn()
                                    ELSE pg_current_wal_lsn() END, '0/0')::float8,
               pg_wal_lsn_diff(CASE WHEN pg_is_in_recovery() THEN pg_last_wal_receive_lsn()
                                    ELSE pg_current_wal_lsn() END, r.replay_lsn)::float8
          FROM pg_stat_replication r LEFT JOIN pg_replication_slots s ON s.active_pid = r.pid
         ORDER BY 1, 2";
    for row in client.query(sql, &[]).await? {
        let owned = label_values(
            &row,
            &["application_name", "client_addr", "state", "slot_name"],
        )?;
        let labels = borrowed(&owned);
        if let Some(v) = num(&row, 4)? {
            out.gauge(
                "pg_stat_replication_pg_current_wal_lsn_bytes",
                "WAL position in bytes",
                &labels,
                v,
            );
        }
        if let Some(v) = num(&row, 5)? {
            out.gauge(
                "pg_stat_replication_pg_wal_lsn_diff",
                "Lag in bytes between master and slave",
                &labels,
                v,
            );
        }
    }
    Ok(())
}

/// postgres_exporter's archiver metrics, plus the queue of segments waiting (from the
/// archive status directory), which says how long archiving has really been stuck.
async fn archiver(out: &mut Exposition, client: &Client) -> anyhow::Result<()> {
    let row = client
        .query_one(
            "SELECT archived_count::float8, failed_count::float8,
                    extract(epoch FROM now() - last_archived_time)::float8,
                    extract(epoch FROM last_failed_time)::float8,
                    extract(epoch FROM last_archived_time)::float8,
                    (SELECT count(*) FROM pg_ls_archive_statusdir() WHERE name LIKE '%.ready')::float8,
                    (SELECT extract(epoch FROM now() - min(modification)) FROM pg_ls_archive_statusdir()
                      WHERE name LIKE '%.ready')::float8
               FROM pg_stat_archiver",
            &[],
        )
        .await?;
    out.counter(
        "pg_stat_archiver_archived_count",
        "Number of WAL files that have been successfully archived",
        &[],
        num(&row, 0)?.unwrap_or(0.0),
    );
    out.counter(
        "pg_stat_archiver_failed_count",
        "Number of failed attempts for archiving WAL files",
        &[],
        num(&row, 1)?.unwrap_or(0.0),
    );
    if let Some(age) = num(&row, 2)? {
        out.gauge(
            "pg_stat_archiver_last_archive_age",
            "Time in seconds since last WAL segment was successfully archived",
            &[],
            age,
        );
    }
    if let Some(at) = num(&row, 3)? {
        out.gauge(
            "pgplatform_wal_archive_last_failure_timestamp_seconds",
            "When archiving a WAL segment last failed, in seconds since the epoch",
            &[],
            at,
        );
    }
    if let Some(at) = num(&row, 4)? {
        out.gauge(
            "pgplatform_wal_archive_last_success_timestamp_seconds",
            "When a WAL segment was last archived, in seconds since the epoch",
            &[],
            at,
        );
    }
    out.gauge(
        "pgplatform_wal_archive_pending_segments",
        "WAL segments waiting to be archived",
        &[],
        num(&row, 5)?.unwrap_or(0.0),
    );
    out.gauge(
        "pgplatform_wal_archive_oldest_pending_age_seconds",
        "Age of the oldest WAL segment waiting to be archived; 0 when none waits",
        &[],
        num(&row, 6)?.unwrap_or(0.0),
    );
    Ok(())
}

/// The top `limit` statements by total execution time, if pg_stat_statements is
/// installed in the agent's database (the agent creates it there when preloaded).
async fn statements(
    out: &mut Exposition,
    client: &Client,
    version: i32,
    limit: u32,
) -> anyhow::Result<()> {
    let installed = client
        .query_opt(
            "SELECT 1 FROM pg_extension WHERE extname = 'pg_stat_statements'",
            &[],
        )
        .await?
        .is_some();
    if !installed {
        return Ok(());
    }
    let (read, write) = if version >= 170_000 {
        ("shared_blk_read_time", "shared_blk_write_time")
    } else {
        ("blk_read_time", "blk_write_time")
    };
    let sql = format!(
        "SELECT COALESCE(pg_get_userbyid(s.userid)::text, 'unknown'), COALESCE(d.datname, 'unknown'),
                s.queryid::text, s.calls::float8, (s.total_exec_time / 1000)::float8, s.rows::float8,
                (s.{read} / 1000)::float8, (s.{write} / 1000)::float8
           FROM public.pg_stat_statements s LEFT JOIN pg_database d ON d.oid = s.dbid
          WHERE s.queryid IS NOT NULL
          ORDER BY s.total_exec_time DESC LIMIT {limit}"
    );
    #[rustfmt::skip]
    let families = [
        ("pg_stat_statements_calls_total", "Number of times executed"),
        ("pg_stat_statements_seconds_total", "Total time spent in the statement, in seconds"),
        ("pg_stat_statements_rows_total", "Total number of rows retrieved or affected by the statement"),
        ("pg_stat_statements_block_read_seconds_total", "Total time the statement spent reading blocks, in seconds"),
        ("pg_stat_statements_block_write_seconds_total", "Total time the statement spent writing blocks, in seconds"),
    ];
    for row in client.query(&sql, &[]).await? {
        let owned = label_values(&row, &["user", "datname", "queryid"])?;
        let labels = borrowed(&owned);
        for (i, (name, help)) in families.iter().enumerate() {
            if let Some(v) = num(&row, i + 3)? {
                out.counter(name, help, &labels, v);
            }
        }
    }
    Ok(())
}
