//! A role's credentials as files an application can use directly: `password`,
//! `database_url`, `env`, `pgpass`, `jdbc_url`, `direct_url` (PostgreSQL's own port, for
//! migrations and dump tools that need a session), and in an HA cluster `replica_url` (the
//! pooler's read-only listener); with a Redis, `redis_url`, `redis_password` and the
//! `REDIS_*` lines in `env`. Directories 0700, files 0600, each file replaced atomically.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::Context;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use crate::safe_file;

/// Where and how a role connects.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub host: String,
    pub port: u16,
    pub database: String,
    pub user: String,
    pub password: String,
    /// libpq's sslmode (`url_sslmode`).
    pub sslmode: Option<&'static str>,
    /// HA: the read-only listener's port, for `replica_url`.
    pub replica_port: Option<u16>,
    /// PostgreSQL's own port and the sslmode it needs (`direct_sslmode`), for `direct_url`.
    pub direct_port: u16,
    pub direct_sslmode: Option<&'static str>,
    /// The tenant's Redis, when it has one (the owner's files only).
    pub redis: Option<crate::redis::RedisAccess>,
}

/// The sslmode tenants' URLs carry. Where the address they name is reachable from other
/// hosts, `require`: with `prefer`, an active man-in-the-middle could strip TLS. On
/// loopback, the pooler's `prefer` (TLS offered, not needed) or nothing (PostgreSQL).
/// `require` encrypts but does not check who answers; `verify-full` with
/// `sslrootcert=<data>/tls/server.crt` does (the README shows it).
pub fn url_sslmode(config: &crate::config::Config) -> Option<&'static str> {
    use crate::config::{beyond_loopback, ClientTls};
    if config.pooler.enabled {
        Some(match config.pooler.client_tls {
            ClientTls::Disable => "disable",
            ClientTls::Require => "require",
            ClientTls::Allow if beyond_loopback(&config.pooler.listen_addr) => "require",
            ClientTls::Allow => "prefer",
        })
    } else {
        direct_sslmode(config)
    }
}

/// The sslmode of `direct_url`, straight to PostgreSQL: it always serves TLS and
/// pg_hba.conf asks it of other hosts, so `require` when other hosts can reach it.
pub fn direct_sslmode(config: &crate::config::Config) -> Option<&'static str> {
    crate::config::beyond_loopback(&config.postgres.listen_addresses).then_some("require")
}

/// Everything but unreserved characters (RFC 3986) is percent-encoded.
const URL_COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

fn enc(text: &str) -> String {
    utf8_percent_encode(text, URL_COMPONENT).to_string()
}

impl Credentials {
    fn host_for_url(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        }
    }

    fn query(&self, separator: char) -> String {
        self.sslmode
            .map(|mode| format!("{separator}sslmode={mode}"))
            .unwrap_or_default()
    }

    /// `postgresql://user:password@host:port/database?sslmode=…`.
    pub fn database_url(&self) -> String {
        format!(
            "postgresql://{}:{}@{}:{}/{}{}",
            enc(&self.user),
            enc(&self.password),
            self.host_for_url(),
            self.port,
            enc(&self.database),
            self.query('?')
        )
    }

    /// `database_url` to PostgreSQL's own port: session semantics whatever the pool mode.
    pub fn direct_url(&self) -> String {
        Credentials {
            port: self.direct_port,
            sslmode: self.direct_sslmode,
            ..self.clone()
        }
        .database_url()
    }

    /// `direct_url` without the password, safe to print.
    pub fn direct_url_redacted(&self) -> String {
        Credentials {
            port: self.direct_port,
            sslmode: self.direct_sslmode,
            ..self.clone()
        }
        .database_url_redacted()
    }

    /// The URL without the password, safe to print.
    pub fn database_url_redacted(&self) -> String {
        format!(
            "postgresql://{}@{}:{}/{}{}",
            enc(&self.user),
            self.host_for_url(),
            self.port,
            enc(&self.database),
            self.query('?')
        )
    }

    pub fn jdbc_url(&self) -> String {
        format!(
            "jdbc:postgresql://{}:{}/{}?user={}&password={}{}",
            self.host_for_url(),
            self.port,
            enc(&self.database),
            enc(&self.user),
            enc(&self.password),
            self.query('&')
        )
    }

    /// libpq variables plus DATABASE_URL; usable as a docker env-file (no quoting).
    pub fn env(&self) -> String {
        let sslmode = self
            .sslmode
            .map(|mode| format!("PGSSLMODE={mode}\n"))
            .unwrap_or_default();
        let redis = self
            .redis
            .as_ref()
            .map(crate::redis::RedisAccess::env)
            .unwrap_or_default();
        format!(
            "PGHOST={}\nPGPORT={}\nPGDATABASE={}\nPGUSER={}\nPGPASSWORD={}\n{sslmode}DATABASE_URL={}\n{redis}",
            self.host,
            self.port,
            self.database,
            self.user,
            self.password,
            self.database_url()
        )
    }

    /// One .pgpass line (`:` and `\` escaped).
    pub fn pgpass(&self) -> String {
        let esc = |s: &str| s.replace('\\', "\\\\").replace(':', "\\:");
        format!(
            "{}:{}:{}:{}:{}\n",
            esc(&self.host),
            self.port,
            esc(&self.database),
            esc(&self.user),
            esc(&self.password)
        )
    }

    fn files(&self) -> Vec<(&'static str, String)> {
        let mut files = vec![
            ("password", self.password.clone()),
            ("database_url", self.database_url()),
            ("env", self.env()),
            ("pgpass", self.pgpass()),
            ("jdbc_url", self.jdbc_url()),
            ("direct_url", self.direct_url()),
        ];
        if let Some(port) = self.replica_port {
            let replicas = Credentials {
                port,
                replica_port: None,
                ..self.clone()
            };
            files.push(("replica_url", replicas.database_url()));
        }
        if let Some(redis) = &self.redis {
            files.push(("redis_url", redis.url()));
            files.push(("redis_password", redis.password.clone()));
        }
        files
    }
}

