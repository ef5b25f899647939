//! Restores: a base backup unpacked into a directory, plus the recovery settings that
//! make PostgreSQL replay archived WAL to the target (a time, an LSN, a restore point, a
//! transaction, or the end of the archive; inclusive or not) and promote. The download
//! is checked as it streams (SHA-256 of the object, CRC-32C of each file); on any failure
//! the directory is emptied again (and removed if the restore made it), so PostgreSQL
//! can never be started on a partial restore. Whether the archive reaches the target is
//! established before (`coverage`).

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use anyhow::Context as _;
use serde::Serialize;

use super::catalog::{self, Target};
use super::context::Context;
use super::manifest::BaseManifest;
pub use super::unpack::unpack;
use super::untar;

#[derive(Debug, Clone, Serialize)]
pub struct Restored {
    pub backup_id: String,
    pub target_dir: PathBuf,
    pub bytes: u64,
    pub duration_seconds: f64,
    pub recovery_target: String,
    /// Why this base backup, when the choice was not obvious (`catalog::Chosen::note`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Where recovery stops, and whether the target itself is replayed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Goal {
    pub target: Target,
    /// `recovery_target_inclusive`: stop just after the target (true, PostgreSQL's
    /// default) or just before it (`--exclusive`).
    pub inclusive: bool,
}

/// How the restored cluster is to be run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use<'a> {
    /// A copy beside the live cluster: archiving off, so it never writes to the repository.
    /// It gets this node's configuration files (when this node has a cluster).
    Copy,
    /// This node's own cluster again, whose data directory was moved to `previous`: it
    /// gets that directory's configuration files and archives as before.
    InPlace { previous: &'a Path },
}

/// The files that configure a node, not the data: after a restore they are this node's
/// own (as the agent wrote them), never the archive's.
const NODE_FILES: &[&str] = &[
    "postgresql.conf",
    crate::pg::conf::MANAGED_FILE,
    crate::pg::conf::HA_FILE,
    "pg_hba.conf",
    "pg_ident.conf",
];

pub async fn restore(
    ctx: &Context,
    target_dir: &Path,
    goal: &Goal,
    backup_id: Option<&str>,
    usage: Use<'_>,
    progress: Arc<AtomicU64>,
) -> anyhow::Result<Restored> {
    let started = std::time::Instant::now();
    let _reading = super::lock::read_repository(&ctx.data_dir.run())?;
    let (backup, note) = choose_verified(ctx, &goal.target, backup_id).await?;
    let created = prepare_dir(target_dir)?;
    // Nothing half-done stays behind: emptied, and removed if this restore made it.
    let undo = |e: anyhow::Error| {
        empty_dir(target_dir);
        if created {
            let _ = std::fs::remove_dir(target_dir);
        }
        e
    };
    let bytes = unpack(ctx, &backup, Some(target_dir), progress)
        .await
        .map_err(|e| {
            undo(e.context(format!(
                "restore backup {} into {}",
                backup.id,
                target_dir.display()
            )))
        })?;
    let recovery_target = own_files(ctx, target_dir, usage)
        .and_then(|()| recovery_settings(ctx, target_dir, goal, usage))
        .and_then(|t| {
            crate::pg::process::chown_tree(target_dir, ctx.run_as.as_ref())?;
            Ok(t)
        })
        .map_err(undo)?;
    Ok(Restored {
        backup_id: backup.id,
        target_dir: target_dir.to_owned(),
        bytes,
        duration_seconds: started.elapsed().as_secs_f64(),
        recovery_target,
        note,
    })
}

/// The base backup to restore for `target` among those whose manifests verify. A refused
/// manifest is never used, and never silently passed over for an older backup either.
pub async fn choose_verified(
    ctx: &Context,
    target: &Target,
    backup_id: Option<&str>,
) -> anyhow::Result<(BaseManifest, Option<String>)> {
    let scan = catalog::scan(&ctx.repo).await?;
    if let Some(refused) = backup_id.and_then(|id| scan.refused.iter().find(|r| r.id == id)) {
        anyhow::bail!("{refused}");
    }
    let catalog::Chosen { backup, note } = match catalog::choose(&scan.backups, target, backup_id) {
        Ok(chosen) => chosen,
        Err(e) => match scan.newest_refused() {
            Some(refused) => anyhow::bail!("{refused}"),
            None => return Err(e),
        },
    };
    if backup_id.is_none() {
        if let Some(refused) = scan.refused_from(&backup.id) {
            anyhow::bail!(
                "{refused}; not falling back to the older backup {} on my own: name it \
                 with --backup if that is what you want",
                backup.id
            );
        }
    }
    Ok((backup.clone(), note))
}

