//! The agent's set of tenants' redis-servers: each under its own supervision task, found
//! by tenant name; started, stopped, given a new password, set aside on drop.

use std::collections::BTreeMap;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::sync::{watch, Mutex};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::conf::{self, ServerSpec};
use super::info::{self, Info};
use super::server::{self, Process, State, Status};
use crate::config::RedisConfig;
use crate::run_as::RunAs;

/// How long `start` waits for a new server to answer.
const START_TIMEOUT: Duration = Duration::from_secs(130);

/// One tenant's server as the registry and its secrets describe it.
#[derive(Debug, Clone)]
pub struct TenantServer {
    pub tenant: String,
    pub port: u16,
    pub maxmemory: u64,
    /// SHA-256 (hex) of the tenant user's password.
    pub password_sha256: String,
}

struct Running {
    stop: CancellationToken,
    task: JoinHandle<()>,
    status: watch::Receiver<Status>,
    process: Process,
    port: u16,
    maxmemory: u64,
}

/// A server as `status` and `/metrics` report it: its supervision's state and, when it
/// answered, its INFO.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Observed {
    pub tenant: String,
    pub port: u16,
    pub maxmemory: u64,
    #[serde(flatten)]
    pub status: Status,
    pub info: Option<Info>,
}

/// Where tenants reach their servers, as the agent decides from its config.
#[derive(Debug, Clone)]
pub struct Reach {
    /// The host written into `redis_url`.
    pub url_host: String,
    /// The certificate and key the servers serve (the pooler's) when they listen beyond
    /// loopback, where they speak TLS only.
    pub tls_files: Option<(PathBuf, PathBuf)>,
}

pub struct Fleet {
    config: RedisConfig,
    reach: Reach,
    root: PathBuf,
    run_as: Option<RunAs>,
    admin_password: String,
    servers: Mutex<BTreeMap<String, Running>>,
}

