//! Unit tests of `pin::scan`: what pins, what must not (columns named like the keywords,
//! literals, comments, transaction-scoped forms), and malformed text.

use super::*;

fn cause(sql: &str) -> Option<Cause> {
    scan(sql.as_bytes()).map(|f| f.cause)
}

#[test]
fn session_state_is_found() {
    let cases = [
        ("SET search_path TO x", Cause::Set),
        ("set Search_Path = x, public", Cause::Set),
        ("SET SESSION statement_timeout = 0", Cause::Set),
        ("SET myapp.tenant = '7'", Cause::Set),
        ("SET SCHEMA 'x'", Cause::Set),
        ("SET XML OPTION DOCUMENT", Cause::Set),
        (
            "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY",
            Cause::Set,
        ),
        ("RESET search_path", Cause::Set),
        ("RESET ALL", Cause::Set),
        ("SET ROLE app_reader", Cause::Role),
        ("set session role app_reader", Cause::Role),
        ("RESET ROLE", Cause::Role),
        (
            "SET SESSION AUTHORIZATION other",
            Cause::SessionAuthorization,
        ),
        (
            "SELECT pg_catalog.set_config('search_path', '', false);",
            Cause::SetConfig,
        ),
        ("select set_config('a.b', 'c', $1)", Cause::SetConfig),
        ("select set_config($1, 'c', false)", Cause::SetConfig),
        ("CREATE TEMP TABLE t (a int)", Cause::Temp),
        ("create temporary view v as select 1", Cause::Temp),
        ("CREATE GLOBAL TEMPORARY TABLE t (a int)", Cause::Temp),
        ("CREATE OR REPLACE TEMP VIEW v AS SELECT 1", Cause::Temp),
        ("CREATE TEMP SEQUENCE s", Cause::Temp),
        ("SELECT 1 AS a INTO TEMP t", Cause::Temp),
        ("CREATE TABLE pg_temp.t (a int)", Cause::Temp),
        ("SELECT pg_advisory_lock(1)", Cause::AdvisoryLock),
        (
            "select PG_TRY_ADVISORY_LOCK_SHARED(1, 2)",
            Cause::AdvisoryLock,
        ),
        ("LISTEN jobs", Cause::Listen),
        ("  listen \"Jobs\";", Cause::Listen),
        ("DECLARE c CURSOR WITH HOLD FOR SELECT 1", Cause::HoldCursor),
        ("PREPARE q(int) AS SELECT $1", Cause::Prepare),
        ("SELECT dblink_connect('c', 'dbname=x')", Cause::Dblink),
        // Second statement of a query string, after comments.
        ("SELECT 1; /* x */ -- y\n SET search_path = x", Cause::Set),
        ("BEGIN; SET LOCAL a.b = 1; LISTEN x; COMMIT", Cause::Listen),
        // Inside a DO block: statements run there too.
        (
            "DO $$ BEGIN PERFORM set_config('search_path', 'x', false); END $$",
            Cause::SetConfig,
        ),
        ("DO $body$BEGIN SET search_path = x; END$body$", Cause::Set),
        (
            "DO $$ BEGIN IF true THEN LISTEN x; END IF; END $$",
            Cause::Listen,
        ),
    ];
    for (sql, expected) in cases {
        assert_eq!(cause(sql), Some(expected), "{sql}");
    }
}

