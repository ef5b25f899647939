//! `backup run`: a physical base backup of the running cluster. Non-exclusive
//! pg_backup_start/stop on a session held open; PGDATA copied straight from disk as one
//! tar stream, compressed by parallel zstd workers and uploaded as it is produced (no
//! local copy); the backup_label from pg_backup_stop goes last into the stream; the
//! manifest is written after everything else and is what makes the backup exist.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use chrono::Utc;
use tokio::sync::mpsc;

use super::context::Context;
use super::manifest::{self, BaseManifest, ObjectRef};
use super::tar_stream::{self, LabelFiles};
use super::{counts, layout, lock, walk};

/// What a caller sees while the backup runs.
pub trait Progress: Send + Sync {
    fn start(&self, total_bytes: u64);
    fn phase(&self, message: &str);
    fn bytes(&self) -> Arc<AtomicU64>;
}

pub async fn run(ctx: &Context, progress: &dyn Progress) -> anyhow::Result<BaseManifest> {
    // Refused because another one runs: not a failed backup, so not recorded as one.
    let lock = lock::backup(&ctx.data_dir.run())?;
    run_locked(ctx, progress, &lock).await
}

/// `run` for a caller that already holds the backup lock (and keeps it for retention).
pub async fn run_locked(
    ctx: &Context,
    progress: &dyn Progress,
    lock: &lock::BackupLock,
) -> anyhow::Result<BaseManifest> {
    let result = run_unrecorded(ctx, progress, lock).await;
    super::state::record(&ctx.data_dir.run(), result.as_ref());
    result
}

async fn run_unrecorded(
    ctx: &Context,
    progress: &dyn Progress,
    _lock: &lock::BackupLock,
) -> anyhow::Result<BaseManifest> {
    let agent = ctx.superuser(crate::pg::AGENT_DATABASE).await?;
    let row = agent
        .query_one(
            "SELECT current_setting('server_version'), current_setting('server_version_num')::int,
                    (SELECT system_identifier::text FROM pg_control_system()), pg_is_in_recovery()",
            &[],
        )
        .await?;
    let (pg_version, version_num, system_identifier, in_recovery): (String, i32, String, bool) = (
        row.try_get(0)?,
        row.try_get(1)?,
        row.try_get(2)?,
        row.try_get(3)?,
    );
    anyhow::ensure!(
        !in_recovery,
        "base backups are taken on the primary; this node is a replica"
    );

    let started_at = Utc::now();
    let id = layout::new_id(started_at);
    anyhow::ensure!(
        ctx.repo.list(&format!("base/{id}/")).await?.is_empty(),
        "a backup named {id} already exists in {}",
        ctx.repo.describe()
    );
    progress.phase("starting backup (checkpoint)");
    let label = format!("pgplatform {id}");
    let start_sql = if version_num >= 150_000 {
        "SELECT pg_backup_start($1, true)::text"
    } else {
        "SELECT pg_start_backup($1, true, false)::text"
    };
    let start_lsn: String = agent.query_one(start_sql, &[&label]).await?.try_get(0)?;
    let row = agent
        .query_one(
            "SELECT pg_walfile_name($1::text::pg_lsn), (SELECT timeline_id FROM pg_control_checkpoint())",
            &[&start_lsn],
        )
        .await?;
    let (start_wal, timeline): (String, i32) = (row.try_get(0)?, row.try_get(1)?);

    let pgdata = ctx.pgdata.clone();
    let entries = tokio::task::spawn_blocking(move || walk::walk(&pgdata)).await??;
    progress.start(entries.iter().map(|e| e.size).sum());
    progress.phase("copying");

    let key = layout::base_data_key(&id);
    let mut writer = ctx.repo.writer(&key).await?;
    let (chunk_tx, mut chunk_rx) = mpsc::channel::<Bytes>(4);
    let (files_done_tx, files_done_rx) = tokio::sync::oneshot::channel();
    let (label_tx, label_rx) = std::sync::mpsc::channel::<LabelFiles>();
    let producer = {
        let pgdata = ctx.pgdata.clone();
        let (level, workers) = (ctx.config.compress_level, ctx.config.parallel);
        let bytes = progress.bytes();
        tokio::task::spawn_blocking(move || {
            tar_stream::produce(
                &pgdata,
                entries,
                level,
                workers,
                chunk_tx,
                files_done_tx,
                label_rx,
                bytes,
            )
        })
    };
    // Moved in, so a failed write drops the receiver and the producer stops too.
    let upload = async move {
        while let Some(chunk) = chunk_rx.recv().await {
            writer.write(chunk).await?;
        }
        anyhow::Ok(writer)
    };
    let stop = async {
        files_done_rx.await.context("copying PGDATA failed")?;
        progress.phase("stopping backup (waiting for WAL archiving)");
        let stopped = stop_backup(&agent, version_num, ctx.config.archive).await;
        let stopped = match stopped {
            // Without archiving, the WAL from start to stop goes into the backup itself,
            // or it could never be restored.
            Ok((lsn, mut files)) if !ctx.config.archive => {
                match wal_from_pg_wal(ctx, &agent, &start_wal, &lsn).await {
                    Ok(wal) => {
                        files.extend(wal);
                        Ok((lsn, files))
                    }
                    Err(e) => Err(e),
                }
            }
            other => other,
        };
        let labels = stopped.as_ref().ok().map(|(_, files)| files.clone());
        let _ = label_tx.send(labels);
        stopped
    };
    let (uploaded, stopped) = tokio::join!(upload, stop);
    let produced = producer.await?;
    let (writer, (stop_lsn, _), produced) = match (uploaded, stopped, produced) {
        (Ok(writer), Ok(stopped), Ok(produced)) => (writer, stopped, produced),
        (uploaded, stopped, produced) => {
            if let Ok(writer) = uploaded {
                writer.abort().await;
            }
            // The first real cause: a failed upload or copy explains a failed stop.
            return Err(produced.err().or(stopped.err()).unwrap_or_else(|| {
                anyhow::anyhow!("the upload to {} failed", ctx.repo.describe())
            }));
        }
    };
    progress.phase("finishing upload");
    writer.finish().await?;
    let stopped_at = Utc::now();
    let stop_wal: String = agent
        .query_one("SELECT pg_walfile_name($1::text::pg_lsn)", &[&stop_lsn])
        .await?
        .try_get(0)?;
    // Read after the stop: a transaction given this id or a later one began after it.
    let next_xid: String = agent
        .query_one("SELECT pg_snapshot_xmax(pg_current_snapshot())::text", &[])
        .await?
        .try_get(0)?;

    progress.phase("counting tenant rows");
    let (tenants, counts_lsn) = match counts::take(ctx, &agent).await {
        Ok((tenants, lsn)) => (tenants, Some(lsn)),
        Err(e) => {
            tracing::warn!(
                "backup {id}: tenant row counts not taken, drills will not compare them: {e:#}"
            );
            (Vec::new(), None)
        }
    };
    if ctx.config.archive && counts_lsn.is_some() {
        // A drill replays to the counts' position: close its segment and see it archived.
        progress.phase("archiving the last WAL segment");
        let segment: String = agent
            .query_one("SELECT pg_walfile_name(pg_switch_wal())", &[])
            .await?
            .try_get(0)?;
        wait_archived(&agent, &segment, Duration::from_secs(60)).await;
    }
    let manifest = BaseManifest {
        id: id.clone(),
        started_at,
        stopped_at,
        start_lsn,
        stop_lsn,
        start_wal,
        stop_wal,
        timeline: u32::try_from(timeline).unwrap_or_default(),
        pg_version,
        system_identifier,
        data_bytes: produced.data_bytes,
        object: ObjectRef {
            key,
            size: produced.stored_bytes,
            sha256: produced.sha256,
        },
        files: produced.files,
        tenants,
        counts_lsn,
        next_xid: next_xid.parse().ok(),
    };
    let key = layout::base_manifest_key(&id);
    let sealed = manifest::seal(ctx.repo.key(), &key, &manifest)?;
    ctx.repo.put(&key, Bytes::from(sealed)).await?;
    Ok(manifest)
}

