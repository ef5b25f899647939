//! `pgplatform restore`: a data directory recovered to a point in time from the
//! repository (the base backup is chosen automatically).

use std::path::PathBuf;

use chrono::{DateTime, NaiveDateTime, Utc};

use super::output::{self, ByteProgress};
use crate::backup::catalog::{parse_lsn, Target};
use crate::backup::context::Context;
use crate::backup::restore::{self, Use};
use crate::config::Config;

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("target").args(["time", "lsn", "latest"])))]
pub struct RestoreArgs {
    /// Write the restored data directory here (new or empty); PostgreSQL is not started.
    #[arg(long, value_name = "DIR")]
    target_dir: PathBuf,
    /// Recover up to this time, e.g. '2026-11-23 15:04:05+00' (UTC when no offset).
    #[arg(long, value_name = "TIMESTAMP")]
    time: Option<String>,
    /// Recover up to this WAL position, e.g. 0/3000060.
    #[arg(long, value_name = "LSN")]
    lsn: Option<String>,
    /// Recover everything archived (the default).
    #[arg(long)]
    latest: bool,
    /// Restore this base backup instead of the newest one before the target.
    #[arg(long, value_name = "ID")]
    backup: Option<String>,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
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

pub async fn run(config: &Config, args: RestoreArgs) -> anyhow::Result<()> {
    let target = match (&args.time, &args.lsn) {
        (Some(t), _) => Target::Time(parse_time(t)?),
        (_, Some(l)) => Target::Lsn(
            parse_lsn(l).ok_or_else(|| anyhow::anyhow!("`{l}` is not an LSN like 0/3000060"))?,
        ),
        _ => Target::Latest,
    };
    let ctx = Context::new(config).await?;
    let progress = ByteProgress::new();
    progress.set_message("restoring");
    let restored = restore::restore(
        &ctx,
        &args.target_dir,
        &target,
        args.backup.as_deref(),
        Use::Copy,
        progress.counter(),
    )
    .await?;
    progress.finish();
    if args.json {
        return output::json(&restored);
    }
    output::line(&format!(
        "restored backup {} into {} ({}, {:.1} s); on start PostgreSQL replays WAL to {} and promotes.\n\
         Start it beside the live cluster with: pg_ctl -D {} -o \"-p <free port> -k /tmp\" start",
        restored.backup_id,
        restored.target_dir.display(),
        output::size(restored.bytes as i64),
        restored.duration_seconds,
        restored.recovery_target,
        restored.target_dir.display()
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_time;

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
}
