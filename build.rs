//! Build metadata for `pgplatform --version`: the git commit and the build date (UTC).
//! `SOURCE_DATE_EPOCH` (reproducible builds) fixes the date; `PGPLATFORM_GIT_COMMIT`
//! names the commit when building outside a git checkout (e.g. from a source tarball).

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    println!("cargo:rerun-if-env-changed=PGPLATFORM_GIT_COMMIT");
    let commit = std::env::var("PGPLATFORM_GIT_COMMIT")
        .ok()
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown".to_owned());
    // Rebuild when HEAD moves (a commit, a checkout); worktrees keep HEAD elsewhere.
    if let Some(path) = git(&["rev-parse", "--git-path", "HEAD"]) {
        println!("cargo:rerun-if-changed={path}");
    }
    if let Some(reference) = git(&["symbolic-ref", "-q", "HEAD"]) {
        if let Some(path) = git(&["rev-parse", "--git-path", &reference]) {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    let date = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(epoch) => date_of(&["-u", "-d", &format!("@{epoch}"), "+%Y-%m-%d"]),
        Err(_) => date_of(&["-u", "+%Y-%m-%d"]),
    }
    .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=PGPLATFORM_GIT_COMMIT={commit}");
    println!("cargo:rustc-env=PGPLATFORM_BUILD_DATE={date}");
}

fn git(args: &[&str]) -> Option<String> {
    run("git", args)
}

fn date_of(args: &[&str]) -> Option<String> {
    run("date", args)
}

#[allow(
    clippy::disallowed_methods,
    reason = "a build script runs git and date, not PostgreSQL"
)]
fn run(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}
