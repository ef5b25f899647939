//! The files in `deploy/`: the alert rules pass `promtool check rules` and their unit tests
//! (`promtool test rules`), and the log-shipping examples parse (neither Vector nor Fluent
//! Bit is packaged for Debian 12, so their own `validate` commands cannot run here).

use std::path::{Path, PathBuf};

use crate::support::metrics::promtool;
use crate::support::{command, run, stderr_of, stdout_of, COMMAND_TIMEOUT};

fn deploy(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(path)
}

#[test]
fn alert_rules_are_valid_and_their_unit_tests_pass() {
    let Some(promtool) = promtool() else {
        return;
    };
    for args in [
        ["check", "rules", "alerts.yml"],
        ["test", "rules", "alerts_test.yml"],
    ] {
        let out = run(
            command(promtool)
                .args(args)
                .current_dir(deploy("prometheus")),
            COMMAND_TIMEOUT,
        );
        assert!(
            out.status.success(),
            "promtool {args:?}: {}{}",
            stdout_of(&out),
            stderr_of(&out)
        );
    }
}

#[test]
fn log_shipping_examples_parse() {
    let vector = std::fs::read_to_string(deploy("logging/vector.toml")).unwrap();
    let vector: toml::Table = toml::from_str(&vector).expect("vector.toml is TOML");
    assert!(vector["sources"].get("pgplatform").is_some());
    assert!(vector["transforms"].get("pgplatform_json").is_some());

    // Fluent Bit's classic format: [SECTION] headers, then `Key Value` lines.
    let fluent = std::fs::read_to_string(deploy("logging/fluent-bit.conf")).unwrap();
    let mut sections = Vec::new();
    for line in fluent.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            sections.push(name.to_owned());
            continue;
        }
        assert!(!sections.is_empty(), "a key before any section: {line}");
        let mut parts = line.split_whitespace();
        let (key, value) = (parts.next(), parts.next());
        assert!(key.is_some() && value.is_some(), "not `Key Value`: {line}");
    }
    assert_eq!(sections, ["SERVICE", "INPUT", "FILTER", "OUTPUT"]);
}

/// `--version` names the version, the commit the binary was built from and the build
/// date; the CHANGELOG has an entry for the version.
#[test]
fn version_names_the_commit_and_build_date_and_the_changelog_has_it() {
    let out = run(
        crate::support::pgplatform().arg("--version"),
        COMMAND_TIMEOUT,
    );
    assert!(out.status.success(), "{}", stderr_of(&out));
    let text = stdout_of(&out);
    let version = env!("CARGO_PKG_VERSION");
    let rest = text
        .trim()
        .strip_prefix(&format!("pgplatform {version} (commit "))
        .unwrap_or_else(|| panic!("--version: {text:?}"));
    let (commit, date) = rest
        .strip_suffix(')')
        .and_then(|r| r.split_once(", built "))
        .unwrap_or_else(|| panic!("--version: {text:?}"));
    assert!(
        commit.len() == 12 && commit.chars().all(|c| c.is_ascii_hexdigit()),
        "commit {commit:?} in {text:?}"
    );
    // The commit is one of this checkout's (HEAD, or an ancestor if tests run on a
    // binary built before the last commit).
    let known = run(
        command("git")
            .args(["cat-file", "-t", commit])
            .current_dir(env!("CARGO_MANIFEST_DIR")),
        COMMAND_TIMEOUT,
    );
    assert_eq!(
        stdout_of(&known).trim(),
        "commit",
        "{commit} is not a commit here"
    );
    let date = chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d")
        .unwrap_or_else(|e| panic!("build date {date:?}: {e}"));
    let today = chrono::Utc::now().date_naive();
    assert!(date <= today, "build date {date} is in the future");

    let changelog = std::fs::read_to_string(deploy("../CHANGELOG.md")).unwrap();
    assert!(
        changelog.contains(&format!("## [{version}]")),
        "CHANGELOG.md has no entry for {version}"
    );
}

/// The Debian package's /etc/pgplatform/pgplatform.toml is `pgplatform init`'s file with
/// the data directory in /var/lib/pgplatform: nothing else may drift.
#[test]
fn packaged_config_is_init_output_with_the_system_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(
        crate::support::pgplatform().arg("init").arg(dir.path()),
        COMMAND_TIMEOUT,
    );
    assert!(out.status.success(), "{}", stderr_of(&out));
    let init = std::fs::read_to_string(dir.path().join("pgplatform.toml")).unwrap();
    let packaged = std::fs::read_to_string(deploy("debian/pgplatform.toml")).unwrap();
    let differing: Vec<(&str, &str)> = init
        .lines()
        .zip(
            packaged
                .lines()
                .filter(|l| !l.starts_with("# package's systemd unit")),
        )
        .filter(|(a, b)| a != b)
        .collect();
    assert_eq!(
        differing,
        [
            (
                "# A relative path is resolved against the directory of this file.",
                "# A relative path is resolved against the directory of this file. The Debian"
            ),
            (
                "data_dir = \"./pgplatform-data\"",
                "data_dir = \"/var/lib/pgplatform\""
            ),
        ]
    );
    assert_eq!(init.lines().count() + 1, packaged.lines().count());
}
