//! `tenant create`: role(s), database, privileges, extensions, secrets, pg_hba — all or
//! nothing.

use std::time::Duration;

use anyhow::Context;
use tokio_postgres::Client;

use super::name::TenantName;
use super::{registry, secrets, TenantDetails, TenantError, Tenants};
use crate::pg::sql::{generate_password, quote_ident, quote_literal, scram_verifier};

/// What the API receives for `tenant create`.
#[derive(Debug, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRequest {
    pub name: String,
    #[serde(default)]
    pub extensions: Vec<String>,
    /// PostgreSQL's role CONNECTION LIMIT; none when absent.
    #[serde(default)]
    pub connection_limit: Option<i32>,
    #[serde(default)]
    pub with_readonly: bool,
    /// Also start a redis-server of the tenant's own.
    #[serde(default)]
    pub redis: bool,
    /// Its maxmemory in Redis's units (default `[redis] default_maxmemory`).
    #[serde(default)]
    pub redis_maxmemory: Option<String>,
}

impl Tenants {
    pub async fn create(&self, request: CreateRequest) -> Result<TenantDetails, TenantError> {
        let name = TenantName::parse(&request.name)?;
        let extensions = validate_extensions(&request.extensions)?;
        let connection_limit = request.connection_limit.unwrap_or(-1);
        if connection_limit < -1 {
            return Err(TenantError::InvalidOption(format!(
                "connection limit {connection_limit} is invalid: use a number of connections, or -1 for none"
            )));
        }
        let readonly = request.with_readonly.then(|| name.readonly_role());
        let redis_maxmemory = super::redis::parse_maxmemory(request.redis_maxmemory.as_deref())?;
        if redis_maxmemory.is_some() && !request.redis {
            return Err(TenantError::InvalidOption(
                "--redis-maxmemory needs --redis".to_owned(),
            ));
        }

        let _serialised = self.lock.lock().await;
        let postgres_db = self.connect("postgres").await?;
        let admin = self.admin().await?;
        self.check_free(&postgres_db, &admin, &name, readonly.as_deref())
            .await?;
        self.check_extensions(&postgres_db, &extensions).await?;
        let redis = match request.redis {
            true => Some(
                self.plan_redis(&admin, name.as_str(), redis_maxmemory)
                    .await?,
            ),
            false => None,
        };

        registry::insert_creating(
            &admin,
            name.as_str(),
            &extensions,
            connection_limit,
            readonly.as_deref(),
        )
        .await?;
        let built = self
            .build(
                &postgres_db,
                &admin,
                &name,
                &extensions,
                connection_limit,
                readonly.as_deref(),
                redis,
            )
            .await;
        if let Err(e) = built {
            tracing::warn!(tenant = %name, "creating the tenant failed, undoing it: {e:#}");
            if let Err(undo) = self
                .remove_everything(&postgres_db, &admin, name.as_str(), true)
                .await
            {
                tracing::error!(tenant = %name, "undo of a failed create failed; the agent retries on its next start: {undo:#}");
            }
            return Err(e.into());
        }
        tracing::info!(tenant = %name, extensions = ?extensions, readonly = readonly.is_some(),
            redis = request.redis, "tenant created");
        let tenant = self.ready_tenant(&admin, &name).await?;
        self.details(&tenant, false)
    }

    /// The name must be new to the registry and to PostgreSQL (roles and databases).
    async fn check_free(
        &self,
        postgres_db: &Client,
        admin: &Client,
        name: &TenantName,
        readonly: Option<&str>,
    ) -> Result<(), TenantError> {
        if registry::get(admin, name.as_str()).await?.is_some() {
            return Err(TenantError::AlreadyExists(name.to_string()));
        }
        let roles = std::iter::once(name.as_str())
            .chain(readonly)
            .map(str::to_owned)
            .chain([crate::pg::tenant_agent_role(name.as_str())])
            .collect::<Vec<_>>();
        let taken = postgres_db
            .query_opt(
                "SELECT rolname FROM pg_roles WHERE rolname = ANY($1)
                 UNION ALL SELECT datname FROM pg_database WHERE datname = $2 LIMIT 1",
                &[&roles, &name.as_str()],
            )
            .await
            .context("check for existing roles and databases")?;
        if let Some(row) = taken {
            let what: String = row.try_get(0).context("read existing name")?;
            return Err(TenantError::Conflict(format!(
                "a role or database named `{what}` already exists in PostgreSQL and is not a pgplatform tenant; choose another name"
            )));
        }
        let dir = self.secrets_of(name.as_str());
        if dir.exists() {
            tracing::warn!(tenant = %name, "removing stale secrets left without a tenant: {}", dir.display());
            std::fs::remove_dir_all(&dir).with_context(|| format!("remove {}", dir.display()))?;
        }
        if let Some(aside) = self.redis.set_aside(name.as_str(), false)? {
            tracing::warn!(tenant = %name, "moved Redis data left without a tenant to {}", aside.display());
        }
        Ok(())
    }

