//! Admin: `POST /reload` reads the agent's config file again, as SIGHUP does, and answers
//! with what changed (keys applied live, keys pending an agent restart), or with why the
//! file was refused (then nothing changed).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::Json;

use crate::api::error::ApiError;
use crate::api::ApiState;
use crate::shutdown::{ReloadRequest, Reloaded};

/// How long a reload may take (it rewrites PostgreSQL's settings and reloads them).
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

pub async fn reload(State(state): State<Arc<ApiState>>) -> Result<Json<Reloaded>, ApiError> {
    let (reply, outcome) = tokio::sync::oneshot::channel();
    let request = ReloadRequest { reply: Some(reply) };
    tokio::time::timeout(REPLY_TIMEOUT, state.reload.send(request))
        .await
        .map_err(|_| ApiError::Unavailable("another reload is still running".into()))?
        .map_err(|_| ApiError::Unavailable("the agent is shutting down".into()))?;
    let outcome = tokio::time::timeout(REPLY_TIMEOUT, outcome)
        .await
        .map_err(|_| ApiError::Unavailable("the reload did not finish in 30 s".into()))?
        .map_err(|_| ApiError::Unavailable("the agent is shutting down".into()))?;
    match outcome {
        Ok(reloaded) => Ok(Json(reloaded)),
        Err(refused) => Err(ApiError::BadRequest(format!(
            "configuration not reloaded, the running one is kept: {refused}"
        ))),
    }
}
