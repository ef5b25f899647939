//! Attack: make the pooler hold a huge message in memory. A logged-in tenant asks for a
//! 150 MB row and sends 150 MB through a Bind parameter, a simple Query and a COPY; the
//! agent's resident memory (VmRSS, and VmHWM for the peak) must stay within a few MB of idle
//! and come back afterwards, and every byte must arrive intact. `max_packet_size` keeps
//! PgBouncer's meaning: a larger message, either way, closes the connection with 08P01.

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures::SinkExt;
use postgres_protocol::message::frontend;
use tokio_postgres::{Client, SimpleQueryMessage};

use crate::support::pooler::{
    connect, exec, message, one, runtime, sqlstate, try_connect_config, within,
};
use crate::support::TestAgent;

/// 150,000,000 characters: 4,687,500 md5 hex digests, different all along, so that a piece
/// lost, repeated or swapped shows in the comparison.
const BIG_ROWS: u32 = 4_687_500;
const BIG_LENGTH: usize = 150_000_000;

/// What the pooler may use above idle while a 150 MB message passes.
const PEAK_ALLOWANCE_KIB: u64 = 32 * 1024;
/// What may stay resident afterwards.
const RETAINED_ALLOWANCE_KIB: u64 = 8 * 1024;

/// How long resident memory may take to settle, or to be handed back, after a message.
const SETTLE_LIMIT: Duration = Duration::from_secs(30);

/// A long way to move 150 MB, on a loaded two-core machine.
const BIG_DEADLINE: Duration = Duration::from_secs(180);

#[test]
fn a_150_mb_row_and_150_mb_uploads_pass_through_the_pooler_in_bounded_memory() {
    let agent = TestAgent::start_with_shop("");
    let memory = Memory::of(&agent);
    let url = agent.tenant_url("shop");
    runtime().block_on(async {
        let client = connect(&url).await;
        exec(&client, "create table up (how text, t text)").await;
        let sql = |rows: u32, table: &str| {
            format!(
                "create table {table} as select string_agg(md5(i::text), '') as t \
                 from generate_series(1, {rows}) i"
            )
        };
        exec(&client, &sql(BIG_ROWS / 150, "small")).await;
        within(
            BIG_DEADLINE,
            "creating the 150 MB value",
            client.batch_execute(&sql(BIG_ROWS, "src")),
        )
        .await
        .unwrap();

        // The same round at 1 MB first: the allocator's arenas and the server connection
        // exist before idle is measured.
        round_trip(&client, "small", 1_000_000).await;
        exec(&client, "truncate up").await;
        let idle = memory.settled_rss_kib().await;

        let peak = round_trip_measured(&client, &memory, BIG_LENGTH).await;
        let retained = memory
            .rss_kib_once_below(idle + RETAINED_ALLOWANCE_KIB)
            .await;
        println!("agent memory: idle {idle} KiB, peaks {peak:?} KiB, after {retained} KiB");
        for (what, peak) in peak {
            assert!(
                peak < idle + PEAK_ALLOWANCE_KIB,
                "{what}: the agent's resident memory peaked at {peak} KiB, idle was {idle} KiB"
            );
        }
        assert!(
            retained < idle + RETAINED_ALLOWANCE_KIB,
            "after 150 MB messages the agent keeps {retained} KiB resident, idle was {idle} KiB"
        );

        // Every byte arrived: each upload equals the source, in PostgreSQL's own comparison.
        let same = one(
            &client,
            "select string_agg(how || ':' || (t = (select t from src))::text, ',' order by how) \
             from up",
        )
        .await;
        assert_eq!(same, "bind:true,copy:true,query:true");
        // And the pooler still serves small queries on the same connection.
        assert_eq!(one(&client, "select 'still here'").await, "still here");
        // Dropped, their pages need no writing at the agent's shutdown checkpoint.
        exec(&client, "drop table src, small, up").await;
    });
}

/// Downloads the row of `table`, then uploads it three ways: Bind, simple Query, COPY.
async fn round_trip(client: &Client, table: &str, length: usize) -> String {
    let row = client
        .query_one(&format!("select t from {table}"), &[])
        .await
        .unwrap();
    let value: String = row.get(0);
    assert_eq!(value.len(), length, "the row arrived with another length");
    for how in ["bind", "query", "copy"] {
        upload(client, how, &value).await;
    }
    value
}

/// The same round with the row of `src`, the agent's peak memory taken for each step.
async fn round_trip_measured(
    client: &Client,
    memory: &Memory,
    length: usize,
) -> Vec<(&'static str, u64)> {
    let mut peaks = Vec::new();
    memory.reset_peak();
    let value: String = within(
        BIG_DEADLINE,
        "the 150 MB row",
        client.query_one("select t from src", &[]),
    )
    .await
    .unwrap()
    .get(0);
    assert_eq!(value.len(), length, "the row arrived with another length");
    peaks.push(("download", memory.peak_kib()));
    for how in ["bind", "query", "copy"] {
        memory.reset_peak();
        within(BIG_DEADLINE, how, upload(client, how, &value)).await;
        peaks.push((how, memory.peak_kib()));
    }
    peaks
}

