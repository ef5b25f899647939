//! What the repository holds and what to do with it, as pure functions over manifests:
//! listing, choosing the base backup for a recovery target, and retention (which
//! backups, dumps and WAL segments may go).

use chrono::{DateTime, Duration, Utc};

use super::manifest::{self, BaseManifest};
use super::repo::Repo;

pub use super::layout::parse_lsn;

/// A base backup whose manifest exists but does not verify (changed, forged, or sealed
/// with another repository key): never used, always reported.
#[derive(Debug, Clone)]
pub struct Refused {
    /// "backup", "dump" or "restore point".
    pub what: &'static str,
    pub id: String,
    pub reason: String,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the manifest of {} {:?} is refused: {}",
            self.what, self.id, self.reason
        )
    }
}

/// What the repository's manifests say, verified: usable backups oldest first, and the
/// refused ones.
pub struct Scan {
    pub backups: Vec<BaseManifest>,
    pub refused: Vec<Refused>,
}

impl Scan {
    /// The refused manifest of `id`, or of any backup newer than `id`: a caller about to
    /// use `id` as "the newest" (or by name) must not silently use something older.
    pub fn refused_from(&self, id: &str) -> Option<&Refused> {
        self.refused.iter().rev().find(|r| r.id.as_str() >= id)
    }

    /// The refusal of the newest backup, if the newest manifest is refused.
    pub fn newest_refused(&self) -> Option<&Refused> {
        let last = self.refused.last()?;
        match self.backups.last() {
            Some(b) if b.id >= last.id => None,
            _ => Some(last),
        }
    }
}

/// Every base backup with a manifest, each verified (HMAC under the repository key, then
/// the form of its values); backups without one were interrupted (or are being written)
/// and are not backups. Refused manifests are logged.
pub async fn scan(repo: &Repo) -> anyhow::Result<Scan> {
    let mut backups = Vec::new();
    let mut refused = Vec::new();
    for object in repo.list("base/").await? {
        let Some(id) = object
            .key
            .strip_prefix("base/")
            .and_then(|k| k.strip_suffix("/manifest"))
        else {
            continue;
        };
        let Some(bytes) = repo.get(&object.key).await? else {
            continue;
        };
        let opened = manifest::open::<BaseManifest>(repo.key(), &object.key, &bytes)
            .and_then(|m| m.check(id).map(|()| m));
        match opened {
            Ok(m) => backups.push(m),
            Err(e) => {
                let refused_one = Refused {
                    what: "backup",
                    id: id.to_owned(),
                    reason: format!("{e:#}"),
                };
                tracing::error!(backup = ?id, repository = %repo.describe(), "{refused_one}");
                refused.push(refused_one);
            }
        }
    }
    backups.sort_by(|a, b| a.id.cmp(&b.id));
    refused.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(Scan { backups, refused })
}

/// The verified base backups, oldest first (see `scan`).
pub async fn base_backups(repo: &Repo) -> anyhow::Result<Vec<BaseManifest>> {
    Ok(scan(repo).await?.backups)
}

/// Where recovery should stop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The end of the archived WAL.
    Latest,
    Time(DateTime<Utc>),
    Lsn(u64),
    /// A restore point recorded by `backup mark` (its name, and where its record ends).
    Name {
        name: String,
        lsn: u64,
    },
    /// A transaction id (64-bit as `pg_current_xact_id` prints it, or 32-bit).
    Xid(u64),
}

/// The base backup chosen for a target, and anything the operator should know about
/// the choice.
pub struct Chosen<'a> {
    pub backup: &'a BaseManifest,
    pub note: Option<String>,
}

