//! pgplatform turns a Linux host into a central PostgreSQL platform for many applications.
//!
//! `pgplatform up` is the node agent: it initialises and supervises PostgreSQL (`supervisor`),
//! keeps the tenant registry and provisions tenants (`tenants`), and serves the HTTP API
//! (`api`) that every other subcommand (`cli`) talks to. `pg` is the only place that runs
//! PostgreSQL binaries and renders its configuration. ARCHITECTURE.md is the map.

mod accept_errors;
mod agent;
mod api;
mod backup;
pub mod cli;
mod config;
mod data_dir;
mod ha;
mod logging;
mod metrics;
mod pg;
mod pooler;
mod redis;
mod run_as;
mod safe_file;
mod shutdown;
mod status;
mod supervisor;
mod tenants;
mod tls_pin;

/// The pooler's wire codec: pure (no I/O, no panics on input), public for the fuzz
/// targets in `fuzz/`.
pub use pooler::protocol;

/// The few internals the integration tests (`tests/it`) act with directly, where going
/// through the binary cannot reach: an etcd client, and forging or signing as an HA
/// member would (`attack_etcd.rs`, `etcd_client.rs`); preparing files as PostgreSQL's
/// user (`attack_files.rs`). Not an API.
#[doc(hidden)]
pub mod testing {
    pub use crate::config::EtcdSecurity;
    pub use crate::ha::etcd::{tls_config, Etcd};
    pub use crate::ha::keys::{seal, unix_now};
    pub use crate::ha::peer::{call_as, sha256_hex, sign, sign_at, Request, Sender};
    pub use crate::ha::secret::ClusterSecret;
    pub use crate::ha::MemberRecord;
    pub use crate::pg::process::chown_tree;
    pub use crate::run_as::RunAs;
}
