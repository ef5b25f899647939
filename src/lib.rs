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
pub mod ha;
mod logging;
mod metrics;
pub mod pg;
pub mod pooler;
pub mod safe_file;
mod shutdown;
mod status;
mod supervisor;
mod tenants;
mod tls_pin;
