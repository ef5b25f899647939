//! PostgreSQL found or installed: what to install on this OS when no server binaries are
//! found, and `up --install-postgres` (`[postgres] install = true`), which installs the
//! distribution's server package and its pgvector package with apt on Debian and Ubuntu.
//!
//! `PGPLATFORM_TEST_ROOT` (tests only) prefixes the system paths read and written here
//! and where Debian's binaries are searched, so a test can stand in for a fresh host.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use super::bin::{Binaries, SUPPORTED_MAJORS};

const TEST_ROOT_VAR: &str = "PGPLATFORM_TEST_ROOT";

/// `path` (absolute) under the test root when one is set.
pub fn host_path(path: &str) -> PathBuf {
    match std::env::var_os(TEST_ROOT_VAR) {
        Some(root) => Path::new(&root).join(path.trim_start_matches('/')),
        None => PathBuf::from(path),
    }
}

/// The OS family, from /etc/os-release's ID and ID_LIKE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Os {
    Debian,
    Fedora,
    Alpine,
    Other,
}

pub fn os() -> Os {
    let text = std::fs::read_to_string(host_path("/etc/os-release")).unwrap_or_default();
    os_of(&text)
}

fn os_of(os_release: &str) -> Os {
    let mut ids = Vec::new();
    for line in os_release.lines() {
        if let Some(value) = line
            .strip_prefix("ID=")
            .or_else(|| line.strip_prefix("ID_LIKE="))
        {
            ids.extend(
                value
                    .trim_matches('"')
                    .split_whitespace()
                    .map(str::to_owned),
            );
        }
    }
    let has = |names: &[&str]| ids.iter().any(|id| names.contains(&id.as_str()));
    if has(&["debian", "ubuntu"]) {
        Os::Debian
    } else if has(&["fedora", "rhel", "centos"]) {
        Os::Fedora
    } else if has(&["alpine"]) {
        Os::Alpine
    } else {
        Os::Other
    }
}

/// What to install on this OS, for the "no PostgreSQL found" error.
pub fn what_to_install() -> String {
    match os() {
        Os::Debian => "install the server package, e.g. `apt-get install postgresql-15` \
                       (and `postgresql-15-pgvector` for vector search), or run \
                       `pgplatform up --install-postgres` as root to install the newest one"
            .to_owned(),
        Os::Fedora => "install the server package, e.g. `dnf install postgresql-server \
                       postgresql-contrib pgvector`"
            .to_owned(),
        Os::Alpine => {
            "install the server package, e.g. `apk add postgresql postgresql-contrib`".to_owned()
        }
        Os::Other => "install PostgreSQL 13 to 18 (server binaries: postgres, initdb)".to_owned(),
    }
}

/// The package that provides extension `name` on this OS, if it is not in PostgreSQL's
/// contrib.
pub fn extension_package(name: &str, major: u32) -> Option<String> {
    let debian = match name {
        "vector" => "pgvector",
        "postgis" => "postgis-3",
        "timescaledb" => "timescaledb",
        "pg_partman" => "partman",
        "pg_cron" => "cron",
        "hypopg" => "hypopg",
        "pgaudit" => "pgaudit",
        "pg_repack" => "repack",
        _ => return None,
    };
    Some(match os() {
        Os::Fedora => name.replace('_', "").replace("vector", "pgvector"),
        _ => format!("postgresql-{major}-{debian}"),
    })
}

/// `up --install-postgres`: nothing when server binaries are found; else installs them
/// (Debian/Ubuntu, as root), printing each step, and returns what was found after.
pub async fn ensure(configured: Option<&Path>, version: Option<u32>) -> anyhow::Result<()> {
    if let Ok(found) = Binaries::discover(configured).await {
        tracing::info!(
            "PostgreSQL {} found in {}; nothing to install",
            found.version.text,
            found.dir.display()
        );
        return Ok(());
    }
    if os() != Os::Debian {
        bail!(
            "--install-postgres installs with apt on Debian and Ubuntu only; on this OS, {}",
            what_to_install()
        );
    }
    if !nix::unistd::Uid::effective().is_root() {
        bail!(
            "installing PostgreSQL needs root: run `pgplatform up --install-postgres` once as \
             root (e.g. with sudo), or {}",
            what_to_install()
        );
    }
    let apt_get = on_path("apt-get")?;
    let apt_cache = on_path("apt-cache")?;
    keep_packages_from_starting_a_cluster()?;
    step(&apt_get, &["update"]).await?;
    let major = match version {
        Some(major) => major,
        None => newest_offered(&apt_cache).await?,
    };
    let server = format!("postgresql-{major}");
    step(
        &apt_get,
        &["install", "-y", "--no-install-recommends", &server],
    )
    .await?;
    let pgvector = format!("postgresql-{major}-pgvector");
    if offered(&apt_cache, &pgvector).await {
        step(
            &apt_get,
            &["install", "-y", "--no-install-recommends", &pgvector],
        )
        .await?;
    } else {
        tracing::warn!(
            "{pgvector} is not in the configured apt sources: `tenant create --extension \
             vector` needs it (the PostgreSQL Global Development Group's apt repository has it)"
        );
    }
    let found = Binaries::discover(configured).await.with_context(|| {
        format!("apt-get installed {server}, but its server binaries are still not found")
    })?;
    tracing::info!(
        "installed PostgreSQL {} in {}",
        found.version.text,
        found.dir.display()
    );
    Ok(())
}

