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

/// Something the operator should know that is not the result (stderr, so `--json`
/// output stays parseable).
pub fn note(text: &str) {
    eprintln!("note: {text}");
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

/// A byte progress bar on stderr (only on a terminal), fed by a counter that worker
/// threads bump; the bar polls it.
pub struct ByteProgress {
    bar: Option<indicatif::ProgressBar>,
    bytes: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl ByteProgress {
    pub fn new() -> ByteProgress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new(0);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{spinner} {msg:28} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        let progress = ByteProgress {
            bar,
            bytes: Default::default(),
        };
        if let Some(bar) = progress.bar.clone() {
            let bytes = progress.bytes.clone();
            std::thread::spawn(move || {
                while !bar.is_finished() {
                    bar.set_position(bytes.load(std::sync::atomic::Ordering::Relaxed));
                    std::thread::sleep(Duration::from_millis(100));
                }
            });
        }
        progress
    }

    pub fn set_total(&self, total: u64) {
        if let Some(bar) = &self.bar {
            bar.set_length(total);
        }
    }

    pub fn set_message(&self, message: &str) {
        if let Some(bar) = &self.bar {
            bar.set_message(message.to_owned());
        }
    }

    pub fn counter(&self) -> std::sync::Arc<std::sync::atomic::AtomicU64> {
        self.bytes.clone()
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl Drop for ByteProgress {
    fn drop(&mut self) {
        self.finish();
    }
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
