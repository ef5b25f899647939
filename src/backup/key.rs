//! The repository key: 32 random bytes kept on the cluster's hosts, never in the
//! repository. Every manifest and every WAL object carries an HMAC-SHA256 under it, so
//! whoever can write to the bucket (or the local repository directory) cannot make a
//! restore, drill, verify or clone use anything this cluster did not write.
//!
//! The file holds the key as 64 hex digits. It is created once (`up`), 0600 and owned by
//! PostgreSQL's user (whose `wal push`/`wal fetch` sign and check WAL), and never
//! overwritten. Every host that writes or restores this repository needs the same file.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use anyhow::Context as _;
use hmac::{Hmac, KeyInit, Mac};
use rand::RngCore;
use sha2::Sha256;

use crate::run_as::RunAs;

#[derive(Clone)]
pub struct RepositoryKey([u8; 32]);

impl std::fmt::Debug for RepositoryKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RepositoryKey({})", self.fingerprint())
    }
}

impl RepositoryKey {
    /// Reads the key; a missing file names what to do about it.
    pub fn load(path: &Path) -> anyhow::Result<RepositoryKey> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => anyhow::bail!(
                "the repository key {} is missing: copy it from the host that created this \
                 repository (backup.repository_key_file); without it no backup can be \
                 verified, so none is used",
                path.display()
            ),
            Err(e) => return Err(e).with_context(|| format!("read {}", path.display())),
        };
        let meta =
            std::fs::metadata(path).with_context(|| format!("inspect {}", path.display()))?;
        anyhow::ensure!(
            meta.mode() & 0o077 == 0,
            "the repository key {} is readable or writable by others (mode {:o}); \
             `chmod 600` it",
            path.display(),
            meta.mode() & 0o7777
        );
        Self::from_hex(text.trim()).with_context(|| {
            format!(
                "{} is not a repository key (64 hex digits expected)",
                path.display()
            )
        })
    }

    fn from_hex(text: &str) -> anyhow::Result<RepositoryKey> {
        anyhow::ensure!(
            text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()),
            "bad length or characters"
        );
        let mut bytes = [0u8; 32];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16)?;
        }
        Ok(RepositoryKey(bytes))
    }

    /// Creates the key file when it does not exist; an existing one is never replaced.
    /// Returns whether it was created. The new key is written to a fresh file beside it
    /// (O_EXCL, O_NOFOLLOW, owned and moded through its descriptor) and hard-linked into
    /// place, so a reader never sees half a key and a second creator loses the race.
    pub fn create_if_missing(path: &Path, run_as: Option<&RunAs>) -> anyhow::Result<bool> {
        if std::fs::symlink_metadata(path).is_ok() {
            return Ok(false);
        }
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        let text = format!("{}\n", hex(&bytes));
        let dir = path
            .parent()
            .context("the repository key path has no directory")?;
        let temp = dir.join(format!(
            ".repository-key.{}.{:016x}",
            std::process::id(),
            rand::random::<u64>()
        ));
        let written = (|| -> anyhow::Result<()> {
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(nix::libc::O_NOFOLLOW)
                .open(&temp)
                .with_context(|| format!("create {}", temp.display()))?;
            if let Some(account) = run_as {
                std::os::unix::fs::fchown(
                    &file,
                    Some(account.uid.as_raw()),
                    Some(account.gid.as_raw()),
                )
                .with_context(|| format!("chown {}", temp.display()))?;
            }
            file.write_all(text.as_bytes())
                .and_then(|()| file.sync_all())
                .with_context(|| format!("write {}", temp.display()))?;
            Ok(())
        })();
        let linked = written.and_then(|()| match std::fs::hard_link(&temp, path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(e).with_context(|| format!("create {}", path.display())),
        });
        let _ = std::fs::remove_file(&temp);
        let created = linked?;
        if created {
            tracing::info!(
                key = %path.display(),
                "created the backup repository key; every host that writes or restores \
                 this repository needs a copy of it (0600)"
            );
        }
        Ok(created)
    }

    /// A random key, for tests.
    #[cfg(test)]
    pub fn random() -> RepositoryKey {
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        RepositoryKey(bytes)
    }

    fn hmac(&self, domain: &str, parts: &[&[u8]]) -> Hmac<Sha256> {
        let mut mac =
            <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(domain.as_bytes());
        for part in parts {
            // Length-prefixed, so no two different part lists give the same input.
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        }
        mac
    }

    /// HMAC-SHA256 of `parts` under `domain` (what kind of object it authenticates).
    pub fn sign(&self, domain: &str, parts: &[&[u8]]) -> [u8; 32] {
        self.hmac(domain, parts).finalize().into_bytes().into()
    }

    /// Whether `tag` is the HMAC of `parts`, compared in constant time.
    pub fn verify(&self, domain: &str, parts: &[&[u8]], tag: &[u8]) -> bool {
        self.hmac(domain, parts).verify_slice(tag).is_ok()
    }

    /// A short public name of the key, so "signed with another key" can be told apart
    /// from "forged" in messages (it reveals nothing of the key).
    pub fn fingerprint(&self) -> String {
        hex(&self.sign("pgplatform repository key id", &[])[..8])
    }
}

/// Lower-case hex, as stored in headers and manifests.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_private_and_never_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("repository.key");
        let missing = RepositoryKey::load(&path).unwrap_err().to_string();
        assert!(missing.contains("copy it from the host"), "{missing}");
        assert!(RepositoryKey::create_if_missing(&path, None).unwrap());
        let key = RepositoryKey::load(&path).unwrap();
        assert!(!RepositoryKey::create_if_missing(&path, None).unwrap());
        assert_eq!(
            RepositoryKey::load(&path).unwrap().fingerprint(),
            key.fingerprint()
        );
        let mode = std::fs::metadata(&path).unwrap().mode();
        assert_eq!(mode & 0o777, 0o600);
        // Nothing left beside it.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);

        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(RepositoryKey::load(&path).is_err());
    }

    #[test]
    fn a_planted_symlink_is_not_followed_or_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        let path = dir.path().join("repository.key");
        std::os::unix::fs::symlink(&victim, &path).unwrap();
        assert!(!RepositoryKey::create_if_missing(&path, None).unwrap());
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    }

    #[test]
    fn tags_depend_on_key_domain_and_every_part() {
        let (a, b) = (RepositoryKey::random(), RepositoryKey::random());
        let tag = a.sign("d", &[b"x", b"y"]);
        assert!(a.verify("d", &[b"x", b"y"], &tag));
        assert!(!b.verify("d", &[b"x", b"y"], &tag));
        assert!(!a.verify("e", &[b"x", b"y"], &tag));
        assert!(!a.verify("d", &[b"xy"], &tag));
        assert!(!a.verify("d", &[b"x", b"y"], &tag[..31]));
        assert_ne!(a.fingerprint(), b.fingerprint());
    }
}
