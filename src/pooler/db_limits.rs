//! Per-database limits, PgBouncer's `max_db_connections` (server connections of every
//! pool of the database) and 1.24's `max_db_client_connections` (its clients), each
//! global or per database, both applied on reload. One `DbLimit` per database name,
//! shared by the database's pools; pruned with them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Semaphore;

use crate::config::PoolerConfig;

/// The permits an unlimited database's semaphore holds: more server connections than
/// PostgreSQL could ever accept, so a check that never refuses.
const UNLIMITED: u32 = 1 << 24;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

pub struct DbLimit {
    /// One permit per server connection of the database (`max_db_connections`).
    pub servers: Arc<Semaphore>,
    /// (permits the semaphore has in all, permits it should have): a shrink forgets only
    /// free permits, the rest is forgotten as connections close (`settle`).
    sizes: Mutex<(u32, u32)>,
    /// The database's clients now (SHOW DATABASES' current_client_connections).
    clients: AtomicU32,
    /// `max_db_client_connections` in effect; 0 = unlimited.
    max_clients: AtomicU32,
}

impl DbLimit {
    fn new(max_servers: u32, max_clients: u32) -> DbLimit {
        let size = permits(max_servers);
        DbLimit {
            servers: Arc::new(Semaphore::new(size as usize)),
            sizes: Mutex::new((size, size)),
            clients: AtomicU32::new(0),
            max_clients: AtomicU32::new(max_clients),
        }
    }

    /// Counts one more client of the database, unless that would pass
    /// max_db_client_connections (then nothing is counted).
    pub fn admit_client(self: &Arc<Self>) -> Option<AdmittedClient> {
        let max = self.max_clients.load(Ordering::Relaxed);
        let admitted = self
            .clients
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (max == 0 || n < max).then_some(n + 1)
            })
            .is_ok();
        admitted.then(|| AdmittedClient(Some(self.clone())))
    }

    /// A client counted by `admit_client` left (its `AdmittedClient` was kept).
    pub fn client_left(&self) {
        self.clients.fetch_sub(1, Ordering::AcqRel);
    }

    pub fn clients(&self) -> u32 {
        self.clients.load(Ordering::Relaxed)
    }

    fn configure(&self, max_servers: u32, max_clients: u32) {
        self.max_clients.store(max_clients, Ordering::Relaxed);
        lock(&self.sizes).1 = permits(max_servers);
        self.settle();
    }

    /// Brings the semaphore to the size wanted: grows at once, shrinks by the permits
    /// free now (the rest as connections close and this runs again).
    pub fn settle(&self) {
        let mut sizes = lock(&self.sizes);
        let (current, wanted) = *sizes;
        if wanted > current {
            self.servers.add_permits((wanted - current) as usize);
            sizes.0 = wanted;
        } else if wanted < current {
            let forgotten = self.servers.forget_permits((current - wanted) as usize);
            sizes.0 = current - forgotten as u32;
        }
    }
}

fn permits(max: u32) -> u32 {
    if max == 0 {
        UNLIMITED
    } else {
        max.min(UNLIMITED)
    }
}

/// One client counted against its database until it is handed to the client task
/// (`keep`), or dropped on a failed login.
pub struct AdmittedClient(Option<Arc<DbLimit>>);

impl AdmittedClient {
    /// The client is now counted until `DbLimit::client_left` (called when it ends).
    pub fn keep(mut self) {
        self.0 = None;
    }
}

impl Drop for AdmittedClient {
    fn drop(&mut self) {
        if let Some(limit) = self.0.take() {
            limit.client_left();
        }
    }
}

/// Every database's limits, by name.
#[derive(Default)]
pub struct DbLimits {
    map: Mutex<HashMap<String, Arc<DbLimit>>>,
}

impl DbLimits {
    /// The database's limits, made on first use from `config`.
    pub fn get(&self, config: &PoolerConfig, database: &str) -> Arc<DbLimit> {
        lock(&self.map)
            .entry(database.to_owned())
            .or_insert_with(|| {
                Arc::new(DbLimit::new(
                    config.max_db_connections_for(database),
                    config.max_db_client_connections_for(database),
                ))
            })
            .clone()
    }

    /// The database's limits if it has any now (SHOW DATABASES).
    pub fn find(&self, database: &str) -> Option<Arc<DbLimit>> {
        lock(&self.map).get(database).cloned()
    }

    /// A reload: every database gets its new limits.
    pub fn configure(&self, config: &PoolerConfig) {
        for (database, limit) in lock(&self.map).iter() {
            limit.configure(
                config.max_db_connections_for(database),
                config.max_db_client_connections_for(database),
            );
        }
    }

    /// Finishes shrinks that waited for connections to close; called periodically.
    pub fn settle(&self) {
        for limit in lock(&self.map).values() {
            limit.settle();
        }
    }

    /// Drops the limits no pool, connection or client holds any more.
    pub fn prune(&self) {
        lock(&self.map).retain(|_, limit| Arc::strong_count(limit) > 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn limits_follow_a_reload_and_clients_are_counted_once() {
        let limit = Arc::new(DbLimit::new(2, 1));
        let first = limit.admit_client().expect("the first client is admitted");
        assert!(limit.admit_client().is_none(), "max 1 client");
        drop(first);
        assert_eq!(limit.clients(), 0, "a failed login is not counted");
        limit.admit_client().expect("room again").keep();
        assert_eq!(limit.clients(), 1);
        limit.client_left();

        let a = limit.servers.clone().try_acquire_owned().unwrap();
        let _b = limit.servers.clone().try_acquire_owned().unwrap();
        assert!(limit.servers.clone().try_acquire_owned().is_err());
        limit.configure(1, 0);
        drop(a);
        limit.settle();
        assert_eq!(
            limit.servers.available_permits(),
            0,
            "one held, one allowed"
        );
        limit.configure(0, 0);
        assert!(limit.servers.available_permits() > 1000, "0 = unlimited");
        assert!(limit.admit_client().is_some(), "0 = unlimited");
    }
}
