//! PgBouncer's timeouts through the pooler against a real PostgreSQL: `query_timeout` on
//! a `pg_sleep` (the client is told `query timeout` and the backend stops), and
//! `transaction_timeout` (1.25) on a transaction kept busy, so that it is not
//! `idle_transaction_timeout`; `server_fast_close` in session mode during PAUSE; and
//! `ignore_startup_parameters` for a setting given in `options`.

use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use tokio_postgres::{Client, Config, NoTls};

use crate::support::pooler::{
    blocking, connect, console, message, one, runtime, sqlstate, table, within,
};
use crate::support::psql::query;
use crate::support::{wait_for, TestAgent};

const SETTINGS: &str = "[pooler]\nquery_timeout = 2\ntransaction_timeout = 4\n\
     server_fast_close = true\nignore_startup_parameters = [\"search_path\"]\n\
     [pooler.databases.crm]\npool_mode = \"session\"\n";

#[test]
fn query_and_transaction_timeouts_fast_close_and_ignored_startup_parameters() {
    let agent = TestAgent::start_with_shop(SETTINGS);
    agent.cli_ok(&["tenant", "create", "crm"]);
    runtime().block_on(async {
        query_timeout_ends_a_pg_sleep_and_stops_its_backend(&agent).await;
        transaction_timeout_ends_a_busy_transaction_and_rolls_it_back(&agent).await;
        server_fast_close_ends_idle_sessions_so_pause_returns(&agent).await;
    });
    ignored_startup_parameters_are_dropped(&agent);
}

/// A client whose connection task's end (and its error) the test can watch.
async fn watched(url: &str) -> (Client, JoinHandle<Result<(), tokio_postgres::Error>>) {
    let config: Config = url.parse().unwrap();
    let (client, connection) = within(
        Duration::from_secs(30),
        "tokio-postgres login",
        config.connect(NoTls),
    )
    .await
    .unwrap_or_else(|e| panic!("login to {url}: {e:?}"));
    (client, tokio::spawn(connection))
}

/// How many backends of `user` run a statement like `pattern`, seen by the superuser.
fn backends_running(agent: &TestAgent, user: &str, pattern: &str) -> usize {
    let sql = format!(
        "select count(*) from pg_stat_activity where usename = '{user}' \
         and state = 'active' and query like '{pattern}'"
    );
    agent.admin_psql_in("postgres", &sql).parse().unwrap()
}

async fn query_timeout_ends_a_pg_sleep_and_stops_its_backend(agent: &TestAgent) {
    let url = agent.tenant_url("shop");
    let client = connect(&url).await;
    let started = Instant::now();
    let err = within(
        Duration::from_secs(20),
        "a pg_sleep(30) under query_timeout = 2",
        client.simple_query("select pg_sleep(30) /* timed */"),
    )
    .await
    .expect_err("pg_sleep(30) outlived query_timeout = 2");
    let took = started.elapsed();
    assert_eq!(
        (sqlstate(&err), message(&err)),
        ("08P01".to_owned(), "query timeout".to_owned()),
        "{err:?}"
    );
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_secs(8),
        "query_timeout = 2 ended the query after {took:?}"
    );
    // The query was cancelled on PostgreSQL, not left sleeping on a closed connection.
    blocking(|| {
        wait_for(
            Duration::from_secs(5),
            "the timed-out pg_sleep's backend to stop",
            || (backends_running(agent, "shop", "%pg_sleep(30) /* timed */%") == 0).then_some(()),
        )
    });
    // Shorter queries are untouched, and the pool serves the next client.
    let next = connect(&url).await;
    assert_eq!(
        one(&next, "select pg_sleep(1)::text || 'slept'").await,
        "slept"
    );
}

