//! Prepared-statement name errors in transaction mode, answered as PostgreSQL answers
//! them: the same extended-protocol sequences, spoken by hand, go to PostgreSQL directly
//! and through the pooler, and must get the same replies — SQLSTATEs, messages, what the
//! error skips up to the Sync, and the transaction status after it.

use std::io::{Read, Write};

use crate::support::raw_client::RawClient;
use crate::support::TestAgent;

#[test]
fn statement_name_errors_match_a_direct_connection() {
    let agent = TestAgent::start_with_shop("[pooler]\ndefault_pool_size = 2\n");
    let password = agent.secret("shop", "password");
    let mut direct = RawClient::login(agent.pg_port(), &password);
    let mut pooled = RawClient::login(agent.pooler_port(), &password);

    let sequences: Vec<(&str, Vec<u8>)> = vec![
        ("parse s1", [parse("s1", "select 1"), sync()].concat()),
        (
            "parse s1 again, outside a transaction: the Bind after it is skipped",
            [parse("s1", "select 2"), bind("s1"), execute(), sync()].concat(),
        ),
        (
            "s1 is still the first text",
            [bind("s1"), execute(), sync()].concat(),
        ),
        (
            "parse s1 again after a Bind, on a server connection",
            [
                bind("s1"),
                execute(),
                parse("s1", "select 3"),
                bind("s1"),
                execute(),
                sync(),
            ]
            .concat(),
        ),
        (
            "describe of an unknown name",
            [describe("nope"), bind("s1"), execute(), sync()].concat(),
        ),
        (
            "bind of an unknown name",
            [bind("nope"), execute(), sync()].concat(),
        ),
        ("close of an unknown name", [close("nope"), sync()].concat()),
        (
            "close then parse again",
            [
                close("s1"),
                parse("s1", "select 4"),
                bind("s1"),
                execute(),
                sync(),
            ]
            .concat(),
        ),
        (
            "the unnamed statement is replaced by a new Parse",
            [
                parse("", "select 5"),
                parse("", "select 6"),
                bind(""),
                execute(),
                sync(),
            ]
            .concat(),
        ),
        ("begin", query("begin")),
        (
            "in a transaction block the error aborts it",
            [parse("s1", "select 7"), sync()].concat(),
        ),
        ("then every query fails", query("select 1")),
        (
            "unknown name in the failed block",
            [describe("nope"), sync()].concat(),
        ),
        ("rollback", query("rollback")),
        (
            "and the statement still works",
            [bind("s1"), execute(), sync()].concat(),
        ),
    ];
    let mut direct_replies = std::collections::HashMap::new();
    for (what, bytes) in &sequences {
        let expected = direct.exchange(bytes);
        let got = pooled.exchange(bytes);
        assert_eq!(got, expected, "{what}: pooler vs PostgreSQL");
        direct_replies.insert(*what, expected);
    }
    // The comparison means something only if PostgreSQL answered as documented.
    let duplicate = "E 42P05 prepared statement \"s1\" already exists";
    let unknown = "E 26000 prepared statement \"nope\" does not exist";
    let of = |what: &str| direct_replies[what].clone();
    assert_eq!(
        of("parse s1 again, outside a transaction: the Bind after it is skipped"),
        [duplicate, "Z I"]
    );
    assert_eq!(
        of("s1 is still the first text"),
        ["2", "D 1", "C SELECT 1", "Z I"]
    );
    assert_eq!(of("describe of an unknown name"), [unknown, "Z I"]);
    assert_eq!(of("bind of an unknown name"), [unknown, "Z I"]);
    assert_eq!(of("close of an unknown name"), ["3", "Z I"]);
    assert_eq!(
        of("in a transaction block the error aborts it"),
        [duplicate, "Z E"]
    );
    assert_eq!(
        of("the unnamed statement is replaced by a new Parse"),
        ["1", "1", "2", "D 6", "C SELECT 1", "Z I"]
    );
}

