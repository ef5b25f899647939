//! Backups: the repository (`repo`), continuous WAL archiving (`wal`), base backups
//! (`base`), logical dumps per tenant (`dump`), the catalog of what is stored and what
//! retention keeps (`catalog`, `expire`), restores and point-in-time recovery
//! (`restore`), restore drills (`drill`) and the scheduler (`schedule`).

pub mod base;
pub mod catalog;
pub mod context;
mod counts;
pub mod envelope;
pub mod lock;
pub mod manifest;
pub mod repo;
pub mod restore;
mod tar_stream;
mod untar;
pub mod wal;
pub mod walk;

use anyhow::Context as _;

use crate::config::{Config, RepositoryConfig};
use crate::pg::process::RunAs;

/// A local repository must be writable by PostgreSQL's user, whose archiver pushes WAL.
pub fn prepare_local_repository(config: &Config, run_as: Option<&RunAs>) -> anyhow::Result<()> {
    let RepositoryConfig::Local { path } = &config.backup.repository else {
        return Ok(());
    };
    std::fs::create_dir_all(path)
        .with_context(|| format!("create the backup repository {}", path.display()))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("chmod {}", path.display()))?;
    crate::pg::process::chown_to(path, run_as)
}
pub mod drill;
pub mod dump;
pub mod expire;
pub mod schedule;
pub mod state;
pub mod verify;
