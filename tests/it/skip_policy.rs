//! The skip policy: a test whose prerequisite is missing fails, unless the run was started
//! with PGPLATFORM_TEST_ALLOW_SKIP=1; then it passes and says why on stderr, where libtest
//! does not hide it. Each case runs this test binary again, in a child process, on
//! `probe_with_a_missing_prerequisite` alone.

use std::time::Duration;

use crate::support::{run, stderr_of, stdout_of, ALLOW_SKIP_ENV};

const REASON: &str = "the skip-policy probe's made-up prerequisite is missing";

#[test]
#[ignore = "run only by the other tests in this file, in a child process"]
fn probe_with_a_missing_prerequisite() {
    crate::support::skip(REASON);
}

/// Runs the probe in a child test process, with `ALLOW_SKIP_ENV` set to `allow` (or unset).
fn run_probe(allow: Option<&str>) -> std::process::Output {
    let exe = std::env::current_exe().unwrap();
    let mut cmd = crate::support::command(exe);
    cmd.args([
        "skip_policy::probe_with_a_missing_prerequisite",
        "--exact",
        "--ignored",
        "--test-threads",
        "1",
    ]);
    match allow {
        Some(value) => cmd.env(ALLOW_SKIP_ENV, value),
        None => cmd.env_remove(ALLOW_SKIP_ENV),
    };
    run(&mut cmd, Duration::from_secs(60))
}

#[test]
fn a_missing_prerequisite_fails_the_test_by_default() {
    for allow in [None, Some("0"), Some("")] {
        let out = run_probe(allow);
        let (stdout, stderr) = (stdout_of(&out), stderr_of(&out));
        assert!(
            !out.status.success(),
            "{ALLOW_SKIP_ENV}={allow:?}: the probe passed although its prerequisite is missing\n\
             stdout: {stdout}\nstderr: {stderr}"
        );
        assert!(
            stdout.contains("1 failed") && stdout.contains(REASON),
            "{ALLOW_SKIP_ENV}={allow:?}: want one failed test naming the reason\nstdout: {stdout}"
        );
        assert!(
            stdout.contains(ALLOW_SKIP_ENV),
            "the failure should say how to skip instead: {stdout}"
        );
    }
}

#[test]
fn with_skipping_allowed_a_missing_prerequisite_passes_and_says_why_on_stderr() {
    let out = run_probe(Some("1"));
    let (stdout, stderr) = (stdout_of(&out), stderr_of(&out));
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "with {ALLOW_SKIP_ENV}=1 the probe should pass\nstdout: {stdout}\nstderr: {stderr}"
    );
    assert!(
        stderr.contains(&format!("skipped: {REASON}")),
        "the skip reason should reach stderr although libtest captures test output: {stderr}"
    );
}
