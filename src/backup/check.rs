//! `restore --check`: proves a restored directory starts. It is started as a throwaway
//! PostgreSQL on a private socket (the drill's machinery), recovery runs to its target
//! and promotes, the rows of every tenant table are counted (as that tenant, like
//! `counts.rs`), and it is stopped again. The directory stays a promoted cluster.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use serde::Serialize;

use super::context::Context;
use super::drill::{private_spec, wait_until, StopOnDrop};
use crate::supervisor::{self, LogTail};

#[derive(Debug, Serialize)]
pub struct Checked {
    /// From start to the end of recovery (promotion).
    pub recovery_seconds: f64,
    pub tenants: Vec<TenantRows>,
}

#[derive(Debug, Serialize)]
pub struct TenantRows {
    pub name: String,
    /// All rows of its tables.
    pub rows: i64,
    pub tables: BTreeMap<String, i64>,
}

pub async fn check(ctx: &Context, dir: &Path) -> anyhow::Result<Checked> {
    let spec = private_spec(ctx, dir);
    let started = Instant::now();
    let tail = LogTail::default();
    let mut child = supervisor::spawn(&spec, &tail)?;
    let mut guard = StopOnDrop(child.id());
    let checked = async {
        wait_until(&spec, &mut child, &tail, "SELECT NOT pg_is_in_recovery()").await?;
        let recovery_seconds = started.elapsed().as_secs_f64();
        let tenants = count_rows(&spec.socket_dir, spec.port).await?;
        anyhow::Ok(Checked {
            recovery_seconds,
            tenants,
        })
    }
    .await;
    supervisor::stop(&spec, &mut child).await;
    guard.0 = None;
    checked
}

async fn count_rows(socket_dir: &Path, port: u16) -> anyhow::Result<Vec<TenantRows>> {
    let agent = crate::pg::connect::superuser(socket_dir, port, crate::pg::AGENT_DATABASE).await?;
    let names: Vec<String> = agent
        .query(
            "SELECT name FROM pgplatform.tenants WHERE state OPERATOR(pg_catalog.=) 'ready' ORDER BY name",
            &[],
        )
        .await?
        .iter()
        .map(|r| r.try_get(0))
        .collect::<Result<_, _>>()?;
    let mut out = Vec::new();
    for name in names {
        crate::tenants::TenantName::parse(&name)
            .map_err(|e| anyhow::anyhow!("tenant {name:?} in the restored registry: {e}"))?;
        // As the tenant: whatever it planted in its database runs with its rights only.
        let client = crate::pg::connect::as_tenant(socket_dir, port, &name, &name).await?;
        let tables = super::counts::plain_tables(&client).await?;
        let counts = super::counts::count_rows(&client, &tables).await?;
        out.push(TenantRows {
            rows: counts.values().sum(),
            name,
            tables: counts,
        });
    }
    Ok(out)
}
