//! Reload reaches everything: SIGHUP hands the backup schedule and the status thresholds
//! to the running agent and names the keys that need a restart (log, `status`, `/status`);
//! a scheduler with no job due leaves the agent serving. A cron expression that never
//! fires stops `up` at once, naming the key. `pgplatform reload` (`POST /reload`) does
//! what SIGHUP does and answers with what changed, or why nothing did.

use std::fs;
use std::time::Duration;

use chrono::{Timelike, Utc};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::support::ports::Ports;
use crate::support::{pgplatform, run, stderr_of, wait_for, TestAgent};

const IDLE_SCHEDULER: &str = "backup scheduler: no job is scheduled; waiting for a reload";
const RELOADED: &str = "configuration reloaded";

/// Sets `keys` (dotted `table.key`, TOML values) in the agent's config file.
fn edit_config(agent: &TestAgent, keys: &[(&str, &str)]) {
    let path = agent.config_path();
    let mut config: toml::Table = toml::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
    for (key, value) in keys {
        let (table, key) = key.split_once('.').unwrap();
        let value: toml::Table = toml::from_str(&format!("v = {value}")).unwrap();
        config
            .entry(table)
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .unwrap()
            .insert(key.to_owned(), value["v"].clone());
    }
    fs::write(&path, toml::to_string(&config).unwrap()).unwrap();
}

/// `edit_config`, then SIGHUP, and waits until the agent logged reload number `reloads`.
fn reload_with(agent: &TestAgent, keys: &[(&str, &str)], reloads: usize) {
    edit_config(agent, keys);
    kill(Pid::from_raw(agent.pid().unwrap()), Signal::SIGHUP).unwrap();
    wait_for(Duration::from_secs(30), "the reload to be logged", || {
        (agent.log_contents().matches(RELOADED).count() >= reloads).then_some(())
    });
}

fn warnings(status: &serde_json::Value) -> Vec<String> {
    status["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn sighup_reaches_the_scheduler_and_status_and_names_keys_that_need_a_restart() {
    let mut agent = TestAgent::start_with("[backup]\nschedule = \"\"\ndrill_schedule = \"\"\n");
    // No job due: the scheduler waits, and the agent goes on serving.
    wait_for(Duration::from_secs(30), "the idle scheduler", || {
        agent.log_contents().contains(IDLE_SCHEDULER).then_some(())
    });
    assert_eq!(agent.health_code(), Some(200));
    let before = agent.status();
    assert!(before["backup"]["last_success"].is_null(), "{before}");
    assert!(before["backup"]["next_job"].is_null(), "{before}");
    assert_eq!(before["pending_restart"], serde_json::json!([]), "{before}");
    assert!(
        !warnings(&before)
            .iter()
            .any(|w| w.starts_with("connections at")),
        "{before}"
    );

    // One base backup, at a second a little ahead (UTC, as the agent's cron).
    let at = Utc::now() + chrono::Duration::seconds(8);
    let cron = format!("{} {} {} * * *", at.second(), at.minute(), at.hour());
    reload_with(
        &agent,
        &[
            ("backup.schedule", &format!("\"{cron}\"")),
            ("status.connections_warn_percent", "1"),
            ("postgres.stop_timeout_seconds", "17"),
            ("api.max_connections", "77"),
        ],
        1,
    );
    assert!(
        Utc::now() < at,
        "the reload came after the scheduled second"
    );
    let log = agent.log_contents();
    assert!(
        log.contains("applied live: backup.schedule, status"),
        "the log does not name what applied live"
    );
    assert!(
        log.contains("pending restart: postgres.stop_timeout_seconds, api.max_connections"),
        "the log does not name the keys that need a restart"
    );
    let status = agent.cli_json(&["status", "--json"]);
    assert_eq!(
        status["pending_restart"],
        serde_json::json!(["postgres.stop_timeout_seconds", "api.max_connections"]),
        "{status}"
    );
    assert!(
        warnings(&status)
            .iter()
            .any(|w| w.starts_with("connections at")),
        "the new threshold did not reach status: {status}"
    );
    let next = &status["backup"]["next_job"];
    assert_eq!(next["job"], "base backup", "{status}");
    let next_at = chrono::DateTime::parse_from_rfc3339(next["at"].as_str().unwrap()).unwrap();
    assert_eq!(next_at, at.with_nanosecond(0).unwrap(), "{status}");
    let screen = agent.cli_ok(&["status"]);
    assert!(
        screen.contains("pending restart: postgres.stop_timeout_seconds, api.max_connections"),
        "{screen}"
    );
    assert!(screen.contains("! connections at"), "{screen}");
    assert!(screen.contains("next job    base backup at "), "{screen}");

    let done = wait_for(Duration::from_secs(90), "the scheduled backup", || {
        let status = agent.status();
        (!status["backup"]["last_success"].is_null()).then_some(status)
    });
    let stopped = chrono::DateTime::parse_from_rfc3339(
        done["backup"]["last_success"]["stopped_at"]
            .as_str()
            .unwrap_or_else(|| panic!("no stopped_at in {done}")),
    )
    .unwrap();
    assert!(
        stopped >= at,
        "the backup ended at {stopped}, before its schedule {at}"
    );

    // Nothing scheduled again, the restart keys back as they run: nothing pending, and
    // the idle scheduler leaves the agent serving.
    reload_with(
        &agent,
        &[
            ("backup.schedule", "\"\""),
            ("postgres.stop_timeout_seconds", "60"),
            ("api.max_connections", "512"),
        ],
        2,
    );
    wait_for(
        Duration::from_secs(30),
        "the scheduler to idle again",
        || (agent.log_contents().matches(IDLE_SCHEDULER).count() >= 2).then_some(()),
    );
    let status = agent.status();
    assert_eq!(status["pending_restart"], serde_json::json!([]), "{status}");
    assert_eq!(agent.health_code(), Some(200));
    assert!(agent.is_running(), "the agent stopped");
}

#[test]
fn a_cron_that_never_fires_is_refused_at_load_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pgplatform.toml");
    let api = Ports::pick().api;
    fs::write(
        &path,
        format!(
            "data_dir = \"data\"\n[api]\nlisten = \"127.0.0.1:{api}\"\n\
             [backup]\ndrill_schedule = \"0 4 30 2 *\"\n"
        ),
    )
    .unwrap();
    let out = run(
        pgplatform().arg("--config").arg(&path).arg("up"),
        Duration::from_secs(30),
    );
    assert!(!out.status.success(), "up accepted a cron that never fires");
    let stderr = stderr_of(&out);
    assert!(
        stderr.contains("backup.drill_schedule") && stderr.contains("never fires"),
        "{stderr}"
    );
    assert!(!dir.path().join("data").exists(), "up created the data dir");
}

