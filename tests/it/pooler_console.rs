//! PgBouncer 1.25's console commands, run with psql against the real pooler: SHOW HELP,
//! DISABLE/ENABLE, KILL_CLIENT (by SHOW CLIENTS' id), KILL [db], WAIT_CLOSE, SUSPEND and
//! RESUME, SET (visible in SHOW CONFIG and in behaviour, until a reload), and SHUTDOWN
//! WAIT_FOR_CLIENTS.

use std::process::Output;
use std::time::Duration;

use tokio_postgres::Client;

use crate::support::pooler::{
    blocking, connect, console, exec, message, one, runtime, sqlstate, table, try_connect, within,
    Table,
};
use crate::support::psql::{psql_command, run_sql};
use crate::support::{stderr_of, stdout_of, wait_for, TestAgent};

const SLACK: Duration = Duration::from_secs(20);

/// psql to the console over the unix socket, as the agent's OS user.
fn console_command(agent: &TestAgent) -> std::process::Command {
    let mut cmd = psql_command();
    cmd.arg("-h")
        .arg(agent.socket_dir())
        .arg("-p")
        .arg(agent.pooler_port().to_string())
        .args(["-U", "pgplatform", "-d", "pgbouncer"]);
    cmd
}

/// Runs `sql` on the console with psql.
fn console_psql(agent: &TestAgent, sql: &str) -> Output {
    run_sql(console_command(agent), sql)
}

/// `sql` on the console must succeed; psql's stdout and stderr (notices).
fn console_ok(agent: &TestAgent, sql: &str) -> (String, String) {
    let out = blocking(|| console_psql(agent, sql));
    assert!(
        out.status.success(),
        "console {sql:?} failed: {}",
        stderr_of(&out)
    );
    (stdout_of(&out), stderr_of(&out))
}

/// `sql` on the console must fail; psql's stderr.
fn console_err(agent: &TestAgent, sql: &str) -> String {
    let out = blocking(|| console_psql(agent, sql));
    assert!(
        !out.status.success(),
        "console {sql:?} succeeded but should fail: {}",
        stdout_of(&out)
    );
    stderr_of(&out)
}

/// Connects to `url` as a client that SHOW CLIENTS names `name` (application_name).
async fn client_named(url: &str, name: &str) -> Client {
    let separator = if url.contains('?') { '&' } else { '?' };
    connect(&format!("{url}{separator}application_name={name}")).await
}

