//! A tenant's Redis (`crate::redis`, dedicated mode) as part of the tenant: `tenant redis
//! enable|disable`, and what create, rotate, drop and the agent's start need of it. The
//! registry holds its port and maxmemory; the tenant's secrets hold its password.

use super::name::TenantName;
use super::{registry, secrets, TenantDetails, TenantError, Tenants};
use crate::redis::{password_sha256, RedisAccess, TenantServer};

/// What the API receives for `tenant redis enable`.
#[derive(Debug, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct RedisEnableRequest {
    /// In Redis's units; default `[redis] default_maxmemory`.
    #[serde(default)]
    pub maxmemory: Option<String>,
}

/// A Redis about to be created for a tenant: the server and how the tenant reaches it.
pub(super) struct Planned {
    pub server: TenantServer,
    pub access: RedisAccess,
}

impl Tenants {
    /// Starts the Redis of every ready tenant that has one (the agent's start). A server
    /// that fails to start is logged and retried by its supervision.
    pub async fn start_redis_all(&self) -> anyhow::Result<()> {
        let admin = self.admin().await?;
        for tenant in registry::all(&admin).await? {
            let Some((port, maxmemory)) = tenant.redis.filter(|_| tenant.state == "ready") else {
                continue;
            };
            let started = match self.redis_server(&tenant.name, port, maxmemory) {
                Ok(server) => self.redis.start(&server, false).await,
                Err(e) => Err(e),
            };
            if let Err(e) = started {
                tracing::error!(tenant = %tenant.name, "cannot start the tenant's Redis: {e:#}");
            }
        }
        Ok(())
    }

    /// The running server's description, its password hashed from the tenant's secrets.
    fn redis_server(&self, name: &str, port: u16, maxmemory: u64) -> anyhow::Result<TenantServer> {
        let password = secrets::read_redis_password(&self.secrets_of(name))?;
        Ok(TenantServer {
            tenant: name.to_owned(),
            port,
            maxmemory,
            password_sha256: password_sha256(password.trim()),
        })
    }

    pub(super) fn redis_access(&self, name: &str, port: u16, password: String) -> RedisAccess {
        let reach = self.redis.reach();
        RedisAccess {
            host: reach.url_host.clone(),
            port,
            user: name.to_owned(),
            password,
            tls: reach.tls_files.is_some(),
        }
    }

    /// Checks what a new Redis needs (its size, the binary, a free port) and generates
    /// its password. Nothing is changed.
    pub(super) async fn plan_redis(
        &self,
        admin: &tokio_postgres::Client,
        name: &str,
        maxmemory: Option<u64>,
    ) -> Result<Planned, TenantError> {
        let maxmemory = maxmemory.unwrap_or(self.redis.config().default_maxmemory);
        self.redis.binary().map_err(TenantError::Conflict)?;
        let taken: Vec<u16> = registry::all(admin)
            .await?
            .iter()
            .filter_map(|t| t.redis.map(|(port, _)| port))
            .collect();
        let port = self
            .redis
            .free_port(&taken)
            .map_err(TenantError::Conflict)?;
        let password = crate::pg::sql::generate_password();
        Ok(Planned {
            server: TenantServer {
                tenant: name.to_owned(),
                port,
                maxmemory,
                password_sha256: password_sha256(&password),
            },
            access: self.redis_access(name, port, password),
        })
    }

    /// `tenant redis enable`: a Redis for an existing tenant. Its data directory is
    /// reused if a `disable` kept one.
    pub async fn redis_enable(
        &self,
        name: &str,
        maxmemory: Option<&str>,
    ) -> Result<TenantDetails, TenantError> {
        let name = TenantName::parse(name)?;
        let maxmemory = parse_maxmemory(maxmemory)?;
        let _serialised = self.lock.lock().await;
        let admin = self.admin().await?;
        let tenant = self.ready_tenant(&admin, &name).await?;
        if let Some((port, _)) = tenant.redis {
            return Err(TenantError::Conflict(format!(
                "tenant `{name}` already has Redis (port {port})"
            )));
        }
        let planned = self.plan_redis(&admin, name.as_str(), maxmemory).await?;
        let dir = self.secrets_of(name.as_str());
        let mut creds =
            self.credentials(name.as_str(), name.as_str(), secrets::read_password(&dir)?);
        creds.redis = Some(planned.access);
        // The registry is written last: a crash before it leaves no Redis on record
        // (the next enable, or drop, stops a server left running and replaces the files).
        let staged = secrets::stage(&dir, &creds)?;
        let server = &planned.server;
        if let Err(e) = self.redis.start(server, true).await {
            staged.discard();
            return Err(e.into());
        }
        if let Err(e) = staged.commit() {
            self.redis.stop(name.as_str()).await;
            return Err(e.into());
        }
        let recorded =
            registry::set_redis(&admin, name.as_str(), Some((server.port, server.maxmemory))).await;
        if let Err(e) = recorded {
            self.redis.stop(name.as_str()).await;
            creds.redis = None;
            if let Err(undo) = secrets::stage(&dir, &creds).and_then(secrets::Staged::commit) {
                tracing::error!(tenant = %name, "undo of a failed Redis enable: {undo:#}");
            }
            return Err(e.into());
        }
        tracing::info!(tenant = %name, port = server.port, maxmemory = server.maxmemory, "tenant's Redis enabled");
        let tenant = self.ready_tenant(&admin, &name).await?;
        self.details(&tenant, false)
    }

