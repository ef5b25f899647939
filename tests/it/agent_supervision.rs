//! The agent notices its own dead parts: a panicking HA loop (test-only fault injection
//! through `PGPLATFORM_TEST_HA_LOOP_PANIC_FILE`) fences the node at once, is counted in
//! `/metrics` and restarted, and the node leads again; every supervised task is listed in
//! the restarts counter from the start.

use std::process::Output;
use std::time::{Duration, Instant};

use crate::support::cluster::{ha_toml, one_cluster_at_a_time};
use crate::support::etcd::EtcdServer;
use crate::support::metrics::sample;
use crate::support::ports::free_port;
use crate::support::psql::{psql_command, run_sql};
use crate::support::{wait_for, TestAgent};

const RESTARTS: &str = "pgplatform_agent_task_restarts_total";

/// Runs `sql` as the superuser in database `postgres` over the socket; the raw outcome.
fn superuser_sql(agent: &TestAgent, sql: &str) -> Output {
    let mut cmd = psql_command();
    cmd.arg("-h")
        .arg(agent.data_dir().join("run/socket"))
        .args(["-p", &agent.pg_port().to_string()])
        .args(["-U", "pgplatform", "-d", "postgres"]);
    run_sql(cmd, sql)
}

fn writes(agent: &TestAgent) -> bool {
    superuser_sql(agent, "INSERT INTO probe VALUES (1)")
        .status
        .success()
}

fn restarts_of(agent: &TestAgent, task: &str) -> Option<f64> {
    sample(&agent.scrape(), RESTARTS, &[("task", task)])
}

#[test]
fn a_panicking_ha_loop_fences_the_node_is_restarted_and_the_node_leads_again() {
    let _turn = one_cluster_at_a_time();
    let Some(etcd) = EtcdServer::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let trigger = dir.path().join("panic-now");
    let agent = TestAgent::start_with_env(
        &ha_toml(
            &etcd.endpoint,
            "solo",
            &dir.path().join("cluster.secret"),
            free_port(),
            "",
        ),
        &[(
            "PGPLATFORM_TEST_HA_LOOP_PANIC_FILE",
            trigger.to_str().unwrap(),
        )],
    );
    wait_for(Duration::from_secs(60), "the node to lead", || {
        superuser_sql(&agent, "CREATE TABLE IF NOT EXISTS probe (n int)")
            .status
            .success()
            .then_some(())
    });
    assert!(writes(&agent), "the primary does not take writes");
    // Every supervised task is listed from the start, at 0.
    let metrics = agent.scrape();
    for task in [
        "api",
        "backup_scheduler",
        "ha_loop",
        "pooler",
        "pooler_maintenance",
        "pooler_follow_primary",
        "pooler_read_only",
        "pooler_read_only_maintenance",
    ] {
        assert_eq!(
            sample(&metrics, RESTARTS, &[("task", task)]),
            Some(0.0),
            "{RESTARTS}{{task=\"{task}\"}} in:\n{metrics}"
        );
    }

    std::fs::write(&trigger, b"").unwrap();
    let armed = Instant::now();
    wait_for(Duration::from_secs(10), "writes to be refused", || {
        (!writes(&agent)).then_some(())
    });
    let fenced = armed.elapsed();
    eprintln!("writes refused {fenced:?} after the trigger");
    // ttl is 3 s: writes stop well before the lease could expire for anyone else.
    assert!(
        fenced < Duration::from_secs(3),
        "writes stopped only {fenced:?} after the loop died"
    );
    assert!(!trigger.exists(), "the HA loop never reached the trigger");

    wait_for(Duration::from_secs(30), "the restart to be counted", || {
        (restarts_of(&agent, "ha_loop") == Some(1.0)).then_some(())
    });
    wait_for(Duration::from_secs(60), "the node to lead again", || {
        writes(&agent).then_some(())
    });
    let log = agent.log_contents();
    for line in [
        "agent task died: panicked: test-only fault injection",
        "stepping down: the HA loop is not running",
    ] {
        assert!(log.contains(line), "the log lacks {line:?}");
    }
    assert_eq!(restarts_of(&agent, "api"), Some(0.0));
    let status = agent.cli_json(&["status", "--json"]);
    assert_eq!(status["task_restarts"]["ha_loop"], 1, "{status}");
    assert!(
        agent
            .cli_ok(&["status"])
            .contains("task restarts: ha_loop 1"),
        "status does not show the restart"
    );
}
