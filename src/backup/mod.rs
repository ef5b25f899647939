//! Backups: the repository (`repo`), continuous WAL archiving (`wal`), base backups
//! (`base`), logical dumps per tenant (`dump`), the catalog of what is stored and what
//! retention keeps (`catalog`, `expire`), restores and point-in-time recovery
//! (`restore`), restore drills (`drill`) and the scheduler (`schedule`).

pub mod base;
pub mod catalog;
pub mod check;
pub mod context;
mod counts;
pub mod coverage;
pub mod envelope;
pub mod key;
pub mod layout;
pub mod lock;
pub mod manifest;
pub mod marks;
pub mod repo;
pub mod restore;
mod tar_stream;
mod unpack;
mod untar;
pub mod wal;
pub mod walk;

use anyhow::Context as _;

use crate::config::{Config, RepositoryConfig};
use crate::run_as::RunAs;

/// Creates the repository key if there is none yet (`key.rs`), and a local repository's
/// directory. PostgreSQL's archiver runs `wal push` as PostgreSQL's user: that user must
/// read the config file, the repository key and S3 credentials, and write a local
/// repository. Checked at `up`, so a mistake stops the start instead of letting WAL pile
/// up.
pub fn prepare_repository(config: &Config, run_as: Option<&RunAs>) -> anyhow::Result<()> {
    let key_file = &config.backup.repository_key_file;
    key::RepositoryKey::create_if_missing(key_file, run_as)?;
    key::RepositoryKey::load(key_file)?;
    if let (true, Some(account)) = (config.backup.archive, run_as) {
        let why = "WAL archiving (`wal push`) reads it";
        crate::data_dir::check_readable(key_file, account, why)?;
        if let Some(file) = &config.source {
            crate::data_dir::check_readable(file, account, why)?;
        }
        if let RepositoryConfig::S3(s3) = &config.backup.repository {
            if let Some(file) = &s3.credentials_file {
                crate::data_dir::check_readable(file, account, why)?;
            }
        }
    }
    let RepositoryConfig::Local { path } = &config.backup.repository else {
        return Ok(());
    };
    std::fs::create_dir_all(path)
        .with_context(|| format!("create the backup repository {}", path.display()))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("chmod {}", path.display()))?;
    // chown_to never follows a link; the operator's path may be one, so resolve it first.
    let path = &path
        .canonicalize()
        .with_context(|| format!("resolve {}", path.display()))?;
    crate::pg::process::chown_to(path, run_as)?;
    match run_as {
        Some(account) => crate::data_dir::check_reachable(path, account),
        None => Ok(()),
    }
}
pub mod drill;
pub mod dump;
pub mod expire;
pub mod schedule;
pub mod state;
pub mod verify;