impl Fleet {
    /// Prepares `<data>/redis` and the agent's admin password; starts nothing.
    pub fn open(
        config: &RedisConfig,
        reach: Reach,
        data_dir: &Path,
        run_as: Option<RunAs>,
    ) -> anyhow::Result<Fleet> {
        let root = data_dir.join("redis");
        // redis.conf quotes paths; these characters would need escapes there.
        if root.to_string_lossy().contains(['"', '\\', '\n', '\'']) {
            bail!(
                "data_dir {} has a quote, backslash or newline in its path, which tenants' \
                 Redis cannot use; choose another data_dir",
                data_dir.display()
            );
        }
        make_dir(&root, 0o755, None)?;
        let password_file = root.join("admin_password");
        let admin_password = match crate::safe_file::read_to_string(&password_file) {
            Ok(text) if !text.trim().is_empty() => text.trim().to_owned(),
            Ok(_) => new_admin_password(&password_file)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                new_admin_password(&password_file)?
            }
            Err(e) => return Err(e).with_context(|| format!("read {}", password_file.display())),
        };
        Ok(Fleet {
            config: config.clone(),
            reach,
            root,
            run_as,
            admin_password,
            servers: Mutex::new(BTreeMap::new()),
        })
    }

    pub fn config(&self) -> &RedisConfig {
        &self.config
    }

    pub fn reach(&self) -> &Reach {
        &self.reach
    }

    /// The redis-server binary: `redis.bin`, else the first on PATH.
    pub fn binary(&self) -> Result<PathBuf, String> {
        if let Some(bin) = &self.config.bin {
            return if bin.is_file() {
                Ok(bin.clone())
            } else {
                Err(format!(
                    "redis.bin {} does not exist; install the Debian package {} or correct redis.bin",
                    bin.display(),
                    super::PACKAGE
                ))
            };
        }
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path)
            .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/local/bin")])
            .map(|dir| dir.join("redis-server"))
            .find(|candidate| candidate.is_file())
            .ok_or_else(|| {
                format!(
                    "redis-server is not installed (not found on PATH): install the Debian \
                     package {} (`apt-get install {}`), or set redis.bin",
                    super::PACKAGE,
                    super::PACKAGE
                )
            })
    }

    /// The first port of `redis.port_range` that no tenant holds (`taken`) and that
    /// nothing else listens on.
    pub fn free_port(&self, taken: &[u16]) -> Result<u16, String> {
        let range = &self.config.port_range;
        range
            .clone()
            .filter(|port| !taken.contains(port))
            .find(|port| std::net::TcpListener::bind((self.config.listen_addr, *port)).is_ok())
            .ok_or_else(|| {
                format!(
                    "no free port left in redis.port_range {}-{}: {} are held by tenants' Redis \
                     and the rest by other programs; widen redis.port_range",
                    range.start(),
                    range.end(),
                    taken.iter().filter(|p| range.contains(p)).count()
                )
            })
    }

    /// The server's own directory.
    pub fn dir_of(&self, tenant: &str) -> PathBuf {
        self.root.join(tenant)
    }

    /// Writes the server's redis.conf and starts it under supervision (a running one is
    /// stopped first). With `wait`, returns once it answers, or its start's error (it is
    /// then stopped again); without, supervision keeps trying in the background.
    pub async fn start(&self, server: &TenantServer, wait: bool) -> anyhow::Result<()> {
        self.stop(&server.tenant).await;
        let bin = self.binary().map_err(anyhow::Error::msg)?;
        let dir = self.dir_of(&server.tenant);
        make_dir(&dir, 0o700, self.run_as.as_ref())?;
        let socket = dir.join("redis.sock");
        if socket.as_os_str().len() > 107 {
            bail!(
                "the Redis socket path {} is longer than the 107 bytes Unix allows; choose a \
                 shorter data_dir",
                socket.display()
            );
        }
        self.write_conf(server)?;
        let process = Process {
            tenant: server.tenant.clone(),
            bin,
            dir,
            run_as: self.run_as.clone(),
            admin_password: self.admin_password.clone(),
        };
        let (status_tx, status) = watch::channel(Status {
            state: State::Starting,
            pid: None,
            restarts: 0,
            last_error: None,
        });
        let stop = CancellationToken::new();
        let task = tokio::spawn(server::supervise(process.clone(), stop.clone(), status_tx));
        let mut watching = status.clone();
        self.servers.lock().await.insert(
            server.tenant.clone(),
            Running {
                stop,
                task,
                status,
                process,
                port: server.port,
                maxmemory: server.maxmemory,
            },
        );
        if !wait {
            return Ok(());
        }
        let outcome = tokio::time::timeout(START_TIMEOUT, async {
            loop {
                let now = watching.borrow_and_update().clone();
                match now.state {
                    State::Running => return Ok(()),
                    State::Restarting | State::Stopped => {
                        return Err(anyhow::anyhow!(
                            "{}",
                            now.last_error.unwrap_or_else(|| "it stopped".to_owned())
                        ))
                    }
                    State::Starting => {}
                }
                if watching.changed().await.is_err() {
                    bail!("its supervision ended");
                }
            }
        })
        .await
        .unwrap_or_else(|_| {
            Err(anyhow::anyhow!(
                "it did not answer within {START_TIMEOUT:?}"
            ))
        });
        if let Err(e) = outcome {
            self.stop(&server.tenant).await;
            return Err(e.context(format!("start the Redis of tenant {}", server.tenant)));
        }
        Ok(())
    }

    fn write_conf(&self, server: &TenantServer) -> anyhow::Result<()> {
        let dir = self.dir_of(&server.tenant);
        let spec = ServerSpec {
            tenant: server.tenant.clone(),
            listen_addr: self.config.listen_addr,
            port: server.port,
            maxmemory: server.maxmemory,
            maxmemory_policy: self.config.maxmemory_policy.clone(),
            appendfsync: self.config.appendfsync.clone(),
            tenant_password_sha256: server.password_sha256.clone(),
            admin_password_sha256: conf::password_sha256(&self.admin_password),
            tls: self.reach.tls_files.is_some(),
        };
        if let Some((cert, key)) = &self.reach.tls_files {
            // Copies the server's user can read (the agent's own key is root's, 0600).
            for (from, to) in [(cert, "tls.crt"), (key, "tls.key")] {
                let bytes =
                    std::fs::read(from).with_context(|| format!("read {}", from.display()))?;
                crate::safe_file::replace(&dir.join(to), &bytes, 0o600, self.run_as.as_ref())?;
            }
        }
        // The directory is the server's user's: never written through a name it chose.
        crate::safe_file::replace(
            &dir.join("redis.conf"),
            conf::render(&spec, &dir).as_bytes(),
            0o600,
            self.run_as.as_ref(),
        )
    }

    /// Stops the tenant's server (if it runs) and waits until it has.
    /// One a killed agent left running on the tenant's directory is stopped too (a
    /// tenant dropped or disabled after such a crash).
    pub async fn stop(&self, tenant: &str) {
        let running = self.servers.lock().await.remove(tenant);
        if let Some(running) = running {
            running.stop.cancel();
            if let Err(e) = running.task.await {
                tracing::error!(tenant, "the Redis supervision task failed: {e}");
            }
        }
        if let Err(e) = server::stop_orphan(&self.dir_of(tenant)).await {
            tracing::error!(tenant, "{e:#}");
        }
    }

    /// Stops every server (the agent's shutdown), all at once.
    pub async fn stop_all(&self) {
        let all: Vec<Running> = std::mem::take(&mut *self.servers.lock().await)
            .into_values()
            .collect();
        for running in &all {
            running.stop.cancel();
        }
        for running in all {
            let _ = running.task.await;
        }
    }

    /// The tenant user's new password: in redis.conf for the next start, and on the
    /// running server at once (ACL SETUSER … resetpass), so the old one is refused from
    /// now on.
    pub async fn set_password(&self, server: &TenantServer) -> anyhow::Result<()> {
        self.write_conf(server)?;
        let process = {
            let servers = self.servers.lock().await;
            match servers.get(&server.tenant) {
                Some(running) => running.process.clone(),
                None => return Ok(()),
            }
        };
        let hash = format!("#{}", server.password_sha256);
        let mut connection = process.connect().await?;
        connection
            .command(&["ACL", "SETUSER", &server.tenant, "resetpass", &hash])
            .await?
            .text()
            .context("set the tenant's new Redis password")?;
        Ok(())
    }

    /// A new maxmemory: in redis.conf for the next start, and on the running server at
    /// once (CONFIG SET, which the tenant itself may not run).
    pub async fn set_maxmemory(&self, server: &TenantServer) -> anyhow::Result<()> {
        self.write_conf(server)?;
        let process = {
            let mut servers = self.servers.lock().await;
            match servers.get_mut(&server.tenant) {
                Some(running) => {
                    running.maxmemory = server.maxmemory;
                    running.process.clone()
                }
                None => return Ok(()),
            }
        };
        let bytes = server.maxmemory.to_string();
        let mut connection = process.connect().await?;
        connection
            .command(&["CONFIG", "SET", "maxmemory", &bytes])
            .await?
            .text()
            .context("set the tenant's Redis maxmemory")?;
        Ok(())
    }

    /// Moves a tenant's Redis data out of the way (`dropped/NAME.<unix time>`), or with
    /// `purge` deletes it. Nothing to do when there is none.
    pub fn set_aside(&self, tenant: &str, purge: bool) -> anyhow::Result<Option<PathBuf>> {
        let dir = self.dir_of(tenant);
        if std::fs::symlink_metadata(&dir).is_err() {
            return Ok(None);
        }
        if purge {
            // remove_dir_all never follows a link inside the tree.
            std::fs::remove_dir_all(&dir).with_context(|| format!("remove {}", dir.display()))?;
            return Ok(None);
        }
        let dropped = self.root.join("dropped");
        make_dir(&dropped, 0o755, None)?;
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let aside = dropped.join(format!("{tenant}.{stamp}"));
        std::fs::rename(&dir, &aside)
            .with_context(|| format!("move {} to {}", dir.display(), aside.display()))?;
        Ok(Some(aside))
    }

    /// Every server the agent runs, by tenant, with its INFO when it runs and answers
    /// within `info::TIMEOUT` (all are asked at once).
    pub async fn observe(&self) -> Vec<Observed> {
        let servers: Vec<(String, u16, u64, Status, Process)> = self
            .servers
            .lock()
            .await
            .iter()
            .map(|(tenant, r)| {
                let status = r.status.borrow().clone();
                (
                    tenant.clone(),
                    r.port,
                    r.maxmemory,
                    status,
                    r.process.clone(),
                )
            })
            .collect();
        let asks =
            servers
                .into_iter()
                .map(|(tenant, port, maxmemory, status, process)| async move {
                    let info = match status.state {
                        State::Running => tokio::time::timeout(info::TIMEOUT, read_info(&process))
                            .await
                            .ok()
                            .and_then(Result::ok),
                        _ => None,
                    };
                    Observed {
                        tenant,
                        port,
                        maxmemory,
                        status,
                        info,
                    }
                });
        futures::future::join_all(asks).await
    }
}

async fn read_info(process: &Process) -> anyhow::Result<Info> {
    let mut connection = process.connect().await?;
    let text = connection.command(&["INFO", "everything"]).await?.text()?;
    Ok(info::parse(&text))
}

fn new_admin_password(path: &Path) -> anyhow::Result<String> {
    let password = crate::pg::sql::generate_password();
    crate::safe_file::replace(path, password.as_bytes(), 0o600, None)?;
    Ok(password)
}

/// Creates `dir` if needed and gives it `mode` and `owner` through a descriptor.
fn make_dir(dir: &Path, mode: u32, owner: Option<&RunAs>) -> anyhow::Result<()> {
    std::fs::DirBuilder::new()
        .mode(mode)
        .create(dir)
        .or_else(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                Ok(())
            } else {
                Err(e)
            }
        })
        .with_context(|| format!("create {}", dir.display()))?;
    crate::safe_file::set_dir_owner_mode(dir, mode, owner)
}
