//! `pgplatform up`: the agent's start-up stages, its life, and its shutdown order.
//!
//! `run` reads top to bottom: prepare the data directory, join the HA cluster, write
//! PostgreSQL's files, bind every listener (so a taken port fails at once), start
//! PostgreSQL, bootstrap the tenant registry, start the supervised tasks, then serve
//! reloads until a signal. Shutdown: the API, the pooler and the other tasks drain
//! first, PostgreSQL stops last, and the HA loop hands its key over after it.

mod prepare;
mod reload;
mod tasks;

use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::SystemTime;

use anyhow::Context;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use self::prepare::Host;
use self::reload::Reloader;
pub use self::tasks::Restarts;
use self::tasks::Tasks;
use crate::api::{self, ApiState};
use crate::config::Config;
use crate::data_dir::AgentInfo;
use crate::ha::PgTarget;
use crate::metrics::Sources;
use crate::pg::hba;
use crate::pooler::PoolerSetup;
use crate::supervisor::{self, Maintenance, PostgresStatus, PostmasterSpec};
use crate::tenants::Tenants;

/// Runs the agent until a shutdown signal. Errors before PostgreSQL is up are fatal.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    let (reload_tx, mut reload_rx) = mpsc::channel(1);
    crate::shutdown::install(shutdown.clone(), reload_tx.clone())?;

    let host = prepare::prepare_data_dir(&config).await?;
    let ControlFlow::Continue(ha_node) = prepare::join_cluster(&config, &host, &shutdown).await?
    else {
        return Ok(());
    };
    prepare::write_postgres_files(&config, &host).await?;
    let reloader = Reloader::new(&config);
    let routes = Routes::new();
    let listeners = bind_listeners(
        &config,
        &host,
        &reloader,
        &routes,
        ha_node.is_some(),
        &reload_tx,
        &shutdown,
    )
    .await?;
    let postgres = start_postgres(&config, &host, ha_node.as_deref()).await?;
    let tenants = match bootstrap_tenants(&config, &host, &listeners).await {
        Ok(tenants) => tenants,
        Err(e) => {
            postgres.stop().await;
            return Err(e);
        }
    };
    let running = start_tasks(
        &config, &host, &reloader, routes, listeners, &postgres, tenants, ha_node, &shutdown,
    )
    .await?;

    let result = loop {
        tokio::select! {
            Some(()) = reload_rx.recv() => reloader.reload(&host).await,
            done = postgres.ended() => break done,
            () = shutdown.cancelled() => break Ok(()),
        }
    };
    shut_down(&shutdown, running, postgres, &host).await;
    result
}

/// Where the HA loop tells the poolers the primary and the replicas are; until it
/// does, they wait (`Unknown`).
struct Routes {
    primary: watch::Sender<Vec<PgTarget>>,
    replicas: watch::Sender<Vec<PgTarget>>,
}

impl Routes {
    fn new() -> Routes {
        Routes {
            primary: watch::channel(vec![PgTarget::Unknown]).0,
            replicas: watch::channel(vec![PgTarget::Unknown]).0,
        }
    }
}

/// Every socket the agent serves, bound before PostgreSQL starts.
struct Listeners {
    api: std::net::TcpListener,
    api_tls: Option<tokio_rustls::TlsAcceptor>,
    /// The API's certificate, which HA member records pin.
    api_cert: Option<Vec<u8>>,
    metrics: Option<std::net::TcpListener>,
    pooler: Option<crate::pooler::Listening>,
    read_only_pooler: Option<crate::pooler::Listening>,
    /// The poolers' cache of role verifiers, which the tenant service evicts from.
    verifiers: Arc<crate::pooler::auth::VerifierCache>,
}

#[allow(clippy::too_many_arguments)]
async fn bind_listeners(
    config: &Config,
    host: &Host,
    reloader: &Reloader,
    routes: &Routes,
    ha: bool,
    reload_tx: &mpsc::Sender<()>,
    shutdown: &CancellationToken,
) -> anyhow::Result<Listeners> {
    let api_tls = api::tls_acceptor(config)?;
    let api_cert = api::served_certificate_der(config)?;
    let api = api::bind(config.api_listen, "api.listen")
        .await?
        .into_std()?;
    let metrics = match config.metrics.listen {
        Some(addr) => Some(api::bind(addr, "metrics.listen").await?.into_std()?),
        None => None,
    };
    let verifiers = Arc::new(crate::pooler::auth::VerifierCache::default());
    let setup = |route: Option<watch::Receiver<Vec<PgTarget>>>, listen_port| PoolerSetup {
        config: reloader.pooler.subscribe(),
        pg_socket_dir: host.data_dir.socket_dir(),
        pg_port: config.postgres.port,
        route,
        listen_port,
        tls_dir: config.data_dir.join("tls"),
        tls_hosts: crate::pooler::tls::certificate_hosts(config),
        reload: reload_tx.clone(),
        agent_shutdown: shutdown.clone(),
        verifiers: verifiers.clone(),
        run_dir: host.data_dir.run(),
    };
    let mut pooler = None;
    let mut read_only_pooler = None;
    if config.pooler.enabled {
        let route = ha.then(|| routes.primary.subscribe());
        pooler = Some(crate::pooler::bind(setup(route, None)).await?);
        if let Some(port) = config.ha.as_ref().and_then(|ha| ha.read_only_port) {
            let route = Some(routes.replicas.subscribe());
            read_only_pooler = Some(crate::pooler::bind(setup(route, Some(port))).await?);
        }
    }
    Ok(Listeners {
        api,
        api_tls,
        api_cert,
        metrics,
        pooler,
        read_only_pooler,
        verifiers,
    })
}