    async fn check_extensions(
        &self,
        postgres_db: &Client,
        wanted: &[String],
    ) -> Result<(), TenantError> {
        if wanted.is_empty() {
            return Ok(());
        }
        let rows = postgres_db
            .query(
                "SELECT name FROM pg_available_extensions ORDER BY name",
                &[],
            )
            .await
            .context("list available extensions")?;
        let available: Vec<String> = rows.iter().filter_map(|r| r.try_get(0).ok()).collect();
        let missing: Vec<&str> = wanted
            .iter()
            .filter(|w| !available.contains(w))
            .map(String::as_str)
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let major = crate::pg::bin::parse_version(&self.server_version).map_or(0, |v| v.major);
        let packages: Vec<String> = missing
            .iter()
            .filter_map(|name| crate::pg::install::extension_package(name, major))
            .collect();
        let install = if packages.is_empty() {
            String::new()
        } else {
            format!(
                "; install the package {} on the database host (the extension ships there, \
                 not with pgplatform)",
                packages.join(", ")
            )
        };
        Err(TenantError::ExtensionUnavailable {
            install,
            missing: missing.join(", "),
            version: self.server_version.clone(),
            available: available.join(", "),
        })
    }

    #[allow(clippy::too_many_arguments)]
    async fn build(
        &self,
        postgres_db: &Client,
        admin: &Client,
        name: &TenantName,
        extensions: &[String],
        connection_limit: i32,
        readonly: Option<&str>,
        redis: Option<super::redis::Planned>,
    ) -> anyhow::Result<()> {
        let owner = quote_ident(name.as_str());
        let owner_password = generate_password();
        let mut roles_sql = format!(
            "CREATE ROLE {owner} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS \
             CONNECTION LIMIT {connection_limit} PASSWORD {};",
            quote_literal(&scram_verifier(&owner_password))
        );
        roles_sql.push_str(&agent_role_sql(name.as_str()));
        let readonly_password = readonly.map(|_| generate_password());
        if let (Some(role), Some(password)) = (readonly, &readonly_password) {
            let ro = quote_ident(role);
            roles_sql.push_str(&format!(
                "CREATE ROLE {ro} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS \
                 CONNECTION LIMIT {connection_limit} PASSWORD {};
                 ALTER ROLE {ro} SET default_transaction_read_only = on;",
                quote_literal(&scram_verifier(password))
            ));
        }
        postgres_db
            .batch_execute(&format!("BEGIN; {roles_sql} COMMIT;"))
            .await
            .context("create the tenant's roles")?;
        postgres_db
            .batch_execute(&format!(
                "CREATE DATABASE {owner} OWNER {owner} ENCODING 'UTF8'"
            ))
            .await
            .context("create the tenant's database")?;

        let tenant_db = self.connect(name.as_str()).await?;
        tenant_db
            .batch_execute(&privileges_sql(name.as_str(), readonly, extensions))
            .await
            .context("set up the tenant database's privileges and extensions")?;

        let dir = self.secrets_of(name.as_str());
        let mut owner_creds = self.credentials(name.as_str(), name.as_str(), owner_password);
        if let Some(planned) = redis {
            let server = &planned.server;
            registry::set_redis(admin, name.as_str(), Some((server.port, server.maxmemory)))
                .await?;
            self.redis.start(server, true).await?;
            owner_creds.redis = Some(planned.access);
        }
        secrets::stage(&dir, &owner_creds)?.commit()?;
        let mut logins = vec![owner_creds];
        if let (Some(role), Some(password)) = (readonly, readonly_password) {
            let creds = self.credentials(role, name.as_str(), password);
            secrets::stage(&dir.join("readonly"), &creds)?.commit()?;
            logins.push(creds);
        }

        registry::set_state(admin, name.as_str(), "ready").await?;
        self.sync_hba(admin).await?;
        for creds in &logins {
            self.verify_login(creds).await?;
        }
        Ok(())
    }