/// Puts this node's configuration files (`NODE_FILES`) in place of the archive's: from
/// the previous data directory in place, from the live one for a copy. A copy on a
/// host without a cluster keeps the archive's, which the verified manifest vouches for;
/// a copy never gets an HA file.
fn own_files(ctx: &Context, dir: &Path, usage: Use<'_>) -> anyhow::Result<()> {
    let source = match usage {
        Use::InPlace { previous } => previous.to_owned(),
        Use::Copy => ctx.pgdata.clone(),
    };
    let has_cluster = source.join("PG_VERSION").exists();
    if !has_cluster {
        tracing::info!(
            "no cluster in {}: the restore keeps the backup's own configuration files",
            source.display()
        );
    }
    for name in NODE_FILES {
        // A copy is never an HA member: no upstream to stream from (nor its password), no
        // synchronous standbys its commits would wait for.
        let ha_in_copy = *name == crate::pg::conf::HA_FILE && usage == Use::Copy;
        if !has_cluster && !ha_in_copy {
            continue;
        }
        let restored = dir.join(name);
        match std::fs::remove_file(&restored) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("remove {}", restored.display())),
        }
        if ha_in_copy {
            continue;
        }
        if let Some(bytes) = read_regular_file(&source.join(name))? {
            std::fs::write(&restored, bytes)
                .with_context(|| format!("write {}", restored.display()))?;
        }
    }
    Ok(())
}

/// A regular file's content, read without following a symbolic link (the directory is
/// the PostgreSQL user's, and this may run as root); `None` if there is none.
fn read_regular_file(path: &Path) -> anyhow::Result<Option<Vec<u8>>> {
    use std::io::Read;
    let Some(file) = crate::safe_file::open_regular_if_exists(path)
        .with_context(|| format!("open {}", path.display()))?
    else {
        return Ok(None);
    };
    let size = file
        .metadata()
        .with_context(|| format!("inspect {}", path.display()))?
        .len();
    anyhow::ensure!(
        size <= 16 << 20,
        "{} is too large for a configuration file",
        path.display()
    );
    let mut bytes = Vec::new();
    file.take(16 << 20)
        .read_to_end(&mut bytes)
        .with_context(|| format!("read {}", path.display()))?;
    Ok(Some(bytes))
}

/// The target must be absent or empty: a restore never mixes with other files. Whether
/// it was created here.
fn prepare_dir(dir: &Path) -> anyhow::Result<bool> {
    let mut created = false;
    match std::fs::read_dir(dir) {
        Ok(mut entries) => anyhow::ensure!(
            entries.next().is_none(),
            "{} is not empty; restore into a new or empty directory",
            dir.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
            created = true;
        }
        Err(e) => return Err(e).with_context(|| format!("read {}", dir.display())),
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("chmod {}", dir.display()))?;
    Ok(created)
}

/// Removes everything inside `dir` (which we emptied or created).
pub fn empty_dir(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            let _ = if path.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
        }
    }
}

/// A backup of a cluster that was itself restored still carries that restore's targets:
/// they must not steer this one.
pub fn without_recovery_settings(auto_conf: &str) -> String {
    auto_conf
        .lines()
        .filter(|l| {
            let key = l.trim_start();
            !(key.starts_with("recovery_target")
                || key.starts_with("restore_command")
                || key.starts_with("# Added by pgplatform restore")
                || key.starts_with("# A copy must not archive")
                || (key.starts_with("archive_mode") && key.contains("'off'")))
        })
        .map(|l| format!("{l}\n"))
        .collect()
}

/// recovery.signal plus settings in postgresql.auto.conf (read after the managed file,
/// so they win), which is written new: only the previous cluster's own settings in
/// place, none of the archive's. Returns the target as written.
fn recovery_settings(
    ctx: &Context,
    dir: &Path,
    goal: &Goal,
    usage: Use<'_>,
) -> anyhow::Result<String> {
    let quote = crate::pg::conf::quote_value;
    let (key, value) = match &goal.target {
        Target::Latest => (None, "latest archived WAL".to_owned()),
        Target::Time(t) => (
            Some("recovery_target_time"),
            t.format("%Y-%m-%d %H:%M:%S%.6f+00").to_string(),
        ),
        Target::Lsn(lsn) => (Some("recovery_target_lsn"), super::layout::format_lsn(*lsn)),
        Target::Name { name, .. } => {
            // Checked when the mark was read; checked again where it becomes a setting.
            super::marks::check_name(name)?;
            (Some("recovery_target_name"), name.clone())
        }
        Target::Xid(xid) => (Some("recovery_target_xid"), xid.to_string()),
    };
    let mut text = format!(
        "\n# Added by pgplatform restore: replay archived WAL, then promote.\nrestore_command = {}\nrecovery_target_timeline = 'latest'\n",
        quote(&ctx.restore_command()?)
    );
    if let Some(key) = key {
        text.push_str(&format!(
            "{key} = {}\nrecovery_target_action = 'promote'\n",
            quote(&value)
        ));
        // A restore point has no "inside": PostgreSQL ignores inclusive for names.
        if !goal.inclusive && !matches!(goal.target, Target::Name { .. }) {
            text.push_str("recovery_target_inclusive = off\n");
        }
    }
    let mut content = untar::AUTO_CONF_HEADER.to_owned();
    match usage {
        Use::Copy => text.push_str(
            "# A copy must not archive into the live cluster's repository.\narchive_mode = 'off'\n",
        ),
        Use::InPlace { previous } => {
            if let Some(bytes) = read_regular_file(&previous.join("postgresql.auto.conf"))? {
                let own = without_recovery_settings(&String::from_utf8_lossy(&bytes));
                content = own;
            }
        }
    }
    content.push_str(&text);
    let auto = dir.join("postgresql.auto.conf");
    std::fs::write(&auto, content).with_context(|| format!("write {}", auto.display()))?;
    std::fs::write(dir.join("recovery.signal"), "").context("write recovery.signal")?;
    Ok(value)
}
