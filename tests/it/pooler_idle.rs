//! Idle clients, which rest in the pooler's lounges rather than in a task of their own:
//! `client_idle_timeout` ends clients idle outside a transaction (fresh ones, and ones
//! that rested after queries) but not busy ones or ones inside a transaction; KILL ends
//! every client of a database at once — resting, inside a transaction (rolled back) or
//! waiting for a server connection — leaves other databases alone, and RESUME lets new
//! clients in; SHOW CLIENTS and SHOW POOLS forget every client that ended.

use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use tokio_postgres::{Client, Config, NoTls};

use crate::support::pooler::{
    connect, console, exec, one, runtime, sqlstate, table, within, DEADLINE,
};
use crate::support::TestAgent;

/// `client_idle_timeout` in the first test: longer than the lounges' once-a-second call,
/// so that an idle client has left its task for a lounge before it times out.
const IDLE_TIMEOUT: Duration = Duration::from_secs(2);

/// An idle client must not be ended sooner than this (the timeout, less measuring slack).
const EARLIEST: Duration = Duration::from_millis(1500);

/// How much later than its timeout (or than KILL) a client may be ended.
const SLACK: Duration = Duration::from_secs(3);

/// A busy client queries this often: less than the timeout, more than the lounges'
/// once-a-second call, so that it rests in a lounge between queries.
const BUSY_GAP: Duration = Duration::from_millis(1200);

/// Idle clients move from their task to a lounge at the lounges' next once-a-second call.
const LOUNGE_PICKUP: Duration = Duration::from_millis(2500);

/// A client whose connection the test watches: `ended` finishes when the pooler closes
/// it, with the FATAL error the pooler sent, if any.
struct Watched {
    client: Client,
    ended: JoinHandle<Result<(), tokio_postgres::Error>>,
    name: &'static str,
}

/// Logs in to `url` with `application_name` = `name` (how SHOW CLIENTS tells clients apart).
async fn watched(url: &str, name: &'static str) -> Watched {
    let mut config: Config = url.parse().unwrap();
    config.application_name(name);
    let (client, connection) = within(DEADLINE, "tokio-postgres login", config.connect(NoTls))
        .await
        .unwrap_or_else(|e| panic!("login as {name}: {e:?}"));
    Watched {
        client,
        ended: tokio::spawn(connection),
        name,
    }
}

impl Watched {
    /// Waits up to `limit` for the pooler to close the connection; returns the error the
    /// connection ended with, and checks that the client can no longer query.
    async fn closed_within(&mut self, limit: Duration, why: &str) -> tokio_postgres::Error {
        let name = self.name;
        let ended = tokio::time::timeout(limit, &mut self.ended)
            .await
            .unwrap_or_else(|_| panic!("{name}: still connected {limit:?} after {why}"))
            .unwrap();
        let error = match ended {
            Err(e) => e,
            Ok(()) => panic!("{name}: the connection ended without an error"),
        };
        assert!(self.client.is_closed(), "{name}: closed but not marked so");
        let next = self.client.simple_query("select 'after the end'").await;
        assert!(next.is_err(), "{name}: a query ran after the end: {next:?}");
        error
    }

    /// Waits for client_idle_timeout to end the client, idle since `idle_since` (after
    /// `why`), and checks it was told so, and not too early.
    async fn times_out(&mut self, idle_since: Instant, why: &str) {
        let error = self.closed_within(IDLE_TIMEOUT + SLACK, why).await;
        assert_idle_timeout(&error, idle_since.elapsed(), self.name);
    }

    fn assert_connected(&self, why: &str) {
        assert!(
            !self.ended.is_finished() && !self.client.is_closed(),
            "{}: disconnected {why}",
            self.name
        );
    }
}

/// The pooler's FATAL error in `error`, or a failed test if it closed without one.
fn fatal_of<'a>(error: &'a tokio_postgres::Error, who: &str) -> &'a tokio_postgres::error::DbError {
    let db = error
        .as_db_error()
        .unwrap_or_else(|| panic!("{who}: closed without an error message: {error:?}"));
    assert_eq!(db.severity(), "FATAL", "{who}: {db:?}");
    db
}

