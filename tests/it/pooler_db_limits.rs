//! PgBouncer's per-database settings in `[pooler.databases.NAME]` against a real
//! PostgreSQL: `reserve_pool_size` and `max_db_connections` under contention (counted on
//! PostgreSQL itself), 1.24's `max_db_client_connections` refusing the next client with
//! PgBouncer's message and shown in SHOW DATABASES (1.25's columns), `connect_query` run
//! once per new server connection as the tenant's role, and `max_client_conn` lowered by
//! a RELOAD, then enforced.

use std::fs;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_postgres::Client;

use crate::support::pooler::{
    blocking, connect, console, message, one, runtime, sqlstate, table, try_connect, within, Table,
};
use crate::support::TestAgent;

const CONNECT_QUERY: &str = "create table if not exists connect_log (pid int, usr name); \
     insert into connect_log values (pg_backend_pid(), current_user)";

fn settings() -> String {
    format!(
        "[pooler]\nreserve_pool_timeout = 0.5\n\
         [pooler.databases.shop]\npool_size = 2\nmin_pool_size = 2\nreserve_pool_size = 1\n\
         max_db_client_connections = 5\nconnect_query = \"{CONNECT_QUERY}\"\n\
         [pooler.databases.crm]\nmax_db_connections = 2\n\
         [pooler.databases.ops]\npool_size = 1\nserver_lifetime = 0\nquery_wait_timeout = 1\n"
    )
}

#[test]
fn per_database_limits_connect_query_and_a_reloaded_max_client_conn() {
    let agent = TestAgent::start_with_shop(&settings());
    agent.cli_ok(&["tenant", "create", "crm", "--with-readonly"]);
    agent.cli_ok(&["tenant", "create", "ops"]);
    runtime().block_on(async {
        let shop = reserve_pool_and_client_limit(&agent).await;
        connect_query_runs_once_per_server_connection_as_the_tenant(&shop).await;
        drop(shop);
        max_db_connections_spans_the_databases_pools(&agent).await;
        lifetime_and_wait_timeout_per_database(&agent).await;
        max_client_conn_lowered_by_reload_is_enforced(&agent).await;
    });
}

