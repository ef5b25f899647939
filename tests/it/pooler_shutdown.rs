//! SIGTERM with a client inside a transaction: the pooler stops accepting, lets the
//! transaction run to its COMMIT, and the agent exits 0 with the committed row on disk.

use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::support::pooler::{blocking, connect, exec, runtime, try_connect, within};
use crate::support::psql::query;
use crate::support::{wait_for, TestAgent};

#[test]
fn sigterm_lets_a_running_transaction_commit_then_exits_zero() {
    let mut agent = TestAgent::start_with_shop("");
    let url = agent.tenant_url("shop");
    let pid = Pid::from_raw(agent.pid().expect("the agent runs"));

    runtime().block_on(async {
        let a = connect(&url).await;
        exec(&a, "create table t (id int)").await;
        exec(&a, "begin; insert into t values (1)").await;
        let sleeper = tokio::spawn(async move {
            let slept = a.batch_execute("select pg_sleep(2)").await;
            let committed = a.batch_execute("commit").await;
            (a, slept, committed)
        });
        blocking(|| {
            wait_for(Duration::from_secs(10), "pg_sleep(2) running", || {
                let running = agent.admin_psql(
                    "select count(*) from pg_stat_activity where usename = 'shop' \
                     and state = 'active' and query like '%pg_sleep(2)%'",
                );
                (running == "1").then_some(())
            })
        });
        let signalled = Instant::now();
        kill(pid, Signal::SIGTERM).unwrap();

        // New connections are refused while the transaction finishes: poll until a login
        // fails, which must happen before pg_sleep(2) ends.
        loop {
            if try_connect(&url).await.is_err() {
                break;
            }
            assert!(
                signalled.elapsed() < Duration::from_secs(10),
                "new clients still log in {:?} after SIGTERM",
                signalled.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            !sleeper.is_finished(),
            "new logins were refused only after the running transaction had ended ({:?})",
            signalled.elapsed()
        );

        let (_a, slept, committed) =
            within(Duration::from_secs(15), "the running transaction", sleeper)
                .await
                .unwrap();
        slept.unwrap_or_else(|e| panic!("pg_sleep(2) after SIGTERM: {e:?}"));
        committed.unwrap_or_else(|e| panic!("COMMIT after SIGTERM: {e:?}"));
    });

    // With no transaction left, the agent does not wait for shutdown_timeout (30 s).
    let stopping = Instant::now();
    let status = agent.stop().expect("the agent was running");
    assert!(
        stopping.elapsed() < Duration::from_secs(10),
        "the agent took {:?} to exit after the last transaction",
        stopping.elapsed()
    );
    assert_eq!(
        status.code(),
        Some(0),
        "agent exit status after SIGTERM: {status}"
    );

    agent.start_again();
    assert_eq!(
        query(&agent.tenant_url("shop"), "select count(*) from t"),
        "1",
        "the transaction committed during shutdown is gone"
    );
}