/// `error` is PgBouncer's client_idle_timeout (08P01), after the client was idle `idle_for`.
fn assert_idle_timeout(error: &tokio_postgres::Error, idle_for: Duration, who: &str) {
    let db = fatal_of(error, who);
    assert_eq!(db.message(), "client_idle_timeout", "{who}: {db:?}");
    assert_eq!(sqlstate(error), "08P01", "{who}: {db:?}");
    assert!(
        idle_for >= EARLIEST,
        "{who}: ended after only {idle_for:?} idle, with client_idle_timeout = {IDLE_TIMEOUT:?}"
    );
}

/// `error` is the admin shutdown error KILL sends (57P01).
fn assert_killed(error: &tokio_postgres::Error, who: &str) {
    let db = fatal_of(error, who);
    assert_eq!(sqlstate(error), "57P01", "{who}: {db:?}");
    assert!(
        db.message().contains("administrator command"),
        "{who}: {db:?}"
    );
}

/// What the console says about `database`: the application names SHOW CLIENTS lists
/// (sorted), and SHOW POOLS' cl_active summed over the database's pools.
async fn listed(console: &Client, database: &str) -> (Vec<String>, i64) {
    let clients = table(console, "SHOW CLIENTS").await.unwrap();
    let mut names: Vec<String> = clients
        .rows_where("database", database)
        .into_iter()
        .map(|row| clients.get(row, "application_name").to_owned())
        .collect();
    names.sort();
    (names, pools_sum(console, database, "cl_active").await)
}

/// SHOW POOLS' `column` summed over `database`'s pools.
async fn pools_sum(console: &Client, database: &str, column: &str) -> i64 {
    let pools = table(console, "SHOW POOLS").await.unwrap();
    pools
        .rows_where("database", database)
        .into_iter()
        .map(|row| pools.get(row, column).parse::<i64>().unwrap())
        .sum()
}

