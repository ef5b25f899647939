//! What goes wrong around the pooler: bad logins answered as PostgreSQL answers them, bad
//! startup packets, rotation while connected, killed server connections, and clients that
//! vanish mid-transaction — none of which may stop it serving or leave a dirty connection.

use std::process::Stdio;
use std::time::Duration;

use crate::support::pooler::{
    blocking, connect, exec, message, one, raw_exchange, runtime, sqlstate, startup_packet,
    try_connect, within, DEADLINE,
};
use crate::support::psql::psql_command;
use crate::support::{wait_for, TestAgent};

/// The SQLSTATE and message of a login that must fail.
async fn login_error(url: &str) -> (String, String) {
    match try_connect(url).await {
        Ok(_) => panic!("login to {url} succeeded but should fail"),
        Err(e) => (sqlstate(&e), message(&e)),
    }
}

#[test]
fn bad_logins_and_bad_packets_are_refused_and_the_pooler_keeps_serving() {
    let mut agent = TestAgent::start_with_shop("[pooler]\ndefault_pool_size = 1\n");
    let rt = runtime();
    rt.block_on(logins_fail_like_postgres(&agent));
    malformed_startup_packets_are_refused(&agent);
    assert!(agent.is_running(), "the agent died on bad input");
    rt.block_on(rotate_while_connected(&agent));
}

async fn logins_fail_like_postgres(agent: &TestAgent) {
    let password = agent.secret("shop", "password");
    let wrong = agent.pooler_url("shop", "not-the-password", "shop", "prefer");
    assert_eq!(
        login_error(&wrong).await,
        (
            "28P01".to_owned(),
            "password authentication failed for user \"shop\"".to_owned()
        )
    );
    // An unknown role gets exactly the wrong-password answer: nothing is revealed.
    let unknown = agent.pooler_url("nobody", "whatever", "shop", "prefer");
    assert_eq!(
        login_error(&unknown).await,
        (
            "28P01".to_owned(),
            "password authentication failed for user \"nobody\"".to_owned()
        )
    );
    let no_db = agent.pooler_url("shop", &password, "nosuchdb", "prefer");
    // PostgreSQL's pg_hba.conf lets a tenant reach its own database only: the pooler
    // passes on its refusal.
    let (code, text) = login_error(&no_db).await;
    assert!(
        code == "28000"
            && text.contains("pg_hba.conf rejects connection")
            && text.contains("database \"nosuchdb\""),
        "unknown database: {code} {text}"
    );
    let shop = connect(&agent.tenant_url("shop")).await;
    assert_eq!(one(&shop, "select current_user").await, "shop");
}

fn malformed_startup_packets_are_refused(agent: &TestAgent) {
    let port = agent.pooler_port();
    let wait = Duration::from_secs(5);
    let huge = [0x7f, 0xff, 0xff, 0xff, 0, 3, 0, 0, b'u', b's'];
    let tiny = [0, 0, 0, 3, 0, 3, 0, 0];
    for (what, bytes) in [
        (
            "an HTTP request",
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        ),
        ("a 2 GiB length word", huge.to_vec()),
        ("a length shorter than its header", tiny.to_vec()),
        (
            "random bytes",
            (0u8..=255).rev().cycle().take(9000).collect(),
        ),
    ] {
        let reply = raw_exchange(port, &bytes, wait);
        assert!(reply.closed, "{what}: connection still open after {wait:?}");
        assert!(
            reply.bytes.is_empty() || reply.is_error(),
            "{what}: unexpected reply {:?}",
            reply.text()
        );
    }
    // Protocol 2.0, as PostgreSQL answers it: an error naming the version, then close.
    let v2 = startup_packet(2, 0, &[("user", "shop"), ("database", "shop")]);
    let reply = raw_exchange(port, &v2, wait);
    assert!(reply.closed && reply.is_error(), "protocol 2.0: {reply:?}");
    assert!(
        reply.text().contains("unsupported frontend protocol 2.0"),
        "protocol 2.0: {:?}",
        reply.text()
    );
    // A newer 3.x minor gets NegotiateProtocolVersion, then the login goes on (SASL).
    let v3_99 = startup_packet(3, 99, &[("user", "shop"), ("database", "shop")]);
    let reply = raw_exchange(port, &v3_99, Duration::from_secs(1));
    assert_eq!(
        reply.bytes.first(),
        Some(&b'v'),
        "protocol 3.99: {:?}",
        reply.text()
    );
    assert!(
        reply.text().contains("SCRAM-SHA-256"),
        "protocol 3.99: {:?}",
        reply.text()
    );
    // Still serving.
    let url = agent.tenant_url("shop");
    assert_eq!(
        crate::support::psql::query(&url, "select 'after bad packets'"),
        "after bad packets"
    );
}

async fn rotate_while_connected(agent: &TestAgent) {
    let old_url = agent.tenant_url("shop");
    let kept = connect(&old_url).await;
    assert_eq!(one(&kept, "select 'before rotate'").await, "before rotate");
    blocking(|| agent.cli_ok(&["tenant", "rotate", "shop"]));
    let new_url = agent.tenant_url("shop");
    assert_ne!(new_url, old_url);

    assert_eq!(one(&kept, "select 'kept'").await, "kept");
    assert_eq!(
        login_error(&old_url).await,
        (
            "28P01".to_owned(),
            "password authentication failed for user \"shop\"".to_owned()
        ),
        "login with the old password"
    );
    let fresh = connect(&new_url).await;
    assert_eq!(one(&fresh, "select current_user").await, "shop");
    // New server logins use the new password: drop the server connection and go on.
    let killed = blocking(|| {
        agent.admin_psql(
            "select count(pg_terminate_backend(pid)) from pg_stat_activity where usename = 'shop'",
        )
    });
    assert_eq!(killed, "1");
    let again = connect(&new_url).await;
    assert_eq!(
        one(&again, "select 'new server login'").await,
        "new server login"
    );
}

