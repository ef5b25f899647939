//! `GET /health` (200 only when PostgreSQL answers a query) and `GET /status`.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

use crate::api::ApiState;
use crate::supervisor::PostgresState;

/// Runs a real query rather than testing a port: a load balancer must not send traffic to
/// a PostgreSQL that accepts TCP but cannot serve (starting up, recovering, out of slots).
pub async fn health(State(state): State<Arc<ApiState>>) -> (StatusCode, Json<Value>) {
    let postgres = state.postgres.borrow().clone();
    let answered = postgres.state == PostgresState::Running && query_ok(&state).await;
    let (code, status) = if answered {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
    };
    let body = json!({ "status": status, "postgres": postgres.state, "role": "primary" });
    (code, Json(body))
}

async fn query_ok(state: &ApiState) -> bool {
    let check = async {
        let client = crate::pg::connect::superuser(
            &state.tenants.socket_dir,
            state.tenants.port,
            "postgres",
        )
        .await
        .ok()?;
        client.simple_query("SELECT 1").await.ok()
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(3), check).await,
        Ok(Some(_))
    )
}

pub async fn status(State(state): State<Arc<ApiState>>) -> Json<Value> {
    let postgres = state.postgres.borrow().clone();
    let details = if postgres.state == PostgresState::Running {
        live_details(&state).await
    } else {
        None
    };
    let (tenants, pending_restart) = details.unwrap_or_default();
    Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "data_dir": state.data_dir.display().to_string(),
        "uptime_seconds": state.started.elapsed().as_secs(),
        "postgres": {
            "state": postgres.state,
            "pid": postgres.pid,
            "version": postgres.version,
            "port": postgres.port,
            "restarts": postgres.restarts,
            "pending_restart": pending_restart,
        },
        "tenants": tenants,
    }))
}

/// Tenant count and settings that wait for a restart, read from the running server.
async fn live_details(state: &ApiState) -> Option<(i64, Vec<String>)> {
    let client = crate::pg::connect::superuser(
        &state.tenants.socket_dir,
        state.tenants.port,
        crate::pg::AGENT_DATABASE,
    )
    .await
    .ok()?;
    let tenants = client
        .query_one(
            "SELECT count(*) FROM pgplatform.tenants WHERE state = 'ready'",
            &[],
        )
        .await
        .ok()?
        .try_get(0)
        .ok()?;
    let pending = client
        .query(
            "SELECT name FROM pg_settings WHERE pending_restart ORDER BY name",
            &[],
        )
        .await
        .ok()?
        .iter()
        .filter_map(|r| r.try_get(0).ok())
        .collect();
    Some((tenants, pending))
}
