//! The configuration file exactly as written in TOML: every key optional, unknown keys refused.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::logging::LogFormat;

/// The whole `pgplatform.toml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConfigFile {
    /// Where the platform keeps PostgreSQL's data, secrets and runtime files.
    /// Relative paths resolve against the config file's directory.
    pub data_dir: Option<String>,
    pub postgres: PostgresSection,
    pub api: ApiSection,
    pub tenants: TenantsSection,
    pub pooler: super::pooler::PoolerSection,
    pub log: LogSection,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PostgresSection {
    /// Directory holding `postgres`, `initdb`, `pg_ctl`; default: PATH, then the newest
    /// `/usr/lib/postgresql/<major>/bin`.
    pub bin_dir: Option<String>,
    /// OS user that runs PostgreSQL when the agent runs as root.
    pub user: Option<String>,
    /// PostgreSQL's `listen_addresses`.
    pub listen_addresses: Option<String>,
    /// PostgreSQL's TCP port.
    pub port: Option<u16>,
    /// Seconds to wait for a fast shutdown before forcing an immediate one.
    pub stop_timeout_seconds: Option<u64>,
    /// Any postgresql.conf setting; overrides the agent's derived values.
    pub parameters: BTreeMap<String, toml::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiSection {
    /// Address of the HTTP API (health, status, admin).
    pub listen: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TenantsSection {
    /// Host name written into tenants' connection URLs.
    pub host: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSection {
    /// auto | text | json
    pub format: Option<LogFormat>,
}
