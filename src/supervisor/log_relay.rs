//! PostgreSQL's stderr, re-emitted line by line through the agent's logger with
//! `component=postgres`, and the last lines kept for error messages.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

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

/// Reads `stream` to its end, logging each line.
pub async fn relay(stream: impl AsyncRead + Unpin, tail: LogTail) {
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        tail.push(&line);
        let parsed = parse(&line);
        let pid = parsed.pid;
        let message = parsed.message;
        match parsed.severity {
            Severity::Error => tracing::error!(component = "postgres", pid, "{message}"),
            Severity::Warn => tracing::warn!(component = "postgres", pid, "{message}"),
            Severity::Info => tracing::info!(component = "postgres", pid, "{message}"),
            Severity::Debug => tracing::debug!(component = "postgres", pid, "{message}"),
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
    severity: Severity,
    message: &'a str,
}

/// Splits "[1234] WARNING:  message" (our log_line_prefix is "[%p] ").
fn parse(line: &str) -> Line<'_> {
    let (pid, rest) = match line.strip_prefix('[').and_then(|r| r.split_once("] ")) {
        Some((pid, rest)) => (pid.parse().ok(), rest),
        None => (None, line),
    };
    let level = rest.split(':').next().unwrap_or_default();
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
        severity,
        message: rest,
    }
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
