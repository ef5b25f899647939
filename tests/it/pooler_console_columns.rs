//! The console's SHOW POOLS, STATS, STATS_TOTALS, STATS_AVERAGES, TOTALS, SOCKETS, CONFIG
//! and VERSION with PgBouncer 1.25's columns in its order (and its column types), and the
//! statistics moving by exactly what a known workload of real psql and pgbench clients
//! does: logins, transactions, queries, server assignments, prepared-statement Parses and
//! Binds.

use std::fs;
use std::time::Duration;

use crate::support::pooler::{console, runtime, table, Table};
use crate::support::psql::query;
use crate::support::{command, run, stderr_of, stdout_of, TestAgent};

pub(crate) const POOLS: &[&str] = &[
    "database",
    "user",
    "cl_active",
    "cl_waiting",
    "cl_active_cancel_req",
    "cl_waiting_cancel_req",
    "sv_active",
    "sv_active_cancel",
    "sv_being_canceled",
    "sv_idle",
    "sv_used",
    "sv_tested",
    "sv_login",
    "maxwait",
    "maxwait_us",
    "pool_mode",
    "load_balance_hosts",
    // Ours, after PgBouncer's.
    "cl_pinned",
];

/// 1.25's SHOW STATS, with `client_login_count` where PgBouncer's next release adds it.
pub(crate) const STATS: &[&str] = &[
    "database",
    "total_server_assignment_count",
    "total_xact_count",
    "total_query_count",
    "total_received",
    "total_sent",
    "total_xact_time",
    "total_query_time",
    "total_wait_time",
    "total_client_parse_count",
    "total_server_parse_count",
    "total_bind_count",
    "total_client_login_count",
    "avg_server_assignment_count",
    "avg_xact_count",
    "avg_query_count",
    "avg_recv",
    "avg_sent",
    "avg_xact_time",
    "avg_query_time",
    "avg_wait_time",
    "avg_client_parse_count",
    "avg_server_parse_count",
    "avg_bind_count",
    "avg_client_login_count",
];

const STATS_TOTALS: &[&str] = &[
    "database",
    "server_assignment_count",
    "xact_count",
    "query_count",
    "bytes_received",
    "bytes_sent",
    "xact_time",
    "query_time",
    "wait_time",
    "client_parse_count",
    "server_parse_count",
    "bind_count",
    "client_login_count",
];

const STATS_AVERAGES: &[&str] = &[
    "database",
    "server_assignment_count",
    "xact_count",
    "query_count",
    "bytes_received",
    "bytes_sent",
    "xact_time",
    "query_time",
    "wait_time",
    "avg_client_parse_count",
    "avg_server_parse_count",
    "avg_bind_count",
    "client_login_count",
];

/// SHOW SOCKETS: SHOW CLIENTS' columns, then PgBouncer's buffer columns.
const SOCKETS: &[&str] = &[
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
    "recv_pos",
    "pkt_pos",
    "pkt_remain",
    "send_pos",
    "send_remain",
    "pkt_avail",
    "send_avail",
];

/// PostgreSQL's type OIDs PgBouncer uses for these columns.
const INT4: u32 = 23;
const NUMERIC: u32 = 1700;

