//! Reading `/metrics`: the text of one scrape, one sample's value, the families present,
//! and `promtool` (Debian's `prometheus` package) when it is installed.

use std::io::Write;
use std::path::Path;
use std::process::Stdio;

use serde_json::Value;

use super::{command, skip, TestAgent};

impl TestAgent {
    /// `GET /metrics` as text, asserted to be 200.
    pub fn scrape(&self) -> String {
        let (code, body) = self.get("/metrics");
        assert_eq!(code, 200, "/metrics: {body}");
        match body {
            Value::String(text) => text,
            other => panic!("/metrics is not text: {other}"),
        }
    }

    /// `GET url` as text, if anything answered with 200.
    pub fn http_get_text(&self, url: &str) -> Option<String> {
        match self.http.request(reqwest::Method::GET, url, None, None) {
            Ok((200, Value::String(text))) => Some(text),
            _ => None,
        }
    }
}

/// The value of the sample of `name` whose labels include all of `labels`.
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, rest) = match series.split_once('{') {
                Some((m, rest)) => (m, rest),
                None => (series, ""),
            };
            if metric != name {
                return None;
            }
            let all = labels
                .iter()
                .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")));
            all.then(|| value.parse().ok()).flatten()
        })
}

/// The metric family names declared by `# TYPE` lines.
pub fn families(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .map(str::to_owned)
        .collect()
}

/// `promtool` if installed; otherwise fails the test (or, with PGPLATFORM_TEST_ALLOW_SKIP=1,
/// says why the check is skipped and returns `None`).
pub fn promtool() -> Option<&'static str> {
    if Path::new("/usr/bin/promtool").exists() {
        return Some("/usr/bin/promtool");
    }
    let reason = "promtool is not installed (apt-get install prometheus); check skipped";
    skip(reason);
    None
}

/// Runs `promtool check metrics` on `text`; returns its exit status and output.
pub fn promtool_check_metrics(promtool: &str, text: &str) -> (bool, String) {
    let mut child = command(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn promtool");
    child
        .stdin
        .take()
        .expect("promtool stdin")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool output");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), report)
}