    /// Proves the new credentials work end to end (pg_hba reload included). The reload is
    /// asynchronous, so a few attempts may be needed.
    pub(super) async fn verify_login(&self, creds: &secrets::Credentials) -> anyhow::Result<()> {
        let mut last_error = None;
        for _ in 0..100 {
            // Straight to PostgreSQL: this checks the role and pg_hba.conf, not the pooler.
            match crate::pg::connect::with_password(
                &self.local_host,
                self.port,
                &creds.user,
                &creds.password,
                &creds.database,
            )
            .await
            {
                Ok(_) => return Ok(()),
                Err(e) => last_error = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let detail = last_error.map(|e| e.to_string()).unwrap_or_default();
        anyhow::bail!(
            "role {} cannot log in with its new password: {detail}",
            creds.user
        )
    }
}

/// The tenant's agent role (`pg::tenant_agent_role`): logs in by peer only (pg_hba), holds
/// nothing but membership in the tenant's role, so work the agent does inside the tenant's
/// database runs with exactly the tenant's rights.
pub(super) fn agent_role_sql(tenant: &str) -> String {
    format!(
        "CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS \
         INHERIT IN ROLE {};",
        quote_ident(&crate::pg::tenant_agent_role(tenant)),
        quote_ident(tenant)
    )
}

/// Run inside the tenant's database: nobody but its roles may connect or create; the
/// read-only role reads everything present and future and writes nothing.
fn privileges_sql(name: &str, readonly: Option<&str>, extensions: &[String]) -> String {
    let owner = quote_ident(name);
    let mut sql = format!(
        "BEGIN;
         REVOKE ALL ON DATABASE {owner} FROM PUBLIC;
         GRANT ALL ON DATABASE {owner} TO {owner};
         ALTER SCHEMA public OWNER TO {owner};
         REVOKE ALL ON SCHEMA public FROM PUBLIC;
         GRANT ALL ON SCHEMA public TO {owner};\n"
    );
    // The database is new and no tenant line is in pg_hba.conf yet: nobody has been in.
    sql.push_str(&crate::pg::sql::create_extensions(extensions));
    if let Some(role) = readonly {
        let ro = quote_ident(role);
        sql.push_str(&format!(
            "GRANT CONNECT ON DATABASE {owner} TO {ro};
             GRANT USAGE ON SCHEMA public TO {ro};
             GRANT SELECT ON ALL TABLES IN SCHEMA public TO {ro};
             GRANT SELECT ON ALL SEQUENCES IN SCHEMA public TO {ro};
             ALTER DEFAULT PRIVILEGES FOR ROLE {owner} GRANT SELECT ON TABLES TO {ro};
             ALTER DEFAULT PRIVILEGES FOR ROLE {owner} GRANT SELECT ON SEQUENCES TO {ro};
             ALTER DEFAULT PRIVILEGES FOR ROLE {owner} GRANT USAGE ON SCHEMAS TO {ro};\n"
        ));
    }
    sql.push_str("COMMIT;");
    sql
}

/// Extension names as `pg_available_extensions` spells them (`uuid-ossp` has a dash).
fn validate_extensions(names: &[String]) -> Result<Vec<String>, TenantError> {
    let mut out: Vec<String> = Vec::new();
    for name in names {
        let valid = !name.is_empty()
            && name.len() <= 63
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
        if !valid {
            return Err(TenantError::InvalidOption(format!(
                "extension name `{}` is invalid",
                name.escape_debug()
            )));
        }
        if !out.contains(name) {
            out.push(name.clone());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extension_names_are_checked_and_deduplicated() {
        let ok =
            validate_extensions(&["vector".into(), "uuid-ossp".into(), "vector".into()]).unwrap();
        assert_eq!(ok, ["vector", "uuid-ossp"]);
        for bad in ["", "Vector", "x; DROP", "a\"b"] {
            assert!(validate_extensions(&[bad.into()]).is_err(), "{bad}");
        }
    }

    #[test]
    fn privileges_lock_out_public_and_cover_future_objects() {
        let sql = privileges_sql("shop", Some("shop_ro"), &["vector".into()]);
        assert!(sql.contains("REVOKE ALL ON DATABASE \"shop\" FROM PUBLIC;"));
        assert!(sql.contains("CREATE EXTENSION IF NOT EXISTS \"vector\" CASCADE;"));
        assert!(sql.contains(
            "ALTER DEFAULT PRIVILEGES FOR ROLE \"shop\" GRANT SELECT ON TABLES TO \"shop_ro\";"
        ));
        assert!(!privileges_sql("shop", None, &[]).contains("shop_ro"));
    }
}
