//! Backup tests' helpers: a throwaway PostgreSQL started on a restored data directory (as
//! the `postgres` user, unix socket only), the moto S3 server, and waiting for WAL to be
//! archived.

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::psql::{expect_success, psql_command, run_sql};
use super::{command, run, skip, stderr_of, wait_for, TestAgent, COMMAND_TIMEOUT};

/// The newest PostgreSQL server binaries, as the agent finds them.
fn pg_bin(name: &str) -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .unwrap()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("postgres").exists())
        .collect();
    dirs.sort();
    dirs.pop().expect("PostgreSQL server binaries").join(name)
}

fn postgres_ids() -> Option<(u32, u32)> {
    if !nix::unistd::Uid::effective().is_root() {
        return None;
    }
    let user = nix::unistd::User::from_name("postgres")
        .unwrap()
        .expect("OS user postgres");
    Some((user.uid.as_raw(), user.gid.as_raw()))
}

/// PostgreSQL running on a restored directory, stopped (immediately) when dropped.
pub struct RestoredPg {
    dir: PathBuf,
}

impl RestoredPg {
    /// Starts it and waits until recovery has finished and it accepts connections.
    pub fn start(dir: &Path) -> RestoredPg {
        let mut cmd = command(pg_bin("pg_ctl"));
        cmd.arg("-D")
            .arg(dir)
            .arg("-o")
            .arg(format!(
                "-p 5432 -k {} -c listen_addresses='' -c archive_mode=off",
                dir.display()
            ))
            .arg("-l")
            .arg(dir.join("restored.log"))
            .args(["-w", "-t", "120", "start"]);
        if let Some((uid, gid)) = postgres_ids() {
            cmd.uid(uid).gid(gid);
        }
        let out = run(&mut cmd, Duration::from_secs(150));
        let log = std::fs::read_to_string(dir.join("restored.log")).unwrap_or_default();
        assert!(
            out.status.success(),
            "pg_ctl start: {}\n{log}",
            stderr_of(&out)
        );
        let pg = RestoredPg {
            dir: dir.to_owned(),
        };
        wait_for(
            Duration::from_secs(120),
            "the restored PostgreSQL to promote",
            || (pg.query("pgplatform", "SELECT pg_is_in_recovery()") == "f").then_some(()),
        );
        pg
    }

    /// Runs `sql` in `database` as the superuser; returns the trimmed output.
    pub fn query(&self, database: &str, sql: &str) -> String {
        let mut cmd = psql_command();
        cmd.args([
            "-h",
            &self.dir.to_string_lossy(),
            "-p",
            "5432",
            "-U",
            "pgplatform",
            "-d",
            database,
        ]);
        expect_success(&run_sql(cmd, sql), sql)
    }
}

impl Drop for RestoredPg {
    fn drop(&mut self) {
        let mut cmd = command(pg_bin("pg_ctl"));
        cmd.arg("-D")
            .arg(&self.dir)
            .args(["-m", "immediate", "-w", "stop"]);
        if let Some((uid, gid)) = postgres_ids() {
            cmd.uid(uid).gid(gid);
        }
        let _ = run(&mut cmd, COMMAND_TIMEOUT);
    }
}

/// moto's S3 server on a free loopback port, killed (by pid) when dropped.
pub struct Moto {
    child: Child,
    pub port: u16,
}

impl Moto {
    /// `None` (with the reason on stderr) when moto is not installed and skipping is allowed;
    /// otherwise a missing moto fails the test (`support::skip`).
    pub fn start() -> Option<Moto> {
        let probe = run(
            command("python3").args(["-c", "import moto.server"]),
            COMMAND_TIMEOUT,
        );
        if !probe.status.success() {
            let reason = "moto is not installed (pip install 'moto[server]'); S3 test skipped";
            skip(reason);
            return None;
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = command("python3")
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto");
        let moto = Moto { child, port };
        wait_for(Duration::from_secs(30), "moto to listen", || {
            std::net::TcpStream::connect(("127.0.0.1", port))
                .ok()
                .map(|_| ())
        });
        Some(moto)
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn create_bucket(&self, name: &str) {
        let put = format!(
            "import urllib.request as u; u.urlopen(u.Request('{}/{name}', method='PUT'))",
            self.endpoint()
        );
        let out = run(command("python3").args(["-c", &put]), COMMAND_TIMEOUT);
        assert!(
            out.status.success(),
            "create bucket {name}: {}",
            stderr_of(&out)
        );
    }

    /// Freezes the server: connections are accepted but never answered.
    pub fn pause(&self) {
        kill(Pid::from_raw(self.child.id() as i32), Signal::SIGSTOP).unwrap();
    }

    pub fn resume(&self) {
        kill(Pid::from_raw(self.child.id() as i32), Signal::SIGCONT).unwrap();
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.resume();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl TestAgent {
    /// Switches to a new WAL segment and waits until PostgreSQL has archived it.
    pub fn switch_and_archive(&self) {
        let segment = self.admin_psql("SELECT pg_walfile_name(pg_switch_wal())");
        wait_for(
            Duration::from_secs(60),
            "the WAL segment to be archived",
            || {
                let last =
                    self.admin_psql("SELECT COALESCE(last_archived_wal, '') FROM pg_stat_archiver");
                (last.as_str() >= segment.as_str()).then_some(())
            },
        );
    }

    /// A fresh directory under the test's temp dir for a restore.
    pub fn restore_dir(&self, name: &str) -> PathBuf {
        self.dir().join(name)
    }
}

impl TestAgent {
    /// After a base backup exists: commits 1 and 2, notes a time, commits 3, and checks
    /// that a restore to that time holds exactly 1 and 2 — with no WAL switch here: the
    /// restore has the agent archive what it needs. Returns the time.
    pub fn pitr_round_trip(&self, url: &str) -> String {
        use super::psql::query;
        query(url, "INSERT INTO events VALUES (1)");
        query(url, "INSERT INTO events VALUES (2)");
        // Its own statement: after the commit of 2, before the commit of 3.
        let between = self.admin_psql("SELECT clock_timestamp()");
        query(url, "INSERT INTO events VALUES (3)");
        let rows = self.restored_rows("pitr", &["--time", &between]);
        assert_eq!(rows, "1,2", "restored to {between}");
        between
    }

    /// Restores with `target` into a new directory `name`, starts it, and returns the
    /// `events` rows of shop, comma-separated in order.
    pub fn restored_rows(&self, name: &str, target: &[&str]) -> String {
        let dir = self.restore_dir(name);
        let mut args = vec!["restore", "--target-dir", dir.to_str().unwrap()];
        args.extend_from_slice(target);
        self.cli_ok(&args);
        let restored = RestoredPg::start(&dir);
        restored.query(
            "shop",
            "SELECT string_agg(n::text, ',' ORDER BY n) FROM events",
        )
    }
}
