//! Who may use the admin endpoints: the CLI with the local admin bearer token (compared in
//! constant time), or another agent of this HA cluster with a request signed by the
//! cluster secret (`ha::peer`: method, path, body digest, names, time, nonce; refused
//! outside its window or when seen before). No token derived from the cluster secret is
//! accepted: it would travel, and could be replayed.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::Response;

use crate::api::error::ApiError;
use crate::api::ApiState;
use crate::ha::peer;

pub async fn require_admin_token(
    State(state): State<Arc<ApiState>>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if let Some(presented) = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    {
        if constant_time_eq(presented.as_bytes(), state.admin_token.as_bytes()) {
            return Ok(next.run(request).await);
        }
        return Err(ApiError::Unauthorized);
    }
    match &state.ha_node {
        Some(node) if peer::is_signed(request.headers()) => {
            let (parts, body) = request.into_parts();
            let body = axum::body::to_bytes(body, peer::MAX_BODY)
                .await
                .map_err(|e| ApiError::BadRequest(format!("read the request: {e}")))?;
            let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
            if let Err(e) = peer::verify(
                &node.secret,
                &node.config.name,
                &node.peers,
                parts.method.as_str(),
                path,
                &parts.headers,
                &body,
            ) {
                tracing::warn!(path = %parts.uri.path(), "refused an agent request: {e:#}");
                return Err(ApiError::Unauthorized);
            }
            Ok(next.run(Request::from_parts(parts, Body::from(body))).await)
        }
        _ => Err(ApiError::Unauthorized),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    #[test]
    fn tokens_compare_exactly() {
        assert!(super::constant_time_eq(b"abc", b"abc"));
        assert!(!super::constant_time_eq(b"abc", b"abd"));
        assert!(!super::constant_time_eq(b"abc", b"ab"));
        assert!(!super::constant_time_eq(b"", b"a"));
    }
}
