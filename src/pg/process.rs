//! The one way to build a command for a PostgreSQL binary: clean environment, unprivileged user.

use std::path::Path;

use anyhow::{bail, Context};
use nix::unistd::{Gid, Uid, User};

/// The OS account PostgreSQL runs as when the agent itself is root.
#[derive(Debug, Clone)]
pub struct RunAs {
    pub name: String,
    pub uid: Uid,
    pub gid: Gid,
}

impl RunAs {
    /// `None` when the agent is not root: PostgreSQL then runs as the agent's own user.
    pub fn resolve(user: &str) -> anyhow::Result<Option<RunAs>> {
        if !Uid::effective().is_root() {
            return Ok(None);
        }
        let account = User::from_name(user)
            .with_context(|| format!("look up OS user {user}"))?
            .with_context(|| {
                format!(
                    "the agent runs as root, so PostgreSQL must run as an unprivileged user, \
                     but OS user `{user}` (postgres.user) does not exist; create it \
                     (e.g. `useradd --system {user}`) or set postgres.user"
                )
            })?;
        if account.uid.is_root() {
            bail!("postgres.user `{user}` has uid 0; PostgreSQL refuses to run as root");
        }
        Ok(Some(RunAs {
            name: account.name,
            uid: account.uid,
            gid: account.gid,
        }))
    }
}

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

/// Changes the owner of `path` to `run_as`; nothing to do when the agent is not root.
pub fn chown_to(path: &Path, run_as: Option<&RunAs>) -> anyhow::Result<()> {
    let Some(account) = run_as else {
        return Ok(());
    };
    nix::unistd::chown(path, Some(account.uid), Some(account.gid))
        .with_context(|| format!("chown {} to {}", path.display(), account.name))
}

/// `chown -R`: a restored data directory must belong to the PostgreSQL user.
pub fn chown_tree(path: &Path, run_as: Option<&RunAs>) -> anyhow::Result<()> {
    if run_as.is_none() {
        return Ok(());
    }
    chown_to(path, run_as)?;
    if path.is_dir() && !path.is_symlink() {
        for entry in std::fs::read_dir(path).with_context(|| format!("list {}", path.display()))? {
            chown_tree(
                &entry
                    .with_context(|| format!("list {}", path.display()))?
                    .path(),
                run_as,
            )?;
        }
    }
    Ok(())
}
