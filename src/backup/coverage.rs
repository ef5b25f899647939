//! Whether the archive reaches a recovery target, established before anything is
//! restored: PostgreSQL handed a target its archive does not reach refuses to start
//! ("recovery ended before configured recovery target was reached").
//!
//! With the source cluster running, its agent closes the current WAL segment (after a
//! commit of its own, so a time target has a commit after it to stop at) and the caller
//! waits until that segment is in the repository (`wait_archived`); the target must then
//! lie before the switch (`check_against_source`). Without it, the newest archived WAL
//! is read (`pg_waldump`) and a target beyond its last record is refused, naming the
//! newest restorable point (`check_against_archive`).

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, NaiveDateTime, Utc};
use serde::{Deserialize, Serialize};

use super::catalog::Target;
use super::context::Context;
use super::layout::{self, format_lsn, parse_lsn};

/// What the source's agent answers to a WAL switch (`POST /backup/switch-wal`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Switched {
    /// The segment that was closed: once archived, the archive holds WAL up to `lsn`.
    pub segment: String,
    pub lsn: String,
    /// A commit of the agent's own was made after this time, just before the switch.
    pub time: DateTime<Utc>,
    /// The next transaction id after that commit.
    pub next_xid: u64,
    /// `pg_xact_status` of the xid asked about: committed, aborted, in progress, or
    /// `None` (unknown to the cluster).
    pub xid_status: Option<String>,
}

