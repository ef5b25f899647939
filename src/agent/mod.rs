//! `pgplatform up`: the agent's start-up stages, its life, and its shutdown order.
//!
//! `run` reads top to bottom: prepare the data directory, join the HA cluster, write
//! PostgreSQL's files, bind every listener (so a taken port fails at once), start
//! PostgreSQL, bootstrap the tenant registry (and start tenants' Redis), start the
//! supervised tasks, then serve reloads until a signal. Shutdown: the API, the pooler
//! and the other tasks drain first, tenants' Redis stops, PostgreSQL stops last, and the
//! HA loop hands its key over after it.

mod keeper;
mod notify;
mod prepare;
mod reload;
mod tasks;

use std::ops::ControlFlow;
use std::sync::Arc;

use anyhow::Context;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use self::prepare::Host;
use self::reload::Reloader;
use self::tasks::Running;
use crate::api;
use crate::config::Config;
use crate::pg::hba;
use crate::pooler::PgTarget;
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
    let reloader = Reloader::new(&config, reload_tx.clone());
    let routes = Routes::new();
    let listeners = bind_listeners(
        &config,
        &host,
        &reloader,
        &routes,
        ha_node.is_some(),
        &shutdown,
    )
    .await?;
    let postgres = start_postgres(&config, &host, ha_node.as_deref()).await?;
    let tenants = match bootstrap_tenants(&config, &host).await {
        Ok(tenants) => tenants,
        Err(e) => return Err(postgres.abandon(e).await),
    };
    let redis = tenants.redis.clone();
    let started = tasks::start(
        &config, &host, &reloader, routes, listeners, &postgres, tenants, ha_node, &shutdown,
    )
    .await;
    let running = match started {
        Ok(running) => running,
        Err(e) => {
            shutdown.cancel();
            redis.stop_all().await;
            return Err(postgres.abandon(e).await);
        }
    };

    // Under systemd (Type=notify): READY=1 once /health would answer 200.
    let notifier = notify::Notifier::from_env();
    if let Some(notifier) = notifier.clone() {
        let check = notify::HealthCheck {
            postgres: postgres.status.clone(),
            socket_dir: host.data_dir.socket_dir(),
            port: config.postgres.port,
        };
        tokio::spawn(notify::ready_when_healthy(
            notifier,
            check,
            shutdown.clone(),
        ));
    }

    // Only a signal ends the agent, or PostgreSQL's supervisor failing (its error is
    // then the agent's).
    let supervisor_failed = loop {
        tokio::select! {
            Some(request) = reload_rx.recv() => reloader.answer(&host, request).await,
            () = postgres.ended() => break true,
            () = shutdown.cancelled() => break false,
        }
    };
    if let Some(notifier) = &notifier {
        notifier.send("STOPPING=1");
    }
    let stopped = shut_down(&shutdown, running, &redis, postgres, &host).await;
    match (supervisor_failed, stopped) {
        (true, Err(e)) => Err(e),
        (true, Ok(())) => Err(anyhow::anyhow!("PostgreSQL's supervisor ended")),
        (false, Err(e)) => {
            tracing::error!("stopping PostgreSQL: {e:#}");
            Ok(())
        }
        (false, Ok(())) => Ok(()),
    }
}

/// Where the HA loop tells the poolers the primary and the replicas are; until it
/// does, they wait (`Unknown`).
pub(super) struct Routes {
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
pub(super) struct Listeners {
    api: std::net::TcpListener,
    api_tls: Option<tokio_rustls::TlsAcceptor>,
    /// The API's certificate, which HA member records pin.
    api_cert: Option<Vec<u8>>,
    metrics: Option<std::net::TcpListener>,
    pooler: Option<crate::pooler::Listening>,
    read_only_pooler: Option<crate::pooler::Listening>,
}

#[allow(clippy::too_many_arguments)]
async fn bind_listeners(
    config: &Config,
    host: &Host,
    reloader: &Reloader,
    routes: &Routes,
    ha: bool,
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
    let setup = |route: Option<watch::Receiver<Vec<PgTarget>>>, listen_port| PoolerSetup {
        config: reloader.pooler.subscribe(),
        pg_socket_dir: host.data_dir.socket_dir(),
        pg_port: config.postgres.port,
        route,
        listen_port,
        tls_dir: config.data_dir.join("tls"),
        tls_hosts: crate::pooler::tls::certificate_hosts(config),
        reload: reloader.requests.clone(),
        agent_shutdown: shutdown.clone(),
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
    })
}

