//! PostgreSQL's stderr, re-emitted line by line through the agent's logger with
//! `component=postgres`, and the last lines kept for error messages.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, BufReader};

/// The longest line relayed. PostgreSQL logs a slow statement with its text and parameters,
/// which a tenant chooses (a 150 MB literal): the rest of a longer line is dropped as it is
/// read, so that no line costs the agent more than this, in the relay or in the tail.
const MAX_LINE: usize = 16 * 1024;

/// The most recent PostgreSQL log lines, shared between the relay and the supervisor.
#[derive(Debug, Clone, Default)]
pub struct LogTail(Arc<Mutex<VecDeque<String>>>);

impl LogTail {
    const KEEP: usize = 50;

    fn push(&self, line: &str) {
        if let Ok(mut lines) = self.0.lock() {
            if lines.len() == Self::KEEP {
                lines.pop_front();
            }
            lines.push_back(line.to_owned());
        }
    }

    /// The last `n` lines joined with " | ", for one-line error messages.
    pub fn last_lines(&self, n: usize) -> String {
        let Ok(lines) = self.0.lock() else {
            return String::new();
        };
        let skip = lines.len().saturating_sub(n);
        lines
            .iter()
            .skip(skip)
            .cloned()
            .collect::<Vec<_>>()
            .join(" | ")
    }
}

/// Archiving failures repeat with every retry while a repository is down: they are
/// logged once per interval, with a count of the lines held back.
#[derive(Debug, Default)]
struct ArchiveFailures {
    last_logged: Option<std::time::Instant>,
    held_back: u32,
}

impl ArchiveFailures {
    const INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

    fn is_one(message: &str) -> bool {
        message.contains("archive command failed")
            || message.contains("The failed archive command was")
            || message.starts_with("error: wal push")
    }

    /// `None` to hold the line back, else how many were held back before it.
    fn admit(&mut self, now: std::time::Instant) -> Option<u32> {
        match self.last_logged {
            Some(at) if now.duration_since(at) < Self::INTERVAL => {
                self.held_back += 1;
                None
            }
            _ => {
                self.last_logged = Some(now);
                Some(std::mem::take(&mut self.held_back))
            }
        }
    }
}

/// Reads `stream` to its end, logging each line.
pub async fn relay(stream: impl AsyncRead + Unpin, tail: LogTail) {
    let mut reader = BufReader::new(stream);
    let mut bytes = Vec::new();
    let mut archive_failures = ArchiveFailures::default();
    while let Ok(true) = read_line(&mut reader, &mut bytes).await {
        // Not UTF-8 (a database in another encoding): shown, not a reason to stop reading.
        let line = String::from_utf8_lossy(&bytes);
        tail.push(&line);
        if ArchiveFailures::is_one(&line) {
            match archive_failures.admit(std::time::Instant::now()) {
                None => continue,
                Some(0) => {}
                Some(n) => tracing::warn!(
                    component = "postgres",
                    "WAL archiving still failing: {n} similar lines in the last minute not shown"
                ),
            }
        }
        let Line {
            pid,
            user,
            database,
            severity,
            message,
        } = parse(&line);
        if let Some(slow) = slow_statement(message) {
            tracing::warn!(
                component = "postgres",
                pid,
                user,
                database,
                duration_ms = slow.duration_ms,
                statement = slow.statement,
                "slow statement"
            );
            continue;
        }
        match severity {
            Severity::Error => {
                tracing::error!(component = "postgres", pid, user, database, "{message}")
            }
            Severity::Warn => {
                tracing::warn!(component = "postgres", pid, user, database, "{message}")
            }
            Severity::Info => {
                tracing::info!(component = "postgres", pid, user, database, "{message}")
            }
            Severity::Debug => {
                tracing::debug!(component = "postgres", pid, user, database, "{message}")
            }
        }
    }
}

