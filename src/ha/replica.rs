//! Making and keeping this node a replica, on disk: the standby files (standby.signal and
//! whom to stream from), a fresh clone of the primary (pg_basebackup), and pg_rewind of a
//! former primary. PostgreSQL is stopped (or not yet started) whenever these run.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use super::Node;
use crate::pg::conf::{quote_value, write_if_changed, HA_FILE};
use crate::pg::process::command;
use crate::run_as::RunAs;

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
    own_config_files(pgdata, &kept, run_as)
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
    // The agent's own until complete: the PostgreSQL user cannot plant anything in it
    // while root unpacks; it gets the tree (without following links) at the end.
    crate::pg::initdb::create_private_dir(&staging, None)?;
    tracing::info!(backup = %backup.id, "cloning from the backup repository");
    let unpacked = restore::unpack(ctx, &backup, Some(&staging), Default::default()).await;
    let finished = unpacked.and_then(|_| {
        own_config_files(&staging, &NodeFiles::default(), run_as)?;
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
    own_config_files(pgdata, &kept, run_as)?;
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

/// The auto file as initdb writes it. The agent never keeps settings there (they belong
/// in `[postgres.parameters]`); after a clone or rewind it is this, whatever the source had.
pub const AUTO_CONF_FILE: &str = "postgresql.auto.conf";
const AUTO_CONF_EMPTY: &str = "# Do not edit this file manually!\n\
                               # It will be overwritten by the ALTER SYSTEM command.\n";

/// The settings initdb writes into postgresql.conf, machine- and locale-dependent and
/// harmless whatever their value: the only lines kept from a source's postgresql.conf
/// when this node has none of its own.
const INITDB_SETTINGS: &[&str] = &[
    "max_connections",
    "shared_buffers",
    "dynamic_shared_memory_type",
    "max_wal_size",
    "min_wal_size",
    "log_timezone",
    "datestyle",
    "timezone",
    "lc_messages",
    "lc_monetary",
    "lc_numeric",
    "lc_time",
    "default_text_search_config",
];

/// After a clone or a rewind, the files PostgreSQL reads its configuration and access
/// rules from are this node's, never the source's (which may be anyone etcd named):
/// this node's own copies saved before (`kept`), else what the agent writes for a new
/// node. postgresql.auto.conf is always emptied. `pgplatform.conf` and the HA file are
/// rewritten by the agent before PostgreSQL starts.
pub fn own_config_files(
    pgdata: &Path,
    kept: &NodeFiles,
    run_as: Option<&RunAs>,
) -> anyhow::Result<()> {
    use crate::pg::conf::MANAGED_FILE;
    for name in NodeFiles::NAMES {
        let path = pgdata.join(name);
        let content = match kept.get(name) {
            Some(bytes) => bytes.to_vec(),
            None => match *name {
                "postgresql.conf" => own_postgresql_conf(&path)?.into_bytes(),
                "pg_hba.conf" => crate::pg::hba::render_hba(&[]).into_bytes(),
                "pg_ident.conf" => crate::pg::conf::render_own_ident(run_as)?.into_bytes(),
                MANAGED_FILE | HA_FILE => {
                    b"# Managed by pgplatform: written before PostgreSQL starts.\n".to_vec()
                }
                other => bail!("no default for {other}"),
            },
        };
        crate::safe_file::replace(&path, &content, 0o600, run_as)?;
    }
    crate::safe_file::replace(
        &pgdata.join(AUTO_CONF_FILE),
        AUTO_CONF_EMPTY.as_bytes(),
        0o600,
        run_as,
    )
}

/// postgresql.conf for a node that had none: initdb's settings from the copy at `path`
/// (the source's), nothing else, and the include of the managed file last.
fn own_postgresql_conf(path: &Path) -> anyhow::Result<String> {
    let source = match crate::safe_file::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => {
            tracing::warn!("not using the source's postgresql.conf: {e}");
            String::new()
        }
    };
    let mut out = String::from(
        "# Written by pgplatform for this node; settings belong in [postgres.parameters].\n",
    );
    for line in source.lines().filter(|l| is_initdb_setting(l)) {
        out.push_str(line);
        out.push('\n');
    }
    out.push_str(&format!(
        "\n# Added by pgplatform; keep it last so managed settings apply.\ninclude '{}'\n",
        crate::pg::conf::MANAGED_FILE
    ));
    Ok(out)
}

/// Whether `line` sets one of initdb's settings (`name = value` or `name value`; the
/// config grammar allows one setting per line, so nothing else can ride along).
fn is_initdb_setting(line: &str) -> bool {
    let line = line.trim_start();
    let name_end = line
        .find(|c: char| c == '=' || c.is_ascii_whitespace())
        .unwrap_or(line.len());
    let (name, rest) = line.split_at(name_end);
    !rest.is_empty() && INITDB_SETTINGS.iter().any(|s| s.eq_ignore_ascii_case(name))
}

/// The files that belong to this node, not to the cluster: kept across a rewind or clone.
#[derive(Default)]
pub struct NodeFiles(Vec<(&'static str, Vec<u8>)>);

impl NodeFiles {
    const NAMES: &'static [&'static str] = &[
        "postgresql.conf",
        crate::pg::conf::MANAGED_FILE,
        HA_FILE,
        "pg_hba.conf",
        "pg_ident.conf",
    ];

    /// Reads this node's copies. Anything but a regular file (a link the PostgreSQL user
    /// planted) is not this node's and is not read.
    pub fn save(pgdata: &Path) -> anyhow::Result<NodeFiles> {
        let mut files = Vec::new();
        for name in Self::NAMES {
            let path = pgdata.join(name);
            match crate::safe_file::read(&path) {
                Ok(bytes) => files.push((*name, bytes)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => {
                    tracing::warn!("not keeping {}: {e}", path.display());
                }
                Err(e) => return Err(e).with_context(|| format!("read {}", path.display())),
            }
        }
        Ok(NodeFiles(files))
    }

    fn get(&self, name: &str) -> Option<&[u8]> {
        self.0
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, b)| b.as_slice())
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
        assert!(crate::pg::is_standby(dir.path()));
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

    /// What a fake primary (any host etcd names) would ship in its data directory.
    fn plant_source_files(dir: &Path) {
        let write = |name: &str, text: &str| std::fs::write(dir.join(name), text).unwrap();
        write(
            "postgresql.conf",
            "max_connections = 100\n\
             timezone = 'Etc/UTC'\n\
             include 'pgplatform.conf'\n\
             archive_command = 'sh -c evil'\n\
             shared_preload_libraries = '/tmp/evil.so'\n\
             include_dir 'conf.d'\n\
             max_connections_evil = 1\n",
        );
        write(
            AUTO_CONF_FILE,
            "archive_mode = 'always'\nrestore_command = 'sh -c evil'\n",
        );
        write(
            "pg_hba.conf",
            "# Generated by pgplatform\nhost all all 0.0.0.0/0 trust\n",
        );
        write("pg_ident.conf", "pgplatform  evil  pgplatform\n");
        write(
            crate::pg::conf::MANAGED_FILE,
            "archive_command = 'sh -c evil'\n",
        );
        write(HA_FILE, "primary_conninfo = 'host=evil'\n");
    }

    fn assert_no_source_content(dir: &Path) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            for bad in ["evil", "trust", "archive_mode", "include_dir"] {
                assert!(
                    !text.contains(bad),
                    "{} kept {bad:?}:\n{text}",
                    path.display()
                );
            }
        }
    }

    #[test]
    fn after_a_new_clone_the_config_files_are_the_agents_not_the_sources() {
        let dir = tempfile::tempdir().unwrap();
        plant_source_files(dir.path());
        own_config_files(dir.path(), &NodeFiles::default(), None).unwrap();
        assert_no_source_content(dir.path());
        let conf = std::fs::read_to_string(dir.path().join("postgresql.conf")).unwrap();
        // initdb's settings survive (they depend on the machine and locale), the include
        // of the managed file is last.
        assert!(conf.contains("max_connections = 100\n"), "{conf}");
        assert!(conf.contains("timezone = 'Etc/UTC'\n"), "{conf}");
        assert!(
            conf.trim_end().ends_with("include 'pgplatform.conf'"),
            "{conf}"
        );
        assert_eq!(conf.matches("include").count(), 1, "{conf}");
        let auto = std::fs::read_to_string(dir.path().join(AUTO_CONF_FILE)).unwrap();
        assert_eq!(auto, AUTO_CONF_EMPTY);
        let hba = std::fs::read_to_string(dir.path().join("pg_hba.conf")).unwrap();
        assert_eq!(hba, crate::pg::hba::render_hba(&[]));
        let ident = std::fs::read_to_string(dir.path().join("pg_ident.conf")).unwrap();
        assert_eq!(ident, crate::pg::conf::render_own_ident(None).unwrap());
    }

    #[test]
    fn after_a_rewind_this_nodes_own_files_come_back() {
        let dir = tempfile::tempdir().unwrap();
        let own = |name: &str| format!("# this node's {name}\n");
        for name in NodeFiles::NAMES {
            std::fs::write(dir.path().join(name), own(name)).unwrap();
        }
        std::fs::write(dir.path().join(AUTO_CONF_FILE), "work_mem = '8MB'\n").unwrap();
        let kept = NodeFiles::save(dir.path()).unwrap();
        // pg_rewind copies the source's files over ours.
        plant_source_files(dir.path());
        own_config_files(dir.path(), &kept, None).unwrap();
        assert_no_source_content(dir.path());
        for name in NodeFiles::NAMES {
            let text = std::fs::read_to_string(dir.path().join(name)).unwrap();
            assert_eq!(text, own(name));
        }
        let auto = std::fs::read_to_string(dir.path().join(AUTO_CONF_FILE)).unwrap();
        assert_eq!(auto, AUTO_CONF_EMPTY);
    }

    #[test]
    fn a_link_planted_among_the_nodes_files_is_not_kept_or_followed() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let secret = outside.path().join("shadow");
        std::fs::write(&secret, "root:secret\n").unwrap();
        std::os::unix::fs::symlink(&secret, dir.path().join("pg_hba.conf")).unwrap();
        let kept = NodeFiles::save(dir.path()).unwrap();
        assert!(kept.get("pg_hba.conf").is_none());
        own_config_files(dir.path(), &kept, None).unwrap();
        assert_eq!(std::fs::read_to_string(&secret).unwrap(), "root:secret\n");
        let hba = std::fs::read_to_string(dir.path().join("pg_hba.conf")).unwrap();
        assert_eq!(hba, crate::pg::hba::render_hba(&[]));
    }

    #[test]
    fn only_initdb_settings_pass_the_filter() {
        assert!(is_initdb_setting("max_connections = 100"));
        assert!(is_initdb_setting("  TimeZone='UTC'"));
        assert!(is_initdb_setting("lc_messages 'C.UTF-8'"));
        assert!(!is_initdb_setting("max_connections"));
        assert!(!is_initdb_setting("max_connections_x = 1"));
        assert!(!is_initdb_setting("#max_connections = 1"));
        assert!(!is_initdb_setting("archive_command = 'x'"));
        assert!(!is_initdb_setting("include 'x'"));
    }

    #[test]
    fn standby_files_replace_links_planted_at_their_names() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let victim = outside.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        std::os::unix::fs::symlink(&victim, dir.path().join(HA_FILE)).unwrap();
        std::os::unix::fs::symlink(&victim, dir.path().join(".pgplatform.ha.conf.tmp")).unwrap();
        std::os::unix::fs::symlink(
            outside.path().join("new"),
            dir.path().join("standby.signal"),
        )
        .unwrap();
        write_standby(dir.path(), "b", None, "pw", None).unwrap();
        write_primary(dir.path(), "", None).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        assert!(!outside.path().join("new").exists());
        assert!(std::fs::symlink_metadata(dir.path().join(HA_FILE))
            .unwrap()
            .is_file());
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
