//! The data directory's layout, its permissions, and the lock that keeps one agent per
//! directory.
//!
//! ```text
//! <data>/pg/            PGDATA, owned by the PostgreSQL user, 0700
//! <data>/secrets/       one 0700 directory of 0600 files per tenant
//! <data>/run/           agent.lock, agent.json, admin_token (0600)
//! <data>/run/socket/    PostgreSQL's unix socket, owned by the PostgreSQL user
//! <data>/redis/         tenants' redis-servers (`redis::Fleet` keeps that layout)
//! ```

use std::fs::File;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use nix::fcntl::{Flock, FlockArg};

use crate::run_as::RunAs;

/// Paths inside one data directory.
#[derive(Debug, Clone)]
pub struct DataDir {
    pub root: PathBuf,
}

/// What a running agent publishes for the CLI in `run/agent.json`.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct AgentInfo {
    pub pid: u32,
    pub api_url: String,
    /// With an `https` API: the certificate it serves, which the CLI pins.
    #[serde(default)]
    pub api_cert_file: Option<PathBuf>,
}

impl DataDir {
    pub fn new(root: &Path) -> DataDir {
        DataDir {
            root: root.to_owned(),
        }
    }
    pub fn pgdata(&self) -> PathBuf {
        self.root.join("pg")
    }
    pub fn run(&self) -> PathBuf {
        self.root.join("run")
    }
    pub fn socket_dir(&self) -> PathBuf {
        self.run().join("socket")
    }
    pub fn secrets(&self) -> PathBuf {
        self.root.join("secrets")
    }
    pub fn admin_token_file(&self) -> PathBuf {
        self.run().join("admin_token")
    }
    pub fn agent_info_file(&self) -> PathBuf {
        self.run().join("agent.json")
    }

    /// Creates the directories with their owners and modes; checks the PostgreSQL user can
    /// reach PGDATA and that the socket path fits the kernel's limit.
    pub fn prepare(&self, run_as: Option<&RunAs>, port: u16) -> anyhow::Result<()> {
        // The operator's data_dir may be a link to where the data lives: followed, this once.
        make_operator_dir(&self.root, 0o755)?;
        make_dir(&self.run(), 0o755, None)?;
        make_dir(&self.secrets(), 0o700, None)?;
        make_dir(&self.socket_dir(), 0o755, run_as)?;
        if let Some(account) = run_as {
            check_reachable(&self.root, account)?;
        }
        // sun_path holds 108 bytes including the terminating NUL.
        let socket = self.socket_dir().join(format!(".s.PGSQL.{port}"));
        if socket.as_os_str().len() > 107 {
            bail!(
                "the PostgreSQL socket path {} is longer than the 107 bytes Unix allows; \
                 choose a shorter data_dir",
                socket.display()
            );
        }
        Ok(())
    }

    /// Takes the agent lock, or says which agent holds it. The kernel releases the lock
    /// when the process dies, so a `kill -9`ed agent never leaves a stale lock.
    pub fn lock(&self) -> anyhow::Result<Flock<File>> {
        match try_lock(&self.run().join("agent.lock"))? {
            Some(lock) => Ok(lock),
            None => {
                let holder = self
                    .read_agent_info()
                    .map(|info| format!(" (pid {})", info.pid))
                    .unwrap_or_default();
                bail!(
                    "another pgplatform agent{holder} is already running on {}",
                    self.root.display()
                )
            }
        }
    }

    /// The admin token, generated on first start and kept in a 0600 file.
    pub fn admin_token(&self) -> anyhow::Result<String> {
        let path = self.admin_token_file();
        match std::fs::read_to_string(&path) {
            Ok(token) if !token.trim().is_empty() => return Ok(token.trim().to_owned()),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("read {}", path.display())),
        }
        let token = crate::pg::sql::generate_password();
        crate::safe_file::replace(&path, token.as_bytes(), 0o600, None)?;
        Ok(token)
    }

    pub fn write_agent_info(&self, info: &AgentInfo) -> anyhow::Result<()> {
        let json = serde_json::to_vec_pretty(info).context("encode agent.json")?;
        crate::safe_file::replace(&self.agent_info_file(), &json, 0o644, None)
    }

    pub fn read_agent_info(&self) -> anyhow::Result<AgentInfo> {
        let path = self.agent_info_file();
        let text =
            std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("parse {}", path.display()))
    }

    pub fn remove_agent_info(&self) {
        let _ = std::fs::remove_file(self.agent_info_file());
    }
}

