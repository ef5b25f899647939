//! The Debian package, installed on this machine: `dpkg -i` puts the binary, the conffile
//! and the unit in place (the unit verifies clean where it is installed); the installed
//! binary runs with the installed config exactly as the unit's `ExecStart` does, as
//! `postgres` (the unit as shipped: READY=1, /health 200, a tenant created and usable)
//! and as root (the run-as-root drop-in); `dpkg -r` removes the program and keeps the data.
//!
//! `scripts/test` builds the package (`cargo deb --profile dev --no-build`: the binary the
//! tests already built, so no release build) and names it in `PGPLATFORM_TEST_DEB`. The
//! installed config listens on the default ports (5432, 6432, 8008): nothing else may.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::unistd::User;

use crate::deploy_systemd::{exec_start, http_status, UnitProcess};
use crate::support::{command, run, stderr_of, stdout_of, try_wait_for, COMMAND_TIMEOUT};

const DATA: &str = "/var/lib/pgplatform";
const CONFIG: &str = "/etc/pgplatform/pgplatform.toml";
const BIN: &str = "/usr/bin/pgplatform";
const UNIT: &str = "/usr/lib/systemd/system/pgplatform.service";
/// Written into the data directory so a rerun only ever deletes what a test made.
const MARKER: &str = ".made-by-pgplatform-deb-test";

/// Purges the package and removes the data directory this test made, however it ends.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = run(
            command("dpkg").args(["--purge", "pgplatform"]),
            COMMAND_TIMEOUT,
        );
        if Path::new(DATA).join(MARKER).exists() {
            let _ = fs::remove_dir_all(DATA);
        }
    }
}

fn ok(cmd: &mut std::process::Command) -> String {
    let out = run(cmd, Duration::from_secs(120));
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        stdout_of(&out),
        stderr_of(&out)
    );
    stdout_of(&out)
}

fn cli(args: &[&str]) -> String {
    ok(command(BIN).arg("--config").arg(CONFIG).args(args))
}

fn healthy(agent: &UnitProcess) {
    let up = try_wait_for(Duration::from_secs(120), || {
        (http_status("127.0.0.1:8008", "/health") == Some(200)).then_some(())
    });
    assert!(up.is_some(), "/health not 200: {}", agent.log_text());
}

#[test]
fn the_package_installs_runs_as_the_unit_does_and_removal_keeps_the_data() {
    let Some(deb) = std::env::var_os("PGPLATFORM_TEST_DEB").map(PathBuf::from) else {
        crate::support::skip("PGPLATFORM_TEST_DEB (the .deb scripts/test builds) is not set");
        return;
    };
    let Ok(Some(postgres)) = User::from_name("postgres") else {
        crate::support::skip("no OS user postgres");
        return;
    };
    if !nix::unistd::Uid::effective().is_root() {
        crate::support::skip("dpkg -i needs root");
        return;
    }
    assert!(
        !Path::new(DATA).exists() || Path::new(DATA).join(MARKER).exists(),
        "{DATA} exists and was not made by this test: not touching it"
    );
    let _ = fs::remove_dir_all(DATA);
    let _cleanup = Installed;

    ok(command("dpkg").arg("-i").arg(&deb));
    for path in [BIN, CONFIG, UNIT] {
        assert!(Path::new(path).exists(), "{path} not installed");
    }
    let conffiles = ok(command("dpkg-query").args(["-W", "-f=${Conffiles}", "pgplatform"]));
    assert!(conffiles.contains(CONFIG), "conffiles: {conffiles}");
    // Installing starts nothing and creates no data.
    assert!(http_status("127.0.0.1:8008", "/health").is_none());
    assert!(!Path::new(DATA).exists(), "dpkg -i created {DATA}");
    let verify = run(
        command("systemd-analyze").args(["verify", "--man=no", UNIT]),
        COMMAND_TIMEOUT,
    );
    let said = format!("{}{}", stdout_of(&verify), stderr_of(&verify));
    assert!(
        verify.status.success() && said.trim().is_empty(),
        "verify: {said}"
    );

    // What the unit's StateDirectory= makes: /var/lib/pgplatform, 0700, owned by postgres.
    fs::create_dir(DATA).unwrap();
    fs::write(Path::new(DATA).join(MARKER), "").unwrap();
    for path in [Path::new(DATA).to_owned(), Path::new(DATA).join(MARKER)] {
        nix::unistd::chown(&path, Some(postgres.uid), Some(postgres.gid)).unwrap();
    }
    fs::set_permissions(DATA, fs::Permissions::from_mode(0o700)).unwrap();

    // As shipped: User=postgres, with a NOTIFY_SOCKET postgres can write to.
    let dir = tempfile::tempdir().unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let socket_path = dir.path().join("notify");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    fs::set_permissions(&socket_path, fs::Permissions::from_mode(0o777)).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    let args = exec_start();
    let mut agent = UnitProcess::start(
        Path::new(BIN),
        &args,
        Some(&postgres),
        Some(&socket_path),
        dir.path().join("as-postgres.log"),
    );
    let mut buf = [0u8; 256];
    let n = socket
        .recv(&mut buf)
        .unwrap_or_else(|e| panic!("no READY=1 ({e}): {}", agent.log_text()));
    assert!(String::from_utf8_lossy(&buf[..n]).contains("READY=1"));
    assert_eq!(http_status("127.0.0.1:8008", "/health"), Some(200));
    cli(&["tenant", "create", "debtest"]);
    let url = fs::read_to_string(Path::new(DATA).join("secrets/debtest/database_url")).unwrap();
    let answer = ok(command("psql").args([url.trim(), "-Atc", "select current_user"]));
    assert_eq!(answer.trim(), "debtest");
    assert!(agent.stop(), "as postgres: no clean stop");

    // With the run-as-root drop-in: the same command line as root.
    let mut agent = UnitProcess::start(
        Path::new(BIN),
        &args,
        None,
        None,
        dir.path().join("as-root.log"),
    );
    healthy(&agent);
    assert!(cli(&["tenant", "list"]).contains("debtest"));
    assert!(agent.stop(), "as root: no clean stop");

    ok(command("dpkg").args(["-r", "pgplatform"]));
    assert!(!Path::new(BIN).exists(), "dpkg -r left {BIN}");
    assert!(!Path::new(UNIT).exists(), "dpkg -r left {UNIT}");
    assert!(Path::new(CONFIG).exists(), "dpkg -r removed the conffile");
    for kept in ["pg/PG_VERSION", "secrets/debtest/database_url"] {
        assert!(
            Path::new(DATA).join(kept).exists(),
            "dpkg -r removed {DATA}/{kept}"
        );
    }
}
