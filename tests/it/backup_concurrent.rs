//! Runbook "two backups at once" (a cron job and an operator): two `backup run`s started
//! together never corrupt the repository. One waits for nothing and is refused with a
//! clear message while the other runs (or, if the first had already finished, both
//! succeed); the ids are unique, and everything listed verifies.

use std::process::Stdio;

use crate::support::psql::query;
use crate::support::{pgplatform, stderr_of, stdout_of, TestAgent};

#[test]
fn two_backup_runs_at_once_leave_a_valid_repository() {
    let agent = TestAgent::start_with_shop("[backup]\nschedule = \"\"\ndrill_schedule = \"\"\n");
    query(
        &agent.tenant_url("shop"),
        "CREATE TABLE t AS SELECT g FROM generate_series(1, 10000) g",
    );
    let start = || {
        pgplatform()
            .arg("--config")
            .arg(agent.config_path())
            .args(["backup", "run", "--json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (start(), start());
    let outputs = [a.wait_with_output().unwrap(), b.wait_with_output().unwrap()];
    let mut ids = Vec::new();
    for out in &outputs {
        if out.status.success() {
            let summary: serde_json::Value = serde_json::from_str(&stdout_of(out)).unwrap();
            ids.push(summary["id"].as_str().unwrap().to_owned());
        } else {
            let err = stderr_of(out);
            assert!(
                err.contains("another backup is running on this node"),
                "a concurrent backup failed without the clear refusal: {err}"
            );
        }
    }
    assert!(!ids.is_empty(), "neither backup succeeded");
    eprintln!("{} of 2 concurrent backups ran", ids.len());
    let listed = agent.cli_json(&["backup", "list", "--json"]);
    let mut listed_ids: Vec<String> = listed
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["kind"] == "base")
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    listed_ids.sort();
    assert_eq!(listed_ids, ids, "exactly the successful backups, each once");
    for id in &ids {
        let verified = agent.cli_json(&["backup", "verify", id, "--json"]);
        assert_eq!(verified["failures"], serde_json::json!([]), "{verified}");
    }
    let listed_text = agent.cli_ok(&["backup", "list"]);
    assert!(!listed_text.contains("REFUSED"), "{listed_text}");
    // Two backups within the same second get different ids.
    let first = agent.cli_json(&["backup", "run", "--json"]);
    let second = agent.cli_json(&["backup", "run", "--json"]);
    assert_ne!(first["id"], second["id"]);
    assert!(
        second["id"].as_str() > first["id"].as_str(),
        "ids sort in the order taken: {first} {second}"
    );
}
