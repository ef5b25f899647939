//! The operator's one-screen status (`GET /status`, `pgplatform status`): role,
//! PostgreSQL, connections, tenants with their pools, WAL archiving, disk, and the
//! warnings `warnings` derives from them.

pub mod warnings;

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use serde_json::{json, Value};
use tokio_postgres::Client;

use self::warnings::Facts;
use crate::config::StatusConfig;
use crate::metrics::console::{number, text, Console};
use crate::metrics::Sources;
use crate::supervisor::PostgresState;

/// Builds the report with the thresholds of the running configuration (a reload
/// changes them).
pub async fn report_now(sources: &Sources) -> Value {
    let limits = sources.config.borrow().status.clone();
    report(sources, &limits).await
}

/// Builds the report; a PostgreSQL that does not answer within 5 s leaves its parts
/// empty and shows as a warning, never as a hung request.
pub async fn report(sources: &Sources, limits: &StatusConfig) -> Value {
    let postgres = sources.postgres.borrow().clone();
    let mut facts = Facts {
        postgres_running: postgres.state == PostgresState::Running,
        postgres_state: serde_json::to_value(postgres.state)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default(),
        postgres_restarts: postgres.restarts,
        ..Facts::default()
    };
    let pools = match sources.pooler_port {
        Some(port) => read_pools(sources, port).await,
        None => HashMap::new(),
    };
    let mut live = json!({});
    if facts.postgres_running {
        let read = read_live(sources, &mut facts, &pools);
        match tokio::time::timeout(Duration::from_secs(5), read).await {
            Ok(Ok(value)) => live = value,
            Ok(Err(e)) => {
                facts.postgres_running = false;
                facts.postgres_state = format!("not answering: {e:#}");
            }
            Err(_) => {
                facts.postgres_running = false;
                facts.postgres_state = "not answering within 5 s".to_owned();
            }
        }
    }
    for pool in pools.values() {
        if pool.clients_waiting > 0 {
            facts.pools_waiting.push((
                pool.database.clone(),
                pool.user.clone(),
                Duration::from_secs_f64(pool.maxwait_seconds),
            ));
        }
    }
    let disk = crate::metrics::filesystem(&sources.data_dir).map(|(avail, size)| {
        let free = if size > 0 {
            avail as f64 * 100.0 / size as f64
        } else {
            100.0
        };
        facts.disk_free_percent = Some(free);
        json!({ "path": sources.data_dir.display().to_string(), "avail_bytes": avail,
                "size_bytes": size, "free_percent": (free * 10.0).round() / 10.0 })
    });
    let uptime = SystemTime::now()
        .duration_since(sources.started)
        .unwrap_or_default();
    let run_dir = sources.data_dir.join("run");
    let backups = crate::backup::state::read(&run_dir);
    let drill = crate::backup::drill::last_result(&run_dir);
    let now = chrono::Utc::now();
    facts.agent_uptime = uptime;
    facts.backup_age = backups
        .last_success
        .as_ref()
        .map(|b| (now - b.stopped_at).to_std().unwrap_or_default());
    facts.drill_failed = drill.as_ref().filter(|d| !d.ok).map(|d| {
        d.errors
            .first()
            .cloned()
            .unwrap_or_else(|| "no detail".into())
    });
    let next = crate::backup::schedule::next_job(&sources.config.borrow(), now);
    let backup = json!({
        "next_job": next.map(|(at, job)| json!({ "job": job, "at": at })),
        "last_success": backups.last_success,
        "last_success_age_seconds": facts.backup_age.map(|a| a.as_secs()),
        "last_failure": backups.last_failure,
    });
    let redis = redis_report(sources, &mut facts).await;
    let warnings = warnings::warnings(&facts, limits);
    // Changed keys the agent reads only at start (listeners, paths, HA).
    let pending_restart = sources.pending_restart.borrow().clone();
    let task_restarts: serde_json::Map<String, Value> = sources
        .task_restarts
        .snapshot()
        .into_iter()
        .map(|(task, n)| (task.to_owned(), json!(n)))
        .collect();
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "data_dir": sources.data_dir.display().to_string(),
        "uptime_seconds": uptime.as_secs(),
        "pending_restart": pending_restart,
        "task_restarts": task_restarts,
        "role": live.get("role").cloned().unwrap_or(Value::Null),
        "postgres": {
            "state": postgres.state,
            "pid": postgres.pid,
            "version": postgres.version,
            "port": postgres.port,
            "restarts": postgres.restarts,
            "started_at": live.get("started_at").cloned().unwrap_or(Value::Null),
            "uptime_seconds": live.get("uptime_seconds").cloned().unwrap_or(Value::Null),
            "pending_restart": facts.pending_restart,
        },
        "connections": live.get("connections").cloned().unwrap_or(Value::Null),
        "tenants": live.get("tenants").cloned().unwrap_or(json!({ "count": Value::Null, "list": [] })),
        "wal_archive": live.get("wal_archive").cloned().unwrap_or(Value::Null),
        "disk": disk,
        "redis": redis,
        "backup": backup,
        "drill": drill,
        "warnings": warnings,
    })
}

