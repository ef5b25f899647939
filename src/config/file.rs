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
    pub api: super::api::ApiSection,
    pub tenants: TenantsSection,
    pub pooler: super::pooler::PoolerSection,
    pub backup: super::backup::BackupSection,
    pub ha: super::ha::HaSection,
    pub redis: super::redis::RedisSection,
    pub metrics: MetricsSection,
    pub status: StatusSection,
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
    /// `up` installs PostgreSQL with the OS's package manager when none is found.
    pub install: Option<bool>,
    /// The major version `install` installs; default: the newest the OS offers.
    pub version: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSection {
    /// A second address serving only `/metrics` (e.g. 127.0.0.1:9187); off when unset.
    pub listen: Option<String>,
    /// Seconds a scrape may spend reading PostgreSQL before it reports `pg_up 0`.
    pub scrape_timeout_seconds: Option<f64>,
    /// Export pg_stat_statements' top N statements by total time; 0 = off.
    pub statements_top: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StatusSection {
    /// Warn when this percentage of max_connections is in use.
    pub connections_warn_percent: Option<u32>,
    /// Warn when a WAL segment has waited this many seconds to be archived.
    pub archive_failing_warn_seconds: Option<u64>,
    /// Warn when the last successful base backup is older than this.
    pub backup_max_age_seconds: Option<u64>,
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
