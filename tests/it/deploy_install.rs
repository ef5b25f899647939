//! PostgreSQL found or installed: with no server binaries, `up` says what to install for
//! this OS; `up --install-postgres` (or `[postgres] install = true`) runs exactly the
//! package-manager commands below — checked with stub `apt-get` and `apt-cache` first on
//! PATH, which record their arguments. The stub's `install postgresql-16` "installs" by
//! linking the machine's real PostgreSQL into the test root, so the same run then brings
//! up a healthy platform. `PGPLATFORM_TEST_ROOT` stands the test root in for `/` where
//! the agent reads /etc/os-release, writes /etc/postgresql-common/createcluster.conf and
//! looks for /usr/lib/postgresql/*/bin.
//!
//! Not done here for real: Debian 12's apt offers only PostgreSQL 15, which the test
//! machine already has, so there is no missing major to install from the real archive.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::deploy_systemd::{http_status, UnitProcess};
use crate::support::ports::Ports;
use crate::support::{pgplatform, run, stderr_of, stdout_of, try_wait_for, BIN};

/// A fake host: root/, stub package managers in bin/, and a config on free ports.
struct Host {
    dir: tempfile::TempDir,
    ports: Ports,
}

const APT_GET: &str = r#"#!/bin/sh
echo "apt-get $*" >> "$STUB_LOG"
if [ "$1" = install ]; then
  for pkg; do
    case "$pkg" in
      postgresql-16)
        mkdir -p "$PGPLATFORM_TEST_ROOT/usr/lib/postgresql/16/bin"
        for b in postgres initdb pg_ctl pg_config; do
          ln -sf "$REAL_PG_BIN/$b" "$PGPLATFORM_TEST_ROOT/usr/lib/postgresql/16/bin/$b"
        done ;;
    esac
  done
fi
exit 0
"#;

const APT_CACHE: &str = r#"#!/bin/sh
echo "apt-cache $*" >> "$STUB_LOG"
case "$1" in
  search) printf 'postgresql-15 - object-relational SQL database, version 15 server\npostgresql-16 - object-relational SQL database, version 16 server\n' ;;
  show) [ "$2" = postgresql-16-pgvector ] || exit 100 ;;
esac
"#;

