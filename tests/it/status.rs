//! Runbook "what is wrong right now?": `pgplatform status` (text and `--json`) reports role,
//! connections, tenants and WAL archiving, and warns when connections near max_connections
//! and when archiving keeps failing. Slow statements reach the agent's log as JSON.

use std::time::Duration;

use crate::support::pooler::{exec, runtime, try_connect_config};
use crate::support::{wait_for, TestAgent};

#[test]
fn status_reports_and_warns_when_conditions_hold() {
    let agent = TestAgent::start_with_shop(
        "[status]\nconnections_warn_percent = 50\narchive_failing_warn_seconds = 1\n\
         backup_max_age_seconds = 1\n[backup]\narchive = false\nschedule = \"\"\n\
         [postgres.parameters]\nmax_connections = 20\narchive_mode = \"on\"\n\
         archive_command = \"/bin/false\"\nlog_min_duration_statement = \"200ms\"\n",
    );
    let status = agent.cli_json(&["status", "--json"]);
    assert_eq!(status["role"], "primary", "{status}");
    assert_eq!(status["postgres"]["state"], "running", "{status}");
    assert_eq!(status["connections"]["max"], 20, "{status}");
    assert_eq!(status["tenants"]["count"], 1, "{status}");
    assert_eq!(status["tenants"]["list"][0]["name"], "shop", "{status}");
    assert!(status["tenants"]["list"][0]["size_bytes"].as_i64() > Some(0));
    assert_eq!(status["wal_archive"]["archive_mode"], true, "{status}");
    assert!(status["disk"]["free_percent"].is_number(), "{status}");
    // With backup_max_age_seconds = 1 a node without a backup soon warns; nothing else does.
    let warnings: Vec<&str> = status["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|w| w.as_str())
        .collect();
    // The disk warning depends on the host running the tests: it must agree with the
    // free space the same status reports (under 10%), and be the only other one.
    let free = status["disk"]["free_percent"].as_f64().unwrap();
    assert!(
        warnings
            .iter()
            .all(|w| w.starts_with("no successful base backup yet")
                || (w.starts_with("data directory disk") && free < 10.0)),
        "a fresh platform warns of nothing else: {warnings:?}"
    );

    let rt = runtime();
    let _held = rt.block_on(async {
        let admin = try_connect_config(&agent.superuser_config()).await.unwrap();
        // WAL to archive, which archive_command = /bin/false refuses.
        exec(
            &admin,
            "CREATE TABLE filler AS SELECT 1 AS x; SELECT pg_switch_wal()",
        )
        .await;
        // A slow statement through the pooler, for the log.
        let app = crate::support::pooler::connect(&agent.tenant_url("shop")).await;
        exec(&app, "SELECT pg_sleep(0.3)").await;
        // Direct connections up to at least half of max_connections.
        let mut held = vec![admin, app];
        for _ in 0..10 {
            held.push(try_connect_config(&agent.superuser_config()).await.unwrap());
        }
        held
    });

    // A base backup, which then ages past backup_max_age_seconds.
    agent.cli_ok(&["backup", "run"]);
    let status = wait_for(Duration::from_secs(60), "the three warnings", || {
        let status = agent.cli_json(&["status", "--json"]);
        let text = status["warnings"].to_string();
        (text.contains("connections at")
            && text.contains("WAL archiving failing")
            && text.contains("no successful base backup in"))
        .then_some(status)
    });
    assert!(
        status["backup"]["last_success"]["id"].is_string(),
        "{status}"
    );
    let used = status["connections"]["used"].as_i64().unwrap();
    assert!(used >= 10, "{status}");
    assert!(status["wal_archive"]["failing"] == true, "{status}");
    assert!(
        status["wal_archive"]["pending_segments"].as_i64() >= Some(1),
        "{status}"
    );

    let screen = agent.cli_ok(&["status"]);
    assert!(screen.contains("role        primary"), "{screen}");
    assert!(screen.contains("! connections at"), "{screen}");
    assert!(screen.contains("! WAL archiving failing for"), "{screen}");
    assert!(screen.contains("shop"), "{screen}");

    let slow = agent
        .log_contents()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|l| l["message"] == "slow statement" && l["database"] == "shop")
        .unwrap_or_else(|| panic!("no slow statement in the log:\n{}", agent.log_tail(30)));
    assert_eq!(slow["user"], "shop", "{slow}");
    assert!(slow["duration_ms"].as_f64() >= Some(300.0), "{slow}");
    assert!(
        slow["statement"]
            .as_str()
            .unwrap_or("")
            .contains("pg_sleep"),
        "{slow}"
    );
}
