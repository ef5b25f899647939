//! `pgplatform up`: prepare the data directory, start PostgreSQL, bootstrap the tenant
//! registry, serve the API, and shut everything down in order on SIGINT/SIGTERM.

use std::sync::Arc;
use std::time::SystemTime;

use anyhow::Context;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::api::{self, ApiState};
use crate::config::Config;
use crate::data_dir::{AgentInfo, DataDir};
use crate::metrics::Sources;
use crate::pg::bin::Binaries;
use crate::pg::conf::{self, ManagedSettings};
use crate::pg::hba;
use crate::pooler::PoolerSetup;
use crate::run_as::RunAs;
use crate::supervisor::{self, PostmasterSpec};
use crate::tenants::Tenants;

/// Runs the agent until a shutdown signal. Errors before PostgreSQL is up are fatal.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    let (reload_tx, mut reload_rx) = mpsc::channel(1);
    crate::shutdown::install(shutdown.clone(), reload_tx.clone())?;

    let data_dir = DataDir::new(&config.data_dir);
    let run_as = RunAs::resolve(&config.postgres.user)?;
    data_dir.prepare(run_as.as_ref(), config.postgres.port)?;
    let _lock = data_dir.lock()?;
    crate::backup::prepare_repository(&config, run_as.as_ref())?;
    let binaries = Binaries::discover(config.postgres.bin_dir.as_deref()).await?;
    tracing::info!(data_dir = %config.data_dir.display(), bin_dir = %binaries.dir.display(),
        "starting pgplatform {} with PostgreSQL {}", env!("CARGO_PKG_VERSION"), binaries.version.text);

    let pgdata = data_dir.pgdata();
    if pgdata.join("PG_VERSION").exists() {
        check_major(&pgdata, &binaries)?;
    }
    let ha_node = match &config.ha {
        Some(ha) => {
            let node = Arc::new(ha_node(&config, ha, &binaries, &data_dir, run_as.clone()).await?);
            let backups = match crate::backup::context::Context::new(&config).await {
                Ok(ctx) => Some(ctx),
                Err(e) => {
                    tracing::warn!("backup repository unavailable for cloning: {e:#}");
                    None
                }
            };
            if !crate::ha::formation::prepare(&node, backups.as_ref(), &shutdown).await? {
                return Ok(());
            }
            Some(node)
        }
        None => None,
    };
    if !pgdata.join("PG_VERSION").exists() {
        tracing::info!(
            "initialising a new PostgreSQL cluster in {}",
            pgdata.display()
        );
        crate::pg::initdb::initdb(&binaries, &pgdata, run_as.as_ref()).await?;
    }
    let preload: &[&str] = if binaries.has_module("pg_stat_statements") {
        &["pg_stat_statements"]
    } else {
        tracing::warn!(
            "pg_stat_statements is not installed with these binaries; not preloading it"
        );
        &[]
    };
    if !binaries.ssl {
        tracing::warn!(
            "PostgreSQL in {} was built without TLS: it serves none, and other hosts cannot reach it directly (hostssl)",
            binaries.dir.display()
        );
    }
    let served = Served {
        preload,
        ssl: binaries.ssl,
    };
    crate::safe_file::remove_stale_temps(&pgdata);
    write_settings(&config, &data_dir, run_as.as_ref(), served)?;
    write_access_files(&data_dir, run_as.as_ref())?;
    let admin_token = data_dir.admin_token()?;
    let api_tls = api::tls_acceptor(&config)?;
    // What HA member records pin (and the log shows) when the API serves TLS.
    let api_cert = api::served_certificate_der(&config)?;
    if let (Some(node), Some(der)) = (&ha_node, &api_cert) {
        node.peers.set_api_certificate(der);
    }
    let listener = api::bind(config.api_listen, "api.listen").await?;
    let metrics_listener = match config.metrics.listen {
        Some(addr) => Some(api::bind(addr, "metrics.listen").await?),
        None => None,
    };
    let agent_started = SystemTime::now();
    let verifiers = Arc::new(crate::pooler::auth::VerifierCache::default());
    let (pooler_config, pooler_config_rx) = watch::channel(Arc::new(config.pooler.clone()));
    // HA: the loop tells the poolers where the primary and the replicas are; until
    // then they wait.
    let (primary_tx, primary_rx) = watch::channel(vec![crate::ha::PgTarget::Unknown]);
    let primary_rx = ha_node.as_ref().map(|_| primary_rx);
    let (replicas_tx, replicas_rx) = watch::channel(vec![crate::ha::PgTarget::Unknown]);
    // Bound before PostgreSQL starts, so a taken port fails `up` at once.
    let pooler_listening = if config.pooler.enabled {
        let listening = crate::pooler::bind(PoolerSetup {
            config: pooler_config_rx,
            pg_socket_dir: data_dir.socket_dir(),
            pg_port: config.postgres.port,
            route: primary_rx.clone(),
            listen_port: None,
            tls_dir: config.data_dir.join("tls"),
            tls_hosts: crate::pooler::tls::certificate_hosts(&config),
            reload: reload_tx.clone(),
            agent_shutdown: shutdown.clone(),
            verifiers: verifiers.clone(),
            run_dir: data_dir.run(),
        })
        .await?;
        Some(listening)
    } else {
        None
    };
    let read_only_port = config.ha.as_ref().and_then(|ha| ha.read_only_port);
    let read_only_listening = match read_only_port {
        Some(port) if config.pooler.enabled => Some(
            crate::pooler::bind(PoolerSetup {
                config: pooler_config.subscribe(),
                pg_socket_dir: data_dir.socket_dir(),
                pg_port: config.postgres.port,
                route: Some(replicas_rx),
                listen_port: Some(port),
                tls_dir: config.data_dir.join("tls"),
                tls_hosts: crate::pooler::tls::certificate_hosts(&config),
                reload: reload_tx.clone(),
                agent_shutdown: shutdown.clone(),
                verifiers: verifiers.clone(),
                run_dir: data_dir.run(),
            })
            .await?,
        ),
        _ => None,
    };

    let spec = PostmasterSpec {
        binaries: binaries.clone(),
        pgdata: pgdata.clone(),
        socket_dir: data_dir.socket_dir(),
        port: config.postgres.port,
        run_as: run_as.clone(),
        stop_timeout: config.postgres.stop_timeout,
        options: Vec::new(),
    };
    let (started, postgres_status) = match (supervisor::start(&spec).await, &ha_node) {
        (Ok(started), _) => started,
        // A replica whose data cannot follow the primary any more: clone it anew, once.
        (Err(e), Some(node)) if crate::ha::replica::is_standby(&pgdata) => {
            tracing::warn!("{e:#}; cloning this replica anew from the primary");
            crate::ha::formation::reclone(node).await?;
            supervisor::start(&spec).await?
        }
        (Err(e), _) => return Err(e),
    };
    // PostgreSQL stops last, after the pooler has let running transactions finish.
    let stop_postgres = CancellationToken::new();
    let (maintenance_tx, maintenance_rx) = mpsc::channel(1);
    let mut supervisor_task = tokio::spawn(supervisor::task_main(
        spec,
        started,
        maintenance_rx,
        stop_postgres.clone(),
    ));
    let mut supervisor_done = false;
    let mut tasks = JoinSet::new();

    let tenants = Arc::new(Tenants {
        pgdata,
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
        url_sslmode: crate::tenants::secrets::url_sslmode(&config),
        hba_remote: if config.ha.is_some() {
            hba::RemoteTenants::PlainToo
        } else {
            hba::RemoteTenants::TlsOnly
        },
        local_host: local_host(&config, &data_dir),
        server_version: binaries.version.text.clone(),
        run_as: run_as.clone(),
        lock: tokio::sync::Mutex::new(()),
        verifiers,
    });
    // An HA replica is read-only: what the primary creates reaches it by replication.
    let standby = crate::ha::replica::is_standby(&data_dir.pgdata());
    let bootstrap = if standby {
        tenants.bootstrap_replica().await
    } else {
        tenants.bootstrap().await
    };
    if let Err(e) = bootstrap.context("bootstrap the tenant registry") {
        stop_postgres.cancel();
        let _ = supervisor_task.await;
        return Err(e);
    }

    if served.preload.contains(&"pg_stat_statements") && !standby {
        if let Err(e) = crate::metrics::prepare(&data_dir.socket_dir(), config.postgres.port).await
        {
            tracing::warn!("pg_stat_statements metrics unavailable: {e:#}");
        }
    }
    let (cluster_tx, cluster_rx) = watch::channel(crate::ha::ClusterView::default());
    let cluster_rx = ha_node.as_ref().map(|_| cluster_rx);
    let sources = Arc::new(Sources {
        socket_dir: data_dir.socket_dir(),
        postgres_port: config.postgres.port,
        pooler_port: config.pooler.enabled.then_some(config.pooler.listen_port),
        data_dir: config.data_dir.clone(),
        started: agent_started,
        config: config.metrics.clone(),
        postgres: postgres_status.clone(),
        cluster: cluster_rx.clone(),
    });
    let api_ha_node = ha_node.clone();
    // The HA loop stops after PostgreSQL (it hands the leader key over then), so it is
    // not one of `tasks`.
    let (switchover_tx, switchover_rx) = mpsc::channel(1);
    let switchover_tx = ha_node.as_ref().map(|_| switchover_tx);
    let ha_task = ha_node.map(|node| {
        tokio::spawn(crate::ha::node::task_main(
            crate::ha::node::Loop {
                node,
                supervisor: maintenance_tx.clone(),
                postgres: postgres_status.clone(),
                view: cluster_tx,
                primary: primary_tx,
                replicas: replicas_tx,
                tenants: tenants.clone(),
            },
            switchover_rx,
            shutdown.clone(),
        ))
    });
    let state = Arc::new(ApiState {
        tenants,
        postgres: postgres_status,
        admin_token,
        sources: sources.clone(),
        status_limits: config.status.clone(),
        maintenance: maintenance_tx.clone(),
        paused: tokio::sync::Mutex::new(None),
        cluster: cluster_rx,
        ha_node: api_ha_node,
        switchover: switchover_tx,
        pooler: pooler_listening.as_ref().map(|l| l.handle()),
    });
    let api_url = format!(
        "{}://{}",
        config.api.scheme(),
        listener.local_addr().context("read API address")?
    );
    if let Some(listening) = pooler_listening {
        tasks.spawn(crate::pooler::task_main(listening, shutdown.clone()));
    }
    if let Some(listening) = read_only_listening {
        tasks.spawn(crate::pooler::task_main(listening, shutdown.clone()));
    }
    let api_limits = api::serve::Limits::from_config(&config.api);
    tasks.spawn(api::task_main(
        listener,
        state,
        api_tls,
        api_limits.clone(),
        shutdown.clone(),
    ));
    let backup = &config.backup;
    if backup.schedule.is_some() || backup.drill_schedule.is_some() || !backup.dumps.is_empty() {
        tasks.spawn(crate::backup::schedule::task_main(
            config.clone(),
            shutdown.clone(),
        ));
    }
    if let Some(listener) = metrics_listener {
        tasks.spawn(api::metrics_task_main(
            listener,
            sources,
            api_limits,
            shutdown.clone(),
        ));
    }
    data_dir.write_agent_info(&AgentInfo {
        pid: std::process::id(),
        api_url: api_url.clone(),
        api_cert_file: api::served_cert_file(&config),
    })?;
    match &api_cert {
        Some(der) => tracing::info!(api = %api_url, api_cert_sha256 = %sha256_hex(der),
            "pgplatform is ready"),
        None => tracing::info!(api = %api_url, "pgplatform is ready"),
    }

    let mut config = config;
    let mut result = Ok(());
    loop {
        tokio::select! {
            Some(()) = reload_rx.recv() => {
                match reload(&config, &data_dir, run_as.as_ref(), served).await {
                    Ok(new) => {
                        pooler_config.send_replace(Arc::new(new.pooler.clone()));
                        config = new;
                    }
                    Err(e) => tracing::error!("configuration not reloaded, keeping the running one: {e:#}"),
                }
            }
            Some(done) = tasks.join_next() => {
                // Any task ending on its own is the end of the agent.
                result = task_result(done);
                shutdown.cancel();
                break;
            }
            done = &mut supervisor_task => {
                supervisor_done = true;
                result = task_result(done);
                shutdown.cancel();
                break;
            }
            () = shutdown.cancelled() => break,
        }
    }
    while let Some(done) = tasks.join_next().await {
        if let Err(e) = task_result(done) {
            tracing::error!("during shutdown: {e:#}");
        }
    }
    stop_postgres.cancel();
    if !supervisor_done {
        if let Err(e) = task_result(supervisor_task.await) {
            tracing::error!("stopping PostgreSQL: {e:#}");
        }
    }
    if let Some(ha_task) = ha_task {
        if let Err(e) = task_result(ha_task.await) {
            tracing::error!("HA loop: {e:#}");
        }
    }
    data_dir.remove_agent_info();
    tracing::info!("pgplatform stopped");
    result
}