/// The most backends of `database` seen running pg_sleep while `work` runs.
async fn most_sleeping<T: Send + 'static>(
    agent: &TestAgent,
    database: &str,
    work: Vec<tokio::task::JoinHandle<T>>,
) -> (usize, Vec<T>) {
    let done = Arc::new(AtomicBool::new(false));
    let sql = format!(
        "select count(*) from pg_stat_activity where datname = '{database}' \
         and state = 'active' and query like 'select pg_sleep%'"
    );
    let mut most = 0;
    let watcher = {
        let done = done.clone();
        async move {
            while !done.load(Ordering::Acquire) {
                let seen: usize = blocking(|| agent.admin_psql_in("postgres", &sql))
                    .parse()
                    .unwrap();
                most = most.max(seen);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            most
        }
    };
    let results = async {
        let mut out = Vec::new();
        for handle in work {
            out.push(handle.await.unwrap());
        }
        done.store(true, Ordering::Release);
        out
    };
    let (most, results) = tokio::join!(watcher, results);
    (most, results)
}

fn sleeper(client: Arc<Client>, seconds: f64) -> tokio::task::JoinHandle<Result<(), String>> {
    tokio::spawn(async move {
        client
            .simple_query(&format!("select pg_sleep({seconds})"))
            .await
            .map(|_| ())
            .map_err(|e| format!("{e:?}"))
    })
}

fn database_row(databases: &Table, name: &str) -> Vec<String> {
    let rows = databases.rows_where("name", name);
    assert_eq!(rows.len(), 1, "SHOW DATABASES: {databases:?}");
    rows[0]
        .iter()
        .map(|v| v.clone().unwrap_or_default())
        .collect()
}

async fn reserve_pool_and_client_limit(agent: &TestAgent) -> Vec<Arc<Client>> {
    let url = agent.tenant_url("shop");
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(Arc::new(connect(&url).await));
    }
    // min_pool_size = 2 for shop only (the global one is 0): a second connection is
    // opened though no client needed it yet.
    blocking(|| {
        crate::support::wait_for(Duration::from_secs(10), "shop's min_pool_size", || {
            let open: usize = agent
                .admin_psql_in(
                    "postgres",
                    "select count(*) from pg_stat_activity where usename = 'shop'",
                )
                .parse()
                .unwrap();
            (open == 2).then_some(())
        })
    });
    // Four at once on pool_size 2 + reserve_pool_size 1: three server connections (the
    // third after reserve_pool_timeout), never four; the fourth waits its turn.
    let work = clients.iter().map(|c| sleeper(c.clone(), 2.0)).collect();
    let (most, results) = most_sleeping(agent, "shop", work).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(
        most, 3,
        "server connections of shop at once with pool 2 + reserve 1"
    );

    let console = console(agent).await;
    let databases = table(&console, "SHOW DATABASES").await.unwrap();
    assert_eq!(
        databases.columns,
        [
            "name",
            "host",
            "port",
            "database",
            "force_user",
            "pool_size",
            "min_pool_size",
            "reserve_pool_size",
            "server_lifetime",
            "pool_mode",
            "load_balance_hosts",
            "max_connections",
            "current_connections",
            "max_client_connections",
            "current_client_connections",
            "paused",
            "disabled",
        ],
        "PgBouncer 1.25's SHOW DATABASES columns, in order"
    );
    let shop = database_row(&databases, "shop");
    let at = |column: &str| databases.columns.iter().position(|c| c == column).unwrap();
    assert_eq!(shop[at("pool_size")], "2");
    assert_eq!(shop[at("min_pool_size")], "2");
    assert_eq!(shop[at("reserve_pool_size")], "1");
    assert_eq!(shop[at("server_lifetime")], "3600");
    assert_eq!(shop[at("pool_mode")], "", "no override: NULL, as PgBouncer");
    assert_eq!(shop[at("max_connections")], "0");
    assert_eq!(shop[at("max_client_connections")], "5");
    assert_eq!(shop[at("current_client_connections")], "4");
    let crm = database_row(&databases, "crm");
    assert_eq!(crm[at("max_connections")], "2", "listed from its entry");

    // The fifth client gets in; the sixth is refused with PgBouncer 1.24's message.
    clients.push(Arc::new(connect(&url).await));
    let refused = try_connect(&url)
        .await
        .expect_err("a sixth client with max_db_client_connections = 5");
    assert_eq!(
        (sqlstate(&refused), message(&refused)),
        (
            "08P01".to_owned(),
            "client connections exceeded (max_db_client_connections)".to_owned()
        ),
        "{refused:?}"
    );
    // Other databases are not counted against shop's limit.
    let crm_client = connect(&agent.tenant_url("crm")).await;
    assert_eq!(one(&crm_client, "select 'crm in'").await, "crm in");
    // When one leaves, its place is free again.
    clients.pop();
    let deadline = Instant::now() + Duration::from_secs(10);
    let replacement = loop {
        match try_connect(&url).await {
            Ok(client) => break client,
            Err(e) => {
                assert!(Instant::now() < deadline, "no place after one left: {e:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    clients.push(Arc::new(replacement));
    clients
}

async fn connect_query_runs_once_per_server_connection_as_the_tenant(clients: &[Arc<Client>]) {
    let client = &clients[0];
    for _ in 0..10 {
        assert_eq!(
            one(
                client,
                "select count(*) from connect_log where pid = pg_backend_pid()"
            )
            .await,
            "1",
            "the server connection serving this query ran connect_query exactly once"
        );
    }
    let summary = one(
        client,
        "select count(*) = count(distinct pid) and count(*) >= 3 \
         and bool_and(usr = 'shop') from connect_log",
    )
    .await;
    assert_eq!(
        summary, "t",
        "once per connection, three connections at least, as the tenant's own role"
    );
}

async fn max_db_connections_spans_the_databases_pools(agent: &TestAgent) {
    // Two roles, two pools of crm: together no more than max_db_connections = 2.
    let mut clients = Vec::new();
    for _ in 0..2 {
        clients.push(Arc::new(connect(&agent.tenant_url("crm")).await));
    }
    // crm's pool takes both places, then leaves them idle.
    let work = clients.iter().map(|c| sleeper(c.clone(), 1.0)).collect();
    let (most, results) = most_sleeping(agent, "crm", work).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(most, 2);
    // crm_ro's pool gets one at once: the idle connection unused longest in crm's pool
    // is closed to make room (PgBouncer's eviction), not kept until server_idle_timeout.
    let started = Instant::now();
    let readonly = within(
        Duration::from_secs(10),
        "crm_ro's login while crm's pool holds the database's places idle",
        connect(&agent.readonly_url("crm")),
    )
    .await;
    assert_eq!(one(&readonly, "select current_user::text").await, "crm_ro");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    clients.push(Arc::new(readonly));
    clients.push(Arc::new(connect(&agent.readonly_url("crm")).await));
    let work = clients.iter().map(|c| sleeper(c.clone(), 1.5)).collect();
    let (most, results) = most_sleeping(agent, "crm", work).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(
        most, 2,
        "server connections of crm at once with max_db_connections = 2"
    );
}

/// ops: server_lifetime = 0 (each server connection used once, PgBouncer's meaning) and
/// query_wait_timeout = 1 on a pool of one, while the global ones are 3600 and 120.
async fn lifetime_and_wait_timeout_per_database(agent: &TestAgent) {
    let url = agent.tenant_url("ops");
    let client = connect(&url).await;
    let first = one(&client, "select pg_backend_pid()::text").await;
    let second = one(&client, "select pg_backend_pid()::text").await;
    assert_ne!(
        first, second,
        "server_lifetime = 0: a connection serves once"
    );

    let holder = connect(&url).await;
    holder.batch_execute("begin; select 1").await.unwrap();
    let waiter = connect(&url).await;
    let started = Instant::now();
    let err = within(
        Duration::from_secs(30),
        "a query waiting on a full pool",
        waiter.simple_query("select 'never'"),
    )
    .await
    .expect_err("a query waited past the database's query_wait_timeout = 1");
    let waited = started.elapsed();
    assert_eq!(
        (sqlstate(&err), message(&err)),
        ("08P01".to_owned(), "query_wait_timeout".to_owned()),
        "{err:?}"
    );
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(6),
        "the database's query_wait_timeout = 1 ended the wait after {waited:?}"
    );
    holder.batch_execute("commit").await.unwrap();
    let console = console(agent).await;
    let databases = table(&console, "SHOW DATABASES").await.unwrap();
    let ops = database_row(&databases, "ops");
    let at = |column: &str| databases.columns.iter().position(|c| c == column).unwrap();
    assert_eq!(ops[at("server_lifetime")], "0");
}

async fn max_client_conn_lowered_by_reload_is_enforced(agent: &TestAgent) {
    let console = console(agent).await;
    // Every earlier client has gone (the console itself counts as a client).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let clients = table(&console, "SHOW CLIENTS").await.unwrap();
        let tenants = clients
            .rows
            .iter()
            .filter(|r| clients.get(r, "database") != "pgbouncer")
            .count();
        if tenants == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "clients left over: {clients:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let path = agent.config_path();
    let mut config: toml::Table = toml::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
    let pooler = config
        .get_mut("pooler")
        .and_then(toml::Value::as_table_mut)
        .unwrap();
    pooler.insert("max_client_conn".into(), toml::Value::Integer(4));
    fs::write(&path, toml::to_string(&config).unwrap()).unwrap();
    table(&console, "RELOAD").await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let shown = table(&console, "SHOW CONFIG").await.unwrap();
        let row = shown.rows_where("key", "max_client_conn");
        if shown.get(row[0], "value") == "4" {
            break;
        }
        assert!(Instant::now() < deadline, "max_client_conn not reloaded");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The console and three clients fill the new limit; the next is refused.
    let url = agent.tenant_url("crm");
    let mut clients = Vec::new();
    let refused = loop {
        match within(Duration::from_secs(30), "a login", try_connect(&url)).await {
            Ok(client) => clients.push(client),
            Err(e) => break e,
        }
        assert!(
            clients.len() <= 10,
            "10 clients in with max_client_conn = 4"
        );
    };
    assert_eq!(clients.len(), 3, "clients beside the console: {refused:?}");
    assert_eq!(
        message(&refused),
        "no more connections allowed (max_client_conn)"
    );
    for client in &clients {
        assert_eq!(one(client, "select 'still in'").await, "still in");
    }
}
