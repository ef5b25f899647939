//! Making and keeping this node a replica, on disk: the standby files (standby.signal and
//! whom to stream from), a fresh clone of the primary (pg_basebackup), and pg_rewind of a
//! former primary. PostgreSQL is stopped (or not yet started) whenever these run.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use super::Node;
use crate::pg::conf::{quote_value, write_if_changed, HA_FILE};
use crate::pg::process::{command, RunAs};

/// Where a replica streams from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    pub name: String,
    pub host: String,
    pub port: u16,
    /// `[ha] replication_sslmode` / `replication_sslrootcert`.
    pub tls: Option<crate::config::ReplicationTls>,
}

impl Upstream {
    /// A libpq connection string as the replication role (the password goes separately).
    /// The role authenticates by SCRAM (pg_hba.conf); with TLS required, channel binding
    /// is required too, so a server that skips SCRAM (or a man in the middle) fails the
    /// connection instead of being trusted.
    fn conninfo(&self, application_name: &str, dbname: Option<&str>) -> String {
        let mut s = format!(
            "host={} port={} user={} application_name={application_name} connect_timeout=3",
            self.host,
            self.port,
            crate::pg::REPLICATION_ROLE
        );
        if let Some(db) = dbname {
            s.push_str(&format!(" dbname={db}"));
        }
        if let Some(tls) = &self.tls {
            s.push_str(&format!(" sslmode={}", tls.sslmode));
            if let Some(root) = &tls.sslrootcert {
                s.push_str(&format!(
                    " sslrootcert={}",
                    conninfo_value(&root.to_string_lossy())
                ));
            }
            if matches!(
                tls.sslmode.as_str(),
                "require" | "verify-ca" | "verify-full"
            ) {
                s.push_str(" channel_binding=require");
            }
        }
        s
    }
}

