//! What `restore` recovers to (`--time`, `--lsn`, `--name`, `--xid`, `--latest`,
//! `--exclusive`), and making sure the archive reaches it before anything is touched:
//! the source cluster's agent (this node's, forwarding to the primary in HA) closes the
//! current WAL segment and the restore waits until it is archived; without a reachable
//! agent, the newest archived WAL is read and a target beyond it is refused.

use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, Utc};

use super::output;
use crate::backup::catalog::{parse_lsn, Target};
use crate::backup::context::Context;
use crate::backup::coverage::{self, Switched};
use crate::backup::restore::Goal;
use crate::config::Config;

/// How long a restore waits for the switched segment to reach the repository.
const ARCHIVE_WAIT: Duration = Duration::from_secs(120);

pub struct TargetArgs<'a> {
    pub time: Option<&'a str>,
    pub lsn: Option<&'a str>,
    pub name: Option<&'a str>,
    pub xid: Option<&'a str>,
    pub exclusive: bool,
}

/// The goal the arguments name; a restore point is looked up (and verified) in the
/// repository's catalog.
pub async fn parse_goal(ctx: &Context, args: TargetArgs<'_>) -> anyhow::Result<Goal> {
    let target = match args {
        TargetArgs { time: Some(t), .. } => Target::Time(parse_time(t)?),
        TargetArgs { lsn: Some(l), .. } => Target::Lsn(
            parse_lsn(l).ok_or_else(|| anyhow::anyhow!("`{l}` is not an LSN like 0/3000060"))?,
        ),
        TargetArgs { name: Some(n), .. } => {
            let mark = crate::backup::marks::find(&ctx.repo, n).await?;
            Target::Name {
                lsn: mark.lsn(),
                name: mark.name,
            }
        }
        TargetArgs { xid: Some(x), .. } => Target::Xid(parse_xid(x)?),
        _ => Target::Latest,
    };
    Ok(Goal {
        target,
        inclusive: !args.exclusive,
    })
}

/// A transaction id as `pg_current_xact_id()` or `txid_current()` print it.
pub fn parse_xid(text: &str) -> anyhow::Result<u64> {
    let xid: u64 = text.trim().parse().map_err(|_| {
        anyhow::anyhow!(
            "`{text}` is not a transaction id (a number, as pg_current_xact_id() prints it)"
        )
    })?;
    // 0, 1 and 2 are PostgreSQL's invalid, bootstrap and frozen ids: never a commit.
    anyhow::ensure!(
        xid & 0xFFFF_FFFF >= 3,
        "{xid} is not the id of a transaction that can commit (ids start at 3)"
    );
    Ok(xid)
}

/// Accepts RFC 3339 and PostgreSQL's own text forms ('2026-11-23 15:04:05.123+00').
pub fn parse_time(text: &str) -> anyhow::Result<DateTime<Utc>> {
    let t = text.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(t) {
        return Ok(t.with_timezone(&Utc));
    }
    for format in ["%Y-%m-%d %H:%M:%S%.f%#z", "%Y-%m-%d %H:%M:%S%#z"] {
        if let Ok(t) = DateTime::parse_from_str(t, format) {
            return Ok(t.with_timezone(&Utc));
        }
    }
    for format in [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%dT%H:%M:%S%.f",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(t, format) {
            return Ok(t.and_utc());
        }
    }
    anyhow::bail!("`{text}` is not a timestamp like '2026-11-23 15:04:05+00'")
}

/// Establishes that the archive reaches `target` (see the module's comment). Fails,
/// naming the newest restorable point, if it does not.
pub async fn ensure_covered(ctx: &Context, config: &Config, target: &Target) -> anyhow::Result<()> {
    let asked = if ctx.config.archive {
        ask_source(config, target).await
    } else {
        Err(anyhow::anyhow!("WAL archiving is off (backup.archive)"))
    };
    match asked {
        Ok(switched) => {
            output::with_spinner(
                &format!(
                    "waiting for WAL segment {} to be archived",
                    switched.segment
                ),
                coverage::wait_archived(ctx, &switched.segment, ARCHIVE_WAIT),
            )
            .await?;
            coverage::check_against_source(target, &switched)
        }
        // Nothing to reach: whatever is archived is the latest.
        Err(_) if *target == Target::Latest => Ok(()),
        Err(asked) => {
            let end = output::with_spinner(
                "reading the newest archived WAL",
                coverage::archive_end(ctx),
            )
            .await?;
            coverage::check_against_archive(target, &end)
                .map_err(|e| anyhow::anyhow!("{e:#} (the agent's answer: {asked:#})"))
        }
    }
}

async fn ask_source(config: &Config, target: &Target) -> anyhow::Result<Switched> {
    let agent = crate::api::client::AgentClient::discover(config)?;
    let xid = match target {
        Target::Xid(xid) => Some(*xid),
        _ => None,
    };
    output::with_spinner(
        "closing the source cluster's current WAL segment",
        agent.post("/backup/switch-wal", &serde_json::json!({ "xid": xid })),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::{parse_time, parse_xid};

    #[test]
    fn timestamps_parse_in_the_forms_operators_paste() {
        let t = parse_time("2026-11-23 15:04:05.123456+00").unwrap();
        assert_eq!(t.to_rfc3339(), "2026-11-23T15:04:05.123456+00:00");
        assert_eq!(
            parse_time("2026-11-23T16:04:05+01:00")
                .unwrap()
                .to_rfc3339(),
            "2026-11-23T15:04:05+00:00"
        );
        assert_eq!(
            parse_time("2026-11-23 15:04:05").unwrap().to_rfc3339(),
            "2026-11-23T15:04:05+00:00"
        );
        assert!(parse_time("yesterday").is_err());
    }

    #[test]
    fn xids_are_numbers_that_can_commit() {
        assert_eq!(parse_xid("735").unwrap(), 735);
        assert_eq!(parse_xid(" 4294967296735 ").unwrap(), 4_294_967_296_735);
        for bad in ["", "-1", "0x10", "abc", "2", "4294967296"] {
            assert!(parse_xid(bad).is_err(), "{bad}");
        }
    }
}