/// The newest backup that is consistent before the target, with `requested` (an id)
/// taking precedence when given.
pub fn choose<'a>(
    backups: &'a [BaseManifest],
    target: &Target,
    requested: Option<&str>,
) -> anyhow::Result<Chosen<'a>> {
    anyhow::ensure!(
        !backups.is_empty(),
        "the repository has no base backup yet; run `pgplatform backup run`"
    );
    if let Some(id) = requested {
        let backup = backups
            .iter()
            .find(|b| b.id == id)
            .ok_or_else(|| anyhow::anyhow!("no base backup {id}; see `pgplatform backup list`"))?;
        check_reachable(backup, target)?;
        return Ok(Chosen { backup, note: None });
    }
    let fits = |b: &&BaseManifest| check_reachable(b, target).is_ok();
    if let Some(backup) = backups.iter().rev().find(fits) {
        return Ok(Chosen { backup, note: None });
    }
    let oldest = &backups[0];
    match target {
        Target::Xid(xid) if oldest.next_xid.is_none() => Ok(Chosen {
            backup: oldest,
            note: Some(format!(
                "no backup records which transactions began after it (taken by an older \
                 version), so transaction {xid} may have committed after any of them: \
                 restoring the oldest, {}, to be sure to replay its commit",
                oldest.id
            )),
        }),
        _ => Err(check_reachable(oldest, target)
            .err()
            .unwrap_or_else(|| anyhow::anyhow!("no backup fits the target"))
            .context(
                "the target is before the oldest backup; the repository cannot recover to it",
            )),
    }
}

fn check_reachable(backup: &BaseManifest, target: &Target) -> anyhow::Result<()> {
    let stop = parse_lsn(&backup.stop_lsn).unwrap_or(u64::MAX);
    match target {
        Target::Latest => Ok(()),
        Target::Time(t) => {
            anyhow::ensure!(
                backup.stopped_at <= *t,
                "backup {} completed at {}, after the target time {t}",
                backup.id,
                backup.stopped_at
            );
            Ok(())
        }
        Target::Lsn(lsn) => {
            anyhow::ensure!(
                stop <= *lsn,
                "backup {} ends at {}, after the target LSN",
                backup.id,
                backup.stop_lsn
            );
            Ok(())
        }
        Target::Name { name, lsn } => {
            anyhow::ensure!(
                stop <= *lsn,
                "backup {} ends at {}, after restore point {name:?}",
                backup.id,
                backup.stop_lsn
            );
            Ok(())
        }
        Target::Xid(xid) => match backup.next_xid {
            Some(next) if next <= *xid => Ok(()),
            Some(next) => anyhow::bail!(
                "backup {} ended when transaction {next} was the next to begin: \
                 transaction {xid} may have committed before it ended",
                backup.id
            ),
            None => anyhow::bail!(
                "backup {} does not record which transactions began after it",
                backup.id
            ),
        },
    }
}

/// The ids retention removes: all but the newest `keep` (and any younger than
/// `keep_days`, when set). The newest is never removed.
pub fn expired(
    ids_oldest_first: &[(String, DateTime<Utc>)],
    keep: u32,
    keep_days: u32,
    now: DateTime<Utc>,
) -> Vec<String> {
    let n = ids_oldest_first.len();
    let keep = (keep.max(1) as usize).min(n);
    ids_oldest_first[..n - keep]
        .iter()
        .filter(|(_, at)| keep_days == 0 || now - *at > Duration::days(i64::from(keep_days)))
        .map(|(id, _)| id.clone())
        .collect()
}

/// The segment number of a WAL file name (`TTTTTTTTXXXXXXXXYYYYYYYY…`), ignoring the
/// timeline; `None` for history files.
fn segment_number(name: &str) -> Option<u64> {
    let base = name.split('.').next()?;
    if base.len() != 24 || name.ends_with(".history") {
        return None;
    }
    let log = u64::from_str_radix(&base[8..16], 16).ok()?;
    let seg = u64::from_str_radix(&base[16..24], 16).ok()?;
    Some((log << 32) | seg)
}

/// The segment name with the lowest segment number (timelines aside).
pub fn lowest_segment<'a>(names: &[&'a str]) -> Option<&'a str> {
    names
        .iter()
        .filter_map(|n| segment_number(n).map(|s| (s, *n)))
        .min()
        .map(|(_, n)| n)
}

