//! Admin endpoints for tenants; thin wrappers over the `Tenants` service.

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;

use crate::api::error::ApiError;
use crate::api::ApiState;
use crate::tenants::{CreateRequest, RedisEnableRequest, TenantDetails, TenantSummary};

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

#[derive(Debug, serde::Deserialize)]
pub struct PurgeQuery {
    /// Delete the tenant's Redis data rather than keep it aside.
    #[serde(default)]
    purge: bool,
}

pub async fn drop(
    State(state): State<Arc<ApiState>>,
    Path(name): Path<String>,
    Query(query): Query<PurgeQuery>,
) -> Result<StatusCode, ApiError> {
    state.tenants.drop_tenant(&name, query.purge).await?;
    super::cluster::tenants_changed(&state).await;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn redis_enable(
    State(state): State<Arc<ApiState>>,
    Path(name): Path<String>,
    body: Result<Json<RedisEnableRequest>, JsonRejection>,
) -> Result<Json<TenantDetails>, ApiError> {
    let Json(request) = body.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let details = state
        .tenants
        .redis_enable(&name, request.maxmemory.as_deref())
        .await?;
    Ok(Json(details))
}

pub async fn redis_resize(
    State(state): State<Arc<ApiState>>,
    Path(name): Path<String>,
    body: Result<Json<RedisEnableRequest>, JsonRejection>,
) -> Result<Json<TenantDetails>, ApiError> {
    let Json(request) = body.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let details = state
        .tenants
        .redis_resize(&name, request.maxmemory.as_deref())
        .await?;
    Ok(Json(details))
}

pub async fn redis_disable(
    State(state): State<Arc<ApiState>>,
    Path(name): Path<String>,
    Query(query): Query<PurgeQuery>,
) -> Result<Json<TenantDetails>, ApiError> {
    Ok(Json(state.tenants.redis_disable(&name, query.purge).await?))
}
