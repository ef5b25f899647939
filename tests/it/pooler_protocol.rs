//! Pooler protocol: psql's simple queries (multi-statement, errors mid-transaction, COPY) and
//! tokio-postgres's extended protocol (prepared statements over rotating server connections,
//! pipelining, notices), and session parameters that follow the client in transaction mode.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::fs;
use std::time::Duration;

use tokio::task::JoinSet;

use crate::support::pooler::{
    connect, connect_with_notices, exec, one, runtime, sqlstate, table, within, DEADLINE,
};
use crate::support::psql::{psql_command, query, query_fails};
use crate::support::{run, stderr_of, stdout_of, TestAgent, COMMAND_TIMEOUT};

const POOL_SIZE: usize = 2;

#[test]
fn simple_and_extended_protocol_work_through_transaction_pooling() {
    let agent = TestAgent::start_with_shop("[pooler]\ndefault_pool_size = 2\n");
    let url = agent.tenant_url("shop");
    assert!(
        url.contains(&format!(":{}/", agent.pooler_port())),
        "database_url does not point at the pooler: {url}"
    );

    psql_simple_queries(&url);
    psql_error_mid_transaction(&agent, &url);
    psql_copy_roundtrip(&agent, &url);

    let rt = runtime();
    rt.block_on(prepared_statements_over_rotating_servers(&url));
    rt.block_on(pipelining_and_notices(&url));
    rt.block_on(session_parameters_follow_the_client(&url));
}

fn psql_simple_queries(url: &str) {
    // Through the pooler, the session is on PostgreSQL's unix socket, not on TCP.
    assert_eq!(
        query(
            url,
            "select current_user || '|' || coalesce(inet_server_port()::text, 'unix')"
        ),
        "shop|unix"
    );
    // ParameterStatus at login: what libpq reports is what the server has.
    assert_eq!(
        query(url, "\\echo :SERVER_VERSION_NAME :ENCODING"),
        query(url, "select current_setting('server_version') || ' UTF8'")
    );
    // Several statements in one Query message, one implicit transaction.
    assert_eq!(
        query(
            url,
            "create table notes (id int); insert into notes values (1), (2); \
             select count(*) from notes"
        ),
        "2"
    );
    // An error in the middle of a multi-statement query undoes the whole of it.
    let failed = query_fails(
        url,
        "insert into notes values (10); select 1/0; insert into notes values (11)",
    );
    assert!(failed.contains("division by zero"), "{failed}");
    assert_eq!(query(url, "select count(*) from notes"), "2");
}

/// Runs a psql script file over `url` with ON_ERROR_STOP off; returns (stdout, stderr).
fn psql_script(agent: &TestAgent, url: &str, name: &str, script: &str) -> (String, String) {
    let path = agent.dir().join(name);
    fs::write(&path, script).unwrap();
    let mut cmd = psql_command();
    cmd.args(["-v", "ON_ERROR_STOP=0", "-d", url, "-f"])
        .arg(&path);
    let out = run(&mut cmd, COMMAND_TIMEOUT);
    (stdout_of(&out).trim().to_owned(), stderr_of(&out))
}

fn psql_error_mid_transaction(agent: &TestAgent, url: &str) {
    let script = "begin;\n\
                  insert into notes values (3);\n\
                  select 1/0;\n\
                  select 'ran in an aborted transaction';\n\
                  rollback;\n\
                  select 'after rollback: ' || count(*) from notes;\n";
    let (stdout, stderr) = psql_script(agent, url, "abort.sql", script);
    assert!(stderr.contains("division by zero"), "stderr: {stderr}");
    // The failed transaction stayed on its server connection until ROLLBACK.
    assert!(
        stderr.contains("current transaction is aborted"),
        "stderr: {stderr}"
    );
    assert_eq!(stdout, "after rollback: 2", "stderr: {stderr}");
}

