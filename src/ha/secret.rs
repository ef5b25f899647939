//! The cluster secret: random bytes in a 0600 file that every node has. Each node derives
//! from it, locally, the replication role's password and the token agents present to each
//! other, so neither ever travels through etcd.

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
                crate::pg::conf::write_atomically(&temp, format!("{text}\n").as_bytes(), 0o600)
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

    /// The bearer token agents of one cluster accept from each other.
    pub fn agent_token(&self) -> String {
        self.derive("pgplatform agent token")
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
        assert_ne!(a.replication_password(), a.agent_token());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