/// Lowercase hex SHA-256, as `openssl x509 -noout -fingerprint -sha256` shows it (without colons).
fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn task_result(done: Result<anyhow::Result<()>, tokio::task::JoinError>) -> anyhow::Result<()> {
    match done {
        Ok(result) => result,
        Err(e) => Err(e).context("agent task panicked"),
    }
}

/// This node as an HA member: its etcd client, the cluster secret (created here only if
/// the cluster is not bootstrapped yet) and its advertised addresses.
async fn ha_node(
    config: &Config,
    ha: &crate::config::HaConfig,
    binaries: &Binaries,
    data_dir: &DataDir,
    run_as: Option<RunAs>,
) -> anyhow::Result<crate::ha::Node> {
    let etcd = crate::ha::etcd::Etcd::secured(
        &ha.etcd,
        (ha.ttl / 4).min(std::time::Duration::from_secs(1)),
        &ha.etcd_security,
    )?;
    let keys = crate::ha::keys::Keys::new(&ha.cluster);
    let create = crate::ha::formation::may_create_secret(&etcd, &keys, &ha.secret_file).await?;
    let secret = crate::ha::secret::ClusterSecret::load(&ha.secret_file, create)?;
    Ok(crate::ha::Node {
        config: ha.clone(),
        etcd,
        keys,
        secret,
        binaries: binaries.clone(),
        pgdata: data_dir.pgdata(),
        socket_dir: data_dir.socket_dir(),
        port: config.postgres.port,
        run_as,
        api_url: format!(
            "{}://{}:{}",
            config.api.scheme(),
            ha.advertise_host,
            config.api_listen.port()
        ),
        pooler_port: config.pooler.enabled.then_some(config.pooler.listen_port),
        failsafe_acked: std::sync::Mutex::new(None),
        peers: crate::ha::peer::Peers::default(),
    })
}

