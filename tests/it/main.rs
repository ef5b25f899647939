//! Integration tests: the built `pgplatform` binary with a real PostgreSQL and real clients, one runbook per file.
//!
//! Every test starts its own agent (`support::TestAgent`) in a temporary directory on free ports,
//! and stops it (and PostgreSQL) when it is dropped. Run with `cargo test --test it`.
//!
//! A test whose prerequisite (etcd, promtool, moto, psycopg, pgserver, root, iproute2,
//! systemd-analyze, docker-compose, kubectl, kubernetes-validate, the test .deb named by
//! PGPLATFORM_TEST_DEB) is missing fails, naming it; `scripts/test` installs them all. To run part of the suite on a
//! machine that lacks one, set PGPLATFORM_TEST_ALLOW_SKIP=1: such a test then passes
//! without testing and writes `skipped: <reason>` to stderr (see `support::skip`).

// Tests report the agent's log tail and measurements on the console.
#![allow(clippy::print_stdout, clippy::print_stderr)]
// The whole crate is test code, where unwrap means "cannot fail here, else fail the test";
// clippy's allow-unwrap-in-tests only covers #[test] functions, not the harness they call.
#![allow(clippy::unwrap_used)]

mod support;

mod agent_lifecycle;
mod agent_reload;
mod agent_supervision;
mod attack_api;
mod attack_etcd;
mod attack_files;
mod attack_pooler_login;
mod attack_pooler_memory;
mod attack_pooler_tls;
mod attack_repository;
mod attack_superuser;
mod backup_concurrent;
mod backup_layers;
mod backup_ops;
mod backup_pitr;
mod backup_s3;
mod config_errors;
mod crash_recovery;
mod deploy_deb;
mod deploy_files;
mod deploy_install;
mod deploy_manifests;
mod deploy_systemd;
mod etcd_client;
mod extensions;
mod ha;
mod ha_etcd_outage;
mod ha_partition;
mod health;
mod metrics;
mod pgvector;
mod pooler_admin;
mod pooler_cancel;
mod pooler_console;
mod pooler_console_columns;
mod pooler_db_limits;
mod pooler_failures;
mod pooler_idle;
mod pooler_import_ini;
mod pooler_limits;
mod pooler_params_tracking;
mod pooler_password_change;
mod pooler_pgbench;
mod pooler_pinning;
mod pooler_prepared_errors;
mod pooler_protocol;
mod pooler_psycopg;
mod pooler_reload_errors;
mod pooler_shutdown;
mod pooler_signals;
mod pooler_timeouts;
mod pooler_unknown_database;
mod pooler_waits;
mod redis_observability;
mod redis_supervision;
mod redis_tenants;
mod restore_ha;
mod restore_pitr;
mod skip_policy;
mod status;
mod tenant_bad_names;
mod tenant_isolation;
mod tenant_readonly;
mod tenant_rotate_drop;
mod tidy;
mod tls_defaults;
