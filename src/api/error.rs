//! `ApiError`: every handler failure, mapped to one HTTP status and a JSON `{"error": …}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::tenants::TenantError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("missing or wrong admin token (see <data_dir>/run/admin_token)")]
    Unauthorized,
    #[error("{0}")]
    BadRequest(String),
    #[error(transparent)]
    Tenant(#[from] TenantError),
    /// The request contradicts the cluster's state.
    #[error("{0}")]
    Conflict(String),
    /// A part the request needs (etcd, another node) does not answer.
    #[error("{0}")]
    Unavailable(String),
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Tenant(e) => match e {
                TenantError::InvalidName(_)
                | TenantError::InvalidOption(_)
                | TenantError::ExtensionUnavailable { .. } => StatusCode::BAD_REQUEST,
                TenantError::AlreadyExists(_) | TenantError::Conflict(_) => StatusCode::CONFLICT,
                TenantError::NotFound(_) => StatusCode::NOT_FOUND,
                TenantError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = format!("{self}");
        if status.is_server_error() {
            tracing::error!("API request failed: {message}");
        }
        (status, Json(serde_json::json!({ "error": message }))).into_response()
    }
}
