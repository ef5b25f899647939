//! `GET /metrics`: Prometheus text exposition (see `crate::metrics`).

use std::sync::Arc;

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;

use crate::api::ApiState;
use crate::metrics::Sources;

const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

pub async fn metrics(State(state): State<Arc<ApiState>>) -> impl IntoResponse {
    (
        [(CONTENT_TYPE, TEXT_FORMAT)],
        crate::metrics::scrape(&state.sources).await,
    )
}

/// The same, on the dedicated metrics listener.
pub async fn metrics_only(State(sources): State<Arc<Sources>>) -> impl IntoResponse {
    (
        [(CONTENT_TYPE, TEXT_FORMAT)],
        crate::metrics::scrape(&sources).await,
    )
}
