//! `[backup]`: where backups go (a local directory or S3-compatible storage), WAL
//! archiving, compression, schedules and retention, validated.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{invalid, ConfigError};

/// `[backup]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackupSection {
    /// local | s3
    pub repository: Option<String>,
    /// The local repository's directory (default `<data_dir>/backups`).
    pub path: Option<String>,
    /// Archive WAL continuously (archive_mode, archive_command, restore_command).
    pub archive: Option<bool>,
    /// Compression and copy workers.
    pub parallel: Option<u32>,
    /// zstd level, 1–19.
    pub compress_level: Option<i32>,
    /// Cron schedule of base backups; "" = none.
    pub schedule: Option<String>,
    /// Cron schedule of restore drills; "" = none.
    pub drill_schedule: Option<String>,
    /// Base backups kept (with the WAL they need).
    pub retention_full: Option<u32>,
    /// Also keep every base backup younger than this many days; 0 = off.
    pub retention_days: Option<u32>,
    /// Logical dumps kept per tenant.
    pub dump_retention: Option<u32>,
    /// Per tenant: cron schedule of its logical dump.
    pub dumps: BTreeMap<String, String>,
    /// The key that authenticates manifests and WAL objects (default
    /// `<data_dir>/repository.key`); never inside the repository.
    pub repository_key_file: Option<String>,
    pub s3: S3Section,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct S3Section {
    /// e.g. https://s3.eu-west-1.amazonaws.com, http://127.0.0.1:9000 (MinIO).
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub bucket: Option<String>,
    /// Key prefix inside the bucket, e.g. this node's name.
    pub prefix: Option<String>,
    /// Path-style addressing (endpoint/bucket/key), which MinIO and OCI need.
    pub path_style: Option<bool>,
    /// A 0600 file with aws_access_key_id / aws_secret_access_key; else the AWS_*
    /// environment variables.
    pub credentials_file: Option<String>,
    /// Seconds one request may take before it fails (and is retried, twice).
    pub timeout_seconds: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RepositoryConfig {
    Local { path: PathBuf },
    S3(S3Config),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Config {
    pub endpoint: Option<String>,
    pub region: String,
    pub bucket: String,
    pub prefix: String,
    pub path_style: bool,
    pub credentials_file: Option<PathBuf>,
    pub timeout: std::time::Duration,
}

/// A validated cron expression (5 fields, or 6 with seconds) and its text.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub text: String,
    pub cron: croner::Cron,
}

impl PartialEq for Schedule {
    fn eq(&self, other: &Schedule) -> bool {
        self.text == other.text
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct BackupConfig {
    pub repository: RepositoryConfig,
    pub archive: bool,
    pub parallel: u32,
    pub compress_level: i32,
    pub schedule: Option<Schedule>,
    pub drill_schedule: Option<Schedule>,
    pub retention_full: u32,
    pub retention_days: u32,
    pub dump_retention: u32,
    pub dumps: BTreeMap<String, Schedule>,
    /// 0600 file with the repository key (HMAC of manifests and WAL objects).
    pub repository_key_file: PathBuf,
}

fn schedule(
    key: &str,
    text: Option<String>,
    default: &str,
) -> Result<Option<Schedule>, ConfigError> {
    let text = text.unwrap_or_else(|| default.to_owned());
    if text.trim().is_empty() {
        return Ok(None);
    }
    let cron = croner::Cron::new(&text)
        .with_seconds_optional()
        .parse()
        .map_err(|e| invalid(key, format!("`{text}` is not a cron schedule: {e}")))?;
    // A valid expression may still name no real date (`0 0 30 2 *`): refuse it here
    // rather than keep a job that silently never runs.
    if cron
        .find_next_occurrence(&chrono::Utc::now(), false)
        .is_err()
    {
        return Err(invalid(
            key,
            format!("`{text}` never fires: no date matches it"),
        ));
    }
    Ok(Some(Schedule { text, cron }))
}

impl BackupConfig {
    pub fn from_section(
        s: BackupSection,
        base: &Path,
        data_dir: &Path,
    ) -> Result<BackupConfig, ConfigError> {
        let BackupSection {
            repository,
            path,
            archive,
            parallel,
            compress_level,
            schedule: base_schedule,
            drill_schedule,
            retention_full,
            retention_days,
            dump_retention,
            dumps,
            repository_key_file,
            s3,
        } = s;
        let repository = match repository.as_deref().unwrap_or("local") {
            "local" => RepositoryConfig::Local {
                path: match path {
                    Some(p) if p.trim().is_empty() => {
                        return Err(invalid("backup.path", "must not be empty"))
                    }
                    Some(p) => super::normalize(&base.join(p)),
                    None => data_dir.join("backups"),
                },
            },
            "s3" => RepositoryConfig::S3(s3_config(s3, base)?),
            other => {
                return Err(invalid(
                    "backup.repository",
                    format!("`{other}` is not a repository kind; use \"local\" or \"s3\""),
                ))
            }
        };
        let repository_key_file = match repository_key_file {
            Some(p) if p.trim().is_empty() => {
                return Err(invalid("backup.repository_key_file", "must not be empty"))
            }
            Some(p) => super::normalize(&base.join(p)),
            None => data_dir.join("repository.key"),
        };
        if let RepositoryConfig::Local { path } = &repository {
            // Whoever writes the repository must not be able to read or plant its key.
            if repository_key_file.starts_with(path) {
                return Err(invalid(
                    "backup.repository_key_file",
                    format!(
                        "`{}` is inside the repository {}; keep the key outside it",
                        repository_key_file.display(),
                        path.display()
                    ),
                ));
            }
        }
        let parallel = parallel.unwrap_or(2);
        if !(1..=64).contains(&parallel) {
            return Err(invalid("backup.parallel", "must be between 1 and 64"));
        }
        let compress_level = compress_level.unwrap_or(3);
        if !(1..=19).contains(&compress_level) {
            return Err(invalid("backup.compress_level", "must be between 1 and 19"));
        }
        let retention_full = retention_full.unwrap_or(7);
        if retention_full == 0 {
            return Err(invalid(
                "backup.retention_full",
                "must keep at least 1 backup",
            ));
        }
        let dump_retention = dump_retention.unwrap_or(7);
        if dump_retention == 0 {
            return Err(invalid(
                "backup.dump_retention",
                "must keep at least 1 dump",
            ));
        }
        let mut dump_schedules = BTreeMap::new();
        for (tenant, text) in dumps {
            let key = format!("backup.dumps.{tenant}");
            if let Some(s) = schedule(&key, Some(text), "")? {
                dump_schedules.insert(tenant, s);
            }
        }
        Ok(BackupConfig {
            repository,
            archive: archive.unwrap_or(true),
            parallel,
            compress_level,
            schedule: schedule("backup.schedule", base_schedule, "5 3 * * *")?,
            drill_schedule: schedule("backup.drill_schedule", drill_schedule, "0 4 * * 0")?,
            retention_full,
            retention_days: retention_days.unwrap_or(0),
            dump_retention,
            dumps: dump_schedules,
            repository_key_file,
        })
    }
}

fn s3_config(s: S3Section, base: &Path) -> Result<S3Config, ConfigError> {
    let S3Section {
        endpoint,
        region,
        bucket,
        prefix,
        path_style,
        credentials_file,
        timeout_seconds,
    } = s;
    let timeout = timeout_seconds.unwrap_or(60);
    if timeout == 0 {
        return Err(invalid("backup.s3.timeout_seconds", "must be at least 1"));
    }
    let bucket = bucket.filter(|b| !b.trim().is_empty()).ok_or_else(|| {
        invalid(
            "backup.s3.bucket",
            "is required when backup.repository = \"s3\"",
        )
    })?;
    if let Some(e) = &endpoint {
        if !(e.starts_with("http://") || e.starts_with("https://")) {
            return Err(invalid(
                "backup.s3.endpoint",
                format!("`{e}` must start with http:// or https://"),
            ));
        }
    }
    Ok(S3Config {
        endpoint,
        region: region.unwrap_or_else(|| "us-east-1".to_owned()),
        bucket,
        prefix: prefix.unwrap_or_default().trim_matches('/').to_owned(),
        path_style: path_style.unwrap_or(false),
        credentials_file: credentials_file.map(|f| super::normalize(&base.join(f))),
        timeout: std::time::Duration::from_secs(timeout),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(toml_text: &str) -> BackupSection {
        toml::from_str(toml_text).unwrap()
    }

    #[test]
    fn the_repository_key_lives_outside_the_repository() {
        let (base, data) = (Path::new("/etc/pgplatform"), Path::new("/var/lib/pgp"));
        let config = BackupConfig::from_section(section(""), base, data).unwrap();
        assert_eq!(
            config.repository_key_file,
            PathBuf::from("/var/lib/pgp/repository.key")
        );
        let config =
            BackupConfig::from_section(section("repository_key_file = \"repo.key\""), base, data)
                .unwrap();
        assert_eq!(
            config.repository_key_file,
            PathBuf::from("/etc/pgplatform/repo.key")
        );
        let inside = section("path = \"/srv/backups\"\nrepository_key_file = \"/srv/backups/k\"");
        let err = BackupConfig::from_section(inside, base, data).unwrap_err();
        assert!(
            err.to_string().contains("backup.repository_key_file"),
            "{err}"
        );
    }

    #[test]
    fn a_cron_that_never_fires_is_refused_naming_the_key() {
        let (base, data) = (Path::new("/etc/pgplatform"), Path::new("/var/lib/pgp"));
        let never = section("drill_schedule = \"0 4 30 2 *\"");
        let err = BackupConfig::from_section(never, base, data).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("backup.drill_schedule") && text.contains("never fires"),
            "{text}"
        );
        let leap_day = section("drill_schedule = \"0 4 29 2 *\"");
        assert!(BackupConfig::from_section(leap_day, base, data).is_ok());
    }
}
