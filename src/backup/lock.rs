//! One backup operation of a kind at a time per data directory: a `flock` the kernel
//! releases when the process dies, so a killed backup never blocks the next one.

use std::fs::File;
use std::path::Path;

use anyhow::Context as _;
use nix::fcntl::{Flock, FlockArg};

pub fn acquire(run_dir: &Path, what: &str) -> anyhow::Result<Flock<File>> {
    let path = run_dir.join(format!("{what}.lock"));
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("open {}", path.display()))?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(lock),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
            anyhow::bail!("another {what} is running on this node; try again when it has finished")
        }
        Err((_, errno)) => Err(errno).with_context(|| format!("lock {}", path.display())),
    }
}
