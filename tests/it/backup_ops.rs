//! Runbooks "keep a week of backups", "restore one application's data" and "roll this
//! node back": retention keeps exactly the newest backups and the WAL they need; a tenant
//! dump restores into a new database, or replaces the live one only with --yes (keeping
//! it aside); an in-place restore rolls the node's own cluster back to a time.

use std::fs;
use std::time::Duration;

use crate::support::psql::query;
use crate::support::{wait_for, TestAgent};

#[test]
fn retention_dumps_and_in_place_restore() {
    let agent = TestAgent::start_with_shop(
        "[backup]\nschedule = \"\"\ndrill_schedule = \"\"\nretention_full = 2\n",
    );
    let url = agent.tenant_url("shop");
    query(&url, "CREATE TABLE notes (body text)");

    let mut ids = Vec::new();
    for _ in 0..3 {
        query(
            &url,
            "INSERT INTO notes SELECT 'filler' FROM generate_series(1, 100)",
        );
        agent.switch_and_archive();
        let backup = agent.cli_json(&["backup", "run", "--json"]);
        ids.push(backup["id"].as_str().unwrap().to_owned());
    }
    let listed = agent.cli_json(&["backup", "list", "--json"]);
    let kept: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        kept,
        [ids[1].as_str(), ids[2].as_str()],
        "retention_full = 2"
    );
    assert!(!agent
        .data_dir()
        .join(format!("backups/base/{}", ids[0]))
        .join("manifest")
        .exists());
    let manifest = fs::read_to_string(
        agent
            .data_dir()
            .join(format!("backups/base/{}/manifest", ids[1])),
    )
    .unwrap();
    let oldest_start = manifest
        .split("\"start_wal\": \"")
        .nth(1)
        .and_then(|r| r.get(..24))
        .unwrap()
        .to_owned();
    let wal: Vec<String> = fs::read_dir(agent.data_dir().join("backups/wal"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        wal.iter().any(|w| w.starts_with(&oldest_start)),
        "the needed WAL is kept: {wal:?}"
    );
    for name in &wal {
        if name.len() >= 24 && !name.contains("history") {
            assert!(
                name[8..24] >= oldest_start[8..24],
                "{name} outlived the backups that needed it"
            );
        }
    }

    // Logical dump, restored beside the live database, then over it.
    let rows_at_dump = query(&url, "SELECT count(*) FROM notes");
    let dump = agent.cli_json(&["backup", "dump", "shop", "--json"]);
    let dump_id = dump["id"].as_str().unwrap().to_owned();
    let listed = agent.cli_json(&["backup", "list", "--json"]);
    let dumps: Vec<_> = listed
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["kind"] == "dump")
        .collect();
    assert_eq!(dumps.len(), 1, "{listed}");
    assert_eq!(dumps[0]["tenant"], "shop");
    query(&url, "INSERT INTO notes VALUES ('after the dump')");
    agent.cli_ok(&["restore", "dump", "shop", "--as", "shop_copy"]);
    assert_eq!(
        agent.admin_psql_in("shop_copy", "SELECT count(*) FROM notes"),
        rows_at_dump
    );
    let err = agent.cli_err(&["restore", "dump", "shop", "--replace"]);
    assert!(err.contains("--yes"), "{err}");
    let replaced = agent.cli_json(&["restore", "dump", "shop", "--replace", "--yes", "--json"]);
    let previous = replaced["previous"].as_str().unwrap().to_owned();
    assert_eq!(previous, format!("shop_before_{}", dump_id.to_lowercase()));
    let live = wait_for(
        Duration::from_secs(30),
        "the pooler to reach the swapped database",
        || crate::support::psql::run_query(&url, "SELECT count(*) FROM notes"),
    );
    assert_eq!(live, rows_at_dump, "the live database is the dump's");
    assert_eq!(
        agent.admin_psql_in(
            &previous,
            "SELECT count(*) FROM notes WHERE body = 'after the dump'"
        ),
        "1",
        "the replaced database is kept"
    );

    // Roll the whole node back to a time.
    query(&url, "CREATE TABLE marks (m text)");
    query(&url, "INSERT INTO marks VALUES ('kept')");
    let before = agent.admin_psql("SELECT clock_timestamp()");
    query(&url, "INSERT INTO marks VALUES ('rolled back')");
    // No WAL switch here: the in-place restore has the agent archive what it needs.
    agent.cli_ok(&["backup", "run"]);
    let err = agent.cli_err(&["restore", "--in-place", "--time", &before]);
    assert!(err.contains("--yes"), "{err}");
    // The newest backup ended after `before`: restore picks the older one by itself.
    agent.cli_ok(&["restore", "--in-place", "--yes", "--time", &before]);
    let mut last_error = String::new();
    let marks = crate::support::try_wait_for(Duration::from_secs(60), || {
        let out = crate::support::psql::run_sql_over(&url, "SELECT string_agg(m, ',') FROM marks");
        last_error = crate::support::stderr_of(&out);
        out.status
            .success()
            .then(|| crate::support::stdout_of(&out).trim().to_owned())
    })
    .unwrap_or_else(|| {
        panic!(
            "the tenant was not reachable again: {last_error}\n{}",
            agent.log_tail(40)
        )
    });
    assert_eq!(marks, "kept");
    let aside: Vec<_> = fs::read_dir(agent.data_dir())
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("pg.before-restore-")
        })
        .collect();
    assert_eq!(aside.len(), 1, "the previous cluster is kept aside");
    let auto = fs::read_to_string(agent.pgdata().join("postgresql.auto.conf")).unwrap();
    assert!(
        !auto.contains("recovery_target"),
        "the target outlived the restore:\n{auto}"
    );
}
