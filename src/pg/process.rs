//! The one way to build a command for a PostgreSQL binary: clean environment, unprivileged user.

use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use anyhow::Context;
use nix::dir::{Dir, Type};
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::Mode;
use nix::unistd::fchownat;

use crate::run_as::RunAs;

const AWS_VARIABLES: &[&str] = &[
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ENDPOINT",
];

/// A command for `program` with an empty environment (plus a UTF-8 locale), run as `run_as`.
#[allow(
    clippy::disallowed_methods,
    reason = "this is the one sanctioned spawn point"
)]
pub fn command(program: &Path, run_as: Option<&RunAs>) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(program);
    cmd.env_clear()
        .env("LC_ALL", "C.UTF-8")
        .env("PATH", "/usr/bin:/bin")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(false);
    // S3 credentials reach `pgplatform wal push`, which PostgreSQL's archiver runs.
    for key in AWS_VARIABLES {
        if let Some(value) = std::env::var_os(key) {
            cmd.env(key, value);
        }
    }
    if let Some(account) = run_as {
        // std drops supplementary groups when it changes uid as root.
        cmd.uid(account.uid.as_raw()).gid(account.gid.as_raw());
    }
    cmd
}

/// Changes the owner of `path` itself to `run_as` (a symbolic link at `path` is changed,
/// never what it points to); nothing to do when the agent is not root.
pub fn chown_to(path: &Path, run_as: Option<&RunAs>) -> anyhow::Result<()> {
    let Some(account) = run_as else {
        return Ok(());
    };
    std::os::unix::fs::lchown(path, Some(account.uid.as_raw()), Some(account.gid.as_raw()))
        .with_context(|| format!("chown {} to {}", path.display(), account.name))
}

/// `chown -R` without ever following a symbolic link: a restored or cloned data directory
/// must belong to the PostgreSQL user, and that user may plant links in it meanwhile.
/// The walk goes by descriptors (each directory opened `O_NOFOLLOW` relative to its
/// parent, entries changed with `fchownat(AT_SYMLINK_NOFOLLOW)`), so swapping a directory
/// for a link mid-walk leads nowhere. Contents change before their directory, the top
/// last: a tree that root kept 0700 stays closed to that user until the walk is done.
pub fn chown_tree(path: &Path, run_as: Option<&RunAs>) -> anyhow::Result<()> {
    let Some(account) = run_as else {
        return Ok(());
    };
    let meta =
        std::fs::symlink_metadata(path).with_context(|| format!("inspect {}", path.display()))?;
    if meta.is_dir() {
        match Dir::open(path, DIR_FLAGS, Mode::empty()) {
            Ok(dir) => chown_entries(dir, path, account)?,
            // Replaced by a link or a file since we looked: not followed.
            Err(Errno::ELOOP | Errno::ENOTDIR) => {}
            Err(e) => return Err(e).with_context(|| format!("open {}", path.display())),
        }
    }
    chown_to(path, run_as)
}

const DIR_FLAGS: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC);

/// Changes every entry of the open directory `dir` (at `shown`, for messages), each
/// directory's contents before the directory itself.
fn chown_entries(mut dir: Dir, shown: &Path, account: &RunAs) -> anyhow::Result<()> {
    let fd = dir.as_raw_fd();
    let mut entries = Vec::new();
    for entry in dir.iter() {
        let entry = entry.with_context(|| format!("list {}", shown.display()))?;
        let name = entry.file_name();
        if name.to_bytes() != b"." && name.to_bytes() != b".." {
            // An unknown type may be a directory: opening it O_NOFOLLOW|O_DIRECTORY tells.
            let maybe_dir = matches!(entry.file_type(), Some(Type::Directory) | None);
            entries.push((name.to_owned(), maybe_dir));
        }
    }
    for (name, maybe_dir) in entries {
        let shown_entry = shown.join(std::ffi::OsStr::from_bytes(name.to_bytes()));
        if maybe_dir {
            match Dir::openat(Some(fd), name.as_c_str(), DIR_FLAGS, Mode::empty()) {
                Ok(sub) => chown_entries(sub, &shown_entry, account)?,
                Err(Errno::ELOOP | Errno::ENOTDIR) => {}
                Err(e) => return Err(e).with_context(|| format!("open {}", shown_entry.display())),
            }
        }
        fchownat(
            Some(fd),
            name.as_c_str(),
            Some(account.uid),
            Some(account.gid),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .with_context(|| format!("chown {} to {}", shown_entry.display(), account.name))?;
    }
    Ok(())
}