/// A cluster made by another major version cannot be started by these binaries.
fn check_major(pgdata: &std::path::Path, binaries: &Binaries) -> anyhow::Result<()> {
    let text =
        crate::safe_file::read_to_string(&pgdata.join("PG_VERSION")).context("read PG_VERSION")?;
    let major: u32 = text.trim().parse().context("parse PG_VERSION")?;
    if major != binaries.version.major {
        anyhow::bail!(
            "{} holds a PostgreSQL {major} cluster, but the binaries in {} are PostgreSQL {}; \
             set postgres.bin_dir to PostgreSQL {major}'s binaries",
            pgdata.display(),
            binaries.dir.display(),
            binaries.version.text
        );
    }
    Ok(())
}

/// What these PostgreSQL binaries can serve, decided once at start.
#[derive(Clone, Copy)]
struct Served {
    preload: &'static [&'static str],
    ssl: bool,
}

fn write_settings(
    config: &Config,
    data_dir: &DataDir,
    run_as: Option<&RunAs>,
    served: Served,
) -> anyhow::Result<bool> {
    let settings = ManagedSettings {
        listen_addresses: &config.postgres.listen_addresses,
        port: config.postgres.port,
        socket_dir: &data_dir.socket_dir(),
        memory_bytes: conf::machine_memory_bytes(),
        preload: served.preload,
        parameters: &config.postgres.parameters,
        wal_commands: if config.backup.archive {
            Some(crate::backup::context::wal_commands(config)?)
        } else {
            None
        },
        ha: config.ha.is_some(),
        tls_files: served.ssl.then_some((
            crate::pooler::tls::POSTGRES_CERT_FILE,
            crate::pooler::tls::POSTGRES_KEY_FILE,
        )),
    };
    // PostgreSQL serves the pooler's certificate; a reload re-reads it.
    let tls_changed = if served.ssl {
        let (cert, key) = crate::pooler::tls::server_files(config)?;
        crate::pooler::tls::install_for_postgres(&data_dir.pgdata(), (&cert, &key), run_as)?
    } else {
        false
    };
    let conf_changed = conf::write(&data_dir.pgdata(), &conf::render(&settings), run_as)?;
    Ok(tls_changed || conf_changed)
}