/// Archived WAL keys no retained backup needs: segments before the oldest retained
/// backup's first segment. Timeline history files are always kept.
pub fn wal_to_delete(wal_keys: &[String], oldest_needed: &str) -> Vec<String> {
    let Some(limit) = segment_number(oldest_needed) else {
        return Vec::new();
    };
    wal_keys
        .iter()
        .filter(|key| {
            let name = key.trim_start_matches("wal/").trim_end_matches(".zst");
            segment_number(name).is_some_and(|n| n < limit)
        })
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(h: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + h * 3600, 0).unwrap()
    }

    fn backup(id: &str, hour: i64, stop_lsn: &str, next_xid: Option<u64>) -> BaseManifest {
        BaseManifest {
            id: id.into(),
            started_at: at(hour),
            stopped_at: at(hour),
            start_lsn: "0/1000000".into(),
            stop_lsn: stop_lsn.into(),
            start_wal: "000000010000000000000001".into(),
            stop_wal: "000000010000000000000001".into(),
            timeline: 1,
            pg_version: "15".into(),
            system_identifier: "1".into(),
            data_bytes: 0,
            object: super::super::manifest::ObjectRef {
                key: String::new(),
                size: 0,
                sha256: String::new(),
            },
            files: Vec::new(),
            tenants: Vec::new(),
            counts_lsn: None,
            next_xid,
        }
    }

    #[test]
    fn every_kind_of_target_gets_the_newest_backup_before_it() {
        let backups = [
            backup("a", 0, "0/2000000", Some(100)),
            backup("b", 10, "0/5000000", Some(500)),
        ];
        let chosen = |t: &Target| choose(&backups, t, None).map(|c| c.backup.id.clone());
        assert_eq!(chosen(&Target::Time(at(5))).unwrap(), "a");
        assert_eq!(chosen(&Target::Time(at(11))).unwrap(), "b");
        assert_eq!(chosen(&Target::Lsn(0x4000000)).unwrap(), "a");
        let name = |lsn| Target::Name {
            name: "m".into(),
            lsn,
        };
        assert_eq!(chosen(&name(0x5000000)).unwrap(), "b");
        assert_eq!(chosen(&name(0x3000000)).unwrap(), "a");
        // A transaction that began before b ended may have committed before it ended.
        assert_eq!(chosen(&Target::Xid(499)).unwrap(), "a");
        assert_eq!(chosen(&Target::Xid(500)).unwrap(), "b");
        let err = chosen(&Target::Xid(99)).unwrap_err();
        assert!(
            format!("{err:#}").contains("before the oldest backup"),
            "{err:#}"
        );
        assert!(chosen(&name(0x1000000)).is_err());
    }

    #[test]
    fn an_xid_without_recorded_bounds_takes_the_oldest_backup_and_says_so() {
        let backups = [
            backup("old", 0, "0/2000000", None),
            backup("new", 10, "0/5000000", Some(500)),
        ];
        let chosen = choose(&backups, &Target::Xid(300), None).unwrap();
        assert_eq!(chosen.backup.id, "old");
        assert!(chosen.note.unwrap().contains("restoring the oldest"));
        let chosen = choose(&backups, &Target::Xid(600), None).unwrap();
        assert_eq!((chosen.backup.id.as_str(), chosen.note), ("new", None));
    }

    #[test]
    fn retention_keeps_the_newest_and_young_ones() {
        let ids: Vec<(String, DateTime<Utc>)> =
            (0..5).map(|i| (format!("b{i}"), at(i * 24))).collect();
        assert_eq!(expired(&ids, 2, 0, at(5 * 24)), ["b0", "b1", "b2"]);
        assert_eq!(expired(&ids, 7, 0, at(5 * 24)), Vec::<String>::new());
        // Also keep anything younger than 3 days.
        assert_eq!(expired(&ids, 1, 3, at(5 * 24)), ["b0", "b1"]);
        assert_eq!(
            expired(&ids[..1], 1, 0, at(500)),
            Vec::<String>::new(),
            "never the newest"
        );
    }

    #[test]
    fn the_lowest_start_wins_across_timelines() {
        assert_eq!(
            lowest_segment(&["000000010000000000000200", "000000020000000000000160"]),
            Some("000000020000000000000160")
        );
        assert_eq!(lowest_segment(&[]), None);
    }

    #[test]
    fn wal_before_the_oldest_backup_goes_history_stays() {
        let keys: Vec<String> = [
            "wal/000000010000000000000001.zst",
            "wal/000000010000000000000002.zst",
            "wal/000000010000000000000002.00000028.backup.zst",
            "wal/000000010000000000000003.zst",
            "wal/00000002.history.zst",
            "wal/000000020000000000000004.zst",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            wal_to_delete(&keys, "000000010000000000000003"),
            [
                "wal/000000010000000000000001.zst",
                "wal/000000010000000000000002.zst",
                "wal/000000010000000000000002.00000028.backup.zst"
            ]
        );
    }
}
