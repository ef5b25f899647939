//! Where client passwords are checked against: the role's SCRAM verifier in pg_authid,
//! read through the agent's superuser connection — no userlist. Lookups are cached for a
//! few seconds so connection-per-transaction clients do not each cost a catalog query;
//! `tenant create`, `rotate` and `drop` evict the role at once (`VerifierCache::forget`),
//! and a change made behind the agent's back (ALTER ROLE by hand) shows within `TTL`.
//!
//! Unknown roles are cached too, as a mock verifier derived from a persisted key
//! (`MockKey`), so a known and an unknown role take the same path at the same cost and
//! an unknown role's fake salt is the same at every try and after a restart: neither
//! timing nor salts tell which roles exist.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio_postgres::Client;

use super::scram::{MockKey, Secret, Verifier};

/// How long a looked-up verifier (or the absence of one) is trusted.
const TTL: Duration = Duration::from_secs(5);

/// Most roles cached at once. Names are client-chosen (an unknown role is cached too), so
/// the map is bounded: when full, expired entries go, and if it is still full, all do.
const MAX_ENTRIES: usize = 10_000;

/// Recently read verifiers, shared by the pooler and the tenant service.
#[derive(Default)]
pub struct VerifierCache {
    entries: Mutex<HashMap<String, (Secret, Instant)>>,
}

impl VerifierCache {
    fn get(&self, role: &str) -> Option<Secret> {
        let entries = self.entries.lock().ok()?;
        let (secret, at) = entries.get(role)?;
        (at.elapsed() < TTL).then(|| secret.clone())
    }

    fn put(&self, role: &str, secret: Secret) {
        if let Ok(mut entries) = self.entries.lock() {
            if entries.len() >= MAX_ENTRIES && !entries.contains_key(role) {
                entries.retain(|_, (_, at)| at.elapsed() < TTL);
                if entries.len() >= MAX_ENTRIES {
                    entries.clear();
                }
            }
            entries.insert(role.to_owned(), (secret, Instant::now()));
        }
    }

    /// HA replica: roles changed on the primary; every next login reads its verifier again.
    pub fn forget_all(&self) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.clear();
        }
    }

    /// The role was created, its password changed or it is gone: the next login reads it
    /// again.
    pub fn forget(&self, role: &str) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.remove(role);
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.lock().map(|e| e.len()).unwrap_or_default()
    }
}

pub struct AuthSource {
    socket_dir: PathBuf,
    port: u16,
    client: tokio::sync::Mutex<Option<Client>>,
    cache: std::sync::Arc<VerifierCache>,
    mock_key: MockKey,
}

impl AuthSource {
    pub fn new(
        socket_dir: PathBuf,
        port: u16,
        cache: std::sync::Arc<VerifierCache>,
        mock_key: MockKey,
    ) -> AuthSource {
        AuthSource {
            socket_dir,
            port,
            client: tokio::sync::Mutex::new(None),
            cache,
            mock_key,
        }
    }

    /// The role's secret: its verifier, or a mock one for a role that does not exist,
    /// cannot log in, has expired or has no SCRAM secret (all answered like a wrong
    /// password). Both are cached alike.
    pub async fn secret(&self, role: &str) -> anyhow::Result<Secret> {
        if let Some(secret) = self.cache.get(role) {
            return Ok(secret);
        }
        let mut slot = self.client.lock().await;
        for attempt in 0..2 {
            if slot.as_ref().is_none_or(|c| c.is_closed()) {
                *slot = Some(
                    crate::pg::connect::superuser(&self.socket_dir, self.port, "postgres").await?,
                );
            }
            let Some(client) = slot.as_ref() else {
                continue;
            };
            let result = client
                .query_opt(
                    "SELECT rolpassword FROM pg_catalog.pg_authid WHERE rolname = $1 AND rolcanlogin \
                     AND NOT rolsuper AND (rolvaliduntil IS NULL OR rolvaliduntil > now())",
                    &[&role],
                )
                .await;
            match result {
                Ok(row) => {
                    let stored: Option<String> = row.and_then(|r| r.try_get(0).ok()).flatten();
                    let secret = match stored.as_deref().and_then(Verifier::parse) {
                        Some(verifier) => Secret::Real(verifier),
                        None => self.mock_key.mock(role),
                    };
                    self.cache.put(role, secret.clone());
                    return Ok(secret);
                }
                Err(e) if attempt == 0 => {
                    tracing::debug!("verifier lookup failed, reconnecting: {e}");
                    *slot = None;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(self.mock_key.mock(role))
    }
}

/// Reads the mock-verifier key from `path`, creating it (32 random bytes, 0600) on first
/// use. Created with `O_CREAT|O_EXCL|O_NOFOLLOW`, so a file or symlink planted at that
/// path is never written through; read with `O_NOFOLLOW`.
pub fn load_or_create_mock_key(path: &Path) -> anyhow::Result<MockKey> {
    match read_key(path) {
        Ok(key) => return Ok(key),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("read {}", path.display())),
    }
    let key: [u8; 32] = rand::random();
    let created = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path);
    match created {
        Ok(mut file) => {
            file.write_all(&key)
                .and_then(|()| file.sync_all())
                .with_context(|| format!("write {}", path.display()))?;
            Ok(MockKey::new(key))
        }
        // Another listener of this agent created it meanwhile.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            read_key(path).with_context(|| format!("read {}", path.display()))
        }
        Err(e) => Err(e).with_context(|| format!("create {}", path.display())),
    }
}

fn read_key(path: &Path) -> std::io::Result<MockKey> {
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)?;
    let mut key = [0u8; 32];
    file.read_exact(&mut key).map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("expected 32 bytes of key: {e}; remove the file to make a new one"),
        )
    })?;
    Ok(MockKey::new(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mock_key_is_made_once_and_then_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("scram_mock_key");
        let first = load_or_create_mock_key(&path).unwrap();
        let again = load_or_create_mock_key(&path).unwrap();
        assert_eq!(
            first.mock("nobody").verifier(),
            again.mock("nobody").verifier()
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_symlink_at_the_key_path_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("victim");
        std::fs::write(&target, b"precious").unwrap();
        let path = dir.path().join("scram_mock_key");
        std::os::unix::fs::symlink(&target, &path).unwrap();
        assert!(load_or_create_mock_key(&path).is_err());
        assert_eq!(std::fs::read(&target).unwrap(), b"precious");
    }

    #[test]
    fn the_cache_stays_bounded_whatever_names_are_tried() {
        let cache = VerifierCache::default();
        let key = MockKey::new([1; 32]);
        for i in 0..(MAX_ENTRIES + 100) {
            let name = format!("guess{i}");
            cache.put(&name, key.mock(&name));
        }
        assert!(cache.len() <= MAX_ENTRIES, "{} entries", cache.len());
        assert!(
            cache.get("guess10099").is_some(),
            "the newest entry is kept"
        );
    }
}
