//! What a reload (SIGHUP, `POST /reload`) may change while the agent runs. `diff` sorts
//! every changed key into "applied live" or "needs a restart"; `effective` is the new
//! configuration with the restart-only keys kept as they run, which is what the agent's
//! parts receive. Both are pure, and `diff` destructures `Config` exhaustively, so a new
//! key cannot be added without deciding which kind it is.

use std::fmt::Debug;

use super::Config;

/// The keys that differ between two configurations, by kind, in file order.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Diff {
    /// Applied at once: the parts that use them receive the new values.
    pub live: Vec<&'static str>,
    /// Read once at start (listeners, paths, the HA member): they take effect only when
    /// the agent restarts.
    pub restart: Vec<&'static str>,
}

impl Diff {
    fn note<T: Debug>(&mut self, restart: bool, key: &'static str, old: &T, new: &T) {
        // Debug output compares every field (not every config type is PartialEq).
        if format!("{old:?}") != format!("{new:?}") {
            if restart {
                self.restart.push(key);
            } else {
                self.live.push(key);
            }
        }
    }
}

const LIVE: bool = false;
const RESTART: bool = true;

/// Which keys changed from `old` to `new`, and whether each applies live.
pub fn diff(old: &Config, new: &Config) -> Diff {
    let Config {
        data_dir,
        postgres,
        api_listen,
        api,
        tenant_host,
        pooler,
        backup,
        ha,
        redis,
        metrics,
        status,
        log_format,
        source: _,
    } = old;
    let mut d = Diff::default();
    d.note(RESTART, "data_dir", data_dir, &new.data_dir);
    {
        let super::PostgresConfig {
            bin_dir,
            user,
            listen_addresses,
            port,
            stop_timeout,
            parameters,
            // Read only by `up` before the agent starts: nothing to apply or wait for.
            install: _,
            install_version: _,
        } = postgres;
        let n = &new.postgres;
        d.note(RESTART, "postgres.bin_dir", bin_dir, &n.bin_dir);
        d.note(RESTART, "postgres.user", user, &n.user);
        d.note(
            RESTART,
            "postgres.listen_addresses",
            listen_addresses,
            &n.listen_addresses,
        );
        d.note(RESTART, "postgres.port", port, &n.port);
        d.note(
            RESTART,
            "postgres.stop_timeout_seconds",
            stop_timeout,
            &n.stop_timeout,
        );
        d.note(LIVE, "postgres.parameters", parameters, &n.parameters);
    }
    d.note(RESTART, "api.listen", api_listen, &new.api_listen);
    {
        let super::ApiConfig {
            tls,
            max_connections,
            max_connections_per_address,
            header_timeout,
            body_timeout,
        } = api;
        let n = &new.api;
        d.note(RESTART, "api.tls", tls, &n.tls);
        d.note(
            RESTART,
            "api.max_connections",
            max_connections,
            &n.max_connections,
        );
        d.note(
            RESTART,
            "api.max_connections_per_address",
            max_connections_per_address,
            &n.max_connections_per_address,
        );
        d.note(
            RESTART,
            "api.header_timeout_seconds",
            header_timeout,
            &n.header_timeout,
        );
        d.note(
            RESTART,
            "api.body_timeout_seconds",
            body_timeout,
            &n.body_timeout,
        );
    }
    d.note(RESTART, "tenants.host", tenant_host, &new.tenant_host);
    {
        // The listeners, their TLS and the runtime are made once; the rest the pooler
        // applies on its next maintenance tick.
        let n = &new.pooler;
        d.note(RESTART, "pooler.enabled", &pooler.enabled, &n.enabled);
        d.note(
            RESTART,
            "pooler.worker_threads",
            &pooler.worker_threads,
            &n.worker_threads,
        );
        d.note(
            RESTART,
            "pooler.listen_addr",
            &pooler.listen_addr,
            &n.listen_addr,
        );
        d.note(
            RESTART,
            "pooler.listen_port",
            &pooler.listen_port,
            &n.listen_port,
        );
        d.note(
            RESTART,
            "pooler.client_tls",
            &(
                &pooler.client_tls,
                &pooler.client_tls_cert_file,
                &pooler.client_tls_key_file,
            ),
            &(
                &n.client_tls,
                &n.client_tls_cert_file,
                &n.client_tls_key_file,
            ),
        );
        let mut rest = n.clone();
        pooler_start_keys(&mut rest, pooler);
        d.note(LIVE, "pooler", pooler, &rest);
    }
    {
        let super::BackupConfig {
            repository,
            archive,
            parallel,
            compress_level,
            schedule,
            drill_schedule,
            retention_full,
            retention_days,
            dump_retention,
            dumps,
            repository_key_file,
        } = backup;
        let n = &new.backup;
        d.note(LIVE, "backup.repository", repository, &n.repository);
        d.note(LIVE, "backup.archive", archive, &n.archive);
        d.note(LIVE, "backup.parallel", parallel, &n.parallel);
        d.note(
            LIVE,
            "backup.compress_level",
            compress_level,
            &n.compress_level,
        );
        d.note(LIVE, "backup.schedule", schedule, &n.schedule);
        d.note(
            LIVE,
            "backup.drill_schedule",
            drill_schedule,
            &n.drill_schedule,
        );
        d.note(
            LIVE,
            "backup.retention_full",
            retention_full,
            &n.retention_full,
        );
        d.note(
            LIVE,
            "backup.retention_days",
            retention_days,
            &n.retention_days,
        );
        d.note(
            LIVE,
            "backup.dump_retention",
            dump_retention,
            &n.dump_retention,
        );
        d.note(LIVE, "backup.dumps", dumps, &n.dumps);
        d.note(
            LIVE,
            "backup.repository_key_file",
            repository_key_file,
            &n.repository_key_file,
        );
    }
    // The HA member (its etcd client, names, timings) is made once at start.
    d.note(RESTART, "ha", ha, &new.ha);
    {
        let super::MetricsConfig {
            listen,
            scrape_timeout,
            statements_top,
        } = metrics;
        let n = &new.metrics;
        d.note(RESTART, "metrics.listen", listen, &n.listen);
        d.note(
            LIVE,
            "metrics.scrape_timeout_seconds",
            scrape_timeout,
            &n.scrape_timeout,
        );
        d.note(
            LIVE,
            "metrics.statements_top",
            statements_top,
            &n.statements_top,
        );
    }
    {
        // The agent's Redis fleet reads them once, when it starts.
        let super::RedisConfig {
            bin,
            listen_addr,
            port_range,
            default_maxmemory,
            maxmemory_policy,
            appendfsync,
        } = redis;
        let n = &new.redis;
        d.note(RESTART, "redis.bin", bin, &n.bin);
        d.note(RESTART, "redis.listen_addr", listen_addr, &n.listen_addr);
        d.note(RESTART, "redis.port_range", port_range, &n.port_range);
        d.note(
            RESTART,
            "redis.default_maxmemory",
            default_maxmemory,
            &n.default_maxmemory,
        );
        d.note(
            RESTART,
            "redis.maxmemory_policy",
            maxmemory_policy,
            &n.maxmemory_policy,
        );
        d.note(RESTART, "redis.appendfsync", appendfsync, &n.appendfsync);
    }
    d.note(LIVE, "status", status, &new.status);
    d.note(RESTART, "log.format", log_format, &new.log_format);
    d
}