/// Waits (up to `limit`) until `segment` is in the repository.
pub async fn wait_archived(ctx: &Context, segment: &str, limit: Duration) -> anyhow::Result<()> {
    anyhow::ensure!(
        layout::parse_segment(segment).is_some(),
        "the agent named {segment:?}, which is not a WAL segment"
    );
    let key = layout::wal_key(segment);
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if ctx.repo.list(&key).await?.iter().any(|o| o.key == key) {
            return Ok(());
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "WAL segment {segment} is not in {} after {} s: WAL archiving is failing or \
             behind (see `pgplatform status`); restoring now could not reach the target",
            ctx.repo.describe(),
            limit.as_secs()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Whether the archive, complete up to the switch, reaches `target`.
pub fn check_against_source(target: &Target, switched: &Switched) -> anyhow::Result<()> {
    let end = parse_lsn(&switched.lsn).context("the agent's switch LSN")?;
    match target {
        Target::Latest => Ok(()),
        Target::Time(t) => {
            anyhow::ensure!(
                *t < switched.time,
                "the target time {t} is not in the past of the source cluster (its clock \
                 says {}); nothing after it could end the recovery",
                switched.time
            );
            Ok(())
        }
        Target::Lsn(lsn) => {
            anyhow::ensure!(
                *lsn <= end,
                "the target LSN {} is beyond the source cluster's WAL, which ends at {}",
                format_lsn(*lsn),
                switched.lsn
            );
            Ok(())
        }
        Target::Name { name, lsn } => {
            anyhow::ensure!(
                *lsn <= end,
                "restore point {name:?} at {} is beyond the source cluster's WAL (ends at \
                 {}): is the repository another cluster's?",
                format_lsn(*lsn),
                switched.lsn
            );
            Ok(())
        }
        Target::Xid(xid) => match switched.xid_status.as_deref() {
            Some("committed") | Some("aborted") => Ok(()),
            Some("in progress") => anyhow::bail!(
                "transaction {xid} is still in progress on the source cluster: recovery has \
                 no commit of it to stop at"
            ),
            _ => anyhow::bail!(
                "transaction {xid} is unknown to the source cluster (the next one to begin is \
                 {}); is it mistyped, or too old to be known?",
                switched.next_xid
            ),
        },
    }
}

/// What the newest archived WAL holds.
#[derive(Debug, Clone, Default)]
pub struct ArchiveEnd {
    /// The newest archived segment.
    pub segment: String,
    /// Where its last record starts.
    pub last_record: Option<u64>,
    /// The last commit in it (or in the few segments before): time, xid.
    pub last_commit: Option<(DateTime<Utc>, u64)>,
    /// Transactions whose commit or abort those segments hold.
    pub ended_xids: Vec<u64>,
}

impl ArchiveEnd {
    /// The newest point a restore can reach, for messages.
    pub fn describe(&self) -> String {
        let lsn = self
            .last_record
            .map(format_lsn)
            .unwrap_or_else(|| "unknown".into());
        match self.last_commit {
            Some((time, xid)) => format!(
                "the archive ends in WAL segment {}: the newest restorable point is LSN {lsn}, \
                 time {} (the commit of transaction {xid})",
                self.segment,
                time.format("%Y-%m-%d %H:%M:%S%.6f+00")
            ),
            None => format!(
                "the archive ends in WAL segment {}: the newest restorable point is LSN {lsn} \
                 (no commit found in its last segments)",
                self.segment
            ),
        }
    }
}

/// How many segments back from the newest are read looking for a commit.
const SEGMENTS_READ: u64 = 4;

/// Reads the newest archived WAL: its last record and last commit.
pub async fn archive_end(ctx: &Context) -> anyhow::Result<ArchiveEnd> {
    let mut newest: Option<(u64, u32, String)> = None;
    for object in ctx.repo.list("wal/").await? {
        let Some(name) = object
            .key
            .strip_prefix("wal/")
            .and_then(|k| k.strip_suffix(".zst"))
        else {
            continue;
        };
        if let Some((tli, number)) = layout::parse_segment(name) {
            if newest
                .as_ref()
                .is_none_or(|(n, t, _)| (number, tli) > (*n, *t))
            {
                newest = Some((number, tli, name.to_owned()));
            }
        }
    }
    let (number, tli, segment) = newest.with_context(|| {
        format!(
            "{} holds no archived WAL yet: nothing can be recovered beyond a base backup's end",
            ctx.repo.describe()
        )
    })?;
    let scratch = ctx
        .data_dir
        .run()
        .join(format!("waldump-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch).with_context(|| format!("create {}", scratch.display()))?;
    let read = read_back(ctx, &scratch, tli, number).await;
    let _ = std::fs::remove_dir_all(&scratch);
    let mut end = read?;
    end.segment = segment;
    Ok(end)
}

async fn read_back(
    ctx: &Context,
    scratch: &Path,
    tli: u32,
    number: u64,
) -> anyhow::Result<ArchiveEnd> {
    let mut end = ArchiveEnd::default();
    for back in 0..SEGMENTS_READ.min(number + 1) {
        let name = layout::segment_name(tli, number - back);
        let path = scratch.join(&name);
        match super::wal::fetch(&ctx.repo, &name, &path).await {
            Ok(()) => {}
            Err(super::wal::FetchError::NotFound(_)) if back > 0 => break,
            Err(e) => return Err(anyhow::anyhow!("read archived WAL {name}: {e}")),
        }
        let output = tokio::process::Command::new(ctx.binaries.path("pg_waldump"))
            .arg(&path)
            .env("TZ", "UTC")
            .kill_on_drop(true)
            .output()
            .await
            .context("run pg_waldump")?;
        let _ = std::fs::remove_file(&path);
        let records = parse_waldump(&String::from_utf8_lossy(&output.stdout));
        if back == 0 {
            end.last_record = records.last().map(|r| r.lsn);
        }
        for r in &records {
            if let Some(xid) = r.ended_xid {
                end.ended_xids.push(xid);
            }
        }
        if end.last_commit.is_none() {
            end.last_commit = records.iter().rev().find_map(|r| r.commit);
        }
        if end.last_commit.is_some() {
            break;
        }
    }
    Ok(end)
}

/// Whether the archive, as read by `archive_end`, reaches `target`.
pub fn check_against_archive(target: &Target, end: &ArchiveEnd) -> anyhow::Result<()> {
    let beyond = |what: String| {
        anyhow::anyhow!(
            "{what} is beyond the archive, and the source cluster's agent could not be asked \
             to archive the rest: {}. Start the source cluster (its agent archives the rest \
             when asked), or choose an earlier target",
            end.describe()
        )
    };
    match target {
        Target::Latest => Ok(()),
        Target::Time(t) => match end.last_commit {
            Some((time, _)) if *t < time => Ok(()),
            _ => Err(beyond(format!("the target time {t}"))),
        },
        Target::Lsn(lsn) => match end.last_record {
            Some(last) if *lsn <= last => Ok(()),
            _ => Err(beyond(format!("the target LSN {}", format_lsn(*lsn)))),
        },
        Target::Name { name, lsn } => match end.last_record {
            Some(last) if *lsn <= last => Ok(()),
            _ => Err(beyond(format!(
                "restore point {name:?} (at {})",
                format_lsn(*lsn)
            ))),
        },
        Target::Xid(xid) => {
            // Commit records carry 32-bit ids.
            let short = xid & 0xFFFF_FFFF;
            if end.ended_xids.contains(&short) {
                return Ok(());
            }
            match end.last_commit {
                Some((_, last)) if short < last => Ok(()),
                _ => Err(beyond(format!("transaction {xid}"))),
            }
        }
    }
}

/// One record as pg_waldump prints it: where it starts, and for a commit or abort, the
/// transaction (and a commit's time).
#[derive(Debug, PartialEq)]
struct Record {
    lsn: u64,
    ended_xid: Option<u64>,
    commit: Option<(DateTime<Utc>, u64)>,
}

fn parse_waldump(text: &str) -> Vec<Record> {
    text.lines().filter_map(parse_record).collect()
}

/// `rmgr: Transaction len (rec/tot): 34/34, tx: 735, lsn: 0/03000060, prev 0/03000028,
/// desc: COMMIT 2026-12-07 23:10:11.123456 UTC`
fn parse_record(line: &str) -> Option<Record> {
    let field = |name: &str| -> Option<&str> {
        let start = line.find(name)? + name.len();
        let rest = line[start..].trim_start();
        Some(rest.split([',', ' ']).next().unwrap_or(rest))
    };
    let lsn = parse_lsn(field("lsn:")?)?;
    let xid: u64 = field("tx:")?.parse().ok()?;
    let desc = line.split_once("desc: ").map(|(_, d)| d).unwrap_or("");
    let transaction = line.trim_start().starts_with("rmgr: Transaction");
    let ended = transaction && (desc.starts_with("COMMIT") || desc.starts_with("ABORT"));
    let commit = (transaction && desc.starts_with("COMMIT "))
        .then(|| {
            let stamp = desc.strip_prefix("COMMIT ")?.get(..26)?;
            let time = NaiveDateTime::parse_from_str(stamp, "%Y-%m-%d %H:%M:%S%.6f").ok()?;
            Some((time.and_utc(), xid))
        })
        .flatten();
    Some(Record {
        lsn,
        ended_xid: ended.then_some(xid),
        commit,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waldump_lines_give_positions_commits_and_aborts() {
        let text = "\
rmgr: Heap        len (rec/tot):     59/    59, tx:        735, lsn: 0/03000028, prev 0/03000000, desc: INSERT off 2 flags 0x00, blkref #0: rel 1663/5/16384 blk 0
rmgr: Transaction len (rec/tot):     34/    34, tx:        735, lsn: 0/03000068, prev 0/03000028, desc: COMMIT 2026-12-07 23:10:11.123456 UTC
rmgr: Transaction len (rec/tot):     34/    34, tx:        736, lsn: 0/030000A8, prev 0/03000068, desc: ABORT 2026-12-07 23:10:12.000001 UTC
rmgr: XLOG        len (rec/tot):     24/    24, tx:          0, lsn: 0/030000D0, prev 0/030000A8, desc: SWITCH
";
        let records = parse_waldump(text);
        assert_eq!(records.len(), 4);
        assert_eq!(records[3].lsn, 0x030000D0);
        let (time, xid) = records[1].commit.unwrap();
        assert_eq!(
            (time.to_rfc3339(), xid),
            ("2026-12-07T23:10:11.123456+00:00".into(), 735)
        );
        assert_eq!(records[2].ended_xid, Some(736));
        assert_eq!(records[2].commit, None);
        let end = ArchiveEnd {
            segment: "000000010000000000000003".into(),
            last_record: Some(0x030000D0),
            last_commit: records[1].commit,
            ended_xids: vec![735, 736],
        };
        let at = |s: &str| Target::Time(DateTime::parse_from_rfc3339(s).unwrap().into());
        assert!(check_against_archive(&at("2026-12-07T23:10:11Z"), &end).is_ok());
        let err = check_against_archive(&at("2026-12-07T23:10:11.5Z"), &end).unwrap_err();
        assert!(
            err.to_string()
                .contains("newest restorable point is LSN 0/30000D0"),
            "{err}"
        );
        assert!(check_against_archive(&Target::Lsn(0x030000D0), &end).is_ok());
        assert!(check_against_archive(&Target::Lsn(0x030000D1), &end).is_err());
        assert!(check_against_archive(&Target::Xid(736), &end).is_ok());
        assert!(check_against_archive(&Target::Xid(700), &end).is_ok());
        assert!(check_against_archive(&Target::Xid(737), &end).is_err());
    }
}
