//! Runbook "go back to just before the mistake", every way an operator can name the
//! point: a time, an LSN, a restore point made with `backup mark`, a transaction id
//! (inclusive and exclusive). No test step switches WAL by hand: `restore` has the
//! source's agent archive what the target needs, so each restore starts on the first
//! try with exactly the rows committed up to the target. Then `restore --check`, a
//! tampered or forged mark, bad names and xids, and a target beyond the archive while
//! the source is stopped: refused, naming the newest restorable point, leaving nothing.

use std::fs;

use reqwest::Method;

use crate::support::psql::query;
use crate::support::TestAgent;

const NO_SCHEDULES: &str = "[backup]\nschedule = \"\"\ndrill_schedule = \"\"\n";

#[test]
fn every_kind_of_target_restores_exactly_the_rows_before_it() {
    let mut agent = TestAgent::start_with_shop(NO_SCHEDULES);
    let url = agent.tenant_url("shop");
    query(&url, "CREATE TABLE events (n int PRIMARY KEY)");
    agent.cli_ok(&["backup", "run"]);

    let insert = |n: u32| query(&url, &format!("INSERT INTO events VALUES ({n})"));
    insert(1);
    insert(2);
    let between_2_and_3 = agent.admin_psql("SELECT clock_timestamp()");
    insert(3);
    let xid_4 = query(
        &url,
        "INSERT INTO events VALUES (4) RETURNING pg_current_xact_id()",
    );
    // Where and when 5 committed, from its commit record (pg_walinspect), to aim exactly
    // at it: inclusive keeps 5, exclusive stops just before it.
    agent.admin_psql("CREATE EXTENSION IF NOT EXISTS pg_walinspect");
    let before_5 = agent.admin_psql("SELECT pg_current_wal_insert_lsn()");
    let xid_5 = query(
        &url,
        "INSERT INTO events VALUES (5) RETURNING pg_current_xact_id()",
    );
    let commit_5 = agent.admin_psql(&format!(
        "SET TimeZone = 'UTC'; SELECT start_lsn || '|' || substring(description FROM '^(\\S+ \\S+)')
           FROM pg_get_wal_records_info('{before_5}', pg_current_wal_flush_lsn())
          WHERE resource_manager = 'Transaction' AND record_type = 'COMMIT' AND xid = '{xid_5}'"
    ));
    let (commit_5_lsn, commit_5_time) = commit_5
        .split_once('|')
        .unwrap_or_else(|| panic!("no commit record of {xid_5}: {commit_5:?}"));
    insert(6);
    let mark = agent.cli_json(&["backup", "mark", "before-7", "--json"]);
    assert_eq!(mark["name"], "before-7", "{mark}");
    insert(7);

    let listed = agent.cli_json(&["backup", "list", "--json"]);
    let marks: Vec<_> = listed
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["kind"] == "mark")
        .collect();
    assert_eq!(marks.len(), 1, "{listed}");
    assert_eq!(marks[0]["id"], "before-7");
    assert_eq!(marks[0]["stop_lsn"], mark["lsn"]);
    let err = agent.cli_err(&["backup", "mark", "before-7"]);
    assert!(err.contains("already recorded"), "{err}");

    let rows = |name: &str, target: &[&str]| agent.restored_rows(name, target);
    assert_eq!(rows("time", &["--time", &between_2_and_3]), "1,2");
    assert_eq!(rows("lsn", &["--lsn", commit_5_lsn]), "1,2,3,4,5");
    assert_eq!(
        rows("lsn-exclusive", &["--lsn", commit_5_lsn, "--exclusive"]),
        "1,2,3,4"
    );
    assert_eq!(rows("time-at-5", &["--time", commit_5_time]), "1,2,3,4,5");
    assert_eq!(
        rows("time-exclusive", &["--time", commit_5_time, "--exclusive"]),
        "1,2,3,4"
    );
    assert_eq!(rows("name", &["--name", "before-7"]), "1,2,3,4,5,6");
    assert_eq!(rows("xid", &["--xid", &xid_4]), "1,2,3,4");
    assert_eq!(
        rows("xid-exclusive", &["--xid", &xid_4, "--exclusive"]),
        "1,2,3"
    );

    // --check: started on a private socket, recovered, counted, stopped again.
    let checked_dir = agent.restore_dir("checked");
    let checked = agent.cli_json(&[
        "restore",
        "--target-dir",
        checked_dir.to_str().unwrap(),
        "--xid",
        &xid_4,
        "--exclusive",
        "--check",
        "--json",
    ]);
    let tenants = checked["check"]["tenants"].as_array().unwrap();
    assert_eq!(tenants.len(), 1, "{checked}");
    assert_eq!(tenants[0]["name"], "shop", "{checked}");
    assert_eq!(tenants[0]["tables"]["public.events"], 3, "{checked}");
    assert!(
        !checked_dir.join("postmaster.pid").exists(),
        "--check left PostgreSQL running"
    );
    let text_dir = agent.restore_dir("checked-text");
    let text = agent.cli_ok(&[
        "restore",
        "--target-dir",
        text_dir.to_str().unwrap(),
        "--name",
        "before-7",
        "--check",
    ]);
    let shop_line = text
        .lines()
        .find(|l| l.starts_with("shop"))
        .unwrap_or_else(|| panic!("no row count for shop: {text}"));
    assert_eq!(
        shop_line.split_whitespace().collect::<Vec<_>>(),
        ["shop", "1", "6"],
        "{text}"
    );

    bad_targets_change_nothing(&agent);
    tampered_marks_are_refused(&agent);

    // The source stopped: the archive is read instead, and a target beyond it refused.
    insert(8);
    let after_8 = agent.admin_psql("SELECT clock_timestamp()");
    agent.stop();
    let beyond = agent.restore_dir("beyond");
    let err = agent.cli_err(&[
        "restore",
        "--target-dir",
        beyond.to_str().unwrap(),
        "--time",
        &after_8,
    ]);
    assert!(err.contains("newest restorable point is LSN"), "{err}");
    assert!(err.contains("is beyond the archive"), "{err}");
    assert!(!beyond.exists(), "a refused restore left {beyond:?} behind");
    // A target the archive holds still restores without the agent.
    assert_eq!(
        agent.restored_rows("offline", &["--time", &between_2_and_3]),
        "1,2"
    );
}

