//! The agent's backup scheduler: base backups (then retention), restore drills and
//! per-tenant dumps at their cron times. One job at a time; a job that fails is logged
//! and recorded, and the next one still runs at its time.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::base::{self, Progress};
use super::context::Context;
use crate::config::{Config, Schedule};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Job {
    Base,
    Drill,
    Dump(String),
}

/// Progress nobody watches.
struct Quiet(Arc<AtomicU64>);

impl Progress for Quiet {
    fn start(&self, _: u64) {}
    fn phase(&self, _: &str) {}
    fn bytes(&self) -> Arc<AtomicU64> {
        self.0.clone()
    }
}

fn next(schedule: &Schedule, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    schedule.cron.find_next_occurrence(&after, false).ok()
}

/// The next scheduled job after `now`, as `(when, "base" | "drill" | "dump <tenant>")`:
/// what `status` shows.
pub fn next_job(config: &Config, now: DateTime<Utc>) -> Option<(DateTime<Utc>, String)> {
    earliest(config, now).map(|(at, job)| {
        let name = match job {
            Job::Base => "base backup".to_owned(),
            Job::Drill => "restore drill".to_owned(),
            Job::Dump(tenant) => format!("dump of {tenant}"),
        };
        (at, name)
    })
}

/// The earliest job due after `after`.
fn earliest(config: &Config, after: DateTime<Utc>) -> Option<(DateTime<Utc>, Job)> {
    let backup = &config.backup;
    let mut jobs: Vec<(DateTime<Utc>, Job)> = Vec::new();
    if let Some(at) = backup.schedule.as_ref().and_then(|s| next(s, after)) {
        jobs.push((at, Job::Base));
    }
    if let Some(at) = backup.drill_schedule.as_ref().and_then(|s| next(s, after)) {
        jobs.push((at, Job::Drill));
    }
    for (tenant, schedule) in &backup.dumps {
        if let Some(at) = next(schedule, after) {
            jobs.push((at, Job::Dump(tenant.clone())));
        }
    }
    jobs.into_iter().min_by_key(|(at, _)| *at)
}

/// Runs the jobs of the configuration `config` holds, following its reloads: a changed
/// schedule takes effect at once (a job running then finishes first). With no job
/// scheduled it waits for a reload; it ends only at shutdown.
pub async fn task_main(
    mut config: watch::Receiver<Arc<Config>>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut current = config.borrow_and_update().clone();
    let mut after = Utc::now();
    loop {
        let next = earliest(&current, after);
        let wait = match &next {
            Some((at, job)) => {
                tracing::debug!(job = ?job, at = %at, "backup scheduler: next job");
                (*at - Utc::now()).to_std().unwrap_or_default()
            }
            None => {
                tracing::info!("backup scheduler: no job is scheduled; waiting for a reload");
                Duration::MAX
            }
        };
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            changed = config.changed() => {
                if changed.is_err() {
                    // The agent is going away; shutdown follows.
                    shutdown.cancelled().await;
                    return Ok(());
                }
                current = config.borrow_and_update().clone();
                after = Utc::now();
                tracing::info!("backup scheduler: schedules reloaded");
                continue;
            }
            () = sleep(wait) => {}
        }
        let Some((at, job)) = next else { continue };
        tracing::info!(job = ?job, "scheduled backup job starting");
        let outcome = shutdown
            .run_until_cancelled(async {
                let ctx = Context::new(&current).await?;
                run(&ctx, &job).await
            })
            .await;
        match outcome {
            None => return Ok(()),
            Some(Ok(summary)) => tracing::info!(job = ?job, "{summary}"),
            Some(Err(e)) => tracing::error!(job = ?job, "scheduled backup job failed: {e:#}"),
        }
        // Occurrences missed while the job ran are skipped, not run back to back.
        after = at.max(Utc::now());
    }
}

/// `tokio::time::sleep` for any duration (`Duration::MAX` is forever).
async fn sleep(wait: Duration) {
    match tokio::time::Instant::now().checked_add(wait) {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

async fn run(ctx: &Context, job: &Job) -> anyhow::Result<String> {
    // In an HA cluster only the primary runs the schedule; after a failover the new
    // primary's agent does.
    if crate::pg::is_standby(&ctx.pgdata) {
        return Ok("skipped: this node is a replica; the primary runs scheduled jobs".into());
    }
    match job {
        Job::Base => {
            let manifest = base::run(ctx, &Quiet(Arc::default())).await?;
            let expired = super::expire::expire(ctx).await?;
            Ok(format!(
                "base backup {} done ({} bytes stored); retention removed {} backup(s)",
                manifest.id,
                manifest.object.size,
                expired.backups.len()
            ))
        }
        Job::Drill => {
            let result = super::drill::drill(ctx, Arc::default(), &|_| {}).await?;
            anyhow::ensure!(
                result.ok,
                "restore drill of {} FAILED: {}",
                result.backup_id,
                result.errors.join("; ")
            );
            Ok(format!("restore drill of {} passed", result.backup_id))
        }
        Job::Dump(tenant) => {
            let manifest = super::dump::dump(ctx, tenant).await?;
            Ok(format!("dump {} of {tenant} done", manifest.id))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_earliest_job_comes_first() {
        let file: crate::config::ConfigFile = toml::from_str(
            "[backup]\nschedule = \"5 3 * * *\"\ndrill_schedule = \"0 4 * * 0\"\n[backup.dumps]\nshop = \"0 2 * * *\"\n",
        )
        .unwrap();
        let config = Config::from_file(file, std::path::Path::new("/x"), None).unwrap();
        let monday_noon = DateTime::parse_from_rfc3339("2026-11-23T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let (at, job) = earliest(&config, monday_noon).unwrap();
        assert_eq!(
            (at.to_rfc3339(), job),
            (
                "2026-11-24T02:00:00+00:00".to_owned(),
                Job::Dump("shop".into())
            )
        );
        let (at, job) = earliest(&config, at).unwrap();
        assert_eq!(
            (at.to_rfc3339(), job),
            ("2026-11-24T03:05:00+00:00".to_owned(), Job::Base)
        );
    }
}