/// Each tenant's redis-server: state, memory used of its maxmemory, clients.
async fn redis_report(sources: &Sources, facts: &mut Facts) -> Value {
    let servers = sources.redis.observe().await;
    for server in &servers {
        match &server.info {
            Some(info) => {
                facts
                    .redis_memory
                    .push((server.tenant.clone(), info.used_memory, server.maxmemory))
            }
            None => {
                let state = serde_json::to_value(server.status.state)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default();
                let why = match &server.status.last_error {
                    Some(error) => format!("{state}: {error}"),
                    None => state,
                };
                facts.redis_down.push((server.tenant.clone(), why));
            }
        }
    }
    json!(servers
        .iter()
        .map(|s| json!({
            "tenant": s.tenant,
            "state": s.status.state,
            "up": s.info.is_some(),
            "port": s.port,
            "pid": s.status.pid,
            "restarts": s.status.restarts,
            "last_error": s.status.last_error,
            "maxmemory_bytes": s.maxmemory,
            "used_memory_bytes": s.info.as_ref().map(|i| i.used_memory),
            "connected_clients": s.info.as_ref().map(|i| i.connected_clients),
        }))
        .collect::<Vec<_>>())
}

/// One pool as SHOW POOLS reports it.
#[derive(Debug, Clone)]
struct PoolRow {
    database: String,
    user: String,
    clients_active: u64,
    clients_waiting: u64,
    servers_active: u64,
    servers_idle: u64,
    maxwait_seconds: f64,
}

async fn read_pools(sources: &Sources, port: u16) -> HashMap<(String, String), PoolRow> {
    let read = async {
        let console = Console::connect(&sources.socket_dir, port).await?;
        console.show("POOLS").await
    };
    let rows = match tokio::time::timeout(Duration::from_secs(5), read).await {
        Ok(Ok(rows)) => rows,
        _ => return HashMap::new(),
    };
    let count = |row: &_, c| number(row, c).unwrap_or(0.0) as u64;
    rows.iter()
        .map(|row| {
            let pool = PoolRow {
                database: text(row, "database").to_owned(),
                user: text(row, "user").to_owned(),
                clients_active: count(row, "cl_active"),
                clients_waiting: count(row, "cl_waiting"),
                servers_active: count(row, "sv_active"),
                servers_idle: count(row, "sv_idle"),
                maxwait_seconds: number(row, "maxwait").unwrap_or(0.0)
                    + number(row, "maxwait_us").unwrap_or(0.0) / 1e6,
            };
            ((pool.database.clone(), pool.user.clone()), pool)
        })
        .collect()
}