/// A conninfo value in single quotes, `\` and `'` escaped (paths may hold spaces).
fn conninfo_value(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

pub fn is_standby(pgdata: &Path) -> bool {
    pgdata.join("standby.signal").exists()
}

/// Makes the next start a standby streaming from `upstream` (or from nobody yet).
/// Returns whether whom to stream from changed (a running replica then reloads).
pub fn write_standby(
    pgdata: &Path,
    me: &str,
    upstream: Option<&Upstream>,
    password: &str,
    run_as: Option<&RunAs>,
) -> anyhow::Result<bool> {
    let signal = pgdata.join("standby.signal");
    if !signal.exists() {
        write_if_changed(&signal, "", run_as)?;
    }
    let mut text = String::from(
        "# Managed by pgplatform's HA loop: whom this replica streams from.\n\
         recovery_target_timeline = 'latest'\n",
    );
    if let Some(upstream) = upstream {
        let conninfo = format!("{} password={password}", upstream.conninfo(me, None));
        text.push_str(&format!("primary_conninfo = {}\n", quote_value(&conninfo)));
    }
    write_if_changed(&pgdata.join(HA_FILE), &text, run_as)
}

/// The HA file of a primary: nothing to stream from, and which standbys confirm commits.
/// Returns whether it changed (PostgreSQL then reloads).
pub fn write_primary(
    pgdata: &Path,
    synchronous_standby_names: &str,
    run_as: Option<&RunAs>,
) -> anyhow::Result<bool> {
    write_if_changed(
        &pgdata.join(HA_FILE),
        &format!(
            "# Managed by pgplatform's HA loop: this node is the primary.\n\
             synchronous_standby_names = {}\n",
            quote_value(synchronous_standby_names)
        ),
        run_as,
    )
}

/// `FIRST 2 ("a","b")`: every listed standby confirms every commit, so each of them has
/// all acknowledged commits and may be promoted. Empty: none.
pub fn synchronous_standby_names(names: &[String]) -> String {
    if names.is_empty() {
        return String::new();
    }
    let quoted: Vec<String> = names.iter().map(|n| format!("\"{n}\"")).collect();
    format!("FIRST {} ({})", names.len(), quoted.join(","))
}

/// Copies the primary's data directory into `pgdata` with pg_basebackup. The copy is made
/// beside it and swapped in only when complete, so a failed clone keeps the old data.
/// This node's own configuration files are kept.
pub async fn clone(node: &Node, upstream: &Upstream) -> anyhow::Result<()> {
    let (pgdata, me, run_as) = (&node.pgdata, &node.config.name, node.run_as.as_ref());
    let kept = NodeFiles::save(pgdata)?;
    let staging = pgdata.with_extension("clone");
    if staging.exists() {
        std::fs::remove_dir_all(&staging)
            .with_context(|| format!("remove stale {}", staging.display()))?;
    }
    crate::pg::initdb::create_private_dir(&staging, run_as)?;
    tracing::info!(from = %upstream.name, "cloning the primary with pg_basebackup");
    let output = command(&node.binaries.path("pg_basebackup"), run_as)
        .env("PGPASSWORD", node.secret.replication_password())
        .arg("--pgdata")
        .arg(&staging)
        .arg(format!("--dbname={}", upstream.conninfo(me, None)))
        .args(["--wal-method=stream", "--checkpoint=fast", "--no-password"])
        .output()
        .await
        .context("run pg_basebackup")?;
    if !output.status.success() {
        let _ = std::fs::remove_dir_all(&staging);
        bail!(
            "pg_basebackup from {} failed ({}): {}",
            upstream.name,
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let old: PathBuf = pgdata.with_extension("old");
    if pgdata.exists() {
        if old.exists() {
            std::fs::remove_dir_all(&old)
                .with_context(|| format!("remove stale {}", old.display()))?;
        }
        std::fs::rename(pgdata, &old)
            .with_context(|| format!("move the old data aside to {}", old.display()))?;
    }
    std::fs::rename(&staging, pgdata)
        .with_context(|| format!("move the clone into {}", pgdata.display()))?;
    if old.exists() {
        std::fs::remove_dir_all(&old).with_context(|| format!("remove {}", old.display()))?;
    }
    kept.restore(run_as)
}

/// A new replica from the backup repository instead of the primary (which then serves
/// only the WAL since that backup): the newest base backup of this same cluster (its
/// system identifier is the primary's), unpacked beside `pgdata` and moved in when
/// complete. It catches up from the WAL archive (restore_command), then streams.
pub async fn clone_from_backup(
    node: &Node,
    ctx: &crate::backup::context::Context,
    system_identifier: &str,
) -> anyhow::Result<String> {
    use crate::backup::{catalog, restore};
    let backups = catalog::base_backups(&ctx.repo).await?;
    let backup = backups
        .iter()
        .rev()
        .find(|b| b.system_identifier == system_identifier)
        .with_context(|| {
            format!(
                "no base backup of this cluster (system identifier {system_identifier}) in {}",
                ctx.repo.describe()
            )
        })?
        .clone();
    let run_as = node.run_as.as_ref();
    let staging = node.pgdata.with_extension("clone");
    if staging.exists() {
        std::fs::remove_dir_all(&staging)
            .with_context(|| format!("remove stale {}", staging.display()))?;
    }
    crate::pg::initdb::create_private_dir(&staging, run_as)?;
    tracing::info!(backup = %backup.id, "cloning from the backup repository");
    let unpacked = restore::unpack(ctx, &backup, Some(&staging), Default::default()).await;
    let finished = unpacked.and_then(|_| {
        let auto_conf = staging.join("postgresql.auto.conf");
        if let Ok(text) = std::fs::read_to_string(&auto_conf) {
            std::fs::write(&auto_conf, restore::without_recovery_settings(&text))
                .with_context(|| format!("write {}", auto_conf.display()))?;
        }
        let _ = std::fs::remove_file(staging.join("recovery.signal"));
        crate::pg::process::chown_tree(&staging, run_as)?;
        std::fs::rename(&staging, &node.pgdata)
            .with_context(|| format!("move the clone into {}", node.pgdata.display()))
    });
    if let Err(e) = finished {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(e);
    }
    Ok(backup.id)
}

/// Rewinds a former primary onto `upstream`'s timeline (a no-op when it did not diverge).
/// pg_rewind finishes crash recovery first on its own when the node was killed.
pub async fn rewind(node: &Node, upstream: &Upstream) -> anyhow::Result<()> {
    let (pgdata, me, run_as) = (&node.pgdata, &node.config.name, node.run_as.as_ref());
    let kept = NodeFiles::save(pgdata)?;
    tracing::info!(from = %upstream.name, "rewinding this node's data onto the primary's timeline");
    let output = command(&node.binaries.path("pg_rewind"), run_as)
        .current_dir(pgdata)
        .env("PGPASSWORD", node.secret.replication_password())
        .arg("--target-pgdata")
        .arg(pgdata)
        .arg(format!(
            "--source-server={}",
            upstream.conninfo(me, Some("postgres"))
        ))
        .output()
        .await
        .context("run pg_rewind")?;
    // pg_rewind copies the primary's configuration files over ours; put this node's back.
    kept.restore(run_as)?;
    if !output.status.success() {
        bail!(
            "pg_rewind from {} failed ({}): {}",
            upstream.name,
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    tracing::info!(
        "pg_rewind: {}",
        String::from_utf8_lossy(&output.stderr)
            .lines()
            .last()
            .unwrap_or("done")
    );
    Ok(())
}

/// The files that belong to this node, not to the cluster: kept across a rewind.
pub struct NodeFiles(Vec<(PathBuf, Vec<u8>)>);

impl NodeFiles {
    const NAMES: &'static [&'static str] = &[
        "postgresql.conf",
        crate::pg::conf::MANAGED_FILE,
        HA_FILE,
        "pg_hba.conf",
        "pg_ident.conf",
    ];

    pub fn save(pgdata: &Path) -> anyhow::Result<NodeFiles> {
        let mut files = Vec::new();
        for name in Self::NAMES {
            let path = pgdata.join(name);
            match std::fs::read(&path) {
                Ok(bytes) => files.push((path, bytes)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).with_context(|| format!("read {}", path.display())),
            }
        }
        Ok(NodeFiles(files))
    }

    pub fn restore(&self, run_as: Option<&RunAs>) -> anyhow::Result<()> {
        for (path, bytes) in &self.0 {
            crate::pg::conf::write_atomically(path, bytes, 0o600)?;
            crate::pg::process::chown_to(path, run_as)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standby_files_name_the_upstream_and_change_only_when_it_does() {
        let dir = tempfile::tempdir().unwrap();
        let up = Upstream {
            name: "a".into(),
            host: "10.0.0.1".into(),
            port: 5432,
            tls: None,
        };
        assert!(write_standby(dir.path(), "b", Some(&up), "pw", None).unwrap());
        assert!(is_standby(dir.path()));
        let text = std::fs::read_to_string(dir.path().join(HA_FILE)).unwrap();
        assert!(text.contains(
            "primary_conninfo = 'host=10.0.0.1 port=5432 user=pgplatform_replication \
             application_name=b connect_timeout=3 password=pw'"
        ));
        assert!(!write_standby(dir.path(), "b", Some(&up), "pw", None).unwrap());
        let other = Upstream {
            name: "c".into(),
            host: "10.0.0.3".into(),
            port: 5432,
            tls: None,
        };
        assert!(write_standby(dir.path(), "b", Some(&other), "pw", None).unwrap());
    }

    #[test]
    fn verified_tls_requires_channel_binding_so_scram_cannot_be_skipped() {
        let up = Upstream {
            name: "a".into(),
            host: "db1.example".into(),
            port: 5432,
            tls: Some(crate::config::ReplicationTls {
                sslmode: "verify-full".into(),
                sslrootcert: Some(PathBuf::from("/etc/pg ca/it's.pem")),
            }),
        };
        assert_eq!(
            up.conninfo("b", None),
            "host=db1.example port=5432 user=pgplatform_replication application_name=b \
             connect_timeout=3 sslmode=verify-full sslrootcert='/etc/pg ca/it\\'s.pem' \
             channel_binding=require"
        );
        let prefer = Upstream {
            tls: Some(crate::config::ReplicationTls {
                sslmode: "prefer".into(),
                sslrootcert: None,
            }),
            ..up
        };
        assert!(prefer.conninfo("b", None).ends_with(" sslmode=prefer"));
    }
}
