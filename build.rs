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
    // Rebuild when HEAD moves (a commit, a checkout); worktrees keep HEAD elsewhere, and
    // a fresh clone keeps branch refs in packed-refs. Only files that exist are named: a
    // missing one would rerun this script, and rebuild the crate, on every build.
    println!("cargo:rerun-if-changed=build.rs");
    let mut watched = vec!["HEAD".to_owned(), "packed-refs".to_owned()];
    watched.extend(git(&["symbolic-ref", "-q", "HEAD"]));
    for file in watched {
        if let Some(path) = git(&["rev-parse", "--git-path", &file]) {
            if std::path::Path::new(&path).exists() {
                println!("cargo:rerun-if-changed={path}");
            }
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
