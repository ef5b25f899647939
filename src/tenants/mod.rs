//! Tenants: one database + owner role (+ optional read-only role) + generated secrets per
//! application, recorded in the registry, isolated by privileges and pg_hba.conf.
//!
//! Operations are serialised by one lock; each either completes or is undone, and one
//! interrupted by a crash is undone when the agent starts again (`bootstrap`).

mod create;
mod drop;
mod error;
mod name;
mod redis;
mod registry;
mod rotate;
pub(crate) mod secrets;

use std::path::PathBuf;

use anyhow::Context;
use tokio_postgres::Client;

pub use self::create::CreateRequest;
pub use self::error::TenantError;
pub use self::name::TenantName;
pub use self::redis::RedisEnableRequest;
use self::registry::Tenant;
use self::secrets::Credentials;
use crate::pg::hba::{render_hba_for, render_ident, TenantAccess};
use crate::run_as::RunAs;

/// The tenant service: owned by the agent, used by the API.
pub struct Tenants {
    pub pgdata: PathBuf,
    pub socket_dir: PathBuf,
    pub port: u16,
    pub secrets_dir: PathBuf,
    /// Host, port and sslmode written into tenants' URLs (the pooler's, when it runs).
    pub url_host: String,
    pub url_port: u16,
    /// HA: the pooler's read-only listener, for `replica_url`.
    pub url_replica_port: Option<u16>,
    pub url_sslmode: Option<&'static str>,
    /// The sslmode of `direct_url` (to `port`, PostgreSQL's own).
    pub direct_sslmode: Option<&'static str>,
    /// Whether tenants may reach PostgreSQL from other hosts without TLS (HA only).
    pub hba_remote: crate::pg::hba::RemoteTenants,
    /// Host the agent uses to prove a tenant's login works (TCP, or the socket dir).
    pub local_host: String,
    pub server_version: String,
    pub run_as: Option<RunAs>,
    /// Tenants' redis-servers.
    pub redis: std::sync::Arc<crate::redis::Fleet>,
    pub lock: tokio::sync::Mutex<()>,
}

/// A tenant as `list` reports it.
#[derive(Debug, serde::Serialize)]
pub struct TenantSummary {
    pub name: String,
    pub created_at: String,
    pub size_bytes: i64,
    pub connections: i64,
    pub extensions: Vec<String>,
    pub readonly_role: Option<String>,
    /// The port of the tenant's redis-server, when it has one.
    pub redis_port: Option<i32>,
}

/// A tenant as `show`, `create` and `rotate` report it.
#[derive(Debug, serde::Serialize)]
pub struct TenantDetails {
    pub name: String,
    pub database: String,
    pub owner: String,
    pub database_url: String,
    /// PostgreSQL's own port (session semantics), for migrations and dump tools.
    pub direct_url: String,
    pub readonly_role: Option<String>,
    pub readonly_database_url: Option<String>,
    pub extensions: Vec<String>,
    pub connection_limit: i32,
    pub created_at: String,
    pub rotated_at: Option<String>,
    pub secrets_dir: String,
    /// The tenant's Redis, when it has one (password hidden unless revealed).
    pub redis_url: Option<String>,
    /// Its maxmemory in bytes.
    pub redis_maxmemory: Option<u64>,
}

impl Tenants {
    /// Creates the agent database and registry, undoes operations a crash interrupted,
    /// and brings pg_hba.conf in line with the registry.
    pub async fn bootstrap(&self) -> anyhow::Result<()> {
        let postgres_db = self.connect("postgres").await?;
        registry::ensure_database(&postgres_db).await?;
        let mut admin = self.admin().await?;
        registry::migrate(&mut admin).await?;
        for tenant in registry::all(&admin).await? {
            if tenant.state != "ready" {
                tracing::warn!(tenant = %tenant.name, state = %tenant.state,
                    "finishing an interrupted operation: removing the incomplete tenant");
                // A create never finished holds nothing worth keeping; a drop was asked for.
                let purge_redis = tenant.state == "creating";
                self.remove_everything(&postgres_db, &admin, &tenant.name, purge_redis)
                    .await?;
            }
        }
        self.ensure_agent_roles(&postgres_db, &admin).await?;
        self.sync_hba(&admin).await
    }

    /// Tenants created before agent roles existed get theirs.
    async fn ensure_agent_roles(&self, postgres_db: &Client, admin: &Client) -> anyhow::Result<()> {
        for tenant in registry::all(admin).await? {
            let role = crate::pg::tenant_agent_role(&tenant.name);
            let exists = postgres_db
                .query_opt(
                    "SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = $1",
                    &[&role],
                )
                .await?
                .is_some();
            if !exists {
                postgres_db
                    .batch_execute(&create::agent_role_sql(&tenant.name))
                    .await
                    .with_context(|| format!("create role {role}"))?;
                tracing::info!(tenant = %tenant.name, "created the tenant's agent role {role}");
            }
        }
        Ok(())
    }

    /// On an HA replica (read-only): only render pg_hba.conf from the replicated registry.
    pub async fn bootstrap_replica(&self) -> anyhow::Result<()> {
        let admin = self.admin().await?;
        self.sync_hba(&admin).await
    }

    async fn connect(&self, dbname: &str) -> anyhow::Result<Client> {
        crate::pg::connect::superuser(&self.socket_dir, self.port, dbname).await
    }

    /// The agent's privileged connection to its own database.
    async fn admin(&self) -> anyhow::Result<Client> {
        self.connect(crate::pg::AGENT_DATABASE).await
    }

    fn secrets_of(&self, name: &str) -> PathBuf {
        self.secrets_dir.join(name)
    }