/// pg_ident.conf always; pg_hba.conf only when it is not ours yet (first start), since the
/// tenant lines come from the registry once PostgreSQL runs.
fn write_access_files(data_dir: &DataDir, run_as: Option<&RunAs>) -> anyhow::Result<()> {
    let pgdata = data_dir.pgdata();
    conf::write_if_changed(
        &pgdata.join("pg_ident.conf"),
        &conf::render_own_ident(run_as)?,
        run_as,
    )?;
    let hba_path = pgdata.join("pg_hba.conf");
    let ours = crate::safe_file::read_to_string(&hba_path)
        .is_ok_and(|t| t.starts_with("# Generated by pgplatform"));
    if !ours {
        conf::write_if_changed(&hba_path, &hba::render_hba(&[]), run_as)?;
    }
    Ok(())
}

/// Where the agent itself reaches PostgreSQL over TCP to check tenants' logins.
fn local_host(config: &Config, data_dir: &DataDir) -> String {
    let first = config
        .postgres
        .listen_addresses
        .split(',')
        .map(str::trim)
        .next()
        .unwrap_or("");
    match first {
        "" => data_dir.socket_dir().display().to_string(),
        "*" | "0.0.0.0" => "127.0.0.1".to_owned(),
        "::" => "::1".to_owned(),
        host => host.to_owned(),
    }
}

