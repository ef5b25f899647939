//! The agent's task list: every long-lived task, each under the supervisor in `keeper`
//! (restarted with backoff when it dies, counted in `/metrics`). Two groups: `front`
//! (API, metrics listener, poolers, their housekeeping, backup scheduler) stops and
//! drains on the shutdown signal before PostgreSQL stops; `ha` (the HA loop) hands its
//! leader key over after PostgreSQL has stopped.

use std::sync::Arc;

use anyhow::Context;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::keeper::{self, Tasks};
use super::prepare::{self, Host};
use super::reload::Reloader;
use super::{Listeners, Postgres, Routes};
use crate::api::{self, ApiState};
use crate::config::Config;
use crate::data_dir::AgentInfo;
use crate::metrics::Restarts;
use crate::metrics::Sources;
use crate::tenants::Tenants;

pub(super) struct Running {
    pub front: Tasks,
    pub ha: Tasks,
}

/// Starts every task, then announces the agent (`run/agent.json`, "pgplatform is ready").
#[allow(clippy::too_many_arguments)]
pub(super) async fn start(
    config: &Config,
    host: &Host,
    reloader: &Reloader,
    routes: Routes,
    listeners: Listeners,
    postgres: &Postgres,
    tenants: Arc<Tenants>,
    ha_node: Option<Arc<crate::ha::Node>>,
    shutdown: &CancellationToken,
) -> anyhow::Result<Running> {
    let restarts = Arc::new(Restarts::default());
    let mut front = Tasks::new(shutdown.clone(), restarts.clone());
    let mut ha = Tasks::new(shutdown.clone(), restarts.clone());
    let (cluster_tx, cluster_rx) = watch::channel(crate::ha::ClusterView::default());
    let cluster_rx = ha_node.as_ref().map(|_| cluster_rx);
    let sources = Arc::new(Sources {
        socket_dir: host.data_dir.socket_dir(),
        postgres_port: config.postgres.port,
        pooler_port: config.pooler.enabled.then_some(config.pooler.listen_port),
        data_dir: config.data_dir.clone(),
        started: host.started,
        config: reloader.config.subscribe(),
        pending_restart: reloader.pending_restart.subscribe(),
        task_restarts: restarts,
        postgres: postgres.status.clone(),
        cluster: cluster_rx.clone(),
        redis: tenants.redis.clone(),
    });
    let (switchover_tx, switchover_rx) = mpsc::channel(1);
    if let Some(node) = &ha_node {
        if let Some(der) = &listeners.api_cert {
            node.peers.set_api_certificate(der);
        }
        let ha_loop = crate::ha::node::Loop {
            node: node.clone(),
            supervisor: postgres.maintenance.clone(),
            postgres: postgres.status.clone(),
            view: cluster_tx,
            primary: routes.primary.clone(),
            replicas: routes.replicas.clone(),
            tenants: tenants.clone(),
        };
        spawn_ha_loop(&mut ha, ha_loop, switchover_rx, shutdown);
    }
    let pooler = listeners.pooler.as_ref().map(|l| l.handle());
    let follow = ha_node.is_some();
    if let Some(listening) = listeners.pooler {
        let names = ["pooler", "pooler_maintenance", "pooler_follow_primary"];
        spawn_pooler(&mut front, names, listening, follow, shutdown);
    }
    if let Some(listening) = listeners.read_only_pooler {
        let names = [
            "pooler_read_only",
            "pooler_read_only_maintenance",
            "pooler_read_only_follow_replicas",
        ];
        spawn_pooler(&mut front, names, listening, follow, shutdown);
    }
    let state = Arc::new(ApiState {
        tenants,
        postgres: postgres.status.clone(),
        admin_token: host.data_dir.admin_token()?,
        sources: sources.clone(),
        maintenance: postgres.maintenance.clone(),
        paused: tokio::sync::Mutex::new(None),
        cluster: cluster_rx,
        ha_node: ha_node.clone(),
        switchover: ha_node.as_ref().map(|_| switchover_tx),
        pooler,
        reload: reloader.requests.clone(),
    });
    let api_url = format!(
        "{}://{}",
        config.api.scheme(),
        listeners.api.local_addr().context("read API address")?
    );
    let limits = api::serve::Limits::from_config(&config.api);
    let (api_tls, api_limits) = (listeners.api_tls, limits.clone());
    spawn_serving(
        &mut front,
        "api",
        listeners.api,
        shutdown,
        move |listener, stop| {
            api::task_main(
                listener,
                state.clone(),
                api_tls.clone(),
                api_limits.clone(),
                stop,
            )
        },
    );
    if let Some(metrics) = listeners.metrics {
        spawn_serving(
            &mut front,
            "metrics",
            metrics,
            shutdown,
            move |listener, stop| {
                api::metrics_task_main(listener, sources.clone(), limits.clone(), stop)
            },
        );
    }
    // Always running: a reload may add a schedule; with none it waits.
    let schedules = reloader.config.subscribe();
    front.spawn(
        "backup_scheduler",
        supervised(shutdown, move |stop| {
            crate::backup::schedule::task_main(schedules.clone(), stop)
        }),
    );
    host.data_dir.write_agent_info(&AgentInfo {
        pid: std::process::id(),
        api_url: api_url.clone(),
        api_cert_file: api::served_cert_file(config),
    })?;
    match &listeners.api_cert {
        Some(der) => tracing::info!(api = %api_url, api_cert_sha256 = %prepare::sha256_hex(der),
            "pgplatform is ready"),
        None => tracing::info!(api = %api_url, "pgplatform is ready"),
    }
    Ok(Running { front, ha })
}