    fn credentials(&self, role: &str, database: &str, password: String) -> Credentials {
        Credentials {
            host: self.url_host.clone(),
            port: self.url_port,
            sslmode: self.url_sslmode,
            replica_port: self.url_replica_port,
            direct_port: self.port,
            direct_sslmode: self.direct_sslmode,
            redis: None,
            database: database.to_owned(),
            user: role.to_owned(),
            password,
        }
    }

    /// Rewrites pg_hba.conf from the registry and reloads PostgreSQL if it changed.
    async fn sync_hba(&self, admin: &Client) -> anyhow::Result<()> {
        let access: Vec<TenantAccess> = registry::all(admin)
            .await?
            .into_iter()
            .filter(|t| t.state != "dropping")
            .map(|t| TenantAccess {
                database: t.name.clone(),
                roles: std::iter::once(t.name).chain(t.readonly_role).collect(),
            })
            .collect();
        let run_as = self.run_as.as_ref();
        let os_users = crate::pg::hba::agent_os_users(run_as)?;
        let os_users: Vec<&str> = os_users.iter().map(String::as_str).collect();
        // pg_ident.conf first: a new tenant's agent role is mapped before pg_hba names it.
        let ident = self.pgdata.join("pg_ident.conf");
        let ident_changed =
            crate::pg::conf::write_if_changed(&ident, &render_ident(&os_users, &access), run_as)?;
        let path = self.pgdata.join("pg_hba.conf");
        let changed = crate::pg::conf::write_if_changed(
            &path,
            &render_hba_for(&access, self.hba_remote),
            run_as,
        )? || ident_changed;
        if changed {
            admin
                .execute("SELECT pg_reload_conf()", &[])
                .await
                .context("reload PostgreSQL")?;
        }
        Ok(())
    }

    pub async fn list(&self) -> Result<Vec<TenantSummary>, TenantError> {
        let admin = self.admin().await?;
        Ok(summaries(&admin).await?)
    }

    pub async fn show(&self, name: &str, reveal: bool) -> Result<TenantDetails, TenantError> {
        let name = TenantName::parse(name)?;
        let admin = self.admin().await?;
        let tenant = self.ready_tenant(&admin, &name).await?;
        self.details(&tenant, reveal)
    }

    async fn ready_tenant(&self, admin: &Client, name: &TenantName) -> Result<Tenant, TenantError> {
        match registry::get(admin, name.as_str()).await? {
            Some(t) if t.state == "ready" => Ok(t),
            _ => Err(TenantError::NotFound(name.to_string())),
        }
    }

    fn details(&self, tenant: &Tenant, reveal: bool) -> Result<TenantDetails, TenantError> {
        let dir = self.secrets_of(&tenant.name);
        let url = |role: &str, dir: PathBuf| -> Result<String, TenantError> {
            let password = secrets::read_password(&dir)?;
            let creds = self.credentials(role, &tenant.name, password);
            Ok(if reveal {
                creds.database_url()
            } else {
                creds.database_url_redacted()
            })
        };
        let direct_url = {
            let password = secrets::read_password(&dir)?;
            let creds = self.credentials(&tenant.name, &tenant.name, password);
            if reveal {
                creds.direct_url()
            } else {
                creds.direct_url_redacted()
            }
        };
        let redis_url = match tenant.redis {
            Some((port, _)) => {
                let password = secrets::read_redis_password(&dir)?;
                let access = self.redis_access(&tenant.name, port, password.trim().to_owned());
                Some(if reveal {
                    access.url()
                } else {
                    access.url_redacted()
                })
            }
            None => None,
        };
        let readonly_database_url = match &tenant.readonly_role {
            Some(role) => Some(url(role, dir.join("readonly"))?),
            None => None,
        };
        Ok(TenantDetails {
            name: tenant.name.clone(),
            database: tenant.name.clone(),
            owner: tenant.name.clone(),
            database_url: url(&tenant.name, dir.clone())?,
            direct_url,
            readonly_role: tenant.readonly_role.clone(),
            readonly_database_url,
            extensions: tenant.extensions.clone(),
            connection_limit: tenant.connection_limit,
            created_at: tenant.created_at.clone(),
            rotated_at: tenant.rotated_at.clone(),
            secrets_dir: dir.display().to_string(),
            redis_url,
            redis_maxmemory: tenant.redis.map(|(_, bytes)| bytes),
        })
    }
}

/// Every ready tenant with its database size and open backends, over a superuser
/// connection to the agent's database (`tenant list`, `/status` and `/metrics` share it).
pub async fn summaries(agent_db: &tokio_postgres::Client) -> anyhow::Result<Vec<TenantSummary>> {
    let rows = agent_db
        .query(
            "SELECT t.name,
                to_char(t.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),
                coalesce(pg_database_size(d.oid), 0),
                (SELECT count(*) FROM pg_stat_activity a WHERE a.datname = t.name),
                t.extensions, t.readonly_role, (to_jsonb(t) ->> 'redis_port')::integer
             FROM pgplatform.tenants t LEFT JOIN pg_database d ON d.datname = t.name
             WHERE t.state = 'ready' ORDER BY t.name",
            &[],
        )
        .await
        .context("list tenants")?;
    rows.iter()
        .map(|r| {
            Ok(TenantSummary {
                name: r.try_get(0)?,
                created_at: r.try_get(1)?,
                size_bytes: r.try_get(2)?,
                connections: r.try_get(3)?,
                extensions: r.try_get(4)?,
                readonly_role: r.try_get(5)?,
                redis_port: r.try_get(6)?,
            })
        })
        .collect::<Result<_, tokio_postgres::Error>>()
        .context("read tenant list")
}
