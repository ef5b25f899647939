//! `GET /status`: the operator's summary with warnings (see `crate::status`).

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use serde_json::Value;

use crate::api::ApiState;

pub async fn status(State(state): State<Arc<ApiState>>) -> Json<Value> {
    Json(crate::status::report_now(&state.sources).await)
}
