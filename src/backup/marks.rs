//! Restore points: `backup mark NAME` has the primary write a named restore point into
//! its WAL (`pg_create_restore_point`, through the agent's API) and records it here,
//! sealed like a manifest (HMAC under the repository key, bound to its object key), so
//! `restore --name NAME` knows where it is and which base backup comes before it. A mark
//! that does not verify is refused, never used.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::catalog::Refused;
use super::layout::{self, parse_lsn};
use super::manifest;
use super::repo::Repo;

/// PostgreSQL keeps restore point names to 63 bytes (MAXFNAMELEN - 1).
pub const MAX_NAME_BYTES: usize = 63;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mark {
    pub name: String,
    /// Where the restore point's WAL record ends (what `pg_create_restore_point` returned).
    pub lsn: String,
    pub time: DateTime<Utc>,
    pub timeline: u32,
    pub system_identifier: String,
}

impl Mark {
    pub fn lsn(&self) -> u64 {
        parse_lsn(&self.lsn).unwrap_or(u64::MAX)
    }

    /// The form of every value that later reaches postgresql.auto.conf.
    fn check(&self, stored_as: &str) -> anyhow::Result<()> {
        anyhow::ensure!(self.name == stored_as, "it describes mark {:?}", self.name);
        check_name(&self.name)?;
        anyhow::ensure!(
            manifest::is_lsn(&self.lsn),
            "lsn {:?} is not an LSN",
            self.lsn
        );
        Ok(())
    }
}

/// A restore point name: 1 to 63 bytes of ASCII letters, digits, `_ - . :`, starting
/// with a letter or digit (it becomes a repository key and a setting).
pub fn check_name(name: &str) -> anyhow::Result<()> {
    anyhow::ensure!(!name.is_empty(), "a restore point name cannot be empty");
    anyhow::ensure!(
        name.len() <= MAX_NAME_BYTES,
        "restore point name {name:?} is {} bytes long; PostgreSQL's limit is {MAX_NAME_BYTES}",
        name.len()
    );
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':')))
    {
        anyhow::bail!(
            "restore point name {name:?} contains {bad:?}; use letters, digits and _ - . : only"
        );
    }
    anyhow::ensure!(
        name.starts_with(|c: char| c.is_ascii_alphanumeric()),
        "restore point name {name:?} must start with a letter or digit"
    );
    Ok(())
}

/// Records `mark`; a name already recorded is refused (PostgreSQL would stop at the
/// first of two restore points with one name, which is rarely what the second meant).
pub async fn save(repo: &Repo, mark: &Mark) -> anyhow::Result<()> {
    check_name(&mark.name)?;
    let key = layout::mark_key(&mark.name);
    anyhow::ensure!(
        repo.list(&key).await?.iter().all(|o| o.key != key),
        "a restore point named {:?} is already recorded in {}; choose another name",
        mark.name,
        repo.describe()
    );
    let sealed = manifest::seal(repo.key(), &key, mark)?;
    repo.put(&key, bytes::Bytes::from(sealed)).await
}

/// Every recorded mark, oldest first, and the refused ones (logged).
pub struct Scan {
    pub marks: Vec<Mark>,
    pub refused: Vec<Refused>,
}

pub async fn scan(repo: &Repo) -> anyhow::Result<Scan> {
    let mut marks = Vec::new();
    let mut refused = Vec::new();
    for object in repo.list("mark/").await? {
        let Some(name) = object.key.strip_prefix("mark/") else {
            continue;
        };
        let Some(bytes) = repo.get(&object.key).await? else {
            continue;
        };
        let opened = check_name(name)
            .and_then(|()| manifest::open::<Mark>(repo.key(), &object.key, &bytes))
            .and_then(|m| m.check(name).map(|()| m));
        match opened {
            Ok(m) => marks.push(m),
            Err(e) => {
                let one = Refused {
                    what: "restore point",
                    id: name.to_owned(),
                    reason: format!("{e:#}"),
                };
                tracing::error!(mark = ?name, repository = %repo.describe(), "{one}");
                refused.push(one);
            }
        }
    }
    marks.sort_by(|a, b| (a.time, &a.name).cmp(&(b.time, &b.name)));
    Ok(Scan { marks, refused })
}

/// The verified mark `name`, or why there is none.
pub async fn find(repo: &Repo, name: &str) -> anyhow::Result<Mark> {
    check_name(name)?;
    let scan = scan(repo).await?;
    if let Some(refused) = scan.refused.iter().find(|r| r.id == name) {
        anyhow::bail!("{refused}");
    }
    scan.marks
        .into_iter()
        .find(|m| m.name == name)
        .ok_or_else(|| {
            anyhow::anyhow!(
                "no restore point named {name:?} in {}; see `pgplatform backup list`",
                repo.describe()
            )
        })
}

#[cfg(test)]
mod tests {
    use super::check_name;

    #[test]
    fn names_are_checked_clearly() {
        for ok in ["before-migration", "v2.1:pre", "a", &"x".repeat(63)] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        let err = |n: &str| check_name(n).unwrap_err().to_string();
        assert!(err("").contains("empty"));
        assert!(err(&"x".repeat(64)).contains("64 bytes"));
        assert!(err("a\nb").contains("'\\n'"));
        assert!(err("a/b").contains("'/'"));
        assert!(err("a'b").contains("'\\''"));
        assert!(err(".hidden").contains("start with"));
        assert!(err("café").contains("'é'"));
    }
}