fn psql_copy_roundtrip(agent: &TestAgent, url: &str) {
    query(url, "create table items (id int primary key, name text)");
    // Every name needs CSV quoting, so COPY TO writes the file back byte for byte; 20,000
    // rows cross many buffer and message boundaries.
    let mut csv = String::new();
    for i in 1..=20_000 {
        writeln!(csv, "{i},\"item \"\"{i}\"\", with comma\nsecond line ü\"").unwrap();
    }
    let input = agent.dir().join("items.csv");
    let output = agent.dir().join("items.out.csv");
    fs::write(&input, &csv).unwrap();
    let script = format!(
        "\\copy items from '{}' with (format csv)\n\
         select 'loaded ' || count(*) || ' ' || sum(id) from items;\n\
         \\copy (select id, name from items order by id) to '{}' with (format csv)\n\
         \\copy items from '{}' with (format csv)\n\
         select 'still usable after a failed copy: ' || count(*) from items;\n",
        input.display(),
        output.display(),
        input.display()
    );
    let (stdout, stderr) = psql_script(agent, url, "copy.sql", &script);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        [
            "loaded 20000 200010000",
            "still usable after a failed copy: 20000"
        ],
        "stderr: {stderr}"
    );
    // The second COPY FROM failed (duplicate keys) and the session went on.
    assert!(stderr.contains("duplicate key"), "stderr: {stderr}");
    let copied = fs::read_to_string(&output).unwrap();
    assert!(
        copied == csv,
        "COPY TO STDOUT did not return what COPY FROM STDIN loaded"
    );
    // COPY TO STDOUT as a plain query.
    assert_eq!(
        query(
            url,
            "copy (select id, name from items where id = 7) to stdout"
        ),
        "7\titem \"7\", with comma\\nsecond line ü"
    );
}

async fn prepared_statements_over_rotating_servers(url: &str) {
    // Six clients, two server connections: each client's named statements must be prepared
    // on whichever server connection serves its next transaction.
    let mut clients = JoinSet::new();
    for k in 1..=6i32 {
        let url = url.to_owned();
        clients.spawn(async move {
            let mut client = connect(&url).await;
            let sql = format!("select $1::int * {k}, pg_backend_pid()");
            let statement = within(DEADLINE, "prepare", client.prepare(&sql))
                .await
                .unwrap();
            let mut pids = HashSet::new();
            for i in 0..25i32 {
                let tx = within(DEADLINE, "begin", client.transaction())
                    .await
                    .unwrap();
                let row = within(DEADLINE, "execute", tx.query_one(&statement, &[&i]))
                    .await
                    .unwrap_or_else(|e| panic!("client {k}, transaction {i}: {e:?}"));
                assert_eq!(row.get::<_, i32>(0), i * k, "client {k}");
                pids.insert(row.get::<_, i32>(1));
                within(DEADLINE, "commit", tx.commit()).await.unwrap();
                // The same statement outside an explicit transaction.
                let row = within(DEADLINE, "execute", client.query_one(&statement, &[&i]))
                    .await
                    .unwrap_or_else(|e| panic!("client {k}, autocommit {i}: {e:?}"));
                assert_eq!(row.get::<_, i32>(0), i * k, "client {k}");
                pids.insert(row.get::<_, i32>(1));
            }
            pids
        });
    }
    let mut all = HashSet::new();
    let mut rotated = 0;
    while let Some(pids) = within(Duration::from_secs(50), "six clients", clients.join_next()).await
    {
        let pids = pids.unwrap();
        rotated += usize::from(pids.len() > 1);
        all.extend(pids);
    }
    assert!(
        all.len() <= POOL_SIZE,
        "default_pool_size = {POOL_SIZE}, yet {} server backends served: {all:?}",
        all.len()
    );
    assert!(
        rotated > 0,
        "no client ever moved to another server connection"
    );
}

