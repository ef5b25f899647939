//! Transaction mode and session state (`pin_on_session_state`): each operation whose effect
//! outlives its transaction pins its client to its server connection (the client keeps its
//! state across transactions; SHOW CLIENTS, SHOW POOLS and /metrics show the pin) and the
//! next client sees nothing of it; `error` refuses it with 0A000; `ignore` leaks it as
//! PgBouncer does; and pg_dump + pg_restore through the pooler leave later clients fine.
//! Every tenant's pool has one server connection, so the next client is certainly served by
//! the connection the previous one used (or by the one that replaced it).

use std::time::Duration;

use crate::support::metrics::sample;
use crate::support::pooler::{connect, console, exec, one, runtime, sqlstate, table};
use crate::support::{command, run, stderr_of, TestAgent, COMMAND_TIMEOUT};

const CONFIG: &str = "[pooler]\ndefault_pool_size = 1\nquery_wait_timeout = 30\n\
    [pooler.databases.errs]\npin_on_session_state = \"error\"\n\
    [pooler.databases.leaky]\npin_on_session_state = \"ignore\"\n";

/// (what the client does, a query showing that state, its value then, its value on a
/// clean session, the cause SHOW CLIENTS names).
const OPERATIONS: &[(&str, &str, &str, &str, &str)] = &[
    (
        "SET search_path = nowhere",
        "SHOW search_path",
        "nowhere",
        "\"$user\", public",
        "set",
    ),
    (
        "SELECT pg_catalog.set_config('search_path', '', false)",
        "SHOW search_path",
        "",
        "\"$user\", public",
        "set_config",
    ),
    (
        "SET statement_timeout = '47s'",
        "SHOW statement_timeout",
        "47s",
        "0",
        "set",
    ),
    ("SET ROLE shop", "SHOW role", "shop", "none", "set_role"),
    (
        "CREATE TEMP TABLE scratch (a int)",
        "SELECT to_regclass('pg_temp.scratch') IS NOT NULL",
        "t",
        "f",
        "temp",
    ),
    (
        "SELECT pg_advisory_lock(4242)",
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()",
        "1",
        "0",
        "advisory_lock",
    ),
    (
        "LISTEN jobs",
        "SELECT count(*) FROM pg_listening_channels()",
        "1",
        "0",
        "listen",
    ),
    (
        "DECLARE held CURSOR WITH HOLD FOR SELECT 1",
        "SELECT count(*) FROM pg_cursors WHERE name = 'held'",
        "1",
        "0",
        "hold_cursor",
    ),
    (
        "PREPARE mine AS SELECT 1",
        "SELECT count(*) FROM pg_prepared_statements WHERE name = 'mine'",
        "1",
        "0",
        "prepare",
    ),
];

#[test]
fn session_state_pins_refuses_or_leaks_as_configured() {
    let agent = TestAgent::start_with_shop(CONFIG);
    agent.cli_ok(&["tenant", "create", "errs"]);
    agent.cli_ok(&["tenant", "create", "leaky"]);
    runtime().block_on(async {
        for (operation, probe, then, clean, cause) in OPERATIONS {
            pinned_then_forgotten(&agent, operation, probe, then, clean, cause).await;
        }
        extended_protocol_pins(&agent).await;
        large_query_pins(&agent).await;
        reported_parameters_pin_or_close(&agent).await;
        transaction_scoped_state_does_not_pin(&agent).await;
        error_mode_refuses(&agent).await;
        ignore_mode_leaks(&agent).await;
    });
}

async fn pinned_then_forgotten(
    agent: &TestAgent,
    operation: &str,
    probe: &str,
    then: &str,
    clean: &str,
    cause: &str,
) {
    let url = agent.tenant_url("shop");
    let first = connect(&url).await;
    let pid = one(&first, "SELECT pg_backend_pid()").await;
    exec(&first, operation).await;
    // The state is there in the client's later transactions, on the same session.
    for _ in 0..2 {
        assert_eq!(one(&first, probe).await, then, "{operation}: {probe}");
        assert_eq!(
            one(&first, "SELECT pg_backend_pid()").await,
            pid,
            "{operation}"
        );
    }
    assert_eq!(
        pinned_causes(agent).await,
        [cause.to_owned()],
        "{operation}"
    );
    assert_eq!(cl_pinned(agent, "shop").await, "1", "{operation}");
    let text = std::thread::scope(|s| s.spawn(|| agent.scrape()).join().expect("scrape"));
    let labels = [("database", "shop"), ("user", "shop")];
    assert_eq!(
        sample(&text, "pgplatform_pooler_pinned_clients", &labels),
        Some(1.0),
        "{operation}"
    );
    drop(first);
    // The next client (the pool has one connection) sees nothing of it.
    let next = connect(&url).await;
    assert_eq!(
        one(&next, probe).await,
        clean,
        "{operation}: the next client"
    );
    assert_ne!(
        one(&next, "SELECT pg_backend_pid()").await,
        pid,
        "{operation}: the pinned session was closed"
    );
    assert!(
        unpinned(agent, "shop").await,
        "{operation}: still pinned after it left"
    );
}