#[test]
fn killed_servers_and_vanished_clients_leave_a_clean_pool() {
    let agent = TestAgent::start_with_shop("[pooler]\ndefault_pool_size = 1\n");
    let url = agent.tenant_url("shop");
    runtime().block_on(async {
        terminated_server_connections_heal(&agent, &url).await;
        vanished_clients_leave_no_transaction(&agent, &url).await;
    });
}

fn shop_backends(agent: &TestAgent, condition: &str) -> u32 {
    let sql =
        format!("select count(*) from pg_stat_activity where usename = 'shop' and {condition}");
    agent.admin_psql(&sql).parse().unwrap()
}

async fn terminated_server_connections_heal(agent: &TestAgent, url: &str) {
    // An idle pooled server connection is terminated.
    let a = connect(url).await;
    assert_eq!(one(&a, "select 1").await, "1");
    let killed = blocking(|| {
        agent.admin_psql(
            "select count(pg_terminate_backend(pid)) from pg_stat_activity where usename = 'shop'",
        )
    });
    assert_eq!(killed, "1");
    // The next query may fail once, or the pooler may notice and use a new connection.
    let next = within(
        DEADLINE,
        "query after terminate",
        a.simple_query("select 2"),
    )
    .await;
    match next {
        Ok(messages) => {
            let value = messages.iter().find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
                _ => None,
            });
            assert_eq!(value.as_deref(), Some("2"), "{messages:?}");
        }
        // The pooler handed the connection out before it saw the backend go: PostgreSQL's
        // FATAL, or PgBouncer's answer to a server connection that vanished.
        Err(e) => assert!(
            sqlstate(&e) == "57P01"
                || (sqlstate(&e) == "08006" && message(&e) == "server conn crashed?"),
            "{e:?}"
        ),
    }
    let b = connect(url).await;
    assert_eq!(one(&b, "select 'healed'").await, "healed");

    // The server connection running a client's query is terminated: that client gets an error.
    let c = connect(url).await;
    let running = tokio::spawn(async move { c.batch_execute("select pg_sleep(20)").await });
    blocking(|| {
        wait_for(Duration::from_secs(10), "pg_sleep running", || {
            (shop_backends(agent, "query like '%pg_sleep(20)%' and state = 'active'") == 1)
                .then_some(())
        })
    });
    blocking(|| {
        agent.admin_psql(
            "select pg_terminate_backend(pid) from pg_stat_activity \
             where usename = 'shop' and query like '%pg_sleep(20)%'",
        )
    });
    let result = within(Duration::from_secs(10), "the killed query", running)
        .await
        .unwrap();
    let error = result.expect_err("the client whose server was terminated got no error");
    // PostgreSQL's own FATAL reaches the client.
    assert_eq!(sqlstate(&error), "57P01", "{error:?}");
    assert_eq!(
        message(&error),
        "terminating connection due to administrator command"
    );
    let d = connect(url).await;
    assert_eq!(one(&d, "select 'healed again'").await, "healed again");
    // The terminated backend may take a moment to leave pg_stat_activity.
    blocking(|| {
        wait_for(
            Duration::from_secs(5),
            "at most 1 server connection",
            || (shop_backends(agent, "true") <= 1).then_some(()),
        )
    });
}

/// The check a client runs first on a connection from the pool: no row from the vanished
/// client, no transaction in progress.
const CLEAN: &str = "select (select count(*) from t) || '|' || \
                     (pg_current_xact_id_if_assigned() is null) || '|' || \
                     (now() = statement_timestamp())";

async fn vanished_clients_leave_no_transaction(agent: &TestAgent, url: &str) {
    let x = connect(url).await;
    exec(&x, "create table t (id int)").await;
    exec(&x, "begin; insert into t values (1)").await;
    drop(x);
    let y = connect(url).await;
    assert_eq!(
        one(&y, CLEAN).await,
        "0|true|true",
        "after a client left mid-transaction"
    );
    drop(y);

    // A client killed while its transaction runs a query.
    let mut cmd = psql_command();
    cmd.args([
        "-d",
        url,
        "-c",
        "begin; insert into t values (2); select pg_sleep(5)",
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    let mut psql = cmd.spawn().unwrap();
    blocking(|| {
        wait_for(Duration::from_secs(10), "psql's pg_sleep running", || {
            (shop_backends(agent, "query like '%pg_sleep(5)%' and state = 'active'") == 1)
                .then_some(())
        })
    });
    psql.kill().unwrap();
    psql.wait().unwrap();
    let z = connect(url).await;
    assert_eq!(
        one(&z, CLEAN).await,
        "0|true|true",
        "after a client was killed mid-query"
    );
    blocking(|| {
        wait_for(
            Duration::from_secs(15),
            "no shop backend left in a transaction",
            || (shop_backends(agent, "state like 'idle in transaction%'") == 0).then_some(()),
        )
    });
    assert_eq!(one(&z, "select count(*) from t").await, "0");
}