async fn upload(client: &Client, how: &str, value: &str) {
    match how {
        // tokio-postgres names its statements: in transaction mode the pooler renames the
        // Bind's statement and streams the parameter behind it.
        "bind" => {
            client
                .execute("insert into up values ('bind', $1)", &[&value])
                .await
                .unwrap();
        }
        "query" => {
            client
                .simple_query(&format!("insert into up values ('query', '{value}')"))
                .await
                .unwrap();
        }
        _ => {
            // One CopyData message holds the whole line.
            let sink = client.copy_in("copy up (how, t) from stdin").await.unwrap();
            futures::pin_mut!(sink);
            sink.send(Bytes::from(format!("copy\t{value}\n")))
                .await
                .unwrap();
            assert_eq!(sink.finish().await.unwrap(), 1);
        }
    }
}

#[test]
fn in_session_mode_large_messages_stream_too_and_buffers_shrink_between_transactions() {
    // Session mode keeps the server connection and the client's task: buffers are let go
    // when a transaction ends instead of when the connection is released.
    let agent = TestAgent::start_with_shop("[pooler]\npool_mode = \"session\"\n");
    let memory = Memory::of(&agent);
    let url = agent.tenant_url("shop");
    runtime().block_on(async {
        let client = connect(&url).await;
        exec(&client, "create table up (how text, t text)").await;
        // 20 MB: the paths are the same as at 150 MB, in a fraction of the time.
        exec(
            &client,
            &format!(
                "create table src as select string_agg(md5(i::text), '') as t \
                 from generate_series(1, {}) i",
                BIG_ROWS / 150 * 20
            ),
        )
        .await;
        round_trip(&client, "src", 20_000_000).await;
        exec(&client, "truncate up").await;
        let idle = memory.settled_rss_kib().await;
        let peaks = round_trip_measured(&client, &memory, 20_000_000).await;
        let retained = memory
            .rss_kib_once_below(idle + RETAINED_ALLOWANCE_KIB)
            .await;
        println!("session mode: idle {idle} KiB, peaks {peaks:?} KiB, after {retained} KiB");
        for (what, peak) in peaks {
            assert!(
                peak < idle + PEAK_ALLOWANCE_KIB,
                "{what}: peak {peak} KiB, idle {idle} KiB"
            );
        }
        assert!(
            retained < idle + RETAINED_ALLOWANCE_KIB,
            "{retained} KiB kept, idle {idle} KiB"
        );
        let same = one(
            &client,
            "select count(*) filter (where t = (select t from src)) from up",
        )
        .await;
        assert_eq!(same, "3");
        exec(&client, "drop table src, up").await;
    });
}

#[test]
fn max_packet_size_refuses_a_larger_message_either_way_like_pgbouncer() {
    // 200 kB: over the size from which the pooler streams (64 KiB), so that both paths count.
    let agent = TestAgent::start_with_shop("[pooler]\nmax_packet_size = 200000\n");
    let password = agent.secret("shop", "password");
    // Over the unix socket the pooler's last words are never lost to a TCP reset.
    let config = agent.pooler_unix_config("shop", &password, "shop");
    runtime().block_on(async {
        let client = try_connect_config(&config).await.unwrap();
        // Under the limit, streamed or not, both ways.
        for length in [1_000, 150_000] {
            let text = "y".repeat(length);
            assert_eq!(one(&client, &format!("select '{text}'")).await, text);
        }

        // A 300 kB row: the server connection is closed and the client told why.
        let error = simple_error(&client, "select repeat('x', 300000)").await;
        assert_eq!(sqlstate(&error), "08P01", "{error:?}");
        assert!(message(&error).contains("max_packet_size"), "{error:?}");
        assert_client_closed(&client).await;

        // A 300 kB query: refused from its header, before any of it reaches PostgreSQL.
        let client = try_connect_config(&config).await.unwrap();
        exec(&client, "create table marks (n int)").await;
        let error = simple_error(
            &client,
            &format!("insert into marks select length('{}')", "y".repeat(300_000)),
        )
        .await;
        assert_eq!(sqlstate(&error), "08P01", "{error:?}");
        assert!(message(&error).contains("bad packet header"), "{error:?}");
        assert_client_closed(&client).await;

        // Nothing of it ran, and the pooler serves the next client on clean connections.
        let client = connect(&agent.tenant_url("shop")).await;
        assert_eq!(one(&client, "select count(*) from marks").await, "0");
        assert_eq!(one(&client, "select 'served'").await, "served");
    });
}

