//! Admin: hold PostgreSQL stopped for maintenance (`restore --in-place`) and start it
//! again. The supervisor does the stopping and starting; an agent restart also ends it.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

use crate::api::error::ApiError;
use crate::api::ApiState;
use crate::supervisor::Maintenance;

pub async fn stop(State(state): State<Arc<ApiState>>) -> Result<Json<Value>, ApiError> {
    let mut paused = state.paused.lock().await;
    if paused.is_some() {
        return Ok(Json(json!({ "postgres": "stopped" })));
    }
    let (stopped_tx, stopped_rx) = tokio::sync::oneshot::channel();
    let (resume_tx, resume_rx) = tokio::sync::oneshot::channel();
    let request = Maintenance {
        stopped: stopped_tx,
        resume: resume_rx,
        immediate: false,
    };
    state
        .maintenance
        .send(request)
        .await
        .map_err(|_| ApiError::BadRequest("the supervisor is not running".into()))?;
    stopped_rx
        .await
        .map_err(|_| ApiError::BadRequest("the supervisor stopped before PostgreSQL did".into()))?;
    *paused = Some(resume_tx);
    Ok(Json(json!({ "postgres": "stopped" })))
}

/// Starts PostgreSQL again; returns at once (recovery may take long): poll `/health`.
pub async fn start(State(state): State<Arc<ApiState>>) -> Json<Value> {
    if let Some(resume) = state.paused.lock().await.take() {
        let _ = resume.send(());
    }
    Json(json!({ "postgres": "starting" }))
}
