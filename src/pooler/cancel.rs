//! The connected clients, by the cancel key the pooler issued each of them. While one of a
//! client's queries runs, its key points at the server connection running it, and only
//! at that one. One map serves SHOW CLIENTS and CancelRequest routing, so a client costs
//! one entry.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use rand::RngCore;

use super::pool_key::PoolKey;
use super::stats::ConnState;

/// One connected client, as SHOW CLIENTS lists it. Kept small and free of per-client
/// strings: thousands of idle clients each have one.
pub struct ClientInfo {
    pub id: u64,
    /// Database and user, shared with the client's pool.
    pub key: Arc<PoolKey>,
    /// The peer's and the local address; `None` on the unix socket.
    pub addr: Option<IpAddr>,
    pub port: u16,
    pub local_addr: Option<IpAddr>,
    pub local_port: u16,
    pub connect_time: SystemTime,
    pub tls: bool,
    pub application_name: Box<str>,
    pub state: ConnState,
    /// The key the client got in BackendKeyData, and where a cancel with it goes.
    pub cancel_key: ClientKey,
    pub cancel: CancelTarget,
    /// KILL_CLIENT: the client ends at its next look (woken by the pooler's call).
    pub killed: std::sync::atomic::AtomicBool,
    /// Why the client is pinned to its server connection (`pin::Cause` as a byte); 0 if not.
    pub pinned: std::sync::atomic::AtomicU8,
}

/// A server connection's own cancel key, as PostgreSQL issued it: protocol 3.0, which the
/// pooler speaks to PostgreSQL, has 4-byte secrets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerKey {
    pub process_id: i32,
    pub secret_key: [u8; 4],
}

/// The server a client is using right now, if any, as one word: setting it costs a
/// transaction two plain stores, where a lock and a shared pointer cost atomic
/// read-modify-writes. Zero is none: PostgreSQL has no process 0.
#[derive(Debug, Default)]
pub struct CancelTarget(AtomicU64);

impl CancelTarget {
    pub fn set(&self, key: Option<ServerKey>) {
        let word = key.map_or(0, |k| {
            (u64::from(k.process_id as u32) << 32) | u64::from(u32::from_be_bytes(k.secret_key))
        });
        self.0.store(word, Ordering::Release);
    }
    pub fn get(&self) -> Option<ServerKey> {
        let word = self.0.load(Ordering::Acquire);
        (word != 0).then(|| ServerKey {
            process_id: (word >> 32) as u32 as i32,
            secret_key: (word as u32).to_be_bytes(),
        })
    }
}

/// A client's key: the pooler issues protocol 3.0's 4-byte secrets, kept inline (a
/// `Bytes` would cost every connected client an allocation).
pub type ClientKey = (i32, [u8; 4]);

#[derive(Default)]
pub struct ClientRegistry {
    clients: Mutex<HashMap<ClientKey, Arc<ClientInfo>>>,
}

impl ClientRegistry {
    fn lock(&self) -> MutexGuard<'_, HashMap<ClientKey, Arc<ClientInfo>>> {
        match self.clients.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Registers a new client under a fresh random key (4-byte secret, as protocol 3.0
    /// has it); `info` gets the key.
    pub fn register(&self, info: impl FnOnce(ClientKey) -> ClientInfo) -> Arc<ClientInfo> {
        // rand's thread-local CSPRNG (ChaCha, reseeded from the OS): unguessable like
        // OsRng, without two getrandom system calls per login.
        let mut rng = rand::thread_rng();
        let mut clients = self.lock();
        let key = loop {
            let process_id = (rng.next_u32() & 0x7fff_ffff) as i32;
            let key = (process_id, rng.next_u32().to_be_bytes());
            if !clients.contains_key(&key) {
                break key;
            }
        };
        let info = Arc::new(info(key));
        clients.insert(key, info.clone());
        info
    }

    pub fn unregister(&self, key: ClientKey) {
        self.lock().remove(&key);
    }

    /// The server key a cancel request with this client key should reach.
    pub fn lookup(&self, process_id: i32, secret_key: &[u8]) -> Option<ServerKey> {
        let secret_key: [u8; 4] = secret_key.try_into().ok()?;
        let client = self.lock().get(&(process_id, secret_key))?.clone();
        client.cancel.get()
    }

    /// Every connected client, in the order they connected.
    pub fn all(&self) -> Vec<Arc<ClientInfo>> {
        let mut all: Vec<Arc<ClientInfo>> = self.lock().values().cloned().collect();
        all.sort_by_key(|c| c.id);
        all
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(key: ClientKey) -> ClientInfo {
        ClientInfo {
            id: 1,
            key: Arc::new(PoolKey {
                database: "d".into(),
                user: "u".into(),
            }),
            addr: None,
            port: 0,
            local_addr: None,
            local_port: 0,
            connect_time: SystemTime::now(),
            tls: false,
            application_name: "".into(),
            state: ConnState::new(super::super::stats::Activity::Idle),
            cancel_key: key,
            cancel: CancelTarget::default(),
            killed: Default::default(),
            pinned: Default::default(),
        }
    }

    #[test]
    fn a_key_reaches_only_its_clients_current_server() {
        let registry = ClientRegistry::default();
        let a = registry.register(info);
        let b = registry.register(info);
        let ((a_pid, a_secret), (b_pid, b_secret)) = (a.cancel_key, b.cancel_key);
        assert_eq!(registry.lookup(a_pid, &a_secret), None);
        let server = ServerKey {
            process_id: 42,
            secret_key: *b"abcd",
        };
        a.cancel.set(Some(server));
        assert_eq!(registry.lookup(a_pid, &a_secret), Some(server));
        assert_eq!(registry.lookup(b_pid, &b_secret), None);
        assert_eq!(registry.lookup(a_pid, &b_secret), None);
        registry.unregister(a.cancel_key);
        assert_eq!(registry.lookup(a_pid, &a_secret), None);
        assert_eq!(registry.len(), 1);
    }
}
