//! `tenant drop`, and the undo of a create that failed or was interrupted.

use anyhow::Context;
use tokio_postgres::Client;

use super::name::TenantName;
use super::{registry, TenantError, Tenants};
use crate::pg::sql::quote_ident;

impl Tenants {
    /// Drops the tenant; its Redis data is kept aside unless `purge`.
    pub async fn drop_tenant(&self, name: &str, purge: bool) -> Result<(), TenantError> {
        let name = TenantName::parse(name)?;
        let _serialised = self.lock.lock().await;
        let admin = self.admin().await?;
        self.ready_tenant(&admin, &name).await?;
        let postgres_db = self.connect("postgres").await?;
        self.remove_everything(&postgres_db, &admin, name.as_str(), purge)
            .await?;
        tracing::info!(tenant = %name, purge, "tenant dropped");
        Ok(())
    }

    /// Removes whatever exists of tenant `name`: its Redis (stopped; its data moved to
    /// `<data>/redis/dropped/`, or deleted with `purge_redis`), database (its sessions
    /// ended), roles, secrets, registry row, pg_hba lines. Safe to repeat.
    pub(super) async fn remove_everything(
        &self,
        postgres_db: &Client,
        admin: &Client,
        name: &str,
        purge_redis: bool,
    ) -> anyhow::Result<()> {
        let Some(tenant) = registry::get(admin, name).await? else {
            return Ok(());
        };
        registry::set_state(admin, name, "dropping").await?;
        self.redis.stop(name).await;
        if let Some(aside) = self.redis.set_aside(name, purge_redis)? {
            tracing::info!(tenant = %name, "the tenant's Redis data is kept in {}", aside.display());
        }
        let db = quote_ident(name);
        postgres_db
            .batch_execute(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
            .await
            .with_context(|| format!("drop database {name}"))?;
        let roles = tenant
            .readonly_role
            .iter()
            .cloned()
            .chain([crate::pg::tenant_agent_role(name), name.to_owned()]);
        for role in roles {
            let role = role.as_str();
            postgres_db
                .batch_execute(&format!("DROP ROLE IF EXISTS {}", quote_ident(role)))
                .await
                .with_context(|| format!("drop role {role}"))?;
        }
        let dir = self.secrets_of(name);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).with_context(|| format!("remove {}", dir.display()))?;
        }
        registry::delete(admin, name).await?;
        self.sync_hba(admin).await
    }
}