/// `new`, with every key `diff` calls restart-only kept as in `running`.
pub fn effective(running: &Config, new: &Config) -> Config {
    let mut e = new.clone();
    e.data_dir = running.data_dir.clone();
    e.postgres.bin_dir = running.postgres.bin_dir.clone();
    e.postgres.user = running.postgres.user.clone();
    e.postgres.listen_addresses = running.postgres.listen_addresses.clone();
    e.postgres.port = running.postgres.port;
    e.postgres.stop_timeout = running.postgres.stop_timeout;
    e.api_listen = running.api_listen;
    e.api = running.api.clone();
    e.tenant_host = running.tenant_host.clone();
    pooler_start_keys(&mut e.pooler, &running.pooler);
    e.ha = running.ha.clone();
    e.redis = running.redis.clone();
    e.metrics.listen = running.metrics.listen;
    e.log_format = running.log_format;
    e
}

/// `[pooler]` keys read only when the agent starts (the listeners, their TLS, the
/// runtime): `pooler_start_keys` copies exactly these, so a reload names them pending a
/// restart; the console's SET refuses them and SHOW CONFIG says `changeable = no`.
/// `client_tls_sslmode` is PgBouncer's name for `client_tls`.
pub const POOLER_RESTART_KEYS: &[&str] = &[
    "enabled",
    "worker_threads",
    "listen_addr",
    "listen_port",
    "client_tls",
    "client_tls_sslmode",
    "client_tls_cert_file",
    "client_tls_key_file",
];

/// Whether a `[pooler]` key applies on reload (SHOW CONFIG's `changeable`).
pub fn pooler_key_changeable(key: &str) -> bool {
    !POOLER_RESTART_KEYS.contains(&key)
}