async fn pipelining_and_notices(url: &str) {
    let client = connect(url).await;
    // Concurrent queries on one client are pipelined; the failing one fails alone.
    let (a, b, c, d, e) = within(DEADLINE, "pipelined queries", async {
        tokio::join!(
            client.query_one("select 1::int", &[]),
            client.query_one("select $1::text || 'b'", &[&"a"]),
            client.query_one("select 1/0", &[]),
            client.query_one("select pg_sleep(0.05)::text, 4::int", &[]),
            client.simple_query("select 5; select 6"),
        )
    })
    .await;
    assert_eq!(a.unwrap().get::<_, i32>(0), 1);
    assert_eq!(b.unwrap().get::<_, String>(0), "ab");
    assert_eq!(sqlstate(&c.unwrap_err()), "22012");
    assert_eq!(d.unwrap().get::<_, i32>(1), 4);
    assert_eq!(
        e.unwrap().len(),
        6,
        "two rows, two completions, two descriptions"
    );

    // Pipelined inserts inside one transaction.
    within(
        DEADLINE,
        "create",
        client.batch_execute("create table piped (id int)"),
    )
    .await
    .unwrap();
    within(DEADLINE, "pipelined transaction", async {
        client.batch_execute("begin").await?;
        let inserts = tokio::join!(
            client.execute("insert into piped values ($1)", &[&1i32]),
            client.execute("insert into piped values ($1)", &[&2i32]),
            client.execute("insert into piped values ($1)", &[&3i32]),
        );
        inserts.0?;
        inserts.1?;
        inserts.2?;
        client.batch_execute("commit").await
    })
    .await
    .unwrap();
    assert_eq!(one(&client, "select sum(id) from piped").await, "6");

    // NOTICEs reach the client, from simple and from extended queries.
    let (noisy, mut notices) = connect_with_notices(url).await;
    let raise = "do $$ begin raise notice 'hello % from the server', 42; end $$";
    within(DEADLINE, "DO", noisy.batch_execute(raise))
        .await
        .unwrap();
    let notice = within(DEADLINE, "a NOTICE", notices.recv()).await;
    assert_eq!(notice.as_deref(), Some("hello 42 from the server"));
    within(DEADLINE, "DO", noisy.execute(raise, &[]))
        .await
        .unwrap();
    let notice = within(DEADLINE, "a second NOTICE", notices.recv()).await;
    assert_eq!(notice.as_deref(), Some("hello 42 from the server"));
}

async fn session_parameters_follow_the_client(url: &str) {
    let fresh = connect(url).await;
    let default_tz = one(&fresh, "show timezone").await;
    assert_ne!(default_tz, "Asia/Tokyo");

    let a = connect(url).await;
    let set = table(
        &a,
        "begin; set application_name = 'client-a'; set timezone = 'Asia/Tokyo'; \
         select pg_backend_pid(); commit",
    )
    .await
    .unwrap();
    let a_server = set.rows[0][0].clone().unwrap();

    // Two other clients hold both server connections; one of them is where A ran SET.
    let b = connect(url).await;
    let c = connect(url).await;
    let mut holders = Vec::new();
    for client in [&b, &c] {
        let t = table(
            client,
            "begin; select pg_backend_pid(), current_setting('timezone'), \
             current_setting('application_name')",
        )
        .await
        .unwrap();
        let row = t.rows[0].clone();
        assert_eq!(
            row[1].as_deref(),
            Some(default_tz.as_str()),
            "another client sees A's SET TimeZone"
        );
        assert_ne!(
            row[2].as_deref(),
            Some("client-a"),
            "another client sees A's SET application_name"
        );
        holders.push((client, row[0].clone().unwrap()));
    }
    assert_ne!(holders[0].1, holders[1].1, "B and C share a backend");
    let other = holders
        .iter()
        .position(|(_, pid)| *pid != a_server)
        .unwrap();
    // Free the server A did not use: A's next transaction must run there, with A's values.
    exec(holders[other].0, "commit").await;
    let t = table(
        &a,
        "select pg_backend_pid(), current_setting('timezone'), \
         current_setting('application_name')",
    )
    .await
    .unwrap();
    let row = &t.rows[0];
    assert_ne!(row[0].as_deref(), Some(a_server.as_str()));
    assert_eq!(
        row[1].as_deref(),
        Some("Asia/Tokyo"),
        "A's TimeZone was lost"
    );
    assert_eq!(
        row[2].as_deref(),
        Some("client-a"),
        "A's application_name was lost"
    );
    assert_eq!(one(&a, "show timezone").await, "Asia/Tokyo");
    exec(holders[1 - other].0, "commit").await;
    assert_eq!(one(&fresh, "show timezone").await, default_tz);
}
