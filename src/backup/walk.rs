//! Which parts of PGDATA a base backup copies — PostgreSQL's own exclusion list for
//! base backups (pg_basebackup's): WAL, temporary and runtime state are left out, their
//! directories kept empty.

use std::path::Path;

use anyhow::Context as _;

/// Directories whose contents are not copied (the directory itself is).
const EMPTY_DIRS: &[&str] = &[
    "pg_wal",
    "pg_dynshmem",
    "pg_notify",
    "pg_replslot",
    "pg_serial",
    "pg_snapshots",
    "pg_stat_tmp",
    "pg_subtrans",
];

/// Files never copied.
const SKIP_FILES: &[&str] = &[
    "postmaster.pid",
    "postmaster.opts",
    "backup_label",
    "backup_label.old",
    "tablespace_map",
    "tablespace_map.old",
    "current_logfiles",
    "recovery.signal",
    "standby.signal",
];

/// One entry to copy, relative to PGDATA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub path: String,
    pub size: u64,
    pub is_dir: bool,
}

/// Whether `rel` (a path relative to PGDATA) is copied.
pub fn included(rel: &str, is_dir: bool) -> bool {
    let name = rel.rsplit('/').next().unwrap_or(rel);
    if name.starts_with("pgsql_tmp") || name == "pg_internal.init" {
        return false;
    }
    if !is_dir && !rel.contains('/') && SKIP_FILES.contains(&name) {
        return false;
    }
    // Inside an emptied directory only pg_wal/archive_status survives, empty.
    if let Some((top, rest)) = rel.split_once('/') {
        if EMPTY_DIRS.contains(&top) {
            return top == "pg_wal" && rest == "archive_status" && is_dir;
        }
    }
    true
}

/// Everything to copy under `pgdata`, directories before their contents, sorted.
pub fn walk(pgdata: &Path) -> anyhow::Result<Vec<Entry>> {
    let mut out = Vec::new();
    walk_dir(pgdata, "", &mut out)?;
    Ok(out)
}

fn walk_dir(root: &Path, rel: &str, out: &mut Vec<Entry>) -> anyhow::Result<()> {
    let dir = root.join(rel);
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .with_context(|| format!("list {}", dir.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("list {}", dir.display()))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name().to_string_lossy().into_owned();
        let child = if rel.is_empty() {
            name
        } else {
            format!("{rel}/{name}")
        };
        // A file removed while we walk (a dropped table) is simply not in the backup.
        let meta = match std::fs::symlink_metadata(entry.path()) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("stat {}", entry.path().display())),
        };
        if meta.file_type().is_symlink() {
            anyhow::bail!(
                "{} is a symbolic link (a tablespace or a moved pg_wal); base backups \
                 support neither",
                entry.path().display()
            );
        }
        if !included(&child, meta.is_dir()) {
            continue;
        }
        if meta.is_dir() {
            out.push(Entry {
                path: child.clone(),
                size: 0,
                is_dir: true,
            });
            walk_dir(root, &child, out)?;
        } else if meta.is_file() {
            out.push(Entry {
                path: child,
                size: meta.len(),
                is_dir: false,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::included;

    #[test]
    fn runtime_state_and_wal_are_left_out() {
        assert!(included("base/1/1259", false));
        assert!(included("global/pg_control", false));
        assert!(included("pg_wal", true));
        assert!(included("pg_wal/archive_status", true));
        assert!(!included("pg_wal/000000010000000000000001", false));
        assert!(!included(
            "pg_wal/archive_status/000000010000000000000001.ready",
            false
        ));
        assert!(!included("postmaster.pid", false));
        assert!(!included("backup_label", false));
        assert!(
            included("base/1/backup_label", false),
            "only the top-level file"
        );
        assert!(!included("pg_stat_tmp/global.stat", false));
        assert!(!included("base/pgsql_tmp", true));
        assert!(!included("global/pg_internal.init", false));
        assert!(included("pgplatform.conf", false));
    }
}
