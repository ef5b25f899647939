//! The canonical initdb: UTF-8, data checksums, the agent's superuser, SCRAM for passwords.

use std::path::Path;

use anyhow::{bail, Context};

use super::bin::Binaries;
use super::process::command;
use crate::run_as::RunAs;

/// Creates a new cluster at `pgdata`, which must not exist yet.
///
/// initdb runs into a sibling temporary directory that is renamed into place only when it
/// succeeded, so an agent killed halfway never leaves a half-initialised `pgdata` behind.
pub async fn initdb(bins: &Binaries, pgdata: &Path, run_as: Option<&RunAs>) -> anyhow::Result<()> {
    let staging = pgdata.with_extension("initdb");
    if staging.exists() {
        std::fs::remove_dir_all(&staging)
            .with_context(|| format!("remove stale {}", staging.display()))?;
    }
    create_private_dir(&staging, run_as)?;
    let output = command(&bins.path("initdb"), run_as)
        .current_dir(&staging)
        .arg("--pgdata")
        .arg(&staging)
        .args([
            &format!("--username={}", super::SUPERUSER),
            "--auth-local=peer",
            "--auth-host=scram-sha-256",
            "--encoding=UTF8",
            "--locale=C.UTF-8",
            "--data-checksums",
        ])
        .output()
        .await
        .context("run initdb")?;
    if !output.status.success() {
        let _ = std::fs::remove_dir_all(&staging);
        bail!(
            "initdb failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    std::fs::rename(&staging, pgdata)
        .with_context(|| format!("move the new cluster into {}", pgdata.display()))?;
    Ok(())
}

/// Creates `dir` with mode 0700, owned by the account PostgreSQL runs as.
pub fn create_private_dir(dir: &Path, run_as: Option<&RunAs>) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("create {}", dir.display()))?;
    crate::safe_file::set_dir_owner_mode(dir, 0o700, run_as)
}
