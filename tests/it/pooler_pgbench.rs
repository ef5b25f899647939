//! pgbench through transaction pooling: `-i`, then `-M simple`, `-M extended` and `-M prepared`
//! with more clients than server connections, and `-C` (a new connection per transaction).

use std::process::Command;
use std::time::Duration;

use crate::support::{command, run, stderr_of, stdout_of, try_run, TestAgent};

const PGBENCH: &str = "/usr/bin/pgbench";

/// pgbench with a clean environment: only the URL decides where it connects.
fn pgbench(url: &str, args: &[&str]) -> Command {
    let mut cmd = command(PGBENCH);
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("LC_ALL", "C")
        .env("PGCONNECT_TIMEOUT", "10")
        .args(args)
        .arg(url);
    cmd
}

/// Runs a pgbench benchmark and asserts it finished with transactions and no failures.
fn bench_ok(url: &str, args: &[&str]) -> String {
    let Some(out) = try_run(&mut pgbench(url, args), Duration::from_secs(20)) else {
        panic!(
            "pgbench {args:?} hung: still running 20 s after a {}-second run was due to end \
             (killed)",
            args.iter()
                .skip_while(|a| **a != "-T")
                .nth(1)
                .unwrap_or(&"?")
        );
    };
    let stdout = stdout_of(&out);
    let stderr = stderr_of(&out);
    assert!(
        out.status.success(),
        "pgbench {args:?} exited with {}:\n{stdout}\n{stderr}",
        out.status
    );
    assert!(
        stdout.contains("number of failed transactions: 0 "),
        "pgbench {args:?} had failed transactions:\n{stdout}\n{stderr}"
    );
    let processed: u64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("number of transactions actually processed: "))
        .and_then(|rest| rest.split(['/', ' ']).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("pgbench {args:?}: no processed count:\n{stdout}"));
    assert!(processed > 0, "pgbench {args:?} processed nothing");
    assert!(
        !stderr.contains("ERROR") && !stderr.contains("FATAL"),
        "pgbench {args:?} reported errors:\n{stderr}"
    );
    stdout
}

/// Runs pgbench `-M mode` with ten clients in the background and samples the tenant's server
/// connections (pg_stat_activity) until it ends: the most seen, the number of samples taken
/// while it ran, and pgbench's output.
fn busiest_pool_during(agent: &TestAgent, url: &str, mode: &str) -> (u32, usize, String) {
    let url = url.to_owned();
    let mode_arg = mode.to_owned();
    let load = std::thread::spawn(move || {
        bench_ok(&url, &["-M", &mode_arg, "-c", "10", "-j", "2", "-T", "4"])
    });
    let (mut most, mut samples) = (0, 0);
    while !load.is_finished() {
        let backends = agent.admin_psql(
            "select count(*) from pg_stat_activity where usename = 'shop' and datname = 'shop'",
        );
        most = most.max(backends.parse::<u32>().unwrap());
        samples += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    let stdout = load
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
    (most, samples, stdout)
}

#[test]
fn pgbench_runs_every_query_mode_through_transaction_pooling() {
    // Ten clients share four server connections, so statements prepared by one client's
    // transaction must follow it to whichever connection serves the next one.
    let agent = TestAgent::start_with_shop(
        // Two runtime threads whatever the machine, so that clients move between them.
        "[pooler]\ndefault_pool_size = 4\nworker_threads = 2\n",
    );
    let url = agent.tenant_url("shop");

    let init = run(
        &mut pgbench(&url, &["-i", "-s", "1", "-q"]),
        Duration::from_secs(60),
    );
    assert!(
        init.status.success(),
        "pgbench -i exited with {}:\n{}",
        init.status,
        stderr_of(&init)
    );

    // While each mode runs, the pool never grows past its size: sampled during the load,
    // from PostgreSQL's own list of the tenant's server connections.
    for mode in ["simple", "extended"] {
        let (most, samples, stdout) = busiest_pool_during(&agent, &url, mode);
        assert!(
            stdout.contains(&format!("query mode: {mode}")),
            "pgbench -M {mode}:\n{stdout}"
        );
        assert!(
            samples >= 3,
            "-M {mode}: only {samples} samples of pg_stat_activity during the run"
        );
        assert!(
            (1..=4).contains(&most),
            "-M {mode}: up to {most} server connections seen during the load, for a pool of 4"
        );
    }
    // A connection (and a SCRAM login) per transaction.
    bench_ok(
        &url,
        &["-C", "-M", "extended", "-c", "4", "-j", "2", "-T", "3"],
    );

    // -M prepared: one client per pgbench thread, then several clients per thread. pgbench
    // prepares each statement with a blocking PQprepare when it first runs it, so while one
    // of a thread's clients waits for a server connection, the thread's other clients sit
    // in open transactions holding theirs (the acceptance run, -c 50 -j 2 on a pool
    // of 20, has the same shape).
    let stdout = bench_ok(&url, &["-M", "prepared", "-c", "4", "-j", "4", "-T", "3"]);
    assert!(stdout.contains("query mode: prepared"), "{stdout}");
    bench_ok(&url, &["-M", "prepared", "-c", "10", "-j", "2", "-T", "4"]);
    bench_ok(
        &url,
        &["-C", "-M", "prepared", "-c", "4", "-j", "2", "-T", "3"],
    );
}
