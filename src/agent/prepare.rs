//! The agent's start-up stages before PostgreSQL runs: the data directory and its lock,
//! the binaries, this node's place in an HA cluster, and the files PostgreSQL reads.

use std::ops::ControlFlow;
use std::sync::Arc;

use anyhow::Context;
use nix::fcntl::Flock;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::data_dir::DataDir;
use crate::pg::bin::Binaries;
use crate::pg::conf::{self, ManagedSettings};
use crate::pg::hba;
use crate::run_as::RunAs;

/// What every later stage uses: the data directory (locked for this agent), the OS user
/// PostgreSQL runs as, the binaries and what they can serve.
pub(super) struct Host {
    pub data_dir: DataDir,
    pub run_as: Option<RunAs>,
    pub binaries: Binaries,
    pub served: Served,
    /// When this agent started (metrics, status).
    pub started: std::time::SystemTime,
    /// Held until the agent exits: one agent per data directory.
    _lock: Flock<std::fs::File>,
}

/// Lays out and locks the data directory, prepares the backup repository and finds
/// the PostgreSQL binaries (which must match an existing cluster's major version).
pub(super) async fn prepare_data_dir(config: &Config) -> anyhow::Result<Host> {
    let started = std::time::SystemTime::now();
    let data_dir = DataDir::new(&config.data_dir);
    let run_as = RunAs::resolve(&config.postgres.user)?;
    data_dir.prepare(run_as.as_ref(), config.postgres.port)?;
    let lock = data_dir.lock()?;
    crate::backup::prepare_repository(config, run_as.as_ref())?;
    let binaries = Binaries::discover(config.postgres.bin_dir.as_deref()).await?;
    tracing::info!(data_dir = %config.data_dir.display(), bin_dir = %binaries.dir.display(),
        "starting pgplatform {} with PostgreSQL {}", env!("CARGO_PKG_VERSION"), binaries.version.text);
    let pgdata = data_dir.pgdata();
    if pgdata.join("PG_VERSION").exists() {
        check_major(&pgdata, &binaries)?;
    }
    let served = served_by(&binaries);
    Ok(Host {
        data_dir,
        run_as,
        binaries,
        served,
        started,
        _lock: lock,
    })
}

/// HA: this node's member, with its data directory made (bootstrap, clone, or kept as a
/// replica); `None` without `[ha]`. Breaks when shutdown came during formation.
pub(super) async fn join_cluster(
    config: &Config,
    host: &Host,
    shutdown: &CancellationToken,
) -> anyhow::Result<ControlFlow<(), Option<Arc<crate::ha::Node>>>> {
    let Some(ha) = &config.ha else {
        return Ok(ControlFlow::Continue(None));
    };
    let node = Arc::new(
        ha_node(
            config,
            ha,
            &host.binaries,
            &host.data_dir,
            host.run_as.clone(),
        )
        .await?,
    );
    let backups = match crate::backup::context::Context::new(config).await {
        Ok(ctx) => Some(ctx),
        Err(e) => {
            tracing::warn!("backup repository unavailable for cloning: {e:#}");
            None
        }
    };
    if !crate::ha::formation::prepare(&node, backups.as_ref(), shutdown).await? {
        return Ok(ControlFlow::Break(()));
    }
    Ok(ControlFlow::Continue(Some(node)))
}

/// Runs initdb on first start, then writes the managed settings and access files.
pub(super) async fn write_postgres_files(config: &Config, host: &Host) -> anyhow::Result<()> {
    let pgdata = host.data_dir.pgdata();
    if !pgdata.join("PG_VERSION").exists() {
        tracing::info!(
            "initialising a new PostgreSQL cluster in {}",
            pgdata.display()
        );
        crate::pg::initdb::initdb(&host.binaries, &pgdata, host.run_as.as_ref()).await?;
    }
    crate::safe_file::remove_stale_temps(&pgdata);
    write_settings(config, &host.data_dir, host.run_as.as_ref(), host.served)?;
    write_access_files(&host.data_dir, host.run_as.as_ref())?;
    Ok(())
}

fn served_by(binaries: &Binaries) -> Served {
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
    Served {
        preload,
        ssl: binaries.ssl,
    }
}

/// Lowercase hex SHA-256, as `openssl x509 -noout -fingerprint -sha256` shows it (without colons).
pub(super) fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
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
pub(super) struct Served {
    pub preload: &'static [&'static str],
    pub ssl: bool,
}

pub(super) fn write_settings(
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
pub(super) fn local_host(config: &Config, data_dir: &DataDir) -> String {
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