/// PostgreSQL under the supervisor (its own restarts and backoff), on a token of its
/// own: it stops last.
struct Postgres {
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    stop: CancellationToken,
    status: watch::Receiver<PostgresStatus>,
    maintenance: mpsc::Sender<Maintenance>,
}

impl Postgres {
    /// Waits until the supervisor ends on its own (PostgreSQL cannot be kept running).
    async fn ended(&self) -> anyhow::Result<()> {
        let mut status = self.status.clone();
        // The supervisor's status sender lives as long as its task.
        while status.changed().await.is_ok() {}
        Err(anyhow::anyhow!("the PostgreSQL supervisor ended"))
    }

    async fn stop(self) {
        self.stop.cancel();
        match self.task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!("stopping PostgreSQL: {e:#}"),
            Err(e) => tracing::error!("stopping PostgreSQL: the supervisor panicked: {e}"),
        }
    }
}

async fn start_postgres(
    config: &Config,
    host: &Host,
    ha_node: Option<&crate::ha::Node>,
) -> anyhow::Result<Postgres> {
    let pgdata = host.data_dir.pgdata();
    let spec = PostmasterSpec {
        binaries: host.binaries.clone(),
        pgdata: pgdata.clone(),
        socket_dir: host.data_dir.socket_dir(),
        port: config.postgres.port,
        run_as: host.run_as.clone(),
        stop_timeout: config.postgres.stop_timeout,
        options: Vec::new(),
    };
    let (started, status) = match (supervisor::start(&spec).await, ha_node) {
        (Ok(started), _) => started,
        // A replica whose data cannot follow the primary any more: clone it anew, once.
        (Err(e), Some(node)) if crate::ha::replica::is_standby(&pgdata) => {
            tracing::warn!("{e:#}; cloning this replica anew from the primary");
            crate::ha::formation::reclone(node).await?;
            supervisor::start(&spec).await?
        }
        (Err(e), _) => return Err(e),
    };
    let stop = CancellationToken::new();
    let (maintenance, maintenance_rx) = mpsc::channel(1);
    let task = tokio::spawn(supervisor::task_main(
        spec,
        started,
        maintenance_rx,
        stop.clone(),
    ));
    Ok(Postgres {
        task,
        stop,
        status,
        maintenance,
    })
}

/// The tenant service, with the registry made (primary) or read (HA replica).
async fn bootstrap_tenants(
    config: &Config,
    host: &Host,
    listeners: &Listeners,
) -> anyhow::Result<Arc<Tenants>> {
    let data_dir = &host.data_dir;
    let read_only_port = config.ha.as_ref().and_then(|ha| ha.read_only_port);
    let tenants = Arc::new(Tenants {
        pgdata: data_dir.pgdata(),
        socket_dir: data_dir.socket_dir(),
        port: config.postgres.port,
        secrets_dir: data_dir.secrets(),
        url_host: config.tenant_host.clone(),
        url_port: if config.pooler.enabled {
            config.pooler.listen_port
        } else {
            config.postgres.port
        },
        url_replica_port: read_only_port.filter(|_| config.pooler.enabled),
        url_sslmode: crate::tenants::secrets::url_sslmode(config),
        hba_remote: if config.ha.is_some() {
            hba::RemoteTenants::PlainToo
        } else {
            hba::RemoteTenants::TlsOnly
        },
        local_host: prepare::local_host(config, data_dir),
        server_version: host.binaries.version.text.clone(),
        run_as: host.run_as.clone(),
        lock: tokio::sync::Mutex::new(()),
        verifiers: listeners.verifiers.clone(),
    });
    // An HA replica is read-only: what the primary creates reaches it by replication.
    let standby = crate::ha::replica::is_standby(&data_dir.pgdata());
    if standby {
        tenants.bootstrap_replica().await
    } else {
        tenants.bootstrap().await
    }
    .context("bootstrap the tenant registry")?;
    if host.served.preload.contains(&"pg_stat_statements") && !standby {
        if let Err(e) = crate::metrics::prepare(&data_dir.socket_dir(), config.postgres.port).await
        {
            tracing::warn!("pg_stat_statements metrics unavailable: {e:#}");
        }
    }
    Ok(tenants)
}

