//! Continuous WAL archiving: `wal push` (PostgreSQL's archive_command) and `wal fetch`
//! (its restore_command). Push is idempotent — the same file with the same content is a
//! success, the same name with other content a loud failure — and succeeds only after
//! the repository has the object durably.

use std::path::Path;

use anyhow::Context as _;
use bytes::Bytes;

use super::envelope;
use super::repo::Repo;

/// The repository key of a WAL file.
pub fn key(name: &str) -> String {
    super::layout::wal_key(name)
}

/// Segment (`000000010000000000000003`), timeline history (`00000002.history`),
/// backup history (`…0003.00000028.backup`) or partial segment (`….partial`) names.
pub fn is_wal_name(name: &str) -> bool {
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    match name.split('.').collect::<Vec<_>>().as_slice() {
        [seg] => hex(seg, 24),
        [tli, "history"] => hex(tli, 8),
        [seg, "partial"] => hex(seg, 24),
        [seg, offset, "backup"] => hex(seg, 24) && hex(offset, 8),
        _ => false,
    }
}

/// The outcome of a push, for the message.
#[derive(Debug, PartialEq, Eq)]
pub enum Pushed {
    Stored,
    AlreadyThere,
}

pub async fn push(repo: &Repo, path: &Path, level: i32) -> anyhow::Result<Pushed> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    anyhow::ensure!(
        is_wal_name(&name),
        "`{}` is not a WAL file name",
        path.display()
    );
    let raw = tokio::fs::read(path)
        .await
        .with_context(|| format!("read {}", path.display()))?;
    let key = key(&name);
    if let Some(existing) = repo.get(&key).await? {
        // An object that does not verify is never overwritten either: it may be another
        // cluster's (another key); either way a human must look.
        let (header, _) = envelope::header(repo.key(), &existing)
            .with_context(|| format!("read the stored {key} in {}", repo.describe()))?;
        if header.name == name && header.raw_sha256 == envelope::sha256_hex(&raw) {
            return Ok(Pushed::AlreadyThere);
        }
        anyhow::bail!(
            "WAL file {name} is already archived in {} with DIFFERENT content; refusing to \
             overwrite it. Is another cluster archiving into the same repository?",
            repo.describe()
        );
    }
    let sealing_key = repo.key().clone();
    let object =
        tokio::task::spawn_blocking(move || envelope::seal(&sealing_key, &name, &raw, level))
            .await??;
    repo.put(&key, Bytes::from(object)).await?;
    Ok(Pushed::Stored)
}

/// Why a fetch did not produce the file.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// Normal at the end of the archive: PostgreSQL asks for files that do not exist.
    #[error("{0} is not in the repository")]
    NotFound(String),
    /// A stored object that fails its checksum: recovery must stop, not end early.
    #[error("{0}")]
    Corrupt(String),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

pub async fn fetch(repo: &Repo, name: &str, dest: &Path) -> Result<(), FetchError> {
    if !is_wal_name(name) {
        return Err(anyhow::anyhow!("`{name}` is not a WAL file name").into());
    }
    let key = key(name);
    let object = repo
        .get(&key)
        .await?
        .ok_or_else(|| FetchError::NotFound(name.to_owned()))?;
    let (_, raw) = envelope::open(repo.key(), name, &object)
        .map_err(|e| FetchError::Corrupt(format!("{key} in {}: {e:#}", repo.describe())))?;
    // Complete or absent: PostgreSQL may read the file as soon as it exists.
    let temp = dest.with_extension("pgplatform-tmp");
    tokio::fs::write(&temp, &raw)
        .await
        .with_context(|| format!("write {}", temp.display()))?;
    tokio::fs::rename(&temp, dest)
        .await
        .with_context(|| format!("rename to {}", dest.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wal_names_are_recognised() {
        for ok in [
            "000000010000000000000003",
            "00000002.history",
            "000000010000000000000003.00000028.backup",
            "000000010000000000000003.partial",
        ] {
            assert!(is_wal_name(ok), "{ok}");
        }
        for bad in [
            "",
            "../etc/passwd",
            "00000001",
            "0000000100000000000000ZZ",
            "x.history",
        ] {
            assert!(!is_wal_name(bad), "{bad}");
        }
    }

    #[tokio::test]
    async fn push_is_idempotent_and_refuses_different_content() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repo::new(
            super::super::repo::Store::Local(super::super::repo::LocalRepo::new(
                &dir.path().join("repo"),
            )),
            super::super::key::RepositoryKey::random(),
        );
        let wal = dir.path().join("000000010000000000000001");
        std::fs::write(&wal, vec![1u8; 4096]).unwrap();
        assert_eq!(push(&repo, &wal, 3).await.unwrap(), Pushed::Stored);
        assert_eq!(push(&repo, &wal, 3).await.unwrap(), Pushed::AlreadyThere);
        std::fs::write(&wal, vec![2u8; 4096]).unwrap();
        let err = push(&repo, &wal, 3).await.unwrap_err().to_string();
        assert!(err.contains("DIFFERENT content"), "{err}");

        let out = dir.path().join("restored");
        fetch(&repo, "000000010000000000000001", &out)
            .await
            .unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), vec![1u8; 4096]);
        assert!(matches!(
            fetch(&repo, "000000010000000000000002", &out).await,
            Err(FetchError::NotFound(_))
        ));
        // A flipped byte in the stored object stops recovery instead of ending it early.
        let stored = dir.path().join("repo/wal/000000010000000000000001.zst");
        let mut bytes = std::fs::read(&stored).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&stored, bytes).unwrap();
        assert!(matches!(
            fetch(&repo, "000000010000000000000001", &out).await,
            Err(FetchError::Corrupt(_))
        ));
    }

    #[tokio::test]
    async fn forged_or_renamed_wal_stops_recovery() {
        let dir = tempfile::tempdir().unwrap();
        let store = || {
            super::super::repo::Store::Local(super::super::repo::LocalRepo::new(
                &dir.path().join("repo"),
            ))
        };
        let repo = Repo::new(store(), super::super::key::RepositoryKey::random());
        let attacker = Repo::new(store(), super::super::key::RepositoryKey::random());
        let wal = dir.path().join("000000010000000000000001");
        std::fs::write(&wal, vec![1u8; 4096]).unwrap();
        // Written by someone without this cluster's key: checksums fine, HMAC not.
        assert_eq!(push(&attacker, &wal, 3).await.unwrap(), Pushed::Stored);
        let out = dir.path().join("restored");
        assert!(matches!(
            fetch(&repo, "000000010000000000000001", &out).await,
            Err(FetchError::Corrupt(_))
        ));
        assert!(!out.exists());
        // Nor does this cluster's push take it for its own.
        assert!(push(&repo, &wal, 3).await.is_err());
        // A genuine segment copied under the next segment's name.
        let next = dir.path().join("000000010000000000000002");
        std::fs::write(&next, vec![2u8; 4096]).unwrap();
        assert_eq!(push(&repo, &next, 3).await.unwrap(), Pushed::Stored);
        let stored = |n: &str| dir.path().join(format!("repo/wal/{n}.zst"));
        std::fs::copy(
            stored("000000010000000000000002"),
            stored("000000010000000000000003"),
        )
        .unwrap();
        assert!(matches!(
            fetch(&repo, "000000010000000000000003", &out).await,
            Err(FetchError::Corrupt(_))
        ));
    }
}
