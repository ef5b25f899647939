//! Writing and reading files in directories another OS user can write.
//!
//! PGDATA belongs to the PostgreSQL user, yet the agent (often root) writes files there.
//! Anything at a name that user can predict may be a symbolic link, a hard link or a FIFO
//! it planted, so root must never open, chown or chmod through such a name:
//!
//! - a new file is created under a random name with `O_CREAT|O_EXCL|O_NOFOLLOW`, so the
//!   open fails instead of following or reusing anything planted there;
//! - its owner and mode are set through the open descriptor (`fchown`, `fchmod`), never
//!   by path;
//! - it is written, fsynced and renamed over the target (rename replaces a link planted
//!   at the target; it never writes through it), then the directory is fsynced;
//! - existing files are read with `O_NOFOLLOW|O_NONBLOCK` and only if they are regular.
//!
//! `replace` is also how the agent replaces its own files (admin token, agent.json,
//! secrets, certificates): one atomic write, wherever the directory is.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::Context;
use nix::fcntl::OFlag;

use crate::run_as::RunAs;

/// How often a random temp name is drawn again when one already exists.
const TEMP_ATTEMPTS: usize = 8;

/// Replaces `path` with `bytes` atomically: a reader sees the old content or the new,
/// never half, and nothing planted at `path` or beside it is followed. The new file has
/// exactly `mode` and belongs to `owner` (the agent's own user when `None`).
pub fn replace(path: &Path, bytes: &[u8], mode: u32, owner: Option<&RunAs>) -> anyhow::Result<()> {
    let dir = path.parent().context("file path has no directory")?;
    let (temp, mut file) = create_temp(path)?;
    let written = (|| -> anyhow::Result<()> {
        if let Some(account) = owner {
            std::os::unix::fs::fchown(
                &file,
                Some(account.uid.as_raw()),
                Some(account.gid.as_raw()),
            )
            .with_context(|| format!("chown {} to {}", temp.display(), account.name))?;
        }
        // After fchown (which may clear mode bits) and regardless of the umask.
        file.set_permissions(std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("chmod {}", temp.display()))?;
        file.write_all(bytes)
            .and_then(|()| file.sync_all())
            .with_context(|| format!("write {}", temp.display()))?;
        std::fs::rename(&temp, path).with_context(|| format!("replace {}", path.display()))
    })();
    if let Err(e) = written {
        // unlink never follows a link: at worst it removes something planted at our name.
        let _ = std::fs::remove_file(&temp);
        return Err(e);
    }
    sync_dir(dir);
    Ok(())
}

/// Creates a new file at exactly `path`, failing if anything (file, link, FIFO) is
/// already there. The file has exactly `mode`.
pub fn create_new(path: &Path, mode: u32) -> std::io::Result<File> {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode & 0o777)
        .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC).bits())
        .open(path)?;
    file.set_permissions(std::fs::Permissions::from_mode(mode))?;
    Ok(file)
}

/// Reads `path` without following a symbolic link at it; anything but a regular file
/// (a link, FIFO, device, directory) is an error of kind `InvalidInput` rather than
/// something to read or wait on.
pub fn read(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut file = open_regular(path)?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// `read` as UTF-8 text.
pub fn read_to_string(path: &Path) -> std::io::Result<String> {
    String::from_utf8(read(path)?).map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{} is not UTF-8", path.display()),
        )
    })
}

/// [`open_regular`], with `None` when nothing is at `path`.
pub fn open_regular_if_exists(path: &Path) -> std::io::Result<Option<File>> {
    match open_regular(path) {
        Ok(file) => Ok(Some(file)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Opens `path` for reading if it is a regular file (not through a link); otherwise an
/// error of kind `InvalidInput`.
pub fn open_regular(path: &Path) -> std::io::Result<File> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        // O_NONBLOCK: opening a FIFO planted at `path` must not hang the agent.
        .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK).bits())
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(nix::errno::Errno::ELOOP as i32) {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!(
                        "{} is a symbolic link; refusing to follow it",
                        path.display()
                    ),
                )
            } else {
                e
            }
        })?;
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "{} is not a regular file; refusing to read it",
                path.display()
            ),
        ));
    }
    Ok(file)
}