#[test]
fn show_columns_are_pgbouncer_125s_and_stats_move_by_a_known_workload() {
    let agent = TestAgent::start_with_shop("[pooler]\ndefault_pool_size = 2\n");
    let url = agent
        .tenant_url("shop")
        .replace("sslmode=prefer", "sslmode=disable");
    // The pool exists once a client has logged in.
    assert_eq!(query(&url, "select 1"), "1");
    let rt = runtime();
    let show = |what: &str| -> Table {
        rt.block_on(async {
            let console = console(&agent).await;
            table(&console, what)
                .await
                .unwrap_or_else(|e| panic!("{what}: {e:?}"))
        })
    };

    for (command, columns) in [
        ("SHOW POOLS", POOLS),
        ("SHOW STATS", STATS),
        ("SHOW STATS_TOTALS", STATS_TOTALS),
        ("SHOW STATS_AVERAGES", STATS_AVERAGES),
        ("SHOW SOCKETS", SOCKETS),
        (
            "SHOW USERS",
            &[
                "name",
                "pool_size",
                "reserve_pool_size",
                "pool_mode",
                "max_user_connections",
                "current_connections",
                "max_user_client_connections",
                "current_client_connections",
            ][..],
        ),
        (
            "SHOW CONFIG",
            &["key", "value", "default", "changeable"][..],
        ),
        ("SHOW VERSION", &["version"][..]),
    ] {
        assert_eq!(show(command).columns, columns, "{command}");
    }
    column_types_are_pgbouncers(&agent);

    // SHOW TOTALS: one row per counter, totals then averages.
    let totals = show("SHOW TOTALS");
    let names: Vec<&str> = totals.rows.iter().map(|r| totals.get(r, "name")).collect();
    for name in [
        "total_server_assignment_count",
        "total_ps_bind_count",
        "total_client_login_count",
        "avg_wait_time",
    ] {
        assert!(names.contains(&name), "SHOW TOTALS lacks {name}: {names:?}");
    }

    // SHOW VERSION: the first two words are PgBouncer's, as tools parse them.
    let version = show("SHOW VERSION");
    let version = version.get(&version.rows[0], "version").to_owned();
    assert!(
        version.starts_with("PgBouncer 1.25.2 ") && version.contains("pgplatform"),
        "{version}"
    );

    // SHOW CONFIG: a default for every key, and `changeable` as a reload sorts keys.
    let config = show("SHOW CONFIG");
    let row = |key: &str| config.rows_where("key", key)[0].clone();
    assert_eq!(config.get(&row("default_pool_size"), "value"), "2");
    assert_eq!(config.get(&row("default_pool_size"), "default"), "20");
    assert_eq!(config.get(&row("default_pool_size"), "changeable"), "yes");
    assert_eq!(config.get(&row("listen_port"), "changeable"), "no");
    assert_eq!(config.get(&row("client_tls_sslmode"), "changeable"), "no");
    for r in &config.rows {
        assert!(r[2].is_some(), "SHOW CONFIG: no default for {:?}", r[0]);
    }

    // A known workload: three psql logins of one query each.
    let before = stats_of(&show("SHOW STATS_TOTALS"));
    for _ in 0..3 {
        assert_eq!(query(&url, "select 1"), "1");
    }
    let after = stats_of(&show("SHOW STATS_TOTALS"));
    let moved = |column: &str| after.value(column) - before.value(column);
    assert_eq!(moved("client_login_count"), 3, "{after:?}");
    assert_eq!(moved("xact_count"), 3, "{after:?}");
    assert_eq!(moved("query_count"), 3, "{after:?}");
    assert_eq!(moved("server_assignment_count"), 3, "{after:?}");
    assert!(moved("bytes_received") > 0 && moved("bytes_sent") > 0);
    assert_eq!(moved("client_parse_count"), 0);
    assert_eq!(moved("bind_count"), 0);

    // pgbench -M prepared, one client, 25 transactions of one statement: the client
    // prepares it once, binds it 25 times; the pooler prepares it on each server
    // connection that serves it (at most the pool's 2).
    let script = agent.dir().join("one.sql");
    fs::write(&script, "select 1;\n").unwrap();
    let before = stats_of(&show("SHOW STATS_TOTALS"));
    let bench = run(
        command("/usr/bin/pgbench")
            .env_clear()
            .args(["-n", "-M", "prepared", "-c", "1", "-t", "25", "-f"])
            .arg(&script)
            .arg(&url),
        Duration::from_secs(60),
    );
    assert!(
        bench.status.success(),
        "pgbench: {}{}",
        stdout_of(&bench),
        stderr_of(&bench)
    );
    let after = stats_of(&show("SHOW STATS_TOTALS"));
    let moved = |column: &str| after.value(column) - before.value(column);
    assert_eq!(moved("client_parse_count"), 1, "{after:?}");
    assert_eq!(moved("bind_count"), 25, "{after:?}");
    let server_parses = moved("server_parse_count");
    assert!(
        (1..=2).contains(&server_parses),
        "server parses {server_parses}: {after:?}"
    );
    assert!(moved("xact_count") >= 25, "{after:?}");
    assert!(moved("server_assignment_count") >= 25, "{after:?}");

    // SHOW STATS carries the same totals under its own names.
    let stats = show("SHOW STATS");
    let shop = stats.rows_where("database", "shop")[0].clone();
    let total: i64 = stats.get(&shop, "total_bind_count").parse().unwrap();
    assert_eq!(total, after.value("bind_count"));

    // Averages run over the current stats period (here since start, under 60 s): the
    // 28 or more transactions above make at least one per second.
    let averages = show("SHOW STATS_AVERAGES");
    let shop = averages.rows_where("database", "shop")[0].clone();
    let per_second: i64 = averages.get(&shop, "xact_count").parse().unwrap();
    assert!(per_second >= 1, "{averages:?}");
    let xact_time: i64 = averages.get(&shop, "xact_time").parse().unwrap();
    assert!(xact_time > 0, "{averages:?}");

    // SHOW USERS: shop's server connections (idle in the pool) and no client left.
    let users = show("SHOW USERS");
    let shop = users.rows_where("name", "shop")[0].clone();
    let servers: i64 = users.get(&shop, "current_connections").parse().unwrap();
    assert!((1..=2).contains(&servers), "{users:?}");
    assert_eq!(users.get(&shop, "current_client_connections"), "0");
    assert_eq!(shop[3], None, "pool_mode override: {users:?}");

    // SHOW SOCKETS lists the console's own session and the pool's idle servers.
    let sockets = show("SHOW SOCKETS");
    let states: Vec<&str> = sockets
        .rows
        .iter()
        .map(|r| sockets.get(r, "state"))
        .collect();
    assert!(states.contains(&"cl_active"), "{states:?}");
    assert!(states.contains(&"sv_idle"), "{states:?}");
    let servers = sockets.rows_where("type", "S");
    assert!(servers.iter().all(|r| sockets.get(r, "database") == "shop"));
}

