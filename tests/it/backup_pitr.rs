//! Runbook "restore to just before the mistake": a base backup plus archived WAL restore to
//! a time between two commits with exactly the rows before it; a drill passes; verify
//! passes; a second concurrent backup refuses; a target before the oldest backup is a
//! clear error; and one flipped byte in the stored backup is caught by verify, restore
//! (which leaves no partial directory) and the drill.

use std::fs::{self, File};

use nix::fcntl::{Flock, FlockArg};

use crate::support::psql::query;
use crate::support::{command, run, stdout_of, TestAgent, COMMAND_TIMEOUT};

const NO_SCHEDULES: &str = "[backup]\nschedule = \"\"\ndrill_schedule = \"\"\n";

#[test]
fn point_in_time_restore_drill_verify_and_corruption() {
    let agent = TestAgent::start_with_shop(NO_SCHEDULES);
    let url = agent.tenant_url("shop");
    query(&url, "CREATE TABLE events (n int PRIMARY KEY)");
    let backup = agent.cli_json(&["backup", "run", "--json"]);
    let id = backup["id"].as_str().unwrap().to_owned();
    assert!(backup["stored_bytes"].as_u64() > Some(0), "{backup}");

    agent.pitr_round_trip(&url);

    let early = agent.restore_dir("too-early");
    let err = agent.cli_err(&[
        "restore",
        "--target-dir",
        early.to_str().unwrap(),
        "--time",
        "2000-01-01 00:00:00+00",
    ]);
    assert!(err.contains("before the oldest backup"), "{err}");

    // The leftovers of an interrupted backup (no manifest) are not a backup; expire clears them.
    let leftover = agent.data_dir().join("backups/base/20000101T000000Z");
    fs::create_dir_all(&leftover).unwrap();
    fs::write(leftover.join("pgdata.tar.zst"), b"half a backup").unwrap();
    let listed = agent.cli_json(&["backup", "list", "--json"]);
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    let expired = agent.cli_json(&["backup", "expire", "--json"]);
    assert_eq!(expired["leftover_objects"], 1, "{expired}");
    assert!(!leftover.join("pgdata.tar.zst").exists());
    let drill = agent.cli_json(&["backup", "drill", "--json"]);
    assert_eq!(drill["ok"], true, "{drill}");
    assert!(drill["tables_compared"].as_u64() >= Some(1), "{drill}");
    assert!(drill["indexes_checked"].as_u64() >= Some(1), "{drill}");
    let verified = agent.cli_json(&["backup", "verify", &id, "--json"]);
    assert_eq!(verified["failures"], serde_json::json!([]), "{verified}");
    let status = agent.cli_json(&["status", "--json"]);
    assert_eq!(
        status["backup"]["last_success"]["id"],
        id.as_str(),
        "{status}"
    );
    assert_eq!(status["drill"]["ok"], true, "{status}");

    // A second backup while one runs is refused.
    {
        let file = File::create(agent.data_dir().join("run/backup.lock")).unwrap();
        let _held = Flock::lock(file, FlockArg::LockExclusiveNonblock).unwrap();
        let err = agent.cli_err(&["backup", "run"]);
        assert!(err.contains("another backup is running"), "{err}");
    }

    restore_into_a_full_disk_fails_cleanly(&agent);

    // One flipped byte in the stored data.
    let object = agent
        .data_dir()
        .join(format!("backups/base/{id}/pgdata.tar.zst"));
    let mut bytes = fs::read(&object).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x20;
    fs::write(&object, bytes).unwrap();

    let out = agent.cli(&["backup", "verify", &id]);
    assert!(!out.status.success(), "verify passed a corrupt backup");
    assert!(
        stdout_of(&out).contains(&format!("FAILED base/{id}/pgdata.tar.zst")),
        "{}",
        stdout_of(&out)
    );

    let broken = agent.restore_dir("broken");
    let err = agent.cli_err(&["restore", "--target-dir", broken.to_str().unwrap()]);
    assert!(err.contains(&id), "{err}");
    let left: Vec<_> = fs::read_dir(&broken)
        .map(|d| d.flatten().collect())
        .unwrap_or_default();
    assert!(
        left.is_empty(),
        "a failed restore left files behind: {left:?}"
    );

    let out = agent.cli(&["backup", "drill", "--json"]);
    assert!(!out.status.success(), "the drill passed a corrupt backup");
    let drill: serde_json::Value = serde_json::from_str(&stdout_of(&out)).unwrap();
    assert_eq!(drill["ok"], false, "{drill}");
    let metrics = agent.scrape();
    assert!(
        metrics.contains("pgplatform_drill_last_success{backup_id="),
        "{metrics}"
    );
    assert!(metrics.contains("pgplatform_backup_last_success_timestamp_seconds "));
    let status = agent.cli_json(&["status", "--json"]);
    let warnings = status["warnings"].to_string();
    assert!(warnings.contains("restore drill FAILED"), "{status}");
}

/// A 2 MB tmpfs as the target: the restore fails naming the cause and leaves nothing.
fn restore_into_a_full_disk_fails_cleanly(agent: &TestAgent) {
    if !nix::unistd::Uid::effective().is_root() {
        crate::support::skip("disk-full restore needs root to mount a small tmpfs");
        return;
    }
    let full = agent.restore_dir("full");
    fs::create_dir_all(&full).unwrap();
    let mount = run(
        command("mount")
            .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
            .arg(&full),
        COMMAND_TIMEOUT,
    );
    if !mount.status.success() {
        let reason = format!(
            "cannot mount a tmpfs here: {}",
            crate::support::stderr_of(&mount)
        );
        crate::support::skip(&reason);
        return;
    }
    let err = agent.cli_err(&["restore", "--target-dir", full.to_str().unwrap()]);
    let left = fs::read_dir(&full).map(|d| d.count()).unwrap_or(0);
    let _ = run(command("umount").arg(&full), COMMAND_TIMEOUT);
    assert!(err.contains("No space left on device"), "{err}");
    assert_eq!(left, 0, "a failed restore left files on the full disk");
}
