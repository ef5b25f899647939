//! Runbook "something crashed": PostgreSQL killed with SIGKILL is restarted by the agent, and an agent
//! killed with SIGKILL can be started again; committed rows survive both.

use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::support::psql::query;
use crate::support::{process_alive, wait_for, TestAgent};

/// Creates tenant `shop` with 100 committed rows in `orders`; returns its database URL.
fn shop_with_orders(agent: &TestAgent) -> String {
    agent.cli_ok(&["tenant", "create", "shop"]);
    let url = agent.tenant_url("shop");
    query(&url, "create table orders (id int primary key)");
    query(&url, "insert into orders select generate_series(1, 100)");
    url
}

#[test]
fn postmaster_killed_with_sigkill_is_restarted_and_keeps_commits() {
    let agent = TestAgent::start();
    let url = shop_with_orders(&agent);
    let old = agent.postmaster_pid().unwrap();

    kill(Pid::from_raw(old), Signal::SIGKILL).unwrap();

    // The agent keeps answering (503 while PostgreSQL is down, or a stale 200 briefly), and comes
    // back to 200 with a new postmaster.
    let new = wait_for(
        Duration::from_secs(60),
        "a new postmaster with /health 200",
        || {
            let code = agent.health_code();
            assert!(
                matches!(code, Some(200 | 503)),
                "/health answered {code:?} while PostgreSQL restarted"
            );
            let pid = agent.postmaster_pid().filter(|&pid| pid != old)?;
            (code == Some(200)).then_some(pid)
        },
    );
    assert!(
        !process_alive(old),
        "the killed postmaster {old} is still there"
    );
    assert_eq!(query(&url, "select count(*) from orders"), "100");

    let status = agent.status();
    assert_eq!(status["postgres"]["pid"], new, "/status: {status}");
    let restarts = status["postgres"]["restarts"].as_u64();
    assert!(
        restarts.is_some_and(|n| n >= 1),
        "/status postgres.restarts: {status}"
    );
}

#[test]
fn agent_killed_with_sigkill_starts_again_with_commits_intact() {
    let mut agent = TestAgent::start();
    let url = shop_with_orders(&agent);
    let old = agent.postmaster_pid().unwrap();

    agent.kill9_agent();
    // The orphaned postmaster may still be running and holding the port; `up` must cope with it.
    agent.start_again();

    assert_eq!(query(&url, "select count(*) from orders"), "100");
    query(&url, "insert into orders values (101)");
    assert_eq!(query(&url, "select count(*) from orders"), "101");
    let tenants = agent.cli_json(&["tenant", "list", "--json"]);
    assert!(
        tenants
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t["name"] == "shop")),
        "tenant list: {tenants}"
    );

    let new = agent.postmaster_pid().unwrap();
    if new != old {
        assert!(
            !process_alive(old),
            "the orphaned postmaster {old} runs next to the new one {new}"
        );
    }
    assert_eq!(agent.status()["postgres"]["pid"], new);
}
