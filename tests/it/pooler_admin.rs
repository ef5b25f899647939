//! The `pgbouncer` admin console: PgBouncer's SHOW columns in order (1.25's for CLIENTS and
//! SERVERS, 1.18's for the others), who may use it,
//! PAUSE/RESUME holding (not failing) queries, and RELOAD without dropping clients.

use std::fs;
use std::time::{Duration, Instant};

use crate::support::pooler::{
    connect, console, exec, message, one, runtime, sqlstate, table, try_connect, within, Table,
};
use crate::support::TestAgent;

/// PgBouncer 1.25's SHOW CLIENTS / SHOW SERVERS columns, `id` included (KILL_CLIENT's).
const CONNECTION_COLUMNS: &[&str] = &[
    "type",
    "user",
    "database",
    "replication",
    "state",
    "addr",
    "port",
    "local_addr",
    "local_port",
    "connect_time",
    "request_time",
    "wait",
    "wait_us",
    "close_needed",
    "ptr",
    "link",
    "remote_pid",
    "tls",
    "application_name",
    "prepared_statements",
    "id",
];

/// PgBouncer's columns, as its own admin console lists them (1.25's for POOLS and STATS;
/// `pooler_console_columns.rs` checks those in detail).
const SHOW_COLUMNS: &[(&str, &[&str])] = &[
    ("SHOW POOLS", crate::pooler_console_columns::POOLS),
    ("SHOW STATS", crate::pooler_console_columns::STATS),
    ("SHOW CLIENTS", CONNECTION_COLUMNS),
    ("SHOW SERVERS", CONNECTION_COLUMNS),
    (
        "SHOW DATABASES",
        &[
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
    ),
    ("SHOW CONFIG", &["key", "value", "default", "changeable"]),
    ("SHOW VERSION", &["version"]),
    ("SHOW LISTS", &["list", "items"]),
];

#[test]
fn admin_console_shows_pgbouncer_columns_pauses_resumes_and_reloads() {
    let agent = TestAgent::start_with_shop(
        "[pooler]\ndefault_pool_size = 2\nadmin_users = [\"ops\"]\nstats_users = [\"crm\"]\n",
    );
    agent.cli_ok(&["tenant", "create", "crm"]);
    agent.cli_ok(&["tenant", "create", "ops"]);
    let rt = runtime();
    rt.block_on(show_commands_use_pgbouncer_columns(&agent));
    rt.block_on(console_access_follows_admin_and_stats_users(&agent));
    rt.block_on(pause_waits_for_transactions_and_holds_queries(&agent));
    rt.block_on(reload_applies_settings_without_dropping_clients(&agent));
}

/// One admin console command on `client`, failing the test on error.
async fn admin(client: &tokio_postgres::Client, what: &str) -> Table {
    table(client, what)
        .await
        .unwrap_or_else(|e| panic!("{what}: {e:?}"))
}

/// Polls the console's `SHOW what` until `ok` accepts it; fails after 30 s with the last table.
async fn wait_shown(
    console: &tokio_postgres::Client,
    what: &str,
    ok: impl Fn(&Table) -> bool,
) -> Table {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let shown = admin(console, what).await;
        if ok(&shown) {
            return shown;
        }
        assert!(
            Instant::now() < deadline,
            "{what} not as wanted after 30 s: {shown:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The first `shop` row's `column` in `table`.
fn shop_value(table: &Table, key: &str, column: &str) -> String {
    let rows = table.rows_where(key, "shop");
    table.get(rows[0], column).to_owned()
}

/// The console over TCP as tenant `user` with its password.
fn console_url(agent: &TestAgent, user: &str) -> String {
    agent.pooler_url(user, &agent.secret(user, "password"), "pgbouncer", "prefer")
}

async fn show_commands_use_pgbouncer_columns(agent: &TestAgent) {
    let shop = connect(&agent.tenant_url("shop")).await;
    assert_eq!(one(&shop, "select current_user").await, "shop");
    let console = console(agent).await;
    for (command, columns) in SHOW_COLUMNS {
        let mut expected = columns.to_vec();
        if *command == "SHOW CLIENTS" {
            // Ours, after PgBouncer's: why a client is pinned to its server connection.
            expected.push("pinned");
        }
        assert_eq!(
            admin(&console, command).await.columns,
            expected,
            "{command}"
        );
    }

    let pools = admin(&console, "SHOW POOLS").await;
    let rows = pools.rows_where("database", "shop");
    assert_eq!(rows.len(), 1, "SHOW POOLS: {pools:?}");
    assert_eq!(pools.get(rows[0], "user"), "shop");
    assert_eq!(pools.get(rows[0], "pool_mode"), "transaction");

    let stats = admin(&console, "SHOW STATS").await;
    let rows = stats.rows_where("database", "shop");
    assert_eq!(rows.len(), 1, "SHOW STATS: {stats:?}");
    for counter in ["total_xact_count", "total_query_count", "total_received"] {
        let value: u64 = stats.get(rows[0], counter).parse().unwrap();
        assert!(value > 0, "SHOW STATS {counter} = 0 after a query");
    }

    let clients = admin(&console, "SHOW CLIENTS").await;
    let rows = clients.rows_where("user", "shop");
    assert_eq!(rows.len(), 1, "SHOW CLIENTS: {clients:?}");
    assert_eq!(clients.get(rows[0], "type"), "C");
    assert_eq!(clients.get(rows[0], "database"), "shop");
    assert_eq!(clients.get(rows[0], "addr"), "127.0.0.1");

    let servers = admin(&console, "SHOW SERVERS").await;
    let rows = servers.rows_where("user", "shop");
    assert_eq!(rows.len(), 1, "SHOW SERVERS: {servers:?}");
    assert_eq!(servers.get(rows[0], "type"), "S");
    assert_eq!(servers.get(rows[0], "state"), "idle");

    let databases = admin(&console, "SHOW DATABASES").await;
    let rows = databases.rows_where("name", "shop");
    assert_eq!(rows.len(), 1, "SHOW DATABASES: {databases:?}");
    assert_eq!(databases.get(rows[0], "pool_size"), "2");
    assert_eq!(databases.get(rows[0], "paused"), "0");
    assert_eq!(databases.rows_where("name", "pgbouncer").len(), 1);

    let config = admin(&console, "SHOW CONFIG").await;
    let rows = config.rows_where("key", "default_pool_size");
    assert_eq!(rows.len(), 1, "SHOW CONFIG: {config:?}");
    assert_eq!(config.get(rows[0], "value"), "2");

    let version = admin(&console, "SHOW VERSION").await;
    assert!(
        version
            .get(&version.rows[0], "version")
            .starts_with("PgBouncer 1.25.2 "),
        "SHOW VERSION: {version:?}"
    );

    let lists = admin(&console, "SHOW LISTS").await;
    let names: Vec<&str> = lists.rows.iter().map(|r| lists.get(r, "list")).collect();
    for name in [
        "databases",
        "users",
        "pools",
        "used_clients",
        "used_servers",
    ] {
        assert!(names.contains(&name), "SHOW LISTS has no {name}: {names:?}");
    }
}

async fn console_access_follows_admin_and_stats_users(agent: &TestAgent) {
    // shop is in neither list: its login to the console is refused, after its password.
    let refused = try_connect(&console_url(agent, "shop"))
        .await
        .expect_err("a tenant not in admin_users/stats_users logged in to the console");
    assert_eq!(
        (sqlstate(&refused), message(&refused)),
        ("28000".to_owned(), "not allowed".to_owned()),
        "{refused:?}"
    );

    let stats = connect(&console_url(agent, "crm")).await;
    assert_eq!(admin(&stats, "SHOW POOLS").await.columns[0], "database");
    let paused = table(&stats, "PAUSE shop")
        .await
        .expect_err("a stats_users role could PAUSE");
    assert_eq!(
        (sqlstate(&paused), message(&paused)),
        ("42501".to_owned(), "admin access needed".to_owned())
    );
    let databases = admin(&stats, "SHOW DATABASES").await;
    let rows = databases.rows_where("name", "shop");
    assert_eq!(
        databases.get(rows[0], "paused"),
        "0",
        "PAUSE by crm took effect"
    );
    let url = agent.tenant_url("shop");
    let shop = connect(&url).await;
    assert_eq!(one(&shop, "select 'not paused'").await, "not paused");
}

async fn pause_waits_for_transactions_and_holds_queries(agent: &TestAgent) {
    let url = agent.tenant_url("shop");
    let a = connect(&url).await;
    exec(&a, "create table t (id int)").await;
    exec(&a, "begin; insert into t values (1)").await;
    let b = connect(&url).await;
    assert_eq!(one(&b, "select 'b before pause'").await, "b before pause");

    let pauser = console(agent).await;
    let watcher = console(agent).await;
    let pause = tokio::spawn(async move {
        let result = pauser.simple_query("PAUSE shop").await.map(|_| ());
        (pauser, result, Instant::now())
    });
    // PAUSE has started (the pool is marked paused) and waits for a's transaction.
    wait_shown(&watcher, "SHOW DATABASES", |t| {
        shop_value(t, "name", "paused") == "1"
    })
    .await;
    assert!(
        !pause.is_finished(),
        "PAUSE returned while a transaction was still open"
    );
    let committed = Instant::now();
    exec(&a, "commit").await;
    let (_pauser, result, paused_at) = within(Duration::from_secs(10), "PAUSE", pause)
        .await
        .unwrap();
    result.unwrap_or_else(|e| panic!("PAUSE: {e:?}"));
    assert!(paused_at >= committed, "PAUSE returned before the commit");

    let console = console(agent).await;
    let databases = admin(&console, "SHOW DATABASES").await;
    let rows = databases.rows_where("name", "shop");
    assert_eq!(databases.get(rows[0], "paused"), "1");

    // While paused, queries wait: from a connected client and from a new one.
    let waiting_b = tokio::spawn(async move {
        b.query_one("select 'b after resume'", &[])
            .await
            .map(|r| r.get::<_, String>(0))
    });
    let url_c = url.clone();
    let waiting_c = tokio::spawn(async move {
        let c = connect(&url_c).await;
        c.query_one("select count(*)::int from t", &[])
            .await
            .map(|r| r.get::<_, i32>(0))
    });
    // Both are held: SHOW POOLS counts them as waiting clients.
    wait_shown(&console, "SHOW POOLS", |t| {
        shop_value(t, "database", "cl_waiting") == "2"
    })
    .await;
    assert!(
        !waiting_b.is_finished(),
        "a query ran (or failed) during PAUSE"
    );
    assert!(
        !waiting_c.is_finished(),
        "a new client's query ran (or failed) during PAUSE"
    );

    // An admin_users role resumes over TCP; the held queries then succeed.
    let ops = connect(&console_url(agent, "ops")).await;
    admin(&ops, "RESUME shop").await;
    let b_result = within(Duration::from_secs(10), "query held by PAUSE", waiting_b)
        .await
        .unwrap();
    assert_eq!(b_result.unwrap(), "b after resume");
    let c_result = within(
        Duration::from_secs(10),
        "new client held by PAUSE",
        waiting_c,
    )
    .await
    .unwrap();
    assert_eq!(c_result.unwrap(), 1);
    let databases = admin(&console, "SHOW DATABASES").await;
    let rows = databases.rows_where("name", "shop");
    assert_eq!(databases.get(rows[0], "paused"), "0");
}

async fn reload_applies_settings_without_dropping_clients(agent: &TestAgent) {
    let url = agent.tenant_url("shop");
    let d = connect(&url).await;
    exec(&d, "begin; insert into t values (2)").await;

    let path = agent.config_path();
    let mut config: toml::Table = toml::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
    let pooler = config
        .get_mut("pooler")
        .and_then(toml::Value::as_table_mut)
        .unwrap();
    pooler.insert("default_pool_size".into(), toml::Value::Integer(7));
    fs::write(&path, toml::to_string(&config).unwrap()).unwrap();

    let console = console(agent).await;
    admin(&console, "RELOAD").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let config = admin(&console, "SHOW CONFIG").await;
        let rows = config.rows_where("key", "default_pool_size");
        if config.get(rows[0], "value") == "7" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "SHOW CONFIG default_pool_size is still {} 10 s after RELOAD",
            config.get(rows[0], "value")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let databases = admin(&console, "SHOW DATABASES").await;
    let rows = databases.rows_where("name", "shop");
    assert_eq!(databases.get(rows[0], "pool_size"), "7");
    // The client in the middle of a transaction kept its connection and its transaction.
    exec(&d, "commit").await;
    assert_eq!(one(&d, "select count(*) from t").await, "2");

    // The new size is in effect: five open transactions at once, where two was the limit.
    let mut holders = Vec::new();
    for _ in 0..5 {
        let client = connect(&url).await;
        let pid = within(
            Duration::from_secs(5),
            "a transaction beyond the old pool size",
            one(&client, "begin; select pg_backend_pid()"),
        )
        .await;
        holders.push((client, pid));
    }
    let mut pids: Vec<&String> = holders.iter().map(|(_, pid)| pid).collect();
    pids.sort();
    pids.dedup();
    assert_eq!(
        pids.len(),
        5,
        "five transactions on {} backends",
        pids.len()
    );
    for (client, _) in &holders {
        exec(client, "commit").await;
    }
}