/// Waits (up to 10 s) for no client to be pinned: a client's end reaches the pooler after
/// the next client may already be served.
async fn unpinned(agent: &TestAgent, database: &str) -> bool {
    for _ in 0..200 {
        if pinned_causes(agent).await.is_empty() && cl_pinned(agent, database).await == "0" {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// Parse/Bind/Execute (what JDBC, psycopg 3 and asyncpg send) is scanned too.
async fn extended_protocol_pins(agent: &TestAgent) {
    let url = agent.tenant_url("shop");
    let client = connect(&url).await;
    client
        .execute("SELECT set_config('search_path', 'elsewhere', false)", &[])
        .await
        .unwrap();
    assert_eq!(one(&client, "SHOW search_path").await, "elsewhere");
    assert_eq!(pinned_causes(agent).await, ["set_config".to_owned()]);
    drop(client);
    let next = connect(&url).await;
    assert_eq!(one(&next, "SHOW search_path").await, "\"$user\", public");
    assert!(unpinned(agent, "shop").await);
}

/// A Query over 64 KiB is relayed in pieces; what arrived of it first is scanned.
async fn large_query_pins(agent: &TestAgent) {
    let url = agent.tenant_url("shop");
    let client = connect(&url).await;
    let sql = format!(
        "SET search_path = big; SELECT length('{}')",
        "x".repeat(200_000)
    );
    exec(&client, &sql).await;
    assert_eq!(one(&client, "SHOW search_path").await, "big");
    assert_eq!(pinned_causes(agent).await, ["set".to_owned()]);
    drop(client);
    let next = connect(&url).await;
    assert_eq!(one(&next, "SHOW search_path").await, "\"$user\", public");
    assert!(unpinned(agent, "shop").await);
}

/// What the scan cannot see (dynamic SQL in a function) but PostgreSQL reports: a
/// ParameterStatus of an untracked parameter pins; under `error` the server connection is
/// closed instead of going back dirty.
async fn reported_parameters_pin_or_close(agent: &TestAgent) {
    const SNEAKY: &str = "CREATE FUNCTION sneaky() RETURNS void LANGUAGE plpgsql AS \
        $$BEGIN EXECUTE 'SET default_transaction_read_only = on'; END$$";
    for database in ["shop", "errs"] {
        let url = agent.tenant_url(database);
        let client = connect(&url).await;
        exec(&client, SNEAKY).await;
        assert!(pinned_causes(agent).await.is_empty(), "{database}");
        let pid = one(&client, "SELECT pg_backend_pid()").await;
        exec(&client, "SELECT sneaky()").await;
        let later = one(&client, "SHOW default_transaction_read_only").await;
        let later_pid = one(&client, "SELECT pg_backend_pid()").await;
        if database == "shop" {
            assert_eq!(later, "on");
            assert_eq!(later_pid, pid);
            assert_eq!(pinned_causes(agent).await, ["parameter_status".to_owned()]);
        } else {
            assert_eq!(later, "off", "error mode closed the dirty session");
            assert_ne!(later_pid, pid);
            assert!(pinned_causes(agent).await.is_empty());
        }
        drop(client);
        let next = connect(&url).await;
        assert_eq!(
            one(&next, "SHOW default_transaction_read_only").await,
            "off",
            "{database}: the next client"
        );
        assert!(unpinned(agent, database).await, "{database}");
    }
}

/// SET LOCAL, set_config(…, true), xact advisory locks, tracked parameters: no pin.
async fn transaction_scoped_state_does_not_pin(agent: &TestAgent) {
    let url = agent.tenant_url("shop");
    let client = connect(&url).await;
    exec(
        &client,
        "BEGIN; SET LOCAL search_path = x; SELECT set_config('statement_timeout', '5s', true); \
         SELECT pg_advisory_xact_lock(1); COMMIT",
    )
    .await;
    exec(&client, "SET application_name = 'tracked'").await;
    exec(&client, "SELECT 1 AS listen_at").await;
    assert!(pinned_causes(agent).await.is_empty());
    assert_eq!(cl_pinned(agent, "shop").await, "0");
    // A second client is served at once: the first holds no connection between
    // transactions.
    let other = connect(&url).await;
    assert_eq!(one(&other, "SHOW search_path").await, "\"$user\", public");
}

async fn error_mode_refuses(agent: &TestAgent) {
    let url = agent.tenant_url("errs");
    let client = connect(&url).await;
    let error = client
        .simple_query("SET search_path = nowhere")
        .await
        .expect_err("error mode refuses SET of an untracked parameter");
    assert_eq!(sqlstate(&error), "0A000", "{error:?}");
    let db = error.as_db_error().expect("a database error");
    assert!(db.message().contains("search_path"), "{}", db.message());
    assert!(
        db.hint().is_some_and(|h| h.contains("direct_url")),
        "{:?}",
        db.hint()
    );
    // Not run, and the client carries on unpinned.
    assert_eq!(one(&client, "SHOW search_path").await, "\"$user\", public");
    assert!(pinned_causes(agent).await.is_empty());
    // Inside a transaction the refusal aborts it, as a failed statement does.
    exec(&client, "BEGIN").await;
    let error = client.simple_query("LISTEN jobs").await.unwrap_err();
    assert_eq!(sqlstate(&error), "0A000");
    let error = client.simple_query("SELECT 1").await.unwrap_err();
    assert_eq!(sqlstate(&error), "25P02", "{error:?}");
    exec(&client, "ROLLBACK").await;
    // The extended protocol gets the same refusal.
    let error = client
        .execute("SELECT pg_advisory_lock(7)", &[])
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&error), "0A000", "{error:?}");
    assert_eq!(
        one(
            &client,
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
        )
        .await,
        "0"
    );
}

/// PgBouncer's behaviour, kept on request: the next client of the one server connection
/// inherits the state. (This is what the default prevents: the test shows it is real.)
async fn ignore_mode_leaks(agent: &TestAgent) {
    let url = agent.tenant_url("leaky");
    let first = connect(&url).await;
    exec(&first, "SET search_path = leaked").await;
    assert!(pinned_causes(agent).await.is_empty());
    let pid = one(&first, "SELECT pg_backend_pid()").await;
    drop(first);
    let next = connect(&url).await;
    assert_eq!(one(&next, "SELECT pg_backend_pid()").await, pid);
    assert_eq!(one(&next, "SHOW search_path").await, "leaked");
}

#[test]
fn pg_restore_through_the_pooler_leaves_later_clients_unaffected() {
    let agent = TestAgent::start_with_shop("[pooler]\ndefault_pool_size = 1\n");
    let url = agent.tenant_url("shop");
    let dump = agent.dir().join("shop.dump");
    runtime().block_on(async {
        let client = connect(&url).await;
        exec(
            &client,
            "CREATE TABLE t (id int PRIMARY KEY, v text); \
             INSERT INTO t SELECT g, 'row ' || g FROM generate_series(1, 100) g",
        )
        .await;
    });
    let out = run(
        command("/usr/bin/pg_dump")
            .args(["-Fc", "-f"])
            .arg(&dump)
            .arg(&url),
        COMMAND_TIMEOUT,
    );
    assert!(out.status.success(), "pg_dump: {}", stderr_of(&out));
    let out = run(
        command("/usr/bin/pg_restore")
            .args(["--clean", "--if-exists", "--no-owner", "-d"])
            .arg(&url)
            .arg(&dump),
        COMMAND_TIMEOUT,
    );
    assert!(out.status.success(), "pg_restore: {}", stderr_of(&out));
    runtime().block_on(async {
        // pg_restore ran set_config('search_path', '', false): later clients of the one
        // server connection must not inherit it.
        for _ in 0..3 {
            let client = connect(&url).await;
            assert_eq!(one(&client, "SELECT count(*) FROM t").await, "100");
            assert_eq!(one(&client, "SHOW search_path").await, "\"$user\", public");
        }
    });
    assert!(
        agent
            .log_contents()
            .contains("client pinned to its server connection"),
        "the pin is logged"
    );
    direct_url_reaches_postgresql_itself(&agent);
}

/// `direct_url` (the secrets file and `tenant show`) names PostgreSQL's own port: a real
/// session, for the migration and dump tools of the README.
fn direct_url_reaches_postgresql_itself(agent: &TestAgent) {
    let direct = agent.secret("shop", "direct_url");
    let port = agent.pg_port().to_string();
    assert!(direct.contains(&format!(":{port}/shop")), "{direct}");
    let password = agent.secret("shop", "password");
    let shown = agent.cli_json(&["tenant", "show", "shop", "--json"]);
    let shown_url = shown["direct_url"].as_str().unwrap_or_default();
    assert!(shown_url.contains(&format!(":{port}/shop")), "{shown}");
    assert!(
        !shown_url.contains(&password),
        "tenant show printed the password"
    );
    runtime().block_on(async {
        let client = connect(&direct).await;
        assert_eq!(one(&client, "SHOW port").await, port);
        assert_eq!(one(&client, "SELECT current_user").await, "shop");
    });
}

/// The causes SHOW CLIENTS lists for the pinned clients.
async fn pinned_causes(agent: &TestAgent) -> Vec<String> {
    let console = console(agent).await;
    let clients = table(&console, "SHOW CLIENTS").await.unwrap();
    clients
        .rows
        .iter()
        .map(|row| clients.get(row, "pinned").to_owned())
        .filter(|cause| !cause.is_empty())
        .collect()
}

async fn cl_pinned(agent: &TestAgent, database: &str) -> String {
    let console = console(agent).await;
    let pools = table(&console, "SHOW POOLS").await.unwrap();
    let rows = pools.rows_where("database", database);
    assert_eq!(rows.len(), 1, "{pools:?}");
    pools.get(rows[0], "cl_pinned").to_owned()
}
