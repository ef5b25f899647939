//! Everything the CLI prints: plain lines, aligned tables, JSON, spinners, errors.
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "the one module that writes the CLI's output"
)]

use std::io::IsTerminal;
use std::time::Duration;

pub fn line(text: &str) {
    println!("{text}");
}

pub fn json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// Prints rows under a header with columns padded to their widest cell.
pub fn table(header: &[&str], rows: &[Vec<String>]) {
    for line in table_lines(header, rows) {
        println!("{line}");
    }
}

/// The lines `table` prints.
pub fn table_lines(header: &[&str], rows: &[Vec<String>]) -> Vec<String> {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let render = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        padded.join("  ").trim_end().to_owned()
    };
    let mut lines = vec![render(header.to_vec())];
    for row in rows {
        lines.push(render(row.iter().map(String::as_str).collect()));
    }
    lines
}

/// Clears a terminal before a `--watch` refresh; nothing when output is piped.
pub fn clear_screen() {
    if std::io::stdout().is_terminal() {
        print!("\x1b[2J\x1b[H");
    }
}

pub fn error(e: &anyhow::Error) {
    eprintln!("error: {e:#}");
}

/// A spinner on stderr while `work` runs, only when stderr is a terminal.
pub async fn with_spinner<T>(message: &str, work: impl std::future::Future<Output = T>) -> T {
    if !std::io::stderr().is_terminal() {
        return work.await;
    }
    let spinner = indicatif::ProgressBar::new_spinner().with_message(message.to_owned());
    spinner.enable_steady_tick(Duration::from_millis(100));
    let result = work.await;
    spinner.finish_and_clear();
    result
}

/// Human-readable byte count (PostgreSQL's pg_size_pretty units).
pub fn size(bytes: i64) -> String {
    const UNITS: [&str; 5] = ["bytes", "kB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 10240.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{} {}", value.round(), UNITS[unit])
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes_read_like_pg_size_pretty() {
        assert_eq!(super::size(8000), "8000 bytes");
        assert_eq!(super::size(7_500_000), "7324 kB");
        assert_eq!(super::size(30_000_000), "29 MB");
    }
}
