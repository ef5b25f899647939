//! Exact row counts of every tenant table at one WAL position, for the manifest and the
//! drill. Each tenant database is briefly locked (SHARE: writers wait, readers do not)
//! just long enough to export a snapshot; the WAL position is read while all locks are
//! held (as a WAL record of our own), so no tenant commit lies between the snapshot and
//! that position. The counting
//! itself runs on the exported snapshot after the locks are gone.

use std::collections::BTreeMap;

use anyhow::Context as _;
use tokio_postgres::Client;

use super::context::Context;
use super::manifest::TenantCounts;

struct Locked {
    name: String,
    holder: Client,
    counter: Client,
    tables: Vec<String>,
    snapshot: Option<String>,
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
        let holder = ctx.superuser(&name).await?;
        let counter = ctx.superuser(&name).await?;
        let tables: Vec<String> = counter
            .query(
                "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c
                   JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND c.relpersistence = 'p'
                    AND n.nspname NOT IN ('pg_catalog', 'information_schema')
                    AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%'
                  ORDER BY 1",
                &[],
            )
            .await?
            .iter()
            .map(|r| r.try_get(0))
            .collect::<Result<_, _>>()?;
        holder
            .batch_execute("SET lock_timeout = '30s'; BEGIN ISOLATION LEVEL REPEATABLE READ")
            .await?;
        if !tables.is_empty() {
            holder
                .batch_execute(&format!("LOCK TABLE {} IN SHARE MODE", tables.join(", ")))
                .await
                .with_context(|| format!("lock the tables of {name} to count them"))?;
        }
        let snapshot: String = holder
            .query_one("SELECT pg_export_snapshot()", &[])
            .await?
            .try_get(0)?;
        locked.push(Locked {
            name,
            holder,
            counter,
            tables,
            snapshot: Some(snapshot),
        });
    }
    // A WAL record marks the position: replay stops right after it (recovery_target_lsn,
    // not inclusive), which needs a record there, not just an insert position.
    let lsn: String = agent
        .query_one(
            "SELECT pg_logical_emit_message(false, 'pgplatform', 'row counts')::text",
            &[],
        )
        .await?
        .try_get(0)?;
    // Every lock goes at once; the counting runs on the imported snapshots afterwards.
    for t in &mut locked {
        let snapshot = t.snapshot.take().unwrap_or_default();
        t.counter
            .batch_execute(&format!(
                "BEGIN ISOLATION LEVEL REPEATABLE READ; SET TRANSACTION SNAPSHOT {}",
                crate::pg::sql::quote_literal(&snapshot)
            ))
            .await?;
    }
    for t in &locked {
        t.holder.batch_execute("COMMIT").await?;
    }
    let mut out = Vec::new();
    for t in locked {
        let mut tables = BTreeMap::new();
        for table in &t.tables {
            let n: i64 = t
                .counter
                .query_one(&format!("SELECT count(*) FROM {table}"), &[])
                .await?
                .try_get(0)?;
            tables.insert(table.clone(), n);
        }
        let size: i64 = t
            .counter
            .query_one("SELECT pg_database_size(current_database())", &[])
            .await?
            .try_get(0)?;
        t.counter.batch_execute("COMMIT").await?;
        out.push(TenantCounts {
            name: t.name,
            size_bytes: size,
            tables,
        });
    }
    Ok((out, lsn))
}