async fn simple_error(client: &Client, sql: &str) -> tokio_postgres::Error {
    match within(
        Duration::from_secs(30),
        sql.get(..40).unwrap_or(sql),
        client.simple_query(sql),
    )
    .await
    {
        Ok(messages) => {
            let rows = messages
                .iter()
                .filter(|m| matches!(m, SimpleQueryMessage::Row(_)))
                .count();
            panic!("a message over max_packet_size passed ({rows} rows back)")
        }
        Err(e) => e,
    }
}

async fn assert_client_closed(client: &Client) {
    let after = within(
        Duration::from_secs(10),
        "a query after the refusal",
        client.simple_query("select 1"),
    )
    .await;
    assert!(
        after.is_err(),
        "the connection stayed open after the refusal"
    );
}

#[test]
fn a_client_that_stops_half_way_through_a_large_message_holds_no_server_connection() {
    // One server connection: whoever holds it blocks everyone else.
    let agent = TestAgent::start_with_shop(
        "[pooler]\ndefault_pool_size = 1\nidle_transaction_timeout = 2\n",
    );
    let password = agent.secret("shop", "password");
    let mut attacker = logged_in_raw_client(agent.pooler_port(), &password);
    // A query, then the first 100 kB of a 1 MB CopyData (ignored by PostgreSQL outside
    // COPY), and silence. The query's ReadyForQuery must not release the connection with
    // half a message in it, and the silence must not hold it for ever.
    let mut out = BytesMut::new();
    frontend::query("select 1", &mut out).unwrap();
    out.extend_from_slice(b"d");
    out.extend_from_slice(&(1_000_000u32 + 4).to_be_bytes());
    out.extend_from_slice(&[b'x'; 100_000]);
    attacker.write_all(&out).unwrap();

    let started = Instant::now();
    runtime().block_on(async {
        let client = connect(&agent.tenant_url("shop")).await;
        let answer = within(
            Duration::from_secs(30),
            "a query after the stalled client",
            one(&client, "select 'next'"),
        )
        .await;
        assert_eq!(answer, "next");
    });
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "the next client was served in {:?}, on the stalled client's connection",
        started.elapsed()
    );
    let reply = read_until_closed(&mut attacker);
    assert!(
        String::from_utf8_lossy(&reply).contains("idle transaction timeout"),
        "the stalled client was not told why: {:?}",
        String::from_utf8_lossy(&reply)
    );
}

/// A TCP client logged in as `shop` by SCRAM, speaking the protocol by hand.
fn logged_in_raw_client(port: u16, password: &str) -> TcpStream {
    crate::support::raw_client::RawClient::login(port, password).stream
}

fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut reply = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => return reply,
            Ok(n) => reply.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return reply,
            Err(e) => panic!("the stalled client's connection stayed open: {e}"),
        }
    }
}

/// The agent process's memory, from /proc.
struct Memory {
    pid: i32,
}

impl Memory {
    fn of(agent: &TestAgent) -> Memory {
        let memory = Memory {
            pid: agent.pid().expect("the agent runs"),
        };
        // The peak must be resettable (Linux 4.0+), or no peak below could be trusted.
        memory.reset_peak();
        let (rss, peak) = (memory.rss_kib(), memory.peak_kib());
        assert!(
            peak <= rss + 4 * 1024,
            "VmHWM {peak} KiB did not reset to about VmRSS {rss} KiB"
        );
        memory
    }

    fn field_kib(&self, field: &str) -> u64 {
        let path = format!("/proc/{}/status", self.pid);
        let status = fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"));
        status
            .lines()
            .find_map(|line| line.strip_prefix(field))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no {field} in {path}"))
    }

    fn rss_kib(&self) -> u64 {
        self.field_kib("VmRSS:")
    }

    /// VmRSS once it has stopped moving (two samples 250 ms apart within 256 KiB), or its
    /// last value after 30 s.
    async fn settled_rss_kib(&self) -> u64 {
        let deadline = Instant::now() + SETTLE_LIMIT;
        let mut last = self.rss_kib();
        loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let now = self.rss_kib();
            if now.abs_diff(last) <= 256 || Instant::now() > deadline {
                return now;
            }
            last = now;
        }
    }

    /// VmRSS as soon as it is below `limit` (memory handed back to the system), or its last
    /// value after 30 s, for the caller's assertion to show.
    async fn rss_kib_once_below(&self, limit: u64) -> u64 {
        let deadline = Instant::now() + SETTLE_LIMIT;
        loop {
            let now = self.rss_kib();
            if now < limit || Instant::now() > deadline {
                return now;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    fn peak_kib(&self) -> u64 {
        self.field_kib("VmHWM:")
    }

    /// Resets VmHWM to the current RSS.
    fn reset_peak(&self) {
        let path = format!("/proc/{}/clear_refs", self.pid);
        fs::write(&path, "5").unwrap_or_else(|e| panic!("write {path}: {e}"));
    }
}
