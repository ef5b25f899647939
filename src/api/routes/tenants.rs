//! Admin endpoints for tenants; thin wrappers over the `Tenants` service.

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;

use crate::api::error::ApiError;
use crate::api::ApiState;
use crate::tenants::{CreateRequest, TenantDetails, TenantSummary};

pub async fn list(
    State(state): State<Arc<ApiState>>,
) -> Result<Json<Vec<TenantSummary>>, ApiError> {
    Ok(Json(state.tenants.list().await?))
}

pub async fn create(
    State(state): State<Arc<ApiState>>,
    body: Result<Json<CreateRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<TenantDetails>), ApiError> {
    let Json(request) = body.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let created = state.tenants.create(request).await?;
    super::cluster::tenants_changed(&state).await;
    Ok((StatusCode::CREATED, Json(created)))
}

#[derive(Debug, serde::Deserialize)]
pub struct ShowQuery {
    #[serde(default)]
    reveal: bool,
}

pub async fn show(
    State(state): State<Arc<ApiState>>,
    Path(name): Path<String>,
    Query(query): Query<ShowQuery>,
) -> Result<Json<TenantDetails>, ApiError> {
    Ok(Json(state.tenants.show(&name, query.reveal).await?))
}

#[derive(Debug, serde::Deserialize)]
pub struct RotateQuery {
    #[serde(default)]
    readonly: bool,
}

pub async fn rotate(
    State(state): State<Arc<ApiState>>,
    Path(name): Path<String>,
    Query(query): Query<RotateQuery>,
) -> Result<Json<TenantDetails>, ApiError> {
    let rotated = state.tenants.rotate(&name, query.readonly).await?;
    super::cluster::tenants_changed(&state).await;
    Ok(Json(rotated))
}

pub async fn drop(
    State(state): State<Arc<ApiState>>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.tenants.drop_tenant(&name).await?;
    super::cluster::tenants_changed(&state).await;
    Ok(StatusCode::NO_CONTENT)
}
