//! SHOW DATABASES with PgBouncer 1.25's columns, in its order: every database that has a
//! pool or a `[pooler.databases.NAME]` entry, after the console's own `pgbouncer` row,
//! with the per-database settings in effect and 1.24's client counts.

use crate::config::PoolerConfig;
use crate::pooler::pool::Pool;
use crate::pooler::Pooler;

const INT8: u32 = 20;
const TEXT: u32 = 25;

pub const COLUMNS: &[(&str, u32)] = &[
    ("name", TEXT),
    ("host", TEXT),
    ("port", INT8),
    ("database", TEXT),
    ("force_user", TEXT),
    ("pool_size", INT8),
    ("min_pool_size", INT8),
    ("reserve_pool_size", INT8),
    ("server_lifetime", INT8),
    ("pool_mode", TEXT),
    ("load_balance_hosts", TEXT),
    ("max_connections", INT8),
    ("current_connections", INT8),
    ("max_client_connections", INT8),
    ("current_client_connections", INT8),
    ("paused", INT8),
    ("disabled", INT8),
];

fn t(s: impl ToString) -> Option<String> {
    Some(s.to_string())
}

/// Whole seconds, as PgBouncer shows server_lifetime.
fn lifetime(d: Option<std::time::Duration>) -> Option<String> {
    t(d.map_or(0, |d| d.as_secs()))
}

pub fn rows(
    pooler: &Pooler,
    config: &PoolerConfig,
    pools: &[std::sync::Arc<Pool>],
) -> Vec<Vec<Option<String>>> {
    let consoles = pooler
        .clients()
        .iter()
        .filter(|c| c.key.database == super::CONSOLE_DATABASE)
        .count();
    let mut rows = vec![vec![
        t("pgbouncer"),
        None,
        t(config.listen_port),
        t("pgbouncer"),
        t("pgbouncer"),
        t(2),
        t(0),
        t(0),
        lifetime(config.server_lifetime),
        t("statement"),
        None,
        t(config.max_db_connections),
        t(0),
        t(config.max_db_client_connections),
        t(consoles),
        t(0),
        t(0),
    ]];
    let mut databases: Vec<&str> = pools.iter().map(|p| p.key.database.as_str()).collect();
    databases.extend(config.databases.keys().map(String::as_str));
    databases.sort_unstable();
    databases.dedup();
    for database in databases {
        let settings = crate::pooler::pool::PoolSettings::from_config(config, database);
        let mine: Vec<_> = pools
            .iter()
            .filter(|p| p.key.database == database)
            .collect();
        let current: u32 = mine.iter().map(|p| p.stats.servers_open()).sum();
        let paused = mine.iter().any(|p| p.is_paused());
        let clients = pooler.db_limits.find(database).map_or(0, |l| l.clients());
        let own_mode = config.database(database).pool_mode;
        rows.push(vec![
            t(database),
            t(pooler.target.socket_dir.display()),
            t(pooler.target.port),
            t(database),
            None,
            t(settings.size),
            t(settings.min_size),
            t(settings.reserve_size),
            lifetime(settings.lifetime),
            own_mode.map(|m| m.as_str().to_owned()),
            None,
            t(config.max_db_connections_for(database)),
            t(current),
            t(config.max_db_client_connections_for(database)),
            t(clients),
            t(u8::from(paused)),
            t(u8::from(pooler.console.is_disabled(database))),
        ]);
    }
    rows
}