impl RawClient {
    /// The next message as its tag and body.
    fn next_frame(&mut self) -> (u8, Vec<u8>) {
        loop {
            if self.buf.len() >= 5 {
                let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]);
                let total = 1 + len as usize;
                if self.buf.len() >= total {
                    let frame = self.buf.split_to(total);
                    return (frame[0], frame[5..].to_vec());
                }
            }
            let mut chunk = [0u8; 4096];
            let n = self.stream.read(&mut chunk).unwrap();
            assert!(n > 0, "the connection closed");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Sends `bytes` (ending with a Sync or a Query) and returns the replies up to the
    /// ReadyForQuery of each Sync or Query, one line per message: its tag, and for an
    /// error its SQLSTATE and message, for a row its values, for ReadyForQuery the status.
    fn exchange(&mut self, bytes: &[u8]) -> Vec<String> {
        self.stream.write_all(bytes).unwrap();
        let mut readies = count_ready_owed(bytes);
        let mut replies = Vec::new();
        while readies > 0 {
            let (tag, body) = self.next_frame();
            let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
            let line = match tag {
                b'N' | b'S' => continue,
                b'C' => format!(
                    "C {}",
                    text(body.split(|&b| b == 0).next().unwrap_or_default())
                ),
                b'D' => {
                    let count = u16::from_be_bytes([body[0], body[1]]);
                    let mut rest = &body[2..];
                    let mut values = Vec::new();
                    for _ in 0..count {
                        let len = i32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]);
                        rest = &rest[4..];
                        if len < 0 {
                            values.push("NULL".to_owned());
                        } else {
                            values.push(text(&rest[..len as usize]));
                            rest = &rest[len as usize..];
                        }
                    }
                    format!("D {}", values.join(","))
                }
                b'E' => {
                    let (mut code, mut message) = (String::new(), String::new());
                    for field in body.split(|&b| b == 0).filter(|f| !f.is_empty()) {
                        match field[0] {
                            b'C' => code = text(&field[1..]),
                            b'M' => message = text(&field[1..]),
                            _ => {}
                        }
                    }
                    format!("E {code} {message}")
                }
                b'Z' => {
                    readies -= 1;
                    format!("Z {}", body[0] as char)
                }
                other => (other as char).to_string(),
            };
            replies.push(line);
        }
        replies
    }
}

/// ReadyForQuery messages PostgreSQL owes for `bytes`: one per Sync and per Query.
fn count_ready_owed(mut bytes: &[u8]) -> usize {
    let mut count = 0;
    while bytes.len() >= 5 {
        let len = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]) as usize;
        if matches!(bytes[0], b'S' | b'Q') {
            count += 1;
        }
        bytes = &bytes[1 + len..];
    }
    count
}

fn message(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    out.extend_from_slice(body);
    out
}

fn cstr(parts: &[&str]) -> Vec<u8> {
    let mut out = Vec::new();
    for part in parts {
        out.extend_from_slice(part.as_bytes());
        out.push(0);
    }
    out
}

fn parse(name: &str, sql: &str) -> Vec<u8> {
    message(b'P', &[cstr(&[name, sql]), vec![0, 0]].concat())
}

fn bind(statement: &str) -> Vec<u8> {
    message(b'B', &[cstr(&["", statement]), vec![0; 6]].concat())
}

fn execute() -> Vec<u8> {
    message(b'E', &[cstr(&[""]), vec![0; 4]].concat())
}

fn describe(statement: &str) -> Vec<u8> {
    message(b'D', &[vec![b'S'], cstr(&[statement])].concat())
}

fn close(statement: &str) -> Vec<u8> {
    message(b'C', &[vec![b'S'], cstr(&[statement])].concat())
}

fn sync() -> Vec<u8> {
    message(b'S', &[])
}

fn query(sql: &str) -> Vec<u8> {
    message(b'Q', &cstr(&[sql]))
}
