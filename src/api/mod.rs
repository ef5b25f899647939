//! The agent's HTTP API: health and status for load balancers and monitoring, admin
//! endpoints (bearer token) for the CLI. `client` is the CLI's side of it.

pub mod client;
mod error;
mod routes;
pub mod serve;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use axum::handler::Handler;
use axum::routing::{delete, get, on, post, MethodFilter, MethodRouter};
use axum::Router;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::{ApiTls, Config};
use crate::metrics::Sources;
use crate::supervisor::PostgresStatus;
use crate::tenants::Tenants;

/// What handlers can reach.
pub struct ApiState {
    pub tenants: Arc<Tenants>,
    pub postgres: watch::Receiver<PostgresStatus>,
    pub admin_token: String,
    /// What `/metrics` and `/status` read.
    pub sources: Arc<Sources>,
    /// Asks the supervisor to stop PostgreSQL for maintenance.
    pub maintenance: tokio::sync::mpsc::Sender<crate::supervisor::Maintenance>,
    /// While PostgreSQL is held stopped: what starts it again.
    pub paused: tokio::sync::Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
    /// The HA cluster as this node sees it; `None` without HA.
    pub cluster: Option<watch::Receiver<crate::ha::ClusterView>>,
    pub ha_node: Option<Arc<crate::ha::Node>>,
    /// Asks this node's HA loop for a switchover (when it is the primary).
    pub switchover: Option<tokio::sync::mpsc::Sender<crate::ha::switchover::Request>>,
    pub pooler: Option<crate::pooler::PoolerHandle>,
    /// Asks the agent to read its config file again (as SIGHUP does).
    pub reload: tokio::sync::mpsc::Sender<crate::shutdown::ReloadRequest>,
}

/// GET, HEAD and OPTIONS: HAProxy's `option httpchk` for Patroni sends OPTIONS.
fn probe<H, T>(handler: H) -> MethodRouter<Arc<ApiState>>
where
    H: Handler<T, Arc<ApiState>>,
    T: 'static,
{
    on(
        MethodFilter::GET
            .or(MethodFilter::HEAD)
            .or(MethodFilter::OPTIONS),
        handler,
    )
}

fn router(state: Arc<ApiState>) -> Router {
    // Tenant changes and WAL requests go to the primary (forwarded there from a replica).
    let on_primary = Router::new()
        .route("/tenants", post(routes::tenants::create))
        .route("/tenants/{name}", delete(routes::tenants::drop))
        .route("/tenants/{name}/rotate", post(routes::tenants::rotate))
        .route(
            "/tenants/{name}/redis",
            post(routes::tenants::redis_enable)
                .patch(routes::tenants::redis_resize)
                .delete(routes::tenants::redis_disable),
        )
        .route("/backup/switch-wal", post(routes::backup::switch_wal))
        .route("/backup/mark", post(routes::backup::mark))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            routes::forward::to_primary,
        ));
    let admin = Router::new()
        .route("/tenants", get(routes::tenants::list))
        .route("/tenants/{name}", get(routes::tenants::show))
        .merge(on_primary)
        .route("/postgres/stop", post(routes::maintenance::stop))
        .route("/postgres/start", post(routes::maintenance::start))
        .route("/cluster/pause", post(routes::cluster::pause))
        .route("/cluster/resume", post(routes::cluster::resume))
        .route("/cluster/switchover", post(routes::cluster::switchover))
        .route("/cluster/failover", post(routes::cluster::failover))
        .route("/cluster/failsafe", post(routes::cluster::failsafe))
        .route(
            "/cluster/tenants-changed",
            post(routes::cluster::tenants_changed_here),
        )
        .route("/reload", post(routes::reload::reload))
        .route("/pooler/pause", post(routes::cluster::pause_pooler))
        .route("/pooler/resume", post(routes::cluster::resume_pooler))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            routes::auth::require_admin_token,
        ));
    use routes::health;
    Router::new()
        .route("/health", probe(health::health))
        .route("/liveness", probe(health::liveness))
        .route("/readiness", probe(health::readiness))
        .route("/primary", probe(health::primary))
        .route("/read-write", probe(health::primary))
        .route("/master", probe(health::primary))
        .route("/leader", probe(health::primary))
        .route("/replica", probe(health::replica))
        .route("/read-only", probe(health::read_only))
        .route("/status", get(routes::status::status))
        .route("/cluster", get(routes::cluster::status))
        .route("/metrics", get(routes::metrics::metrics))
        .merge(admin)
        .with_state(state)
}

/// The dedicated metrics listener (`metrics.listen`): `/metrics` only, plain HTTP, under
/// the API's bounds.
pub async fn metrics_task_main(
    listener: tokio::net::TcpListener,
    sources: Arc<Sources>,
    limits: serve::Limits,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let router = Router::new()
        .route("/metrics", get(routes::metrics::metrics_only))
        .with_state(sources);
    serve::serve(listener, router, None, limits, shutdown, "metrics.listen")
        .await
        .context("serve metrics")
}

/// The certificate file the API serves, which a client on this machine pins; `None`
/// without TLS.
pub fn served_cert_file(config: &Config) -> Option<PathBuf> {
    match &config.api.tls {
        ApiTls::Off => None,
        ApiTls::Generated => Some(crate::pooler::tls::generated_paths(&config.data_dir).0),
        ApiTls::Files { cert, .. } => Some(cert.clone()),
    }
}

/// The DER of the certificate the API serves (the first of its file), which an HA
/// member record pins so that peers trust exactly it; `None` without TLS. Makes the
/// agent's certificate if `api.tls = "generated"` and it does not exist yet.
pub fn served_certificate_der(config: &Config) -> anyhow::Result<Option<Vec<u8>>> {
    let path = match &config.api.tls {
        ApiTls::Off => return Ok(None),
        ApiTls::Generated => {
            crate::pooler::tls::ensure_generated(
                &config.data_dir.join("tls"),
                &crate::pooler::tls::certificate_hosts(config),
            )?
            .0
        }
        ApiTls::Files { cert, .. } => cert.clone(),
    };
    let first = crate::pooler::tls::read_certificates(&path)
        .context("api.tls")?
        .into_iter()
        .next()
        .context("api.tls: no certificate")?;
    Ok(Some(first.as_ref().to_vec()))
}

/// The API's TLS acceptor per `api.tls`, or `None` for plain HTTP. Built before the
/// agent announces itself, so a bad certificate fails `up`.
pub fn tls_acceptor(config: &Config) -> anyhow::Result<Option<tokio_rustls::TlsAcceptor>> {
    let acceptor = match &config.api.tls {
        ApiTls::Off => return Ok(None),
        ApiTls::Generated => {
            let (cert, key) = crate::pooler::tls::ensure_generated(
                &config.data_dir.join("tls"),
                &crate::pooler::tls::certificate_hosts(config),
            )?;
            crate::pooler::tls::acceptor_from_files(&cert, &key)
        }
        ApiTls::Files { cert, key } => crate::pooler::tls::acceptor_from_files(cert, key),
    };
    acceptor.context("api.tls").map(Some)
}

/// Binds the listener; done before anything is announced so a taken port fails `up`.
pub async fn bind(addr: SocketAddr, key: &str) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("listen on {addr} ({key})"))
}

/// Serves until `shutdown`, then finishes in-flight requests.
pub async fn task_main(
    listener: tokio::net::TcpListener,
    state: Arc<ApiState>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    limits: serve::Limits,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    serve::serve(listener, router(state), tls, limits, shutdown, "api.listen")
        .await
        .context("serve the HTTP API")
}
