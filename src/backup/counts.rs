//! Exact row counts of every tenant table at one WAL position, for the manifest and the
//! drill. Each tenant database is briefly locked (SHARE: writers wait, readers do not)
//! just long enough to export a snapshot; the WAL position is read while all locks are
//! held (as a WAL record of our own), so no tenant commit lies between the snapshot and
//! that position. The counting itself runs on the exported snapshot after the locks are
//! gone, under an ACCESS SHARE lock taken before they go, so no table is swapped out.
//!
//! Everything inside a tenant's database runs as that tenant (`connect::as_tenant`):
//! whatever the tenant planted there (functions shadowing catalog names, views in place
//! of tables, triggers) runs with the tenant's own rights, never the superuser's. A
//! tenant that cannot be counted is left out of the manifest, not the whole backup.

use std::collections::BTreeMap;

use anyhow::Context as _;
use tokio_postgres::Client;

use super::context::Context;
use super::manifest::TenantCounts;
use crate::pg::sql::quote_literal;

struct Locked {
    name: String,
    holder: Client,
    counter: Client,
    /// Qualified names, quoted where needed (`public.items`).
    tables: Vec<String>,
    snapshot: String,
}

pub async fn take(ctx: &Context, agent: &Client) -> anyhow::Result<(Vec<TenantCounts>, String)> {
    let names: Vec<String> = agent
        .query(
            "SELECT name FROM pgplatform.tenants WHERE state = 'ready' ORDER BY name",
            &[],
        )
        .await?
        .iter()
        .map(|r| r.try_get(0))
        .collect::<Result<_, _>>()?;
    let mut locked = Vec::new();
    for name in names {
        match lock(ctx, &name).await {
            Ok(l) => locked.push(l),
            Err(e) => tracing::warn!(tenant = %name, "row counts of {name} not taken: {e:#}"),
        }
    }
    // A WAL record marks the position: replay stops right after it (recovery_target_lsn,
    // not inclusive), which needs a record there, not just an insert position.
    let lsn: String = agent
        .query_one(
            "SELECT pg_catalog.pg_logical_emit_message(false, 'pgplatform', 'row counts')::pg_catalog.text",
            &[],
        )
        .await?
        .try_get(0)?;
    // Each counter joins its holder's snapshot and locks the same tables (ACCESS SHARE
    // does not conflict with SHARE) before every holder lets go at once.
    let mut joined = Vec::new();
    for t in locked {
        match join(&t).await {
            Ok(()) => joined.push(t),
            Err(e) => tracing::warn!(tenant = %t.name, "row counts of {} not taken: {e:#}", t.name),
        }
    }
    for t in &joined {
        t.holder.batch_execute("COMMIT").await?;
    }
    let mut out = Vec::new();
    for t in joined {
        match count(&t).await {
            Ok(counts) => out.push(counts),
            Err(e) => tracing::warn!(tenant = %t.name, "row counts of {} not taken: {e:#}", t.name),
        }
    }
    Ok((out, lsn))
}

/// Opens the tenant's two sessions, locks its tables and exports a snapshot.
async fn lock(ctx: &Context, name: &str) -> anyhow::Result<Locked> {
    let holder = ctx.as_tenant(name, name).await?;
    let counter = ctx.as_tenant(name, name).await?;
    holder
        .batch_execute("SET lock_timeout = '30s'; BEGIN ISOLATION LEVEL REPEATABLE READ")
        .await?;
    let tables = plain_tables(&holder).await?;
    if !tables.is_empty() {
        holder
            .batch_execute(&format!("LOCK TABLE {} IN SHARE MODE", tables.join(", ")))
            .await
            .with_context(|| format!("lock the tables of {name} to count them"))?;
    }
    let snapshot: String = holder
        .query_one("SELECT pg_catalog.pg_export_snapshot()", &[])
        .await?
        .try_get(0)?;
    Ok(Locked {
        name: name.to_owned(),
        holder,
        counter,
        tables,
        snapshot,
    })
}

async fn join(t: &Locked) -> anyhow::Result<()> {
    let mut sql = format!(
        "BEGIN ISOLATION LEVEL REPEATABLE READ; SET TRANSACTION SNAPSHOT {};",
        quote_literal(&t.snapshot)
    );
    if !t.tables.is_empty() {
        sql.push_str(&format!(
            "LOCK TABLE {} IN ACCESS SHARE MODE;",
            t.tables.join(", ")
        ));
    }
    t.counter.batch_execute(&sql).await?;
    Ok(())
}

async fn count(t: &Locked) -> anyhow::Result<TenantCounts> {
    let tables = count_rows(&t.counter, &t.tables).await?;
    let size: i64 = t
        .counter
        .query_one(
            "SELECT pg_catalog.pg_database_size(pg_catalog.current_database())",
            &[],
        )
        .await?
        .try_get(0)?;
    t.counter.batch_execute("COMMIT").await?;
    Ok(TenantCounts {
        name: t.name.clone(),
        size_bytes: size,
        tables,
    })
}

/// The plain, permanent tables the session's user can see outside the system schemas, as
/// quoted `schema.table` names.
pub async fn plain_tables(client: &Client) -> anyhow::Result<Vec<String>> {
    Ok(client
        .query(
            "SELECT pg_catalog.format('%I.%I', n.nspname, c.relname)
               FROM pg_catalog.pg_class c
               JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace
              WHERE c.relkind OPERATOR(pg_catalog.=) 'r'
                AND c.relpersistence OPERATOR(pg_catalog.=) 'p'
                AND n.nspname OPERATOR(pg_catalog.<>) ALL (ARRAY['pg_catalog', 'information_schema'])
                AND n.nspname OPERATOR(pg_catalog.!~~) 'pg\\_toast%'
                AND n.nspname OPERATOR(pg_catalog.!~~) 'pg\\_temp%'
              ORDER BY 1",
            &[],
        )
        .await?
        .iter()
        .map(|r| r.try_get(0))
        .collect::<Result<_, _>>()?)
}

/// The rows of each of `tables` (from `plain_tables`), in the session's snapshot.
pub async fn count_rows(
    client: &Client,
    tables: &[String],
) -> anyhow::Result<BTreeMap<String, i64>> {
    let mut counts = BTreeMap::new();
    for table in tables {
        let n: i64 = client
            .query_one(&format!("SELECT pg_catalog.count(*) FROM {table}"), &[])
            .await?
            .try_get(0)?;
        counts.insert(table.clone(), n);
    }
    Ok(counts)
}