/// The HA loop. If it dies, the node fences itself at once (it renews the leader lease,
/// so nothing else would stop writes before the lease expires) and the loop restarts.
fn spawn_ha_loop(
    ha: &mut Tasks,
    ha_loop: crate::ha::node::Loop,
    switchover: mpsc::Receiver<crate::ha::switchover::Request>,
    shutdown: &CancellationToken,
) {
    let (node, supervisor) = (ha_loop.node.clone(), ha_loop.supervisor.clone());
    // Switchover requests outlive a run of the loop: each run holds the receiver.
    let requests = Arc::new(tokio::sync::Mutex::new(switchover));
    ha.spawn_with_hook(
        "ha_loop",
        supervised(shutdown, move |stop| {
            let (ha_loop, requests) = (ha_loop.clone(), requests.clone());
            async move {
                let mut requests = requests.lock_owned().await;
                crate::ha::node::task_main(ha_loop, &mut requests, stop).await
            }
        }),
        keeper::hook(move || {
            let (node, supervisor) = (node.clone(), supervisor.clone());
            async move { crate::ha::node::fence_without_loop(&node, &supervisor).await }
        }),
    );
}

/// A pooler's accept loop, its housekeeping and (HA) its following of PostgreSQL.
fn spawn_pooler(
    front: &mut Tasks,
    [accept, maintain, follow]: [&'static str; 3],
    listening: crate::pooler::Listening,
    follows: bool,
    shutdown: &CancellationToken,
) {
    let accepting = crate::pooler::start(listening);
    let handle = accepting.handle();
    front.spawn(
        accept,
        supervised(shutdown, move |stop| {
            crate::pooler::task_main(accepting.clone(), stop)
        }),
    );
    let maintained = handle.clone();
    front.spawn(
        maintain,
        supervised(shutdown, move |stop| maintained.clone().maintain(stop)),
    );
    if follows {
        front.spawn(
            follow,
            supervised(shutdown, move |stop| handle.clone().follow_primary(stop)),
        );
    }
}

/// An HTTP server on `listener`; each run serves a duplicate of the bound socket, so a
/// restart needs no new bind.
fn spawn_serving<F, Fut>(
    front: &mut Tasks,
    task: &'static str,
    listener: std::net::TcpListener,
    shutdown: &CancellationToken,
    mut serve: F,
) where
    F: FnMut(tokio::net::TcpListener, CancellationToken) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
{
    front.spawn(
        task,
        supervised(shutdown, move |stop| {
            let run = tokio_listener(&listener).map(|listener| serve(listener, stop));
            async move { run?.await }
        }),
    );
}

/// A factory for `Tasks::spawn` that hands each run the shutdown token.
fn supervised<F, Fut>(
    shutdown: &CancellationToken,
    mut make: F,
) -> impl FnMut() -> Fut + Send + 'static
where
    F: FnMut(CancellationToken) -> Fut + Send + 'static,
{
    let shutdown = shutdown.clone();
    move || make(shutdown.clone())
}

/// A tokio listener on the same socket as `listener`, for one run of a serving task.
fn tokio_listener(listener: &std::net::TcpListener) -> anyhow::Result<tokio::net::TcpListener> {
    let listener = listener.try_clone().context("share the listening socket")?;
    listener.set_nonblocking(true)?;
    Ok(tokio::net::TcpListener::from_std(listener)?)
}
