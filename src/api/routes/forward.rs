//! HA: tenant changes are made on the primary. On a replica, this middleware sends the
//! request on to the primary's agent (signed with the cluster secret, only to the
//! primary's verified member record) and relays its answer, so tenant commands work from
//! any node.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::api::error::ApiError;
use crate::api::ApiState;

/// Bodies of tenant requests are small JSON documents.
const MAX_BODY: usize = 1024 * 1024;

pub async fn to_primary(
    State(state): State<Arc<ApiState>>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let (Some(node), Some(cluster)) = (&state.ha_node, &state.cluster) else {
        return Ok(next.run(request).await);
    };
    let view = cluster.borrow().clone();
    let leader = view.leader.clone().ok_or_else(|| {
        ApiError::Unavailable("there is no primary right now; retry shortly".into())
    })?;
    if leader == node.config.name {
        return Ok(next.run(request).await);
    }
    let primary = view
        .members
        .iter()
        .find(|m| m.name == leader)
        .cloned()
        .ok_or_else(|| ApiError::Unavailable(format!("the primary {leader} is not reachable")))?;
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, MAX_BODY)
        .await
        .map_err(|e| ApiError::BadRequest(format!("read the request: {e}")))?;
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let answer = crate::ha::peer::call(
        node,
        &primary,
        parts.method.clone(),
        &path,
        body.to_vec(),
        std::time::Duration::from_secs(300),
    )
    .await
    .map_err(|e| ApiError::Unavailable(format!("forward to the primary {leader}: {e:#}")))?;
    let status =
        StatusCode::from_u16(answer.status().as_u16()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let bytes = answer
        .bytes()
        .await
        .map_err(|e| ApiError::Unavailable(format!("the primary {leader}'s answer: {e}")))?;
    Ok((
        status,
        [(header::CONTENT_TYPE, "application/json")],
        Body::from(bytes),
    )
        .into_response())
}