/// Reads one line into `line` (without its newline), keeping at most `MAX_LINE` bytes of it
/// and marking a cut line; false at the end of the stream.
async fn read_line(
    reader: &mut (impl AsyncBufRead + Unpin),
    line: &mut Vec<u8>,
) -> std::io::Result<bool> {
    line.clear();
    let mut cut = false;
    loop {
        let buf = reader.fill_buf().await?;
        if buf.is_empty() {
            return Ok(!line.is_empty() || cut);
        }
        let newline = buf.iter().position(|&b| b == b'\n');
        let part = newline.map_or(buf, |end| buf.get(..end).unwrap_or_default());
        let room = MAX_LINE.saturating_sub(line.len());
        line.extend_from_slice(part.get(..room.min(part.len())).unwrap_or_default());
        cut |= part.len() > room;
        let used = newline.map_or(buf.len(), |end| end + 1);
        reader.consume(used);
        if newline.is_some() {
            if cut {
                line.extend_from_slice(b" [cut]");
            }
            return Ok(true);
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Severity {
    Error,
    Warn,
    Info,
    Debug,
}

#[derive(Debug, PartialEq, Eq)]
struct Line<'a> {
    pid: Option<u32>,
    user: Option<&'a str>,
    database: Option<&'a str>,
    severity: Severity,
    message: &'a str,
}

const SEVERITIES: &[&str] = &[
    "DEBUG5",
    "DEBUG4",
    "DEBUG3",
    "DEBUG2",
    "DEBUG1",
    "LOG",
    "INFO",
    "NOTICE",
    "WARNING",
    "ERROR",
    "FATAL",
    "PANIC",
    "DETAIL",
    "HINT",
    "QUERY",
    "CONTEXT",
    "STATEMENT",
    "LOCATION",
];

/// Splits "[1234] <user@db> WARNING:  message" (see `pg::conf::LOG_LINE_PREFIX`); lines without
/// the prefix (continuation lines, early startup) pass through whole.
fn parse(line: &str) -> Line<'_> {
    let (pid, rest) = match line.strip_prefix('[').and_then(|r| r.split_once("] ")) {
        Some((pid, rest)) => (pid.parse().ok(), rest),
        None => (None, line),
    };
    let (user, database, message) = split_session(rest).unwrap_or((None, None, rest));
    let level = message.split(':').next().unwrap_or_default();
    // A client's failed query is the client's business; the agent's operator needs
    // PANIC and FATAL (startup failures, crashes) and warnings.
    let severity = match level {
        "PANIC" => Severity::Error,
        "FATAL" | "WARNING" => Severity::Warn,
        "DEBUG1" | "DEBUG2" | "DEBUG3" | "DEBUG4" | "DEBUG5" => Severity::Debug,
        _ => Severity::Info,
    };
    Line {
        pid,
        user,
        database,
        severity,
        message,
    }
}

type Session<'a> = (Option<&'a str>, Option<&'a str>, &'a str);

/// "<user@db> LEVEL:  …": names may hold `>` or `@`, so the end is the `> ` that a
/// severity follows, and the split is the last `@` (role names are more often e-mail
/// addresses than database names are).
fn split_session<'a>(rest: &'a str) -> Option<Session<'a>> {
    let inner = rest.strip_prefix('<')?;
    let end = inner.match_indices("> ").map(|(i, _)| i).find(|&i| {
        let after = &inner[i + 2..];
        SEVERITIES
            .iter()
            .any(|s| after.strip_prefix(s).is_some_and(|r| r.starts_with(':')))
    })?;
    let (user, database) = inner[..end].rsplit_once('@')?;
    let some = |s: &'a str| Some(s).filter(|s| !s.is_empty());
    Some((some(user), some(database), &inner[end + 2..]))
}

#[derive(Debug, PartialEq)]
struct SlowStatement<'a> {
    duration_ms: f64,
    statement: &'a str,
}