fn bad_targets_change_nothing(agent: &TestAgent) {
    let dir = agent.restore_dir("bad");
    let d = dir.to_str().unwrap();
    for (args, expected) in [
        (vec!["--xid", "abc"], "is not a transaction id"),
        (vec!["--xid", "1"], "ids start at 3"),
        (vec!["--name", "no-such-point"], "no restore point named"),
        (vec!["--name", "bad/name"], "contains '/'"),
        (vec!["--lsn", "0/XYZ"], "is not an LSN"),
    ] {
        let mut full = vec!["restore", "--target-dir", d];
        full.extend(args.iter().copied());
        let err = agent.cli_err(&full);
        assert!(err.contains(expected), "{args:?}: {err}");
        assert!(!dir.exists(), "{args:?} left {dir:?} behind");
    }
    let long = "x".repeat(64);
    for (name, expected) in [
        (long.as_str(), "64 bytes"),
        ("tab\there", "'\\t'"),
        ("-starts-with-dash", "start with a letter or digit"),
    ] {
        let err = agent.cli_err(&["backup", "mark", "--", name]);
        assert!(err.contains(expected), "{name:?}: {err}");
    }
    // The agent checks the name too, and both endpoints want the admin token.
    let token = agent.admin_token();
    let bad = serde_json::json!({ "name": "a'b" });
    let (code, reply) = agent.api(Method::POST, "/backup/mark", Some(&token), Some(&bad));
    assert_eq!(code, 400, "{reply}");
    assert!(
        reply["error"].as_str().unwrap().contains("contains '\\''"),
        "{reply}"
    );
    let good = serde_json::json!({ "name": "sneaky" });
    for path in ["/backup/mark", "/backup/switch-wal"] {
        for token in [None, Some("not-the-token")] {
            let (code, reply) = agent.api(Method::POST, path, token, Some(&good));
            assert_eq!(code, 401, "{path} with token {token:?}: {reply}");
        }
    }
}

fn tampered_marks_are_refused(agent: &TestAgent) {
    let marks = agent.data_dir().join("backups/mark");
    let genuine = fs::read_to_string(marks.join("before-7")).unwrap();
    // Moved to another name: the seal binds the mark to its place.
    fs::write(marks.join("moved"), &genuine).unwrap();
    let err = agent.cli_err(&[
        "restore",
        "--target-dir",
        agent.restore_dir("moved").to_str().unwrap(),
        "--name",
        "moved",
    ]);
    assert!(err.contains("refused"), "{err}");
    fs::remove_file(marks.join("moved")).unwrap();
    // Its position changed, seal kept.
    let lsn = genuine
        .split("\"lsn\": \"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap()
        .to_owned();
    fs::write(
        marks.join("before-7"),
        genuine.replace(&format!("\"lsn\": \"{lsn}\""), "\"lsn\": \"0/1\""),
    )
    .unwrap();
    let dir = agent.restore_dir("tampered");
    let err = agent.cli_err(&[
        "restore",
        "--target-dir",
        dir.to_str().unwrap(),
        "--name",
        "before-7",
    ]);
    assert!(err.contains("does not verify"), "{err}");
    assert!(!dir.exists());
    let listed = agent.cli_ok(&["backup", "list"]);
    assert!(
        listed.contains("REFUSED: the manifest of restore point \"before-7\" is refused"),
        "{listed}"
    );
    fs::write(marks.join("before-7"), genuine).unwrap();
}