/// Files written beside their final names, not yet in place. Nothing is visible until
/// `commit`; staging is where a full disk fails, before any password changes.
#[must_use = "commit or discard the staged secrets"]
pub struct Staged {
    renames: Vec<(PathBuf, PathBuf)>,
    /// Files of a Redis the credentials no longer have, removed at `commit`.
    removals: Vec<PathBuf>,
}

/// The files only a tenant with a Redis has.
const REDIS_FILES: &[&str] = &["redis_url", "redis_password"];

/// Stages the credential files in `dir` (created 0700 if missing).
pub fn stage(dir: &Path, credentials: &Credentials) -> anyhow::Result<Staged> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("create {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("set permissions of {}", dir.display()))?;
    let mut staged = Staged {
        renames: Vec::new(),
        removals: Vec::new(),
    };
    if credentials.redis.is_none() {
        staged.removals = REDIS_FILES.iter().map(|name| dir.join(name)).collect();
    }
    for (name, content) in credentials.files() {
        let final_path = dir.join(name);
        let temp = dir.join(format!(".{name}.new"));
        if let Err(e) = safe_file::replace(&temp, content.as_bytes(), 0o600, None) {
            staged.discard();
            return Err(e);
        }
        staged.renames.push((temp, final_path));
    }
    Ok(staged)
}

impl Staged {
    /// Moves every staged file into place (a rename needs no space, so it does not fail
    /// for a full disk).
    pub fn commit(self) -> anyhow::Result<()> {
        for (temp, final_path) in &self.renames {
            std::fs::rename(temp, final_path)
                .with_context(|| format!("put {} in place", final_path.display()))?;
        }
        for stale in &self.removals {
            match std::fs::remove_file(stale) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(e).with_context(|| format!("remove {}", stale.display()));
                }
            }
        }
        if let Some(dir) = self.renames.first().and_then(|(_, f)| f.parent()) {
            if let Ok(d) = std::fs::File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    }

    pub fn discard(self) {
        for (temp, _) in &self.renames {
            let _ = std::fs::remove_file(temp);
        }
    }
}

/// Reads the Redis password a tenant's files hold.
pub fn read_redis_password(dir: &Path) -> anyhow::Result<String> {
    let path = dir.join("redis_password");
    std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))
}

