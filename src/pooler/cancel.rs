//! CancelRequest routing. Each client gets a pooler-issued key; while one of its queries
//! runs, the key points at the server connection running it, and only at that one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use rand::RngCore;

/// A server connection's own cancel key, as PostgreSQL issued it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerKey {
    pub process_id: i32,
    pub secret_key: Bytes,
}

/// The server a client is using right now, if any.
#[derive(Debug, Default)]
pub struct CancelTarget(Mutex<Option<ServerKey>>);

impl CancelTarget {
    fn lock(&self) -> MutexGuard<'_, Option<ServerKey>> {
        match self.0.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }
    pub fn set(&self, key: Option<ServerKey>) {
        *self.lock() = key;
    }
    pub fn get(&self) -> Option<ServerKey> {
        self.lock().clone()
    }
}

/// All connected clients' keys.
/// A client's key: the pooler issues protocol 3.0's 4-byte secrets, kept inline (a
/// `Bytes` would cost every connected client an allocation).
type ClientKey = (i32, [u8; 4]);

#[derive(Debug, Default)]
pub struct CancelRegistry {
    clients: Mutex<HashMap<ClientKey, Arc<CancelTarget>>>,
}

/// Removes the client's key when its connection ends.
pub struct Registration {
    registry: Arc<CancelRegistry>,
    pub process_id: i32,
    pub secret_key: [u8; 4],
    pub target: Arc<CancelTarget>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry
            .lock()
            .remove(&(self.process_id, self.secret_key));
    }
}

impl CancelRegistry {
    fn lock(&self) -> MutexGuard<'_, HashMap<ClientKey, Arc<CancelTarget>>> {
        match self.clients.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// A fresh random key for a new client (4-byte secret, as protocol 3.0 has it).
    pub fn register(self: &Arc<Self>) -> Registration {
        let target = Arc::new(CancelTarget::default());
        let mut rng = rand::rngs::OsRng;
        loop {
            let process_id = (rng.next_u32() & 0x7fff_ffff) as i32;
            let secret_key = rng.next_u32().to_be_bytes();
            let mut clients = self.lock();
            let key = (process_id, secret_key);
            if clients.contains_key(&key) {
                continue;
            }
            clients.insert(key, target.clone());
            return Registration {
                registry: self.clone(),
                process_id,
                secret_key,
                target,
            };
        }
    }

    /// The server key a cancel request with this client key should reach.
    pub fn lookup(&self, process_id: i32, secret_key: &[u8]) -> Option<ServerKey> {
        let secret_key: [u8; 4] = secret_key.try_into().ok()?;
        let target = self.lock().get(&(process_id, secret_key))?.clone();
        target.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_reaches_only_its_clients_current_server() {
        let registry = Arc::new(CancelRegistry::default());
        let a = registry.register();
        let b = registry.register();
        assert_eq!(registry.lookup(a.process_id, &a.secret_key), None);
        let server = ServerKey {
            process_id: 42,
            secret_key: Bytes::from_static(b"abcd"),
        };
        a.target.set(Some(server.clone()));
        assert_eq!(registry.lookup(a.process_id, &a.secret_key), Some(server));
        assert_eq!(registry.lookup(b.process_id, &b.secret_key), None);
        assert_eq!(registry.lookup(a.process_id, &b.secret_key), None);
        let (pid, key) = (a.process_id, a.secret_key);
        drop(a);
        assert_eq!(registry.lookup(pid, &key), None);
    }
}