/// Debian's postgresql-common creates and starts a `main` cluster on port 5432 when the
/// server package is installed; the agent runs its own, so turn that off first.
fn keep_packages_from_starting_a_cluster() -> anyhow::Result<()> {
    let file = host_path("/etc/postgresql-common/createcluster.conf");
    let text = std::fs::read_to_string(&file).unwrap_or_default();
    let off = text.lines().rev().find_map(|line| {
        let (key, value) = line.split_once('=')?;
        (key.trim() == "create_main_cluster").then(|| value.trim() == "false")
    });
    if off == Some(true) {
        return Ok(());
    }
    tracing::info!(
        "==> setting create_main_cluster = false in {} (the agent runs its own cluster)",
        file.display()
    );
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    let mut text = text;
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str("create_main_cluster = false\n");
    std::fs::write(&file, text).with_context(|| format!("write {}", file.display()))
}

/// The newest supported `postgresql-<major>` package apt offers.
async fn newest_offered(apt_cache: &Path) -> anyhow::Result<u32> {
    let out = output(
        apt_cache,
        &["search", "--names-only", "^postgresql-[0-9]+$"],
    )
    .await?;
    let majors = offered_majors(&out);
    majors.into_iter().max().with_context(|| {
        format!(
            "apt offers no PostgreSQL server package from {} to {} (`apt-cache search \
             --names-only '^postgresql-[0-9]+$'` found none); add the PostgreSQL Global \
             Development Group's apt repository, or set [postgres] version",
            SUPPORTED_MAJORS.start(),
            SUPPORTED_MAJORS.end()
        )
    })
}

fn offered_majors(search_output: &str) -> Vec<u32> {
    search_output
        .lines()
        .filter_map(|line| line.split_whitespace().next()?.strip_prefix("postgresql-"))
        .filter_map(|major| major.parse().ok())
        .filter(|major| SUPPORTED_MAJORS.contains(major))
        .collect()
}

async fn offered(apt_cache: &Path, package: &str) -> bool {
    tracing::info!("==> {} show {package}", apt_cache.display());
    spawn(apt_cache, &["show", package])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .await
        .is_ok_and(|s| s.success())
}

/// Runs a package-manager command with its output on the terminal; fails naming it.
async fn step(program: &Path, args: &[&str]) -> anyhow::Result<()> {
    let shown = format!("{} {}", program.display(), args.join(" "));
    tracing::info!("==> {shown}");
    let status = spawn(program, args)
        .status()
        .await
        .with_context(|| format!("run {shown}"))?;
    if !status.success() {
        bail!("`{shown}` failed ({status})");
    }
    Ok(())
}

async fn output(program: &Path, args: &[&str]) -> anyhow::Result<String> {
    let shown = format!("{} {}", program.display(), args.join(" "));
    tracing::info!("==> {shown}");
    let out = spawn(program, args)
        .stderr(std::process::Stdio::inherit())
        .output()
        .await
        .with_context(|| format!("run {shown}"))?;
    if !out.status.success() {
        bail!("`{shown}` failed ({})", out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The package manager runs with the admin's environment (proxy settings, PATH), never
/// prompting.
#[allow(
    clippy::disallowed_methods,
    reason = "the package manager, not PostgreSQL: it needs the admin's environment"
)]
fn spawn(program: &Path, args: &[&str]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(std::process::Stdio::null());
    cmd
}

fn on_path(name: &str) -> anyhow::Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .with_context(|| format!("`{name}` is not on PATH; {}", what_to_install()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_release_ids_pick_the_family() {
        assert_eq!(os_of("ID=debian\nVERSION_ID=\"12\"\n"), Os::Debian);
        assert_eq!(os_of("ID=ubuntu\nID_LIKE=debian\n"), Os::Debian);
        assert_eq!(
            os_of("ID=linuxmint\nID_LIKE=\"ubuntu debian\"\n"),
            Os::Debian
        );
        assert_eq!(
            os_of("ID=\"rocky\"\nID_LIKE=\"rhel centos fedora\"\n"),
            Os::Fedora
        );
        assert_eq!(os_of("ID=alpine\n"), Os::Alpine);
        assert_eq!(os_of(""), Os::Other);
    }

    #[test]
    fn the_newest_supported_major_is_read_from_apt_cache_search() {
        let out = "postgresql-15 - The World's Most Advanced Open Source Relational Database\n\
                   postgresql-17 - object-relational SQL database, version 17 server\n\
                   postgresql-9 - too old\npostgresql-99 - too new\n";
        assert_eq!(offered_majors(out), vec![15, 17]);
        assert!(offered_majors("").is_empty());
    }
}
