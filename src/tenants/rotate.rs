//! `tenant rotate`: a new password for the owner (or the read-only role). New files are
//! staged first, so a full disk fails before the password changes; the old password stops
//! working for new logins as soon as the ALTER ROLE commits. The owner's rotation also
//! renews the tenant's Redis password (the running server refuses the old one at once).

use anyhow::Context;

use super::name::TenantName;
use super::{registry, secrets, TenantDetails, TenantError, Tenants};
use crate::pg::sql::{generate_password, quote_ident, quote_literal, scram_verifier};

impl Tenants {
    pub async fn rotate(&self, name: &str, readonly: bool) -> Result<TenantDetails, TenantError> {
        let name = TenantName::parse(name)?;
        let _serialised = self.lock.lock().await;
        let admin = self.admin().await?;
        let tenant = self.ready_tenant(&admin, &name).await?;
        let (role, dir) = if readonly {
            let role = tenant.readonly_role.clone().ok_or_else(|| {
                TenantError::InvalidOption(format!(
                    "tenant `{name}` has no read-only role (create it with --with-readonly)"
                ))
            })?;
            (role, self.secrets_of(name.as_str()).join("readonly"))
        } else {
            (name.to_string(), self.secrets_of(name.as_str()))
        };

        let password = generate_password();
        let mut creds = self.credentials(&role, name.as_str(), password);
        // The owner's rotation renews the tenant's Redis password with it.
        let redis = tenant.redis.filter(|_| !readonly);
        if let Some((port, _)) = redis {
            let redis_password = generate_password();
            creds.redis = Some(self.redis_access(name.as_str(), port, redis_password));
        }
        let staged = secrets::stage(&dir, &creds)?;
        let alter = format!(
            "ALTER ROLE {} PASSWORD {}",
            quote_ident(&role),
            quote_literal(&scram_verifier(&creds.password))
        );
        if let Err(e) = admin.batch_execute(&alter).await {
            staged.discard();
            return Err(anyhow::Error::new(e)
                .context(format!("set the new password of {role}"))
                .into());
        }
        staged.commit()?;
        if let Some((port, maxmemory)) = redis {
            self.rotate_redis(name.as_str(), port, maxmemory)
                .await
                .context(
                    "the database password is rotated and the new Redis password written, but \
                     the running Redis still takes the old one until the agent restarts it",
                )?;
        }
        registry::mark_rotated(&admin, name.as_str())
            .await
            .context("password changed and files written, but")?;
        self.verify_login(&creds).await?;
        tracing::info!(tenant = %name, role = %role, "password rotated");
        let tenant = self.ready_tenant(&admin, &name).await?;
        self.details(&tenant, false)
    }
}
