//! Admin, for the CLI's `restore` and `backup mark` (forwarded to the primary in HA):
//! close the current WAL segment so the archive covers everything committed until now,
//! and create a named restore point. Both run as the agent's superuser on a connection
//! whose search_path is pinned (`pg::connect`), with fixed SQL and bound parameters.

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::Json;
use serde::Deserialize;

use crate::backup::coverage::Switched;
use crate::backup::marks::Mark;

use crate::api::error::ApiError;
use crate::api::ApiState;

#[derive(Debug, Default, Deserialize)]
pub struct SwitchRequest {
    /// A transaction the caller means to recover to: its status is reported.
    #[serde(default)]
    pub xid: Option<u64>,
}

#[derive(Debug, Deserialize)]
pub struct MarkRequest {
    pub name: String,
}

async fn primary(state: &ApiState) -> Result<tokio_postgres::Client, ApiError> {
    let t = &state.tenants;
    let client = crate::pg::connect::superuser(&t.socket_dir, t.port, crate::pg::AGENT_DATABASE)
        .await
        .map_err(|e| ApiError::Unavailable(format!("PostgreSQL is not available: {e:#}")))?;
    let in_recovery: bool = client
        .query_one("SELECT pg_catalog.pg_is_in_recovery()", &[])
        .await
        .and_then(|r| r.try_get(0))
        .map_err(internal)?;
    if in_recovery {
        return Err(ApiError::Conflict(
            "PostgreSQL here is in recovery (a replica, or replaying a restore)".into(),
        ));
    }
    Ok(client)
}

/// The clock as microseconds since the epoch (tokio-postgres is built without chrono).
const MICROS: &str = "(EXTRACT(epoch FROM pg_catalog.clock_timestamp()) \
                      OPERATOR(pg_catalog.*) 1000000)::pg_catalog.int8";

fn from_micros(micros: i64) -> Result<chrono::DateTime<chrono::Utc>, ApiError> {
    chrono::DateTime::from_timestamp_micros(micros)
        .ok_or_else(|| ApiError::Unavailable(format!("PostgreSQL's clock says {micros}")))
}

fn internal(e: tokio_postgres::Error) -> ApiError {
    match e.as_db_error() {
        Some(db) => ApiError::Unavailable(format!("PostgreSQL: {}", db.message())),
        None => ApiError::Unavailable(format!("PostgreSQL: {e}")),
    }
}

pub async fn switch_wal(
    State(state): State<Arc<ApiState>>,
    body: Result<Json<SwitchRequest>, JsonRejection>,
) -> Result<Json<Switched>, ApiError> {
    let Json(request) = body.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let client = primary(&state).await?;
    let micros: i64 = client
        .query_one(&format!("SELECT {MICROS}"), &[])
        .await
        .and_then(|r| r.try_get(0))
        .map_err(internal)?;
    // A transaction with an id writes a commit record (timestamped after `time`).
    let xid: String = client
        .query_one(
            "SELECT pg_catalog.pg_current_xact_id()::pg_catalog.text",
            &[],
        )
        .await
        .and_then(|r| r.try_get(0))
        .map_err(internal)?;
    let row = client
        .query_one(
            "SELECT pg_catalog.pg_walfile_name(l), l::pg_catalog.text
               FROM pg_catalog.pg_switch_wal() AS l",
            &[],
        )
        .await
        .map_err(internal)?;
    let xid_status = match request.xid {
        None => None,
        Some(wanted) => client
            .query_one(
                "SELECT pg_catalog.pg_xact_status($1::pg_catalog.text::pg_catalog.xid8)",
                &[&wanted.to_string()],
            )
            .await
            .and_then(|r| r.try_get::<_, Option<String>>(0))
            .map_err(|e| match internal(e) {
                ApiError::Unavailable(m) => {
                    ApiError::BadRequest(format!("transaction {wanted}: {m}"))
                }
                other => other,
            })?,
    };
    Ok(Json(Switched {
        segment: row.try_get(0).map_err(internal)?,
        lsn: row.try_get(1).map_err(internal)?,
        time: from_micros(micros)?,
        next_xid: xid.parse::<u64>().map_or(0, |x| x + 1),
        xid_status,
    }))
}

pub async fn mark(
    State(state): State<Arc<ApiState>>,
    body: Result<Json<MarkRequest>, JsonRejection>,
) -> Result<Json<Mark>, ApiError> {
    let Json(request) = body.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    crate::backup::marks::check_name(&request.name)
        .map_err(|e| ApiError::BadRequest(format!("{e:#}")))?;
    let client = primary(&state).await?;
    let row = client
        .query_one(
            &format!(
                "SELECT pg_catalog.pg_create_restore_point($1)::pg_catalog.text, {MICROS},
                    (SELECT timeline_id FROM pg_catalog.pg_control_checkpoint()),
                    (SELECT system_identifier::pg_catalog.text FROM pg_catalog.pg_control_system())"
            ),
            &[&request.name],
        )
        .await
        .map_err(internal)?;
    let timeline: i32 = row.try_get(2).map_err(internal)?;
    Ok(Json(Mark {
        name: request.name,
        lsn: row.try_get(0).map_err(internal)?,
        time: from_micros(row.try_get(1).map_err(internal)?)?,
        timeline: u32::try_from(timeline).unwrap_or_default(),
        system_identifier: row.try_get(3).map_err(internal)?,
    }))
}