async fn read_live(
    sources: &Sources,
    facts: &mut Facts,
    pools: &HashMap<(String, String), PoolRow>,
) -> anyhow::Result<Value> {
    let client: Client = crate::pg::connect::superuser(
        &sources.socket_dir,
        sources.postgres_port,
        crate::pg::AGENT_DATABASE,
    )
    .await?;
    client.batch_execute("SET statement_timeout = 4000").await?;
    let row = client
        .query_one(
            "SELECT pg_is_in_recovery(), pg_postmaster_start_time()::text,
                    extract(epoch FROM now() - pg_postmaster_start_time())::float8,
                    current_setting('max_connections')::int8,
                    (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'),
                    current_setting('archive_mode')",
            &[],
        )
        .await?;
    let in_recovery: bool = row.try_get(0)?;
    let max: i64 = row.try_get(3)?;
    let used: i64 = row.try_get(4)?;
    facts.connections_max = max.max(0) as u64;
    facts.connections_used = used.max(0) as u64;
    facts.archive_mode_on = row.try_get::<_, String>(5)? != "off";
    facts.pending_restart = client
        .query(
            "SELECT name FROM pg_settings WHERE pending_restart ORDER BY name",
            &[],
        )
        .await?
        .iter()
        .filter_map(|r| r.try_get(0).ok())
        .collect();

    let summaries = crate::tenants::summaries(&client).await?;
    let mut tenants = Vec::new();
    for t in &summaries {
        let name = &t.name;
        let of_tenant: Vec<&PoolRow> = pools.values().filter(|p| &p.database == name).collect();
        let pool = (!of_tenant.is_empty()).then(|| {
            json!({
                "clients_active": of_tenant.iter().map(|p| p.clients_active).sum::<u64>(),
                "clients_waiting": of_tenant.iter().map(|p| p.clients_waiting).sum::<u64>(),
                "servers_active": of_tenant.iter().map(|p| p.servers_active).sum::<u64>(),
                "servers_idle": of_tenant.iter().map(|p| p.servers_idle).sum::<u64>(),
                "maxwait_seconds": of_tenant.iter().map(|p| p.maxwait_seconds).fold(0.0, f64::max),
            })
        });
        tenants.push(json!({
            "name": name,
            "size_bytes": t.size_bytes,
            "connections": t.connections,
            "pool": pool,
        }));
    }

    let a = client
        .query_one(
            "SELECT archived_count, failed_count, last_archived_wal, last_archived_time::text,
                    extract(epoch FROM now() - last_archived_time)::float8,
                    last_failed_wal, last_failed_time::text,
                    extract(epoch FROM now() - last_failed_time)::float8,
                    COALESCE(last_failed_time > last_archived_time
                             OR (last_failed_time IS NOT NULL AND last_archived_time IS NULL), false),
                    (SELECT count(*) FROM pg_ls_archive_statusdir() WHERE name LIKE '%.ready'),
                    (SELECT extract(epoch FROM now() - min(modification))::float8
                       FROM pg_ls_archive_statusdir() WHERE name LIKE '%.ready')
               FROM pg_stat_archiver",
            &[],
        )
        .await?;
    let seconds = |i| -> anyhow::Result<Option<Duration>> {
        Ok(a.try_get::<_, Option<f64>>(i)?
            .map(|s| Duration::from_secs_f64(s.max(0.0))))
    };
    facts.archive_last_attempt_failed = a.try_get(8)?;
    facts.archive_last_error_age = seconds(7)?;
    facts.oldest_unarchived = seconds(10)?;
    let wal_archive = json!({
        "archive_mode": facts.archive_mode_on,
        "archived_count": a.try_get::<_, i64>(0)?,
        "failed_count": a.try_get::<_, i64>(1)?,
        "last_archived_wal": a.try_get::<_, Option<String>>(2)?,
        "last_archived_at": a.try_get::<_, Option<String>>(3)?,
        "last_archived_age_seconds": a.try_get::<_, Option<f64>>(4)?.map(f64::round),
        "last_failed_wal": a.try_get::<_, Option<String>>(5)?,
        "last_failed_at": a.try_get::<_, Option<String>>(6)?,
        "failing": facts.archive_last_attempt_failed,
        "pending_segments": a.try_get::<_, i64>(9)?,
        "oldest_pending_age_seconds": facts.oldest_unarchived.map(|d| d.as_secs()),
    });

    Ok(json!({
        "role": if in_recovery { "replica" } else { "primary" },
        "started_at": row.try_get::<_, String>(1)?,
        "uptime_seconds": row.try_get::<_, f64>(2)?.round(),
        "connections": {
            "used": used,
            "max": max,
            "percent": if max > 0 { used * 100 / max } else { 0 },
        },
        "tenants": { "count": summaries.len(), "list": tenants },
        "wal_archive": wal_archive,
    }))
}