/// Copies the pooler keys read only at start from `running` into `into`.
fn pooler_start_keys(into: &mut super::PoolerConfig, running: &super::PoolerConfig) {
    into.enabled = running.enabled;
    into.worker_threads = running.worker_threads;
    into.listen_addr = running.listen_addr.clone();
    into.listen_port = running.listen_port;
    into.client_tls = running.client_tls;
    into.client_tls_cert_file = running.client_tls_cert_file.clone();
    into.client_tls_key_file = running.client_tls_key_file.clone();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Config {
        let file: super::super::ConfigFile = toml::from_str(text).unwrap();
        Config::from_file(file, std::path::Path::new("/etc/pgplatform"), None).unwrap()
    }

    #[test]
    fn changeable_pooler_keys_are_the_ones_a_reload_applies_live() {
        let base = config("[pooler]\n");
        let pooler_diff = |line: &str| diff(&base, &config(&format!("[pooler]\n{line}\n")));
        for (key, line) in [
            ("enabled", "enabled = false"),
            ("worker_threads", "worker_threads = 3"),
            ("listen_addr", "listen_addr = \"0.0.0.0\""),
            ("listen_port", "listen_port = 7777"),
            ("client_tls", "client_tls = \"require\""),
        ] {
            let d = pooler_diff(line);
            assert!(!pooler_key_changeable(key), "{key}");
            assert!(d.live.is_empty() && !d.restart.is_empty(), "{key}: {d:?}");
        }
        for (key, line) in [
            ("default_pool_size", "default_pool_size = 3"),
            ("query_wait_timeout", "query_wait_timeout = 5"),
            ("server_reset_query", "server_reset_query = \"RESET ALL\""),
            ("max_client_conn", "max_client_conn = 10"),
        ] {
            let d = pooler_diff(line);
            assert!(pooler_key_changeable(key), "{key}");
            assert_eq!(d.live, ["pooler"], "{key}: {d:?}");
            assert!(d.restart.is_empty(), "{key}: {d:?}");
        }
    }

    #[test]
    fn nothing_changed_is_an_empty_diff() {
        let a = config("[backup]\nschedule = \"0 3 * * *\"\n");
        assert_eq!(diff(&a, &a.clone()), Diff::default());
    }

    #[test]
    fn keys_are_sorted_into_live_and_restart() {
        let old = config("[status]\nconnections_warn_percent = 80\n");
        let new = config(
            "[backup]\nschedule = \"*/5 * * * *\"\nretention_full = 9\n\
             [status]\nconnections_warn_percent = 1\n\
             [metrics]\nscrape_timeout_seconds = 2.5\nlisten = \"127.0.0.1:9999\"\n\
             [api]\nlisten = \"127.0.0.1:18008\"\n\
             [postgres]\nport = 6543\n[postgres.parameters]\nwork_mem = \"8MB\"\n\
             [pooler]\nlisten_port = 7777\ndefault_pool_size = 3\n",
        );
        let d = diff(&old, &new);
        assert_eq!(
            d.live,
            [
                "postgres.parameters",
                "pooler",
                "backup.schedule",
                "backup.retention_full",
                "metrics.scrape_timeout_seconds",
                "status"
            ]
        );
        assert_eq!(
            d.restart,
            [
                "postgres.port",
                "api.listen",
                "pooler.listen_port",
                "metrics.listen"
            ]
        );
    }

    #[test]
    fn the_effective_config_keeps_restart_keys_and_takes_the_rest() {
        let old = config("");
        let new = config(
            "[api]\nlisten = \"127.0.0.1:18008\"\n[pooler]\nlisten_port = 7777\n\
             default_pool_size = 3\n[status]\nconnections_warn_percent = 1\n",
        );
        let e = effective(&old, &new);
        assert_eq!(e.api_listen, old.api_listen);
        assert_eq!(e.pooler.listen_port, old.pooler.listen_port);
        assert_eq!(e.pooler.default_pool_size, 3);
        assert_eq!(e.status.connections_warn_percent, 1);
        // What is left to differ is exactly what applies live.
        assert!(diff(&old, &e).restart.is_empty());
        assert_eq!(diff(&old, &e).live, ["pooler", "status"]);
    }

    #[test]
    fn pgbouncer_1_25_timeouts_and_per_database_limits_apply_live() {
        let old = config("");
        let new = config(
            "[pooler]\nquery_timeout = 5\ntransaction_timeout = 9\nserver_fast_close = true\n\
             max_db_client_connections = 50\nmax_client_conn = 3\n\
             ignore_startup_parameters = [\"extra_float_digits\"]\n\
             [pooler.databases.shop]\nreserve_pool_size = 2\nmax_db_connections = 4\n\
             min_pool_size = 1\nserver_lifetime = 60\nconnect_query = \"select 1\"\n\
             max_db_client_connections = 9\nquery_wait_timeout = 3\n",
        );
        let d = diff(&old, &new);
        assert_eq!(d.live, ["pooler"]);
        assert!(d.restart.is_empty(), "{:?}", d.restart);
        assert_eq!(effective(&old, &new).pooler.max_client_conn, 3);
    }

    #[test]
    fn pin_on_session_state_applies_live() {
        let old = config("");
        let new = config(
            "[pooler]
pin_on_session_state = \"error\"
             [pooler.databases.shop]
pin_on_session_state = \"ignore\"
",
        );
        let d = diff(&old, &new);
        assert_eq!(d.live, ["pooler"]);
        assert!(d.restart.is_empty());
    }
}
