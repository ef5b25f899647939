//! How pgplatform runs PostgreSQL binaries and talks to the server as its superuser.
//! The only module that spawns processes (`process::command`).

pub mod bin;
pub mod conf;
pub mod connect;
pub mod hba;
pub mod initdb;
pub mod install;
pub mod process;
pub mod sql;

/// The agent's own superuser; reachable only over the local socket with peer authentication.
pub const SUPERUSER: &str = "pgplatform";

/// The agent's own database, holding the tenant registry.
pub const AGENT_DATABASE: &str = "pgplatform";

/// The role replicas (and pg_rewind) log in as in an HA cluster; its password derives
/// from the cluster secret. It only exists in HA clusters.
pub const REPLICATION_ROLE: &str = "pgplatform_replication";

/// The login role through which the agent acts inside tenant `tenant`'s database: a
/// member of the tenant's role and nothing else, reachable only by peer authentication
/// from the agent's OS user. Tenant names may not start with `pgplatform_`, and are at
/// most 48 characters, so the name is free and fits PostgreSQL's 63.
pub fn tenant_agent_role(tenant: &str) -> String {
    format!("pgplatform_as_{tenant}")
}

/// Whether the cluster in `pgdata` starts as a standby (PostgreSQL's `standby.signal`).
pub fn is_standby(pgdata: &std::path::Path) -> bool {
    pgdata.join("standby.signal").exists()
}