/// Removes temp files `replace` left in `dir` when a process died between creating and
/// renaming them. Only for a directory no one else writes through `replace` right now
/// (the agent's start, before PostgreSQL runs). Unlinking never follows a link.
pub fn remove_stale_temps(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if is_temp_name(&entry.file_name().to_string_lossy()) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// `.<name>.<16 hex digits>.tmp`, as `create_temp` names them.
fn is_temp_name(name: &str) -> bool {
    let Some(rest) = name.strip_prefix('.').and_then(|n| n.strip_suffix(".tmp")) else {
        return false;
    };
    rest.rsplit_once('.').is_some_and(|(base, hex)| {
        !base.is_empty() && hex.len() == 16 && hex.bytes().all(|b| b.is_ascii_hexdigit())
    })
}

/// Gives the existing directory `dir` exactly `mode` and, when set, `owner`, through a
/// descriptor opened without following a link: a link planted at `dir` is an error.
pub fn set_dir_owner_mode(dir: &Path, mode: u32, owner: Option<&RunAs>) -> anyhow::Result<()> {
    let handle = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags((OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC).bits())
        .open(dir)
        .with_context(|| {
            format!(
                "open {} (it must be a directory, not a symbolic link)",
                dir.display()
            )
        })?;
    if let Some(account) = owner {
        std::os::unix::fs::fchown(
            &handle,
            Some(account.uid.as_raw()),
            Some(account.gid.as_raw()),
        )
        .with_context(|| format!("chown {} to {}", dir.display(), account.name))?;
    }
    handle
        .set_permissions(std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", dir.display()))
}

/// A new, empty file beside `path` under a random name nobody could have planted.
fn create_temp(path: &Path) -> anyhow::Result<(PathBuf, File)> {
    let dir = path.parent().context("file path has no directory")?;
    let name = path
        .file_name()
        .context("file path has no name")?
        .to_string_lossy();
    let mut last_error = None;
    for _ in 0..TEMP_ATTEMPTS {
        let temp = dir.join(format!(".{name}.{:016x}.tmp", rand::random::<u64>()));
        // 0o600 until the caller's owner and mode are set through the descriptor.
        match create_new(&temp, 0o600) {
            Ok(file) => return Ok((temp, file)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last_error = Some(e),
            Err(e) => return Err(e).with_context(|| format!("create {}", temp.display())),
        }
    }
    Err(anyhow::anyhow!(
        "create a temp file beside {}: {TEMP_ATTEMPTS} random names were all taken ({})",
        path.display(),
        last_error.map(|e| e.to_string()).unwrap_or_default()
    ))
}

/// Makes a rename in `dir` durable; best effort (some filesystems refuse to fsync a dir).
fn sync_dir(dir: &Path) {
    let opened = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags((OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC).bits())
        .open(dir);
    if let Ok(d) = opened {
        let _ = d.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, MetadataExt};

    fn temps_in(dir: &Path) -> Vec<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".tmp"))
            .collect()
    }

    #[test]
    fn a_link_at_the_target_is_replaced_not_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        std::fs::write(&outside, "precious").unwrap();
        let target = dir.path().join("pg_hba.conf");
        symlink(&outside, &target).unwrap();
        replace(&target, b"ours", 0o600, None).unwrap();
        assert_eq!(std::fs::read_to_string(&outside).unwrap(), "precious");
        let meta = std::fs::symlink_metadata(&target).unwrap();
        assert!(meta.is_file(), "the link was replaced by a regular file");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "ours");
        assert!(temps_in(dir.path()).is_empty());
    }

    #[test]
    fn a_link_planted_at_a_temp_name_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        std::fs::write(&outside, "precious").unwrap();
        let temp = dir.path().join(".x.tmp");
        symlink(&outside, &temp).unwrap();
        let err = create_new(&temp, 0o600).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::AlreadyExists, "{err}");
        // Even a dangling link (which O_CREAT alone would create through) is refused.
        let dangling = dir.path().join(".y.tmp");
        symlink(dir.path().join("created-through-link"), &dangling).unwrap();
        assert!(create_new(&dangling, 0o600).is_err());
        assert!(!dir.path().join("created-through-link").exists());
        assert_eq!(std::fs::read_to_string(&outside).unwrap(), "precious");
    }

    #[test]
    fn temp_names_are_random_and_old_fixed_names_are_not_used() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("pgplatform.conf");
        let outside = dir.path().join("outside");
        std::fs::write(&outside, "precious").unwrap();
        // The name the agent used to write through, and ones a guesser might try.
        symlink(&outside, dir.path().join(".pgplatform.conf.tmp")).unwrap();
        let (a, _fa) = create_temp(&target).unwrap();
        let (b, _fb) = create_temp(&target).unwrap();
        assert_ne!(a, b);
        for t in [&a, &b] {
            let name = t.file_name().unwrap().to_string_lossy().into_owned();
            assert!(
                name.starts_with(".pgplatform.conf.") && name.len() > 30,
                "{name}"
            );
        }
        replace(&target, b"ours", 0o600, None).unwrap();
        assert_eq!(std::fs::read_to_string(&outside).unwrap(), "precious");
    }

    #[test]
    fn mode_is_exact_whatever_the_umask() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("agent.json");
        for mode in [0o600, 0o644, 0o640] {
            replace(&target, b"{}", mode, None).unwrap();
            let meta = std::fs::symlink_metadata(&target).unwrap();
            assert_eq!(meta.mode() & 0o7777, mode);
            assert_eq!(meta.uid(), nix::unistd::Uid::effective().as_raw());
        }
        let created = create_new(&dir.path().join("new"), 0o666).unwrap();
        assert_eq!(created.metadata().unwrap().mode() & 0o7777, 0o666);
    }

    #[test]
    fn reads_refuse_links_and_fifos() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        std::fs::write(&outside, "secret").unwrap();
        let link = dir.path().join("pg_hba.conf");
        symlink(&outside, &link).unwrap();
        let err = read(&link).unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        let fifo = dir.path().join("postgresql.conf");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let err = read(&fifo).unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
        assert_eq!(read_to_string(&outside).unwrap(), "secret");
    }

    #[test]
    fn stale_temps_are_removed_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let (stale, _file) = create_temp(&dir.path().join("pg_hba.conf")).unwrap();
        for keep in [
            ".pg_hba.conf.tmp",
            ".s.PGSQL.5432",
            "pg_hba.conf",
            ".x.0123.tmp",
        ] {
            std::fs::write(dir.path().join(keep), "").unwrap();
        }
        remove_stale_temps(dir.path());
        assert!(!stale.exists());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 4);
    }

    #[test]
    fn directory_modes_are_not_set_through_links() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        std::fs::create_dir(&real).unwrap();
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o700)).unwrap();
        let link = dir.path().join("run");
        symlink(&real, &link).unwrap();
        assert!(set_dir_owner_mode(&link, 0o777, None).is_err());
        let meta = std::fs::metadata(&real).unwrap();
        assert_eq!(meta.mode() & 0o7777, 0o700);
        set_dir_owner_mode(&real, 0o750, None).unwrap();
        assert_eq!(std::fs::metadata(&real).unwrap().mode() & 0o7777, 0o750);
    }

    #[test]
    fn a_failed_replace_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        // A directory at the target: rename fails, the temp file goes.
        let target = dir.path().join("standby.signal");
        std::fs::create_dir(&target).unwrap();
        std::fs::write(target.join("keep"), "x").unwrap();
        assert!(replace(&target, b"", 0o600, None).is_err());
        assert!(temps_in(dir.path()).is_empty());
        assert!(target.join("keep").exists());
    }
}
