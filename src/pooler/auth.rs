//! Where client passwords are checked against: the role's SCRAM verifier in pg_authid,
//! read through the agent's superuser connection — no userlist. It is read at every
//! login, as PgBouncer's auth_query does, so a password changed by `tenant rotate` or by
//! hand (`ALTER ROLE … PASSWORD`) counts from the next login on, and a failed login
//! leaves nothing behind. The read is one round trip of an already prepared statement on
//! a connection kept open (`verifier_lookup.rs`); concurrent logins take turns on it.
//!
//! Unknown roles get a mock verifier derived from a persisted key (`MockKey`), after the
//! same catalog read, so a known and an unknown role take the same path at the same cost
//! and an unknown role's fake salt is the same at every try and after a restart: neither
//! timing nor salts tell which roles exist.

use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::scram::{MockKey, Secret, Verifier};
use super::verifier_lookup::LookupConn;

pub struct AuthSource {
    /// PostgreSQL's socket file.
    socket: PathBuf,
    /// The lookup connection; a login holds it for one round trip.
    lookup: tokio::sync::Mutex<Option<LookupConn>>,
    mock_key: MockKey,
}

impl AuthSource {
    pub fn new(socket_dir: PathBuf, port: u16, mock_key: MockKey) -> AuthSource {
        AuthSource {
            socket: socket_dir.join(format!(".s.PGSQL.{port}")),
            lookup: tokio::sync::Mutex::new(None),
            mock_key,
        }
    }

    /// The role's secret as pg_authid has it now: its verifier, or a mock one for a role
    /// that does not exist, cannot log in, has expired or has no SCRAM secret (all
    /// answered like a wrong password). A connection that failed is opened again once.
    pub async fn secret(&self, role: &str) -> anyhow::Result<Secret> {
        let mut slot = self.lookup.lock().await;
        for attempt in 0..2 {
            if !slot.as_ref().is_some_and(LookupConn::is_usable) {
                *slot = None;
                let conn = LookupConn::open(
                    &self.socket,
                    crate::pg::SUPERUSER,
                    "postgres",
                    crate::pg::connect::PINNED_OPTIONS,
                )
                .await?;
                *slot = Some(conn);
            }
            let Some(conn) = slot.as_mut() else {
                continue;
            };
            match conn.verifier(role).await {
                Ok(stored) => {
                    // Made for every role, so a known one costs what an unknown one does.
                    let mock = self.mock_key.mock(role);
                    return Ok(match stored.as_deref().and_then(Verifier::parse) {
                        Some(verifier) => Secret::Real(verifier),
                        None => mock,
                    });
                }
                Err(e) if attempt == 0 && !conn.is_usable() => {
                    tracing::debug!("verifier lookup failed, reconnecting: {e:#}");
                }
                Err(e) => return Err(e),
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
}