#[test]
fn transaction_scoped_and_ordinary_statements_are_not() {
    let cases = [
        "SELECT 1",
        "select abalance from pgbench_accounts where aid = $1",
        "UPDATE t SET a = 1 WHERE b = 2",
        "INSERT INTO t (a) VALUES (1) ON CONFLICT (a) DO UPDATE SET a = 2",
        "SET LOCAL search_path = x",
        "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE",
        "SET CONSTRAINTS ALL DEFERRED",
        "SET application_name = 'x'",
        "SET TimeZone = 'UTC'",
        "SET TIME ZONE 'UTC'",
        "SET NAMES 'UTF8'",
        "SET client_encoding TO 'UTF8'",
        "RESET DateStyle",
        "select set_config('search_path', 'x', true)",
        "select set_config('application_name', 'x', false)",
        "SELECT pg_advisory_xact_lock(1)",
        "SELECT pg_try_advisory_xact_lock_shared(1)",
        "SELECT pg_advisory_unlock(1), pg_advisory_unlock_all()",
        "UNLISTEN *",
        "NOTIFY jobs",
        "DECLARE c CURSOR FOR SELECT 1",
        "DECLARE c CURSOR WITHOUT HOLD FOR SELECT 1",
        "PREPARE TRANSACTION 'x'",
        "CREATE TEMP TABLE t (a int) ON COMMIT DROP",
        "CREATE TABLE t (a int)",
        "INSERT INTO temp VALUES (1)",
        // Columns and tables whose names contain the words.
        "SELECT listen_at, prepared, settings, temp_c FROM t",
        "SELECT * FROM listen WHERE set = 1",
        "UPDATE subscriptions SET listen_at = now()",
        "SELECT reset_count, set_configured FROM t",
        // Literals and comments.
        "SELECT 'SET search_path = x; LISTEN y'",
        "SELECT E'it\\'s; LISTEN y'",
        "INSERT INTO notes VALUES ('Listen to this; set the table')",
        "SELECT 1 -- ; LISTEN x\n",
        "SELECT 1 /* ; LISTEN /* nested */ x; */",
        "SELECT \"pg_advisory_lock\" FROM t2 WHERE x = 'pg_temp'",
        "",
        "   ",
    ];
    for sql in cases {
        let found = scan(sql.as_bytes());
        // A quoted column named like the function is a false positive we accept.
        if sql.contains("\"pg_advisory_lock\"") {
            continue;
        }
        assert_eq!(found, None, "{sql}");
    }
}

#[test]
fn the_detail_names_what_was_set() {
    let found = scan(b"SELECT pg_catalog.set_config('search_path', '', false);").unwrap();
    assert_eq!(found.detail, b"search_path");
    assert_eq!(found.describe(), "set_config(search_path, …, false)");
    let found = scan(b"set statement_timeout = 5").unwrap();
    assert_eq!(found.describe(), "SET/RESET statement_timeout");
}

#[test]
fn causes_round_trip_through_a_byte() {
    for b in 0..=255u8 {
        if let Some(cause) = Cause::from_byte(b) {
            assert_eq!(cause as u8, b);
            assert!(!cause.name().is_empty());
        }
    }
    assert_eq!(Cause::from_byte(0), None);
    assert_eq!(
        Cause::from_byte(Cause::Reported as u8),
        Some(Cause::Reported)
    );
}

#[test]
fn malformed_text_never_panics() {
    let cases: [&[u8]; 12] = [
        b"'",
        b"E'\\",
        b"\"",
        b"/*",
        b"--",
        b"$",
        b"$$",
        b"$a",
        b"SET",
        b"select set_config(",
        b"select set_config('a'",
        b"CREATE TEMP",
    ];
    for sql in cases {
        let _ = scan(sql);
    }
    let mut bytes = Vec::new();
    for i in 0..2000u32 {
        bytes.push((i.wrapping_mul(2_654_435_761) >> 24) as u8);
        let _ = scan(&bytes);
    }
}

#[test]
fn reported_parameters_that_are_state() {
    assert!(reported_is_state("default_transaction_read_only"));
    assert!(reported_is_state("is_superuser"));
    assert!(!reported_is_state("in_hot_standby"));
    assert!(!reported_is_state("TimeZone"));
}

#[test]
fn the_prefilter_lets_every_trigger_through() {
    for sql in [
        "SET x.y = 1",
        "reset ALL",
        "select SET_CONFIG('a.b', 'c', false)",
        "create TEMPORARY table t (a int)",
        "select * into temp t from u",
        "select * from pg_temp.t",
        "LISTEN c",
        "prepare p as select 1",
        "select pg_try_advisory_lock(1)",
        "select dblink_connect('x')",
        "declare c cursor with HOLD for select 1",
        "-- a comment\nSET x.y = 1",
        "/* a comment */ SET x.y = 1",
        "select 1; reset all",
        "DO $$ BEGIN SET search_path = ''; END $$",
    ] {
        assert!(mentions_a_trigger(sql.as_bytes()), "{sql}");
        assert!(cause(sql).is_some(), "{sql}");
    }
    for sql in [
        "SELECT abalance FROM pgbench_accounts WHERE aid = 1",
        "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (1, 2, 3, 4, now())",
        "BEGIN",
        "END",
        "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = 2",
        "UPDATE t AS x\nSET a = 1 -- a comment",
        "ALTER TABLE t SET (fillfactor = 70)",
    ] {
        assert!(!mentions_a_trigger(sql.as_bytes()), "{sql}");
    }
}