/// One database's STATS_TOTALS row, by column.
#[derive(Debug)]
struct Counters(Vec<(String, i64)>);

impl Counters {
    fn value(&self, column: &str) -> i64 {
        self.0
            .iter()
            .find(|(c, _)| c == column)
            .unwrap_or_else(|| panic!("no column {column}"))
            .1
    }
}

fn stats_of(totals: &Table) -> Counters {
    let rows = totals.rows_where("database", "shop");
    assert_eq!(rows.len(), 1, "SHOW STATS_TOTALS: {totals:?}");
    Counters(
        totals
            .columns
            .iter()
            .skip(1)
            .map(|c| (c.clone(), totals.get(rows[0], c).parse().unwrap()))
            .collect(),
    )
}

/// Counts are int4 and statistics numeric, as PgBouncer describes them (psycopg and
/// JDBC map them to int and Decimal/BigDecimal). The console speaks the simple protocol
/// only, whose types no client library hands back, so the RowDescription is read by hand.
fn column_types_are_pgbouncers(agent: &TestAgent) {
    for (command, column, oid) in [
        ("SHOW POOLS", "cl_active", INT4),
        ("SHOW POOLS", "maxwait_us", INT4),
        ("SHOW STATS", "total_xact_count", NUMERIC),
        ("SHOW STATS", "avg_wait_time", NUMERIC),
        ("SHOW STATS_TOTALS", "bind_count", NUMERIC),
        ("SHOW SOCKETS", "send_avail", INT4),
    ] {
        let columns = row_description(agent, command);
        let found = columns
            .iter()
            .find(|(name, _)| name == column)
            .unwrap_or_else(|| panic!("{command}: no column {column} in {columns:?}"));
        assert_eq!(found.1, oid, "{command} {column}");
    }
}

/// The (name, type OID) pairs of `command`'s RowDescription, from the console over the
/// unix socket as the agent's OS user (peer-trusted, so no password exchange).
fn row_description(agent: &TestAgent, command: &str) -> Vec<(String, u32)> {
    use std::io::Write;
    let path = agent
        .socket_dir()
        .join(format!(".s.PGSQL.{}", agent.pooler_port()));
    let mut socket = std::os::unix::net::UnixStream::connect(&path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let startup = crate::support::pooler::startup_packet(
        3,
        0,
        &[("user", "pgplatform"), ("database", "pgbouncer")],
    );
    socket.write_all(&startup).unwrap();
    while read_message(&mut socket).0 != b'Z' {}
    let mut query = vec![b'Q'];
    query.extend_from_slice(&((command.len() + 5) as u32).to_be_bytes());
    query.extend_from_slice(command.as_bytes());
    query.push(0);
    socket.write_all(&query).unwrap();
    loop {
        let (tag, body) = read_message(&mut socket);
        assert_ne!(tag, b'E', "{command}: {}", String::from_utf8_lossy(&body));
        if tag == b'T' {
            return parse_row_description(&body);
        }
    }
}

/// One backend message: its tag and body.
fn read_message(socket: &mut std::os::unix::net::UnixStream) -> (u8, Vec<u8>) {
    use std::io::Read;
    let mut head = [0u8; 5];
    socket.read_exact(&mut head).unwrap();
    let length = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    let mut body = vec![0u8; length - 4];
    socket.read_exact(&mut body).unwrap();
    (head[0], body)
}

fn parse_row_description(body: &[u8]) -> Vec<(String, u32)> {
    let count = u16::from_be_bytes([body[0], body[1]]);
    let mut at = 2;
    let mut columns = Vec::new();
    for _ in 0..count {
        let end = at + body[at..].iter().position(|b| *b == 0).unwrap();
        let name = String::from_utf8_lossy(&body[at..end]).into_owned();
        // After the name: table OID (4), column number (2), type OID (4), size (2),
        // modifier (4), format (2).
        let oid_at = end + 1 + 6;
        let oid = u32::from_be_bytes(body[oid_at..oid_at + 4].try_into().unwrap());
        columns.push((name, oid));
        at = end + 1 + 18;
    }
    columns
}
