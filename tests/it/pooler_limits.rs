//! Client-side limits of the pooler: `client_tls = "require"`, `client_login_timeout` for
//! startup packets that never finish, and `max_client_conn` with its PgBouncer error.

use std::time::{Duration, Instant};

use tokio_postgres::Client;

use crate::support::pooler::{
    blocking, message, one, raw_exchange, runtime, try_connect, try_connect_config,
};
use crate::support::psql::{query, query_fails};
use crate::support::TestAgent;

#[test]
fn tls_required_login_timeout_and_max_client_conn() {
    let agent = TestAgent::start_with_shop(
        "[pooler]\nclient_tls = \"require\"\nclient_login_timeout = 1\nmax_client_conn = 5\n",
    );
    let url = agent.tenant_url("shop");
    assert!(url.ends_with("sslmode=require"), "database_url: {url}");

    // TLS is required on TCP: libpq with sslmode=require gets in, encrypted.
    let info = query(&url, "\\conninfo");
    assert!(info.contains("SSL connection"), "\\conninfo: {info}");
    assert_eq!(query(&url, "select current_user"), "shop");
    let plain = url.replace("sslmode=require", "sslmode=disable");
    let refused = query_fails(&plain, "select 1");
    assert!(refused.contains("SSL"), "sslmode=disable: {refused}");

    startup_packets_that_never_finish_time_out(&agent);
    runtime().block_on(max_client_conn_refuses_the_sixth(&agent));
    assert_eq!(query(&url, "select 'served'"), "served");
}

fn startup_packets_that_never_finish_time_out(agent: &TestAgent) {
    let port = agent.pooler_port();
    for (what, bytes) in [
        ("nothing at all", Vec::new()),
        ("half a startup packet", vec![0, 0, 0, 40, 0, 3, 0, 0, b'u']),
    ] {
        let reply = raw_exchange(port, &bytes, Duration::from_secs(6));
        assert!(
            reply.closed,
            "{what}: still open 6 s later with client_login_timeout = 1"
        );
        assert!(
            reply.elapsed >= Duration::from_millis(800),
            "{what}: closed after only {:?}",
            reply.elapsed
        );
        assert!(
            reply.elapsed < Duration::from_secs(4),
            "{what}: closed after {:?} with client_login_timeout = 1",
            reply.elapsed
        );
    }
}

/// A unix-socket client (TLS is not required there), retried while earlier connections are
/// still being closed by the pooler.
async fn unix_client(agent: &TestAgent, password: &str) -> Client {
    let config = agent.pooler_unix_config("shop", password, "shop");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match try_connect_config(&config).await {
            Ok(client) => return client,
            Err(e) if Instant::now() < deadline => {
                println!("unix login not yet possible: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("unix login: {e:?}"),
        }
    }
}

async fn max_client_conn_refuses_the_sixth(agent: &TestAgent) {
    let password = agent.secret("shop", "password");
    let mut clients = Vec::new();
    for i in 0..5 {
        let client = unix_client(agent, &password).await;
        assert_eq!(one(&client, &format!("select {i}")).await, i.to_string());
        clients.push(client);
    }

    // The 6th is refused with PgBouncer's error, whichever way it comes: unix socket
    // (tokio-postgres), TCP with the tenant's URL (psql, TLS) and plain TCP (tokio-postgres).
    let config = agent.pooler_unix_config("shop", &password, "shop");
    let unix = match try_connect_config(&config).await {
        Ok(_) => "logged in".to_owned(),
        Err(e) => format!("{e:?}"),
    };
    let url = agent.tenant_url("shop");
    let tls = blocking(|| query_fails(&url, "select 1"));
    let plain = match try_connect(&url.replace("sslmode=require", "sslmode=disable")).await {
        Ok(_) => "logged in".to_owned(),
        Err(e) => message(&e),
    };

    // The five are unaffected.
    for (i, client) in clients.iter().enumerate() {
        assert_eq!(
            one(client, &format!("select 'still {i}'")).await,
            format!("still {i}")
        );
    }
    let wanted = "no more connections allowed";
    assert!(
        [&unix, &tls, &plain].iter().all(|e| e.contains(wanted)),
        "6th client with max_client_conn = 5, want {wanted:?}:\n unix socket: {unix}\n \
         psql sslmode=require: {tls}\n tokio-postgres plain TCP: {plain}"
    );
    // When one of the five leaves, its slot is free again.
    drop(clients.pop());
    let replacement = unix_client(agent, &password).await;
    assert_eq!(
        one(&replacement, "select 'replacement'").await,
        "replacement"
    );
}
