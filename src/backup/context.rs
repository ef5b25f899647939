//! `Context`: everything a backup operation needs, built from the config the same way in
//! the agent (scheduler) and in the CLI (`backup run`, `restore`, `wal push`).

use std::path::PathBuf;

use anyhow::Context as _;

use super::repo::Repo;
use crate::config::{BackupConfig, Config};
use crate::data_dir::DataDir;
use crate::pg::bin::Binaries;
use crate::run_as::RunAs;

pub struct Context {
    pub config: BackupConfig,
    pub repo: Repo,
    pub data_dir: DataDir,
    pub pgdata: PathBuf,
    pub socket_dir: PathBuf,
    pub port: u16,
    /// The OS user PostgreSQL runs as (when we are root).
    pub run_as: Option<RunAs>,
    pub binaries: Binaries,
    /// Arguments that make a `pgplatform` command find this same configuration.
    pub config_args: Vec<String>,
}

impl Context {
    pub async fn new(config: &Config) -> anyhow::Result<Context> {
        let data_dir = DataDir::new(&config.data_dir);
        let binaries = Binaries::discover(config.postgres.bin_dir.as_deref()).await?;
        Ok(Context {
            config: config.backup.clone(),
            repo: Repo::open(&config.backup)?,
            pgdata: data_dir.pgdata(),
            socket_dir: data_dir.socket_dir(),
            data_dir,
            port: config.postgres.port,
            run_as: RunAs::resolve(&config.postgres.user)?,
            binaries,
            config_args: config_args(config),
        })
    }

    pub async fn superuser(&self, dbname: &str) -> anyhow::Result<tokio_postgres::Client> {
        crate::pg::connect::superuser(&self.socket_dir, self.port, dbname).await
    }

    /// Work inside a tenant's database, as the tenant (`connect::as_tenant`).
    pub async fn as_tenant(
        &self,
        tenant: &str,
        dbname: &str,
    ) -> anyhow::Result<tokio_postgres::Client> {
        crate::pg::connect::as_tenant(&self.socket_dir, self.port, tenant, dbname).await
    }

    /// The shell command PostgreSQL runs to fetch a WAL file (`%f`, `%p`).
    pub fn restore_command(&self) -> anyhow::Result<String> {
        Ok(format!(
            "{} wal fetch %f %p",
            self_command(&self.config_args)?
        ))
    }
}

/// PostgreSQL's archive_command and restore_command for this configuration.
pub fn wal_commands(config: &Config) -> anyhow::Result<(String, String)> {
    let me = self_command(&config_args(config))?;
    Ok((format!("{me} wal push %p"), format!("{me} wal fetch %f %p")))
}

/// This executable with the arguments that select this configuration, for /bin/sh.
fn self_command(config_args: &[String]) -> anyhow::Result<String> {
    let exe = std::env::current_exe().context("find the pgplatform executable")?;
    let mut words = vec![shell_quote(&exe.to_string_lossy())];
    words.extend(config_args.iter().map(|a| shell_quote(a)));
    Ok(words.join(" "))
}

/// `--config FILE` when there is one, else `--data-dir DIR` (PostgreSQL runs commands
/// from PGDATA, where the defaults would resolve elsewhere).
fn config_args(config: &Config) -> Vec<String> {
    match &config.source {
        Some(file) => vec!["--config".into(), file.display().to_string()],
        None => vec!["--data-dir".into(), config.data_dir.display().to_string()],
    }
}

/// Single-quotes a word for /bin/sh.
pub fn shell_quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', "'\\''"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn words_are_quoted_for_the_shell() {
        assert_eq!(super::shell_quote("/a b/c"), "'/a b/c'");
        assert_eq!(super::shell_quote("it's"), "'it'\\''s'");
    }
}
