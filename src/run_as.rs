//! The OS account PostgreSQL runs as, and owns PGDATA, when the agent itself is root.
//! A leaf: `safe_file` sets owners with it, `pg::process` spawns as it.

use anyhow::{bail, Context};
use nix::unistd::{Gid, Uid, User};

/// The OS account PostgreSQL runs as.
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