/// "LOG:  duration: 1002.120 ms  statement: select …" (or "execute <name>: …"), as
/// `log_min_duration_statement` writes it.
fn slow_statement(message: &str) -> Option<SlowStatement<'_>> {
    let rest = message.strip_prefix("LOG:  duration: ")?;
    let (number, rest) = rest.split_once(" ms")?;
    let duration_ms = number.parse().ok()?;
    let statement = rest.strip_prefix("  ").unwrap_or(rest);
    Some(SlowStatement {
        duration_ms,
        statement,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixed_lines_yield_pid_and_severity() {
        let line = parse("[42] FATAL:  password authentication failed for user \"shop\"");
        assert_eq!(line.pid, Some(42));
        assert_eq!(line.severity, Severity::Warn);
        assert!(line.message.starts_with("FATAL:"));
        assert_eq!(
            parse("[7] PANIC:  could not write").severity,
            Severity::Error
        );
        assert_eq!(
            parse("[7] LOG:  checkpoint starting").severity,
            Severity::Info
        );
    }

    #[test]
    fn session_lines_yield_user_and_database() {
        let line = parse("[9] <shop@shop> FATAL:  password authentication failed");
        assert_eq!(line.user, Some("shop"));
        assert_eq!(line.database, Some("shop"));
        assert_eq!(line.message, "FATAL:  password authentication failed");
        let line = parse("[9] <a@b.c@we> ird> LOG:  x");
        assert_eq!(line.user, Some("a@b.c"));
        assert_eq!(line.database, Some("we> ird"));
        let line = parse("[9] <@> LOG:  connection received");
        assert_eq!((line.user, line.database), (None, None));
        assert_eq!(line.message, "LOG:  connection received");
        let line = parse("[9] LOG:  checkpoint complete");
        assert_eq!((line.user, line.database), (None, None));
    }

    #[test]
    fn slow_statements_are_recognised() {
        let slow = slow_statement("LOG:  duration: 1002.120 ms  statement: select pg_sleep(1)");
        assert_eq!(
            slow,
            Some(SlowStatement {
                duration_ms: 1002.12,
                statement: "statement: select pg_sleep(1)"
            })
        );
        let slow = slow_statement("LOG:  duration: 5.5 ms  execute <unnamed>: select 1");
        assert_eq!(
            slow.map(|s| s.statement),
            Some("execute <unnamed>: select 1")
        );
        assert_eq!(slow_statement("LOG:  checkpoint starting: time"), None);
    }

    #[test]
    fn archive_failures_are_logged_once_per_interval() {
        let mut quiet = ArchiveFailures::default();
        let t0 = std::time::Instant::now();
        assert_eq!(quiet.admit(t0), Some(0));
        assert_eq!(quiet.admit(t0 + std::time::Duration::from_secs(1)), None);
        assert_eq!(quiet.admit(t0 + std::time::Duration::from_secs(2)), None);
        assert_eq!(
            quiet.admit(t0 + std::time::Duration::from_secs(61)),
            Some(2)
        );
        assert!(ArchiveFailures::is_one(
            "[7] LOG:  archive command failed with exit code 1"
        ));
        assert!(ArchiveFailures::is_one(
            "error: wal push pg_wal/0001: upload failed"
        ));
        assert!(!ArchiveFailures::is_one("[7] LOG:  checkpoint starting"));
    }

    #[tokio::test]
    async fn long_lines_are_cut_as_they_are_read() {
        let mut input = vec![b'a'; 3 * MAX_LINE];
        input.extend_from_slice(b"\nnext\nlast");
        let mut reader = BufReader::new(&input[..]);
        let mut line = Vec::new();
        assert!(read_line(&mut reader, &mut line).await.unwrap());
        assert_eq!(line.len(), MAX_LINE + b" [cut]".len());
        assert!(line.ends_with(b"a [cut]"));
        assert!(read_line(&mut reader, &mut line).await.unwrap());
        assert_eq!(line, b"next");
        assert!(read_line(&mut reader, &mut line).await.unwrap());
        assert_eq!(line, b"last");
        assert!(!read_line(&mut reader, &mut line).await.unwrap());
    }

    #[test]
    fn unprefixed_lines_pass_through() {
        let line = parse("2026-11-23 LOG:  redirecting");
        assert_eq!(line.pid, None);
        assert_eq!(line.message, "2026-11-23 LOG:  redirecting");
    }

    #[test]
    fn the_tail_keeps_the_last_lines() {
        let tail = LogTail::default();
        for i in 0..60 {
            tail.push(&format!("line {i}"));
        }
        assert_eq!(tail.last_lines(2), "line 58 | line 59");
    }
}
