//! Clients waiting for a server connection: they wait in line (SHOW POOLS' cl_waiting and
//! maxwait), one that waited past `reserve_pool_timeout` gets a reserve-pool connection,
//! and one that waited past `query_wait_timeout` gets PgBouncer's error while everyone
//! else carries on.

use std::time::{Duration, Instant};

use tokio_postgres::Client;

use crate::support::pooler::{connect, console, exec, one, runtime, sqlstate, table};
use crate::support::TestAgent;

/// How late past a timeout the pooler may act (it checks waits ten times a second; the
/// rest is slack for a loaded machine).
const SLACK: Duration = Duration::from_millis(1500);

#[test]
fn waiting_clients_get_the_reserve_pool_then_query_wait_timeout() {
    let agent = TestAgent::start_with_shop(
        "[pooler]\ndefault_pool_size = 1\nreserve_pool_size = 1\nreserve_pool_timeout = 0.5\n\
         query_wait_timeout = 2\n",
    );
    let url = agent.tenant_url("shop");
    runtime().block_on(async {
        let console = console(&agent).await;
        // The pool's one connection is held by an open transaction.
        let holder = connect(&url).await;
        exec(&holder, "BEGIN; SELECT 1").await;

        // The next client waits for reserve_pool_timeout, then gets the reserve
        // connection, and keeps it in a transaction too.
        let reserved = connect(&url).await;
        let started = Instant::now();
        exec(&reserved, "BEGIN; SELECT 2").await;
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(450) && waited < Duration::from_millis(500) + SLACK,
            "reserve_pool_timeout = 0.5: the second client got a connection after {waited:?}"
        );

        // The third finds no connection and no reserve: it waits in line, visible in
        // SHOW POOLS, and is ended after query_wait_timeout.
        let late = connect(&url).await;
        let started = Instant::now();
        let (result, seen) = tokio::join!(late.simple_query("SELECT 3"), watch_line(&console));
        let waited = started.elapsed();
        let error = match result {
            Ok(rows) => panic!(
                "a client past query_wait_timeout got {} messages",
                rows.len()
            ),
            Err(e) => e,
        };
        assert_eq!(sqlstate(&error), "08P01", "query_wait_timeout: {error:?}");
        let message = error.as_db_error().map(|e| e.message().to_owned());
        assert_eq!(message.as_deref(), Some("query_wait_timeout"), "{error:?}");
        assert!(
            waited >= Duration::from_millis(1900) && waited < Duration::from_secs(2) + SLACK,
            "query_wait_timeout = 2: the third client was ended after {waited:?}"
        );
        let (waiting, maxwait) = seen;
        assert_eq!(
            waiting, 1,
            "SHOW POOLS cl_waiting while the third client waited"
        );
        assert!(
            maxwait >= 1,
            "SHOW POOLS maxwait stayed at {maxwait} s during a 2 s wait"
        );

        // The two in transactions are unaffected and, once they commit, a new client
        // is served at once and nobody waits any more.
        assert_eq!(one(&holder, "SELECT 'holder'").await, "holder");
        assert_eq!(one(&reserved, "SELECT 'reserved'").await, "reserved");
        exec(&holder, "COMMIT").await;
        exec(&reserved, "COMMIT").await;
        let next = connect(&url).await;
        let started = Instant::now();
        assert_eq!(one(&next, "SELECT 'next'").await, "next");
        assert!(
            started.elapsed() < Duration::from_millis(400),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(pool_column(&console, "cl_waiting").await, 0);
    });
}

/// The most SHOW POOLS showed in cl_waiting and maxwait (seconds) for shop over the
/// next 1.8 seconds.
async fn watch_line(console: &Client) -> (i64, i64) {
    let until = Instant::now() + Duration::from_millis(1800);
    let (mut waiting, mut maxwait) = (0, 0);
    while Instant::now() < until {
        waiting = waiting.max(pool_column(console, "cl_waiting").await);
        maxwait = maxwait.max(pool_column(console, "maxwait").await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (waiting, maxwait)
}

async fn pool_column(console: &Client, column: &str) -> i64 {
    let pools = table(console, "SHOW POOLS").await.unwrap();
    pools
        .rows_where("database", "shop")
        .into_iter()
        .map(|row| pools.get(row, column).parse::<i64>().unwrap())
        .sum()
}