/// SIGHUP: read the file again and apply what can be applied without a restart.
async fn reload(
    old: &Config,
    data_dir: &DataDir,
    run_as: Option<&RunAs>,
    served: Served,
) -> anyhow::Result<Config> {
    let Some(path) = &old.source else {
        anyhow::bail!("the agent runs on built-in defaults; there is no config file to reload");
    };
    let new = Config::load(path)?;
    for (key, changed) in [
        ("data_dir", new.data_dir != old.data_dir),
        (
            "postgres.bin_dir",
            new.postgres.bin_dir != old.postgres.bin_dir,
        ),
        ("postgres.user", new.postgres.user != old.postgres.user),
        ("postgres.port", new.postgres.port != old.postgres.port),
        ("api.listen", new.api_listen != old.api_listen),
        ("api.tls", new.api.tls != old.api.tls),
    ] {
        if changed {
            tracing::warn!("{key} changed; it takes effect when the agent restarts");
        }
    }
    // Keep what needs a restart as it runs; apply everything else.
    let mut effective = new;
    effective.data_dir = old.data_dir.clone();
    effective.postgres.bin_dir = old.postgres.bin_dir.clone();
    effective.postgres.user = old.postgres.user.clone();
    effective.postgres.port = old.postgres.port;
    effective.api_listen = old.api_listen;
    effective.api = old.api.clone();
    if write_settings(&effective, data_dir, run_as, served)? {
        let client =
            crate::pg::connect::superuser(&data_dir.socket_dir(), old.postgres.port, "postgres")
                .await?;
        client
            .execute("SELECT pg_reload_conf()", &[])
            .await
            .context("reload PostgreSQL")?;
        tracing::info!(
            "PostgreSQL settings reloaded; `pgplatform status` lists any that wait for a restart"
        );
    }
    Ok(effective)
}
