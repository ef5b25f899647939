//! Runbook "start and stop the platform": `up` initialises a cluster, serves the API, refuses a twin,
//! runs PostgreSQL unprivileged, logs JSON and stops cleanly on SIGTERM.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use nix::unistd::{Uid, User};
use reqwest::Method;
use serde_json::{json, Value};

use crate::support::{
    command, mode, process_alive, run, skip, stderr_of, stdout_of, wait_for, TestAgent,
};

#[test]
fn fresh_up_initialises_the_cluster_and_serves_the_api() {
    let agent = TestAgent::start();

    // `up` with no data dir ran initdb with the settings the platform promises.
    assert_eq!(agent.admin_psql("show data_checksums"), "on");
    assert_eq!(
        agent.admin_psql("show password_encryption"),
        "scram-sha-256"
    );
    assert_eq!(agent.admin_psql("show server_encoding"), "UTF8");
    let preload = agent.admin_psql("show shared_preload_libraries");
    assert!(
        preload
            .split(',')
            .any(|library| library.trim() == "pg_stat_statements"),
        "shared_preload_libraries = {preload:?}"
    );
    // [postgres.parameters] from the config file reach PostgreSQL.
    assert_eq!(agent.admin_psql("show shared_buffers"), "32MB");
    assert_eq!(agent.admin_psql("show port"), agent.pg_port().to_string());

    let (code, health) = agent.get("/health");
    assert_eq!(code, 200, "/health: {health}");
    assert_eq!(health["status"], "ok", "/health: {health}");

    let status = agent.status();
    let postmaster = agent
        .postmaster_pid()
        .expect("postmaster.pid exists while running");
    assert_eq!(status["postgres"]["pid"], postmaster, "/status: {status}");
    assert_eq!(
        status["postgres"]["port"],
        agent.pg_port(),
        "/status: {status}"
    );
    assert_eq!(status["postgres"]["restarts"], 0, "/status: {status}");
    assert_eq!(status["tenants"]["count"], 0, "/status: {status}");
    assert!(status["version"].is_string(), "/status: {status}");
    assert!(!status["postgres"]["state"].is_null(), "/status: {status}");

    admin_endpoints_need_the_token(&agent);
    logs_are_json_with_postgres_lines_marked(&agent);
    postgres_runs_as_the_postgres_user_when_agent_is_root(&agent);
}

fn admin_endpoints_need_the_token(agent: &TestAgent) {
    let token_file = agent.data_dir().join("run/admin_token");
    assert_eq!(mode(&token_file), 0o600, "{}", token_file.display());

    let body = json!({ "name": "sneaky" });
    let admin_requests = [
        (Method::GET, "/tenants", None),
        (Method::POST, "/tenants", Some(&body)),
        (Method::GET, "/tenants/sneaky", None),
        (Method::POST, "/tenants/sneaky/rotate", None),
        (Method::DELETE, "/tenants/sneaky", None),
    ];
    for (method, path, body) in admin_requests {
        for token in [None, Some("not-the-token")] {
            let (code, reply) = agent.api(method.clone(), path, token, body);
            assert_eq!(code, 401, "{method} {path} with token {token:?}: {reply}");
        }
    }
    assert_eq!(
        agent.admin_psql("select count(*) from pg_database where datname = 'sneaky'"),
        "0"
    );

    let (code, tenants) = agent.api(Method::GET, "/tenants", Some(&agent.admin_token()), None);
    assert_eq!(code, 200, "GET /tenants with the token: {tenants}");
}

fn logs_are_json_with_postgres_lines_marked(agent: &TestAgent) {
    // PostgreSQL's own lines ("database system is ready…") reach the agent's log asynchronously.
    wait_for(
        Duration::from_secs(10),
        "a log line with component postgres",
        || {
            agent
                .log_contents()
                .lines()
                .any(|line| {
                    let Ok(entry) = serde_json::from_str::<Value>(line) else {
                        return false;
                    };
                    entry["component"] == "postgres" || entry["fields"]["component"] == "postgres"
                })
                .then_some(())
        },
    );
    for line in agent
        .log_contents()
        .lines()
        .filter(|line| !line.trim().is_empty())
    {
        let entry: Result<Value, _> = serde_json::from_str(line);
        assert!(
            entry.is_ok_and(|e| e.is_object()),
            "--log-format json wrote a non-JSON line: {line}"
        );
    }
}

