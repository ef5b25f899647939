//! psycopg 3 through transaction pooling: prepared statements (prepare_threshold=0) over
//! rotating server connections, pipeline mode, COPY, and a server-side cursor in a transaction.

use std::fs;
use std::time::Duration;

use crate::support::{command, run, skip, stderr_of, stdout_of, TestAgent};

/// Prints one `ok …` line per part; any failed check raises, so the script exits non-zero.
const SCRIPT: &str = r#"
import sys
import psycopg

url = sys.argv[1]

def connect(**kw):
    return psycopg.connect(url, autocommit=True, connect_timeout=10, **kw)

setup = connect()
setup.execute("create table items (id int primary key, name text)")

# Three connections prepare different statements under the same psycopg names (_pg3_0, …)
# and share two server connections; a blocker holding one of them makes them rotate.
QUERIES = [
    ("select %s::int * 10, pg_backend_pid()", lambda i: i * 10),
    ("select %s::int + 1000, pg_backend_pid()", lambda i: i + 1000),
    ("select 'c' || %s::text, pg_backend_pid()", lambda i: "c" + str(i)),
]
conns = [connect(prepare_threshold=0) for _ in QUERIES]
blocker = connect()
pids = set()
for i in range(90):
    k = i % 3
    c = conns[k]
    hold = i % 2 == 0
    if hold:
        blocker.execute("begin")
        blocker.execute("select 1")
    with c.transaction():
        sql, expected = QUERIES[k]
        value, pid = c.execute(sql, (i,)).fetchone()
        assert value == expected(i), (k, i, value)
        pids.add(pid)
        c.execute("insert into items values (%s, %s)", (100000 + i, "prepared"))
        prepared = c.execute(
            "select count(*) from pg_prepared_statements where statement = %s",
            (sql.replace("%s", "$1"),),
        ).fetchone()[0]
        assert prepared >= 1, ("not prepared on the server", k, i)
    # The same statements outside a transaction block.
    value, pid = c.execute(sql, (i,)).fetchone()
    assert value == expected(i), (k, i, value)
    if hold:
        blocker.execute("commit")
assert len(pids) == 2, pids
print("ok prepared", len(pids))

# Pipeline mode: many statements, one round trip; then an error inside a pipeline.
c = conns[0]
with c.pipeline():
    for i in range(100):
        c.execute("insert into items values (%s, %s)", (i, "p%d" % i))
    count = c.execute("select count(*) from items where id < 100").fetchone()[0]
assert count == 100, count
try:
    with c.pipeline():
        c.execute("select 1")
        c.execute("select 1/0")
        c.execute("select 2")
    raise SystemExit("no error from the failing pipeline")
except psycopg.errors.DivisionByZero:
    pass
assert c.execute("select 42").fetchone()[0] == 42
with c.transaction():
    with c.pipeline():
        cur = c.cursor()
        cur.executemany("insert into items values (%s, %s)", [(i, "m") for i in range(200, 300)])
print("ok pipeline", count)

# COPY FROM STDIN and COPY TO STDOUT, with awkward text.
def name(i):
    return 'row %d\ttab, "quote"\nnewline \\ backslash ü' % i

with conns[1].cursor() as cur:
    with cur.copy("copy items (id, name) from stdin") as copy:
        for i in range(1000, 6000):
            copy.write_row((i, name(i)))
    rows = []
    with cur.copy("copy (select id, name from items where id between 1000 and 5999 order by id) to stdout") as copy:
        for row in copy.rows():
            rows.append(row)
assert rows == [(str(i), name(i)) for i in range(1000, 6000)], rows[:2]
print("ok copy", len(rows))

# A server-side (named) cursor inside a transaction, fetched in batches while another
# connection works on the other server connection.
c, other = conns[2], conns[0]
total = setup.execute("select count(*) from items").fetchone()[0]
seen = 0
with c.transaction():
    with c.cursor(name="walk") as cur:
        cur.itersize = 100
        cur.execute("select id from items order by id")
        for (id_,) in cur:
            seen += 1
            if seen % 1000 == 0:
                assert other.execute("select 1").fetchone()[0] == 1
assert seen == total, (seen, total)
print("ok cursor", seen)
"#;

#[test]
fn psycopg3_prepared_pipeline_copy_and_cursors_work_through_the_pooler() {
    let probe = run(
        command("python3").args(["-c", "import psycopg"]),
        Duration::from_secs(30),
    );
    if !probe.status.success() {
        let why = format!(
            "psycopg 3 is not importable by python3 (pip install \"psycopg[binary]\"): {}",
            stderr_of(&probe).trim()
        );
        skip(&why);
        return;
    }

    let agent = TestAgent::start_with_shop("[pooler]\ndefault_pool_size = 2\n");
    let script = agent.dir().join("psycopg_check.py");
    fs::write(&script, SCRIPT).unwrap();
    let out = run(
        command("python3")
            .arg(&script)
            .arg(agent.tenant_url("shop")),
        Duration::from_secs(50),
    );
    let stdout = stdout_of(&out);
    let stderr = stderr_of(&out);
    assert!(
        out.status.success(),
        "the psycopg script failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        [
            "ok prepared 2",
            "ok pipeline 100",
            "ok copy 5000",
            "ok cursor 5290"
        ],
        "stderr: {stderr}"
    );
}