/// PostgreSQL under the supervisor (its own restarts and backoff), on a token of its
/// own: it stops last.
pub(super) struct Postgres {
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    stop: CancellationToken,
    status: watch::Receiver<PostgresStatus>,
    maintenance: mpsc::Sender<Maintenance>,
}

impl Postgres {
    /// Waits until the supervisor ends on its own (it failed).
    async fn ended(&self) {
        let mut status = self.status.clone();
        // The supervisor's status sender lives as long as its task.
        while status.changed().await.is_ok() {}
    }

    /// Stops PostgreSQL after a failed start-up stage; that stage's error.
    async fn abandon(self, error: anyhow::Error) -> anyhow::Error {
        if let Err(e) = self.stop().await {
            tracing::error!("stopping PostgreSQL: {e:#}");
        }
        error
    }

    /// Stops PostgreSQL; the supervisor's outcome.
    async fn stop(self) -> anyhow::Result<()> {
        self.stop.cancel();
        match self.task.await {
            Ok(result) => result,
            Err(e) => Err(e).context("the PostgreSQL supervisor panicked"),
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
        (Err(e), Some(node)) if crate::pg::is_standby(&pgdata) => {
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
async fn bootstrap_tenants(config: &Config, host: &Host) -> anyhow::Result<Arc<Tenants>> {
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
        direct_sslmode: crate::tenants::secrets::direct_sslmode(config),
        hba_remote: if config.ha.is_some() {
            hba::RemoteTenants::PlainToo
        } else {
            hba::RemoteTenants::TlsOnly
        },
        local_host: prepare::local_host(config, data_dir),
        server_version: host.binaries.version.text.clone(),
        run_as: host.run_as.clone(),
        redis: Arc::new(crate::redis::Fleet::open(
            &config.redis,
            redis_reach(config)?,
            &config.data_dir,
            host.run_as.clone(),
        )?),
        lock: tokio::sync::Mutex::new(()),
    });
    // An HA replica is read-only: what the primary creates reaches it by replication.
    let standby = crate::pg::is_standby(&data_dir.pgdata());
    if standby {
        tenants.bootstrap_replica().await
    } else {
        tenants.bootstrap().await
    }
    .context("bootstrap the tenant registry")?;
    // Dedicated Redis follows no primary yet: it runs where the registry is written.
    if !standby {
        tenants
            .start_redis_all()
            .await
            .context("start tenants' Redis")?;
    }
    if host.served.preload.contains(&"pg_stat_statements") && !standby {
        if let Err(e) = crate::metrics::prepare(&data_dir.socket_dir(), config.postgres.port).await
        {
            tracing::warn!("pg_stat_statements metrics unavailable: {e:#}");
        }
    }
    Ok(tenants)
}

/// Tenants' Redis is named by its listen address (the tenants' host when that is a
/// wildcard) and, beyond loopback, speaks TLS only, with the pooler's certificate.
fn redis_reach(config: &Config) -> anyhow::Result<crate::redis::Reach> {
    let addr = config.redis.listen_addr;
    Ok(crate::redis::Reach {
        url_host: if addr.is_unspecified() {
            config.tenant_host.clone()
        } else {
            addr.to_string()
        },
        tls_files: if addr.is_loopback() {
            None
        } else {
            Some(crate::pooler::tls::server_files(config)?)
        },
    })
}

/// The documented order: the API, the pooler and the other tasks drain; tenants' Redis
/// and then PostgreSQL stop; then the HA loop hands the leader key over.
async fn shut_down(
    shutdown: &CancellationToken,
    running: Running,
    redis: &crate::redis::Fleet,
    postgres: Postgres,
    host: &Host,
) -> anyhow::Result<()> {
    shutdown.cancel();
    running.front.join().await;
    redis.stop_all().await;
    let stopped = postgres.stop().await;
    running.ha.join().await;
    host.data_dir.remove_agent_info();
    tracing::info!("pgplatform stopped");
    stopped
}
