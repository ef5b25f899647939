//! Health endpoints with Patroni's semantics (`/health`, `/liveness`, `/readiness`,
//! `/primary` and its aliases, `/replica`, `/read-only`), for GET, HEAD and OPTIONS as
//! HAProxy's `option httpchk` sends them. Each probe runs a real query: a load balancer
//! must not send traffic to a PostgreSQL that accepts TCP but cannot serve.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

use super::health_rules::{parse_lag, passes, Check, Probe};
use crate::api::ApiState;
use crate::supervisor::PostgresState;

type Reply = (StatusCode, Json<Value>);

pub async fn health(state: State<Arc<ApiState>>, q: Query<HashMap<String, String>>) -> Reply {
    answer(Check::Health, state, q).await
}
pub async fn liveness(state: State<Arc<ApiState>>, q: Query<HashMap<String, String>>) -> Reply {
    answer(Check::Liveness, state, q).await
}
pub async fn readiness(state: State<Arc<ApiState>>, q: Query<HashMap<String, String>>) -> Reply {
    answer(Check::Readiness, state, q).await
}
pub async fn primary(state: State<Arc<ApiState>>, q: Query<HashMap<String, String>>) -> Reply {
    answer(Check::Primary, state, q).await
}
pub async fn replica(state: State<Arc<ApiState>>, q: Query<HashMap<String, String>>) -> Reply {
    answer(Check::Replica, state, q).await
}
pub async fn read_only(state: State<Arc<ApiState>>, q: Query<HashMap<String, String>>) -> Reply {
    answer(Check::ReadOnly, state, q).await
}

async fn answer(
    check: Check,
    State(state): State<Arc<ApiState>>,
    Query(query): Query<HashMap<String, String>>,
) -> Reply {
    let max_lag = match query.get("lag").map(|l| parse_lag(l)).transpose() {
        Ok(lag) => lag,
        Err(message) => return (StatusCode::BAD_REQUEST, Json(json!({ "error": message }))),
    };
    if check == Check::Liveness {
        return (StatusCode::OK, Json(json!({ "status": "ok" })));
    }
    let (probe, details) = probe(&state).await;
    let code = if passes(check, &probe, max_lag) {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let mut body = details;
    body["status"] = json!(if probe.running { "ok" } else { "unavailable" });
    body["postgres"] = json!(state.postgres.borrow().state);
    (code, Json(body))
}

/// One short query on a fresh connection; anything that fails or takes over 3 s counts
/// as not running. The body follows Patroni's fields where they exist.
async fn probe(state: &ApiState) -> (Probe, Value) {
    let down = Probe {
        running: false,
        in_recovery: false,
        lag_bytes: 0,
        lag: Duration::ZERO,
        streaming: false,
    };
    let supervised = state.postgres.borrow().state;
    let down_body = json!({ "state": supervised, "role": "uninitialized" });
    if supervised != PostgresState::Running {
        return (down, down_body);
    }
    let query = async {
        let client = crate::pg::connect::superuser(
            &state.tenants.socket_dir,
            state.tenants.port,
            "postgres",
        )
        .await
        .ok()?;
        client.query_one(PROBE_SQL, &[]).await.ok()
    };
    let Ok(Some(row)) = tokio::time::timeout(Duration::from_secs(3), query).await else {
        return (down, down_body);
    };
    let get_i64 = |i: usize| row.try_get::<_, Option<i64>>(i).ok().flatten();
    let in_recovery: bool = row.try_get(0).unwrap_or(false);
    let probe = Probe {
        running: true,
        in_recovery,
        lag_bytes: get_i64(5).unwrap_or(0).max(0) as u64,
        lag: Duration::from_secs_f64(
            row.try_get::<_, Option<f64>>(6)
                .ok()
                .flatten()
                .unwrap_or(0.0)
                .max(0.0),
        ),
        streaming: row.try_get(7).unwrap_or(false),
    };
    let xlog = if in_recovery {
        json!({
            "received_location": get_i64(8),
            "replayed_location": get_i64(4),
            "replayed_timestamp": row.try_get::<_, Option<String>>(9).ok().flatten(),
        })
    } else {
        json!({ "location": get_i64(4) })
    };
    let body = json!({
        "state": "running",
        "role": if in_recovery { "replica" } else { "primary" },
        "server_version": row.try_get::<_, i32>(1).ok(),
        "postmaster_start_time": row.try_get::<_, String>(2).ok(),
        "timeline": row.try_get::<_, i32>(3).ok(),
        "xlog": xlog,
        "database_system_identifier": row.try_get::<_, String>(10).ok(),
        "pgplatform": { "version": env!("CARGO_PKG_VERSION") },
    });
    (probe, body)
}

/// Columns: in_recovery, server_version_num, postmaster start, timeline, current (or
/// replayed) WAL position in bytes, replay lag in bytes and seconds, streaming,
/// received position, last replayed transaction time, system identifier.
const PROBE_SQL: &str = "
SELECT pg_is_in_recovery(),
       current_setting('server_version_num')::int,
       pg_postmaster_start_time()::text,
       (SELECT timeline_id FROM pg_control_checkpoint()),
       pg_wal_lsn_diff(CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()
                            ELSE pg_current_wal_lsn() END, '0/0')::bigint,
       COALESCE(pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn()), 0)::bigint,
       CASE WHEN NOT pg_is_in_recovery()
                 OR pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0
            ELSE COALESCE(extract(epoch FROM now() - pg_last_xact_replay_timestamp()), 0)
       END::float8,
       EXISTS (SELECT 1 FROM pg_stat_wal_receiver WHERE status = 'streaming'),
       pg_wal_lsn_diff(pg_last_wal_receive_lsn(), '0/0')::bigint,
       pg_last_xact_replay_timestamp()::text,
       (SELECT system_identifier::text FROM pg_control_system())";