/// Polls SHOW POOLS until `database`'s pools have `waiting` clients in cl_waiting.
async fn wait_waiting(console: &Client, database: &str, waiting: i64) {
    let deadline = Instant::now() + SLACK;
    loop {
        let shown = pools_sum(console, database, "cl_waiting").await;
        if shown == waiting {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{database}: SHOW POOLS cl_waiting = {shown} after {SLACK:?}, want {waiting}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls `listed` until it shows `names` and `active`, failing after `limit` with what
/// it last showed.
async fn wait_listed(
    console: &Client,
    database: &str,
    names: &[&str],
    active: i64,
    limit: Duration,
) {
    let deadline = Instant::now() + limit;
    loop {
        let shown = listed(console, database).await;
        if shown.0 == names && shown.1 == active {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{database}: after {limit:?}, SHOW CLIENTS lists {:?} and SHOW POOLS cl_active = {}; \
             want {names:?} and {active}",
            shown.0,
            shown.1
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn client_idle_timeout_ends_idle_clients_only_and_unlists_them() {
    let agent = TestAgent::start_with_shop("[pooler]\nclient_idle_timeout = 2\n");
    let url = agent.tenant_url("shop");
    runtime().block_on(async {
        let setup = connect(&url).await;
        exec(&setup, "create table idle_t (id int)").await;
        drop(setup);
        tokio::join!(
            a_new_client_that_never_queries_times_out(&url),
            a_client_idle_after_queries_times_out(&url),
            a_client_querying_more_often_stays(&url),
            a_client_inside_a_transaction_is_not_idle(&url),
        );
        timed_out_clients_leave_show_clients_and_pools(&agent, &url).await;
    });
}

async fn a_new_client_that_never_queries_times_out(url: &str) {
    let mut fresh = watched(url, "never-queried").await;
    let logged_in = Instant::now();
    fresh.times_out(logged_in, "client_idle_timeout").await;
}

async fn a_client_idle_after_queries_times_out(url: &str) {
    let mut used = watched(url, "queried-then-idle").await;
    for i in 0..3 {
        assert_eq!(
            one(&used.client, &format!("select {i}")).await,
            i.to_string()
        );
    }
    exec(&used.client, "begin; insert into idle_t values (0); commit").await;
    // Idle from here: in its task until the lounges' next call (within a second), then
    // in a lounge, whose timer ends it.
    let last_reply = Instant::now();
    used.times_out(last_reply, "client_idle_timeout").await;
}

async fn a_client_querying_more_often_stays(url: &str) {
    let mut busy = watched(url, "busy").await;
    let started = Instant::now();
    for i in 0..6 {
        // Each pause sends it to a lounge; each query wakes it with a new deadline. Time
        // is under test: it queries more often than the timeout, never idle long enough.
        tokio::time::sleep(BUSY_GAP).await;
        let sql = format!("select 'query {i}'");
        match table(&busy.client, &sql).await {
            Ok(t) => assert_eq!(t.rows[0][0].as_deref(), Some(&*format!("query {i}"))),
            Err(e) => panic!(
                "busy: {sql} failed {:?} after login, querying every {BUSY_GAP:?} with \
                 client_idle_timeout = {IDLE_TIMEOUT:?}: {e:?}",
                started.elapsed()
            ),
        }
    }
    assert!(started.elapsed() > IDLE_TIMEOUT * 3);
    busy.assert_connected("while it queried");
    // Once it stops, the timeout counts from its last query.
    let last_reply = Instant::now();
    busy.times_out(last_reply, "its last query").await;
}

/// PgBouncer applies client_idle_timeout only to clients without a server; inside a
/// transaction only idle_transaction_timeout (unset here) could end the client.
async fn a_client_inside_a_transaction_is_not_idle(url: &str) {
    let mut txn = watched(url, "in-transaction").await;
    exec(&txn.client, "begin; insert into idle_t values (1)").await;
    // Time is under test: twice the idle timeout inside a transaction.
    tokio::time::sleep(IDLE_TIMEOUT * 2).await;
    txn.assert_connected("inside its transaction, by client_idle_timeout");
    assert_eq!(
        one(&txn.client, "select count(*) from idle_t where id = 1").await,
        "1",
        "the transaction was not kept"
    );
    exec(&txn.client, "commit").await;
    // After the transaction it is idle, and the timeout counts from the COMMIT.
    let committed = Instant::now();
    txn.times_out(committed, "its COMMIT").await;
}

async fn timed_out_clients_leave_show_clients_and_pools(agent: &TestAgent, url: &str) {
    let console = console(agent).await;
    // Everyone from the first part has gone.
    wait_listed(&console, "shop", &[], 0, SLACK).await;
    let mut clients = Vec::new();
    for name in ["listed-0", "listed-1", "listed-2"] {
        clients.push(watched(url, name).await);
    }
    assert_eq!(one(&clients[0].client, "select 'listed'").await, "listed");
    let shown = listed(&console, "shop").await;
    assert_eq!(
        shown,
        (
            vec!["listed-0".into(), "listed-1".into(), "listed-2".into()],
            3
        ),
        "SHOW CLIENTS' application names and SHOW POOLS cl_active with three clients"
    );
    for client in &mut clients {
        let error = client
            .closed_within(IDLE_TIMEOUT + SLACK, "client_idle_timeout")
            .await;
        let db = fatal_of(&error, client.name);
        assert_eq!(db.message(), "client_idle_timeout", "{}", client.name);
    }
    wait_listed(&console, "shop", &[], 0, SLACK).await;
}

#[test]
fn kill_ends_every_client_of_the_database_at_once_and_resume_reopens() {
    // Two server connections for shop: two open transactions make the next client wait.
    let agent = TestAgent::start_with("[pooler.databases.shop]\npool_size = 2\n");
    agent.cli_ok(&["tenant", "create", "shop", "--with-readonly"]);
    agent.cli_ok(&["tenant", "create", "crm"]);
    let shop = agent.tenant_url("shop");
    let shop_readonly = agent.readonly_url("shop");
    let crm = agent.tenant_url("crm");
    runtime().block_on(async {
        let mut fresh = watched(&shop, "kill-fresh").await;
        let mut used = watched(&shop, "kill-used").await;
        exec(&used.client, "create table kill_t (id int)").await;
        // The read-only role: a second pool of the same database.
        let mut reader = watched(&shop_readonly, "kill-readonly").await;
        assert_eq!(one(&reader.client, "select 'reader'").await, "reader");
        let mut txn = watched(&shop, "kill-transaction").await;
        exec(&txn.client, "begin; insert into kill_t values (1)").await;
        let other = watched(&crm, "kill-other-db").await;
        assert_eq!(one(&other.client, "select 'crm'").await, "crm");
        let mut recent = watched(&shop, "kill-recent").await;

        // The idle ones leave their tasks for a lounge. Nothing shows where a client
        // rests, and the lounges collect on a once-a-second timer: a wait for that time.
        tokio::time::sleep(LOUNGE_PICKUP).await;
        // This one is idle in its task (or just moved): KILL must reach it too.
        assert_eq!(one(&recent.client, "select 'recent'").await, "recent");
        // A second open transaction takes shop's other server connection ...
        let mut txn2 = watched(&shop, "kill-transaction-2").await;
        exec(&txn2.client, "begin; select 1").await;
        // ... so this client's query waits for one.
        let waiter = watched(&shop, "kill-waiting").await;
        let waiting_query = tokio::spawn(async move {
            let result = waiter.client.simple_query("select 'waited'").await;
            (waiter, result)
        });
        let console = console(&agent).await;
        let all_shop = [
            "kill-fresh",
            "kill-readonly",
            "kill-recent",
            "kill-transaction",
            "kill-transaction-2",
            "kill-used",
            "kill-waiting",
        ];
        wait_waiting(&console, "shop", 1).await;
        wait_listed(&console, "shop", &all_shop, 6, Duration::ZERO).await;
        wait_listed(&console, "crm", &["kill-other-db"], 1, Duration::ZERO).await;

        table(&console, "KILL shop").await.unwrap();
        let killed_at = Instant::now();
        // Resting, idle-in-task and in-transaction clients alike, without their saying
        // anything (PgBouncer's KILL drops them at once too).
        for client in [
            &mut fresh,
            &mut used,
            &mut reader,
            &mut recent,
            &mut txn,
            &mut txn2,
        ] {
            let error = client.closed_within(SLACK, "KILL shop").await;
            assert_killed(&error, client.name);
        }
        // The waiting client's query never ran: it gets the KILL error, and the connection
        // ends.
        let (mut waiter, waited) = within(
            SLACK,
            "the waiting client's query after KILL",
            waiting_query,
        )
        .await
        .unwrap();
        let error = waited.expect_err("a query waiting for a server ran after KILL");
        if error.as_db_error().is_some() {
            assert_killed(&error, waiter.name);
            let ended = tokio::time::timeout(SLACK, &mut waiter.ended).await;
            assert!(ended.is_ok(), "kill-waiting: still connected after KILL");
        } else {
            let error = waiter.closed_within(SLACK, "KILL shop").await;
            assert_killed(&error, waiter.name);
        }
        println!("KILL ended shop's clients within {:?}", killed_at.elapsed());

        // Another database is not touched.
        other.assert_connected("by KILL of another database");
        assert_eq!(
            one(&other.client, "select 'crm after kill'").await,
            "crm after kill"
        );

        wait_listed(&console, "shop", &[], 0, SLACK).await;
        wait_listed(&console, "crm", &["kill-other-db"], 1, Duration::ZERO).await;

        // A new client of the killed database waits for RESUME.
        let url = shop.clone();
        let waiting = tokio::spawn(async move {
            let client = connect(&url).await;
            one(&client, "select count(*) from kill_t").await
        });
        wait_waiting(&console, "shop", 1).await;
        assert!(
            !waiting.is_finished(),
            "a new client of a killed database was served (or failed) before RESUME"
        );
        table(&console, "RESUME shop").await.unwrap();
        let count = within(SLACK, "a query held until RESUME", waiting)
            .await
            .unwrap();
        assert_eq!(count, "0", "the killed transaction's row was rolled back");
        let reader = connect(&shop_readonly).await;
        assert_eq!(one(&reader, "select 'reader again'").await, "reader again");
    });
}