    /// `tenant redis disable`: stops the tenant's Redis and removes its credentials; the
    /// data stays for a later `enable` unless `purge`.
    pub async fn redis_disable(
        &self,
        name: &str,
        purge: bool,
    ) -> Result<TenantDetails, TenantError> {
        let name = TenantName::parse(name)?;
        let _serialised = self.lock.lock().await;
        let admin = self.admin().await?;
        let tenant = self.ready_tenant(&admin, &name).await?;
        if tenant.redis.is_none() {
            return Err(TenantError::Conflict(format!(
                "tenant `{name}` has no Redis"
            )));
        }
        let dir = self.secrets_of(name.as_str());
        let creds = self.credentials(name.as_str(), name.as_str(), secrets::read_password(&dir)?);
        let staged = secrets::stage(&dir, &creds)?;
        self.redis.stop(name.as_str()).await;
        registry::set_redis(&admin, name.as_str(), None).await?;
        staged.commit()?;
        if purge {
            self.redis.set_aside(name.as_str(), true)?;
        }
        tracing::info!(tenant = %name, purge, "tenant's Redis disabled");
        let tenant = self.ready_tenant(&admin, &name).await?;
        self.details(&tenant, false)
    }

    /// `tenant redis resize`: a new maxmemory, applied to the running server at once.
    pub async fn redis_resize(
        &self,
        name: &str,
        maxmemory: Option<&str>,
    ) -> Result<TenantDetails, TenantError> {
        let name = TenantName::parse(name)?;
        let maxmemory = parse_maxmemory(maxmemory)?
            .ok_or_else(|| TenantError::InvalidOption("--maxmemory is required".to_owned()))?;
        let _serialised = self.lock.lock().await;
        let admin = self.admin().await?;
        let tenant = self.ready_tenant(&admin, &name).await?;
        let Some((port, before)) = tenant.redis else {
            return Err(TenantError::Conflict(format!(
                "tenant `{name}` has no Redis"
            )));
        };
        registry::set_redis(&admin, name.as_str(), Some((port, maxmemory))).await?;
        let server = self.redis_server(name.as_str(), port, maxmemory)?;
        if let Err(e) = self.redis.set_maxmemory(&server).await {
            let undo = TenantServer {
                maxmemory: before,
                ..server
            };
            let reverted = registry::set_redis(&admin, name.as_str(), Some((port, before))).await;
            if let Err(undo_error) = reverted.and(self.redis.set_maxmemory(&undo).await) {
                tracing::error!(tenant = %name, "undo of a failed Redis resize: {undo_error:#}");
            }
            return Err(e.into());
        }
        tracing::info!(tenant = %name, maxmemory, "tenant's Redis resized");
        let tenant = self.ready_tenant(&admin, &name).await?;
        self.details(&tenant, false)
    }

    /// Rotation: the new password goes to the server's config and, at once, to the
    /// running server's ACL.
    pub(super) async fn rotate_redis(
        &self,
        name: &str,
        port: u16,
        maxmemory: u64,
    ) -> anyhow::Result<()> {
        let server = self.redis_server(name, port, maxmemory)?;
        self.redis.set_password(&server).await
    }
}

/// `--redis-maxmemory` / `--maxmemory`, in Redis's units.
pub(super) fn parse_maxmemory(text: Option<&str>) -> Result<Option<u64>, TenantError> {
    text.map(|t| {
        crate::config::parse_memory(t)
            .map_err(|e| TenantError::InvalidOption(format!("Redis maxmemory: {e}")))
    })
    .transpose()
}
