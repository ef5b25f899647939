//! The cluster secret: random bytes in a 0600 file that every node has. Each node derives
//! from it, locally, the replication role's password and the keys that authenticate the
//! agents to each other (signed requests, `peer.rs`) and their member records in etcd
//! (`keys.rs`), so none of them ever travels through etcd or over the network.

use std::path::Path;

use anyhow::Context;
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use rand::RngCore;
use sha2::Sha256;

pub struct ClusterSecret(Vec<u8>);

impl ClusterSecret {
    /// Reads the secret; with `create`, makes a new one when the file does not exist
    /// (only the node that bootstraps the cluster may).
    pub fn load(path: &Path, create: bool) -> anyhow::Result<ClusterSecret> {
        match std::fs::read(path) {
            // Trimmed, so a copy that gained or lost a final newline still matches.
            Ok(bytes) if bytes.trim_ascii().len() >= 32 => {
                Ok(ClusterSecret(bytes.trim_ascii().to_vec()))
            }
            Ok(_) => anyhow::bail!(
                "{} holds fewer than 32 bytes; it is not a cluster secret",
                path.display()
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
                let mut bytes = vec![0u8; 48];
                rand::rngs::OsRng.fill_bytes(&mut bytes);
                let text = base64::engine::general_purpose::STANDARD.encode(&bytes);
                // Written aside, then linked into place: it fails if another node on this
                // machine created the file meanwhile, and that one's secret wins.
                let temp = path.with_extension(format!("new.{}", std::process::id()));
                crate::safe_file::replace(&temp, format!("{text}\n").as_bytes(), 0o600, None)
                    .with_context(|| format!("create the cluster secret {}", path.display()))?;
                let linked = std::fs::hard_link(&temp, path);
                let _ = std::fs::remove_file(&temp);
                match linked {
                    Ok(()) => tracing::info!(
                        "created the cluster secret {}; copy it to every other node",
                        path.display()
                    ),
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(e).with_context(|| format!("create {}", path.display())),
                }
                Self::load(path, false)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => anyhow::bail!(
                "the cluster secret {} is missing: copy it from a node of the cluster \
                 (ha.secret_file)",
                path.display()
            ),
            Err(e) => Err(e).with_context(|| format!("read {}", path.display())),
        }
    }

    fn derive(&self, label: &str) -> String {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0)
            .expect("HMAC takes keys of any length");
        mac.update(label.as_bytes());
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    }

    /// The password of the replication role (also used by pg_rewind).
    pub fn replication_password(&self) -> String {
        self.derive("pgplatform replication role")
    }

    /// HMAC-SHA256 of `message` under the key derived for `purpose`: purposes never share
    /// a key, so a record's MAC is never a valid request signature and vice versa.
    fn mac(&self, purpose: Purpose, message: &[u8]) -> Hmac<Sha256> {
        let key = self.derive(purpose.label());
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key.as_bytes())
            .expect("HMAC takes keys of any length");
        mac.update(message);
        mac
    }

    /// The MAC of `message` for `purpose`, base64url.
    pub fn sign(&self, purpose: Purpose, message: &[u8]) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(self.mac(purpose, message).finalize().into_bytes())
    }

    /// Whether `signature` (base64url) is the MAC of `message` for `purpose`; compared in
    /// constant time.
    pub fn verify(&self, purpose: Purpose, message: &[u8], signature: &str) -> bool {
        let Ok(bytes) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(signature) else {
            return false;
        };
        self.mac(purpose, message).verify_slice(&bytes).is_ok()
    }
}

/// What a MAC made with the cluster secret vouches for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// A request from one agent to another (`peer.rs`).
    Request,
    /// A member record published in etcd (`keys.rs`).
    MemberRecord,
}

impl Purpose {
    fn label(self) -> &'static str {
        match self {
            Purpose::Request => "pgplatform agent request signing",
            Purpose::MemberRecord => "pgplatform member record",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_values_are_stable_distinct_and_need_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cluster.secret");
        assert!(ClusterSecret::load(&path, false)
            .err()
            .unwrap()
            .to_string()
            .contains("copy it from a node"));
        let a = ClusterSecret::load(&path, true).unwrap();
        let b = ClusterSecret::load(&path, false).unwrap();
        assert_eq!(a.replication_password(), b.replication_password());
        let signature = a.sign(Purpose::Request, b"message");
        assert!(b.verify(Purpose::Request, b"message", &signature));
        assert!(!b.verify(Purpose::Request, b"messagE", &signature));
        assert!(!b.verify(Purpose::MemberRecord, b"message", &signature));
        assert!(!b.verify(Purpose::Request, b"message", "not base64!"));
        assert_ne!(a.replication_password(), signature);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