async fn transaction_timeout_ends_a_busy_transaction_and_rolls_it_back(agent: &TestAgent) {
    let url = agent.tenant_url("shop");
    let setup = connect(&url).await;
    setup
        .batch_execute("create table tx_timeout (n int)")
        .await
        .unwrap();
    let (client, connection) = watched(&url).await;
    client
        .batch_execute("begin; insert into tx_timeout values (1)")
        .await
        .unwrap();
    let began = Instant::now();
    // Busy all along (a statement every 300 ms), so idle_transaction_timeout, which is
    // off here anyway, could not be what ends it.
    let failure = loop {
        if let Err(e) = client.simple_query("select 1").await {
            break e;
        }
        assert!(
            began.elapsed() < Duration::from_secs(15),
            "a transaction stayed open 15 s under transaction_timeout = 4"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let took = began.elapsed();
    assert!(
        took >= Duration::from_millis(3500) && took < Duration::from_secs(10),
        "transaction_timeout = 4 ended the transaction after {took:?}: {failure:?}"
    );
    let ended = within(Duration::from_secs(10), "the connection to end", connection)
        .await
        .unwrap();
    let err = ended.expect_err("the pooler's FATAL error");
    assert_eq!(
        (sqlstate(&err), message(&err)),
        ("08P01".to_owned(), "transaction timeout".to_owned()),
        "{err:?}"
    );
    assert_eq!(
        one(&setup, "select count(*) from tx_timeout").await,
        "0",
        "the timed-out transaction was rolled back"
    );
    // Transactions that end in time, and time outside transactions, are not limited.
    client_outside_transactions_is_not_limited(&url).await;
}

async fn client_outside_transactions_is_not_limited(url: &str) {
    let client = connect(url).await;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(5) {
        client
            .batch_execute("begin; select 1; commit")
            .await
            .unwrap_or_else(|e| panic!("a short transaction after {:?}: {e:?}", started.elapsed()));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn server_fast_close_ends_idle_sessions_so_pause_returns(agent: &TestAgent) {
    let url = agent.tenant_url("crm");
    let setup = connect(&url).await;
    setup
        .batch_execute("create table fast (n int)")
        .await
        .unwrap();
    drop(setup);
    let (idle, idle_connection) = watched(&url).await;
    assert_eq!(one(&idle, "select 'idle session'").await, "idle session");
    let (busy, busy_connection) = watched(&url).await;
    busy.batch_execute("begin; insert into fast values (1)")
        .await
        .unwrap();

    let console = console(agent).await;
    table(&console, "RECONNECT crm").await.unwrap();
    let pause = tokio::spawn(async move {
        let paused = table(&console, "PAUSE crm").await.map(|_| Instant::now());
        (console, paused)
    });
    // The idle session's connection is marked to close: it is closed, and its client
    // told, within the pooler's once-a-second look.
    let ended = within(
        Duration::from_secs(10),
        "the idle session to be closed",
        idle_connection,
    )
    .await
    .unwrap();
    let err = ended.expect_err("the pooler's FATAL error");
    assert_eq!(
        (sqlstate(&err), message(&err)),
        (
            "08P01".to_owned(),
            "database configuration changed".to_owned()
        ),
        "{err:?}"
    );
    // The session inside a transaction is not interrupted; PAUSE waits for it.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !pause.is_finished(),
        "PAUSE returned while a transaction ran"
    );
    assert!(
        !busy_connection.is_finished(),
        "a running transaction was cut"
    );
    busy.batch_execute("commit").await.unwrap();
    let committed = Instant::now();
    let (console, paused) = within(Duration::from_secs(10), "PAUSE to return", pause)
        .await
        .unwrap();
    let paused_at = paused.expect("PAUSE");
    assert!(paused_at >= committed, "PAUSE returned before the commit");
    let ended = within(
        Duration::from_secs(10),
        "the committed session to be closed",
        busy_connection,
    )
    .await
    .unwrap();
    assert!(ended.is_err(), "the session closed after its transaction");
    table(&console, "RESUME crm").await.unwrap();
    let after = connect(&url).await;
    assert_eq!(one(&after, "select count(*) from fast").await, "1");
}

fn ignored_startup_parameters_are_dropped(agent: &TestAgent) {
    let url = agent.tenant_url("shop");
    let default_path = query(&url, "show search_path");
    // search_path is in ignore_startup_parameters: accepted and dropped; statement_timeout
    // is not: applied, as a setting given at startup.
    let options = "options=-c%20search_path%3Delsewhere%20-c%20statement_timeout%3D1234";
    let with = format!("{url}&{options}");
    assert_eq!(query(&with, "show search_path"), default_path);
    assert_eq!(query(&with, "show statement_timeout"), "1234ms");
    // PgBouncer's refusal of options that are not -c name=value.
    let bad = format!("{url}&options=-d%205");
    let refused = crate::support::psql::query_fails(&bad, "select 1");
    assert!(
        refused.contains("unsupported options startup parameter"),
        "{refused}"
    );
}