/// The supervised tasks, in two groups: `front` stops on the shutdown signal (and
/// drains) before PostgreSQL stops; `ha` (the HA loop) hands its key over after.
struct Running {
    front: Tasks,
    ha: Tasks,
}

#[allow(clippy::too_many_arguments)]
async fn start_tasks(
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
        started: SystemTime::now(),
        config: reloader.config.subscribe(),
        pending_restart: reloader.pending_restart.subscribe(),
        task_restarts: restarts,
        postgres: postgres.status.clone(),
        cluster: cluster_rx.clone(),
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
        let requests = Arc::new(tokio::sync::Mutex::new(switchover_rx));
        let stop = shutdown.clone();
        let (fence_node, fence_supervisor) = (node.clone(), postgres.maintenance.clone());
        ha.spawn_with_hook(
            "ha_loop",
            move || {
                let (ha_loop, requests, stop) = (ha_loop.clone(), requests.clone(), stop.clone());
                async move {
                    let mut requests = requests.lock_owned().await;
                    crate::ha::node::task_main(ha_loop, &mut requests, stop).await
                }
            },
            tasks::hook(move || {
                let (node, supervisor) = (fence_node.clone(), fence_supervisor.clone());
                async move { crate::ha::node::fence_without_loop(&node, &supervisor).await }
            }),
        );
    }
    let pooler_handle = listeners.pooler.as_ref().map(|l| l.handle());
    for (listening, names) in [
        (
            listeners.pooler,
            ["pooler", "pooler_maintenance", "pooler_follow_primary"],
        ),
        (
            listeners.read_only_pooler,
            [
                "pooler_read_only",
                "pooler_read_only_maintenance",
                "pooler_read_only_follow_replicas",
            ],
        ),
    ] {
        let Some(listening) = listening else { continue };
        let accepting = crate::pooler::start(listening);
        let handle = accepting.handle();
        front.spawn(
            names[0],
            supervised(shutdown, move |stop| {
                crate::pooler::task_main(accepting.clone(), stop)
            }),
        );
        let maintained = handle.clone();
        front.spawn(
            names[1],
            supervised(shutdown, move |stop| maintained.clone().maintain(stop)),
        );
        if ha_node.is_some() {
            front.spawn(
                names[2],
                supervised(shutdown, move |stop| handle.clone().follow_primary(stop)),
            );
        }
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
        pooler: pooler_handle,
    });
    let api_url = format!(
        "{}://{}",
        config.api.scheme(),
        listeners.api.local_addr().context("read API address")?
    );
    let limits = api::serve::Limits::from_config(&config.api);
    let (api_listener, api_tls, api_limits) = (listeners.api, listeners.api_tls, limits.clone());
    front.spawn(
        "api",
        supervised(shutdown, move |stop| {
            let (state, tls, limits) = (state.clone(), api_tls.clone(), api_limits.clone());
            let listener = tokio_listener(&api_listener);
            async move { api::task_main(listener?, state, tls, limits, stop).await }
        }),
    );
    if let Some(metrics) = listeners.metrics {
        let sources = sources.clone();
        front.spawn(
            "metrics",
            supervised(shutdown, move |stop| {
                let (sources, limits) = (sources.clone(), limits.clone());
                let listener = tokio_listener(&metrics);
                async move { api::metrics_task_main(listener?, sources, limits, stop).await }
            }),
        );
    }
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
        api_cert_file: config.api.cert_file(&config.data_dir),
    })?;
    match &listeners.api_cert {
        Some(der) => tracing::info!(api = %api_url, api_cert_sha256 = %prepare::sha256_hex(der),
            "pgplatform is ready"),
        None => tracing::info!(api = %api_url, "pgplatform is ready"),
    }
    Ok(Running { front, ha })
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

/// The documented order: the API, the pooler and the other tasks drain; PostgreSQL stops;
/// then the HA loop hands the leader key over.
async fn shut_down(
    shutdown: &CancellationToken,
    running: Running,
    postgres: Postgres,
    host: &Host,
) {
    shutdown.cancel();
    running.front.join().await;
    postgres.stop().await;
    running.ha.join().await;
    host.data_dir.remove_agent_info();
    tracing::info!("pgplatform stopped");
}
