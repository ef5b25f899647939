//! One backup operation of a kind at a time per data directory: a `flock` the kernel
//! releases when the process dies, so a killed backup never blocks the next one.

use std::fs::File;
use std::path::Path;

use nix::fcntl::Flock;

pub fn acquire(run_dir: &Path, what: &str) -> anyhow::Result<Flock<File>> {
    crate::data_dir::try_lock(&run_dir.join(format!("{what}.lock")))?.ok_or_else(|| {
        anyhow::anyhow!("another {what} is running on this node; try again when it has finished")
    })
}