/// Creates `dir` if needed and gives it `mode` (and `owner`) through a descriptor, so a
/// link planted at its name is refused rather than followed.
fn make_dir(dir: &Path, mode: u32, owner: Option<&RunAs>) -> anyhow::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(dir)
        .with_context(|| format!("create {}", dir.display()))?;
    crate::safe_file::set_dir_owner_mode(dir, mode, owner)
}

/// `make_dir` for a path the operator chose, which may be a link.
fn make_operator_dir(dir: &Path, mode: u32) -> anyhow::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(dir)
        .with_context(|| format!("create {}", dir.display()))?;
    let resolved = dir
        .canonicalize()
        .with_context(|| format!("resolve {}", dir.display()))?;
    crate::safe_file::set_dir_owner_mode(&resolved, mode, None)
}

/// PostgreSQL (as `account`) must be able to walk from `/` to the data directory; a 0700
/// home directory on the way is the usual reason initdb fails with "permission denied".
pub fn check_reachable(dir: &Path, account: &RunAs) -> anyhow::Result<()> {
    for ancestor in dir.ancestors() {
        let meta = std::fs::metadata(ancestor)
            .with_context(|| format!("inspect {}", ancestor.display()))?;
        let mode = meta.mode();
        let can_enter = if meta.uid() == account.uid.as_raw() {
            mode & 0o100 != 0
        } else if meta.gid() == account.gid.as_raw() {
            mode & 0o010 != 0
        } else {
            mode & 0o001 != 0
        };
        if !can_enter {
            bail!(
                "PostgreSQL runs as OS user `{}`, which cannot enter {} (mode {:o}); \
                 allow it (`chmod o+x {}`) or put data_dir somewhere it can reach",
                account.name,
                ancestor.display(),
                mode & 0o7777,
                ancestor.display()
            );
        }
    }
    Ok(())
}

/// `account` must be able to read `file` (PostgreSQL's archiver runs `wal push` as it,
/// which reads the config file and the S3 credentials).
pub fn check_readable(file: &Path, account: &RunAs, why: &str) -> anyhow::Result<()> {
    if let Some(dir) = file.parent() {
        check_reachable(dir, account)?;
    }
    let meta = std::fs::metadata(file).with_context(|| format!("inspect {}", file.display()))?;
    let mode = meta.mode();
    let readable = if meta.uid() == account.uid.as_raw() {
        mode & 0o400 != 0
    } else if meta.gid() == account.gid.as_raw() {
        mode & 0o040 != 0
    } else {
        mode & 0o004 != 0
    };
    if !readable {
        bail!(
            "PostgreSQL runs as OS user `{}`, which cannot read {} (mode {:o}), but {why}; \
             e.g. `chown {} {}`",
            account.name,
            file.display(),
            mode & 0o7777,
            account.name,
            file.display()
        );
    }
    Ok(())
}

/// An exclusive `flock` on `path` (created if needed), or `None` if another process holds
/// it. The kernel drops it when the holder dies.
pub fn try_lock(path: &Path) -> anyhow::Result<Option<Flock<File>>> {
    try_lock_mode(path, true)
}

/// Like `try_lock`, exclusive or shared.
pub fn try_lock_mode(path: &Path, exclusive: bool) -> anyhow::Result<Option<Flock<File>>> {
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .with_context(|| format!("open {}", path.display()))?;
    let mode = if exclusive {
        FlockArg::LockExclusiveNonblock
    } else {
        FlockArg::LockSharedNonblock
    };
    match Flock::lock(file, mode) {
        Ok(lock) => Ok(Some(lock)),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, errno)) => Err(errno).with_context(|| format!("lock {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn data_dir_may_be_a_link_but_its_own_directories_may_not() {
        let base = tempfile::tempdir().unwrap();
        let real = base.path().join("real");
        std::fs::create_dir(&real).unwrap();
        let linked = base.path().join("data");
        std::os::unix::fs::symlink(&real, &linked).unwrap();
        DataDir::new(&linked).prepare(None, 5432).unwrap();
        assert!(real.join("run/socket").is_dir());

        // A link planted at run/socket (to a directory whose mode must not change) is refused.
        let outside = base.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::set_permissions(&outside, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::fs::remove_dir(real.join("run/socket")).unwrap();
        std::os::unix::fs::symlink(&outside, real.join("run/socket")).unwrap();
        let err = DataDir::new(&linked).prepare(None, 5432).unwrap_err();
        assert!(format!("{err:#}").contains("symbolic link"), "{err:#}");
        let mode = std::fs::metadata(&outside).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o700);
    }
}
