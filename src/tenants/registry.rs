//! The tenant registry in the agent's own database: schema migrations and row access.

use anyhow::Context;
use tokio_postgres::Client;

use crate::pg::sql::quote_ident;
use crate::pg::AGENT_DATABASE;

/// Migrations in order; each runs once, in a transaction, recorded in `schema_migrations`.
const MIGRATIONS: &[(i32, &str)] = &[
    (1, include_str!("migrations/0001_registry.sql")),
    (2, include_str!("migrations/0002_redis.sql")),
];

/// One tenant as the registry records it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Tenant {
    pub name: String,
    pub state: String,
    pub created_at: String,
    pub rotated_at: Option<String>,
    pub extensions: Vec<String>,
    pub connection_limit: i32,
    pub readonly_role: Option<String>,
    /// The tenant's redis-server: its port and maxmemory (bytes), when it has one.
    pub redis: Option<(u16, u64)>,
}

/// Creates the agent's database if needed (connected to `postgres`).
pub async fn ensure_database(postgres_db: &Client) -> anyhow::Result<()> {
    let exists = postgres_db
        .query_opt(
            "SELECT 1 FROM pg_database WHERE datname = $1",
            &[&AGENT_DATABASE],
        )
        .await
        .context("look for the agent database")?
        .is_some();
    if !exists {
        let db = quote_ident(AGENT_DATABASE);
        // CREATE DATABASE refuses to run in the implicit transaction of a multi-statement
        // string, hence two calls.
        postgres_db
            .batch_execute(&format!("CREATE DATABASE {db}"))
            .await
            .context("create the agent database")?;
        postgres_db
            .batch_execute(&format!("REVOKE ALL ON DATABASE {db} FROM PUBLIC"))
            .await
            .context("restrict the agent database")?;
    }
    Ok(())
}

/// Applies the migrations not yet recorded.
pub async fn migrate(agent_db: &mut Client) -> anyhow::Result<()> {
    agent_db
        .batch_execute(
            "CREATE SCHEMA IF NOT EXISTS pgplatform;
             REVOKE ALL ON SCHEMA pgplatform FROM PUBLIC;
             CREATE TABLE IF NOT EXISTS pgplatform.schema_migrations (
                 version integer PRIMARY KEY,
                 applied_at timestamptz NOT NULL DEFAULT now())",
        )
        .await
        .context("create the migrations table")?;
    for (version, sql) in MIGRATIONS {
        let tx = agent_db.transaction().await.context("begin migration")?;
        let applied = tx
            .query_opt(
                "SELECT 1 FROM pgplatform.schema_migrations WHERE version = $1 FOR UPDATE",
                &[version],
            )
            .await?
            .is_some();
        if !applied {
            tx.batch_execute(sql)
                .await
                .with_context(|| format!("apply registry migration {version}"))?;
            tx.execute(
                "INSERT INTO pgplatform.schema_migrations (version) VALUES ($1)",
                &[version],
            )
            .await?;
            tracing::info!(version, "applied registry migration");
        }
        tx.commit().await.context("commit migration")?;
    }
    Ok(())
}

/// The Redis columns are read through `to_jsonb`, so an HA replica upgraded before its
/// primary (whose registry has no migration 2 yet) reads them as NULL instead of failing.
const COLUMNS: &str = "name, state,
    to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),
    to_char(rotated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),
    extensions, connection_limit, readonly_role,
    (to_jsonb(t) ->> 'redis_port')::integer, (to_jsonb(t) ->> 'redis_maxmemory')::bigint";

fn from_row(row: &tokio_postgres::Row) -> Result<Tenant, tokio_postgres::Error> {
    Ok(Tenant {
        name: row.try_get(0)?,
        state: row.try_get(1)?,
        created_at: row.try_get(2)?,
        rotated_at: row.try_get(3)?,
        extensions: row.try_get(4)?,
        connection_limit: row.try_get(5)?,
        readonly_role: row.try_get(6)?,
        redis: redis_of(row.try_get(7)?, row.try_get(8)?),
    })
}

/// The columns' CHECKs keep both in range and set together.
fn redis_of(port: Option<i32>, maxmemory: Option<i64>) -> Option<(u16, u64)> {
    let port = u16::try_from(port?).ok()?;
    let maxmemory = u64::try_from(maxmemory?).ok()?;
    Some((port, maxmemory))
}

/// Records (or, with `None`, clears) the tenant's Redis port and maxmemory.
pub async fn set_redis(
    agent_db: &Client,
    name: &str,
    redis: Option<(u16, u64)>,
) -> anyhow::Result<()> {
    let port = redis.map(|(port, _)| i32::from(port));
    let maxmemory = redis.and_then(|(_, bytes)| i64::try_from(bytes).ok());
    agent_db
        .execute(
            "UPDATE pgplatform.tenants SET redis_port = $2, redis_maxmemory = $3 WHERE name = $1",
            &[&name, &port, &maxmemory],
        )
        .await
        .context("record the tenant's Redis in the registry")?;
    Ok(())
}

pub async fn all(agent_db: &Client) -> anyhow::Result<Vec<Tenant>> {
    let rows = agent_db
        .query(
            &format!("SELECT {COLUMNS} FROM pgplatform.tenants t ORDER BY name"),
            &[],
        )
        .await
        .context("read the tenant registry")?;
    Ok(rows.iter().map(from_row).collect::<Result<_, _>>()?)
}

pub async fn get(agent_db: &Client, name: &str) -> anyhow::Result<Option<Tenant>> {
    let row = agent_db
        .query_opt(
            &format!("SELECT {COLUMNS} FROM pgplatform.tenants t WHERE name = $1"),
            &[&name],
        )
        .await
        .context("read the tenant registry")?;
    Ok(row.as_ref().map(from_row).transpose()?)
}

/// Records a tenant in state `creating`, before anything else of it exists.
pub async fn insert_creating(
    agent_db: &Client,
    name: &str,
    extensions: &[String],
    connection_limit: i32,
    readonly_role: Option<&str>,
) -> anyhow::Result<()> {
    agent_db
        .execute(
            "INSERT INTO pgplatform.tenants (name, extensions, connection_limit, readonly_role)
             VALUES ($1, $2, $3, $4)",
            &[&name, &extensions, &connection_limit, &readonly_role],
        )
        .await
        .context("record the tenant in the registry")?;
    Ok(())
}

pub async fn set_state(agent_db: &Client, name: &str, state: &str) -> anyhow::Result<()> {
    agent_db
        .execute(
            "UPDATE pgplatform.tenants SET state = $2 WHERE name = $1",
            &[&name, &state],
        )
        .await
        .with_context(|| format!("mark tenant {name} {state}"))?;
    Ok(())
}

pub async fn mark_rotated(agent_db: &Client, name: &str) -> anyhow::Result<()> {
    agent_db
        .execute(
            "UPDATE pgplatform.tenants SET rotated_at = now() WHERE name = $1",
            &[&name],
        )
        .await
        .context("record the rotation")?;
    Ok(())
}

pub async fn delete(agent_db: &Client, name: &str) -> anyhow::Result<()> {
    agent_db
        .execute("DELETE FROM pgplatform.tenants WHERE name = $1", &[&name])
        .await
        .context("remove the tenant from the registry")?;
    Ok(())
}