/// Waits until PostgreSQL has archived `segment` (or later); warns after `limit`.
/// Whether it was archived in time.
pub async fn wait_archived(agent: &tokio_postgres::Client, segment: &str, limit: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        let archived = agent
            .query_one(
                "SELECT COALESCE(last_archived_wal, '') FROM pg_stat_archiver",
                &[],
            )
            .await
            .ok()
            .and_then(|r| r.try_get::<_, String>(0).ok())
            .unwrap_or_default();
        if archived.as_str() >= segment {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tracing::warn!(
        "WAL segment {segment} was not archived within {limit:?}; is archiving failing?"
    );
    false
}

/// The WAL segments from the backup's start to its stop, read from pg_wal (the stop
/// segment is complete: pg_backup_stop switched away from it).
async fn wal_from_pg_wal(
    ctx: &Context,
    agent: &tokio_postgres::Client,
    start_wal: &str,
    stop_lsn: &str,
) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let stop_wal: String = agent
        .query_one("SELECT pg_walfile_name($1::text::pg_lsn)", &[&stop_lsn])
        .await?
        .try_get(0)?;
    let mut out = Vec::new();
    for name in layout::segments(start_wal, &stop_wal) {
        let path = ctx.pgdata.join("pg_wal").join(&name);
        let bytes = tokio::fs::read(&path).await.with_context(|| {
            format!("read {} for a backup without WAL archiving", path.display())
        })?;
        out.push((format!("pg_wal/{name}"), bytes));
    }
    Ok(out)
}

async fn stop_backup(
    agent: &tokio_postgres::Client,
    version_num: i32,
    wait_for_archive: bool,
) -> anyhow::Result<(String, Vec<(String, Vec<u8>)>)> {
    // Waiting for the last segment's archiving has a limit: a broken archive fails the
    // backup instead of hanging it.
    agent
        .batch_execute("SET statement_timeout = '10min'")
        .await?;
    let sql = if version_num >= 150_000 {
        "SELECT lsn::text, labelfile, spcmapfile FROM pg_backup_stop($1)"
    } else {
        "SELECT lsn::text, labelfile, spcmapfile FROM pg_stop_backup(false, $1)"
    };
    let row = agent
        .query_one(sql, &[&wait_for_archive])
        .await
        .context("pg_backup_stop (is WAL archiving working? see `pgplatform status`)")?;
    agent.batch_execute("RESET statement_timeout").await?;
    let lsn: String = row.try_get(0)?;
    let mut files = vec![(
        "backup_label".to_owned(),
        row.try_get::<_, String>(1)?.into_bytes(),
    )];
    if let Some(map) = row
        .try_get::<_, Option<String>>(2)?
        .filter(|m| !m.is_empty())
    {
        files.push(("tablespace_map".to_owned(), map.into_bytes()));
    }
    Ok((lsn, files))
}