/// SHOW CLIENTS' row for the client named `name`.
async fn client_row(console: &Client, name: &str) -> (Table, Vec<Option<String>>) {
    let clients = table(console, "SHOW CLIENTS").await.unwrap();
    let rows = clients.rows_where("application_name", name);
    assert_eq!(rows.len(), 1, "SHOW CLIENTS for {name}: {clients:?}");
    let row = rows[0].clone();
    (clients, row)
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

/// Polls until SHOW POOLS' `column` for `database` is `value`.
async fn wait_pools(console: &Client, database: &str, column: &str, value: i64) {
    let deadline = std::time::Instant::now() + SLACK;
    loop {
        let shown = pools_sum(console, database, column).await;
        if shown == value {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "SHOW POOLS {column} of {database} stayed {shown}, expected {value}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// SHOW CONFIG's value for `key`.
async fn config_value(console: &Client, key: &str) -> String {
    let config = table(console, "SHOW CONFIG").await.unwrap();
    let rows = config.rows_where("key", key);
    assert_eq!(rows.len(), 1, "SHOW CONFIG {key}: {config:?}");
    config.get(rows[0], "value").to_owned()
}

#[test]
fn show_help_lists_every_supported_command_as_a_notice() {
    let agent = TestAgent::start_with_shop("");
    runtime().block_on(async {
        let (_, notices) = console_ok(&agent, "SHOW HELP;");
        assert!(
            notices.contains("NOTICE:  Console usage"),
            "SHOW HELP: {notices}"
        );
        for command in [
            "SHOW HELP|CONFIG|DATABASES|POOLS|CLIENTS|SERVERS|USERS|VERSION",
            "SET key = arg",
            "DISABLE <db>",
            "ENABLE <db>",
            "KILL [<db>]",
            "KILL_CLIENT <client_id>",
            "SUSPEND",
            "SHUTDOWN WAIT_FOR_SERVERS|WAIT_FOR_CLIENTS",
            "WAIT_CLOSE [<db>]",
        ] {
            assert!(
                notices.contains(command),
                "SHOW HELP lacks {command}: {notices}"
            );
        }
        let err = console_err(&agent, "FLY AWAY");
        assert!(err.contains("use SHOW HELP"), "{err}");
    });
}

#[test]
fn disable_refuses_new_clients_of_the_database_and_enable_lets_them_in() {
    let agent = TestAgent::start_with_shop("");
    let url = agent.tenant_url("shop");
    runtime().block_on(async {
        let inside = connect(&url).await;
        let console = console(&agent).await;
        let (_, _) = console_ok(&agent, "DISABLE shop");

        let refused = try_connect(&url)
            .await
            .expect_err("a login to a disabled database");
        assert_eq!(sqlstate(&refused), "08P01", "{refused:?}");
        assert_eq!(message(&refused), "database \"shop\" is disabled");
        let databases = table(&console, "SHOW DATABASES").await.unwrap();
        let shop = databases.rows_where("name", "shop");
        assert_eq!(databases.get(shop[0], "disabled"), "1", "{databases:?}");
        // Clients already in keep working.
        assert_eq!(one(&inside, "select 1").await, "1");

        console_ok(&agent, "ENABLE shop;");
        let again = connect(&url).await;
        assert_eq!(one(&again, "select 2").await, "2");
        let databases = table(&console, "SHOW DATABASES").await.unwrap();
        let shop = databases.rows_where("name", "shop");
        assert_eq!(databases.get(shop[0], "disabled"), "0");

        let err = console_err(&agent, "ENABLE nosuch");
        assert!(err.contains("no such database: nosuch"), "{err}");
        let err = console_err(&agent, "DISABLE pgbouncer");
        assert!(err.contains("cannot disable admin db: pgbouncer"), "{err}");
        let err = console_err(&agent, "DISABLE");
        assert!(err.contains("a database is required"), "{err}");
    });
}

#[test]
fn kill_client_ends_exactly_that_client_and_rolls_back_its_transaction() {
    let agent = TestAgent::start_with_shop("");
    let url = agent.tenant_url("shop");
    runtime().block_on(async {
        let console = console(&agent).await;
        let idle = client_named(&url, "idle_one").await;
        let busy = client_named(&url, "busy_one").await;
        let other = client_named(&url, "other_one").await;
        exec(&other, "create table t (id int)").await;
        exec(&busy, "begin; insert into t values (1)").await;

        let (clients, row) = client_row(&console, "busy_one").await;
        let busy_id = clients.get(&row, "id").to_owned();
        let (clients, row) = client_row(&console, "idle_one").await;
        let idle_id = clients.get(&row, "id").to_owned();
        assert_ne!(busy_id, idle_id, "ids are per client: {clients:?}");

        console_ok(&agent, &format!("KILL_CLIENT {busy_id}"));
        let err = within(
            SLACK,
            "the killed client's query",
            busy.batch_execute("select 1"),
        )
        .await
        .expect_err("a killed client's next query");
        assert!(err.is_closed() || sqlstate(&err) == "57P01", "{err:?}");
        console_ok(&agent, &format!("KILL_CLIENT {idle_id}"));
        let err = within(
            SLACK,
            "the killed client's query",
            idle.batch_execute("select 1"),
        )
        .await
        .expect_err("a killed idle client's next query");
        assert!(err.is_closed() || sqlstate(&err) == "57P01", "{err:?}");

        // The others are untouched, and the killed transaction was rolled back.
        assert_eq!(one(&other, "select count(*) from t").await, "0");
        let clients = table(&console, "SHOW CLIENTS").await.unwrap();
        assert!(clients
            .rows_where("application_name", "busy_one")
            .is_empty());
        assert!(clients
            .rows_where("application_name", "idle_one")
            .is_empty());
        assert_eq!(clients.rows_where("application_name", "other_one").len(), 1);

        // A console session can be killed too.
        let (clients, row) = client_row(&console, "").await;
        let console_id = clients.get(&row, "id").to_owned();
        console_ok(&agent, &format!("KILL_CLIENT {console_id}"));
        within(SLACK, "the killed console's end", async {
            while !console.is_closed() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        let console = crate::support::pooler::console(&agent).await;
        let clients = table(&console, "SHOW CLIENTS").await.unwrap();
        assert!(
            clients.rows_where("id", &console_id).is_empty(),
            "{clients:?}"
        );

        let err = console_err(&agent, &format!("KILL_CLIENT {busy_id}"));
        assert!(err.contains("client not found"), "{err}");
        let err = console_err(&agent, "KILL_CLIENT abc");
        assert!(err.contains("invalid client pointer supplied"), "{err}");

        // A client waiting for a server connection (shop paused) ends at once too.
        let waiter = client_named(&url, "waiting_one").await;
        console_ok(&agent, "PAUSE shop");
        let query = tokio::spawn(async move { waiter.batch_execute("select 1").await });
        wait_pools(&console, "shop", "cl_waiting", 1).await;
        let (clients, row) = client_row(&console, "waiting_one").await;
        let waiting_id = clients.get(&row, "id").to_owned();
        console_ok(&agent, &format!("KILL_CLIENT {waiting_id}"));
        let err = within(SLACK, "the killed waiting client", query)
            .await
            .unwrap()
            .expect_err("a killed waiting client's query");
        assert!(err.is_closed() || sqlstate(&err) == "57P01", "{err:?}");
        wait_pools(&console, "shop", "cl_waiting", 0).await;
        console_ok(&agent, "RESUME shop");

        // KILL of an unknown database is an error; KILL without one kills every database.
        let err = console_err(&agent, "KILL nosuch");
        assert!(err.contains("no such database: nosuch"), "{err}");
        console_ok(&agent, "KILL");
        let err = within(SLACK, "a query after KILL", other.batch_execute("select 1"))
            .await
            .expect_err("a client after KILL");
        assert!(err.is_closed() || sqlstate(&err) == "57P01", "{err:?}");
        console_ok(&agent, "RESUME");
        let again = connect(&url).await;
        assert_eq!(one(&again, "select 3").await, "3");
    });
}

#[test]
fn wait_close_returns_once_the_reconnected_servers_are_closed() {
    let agent = TestAgent::start_with_shop("");
    let url = agent.tenant_url("shop");
    runtime().block_on(async {
        let console = console(&agent).await;
        let holder = connect(&url).await;
        exec(&holder, "begin; select 1").await;
        console_ok(&agent, "RECONNECT shop");
        let servers = table(&console, "SHOW SERVERS").await.unwrap();
        let shop = servers.rows_where("database", "shop");
        assert!(
            shop.iter().any(|r| servers.get(r, "close_needed") == "1"),
            "the held server is to be closed: {servers:?}"
        );
        assert!(shop.iter().all(|r| !servers.get(r, "id").is_empty()));

        let cmd = console_command(&agent);
        let wait = tokio::task::spawn_blocking(move || run_sql(cmd, "WAIT_CLOSE shop"));
        // WAIT_CLOSE is still waiting while the transaction holds the server: once psql is
        // logged in (its query follows at once), a few console round trips later.
        let deadline = std::time::Instant::now() + SLACK;
        loop {
            let clients = table(&console, "SHOW CLIENTS").await.unwrap();
            if wait.is_finished() || !clients.rows_where("application_name", "psql").is_empty() {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "psql never logged in");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for _ in 0..5 {
            wait_pools(&console, "shop", "sv_active", 1).await;
        }
        assert!(
            !wait.is_finished(),
            "WAIT_CLOSE returned with a server to close"
        );
        exec(&holder, "commit").await;
        let out = within(SLACK, "WAIT_CLOSE", wait).await.unwrap();
        assert!(out.status.success(), "WAIT_CLOSE: {}", stderr_of(&out));
        let servers = table(&console, "SHOW SERVERS").await.unwrap();
        assert!(
            servers
                .rows_where("database", "shop")
                .iter()
                .all(|r| servers.get(r, "close_needed") == "0"),
            "{servers:?}"
        );
        let err = console_err(&agent, "WAIT_CLOSE nosuch");
        assert!(err.contains("no such database: nosuch"), "{err}");
    });
}

#[test]
fn suspend_holds_new_transactions_until_resume() {
    let agent = TestAgent::start_with_shop("");
    let url = agent.tenant_url("shop");
    runtime().block_on(async {
        let console = console(&agent).await;
        let client = connect(&url).await;
        assert_eq!(one(&client, "select 1").await, "1");
        console_ok(&agent, "SUSPEND");
        let err = console_err(&agent, "SUSPEND");
        assert!(err.contains("already suspended/paused"), "{err}");
        let query = tokio::spawn(async move {
            let answer = client.simple_query("select 42").await;
            (client, answer)
        });
        wait_pools(&console, "shop", "cl_waiting", 1).await;
        assert!(!query.is_finished(), "a query ran while suspended");
        console_ok(&agent, "RESUME");
        let (_client, answer) = within(SLACK, "the held query", query).await.unwrap();
        answer.unwrap_or_else(|e| panic!("the query held by SUSPEND: {e:?}"));
        let err = console_err(&agent, "RESUME");
        assert!(err.contains("pooler is not paused/suspended"), "{err}");
        let err = console_err(&agent, "RESUME shop");
        assert!(err.contains("database shop is not paused"), "{err}");
    });
}

#[test]
fn set_changes_the_running_setting_until_the_next_reload() {
    let agent = TestAgent::start_with_shop("");
    let url = agent.tenant_url("shop");
    runtime().block_on(async {
        let console = console(&agent).await;
        assert_eq!(config_value(&console, "default_pool_size").await, "20");
        let (_, _) = console_ok(&agent, "SET default_pool_size = 1");
        let (_, _) = console_ok(&agent, "set query_wait_timeout to '1'");
        assert_eq!(config_value(&console, "default_pool_size").await, "1");
        assert_eq!(config_value(&console, "query_wait_timeout").await, "1");

        // Behaviour: one server for shop, and a second client gives up after 1 s.
        let holder = connect(&url).await;
        exec(&holder, "begin; select 1").await;
        let waiter = connect(&url).await;
        let err = within(SLACK, "the waiting query", waiter.batch_execute("select 1"))
            .await
            .expect_err("a query past query_wait_timeout");
        assert!(message(&err).contains("query_wait_timeout"), "{err:?}");
        exec(&holder, "commit").await;

        // Values are checked as the config file's; unknown and restart-only keys refused.
        for (sql, detail) in [
            ("SET default_pool_size = 0", "at least 1"),
            ("SET default_pool_size = many", "default_pool_size"),
            (
                "SET no_such_setting = 1",
                "unknown or unsupported parameter: no_such_setting",
            ),
            ("SET listen_port = 7777", "restart"),
        ] {
            let err = console_err(&agent, sql);
            assert!(err.contains("SET failed"), "{sql}: {err}");
            assert!(err.contains(detail), "{sql}: {err}");
        }
        assert_eq!(config_value(&console, "default_pool_size").await, "1");
        let config = table(&console, "SHOW CONFIG").await.unwrap();
        let port = config.rows_where("key", "listen_port");
        assert_eq!(config.get(port[0], "changeable"), "no", "{config:?}");
        let size = config.rows_where("key", "default_pool_size");
        assert_eq!(config.get(size[0], "changeable"), "yes", "{config:?}");

        // A reload reads the file again: the SET values are gone.
        blocking(|| agent.cli_ok(&["reload"]));
        let deadline = std::time::Instant::now() + SLACK;
        while config_value(&console, "default_pool_size").await != "20" {
            assert!(
                std::time::Instant::now() < deadline,
                "reload kept the SET value"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(config_value(&console, "query_wait_timeout").await, "120");
    });
}

#[test]
fn shutdown_wait_for_clients_stops_the_agent_once_the_last_client_leaves() {
    let mut agent = TestAgent::start_with_shop("");
    let url = agent.tenant_url("shop");
    runtime().block_on(async {
        let client = connect(&url).await;
        let (_, _) = console_ok(&agent, "SHUTDOWN WAIT_FOR_CLIENTS");
        let refused = try_connect(&url)
            .await
            .expect_err("a login during shutdown");
        assert_eq!(message(&refused), "pooler is shutting down", "{refused:?}");
        // The connected client keeps working, and the agent waits for it.
        assert_eq!(one(&client, "select 7").await, "7");
        assert!(
            agent.is_running(),
            "the agent stopped with a client connected"
        );
        drop(client);
    });
    wait_for(SLACK, "the agent to stop after its last client", || {
        (!agent.is_running()).then_some(())
    });
    let status = agent.stop();
    assert!(
        status.is_none_or(|s| s.success()),
        "agent exit status after SHUTDOWN WAIT_FOR_CLIENTS: {status:?}"
    );
}

#[test]
fn shutdown_wait_for_servers_stops_the_agent_once_the_running_transaction_ends() {
    let mut agent = TestAgent::start_with_shop("");
    let url = agent.tenant_url("shop");
    runtime().block_on(async {
        let client = connect(&url).await;
        exec(
            &client,
            "create table t (id int); begin; insert into t values (1)",
        )
        .await;
        let (_, _) = console_ok(&agent, "SHUTDOWN WAIT_FOR_SERVERS");
        let refused = try_connect(&url)
            .await
            .expect_err("a login during shutdown");
        assert_eq!(message(&refused), "pooler is shutting down", "{refused:?}");
        let err = console_err(&agent, "RESUME");
        assert!(err.contains("pooler is shutting down"), "{err}");
        // The transaction holding a server may finish; then the agent stops.
        assert!(agent.is_running(), "the agent stopped with a server in use");
        exec(&client, "insert into t values (2); commit").await;
    });
    wait_for(SLACK, "the agent to stop once no server is in use", || {
        (!agent.is_running()).then_some(())
    });
    let status = agent.stop();
    assert!(
        status.is_none_or(|s| s.success()),
        "agent exit status after SHUTDOWN WAIT_FOR_SERVERS: {status:?}"
    );
    agent.start_again();
    assert_eq!(agent.admin_psql_in("shop", "select count(*) from t"), "2");
}
