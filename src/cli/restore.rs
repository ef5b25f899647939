//! `pgplatform restore`: a data directory recovered to a point in time, a restore point
//! or a transaction from the repository (the base backup is chosen automatically), once
//! the archive is known to reach the target (`restore_target`).

use std::path::PathBuf;

use chrono::Utc;

use super::output::{self, ByteProgress};
use super::restore_target::{ensure_covered, parse_goal, TargetArgs};
use crate::backup::context::Context;
use crate::backup::restore::{self, Goal, Use};
use crate::config::Config;

#[derive(Debug, clap::Args)]
#[command(
    group(clap::ArgGroup::new("target").args(["time", "lsn", "name", "xid", "latest"])),
    group(clap::ArgGroup::new("where").args(["target_dir", "in_place"]).required(true)),
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true,
    after_help = "Before anything is written, the source cluster's agent (this node's; in HA it \
forwards to the primary) closes the current WAL segment and the restore waits up to 2 minutes \
for it to be archived. When no agent answers, the newest archived WAL is read and a target \
beyond it is refused, naming the newest restorable point."
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
    /// Recover to the restore point NAME made by `pgplatform backup mark NAME`.
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
    /// Recover up to the commit of transaction XID (as pg_current_xact_id() printed it).
    #[arg(long, value_name = "XID")]
    xid: Option<String>,
    /// Recover everything archived (the default).
    #[arg(long)]
    latest: bool,
    /// Stop just before the target (--time, --lsn or --xid) instead of just after it.
    #[arg(long, conflicts_with_all = ["latest", "name"])]
    exclusive: bool,
    /// After restoring into --target-dir, start the copy on a private socket, wait for
    /// recovery to end, print each tenant's row counts and stop it again.
    #[arg(long, conflicts_with = "in_place")]
    check: bool,
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
    let ctx = Context::new(config).await?;
    let goal = parse_goal(
        &ctx,
        TargetArgs {
            time: args.time.as_deref(),
            lsn: args.lsn.as_deref(),
            name: args.name.as_deref(),
            xid: args.xid.as_deref(),
            exclusive: args.exclusive,
        },
    )
    .await?;
    anyhow::ensure!(
        !args.exclusive || goal.target != crate::backup::catalog::Target::Latest,
        "--exclusive needs a target: --time, --lsn or --xid"
    );
    if args.in_place {
        anyhow::ensure!(
            args.yes,
            "--in-place replaces this node's cluster; add --yes to confirm"
        );
        return in_place(&ctx, config, &goal, args.backup.as_deref(), args.json).await;
    }
    let Some(target_dir) = &args.target_dir else {
        anyhow::bail!("say where: --target-dir DIR or --in-place");
    };
    // Before anything is written: a target the archive cannot reach leaves nothing behind.
    restore::choose_verified(&ctx, &goal.target, args.backup.as_deref()).await?;
    ensure_covered(&ctx, config, &goal.target).await?;
    let progress = ByteProgress::new();
    progress.set_message("restoring");
    let restored = restore::restore(
        &ctx,
        target_dir,
        &goal,
        args.backup.as_deref(),
        Use::Copy,
        progress.counter(),
    )
    .await?;
    progress.finish();
    if let Some(note) = &restored.note {
        output::note(note);
    }
    let checked = match args.check {
        false => None,
        true => Some(
            output::with_spinner(
                "starting the restored copy (recovery, then row counts)",
                crate::backup::check::check(&ctx, target_dir),
            )
            .await
            .map_err(|e| {
                e.context(format!(
                    "the restored copy in {} did not start and recover; it is left there \
                     for inspection",
                    target_dir.display()
                ))
            })?,
        ),
    };
    if args.json {
        let mut value = serde_json::to_value(&restored)?;
        if let (Some(checked), Some(object)) = (&checked, value.as_object_mut()) {
            object.insert("check".into(), serde_json::to_value(checked)?);
        }
        return output::json(&value);
    }
    let Some(checked) = checked else {
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
        return Ok(());
    };
    output::line(&format!(
        "restored backup {} into {} ({}, {:.1} s), recovered to {}; checked: it started, \
         recovery ended after {:.1} s, and it was stopped again (now a promoted cluster)",
        restored.backup_id,
        restored.target_dir.display(),
        output::size(restored.bytes as i64),
        restored.duration_seconds,
        restored.recovery_target,
        checked.recovery_seconds
    ));
    let rows: Vec<Vec<String>> = checked
        .tenants
        .iter()
        .map(|t| {
            vec![
                t.name.clone(),
                t.tables.len().to_string(),
                t.rows.to_string(),
            ]
        })
        .collect();
    output::table(&["TENANT", "TABLES", "ROWS"], &rows);
    Ok(())
}

/// Restores over this node's own cluster, with the agent stopping and starting PostgreSQL.
async fn in_place(
    ctx: &Context,
    config: &Config,
    goal: &Goal,
    backup: Option<&str>,
    json: bool,
) -> anyhow::Result<()> {
    let agent = crate::api::client::AgentClient::discover(config)?;
    // Fail before stopping anything if the target cannot be reached (or the backup for
    // it does not verify), and see everything committed until now archived.
    restore::choose_verified(ctx, &goal.target, backup).await?;
    ensure_covered(ctx, config, &goal.target).await?;
    let _: serde_json::Value = output::with_spinner(
        "stopping PostgreSQL",
        agent.post("/postgres/stop", &serde_json::json!({})),
    )
    .await?;
    let aside = ctx.pgdata.with_file_name(format!(
        "pg.before-restore-{}",
        Utc::now().format("%Y%m%dT%H%M%SZ")
    ));
    let restored = swap_in(ctx, &aside, goal, backup).await;
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
        "recovery_target_name",
        "recovery_target_xid",
        "recovery_target_inclusive",
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
    goal: &Goal,
    backup: Option<&str>,
) -> anyhow::Result<restore::Restored> {
    std::fs::rename(&ctx.pgdata, aside)
        .map_err(|e| anyhow::anyhow!("move {} aside: {e}", ctx.pgdata.display()))?;
    let progress = ByteProgress::new();
    progress.set_message("restoring");
    let restored = restore::restore(
        ctx,
        &ctx.pgdata,
        goal,
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
