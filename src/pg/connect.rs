//! Connections to our PostgreSQL: as the agent's superuser over the unix socket, as a
//! tenant's agent role (work inside a tenant database), or as a tenant over TCP (to prove
//! its credentials work).
//!
//! Every agent connection pins `search_path` in the startup packet, before any query
//! runs: a tenant's `public.format(…)` or `public.=(…)` can never shadow a catalog
//! function in SQL the agent sends (`pg_temp` last, so temporary objects cannot either).

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use tokio_postgres::{Client, NoTls};

/// Startup options of every agent session: catalog first, temporary schema last.
pub const PINNED_OPTIONS: &str = "-c search_path=pg_catalog,pg_temp";

/// Connects as the agent's superuser through the socket in `socket_dir`. Never use it
/// to run work inside a tenant's database that reads what the tenant wrote (functions,
/// views, dumps): see [`as_tenant`].
pub async fn superuser(socket_dir: &Path, port: u16, dbname: &str) -> anyhow::Result<Client> {
    let mut config = tokio_postgres::Config::new();
    config
        .host_path(socket_dir)
        .port(port)
        .user(super::SUPERUSER)
        .dbname(dbname)
        .options(PINNED_OPTIONS)
        .application_name("pgplatform-agent")
        .connect_timeout(Duration::from_secs(5));
    connect(config)
        .await
        .with_context(|| format!("connect to database {dbname} as {}", super::SUPERUSER))
}

/// Connects to `dbname` as tenant `tenant`'s agent role (peer, over the socket) with the
/// tenant's own role set: whatever the tenant's objects run, they run with the tenant's
/// rights, and `RESET ROLE` only falls back to the agent role, itself just a member of
/// the tenant's role.
pub async fn as_tenant(
    socket_dir: &Path,
    port: u16,
    tenant: &str,
    dbname: &str,
) -> anyhow::Result<Client> {
    let agent_role = super::tenant_agent_role(tenant);
    let mut config = tokio_postgres::Config::new();
    config
        .host_path(socket_dir)
        .port(port)
        .user(&agent_role)
        .dbname(dbname)
        .options(tenant_options(tenant))
        .application_name("pgplatform-agent")
        .connect_timeout(Duration::from_secs(5));
    connect(config)
        .await
        .with_context(|| format!("connect to database {dbname} as {agent_role}"))
}

/// The startup options (or `PGOPTIONS`) of a session acting as `tenant`. Tenant names are
/// `[a-z][a-z0-9_]*` (`TenantName`), so they need no quoting here.
pub fn tenant_options(tenant: &str) -> String {
    format!("{PINNED_OPTIONS} -c role={tenant}")
}

/// Connects over TCP with a password, as an application would.
pub async fn with_password(
    host: &str,
    port: u16,
    user: &str,
    password: &str,
    dbname: &str,
) -> Result<Client, tokio_postgres::Error> {
    let mut config = tokio_postgres::Config::new();
    config
        .host(host)
        .port(port)
        .user(user)
        .password(password)
        .dbname(dbname)
        .application_name("pgplatform-agent")
        .connect_timeout(Duration::from_secs(5));
    connect(config).await
}

async fn connect(config: tokio_postgres::Config) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = config.connect(NoTls).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!("agent connection to PostgreSQL ended: {e}");
        }
    });
    Ok(client)
}