/// Reads the password a role's files hold.
pub fn read_password(dir: &Path) -> anyhow::Result<String> {
    let path = dir.join("password");
    std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn creds() -> Credentials {
        Credentials {
            host: "127.0.0.1".into(),
            port: 5432,
            database: "shop".into(),
            user: "shop".into(),
            password: "p@ss:w/rd".into(),
            sslmode: None,
            replica_port: None,
            direct_port: 5432,
            direct_sslmode: None,
            redis: None,
        }
    }

    #[test]
    fn urls_percent_encode_and_redact() {
        let c = creds();
        assert_eq!(
            c.database_url(),
            "postgresql://shop:p%40ss%3Aw%2Frd@127.0.0.1:5432/shop"
        );
        assert_eq!(
            c.database_url_redacted(),
            "postgresql://shop@127.0.0.1:5432/shop"
        );
        assert_eq!(
            c.jdbc_url(),
            "jdbc:postgresql://127.0.0.1:5432/shop?user=shop&password=p%40ss%3Aw%2Frd"
        );
        let v6 = Credentials {
            host: "::1".into(),
            ..creds()
        };
        assert!(v6.database_url().contains("@[::1]:5432/"));
        let tls = Credentials {
            sslmode: Some("require"),
            ..creds()
        };
        assert!(tls.database_url().ends_with("/shop?sslmode=require"));
        assert!(tls.jdbc_url().ends_with("&sslmode=require"));
        assert!(tls.env().contains("PGSSLMODE=require\n"));
    }

    #[test]
    fn urls_require_tls_whenever_the_network_can_reach_them() {
        let config = |toml: &str| {
            let file: crate::config::ConfigFile = toml::from_str(toml).unwrap();
            crate::config::Config::from_file(file, Path::new("/etc/pgp"), None).unwrap()
        };
        let sslmode = |toml: &str| url_sslmode(&config(toml));
        assert_eq!(sslmode(""), Some("prefer"));
        assert_eq!(
            sslmode("[pooler]\nlisten_addr = \"0.0.0.0\""),
            Some("require")
        );
        assert_eq!(
            sslmode("[pooler]\nlisten_addr = \"10.1.2.3\""),
            Some("require")
        );
        assert_eq!(sslmode("[pooler]\nlisten_addr = \"::\""), Some("require"));
        assert_eq!(sslmode("[pooler]\nlisten_addr = \"::1\""), Some("prefer"));
        assert_eq!(
            sslmode("[pooler]\nclient_tls = \"require\""),
            Some("require")
        );
        assert_eq!(
            sslmode("[pooler]\nclient_tls = \"disable\""),
            Some("disable")
        );
        // Straight to PostgreSQL when the pooler is off.
        assert_eq!(sslmode("[pooler]\nenabled = false"), None);
        assert_eq!(
            sslmode("[pooler]\nenabled = false\n[postgres]\nlisten_addresses = \"*\""),
            Some("require")
        );
        let direct = |toml: &str| direct_sslmode(&config(toml));
        assert_eq!(direct(""), None);
        assert_eq!(
            direct("[postgres]\nlisten_addresses = \"0.0.0.0\""),
            Some("require")
        );
        let creds = Credentials {
            sslmode: sslmode("[pooler]\nlisten_addr = \"0.0.0.0\""),
            direct_port: 5433,
            direct_sslmode: Some("require"),
            port: 6432,
            ..creds()
        };
        assert_eq!(
            creds.direct_url(),
            "postgresql://shop:p%40ss%3Aw%2Frd@127.0.0.1:5433/shop?sslmode=require"
        );
        assert_eq!(
            creds.direct_url_redacted(),
            "postgresql://shop@127.0.0.1:5433/shop?sslmode=require"
        );
        assert!(creds.database_url().ends_with("?sslmode=require"));
        assert!(creds.env().contains("PGSSLMODE=require\n"));
        assert!(creds.jdbc_url().ends_with("&sslmode=require"));
    }

    #[test]
    fn env_and_pgpass_formats() {
        let c = creds();
        assert!(c.env().contains("PGPASSWORD=p@ss:w/rd\n"));
        assert!(c.env().starts_with("PGHOST=127.0.0.1\nPGPORT=5432\n"));
        assert_eq!(c.pgpass(), "127.0.0.1:5432:shop:shop:p@ss\\:w/rd\n");
    }

    #[test]
    fn staged_files_appear_only_on_commit_with_private_modes() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("shop");
        let staged = stage(&dir, &creds()).unwrap();
        assert!(!dir.join("password").exists());
        staged.commit().unwrap();
        assert_eq!(read_password(&dir).unwrap(), "p@ss:w/rd");
        assert_eq!(std::fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
        for name in [
            "password",
            "database_url",
            "env",
            "pgpass",
            "jdbc_url",
            "direct_url",
        ] {
            let mode = std::fs::metadata(dir.join(name)).unwrap().mode() & 0o777;
            assert_eq!(mode, 0o600, "{name}");
        }
        let discarded = stage(
            &dir,
            &Credentials {
                password: "new".into(),
                ..creds()
            },
        )
        .unwrap();
        discarded.discard();
        assert_eq!(read_password(&dir).unwrap(), "p@ss:w/rd");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 6);
        let ha = Credentials {
            replica_port: Some(6433),
            ..creds()
        };
        stage(&dir, &ha).unwrap().commit().unwrap();
        let replica_url = std::fs::read_to_string(dir.join("replica_url")).unwrap();
        assert_eq!(
            replica_url,
            "postgresql://shop:p%40ss%3Aw%2Frd@127.0.0.1:6433/shop"
        );
    }
    #[test]
    fn redis_files_come_and_go_with_the_redis() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("shop");
        let with_redis = Credentials {
            redis: Some(crate::redis::RedisAccess {
                host: "127.0.0.1".into(),
                port: 6380,
                user: "shop".into(),
                password: "r3d1s".into(),
                tls: false,
            }),
            ..creds()
        };
        stage(&dir, &with_redis).unwrap().commit().unwrap();
        assert_eq!(read_redis_password(&dir).unwrap(), "r3d1s");
        let env = std::fs::read_to_string(dir.join("env")).unwrap();
        assert!(
            env.contains("DATABASE_URL=")
                && env.contains("REDIS_URL=redis://shop:r3d1s@127.0.0.1:6380/0\n")
        );
        stage(&dir, &creds()).unwrap().commit().unwrap();
        assert!(!dir.join("redis_url").exists() && !dir.join("redis_password").exists());
        assert!(!std::fs::read_to_string(dir.join("env"))
            .unwrap()
            .contains("REDIS"));
    }
}
