//! One backup operation of a kind at a time per data directory: a `flock` the kernel
//! releases when the process dies, so a killed backup never blocks the next one.

use std::fs::File;
use std::path::Path;

use nix::fcntl::Flock;

/// Readers of the repository (restore, verify, drill) hold this shared; expiry holds it
/// exclusively, so nothing is deleted under a reader.
pub fn read_repository(run_dir: &Path) -> anyhow::Result<Flock<File>> {
    crate::data_dir::try_lock_mode(&run_dir.join("repository.lock"), false)?.ok_or_else(|| {
        anyhow::anyhow!("retention is removing backups right now; try again in a moment")
    })
}

pub fn expire_repository(run_dir: &Path) -> anyhow::Result<Flock<File>> {
    crate::data_dir::try_lock_mode(&run_dir.join("repository.lock"), true)?.ok_or_else(|| {
        anyhow::anyhow!(
            "a restore, verify or drill is reading the repository; expiry waits for the next run"
        )
    })
}

/// Base backups and expiry on this node, one at a time. `backup run` holds it from the
/// backup through its retention, so a second `backup run` started meanwhile is refused
/// with this message rather than interleaving with it.
pub struct BackupLock(#[allow(dead_code)] Flock<File>);

pub fn backup(run_dir: &Path) -> anyhow::Result<BackupLock> {
    acquire(run_dir, "backup").map(BackupLock)
}

pub fn acquire(run_dir: &Path, what: &str) -> anyhow::Result<Flock<File>> {
    crate::data_dir::try_lock(&run_dir.join(format!("{what}.lock")))?.ok_or_else(|| {
        anyhow::anyhow!("another {what} is running on this node; try again when it has finished")
    })
}
