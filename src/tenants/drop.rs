//! `tenant drop`, and the undo of a create that failed or was interrupted.

use anyhow::Context;
use tokio_postgres::Client;

use super::name::TenantName;
use super::{registry, TenantError, Tenants};
use crate::pg::sql::quote_ident;

impl Tenants {
    pub async fn drop_tenant(&self, name: &str) -> Result<(), TenantError> {
        let name = TenantName::parse(name)?;
        let _serialised = self.lock.lock().await;
        let admin = self.admin().await?;
        self.ready_tenant(&admin, &name).await?;
        let postgres_db = self.connect("postgres").await?;
        self.remove_everything(&postgres_db, &admin, name.as_str())
            .await?;
        tracing::info!(tenant = %name, "tenant dropped");
        Ok(())
    }

    /// Removes whatever exists of tenant `name`: database (its sessions ended), roles,
    /// secrets, registry row, pg_hba lines. Safe to repeat.
    pub(super) async fn remove_everything(
        &self,
        postgres_db: &Client,
        admin: &Client,
        name: &str,
    ) -> anyhow::Result<()> {
        let Some(tenant) = registry::get(admin, name).await? else {
            return Ok(());
        };
        registry::set_state(admin, name, "dropping").await?;
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