impl Host {
    fn new(os_release: &str, extra_toml: &str) -> Host {
        let dir = tempfile::tempdir().unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let host = Host {
            dir,
            ports: Ports::pick(),
        };
        fs::create_dir_all(host.root().join("etc")).unwrap();
        fs::create_dir_all(host.root().join("usr/lib/postgresql")).unwrap();
        fs::write(host.root().join("etc/os-release"), os_release).unwrap();
        fs::create_dir_all(host.bin()).unwrap();
        for (name, script) in [("apt-get", APT_GET), ("apt-cache", APT_CACHE)] {
            let path = host.bin().join(name);
            fs::write(&path, script).unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        }
        let Ports {
            postgres,
            api,
            pooler,
        } = host.ports;
        fs::write(
            host.config(),
            format!(
                "data_dir = \"data\"\n[postgres]\nport = {postgres}\n{extra_toml}\n\
                 [postgres.parameters]\nshared_buffers = \"32MB\"\nfsync = \"off\"\n\
                 [api]\nlisten = \"127.0.0.1:{api}\"\n[pooler]\nlisten_port = {pooler}\n"
            ),
        )
        .unwrap();
        host
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }
    fn bin(&self) -> PathBuf {
        self.dir.path().join("bin")
    }
    fn config(&self) -> PathBuf {
        self.dir.path().join("pgplatform.toml")
    }
    fn stub_log(&self) -> PathBuf {
        self.dir.path().join("stub.log")
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("PATH", format!("{}:/usr/bin:/bin", self.bin().display())),
            ("PGPLATFORM_TEST_ROOT", self.root().display().to_string()),
            ("STUB_LOG", self.stub_log().display().to_string()),
            ("REAL_PG_BIN", real_pg_bin().display().to_string()),
        ]
    }

    /// `up ARGS` that must fail; its stderr and stdout.
    fn up_fails(&self, args: &[&str]) -> String {
        let out = run(
            pgplatform()
                .arg("--config")
                .arg(self.config())
                .arg("up")
                .args(args)
                .args(["--log-format", "text"])
                .envs(self.env()),
            Duration::from_secs(60),
        );
        let text = format!("{}{}", stdout_of(&out), stderr_of(&out));
        assert!(!out.status.success(), "up {args:?} succeeded: {text}");
        text
    }

    fn commands(&self) -> Vec<String> {
        fs::read_to_string(self.stub_log())
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

fn real_pg_bin() -> PathBuf {
    PathBuf::from("/usr/lib/postgresql/15/bin")
}

const DEBIAN: &str = "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\n";

#[test]
fn without_postgres_up_says_what_to_install_for_this_os() {
    let debian = Host::new(DEBIAN, "");
    let text = debian.up_fails(&[]);
    assert!(
        text.contains("apt-get install postgresql-15") && text.contains("--install-postgres"),
        "{text}"
    );
    assert!(debian.commands().is_empty(), "ran {:?}", debian.commands());

    let fedora = Host::new("ID=\"rocky\"\nID_LIKE=\"rhel centos fedora\"\n", "");
    let text = fedora.up_fails(&["--install-postgres"]);
    assert!(
        text.contains("apt on Debian and Ubuntu only") && text.contains("dnf install"),
        "{text}"
    );
    assert!(fedora.commands().is_empty(), "ran {:?}", fedora.commands());
}

#[test]
fn install_postgres_runs_the_package_manager_then_brings_the_platform_up() {
    if !real_pg_bin().join("postgres").exists() {
        crate::support::skip("Debian's postgresql-15 is not installed");
        return;
    }
    let host = Host::new(DEBIAN, "");
    let env = host.env();
    let mut agent = UnitProcess::start_with_env(
        Path::new(BIN),
        &[
            "--config".into(),
            host.config().display().to_string(),
            "up".into(),
            "--install-postgres".into(),
            "--log-format".into(),
            "text".into(),
        ],
        &env,
        host.dir.path().join("agent.log"),
    );
    let api = format!("127.0.0.1:{}", host.ports.api);
    let healthy = try_wait_for(Duration::from_secs(90), || {
        (http_status(&api, "/health") == Some(200)).then_some(())
    });
    assert!(healthy.is_some(), "not healthy: {}", agent.log_text());
    assert_eq!(
        host.commands(),
        [
            "apt-get update",
            "apt-cache search --names-only ^postgresql-[0-9]+$",
            "apt-get install -y --no-install-recommends postgresql-16",
            "apt-cache show postgresql-16-pgvector",
            "apt-get install -y --no-install-recommends postgresql-16-pgvector",
        ]
    );
    let createcluster =
        fs::read_to_string(host.root().join("etc/postgresql-common/createcluster.conf")).unwrap();
    assert!(createcluster.contains("create_main_cluster = false"));
    let log = agent.log_text();
    assert!(log.contains("==> "), "steps are printed: {log}");
    assert!(agent.stop(), "clean stop");

    // Found now: a second run installs nothing.
    fs::remove_file(host.stub_log()).unwrap();
    let mut again = UnitProcess::start_with_env(
        Path::new(BIN),
        &[
            "--config".into(),
            host.config().display().to_string(),
            "up".into(),
            "--install-postgres".into(),
        ],
        &env,
        host.dir.path().join("agent2.log"),
    );
    let healthy = try_wait_for(Duration::from_secs(90), || {
        (http_status(&api, "/health") == Some(200)).then_some(())
    });
    assert!(healthy.is_some(), "not healthy: {}", again.log_text());
    assert!(host.commands().is_empty(), "ran {:?}", host.commands());
    assert!(again.log_text().contains("nothing to install"));
    assert!(again.stop());
}

#[test]
fn a_configured_version_is_installed_and_a_missing_pgvector_is_reported() {
    let host = Host::new(DEBIAN, "install = true\nversion = 17");
    let text = host.up_fails(&[]);
    assert_eq!(
        host.commands(),
        [
            "apt-get update",
            "apt-get install -y --no-install-recommends postgresql-17",
            "apt-cache show postgresql-17-pgvector",
        ]
    );
    assert!(
        text.contains("postgresql-17-pgvector is not in the configured apt sources"),
        "{text}"
    );
    // The stub installed nothing for 17: the failure says so instead of going on.
    assert!(
        text.contains("installed postgresql-17, but its server binaries are still not found"),
        "{text}"
    );
}
