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
#[command(
    group(clap::ArgGroup::new("target").args(["time", "lsn", "latest"])),
    group(clap::ArgGroup::new("where").args(["target_dir", "in_place"]).required(true)),
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
pub struct RestoreArgs {
    #[command(subcommand)]
    command: Option<RestoreCommand>,
    /// Write the restored data directory here (new or empty); PostgreSQL is not started.
    #[arg(long, value_name = "DIR")]
    target_dir: Option<PathBuf>,
    /// Replace this node's own cluster: the agent stops PostgreSQL, the current data
    /// directory is kept aside as pg.before-restore-<time>, and PostgreSQL starts on the
    /// restored one. Needs --yes.
    #[arg(long)]
    in_place: bool,
    /// Confirm --in-place.
    #[arg(long)]
    yes: bool,
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

#[derive(Debug, clap::Subcommand)]
enum RestoreCommand {
    /// Restore a tenant's logical dump into a new database (TENANT_restored_<id>, or
    /// --as NAME); with --replace --yes, swap it in for the live database, which is kept
    /// as TENANT_before_<id>.
    Dump {
        tenant: String,
        /// The dump to restore (default: the newest).
        #[arg(long, value_name = "ID")]
        from: Option<String>,
        /// Name of the new database.
        #[arg(long = "as", value_name = "NAME", conflicts_with = "replace")]
        as_name: Option<String>,
        /// Replace the live database (needs --yes).
        #[arg(long)]
        replace: bool,
        /// Confirm --replace.
        #[arg(long)]
        yes: bool,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
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
    if let Some(RestoreCommand::Dump {
        tenant,
        from,
        as_name,
        replace,
        yes,
        json,
    }) = args.command
    {
        anyhow::ensure!(
            !replace || yes,
            "--replace swaps out the live database of {tenant}; add --yes to confirm"
        );
        let ctx = Context::new(config).await?;
        let restored = output::with_spinner(
            "restoring dump",
            crate::backup::dump::restore_dump(
                &ctx,
                &tenant,
                from.as_deref(),
                as_name.as_deref(),
                replace,
            ),
        )
        .await?;
        if json {
            return output::json(&restored);
        }
        let previous = restored
            .previous
            .as_ref()
            .map(|p| format!("; the previous database is kept as {p} (DROP DATABASE it when done)"))
            .unwrap_or_default();
        output::line(&format!(
            "restored dump {} of {} into database {}{previous}",
            restored.dump_id, restored.tenant, restored.database
        ));
        return Ok(());
    }
    let target = match (&args.time, &args.lsn) {
        (Some(t), _) => Target::Time(parse_time(t)?),
        (_, Some(l)) => Target::Lsn(
            parse_lsn(l).ok_or_else(|| anyhow::anyhow!("`{l}` is not an LSN like 0/3000060"))?,
        ),
        _ => Target::Latest,
    };
    let ctx = Context::new(config).await?;
    if args.in_place {
        anyhow::ensure!(
            args.yes,
            "--in-place replaces this node's cluster; add --yes to confirm"
        );
        return in_place(&ctx, config, &target, args.backup.as_deref(), args.json).await;
    }
    let Some(target_dir) = &args.target_dir else {
        anyhow::bail!("say where: --target-dir DIR or --in-place");
    };
    let progress = ByteProgress::new();
    progress.set_message("restoring");
    let restored = restore::restore(
        &ctx,
        target_dir,
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

/// Closes and archives the current WAL segment first, so that recovering to the latest
/// point loses nothing committed before the stop; refuses if archiving cannot keep up.
/// A PostgreSQL that is down has nothing new to archive.
async fn archive_current_wal(ctx: &Context) -> anyhow::Result<()> {
    if !ctx.config.archive {
        return Ok(());
    }
    let Ok(client) = ctx.superuser(crate::pg::AGENT_DATABASE).await else {
        return Ok(());
    };
    let segment: String = client
        .query_one("SELECT pg_walfile_name(pg_switch_wal())", &[])
        .await?
        .try_get(0)?;
    let archived =
        crate::backup::base::wait_archived(&client, &segment, std::time::Duration::from_secs(120))
            .await;
    anyhow::ensure!(
        archived,
        "WAL segment {segment} is not archived after 2 minutes: restoring in place now would \
         lose the commits in it. Fix WAL archiving first (see `pgplatform status`)"
    );
    Ok(())
}

/// Restores over this node's own cluster, with the agent stopping and starting PostgreSQL.
async fn in_place(
    ctx: &Context,
    config: &Config,
    target: &Target,
    backup: Option<&str>,
    json: bool,
) -> anyhow::Result<()> {
    let agent = crate::api::client::AgentClient::discover(config)?;
    // Fail before stopping anything if the target cannot be reached (or the backup for
    // it does not verify).
    restore::choose_verified(ctx, target, backup).await?;
    archive_current_wal(ctx).await?;
    let _: serde_json::Value = output::with_spinner(
        "stopping PostgreSQL",
        agent.post("/postgres/stop", &serde_json::json!({})),
    )
    .await?;
    let aside = ctx.pgdata.with_file_name(format!(
        "pg.before-restore-{}",
        Utc::now().format("%Y%m%dT%H%M%SZ")
    ));
    let restored = swap_in(ctx, &aside, target, backup).await;
    // Whatever happened, PostgreSQL starts again: on the restored or the previous cluster.
    let started: anyhow::Result<serde_json::Value> =
        agent.post("/postgres/start", &serde_json::json!({})).await;
    let restored = restored?;
    started?;
    let promoted = output::with_spinner("replaying WAL", async {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(3600);
        while tokio::time::Instant::now() < deadline {
            if agent.get::<serde_json::Value>("/primary").await.is_ok() {
                return true;
            }
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
        false
    })
    .await;
    anyhow::ensure!(
        promoted,
        "PostgreSQL did not finish recovery within an hour; see the agent's log"
    );
    // The targets did their work; later backups of this cluster must not carry them.
    let client = ctx.superuser(crate::pg::AGENT_DATABASE).await?;
    // One statement each: ALTER SYSTEM refuses to run in a (multi-statement) transaction.
    for setting in [
        "recovery_target_time",
        "recovery_target_lsn",
        "recovery_target_action",
        "recovery_target_timeline",
    ] {
        client
            .batch_execute(&format!("ALTER SYSTEM RESET {setting}"))
            .await?;
    }
    client.batch_execute("SELECT pg_reload_conf()").await?;
    if json {
        return output::json(
            &serde_json::json!({ "restored": restored, "previous_data_dir": aside }),
        );
    }
    output::line(&format!(
        "restored backup {} in place, recovered to {}; PostgreSQL is running. The previous data directory is {}",
        restored.backup_id,
        restored.recovery_target,
        aside.display()
    ));
    Ok(())
}

/// Moves PGDATA aside and restores into its place; on failure puts it back (and says so
/// if even that fails).
async fn swap_in(
    ctx: &Context,
    aside: &std::path::Path,
    target: &Target,
    backup: Option<&str>,
) -> anyhow::Result<restore::Restored> {
    std::fs::rename(&ctx.pgdata, aside)
        .map_err(|e| anyhow::anyhow!("move {} aside: {e}", ctx.pgdata.display()))?;
    let progress = ByteProgress::new();
    progress.set_message("restoring");
    let restored = restore::restore(
        ctx,
        &ctx.pgdata,
        target,
        backup,
        Use::InPlace { previous: aside },
        progress.counter(),
    )
    .await;
    progress.finish();
    let Err(e) = restored else {
        return restored;
    };
    let put_back = std::fs::remove_dir_all(&ctx.pgdata)
        .or_else(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Ok(())
            } else {
                Err(e)
            }
        })
        .and_then(|()| std::fs::rename(aside, &ctx.pgdata));
    match put_back {
        Ok(()) => Err(e.context("the previous cluster was put back")),
        Err(back) => Err(e.context(format!(
            "AND putting the previous cluster back failed ({back}): it is in {}; move it to {} by hand",
            aside.display(),
            ctx.pgdata.display()
        ))),
    }
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