#[test]
fn the_reload_command_applies_the_file_and_says_what_changed_and_a_bad_file_changes_nothing() {
    let agent = TestAgent::start();
    let unchanged = agent.cli_json(&["reload", "--json"]);
    assert_eq!(
        unchanged,
        serde_json::json!({"applied_live": [], "pending_restart": []})
    );

    edit_config(
        &agent,
        &[
            ("status.connections_warn_percent", "1"),
            ("api.max_connections", "77"),
        ],
    );
    let reloaded = agent.cli_json(&["reload", "--json"]);
    assert_eq!(
        reloaded,
        serde_json::json!({"applied_live": ["status"], "pending_restart": ["api.max_connections"]})
    );
    let status = agent.status();
    assert!(
        warnings(&status)
            .iter()
            .any(|w| w.starts_with("connections at")),
        "the new threshold did not reach status: {status}"
    );

    // A file with an error: the agent refuses it naming the key, and the running
    // configuration stays as it was (threshold kept, nothing new pending). The CLI
    // reads the file too (to find the agent) and refuses it first; a valid copy lets the
    // request reach the agent.
    let valid_copy = agent.dir().join("valid-copy.toml");
    fs::copy(agent.config_path(), &valid_copy).unwrap();
    edit_config(
        &agent,
        &[
            ("status.connections_warn_percent", "250"),
            ("postgres.stop_timeout_seconds", "17"),
        ],
    );
    let local = agent.cli_err(&["reload"]);
    assert!(local.contains("status.connections_warn_percent"), "{local}");
    let out = run(
        pgplatform()
            .arg("--config")
            .arg(&valid_copy)
            .args(["reload", "--json"]),
        Duration::from_secs(60),
    );
    let refused = stderr_of(&out);
    assert!(!out.status.success(), "the agent accepted a bad file");
    assert!(
        refused.contains("not reloaded") && refused.contains("status.connections_warn_percent"),
        "{refused}"
    );
    let status = agent.status();
    assert_eq!(
        status["pending_restart"],
        serde_json::json!(["api.max_connections"]),
        "{status}"
    );
    assert!(
        warnings(&status)
            .iter()
            .any(|w| w.starts_with("connections at")),
        "a refused reload changed the threshold: {status}"
    );
    let text = agent.cli_ok(&["reload", "--help"]);
    assert!(text.contains("wait for a restart"), "{text}");
}
