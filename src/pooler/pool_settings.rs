//! `PoolSettings`: what one pool is judged by, from `[pooler]` with its database's
//! `[pooler.databases.NAME]` entry applied (PgBouncer's per-database keys), refreshed on
//! reload; and `connect_query`, run once on each new server connection.

use std::time::Duration;

use super::server::ServerConn;
use crate::config::{PoolMode, PoolerConfig};

/// Settings of one pool, refreshed on reload.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    pub mode: PoolMode,
    pub size: u32,
    pub min_size: u32,
    pub reserve_size: u32,
    pub reserve_timeout: Duration,
    /// Zero: a connection is used once, then closed (PgBouncer's meaning).
    pub lifetime: Option<Duration>,
    pub idle_timeout: Option<Duration>,
    pub check_delay: Duration,
    pub check_query: String,
    pub connect_timeout: Duration,
    /// Run once on each new server connection before a client gets it.
    pub connect_query: Option<String>,
}

impl PoolSettings {
    pub fn from_config(config: &PoolerConfig, database: &str) -> PoolSettings {
        let (mode, size) = config.for_database(database);
        let db = config.database(database);
        PoolSettings {
            mode,
            size,
            // PgBouncer caps min_pool_size at the pool size.
            min_size: db.min_pool_size.unwrap_or(config.min_pool_size).min(size),
            reserve_size: db.reserve_pool_size.unwrap_or(config.reserve_pool_size),
            reserve_timeout: config.reserve_pool_timeout,
            lifetime: db.server_lifetime.or(config.server_lifetime),
            idle_timeout: config.server_idle_timeout,
            check_delay: config.server_check_delay,
            check_query: config.server_check_query.clone(),
            connect_timeout: config.server_connect_timeout,
            connect_query: db.connect_query.clone(),
        }
    }
}

/// Runs the database's connect_query on a new server connection. The connection is
/// logged in as the client's own role (SCRAM passthrough), so the query runs with that
/// role's rights, never the agent's superuser. As in PgBouncer, an error is logged and
/// the connection used anyway; a broken connection is not.
pub async fn run_connect_query(
    conn: &mut ServerConn,
    query: &str,
    database: &str,
    timeout: Duration,
) -> Result<(), super::server::ServerError> {
    let ran = tokio::time::timeout(timeout, conn.run_internal(query)).await;
    match ran {
        Ok(Ok(())) => Ok(()),
        Ok(Err(super::server::ServerError::Refused { fields, .. })) => {
            tracing::warn!(
                database,
                "connect_query failed: {}",
                fields.message().unwrap_or("(no message)")
            );
            Ok(())
        }
        Ok(Err(e)) => Err(e),
        Err(_) => {
            conn.mark_broken();
            Err(super::server::ServerError::Timeout(timeout))
        }
    }
}
