//! Runbook "write the config file": `init` writes a file the agent accepts; unknown keys and bad values
//! stop `up` at once with an error naming the key, before anything is created.

use std::fs;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::support::ports::Ports;
use crate::support::{pgplatform, run, stderr_of, stdout_of};

/// Writes `config` to a fresh directory and runs `up` on it; returns the directory and `up`'s stderr.
fn up_with_config(config: &str) -> (TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pgplatform.toml");
    fs::write(&path, config).unwrap();
    let started = Instant::now();
    let out = run(
        pgplatform().arg("--config").arg(&path).arg("up"),
        Duration::from_secs(30),
    );
    let elapsed = started.elapsed();
    assert!(
        !out.status.success(),
        "up accepted the config:\n{config}\n{}",
        stdout_of(&out)
    );
    assert!(
        elapsed < Duration::from_secs(10),
        "up took {elapsed:?} to refuse the config"
    );
    let stderr = stderr_of(&out);
    assert!(
        stderr.starts_with("error:"),
        "up's stderr does not start with error: {stderr}"
    );
    (dir, stderr)
}

/// A config that is valid apart from `postgres_lines` (free ports, so a wrongly accepting agent
/// cannot disturb anything else on the machine).
fn config_with_postgres_lines(postgres_lines: &str) -> String {
    let api = Ports::pick().api;
    format!(
        "data_dir = \"data\"\n[api]\nlisten = \"127.0.0.1:{api}\"\n[postgres]\n{postgres_lines}\n"
    )
}

#[test]
fn unknown_config_key_is_named_and_nothing_is_created() {
    let port = Ports::pick().postgres;
    let (dir, stderr) = up_with_config(&config_with_postgres_lines(&format!(
        "port = {port}\nprot = 1"
    )));
    assert!(
        stderr.contains("postgres.prot"),
        "up's error does not name postgres.prot: {stderr}"
    );
    assert!(
        !dir.path().join("data").exists(),
        "up created the data dir despite the bad config"
    );
}

#[test]
fn bad_port_values_are_named_and_nothing_is_created() {
    for value in ["\"abc\"", "70000"] {
        let (dir, stderr) = up_with_config(&config_with_postgres_lines(&format!("port = {value}")));
        assert!(
            stderr.contains("postgres.port"),
            "port = {value}: error does not name postgres.port: {stderr}"
        );
        assert!(
            !dir.path().join("data").exists(),
            "port = {value}: up created the data dir"
        );
    }
}

#[test]
fn init_writes_an_accepted_config_and_does_not_overwrite_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pgplatform.toml");

    let out = run(
        pgplatform().arg("init").arg(dir.path()),
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "init failed: {}", stderr_of(&out));
    let text = fs::read_to_string(&file).unwrap();
    toml::from_str::<toml::Table>(&text)
        .unwrap_or_else(|e| panic!("init wrote invalid TOML ({e}):\n{text}"));

    // The agent's own config loader accepts it: `status` may fail, but because no agent runs.
    let status = run(
        pgplatform().arg("--config").arg(&file).arg("status"),
        Duration::from_secs(30),
    );
    let stderr = stderr_of(&status).to_lowercase();
    for config_complaint in ["unknown", "invalid", "parse"] {
        assert!(
            !stderr.contains(config_complaint),
            "status with init's config: {stderr}"
        );
    }

    // A second init refuses and leaves the (edited) file alone; --force overwrites it.
    let edited = format!("{text}\n# edited by the operator\n");
    fs::write(&file, &edited).unwrap();
    let again = run(
        pgplatform().arg("init").arg(dir.path()),
        Duration::from_secs(30),
    );
    assert!(!again.status.success(), "second init succeeded");
    assert!(
        stderr_of(&again).starts_with("error:"),
        "second init: {}",
        stderr_of(&again)
    );
    assert_eq!(fs::read_to_string(&file).unwrap(), edited);

    let forced = run(
        pgplatform().arg("init").arg(dir.path()).arg("--force"),
        Duration::from_secs(30),
    );
    assert!(
        forced.status.success(),
        "init --force failed: {}",
        stderr_of(&forced)
    );
    assert_eq!(fs::read_to_string(&file).unwrap(), text);
}

#[test]
fn a_config_file_postgres_cannot_read_stops_up_while_archiving() {
    use std::os::unix::fs::PermissionsExt;
    if !nix::unistd::Uid::effective().is_root() {
        crate::support::skip("needs root: PostgreSQL runs as another user only then");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let path = dir.path().join("pgplatform.toml");
    fs::write(
        &path,
        config_with_postgres_lines(&format!("port = {}", Ports::pick().postgres)),
    )
    .unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    let out = run(
        pgplatform().arg("--config").arg(&path).arg("up"),
        Duration::from_secs(30),
    );
    assert!(
        !out.status.success(),
        "up started although wal push could not read its config"
    );
    let stderr = stderr_of(&out);
    assert!(
        stderr.contains("cannot read") && stderr.contains("pgplatform.toml"),
        "{stderr}"
    );
}
