//! Cancel requests through the pooler: a client's cancel stops its own running query (from
//! tokio-postgres's cancel token and from psql on Ctrl-C) and never another client's.

use std::process::Stdio;
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio_postgres::NoTls;

use crate::support::pooler::{
    blocking, connect, one, raw_exchange, runtime, sqlstate, within, DEADLINE,
};
use crate::support::psql::psql_command;
use crate::support::{wait_for, TestAgent};

#[test]
fn a_cancel_stops_only_the_cancelling_clients_query() {
    let agent = TestAgent::start_with_shop("[pooler]\ndefault_pool_size = 2\n");
    let url = agent.tenant_url("shop");
    runtime().block_on(cancel_token_reaches_its_own_query(&agent, &url));
    psql_ctrl_c_cancels_through_the_pooler(&agent, &url);
}

/// How many of shop's backends are running `pg_sleep` now.
fn sleeping(agent: &TestAgent) -> u32 {
    agent
        .admin_psql(
            "select count(*) from pg_stat_activity where usename = 'shop' \
             and state = 'active' and query like '%pg_sleep%'",
        )
        .parse()
        .unwrap()
}

fn wait_sleeping(agent: &TestAgent, n: u32) {
    wait_for(Duration::from_secs(30), "queries running pg_sleep", || {
        (sleeping(agent) >= n).then_some(())
    });
}

async fn cancel_token_reaches_its_own_query(agent: &TestAgent, url: &str) {
    let a = connect(url).await;
    let b = connect(url).await;
    let token = a.cancel_token();
    let long = tokio::spawn(async move {
        let result = a.batch_execute("select pg_sleep(30)").await;
        (a, result, Instant::now())
    });
    let short = tokio::spawn(async move {
        let started = Instant::now();
        let result = b
            .query_one("select pg_sleep(3)::text, 'survived'", &[])
            .await;
        (result, started.elapsed())
    });
    blocking(|| wait_sleeping(agent, 2));

    let sent = Instant::now();
    within(DEADLINE, "cancel request", token.cancel_query(NoTls))
        .await
        .unwrap();
    let (a, result, ended) = within(Duration::from_secs(10), "the cancelled query", long)
        .await
        .unwrap();
    let error = result.expect_err("pg_sleep(30) was not cancelled");
    assert_eq!(sqlstate(&error), "57014", "{error:?}");
    assert!(
        ended.duration_since(sent) < Duration::from_secs(5),
        "the cancel took {:?}",
        ended.duration_since(sent)
    );
    let (result, took) = within(DEADLINE, "the other client's query", short)
        .await
        .unwrap();
    let row = result.unwrap_or_else(|e| panic!("the other client's pg_sleep(3) failed: {e:?}"));
    assert_eq!(row.get::<_, String>(1), "survived");
    assert!(
        took >= Duration::from_secs(3),
        "pg_sleep(3) ended after {took:?}"
    );
    // The cancelled client goes on, outside any transaction.
    assert_eq!(one(&a, "select 'still here'").await, "still here");

    // A's key while A is idle, and a key nobody has, cancel nothing: the server connection
    // A used last now runs another client's query.
    let c = connect(url).await;
    let other = tokio::spawn(async move {
        let result = c
            .query_one("select pg_sleep(2)::text, 'untouched'", &[])
            .await;
        (c, result)
    });
    blocking(|| wait_sleeping(agent, 1));
    within(DEADLINE, "stale cancel", token.cancel_query(NoTls))
        .await
        .unwrap();
    let mut bogus = vec![0, 0, 0, 16, 0x04, 0xd2, 0x16, 0x2e];
    bogus.extend_from_slice(&[0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0]);
    let port = agent.pooler_port();
    let reply = blocking(|| raw_exchange(port, &bogus, Duration::from_secs(3)));
    assert!(reply.closed, "a cancel request's connection stayed open");
    let (_c, result) = within(DEADLINE, "the untouched query", other)
        .await
        .unwrap();
    let row =
        result.unwrap_or_else(|e| panic!("a stale or bogus cancel hit another client: {e:?}"));
    assert_eq!(row.get::<_, String>(1), "untouched");
}

fn psql_ctrl_c_cancels_through_the_pooler(agent: &TestAgent, url: &str) {
    let mut cmd = psql_command();
    cmd.args(["-d", url, "-c", "select pg_sleep(30)"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut psql = cmd.spawn().unwrap();
    let pid = Pid::from_raw(i32::try_from(psql.id()).unwrap());
    wait_sleeping(agent, 1);
    // Ctrl-C: psql sends a CancelRequest with the key the pooler gave it.
    kill(pid, Signal::SIGINT).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = psql.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = psql.kill();
            let _ = psql.wait();
            panic!("psql's query was not cancelled within 10 s of SIGINT");
        }
        thread::sleep(Duration::from_millis(50));
    };
    let output = psql.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!status.success(), "psql exited with {status}");
    assert!(
        stderr.contains("canceling statement due to user request"),
        "psql stderr: {stderr}"
    );
    assert_eq!(sleeping(agent), 0, "the cancelled pg_sleep still runs");
}
