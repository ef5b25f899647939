//! `pgplatform pooler import-ini FILE`: a pgbouncer.ini as `[pooler]` TOML on stdout
//! (the translation itself is `pgbouncer_ini.rs`, pure).

use std::path::PathBuf;

use anyhow::Context;

#[derive(Debug, clap::Subcommand)]
pub enum PoolerCommand {
    /// Print the `[pooler]` and `[pooler.databases.NAME]` TOML equivalent to a
    /// pgbouncer.ini.
    ///
    /// Settings with PgBouncer's name and meaning here (README, "PgBouncer
    /// compatibility": "same" and "different") become TOML values; every other line
    /// becomes a comment that says why it does not apply (auth_file and auth_query: not
    /// needed, clients log in against PostgreSQL's own verifiers; a database's
    /// host/port: the platform's own PostgreSQL; statement pooling; per-user
    /// settings; …). Defaults that differ (pool_mode, max_client_conn) are written
    /// out, so the pooler behaves as the PgBouncer did. `%include` is not followed.
    ///
    /// Nothing is changed: read the output, then put it in place of pgplatform.toml's
    /// `[pooler]` section and run `pgplatform reload` (keys read only at start, such
    /// as listen_port, wait for a restart). The output is TOML, so there is no --json.
    ///
    /// Example: pgplatform pooler import-ini /etc/pgbouncer/pgbouncer.ini > pooler.toml
    ImportIni(ImportIniArgs),
}

#[derive(Debug, clap::Args)]
pub struct ImportIniArgs {
    /// The pgbouncer.ini to translate.
    file: PathBuf,
}

pub fn run(command: &PoolerCommand) -> anyhow::Result<()> {
    match command {
        PoolerCommand::ImportIni(args) => {
            let text = std::fs::read_to_string(&args.file)
                .with_context(|| format!("read {}", args.file.display()))?;
            super::output::line(super::pgbouncer_ini::translate(&text).trim_end());
            Ok(())
        }
    }
}
