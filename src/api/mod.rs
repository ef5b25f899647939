//! The agent's HTTP API: health and status for load balancers and monitoring, admin
//! endpoints (bearer token) for the CLI. `client` is the CLI's side of it.

pub mod client;
mod error;
mod routes;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use axum::routing::{get, post};
use axum::Router;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::supervisor::PostgresStatus;
use crate::tenants::Tenants;

/// What handlers can reach.
pub struct ApiState {
    pub tenants: Arc<Tenants>,
    pub postgres: watch::Receiver<PostgresStatus>,
    pub admin_token: String,
    pub started: Instant,
    pub data_dir: PathBuf,
}

fn router(state: Arc<ApiState>) -> Router {
    let admin = Router::new()
        .route(
            "/tenants",
            get(routes::tenants::list).post(routes::tenants::create),
        )
        .route(
            "/tenants/{name}",
            get(routes::tenants::show).delete(routes::tenants::drop),
        )
        .route("/tenants/{name}/rotate", post(routes::tenants::rotate))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            routes::auth::require_admin_token,
        ));
    Router::new()
        .route("/health", get(routes::health::health))
        .route("/status", get(routes::health::status))
        .merge(admin)
        .with_state(state)
}

/// Binds the listener; done before anything is announced so a taken port fails `up`.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("listen on {addr} (api.listen)"))
}

/// Serves until `shutdown`, then finishes in-flight requests.
pub async fn task_main(
    listener: tokio::net::TcpListener,
    state: Arc<ApiState>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
        .context("serve the HTTP API")
}
