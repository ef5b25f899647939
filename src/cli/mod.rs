//! The command line: clap definitions and dispatch. `up` runs the agent; every other
//! command is a client of a running agent's HTTP API.

mod backup;
mod cluster;
mod init;
mod output;
mod pgbouncer_ini;
mod pooler_import;
mod reload;
mod restore;
mod restore_target;
mod status;
mod tenant;
mod wal;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::Config;
use crate::logging::LogFormat;

/// `--version`: the release, the git commit and the build date (set by `build.rs`).
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("PGPLATFORM_GIT_COMMIT"),
    ", built ",
    env!("PGPLATFORM_BUILD_DATE"),
    ")"
);

/// pgplatform: a central PostgreSQL platform for many applications, in one binary.
///
/// Start the agent with `pgplatform up`; it runs PostgreSQL and serves an HTTP API.
/// The other commands talk to the agent of the same data directory (found through the
/// config file), so run them where you ran `up`.
#[derive(Debug, Parser)]
#[command(name = "pgplatform", version = VERSION, about, long_about)]
pub struct Cli {
    /// Config file (default: ./pgplatform.toml if it exists, else built-in defaults).
    #[arg(long, global = true, env = "PGPLATFORM_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,

    /// Data directory, instead of the config file's `data_dir`.
    #[arg(long, global = true, value_name = "DIR")]
    data_dir: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the node agent in the foreground: initialise PostgreSQL on first start,
    /// supervise it, and serve the API. Stops cleanly on SIGINT/SIGTERM; SIGHUP reloads
    /// the config file.
    Up {
        /// Log format: auto = text on a terminal, JSON lines otherwise.
        #[arg(long, value_enum)]
        log_format: Option<LogFormat>,
        /// When no PostgreSQL server binaries are found, install them first (Debian and
        /// Ubuntu, as root: the newest `postgresql-<major>` apt offers, or `[postgres]
        /// version`, and its pgvector package where apt has one). Same as `[postgres]
        /// install = true`.
        #[arg(long)]
        install_postgres: bool,
    },
    /// Write a commented example config file (pgplatform.toml) into DIR.
    Init(init::InitArgs),
    /// Show the agent's and PostgreSQL's state.
    Status(status::StatusArgs),
    /// Make the running agent read its config file again (as SIGHUP does) and say which
    /// keys it applied live and which wait for a restart. A file with an error changes
    /// nothing: the command fails and names the key.
    Reload(reload::ReloadArgs),
    /// Create, list, show, rotate and drop tenants (one database + role + secrets each).
    #[command(subcommand)]
    Tenant(tenant::TenantCommand),
    /// Base backups to the repository: run, list, verify, drill, expire, dump.
    #[command(subcommand)]
    Backup(backup::BackupCommand),
    /// Restore a data directory to a point in time from the repository.
    Restore(restore::RestoreArgs),
    /// The HA cluster: status (members, roles, lag, failover candidates), pause, resume.
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
    /// Planned switchover: the primary hands over to a replica (default: the most
    /// advanced); clients of every node's pooler wait instead of failing.
    Switchover(cluster::SwitchoverArgs),
    /// Promote the named replica when no primary runs (ignores `cluster pause` and the
    /// lag limit: the operator decides).
    Failover(cluster::FailoverArgs),
    /// WAL archiving commands that PostgreSQL runs (archive_command, restore_command).
    #[command(subcommand)]
    Wal(wal::WalCommand),
    /// The built-in pooler: import-ini translates a pgbouncer.ini into `[pooler]` TOML.
    #[command(subcommand)]
    Pooler(pooler_import::PoolerCommand),
}

/// Runs the CLI and turns any error into a message on stderr and exit status 1.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.is::<Logged>() || e.is::<wal::QuietFailure>() => ExitCode::FAILURE,
        Err(e) if e.is::<backup::CheckFailed>() => ExitCode::FAILURE,
        Err(e) if e.is::<wal::StopRecovery>() => {
            output::error(&e);
            ExitCode::from(255)
        }
        Err(e) => {
            output::error(&e);
            ExitCode::FAILURE
        }
    }
}

/// An error `up` already reported through its logger (JSON lines stay JSON).
#[derive(Debug, thiserror::Error)]
#[error("reported in the log")]
struct Logged;

fn run(cli: Cli) -> anyhow::Result<()> {
    if let Command::Init(args) = &cli.command {
        return init::run(args);
    }
    // Needs neither a config file nor an agent.
    if let Command::Pooler(command) = &cli.command {
        return pooler_import::run(command);
    }
    let config = Config::discover(cli.config.as_deref(), cli.data_dir.as_deref())?;
    // One thread runs on tokio's current-thread scheduler: the multi-thread one keeps
    // per-wake-up statistics (two clock reads and a `powf`) and work-stealing state that
    // a single worker never uses, about 5% of the pooler's user time (README, Performance).
    let mut builder = if config.pooler.worker_threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(config.pooler.worker_threads);
        builder
    };
    let runtime = builder.enable_all().build()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Up {
                log_format,
                install_postgres,
            } => {
                crate::logging::init(log_format.unwrap_or(config.log_format));
                if install_postgres || config.postgres.install {
                    let version = config.postgres.install_version;
                    let bin_dir = config.postgres.bin_dir.as_deref();
                    if let Err(e) = crate::pg::install::ensure(bin_dir, version).await {
                        tracing::error!("error: {e:#}");
                        return Err(anyhow::Error::new(Logged));
                    }
                }
                crate::agent::run(config).await.map_err(|e| {
                    tracing::error!("error: {e:#}");
                    anyhow::Error::new(Logged)
                })
            }
            Command::Init(_) | Command::Pooler(_) => Ok(()),
            Command::Status(args) => status::run(&config, &args).await,
            Command::Reload(args) => reload::run(&config, &args).await,
            Command::Tenant(command) => tenant::run(&config, command).await,
            Command::Wal(command) => wal::run(&config, command).await,
            Command::Cluster(command) => cluster::run(&config, command).await,
            Command::Switchover(args) => cluster::switchover(&config, args).await,
            Command::Failover(args) => cluster::failover(&config, args).await,
            Command::Backup(command) => backup::run(&config, command).await,
            Command::Restore(args) => restore::run(&config, args).await,
        }
    })
}
