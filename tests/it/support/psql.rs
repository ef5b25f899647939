//! Client checks with the real `psql`, and with tokio-postgres where the SQLSTATE of a failed login matters.

use std::process::{Command, Output};
use std::time::Duration;

use super::{command, run, stderr_of, stdout_of, TestAgent, COMMAND_TIMEOUT};

pub const PSQL: &str = "/usr/bin/psql";

/// `psql -XAtq -v ON_ERROR_STOP=1` with a clean environment (no PG* variables, no ~/.psqlrc),
/// so only what the test passes decides where it connects and as whom.
pub fn psql_command() -> Command {
    let mut cmd = command(PSQL);
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("LC_ALL", "C")
        .env("PGCONNECT_TIMEOUT", "10")
        .args(["-XAtq", "-v", "ON_ERROR_STOP=1"]);
    cmd
}

/// Runs `cmd` (a `psql_command` with connection arguments) with `-c sql`; returns its output,
/// whether it succeeded or not.
pub fn run_sql(mut cmd: Command, sql: &str) -> Output {
    run(cmd.arg("-c").arg(sql), COMMAND_TIMEOUT)
}

fn over_url(url: &str) -> Command {
    let mut cmd = psql_command();
    cmd.arg("-d").arg(url);
    cmd
}

/// Runs `sql` over `url` and returns the trimmed result; panics with psql's error if it fails.
pub fn query(url: &str, sql: &str) -> String {
    expect_success(&run_sql(over_url(url), sql), sql)
}

/// Runs `sql` over `url`, whatever happens.
pub fn run_sql_over(url: &str, sql: &str) -> Output {
    run_sql(over_url(url), sql)
}

/// Runs `sql` over `url`: the trimmed result, or `None` if psql failed (for polling).
pub fn run_query(url: &str, sql: &str) -> Option<String> {
    let out = run_sql(over_url(url), sql);
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Runs `sql` over `url`, asserts that it fails, and returns psql's stderr.
pub fn query_fails(url: &str, sql: &str) -> String {
    expect_failure(&run_sql(over_url(url), sql), sql)
}

pub fn expect_success(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "psql {what:?} failed: {}",
        stderr_of(out)
    );
    stdout_of(out).trim().to_owned()
}

pub fn expect_failure(out: &Output, what: &str) -> String {
    assert!(
        !out.status.success(),
        "psql {what:?} succeeded but should fail: {}",
        stdout_of(out)
    );
    stderr_of(out)
}

/// `url` with its database name replaced by `database` (keeps any `?query`).
pub fn with_database(url: &str, database: &str) -> String {
    let (base, tail) = url
        .rsplit_once('/')
        .expect("a database URL has a /database part");
    let query = tail
        .split_once('?')
        .map(|(_, q)| format!("?{q}"))
        .unwrap_or_default();
    format!("{base}/{database}{query}")
}

/// Tries to log in with `url`: `None` if the login works, else the SQLSTATE the server sent
/// (e.g. `28P01` for a wrong password), or `"no sqlstate: …"` if it failed without one.
pub fn login_error_code(url: &str) -> Option<String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let attempt = tokio_postgres::connect(url, tokio_postgres::NoTls);
        let result = tokio::time::timeout(Duration::from_secs(20), attempt)
            .await
            .unwrap_or_else(|_| panic!("login to {url} did not finish within 20 s"));
        match result {
            Ok(_) => None,
            Err(e) => Some(
                e.code()
                    .map_or_else(|| format!("no sqlstate: {e}"), |c| c.code().to_owned()),
            ),
        }
    })
}

/// PostgreSQL as the `pgplatform` superuser, over the unix socket in the data dir (peer auth).
impl TestAgent {
    /// Runs `sql` as the `pgplatform` superuser in the registry database; returns the trimmed result.
    pub fn admin_psql(&self, sql: &str) -> String {
        self.admin_psql_in("pgplatform", sql)
    }

    /// Runs `sql` as the superuser in `database`; returns the trimmed result.
    pub fn admin_psql_in(&self, database: &str, sql: &str) -> String {
        expect_success(&self.admin_psql_output(database, sql), sql)
    }

    /// Runs `sql` as the superuser in `database`, asserts that it fails, returns stderr.
    pub fn admin_psql_fails(&self, database: &str, sql: &str) -> String {
        expect_failure(&self.admin_psql_output(database, sql), sql)
    }

    fn admin_psql_output(&self, database: &str, sql: &str) -> Output {
        let mut cmd = psql_command();
        cmd.arg("-h").arg(self.data_dir().join("run/socket"));
        cmd.args([
            "-p",
            &self.pg_port().to_string(),
            "-U",
            "pgplatform",
            "-d",
            database,
        ]);
        run_sql(cmd, sql)
    }
}