fn postgres_runs_as_the_postgres_user_when_agent_is_root(agent: &TestAgent) {
    if !Uid::effective().is_root() {
        skip("PostgreSQL runs as the invoking user when the agent is not root; owner check needs root");
        return;
    }
    let postgres = User::from_name("postgres")
        .unwrap()
        .expect("an OS user named postgres exists");
    let uid = postgres.uid.as_raw();

    let pid = agent.postmaster_pid().unwrap();
    let proc_status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uids: Vec<u32> = proc_status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .expect("a Uid: line")
        .split_whitespace()
        .map(|u| u.parse().unwrap())
        .collect();
    assert!(
        uids.iter().all(|&u| u == uid),
        "postmaster {pid} uids (real, effective, saved, fs) = {uids:?}, want {uid}"
    );
    assert_eq!(
        fs::metadata(agent.pgdata()).unwrap().uid(),
        uid,
        "owner of {}",
        agent.pgdata().display()
    );
}

#[test]
fn second_up_on_the_same_data_dir_says_already_running() {
    let mut agent = TestAgent::start();
    let postmaster = agent.postmaster_pid();

    let second = agent.cli(&["up"]);
    assert!(
        !second.status.success(),
        "second up exited with {}: {}",
        second.status,
        stdout_of(&second)
    );
    let stderr = stderr_of(&second);
    assert!(
        stderr.contains("already running"),
        "second up stderr: {stderr}"
    );

    // The first agent did not notice.
    assert!(agent.is_running(), "the first agent exited");
    assert_eq!(agent.health_code(), Some(200));
    assert_eq!(agent.postmaster_pid(), postmaster);
    assert_eq!(agent.admin_psql("select 1"), "1");
}

#[test]
fn sigterm_stops_postgres_cleanly_then_exits_zero() {
    let mut agent = TestAgent::start();
    let postmaster = agent
        .postmaster_pid()
        .expect("postmaster.pid exists while running");

    let status = agent.stop().expect("the agent was running");
    assert_eq!(
        status.code(),
        Some(0),
        "agent exit status on SIGTERM: {status}"
    );

    // PostgreSQL was stopped before the agent exited, and not by a crash.
    assert!(
        !process_alive(postmaster),
        "postmaster {postmaster} still runs after the agent exited"
    );
    let pid_file = agent.pgdata().join("postmaster.pid");
    assert!(!pid_file.exists(), "{} still exists", pid_file.display());
    let controldata = run(
        command(pg_controldata()).arg(agent.pgdata()),
        Duration::from_secs(30),
    );
    let controldata = stdout_of(&controldata);
    assert!(
        controldata
            .lines()
            .any(|l| l.starts_with("Database cluster state:") && l.ends_with("shut down")),
        "pg_controldata:\n{controldata}"
    );
}

/// `pg_controldata` of the PostgreSQL the agent uses by default (the newest under /usr/lib/postgresql).
fn pg_controldata() -> std::path::PathBuf {
    let mut installed: Vec<_> = fs::read_dir("/usr/lib/postgresql")
        .unwrap()
        .map(|e| e.unwrap().path().join("bin/pg_controldata"))
        .filter(|p| p.exists())
        .collect();
    installed.sort_by_key(|p| {
        let major = p
            .components()
            .nth(4)
            .map(|c| c.as_os_str().to_string_lossy().into_owned());
        major.and_then(|m| m.parse::<u32>().ok()).unwrap_or(0)
    });
    installed
        .pop()
        .expect("a PostgreSQL under /usr/lib/postgresql")
}
