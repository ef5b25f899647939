//! Finding the PostgreSQL server binaries and reading their version.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

/// Oldest and newest PostgreSQL major versions the agent supports.
pub use crate::config::SUPPORTED_MAJORS;

/// A directory of PostgreSQL server binaries of a known version.
#[derive(Debug, Clone)]
pub struct Binaries {
    pub dir: PathBuf,
    pub version: Version,
    /// Whether this build serves TLS (`pg_config --configure` names OpenSSL); the
    /// `pgserver` wheel's build does not.
    pub ssl: bool,
}

/// A PostgreSQL version as printed by `postgres --version`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Version {
    pub major: u32,
    /// The full text, e.g. "15.18".
    pub text: String,
}

impl Binaries {
    /// Uses `configured`, else the first PATH entry with `postgres` and `initdb`, else the
    /// newest `/usr/lib/postgresql/<major>/bin` (where Debian puts them, off PATH).
    pub async fn discover(configured: Option<&Path>) -> anyhow::Result<Binaries> {
        let dir = match configured {
            Some(dir) => {
                if !has_server_binaries(dir) {
                    bail!(
                        "postgres.bin_dir {} does not contain the postgres and initdb binaries",
                        dir.display()
                    );
                }
                dir.to_owned()
            }
            None => search_path()
                .or_else(newest_debian_dir)
                .with_context(|| format!("find PostgreSQL server binaries (no `postgres` and `initdb` on PATH or under /usr/lib/postgresql/*/bin): {}, or set postgres.bin_dir", super::install::what_to_install()))?,
        };
        // Follow symlinks (e.g. /usr/local/bin/postgres) to the real installation, whose
        // sibling binaries and share directory belong to the same version.
        let dir = dir
            .join("postgres")
            .canonicalize()
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf))
            .unwrap_or(dir);
        let output = super::process::command(&dir.join("postgres"), None)
            .arg("--version")
            .output()
            .await
            .with_context(|| format!("run {}/postgres --version", dir.display()))?;
        let text = String::from_utf8_lossy(&output.stdout);
        let version = parse_version(&text)
            .with_context(|| format!("read the version from `{}`", text.trim()))?;
        if !SUPPORTED_MAJORS.contains(&version.major) {
            bail!(
                "PostgreSQL {} in {} is not supported (supported: {} to {})",
                version.text,
                dir.display(),
                SUPPORTED_MAJORS.start(),
                SUPPORTED_MAJORS.end()
            );
        }
        let ssl = built_with_openssl(&dir).await;
        Ok(Binaries { dir, version, ssl })
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Whether a server module (e.g. `pg_stat_statements`) ships with these binaries: some
    /// builds (the `pgserver` wheel, minimal packages) leave contrib out.
    pub fn has_module(&self, name: &str) -> bool {
        let file = format!("{name}.so");
        ["../lib/postgresql", "../lib"]
            .iter()
            .any(|lib| self.dir.join(lib).join(&file).is_file())
    }
}

/// What `pg_config --configure` says of OpenSSL; without pg_config, assume the common
/// build (PostgreSQL's own refusal then names the problem).
async fn built_with_openssl(dir: &Path) -> bool {
    let output = super::process::command(&dir.join("pg_config"), None)
        .arg("--configure")
        .output()
        .await;
    match output {
        Ok(out) if out.status.success() => {
            let text = String::from_utf8_lossy(&out.stdout);
            text.contains("--with-openssl") || text.contains("--with-ssl=openssl")
        }
        _ => true,
    }
}

fn has_server_binaries(dir: &Path) -> bool {
    dir.join("postgres").is_file() && dir.join("initdb").is_file()
}

fn search_path() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).find(|dir| has_server_binaries(dir))
}

fn newest_debian_dir() -> Option<PathBuf> {
    let entries = std::fs::read_dir(super::install::host_path("/usr/lib/postgresql")).ok()?;
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let major: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            has_server_binaries(&bin).then_some((major, bin))
        })
        .max_by_key(|(major, _)| *major)
        .map(|(_, bin)| bin)
}

/// Parses "postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)" or "… 16.2".
pub fn parse_version(text: &str) -> Option<Version> {
    let number = text
        .split_whitespace()
        .find(|w| w.chars().next().is_some_and(|c| c.is_ascii_digit()))?;
    let number: String = number
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    let number = number.trim_end_matches('.');
    let major = number.split('.').next()?.parse().ok()?;
    Some(Version {
        major,
        text: number.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_read_from_postgres_output() {
        let v = parse_version("postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)\n").unwrap();
        assert_eq!((v.major, v.text.as_str()), (15, "15.18"));
        let v = parse_version("postgres (PostgreSQL) 16.2\n").unwrap();
        assert_eq!((v.major, v.text.as_str()), (16, "16.2"));
        let v = parse_version("postgres (PostgreSQL) 18beta1").unwrap();
        assert_eq!(v.major, 18);
        assert!(parse_version("command not found").is_none());
    }
}
