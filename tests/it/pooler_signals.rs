//! PgBouncer's shutdown sequence: the first SIGINT or SIGTERM is a safe shutdown (new
//! clients refused, open transactions may finish, up to shutdown_timeout); a second one
//! while that runs is an immediate shutdown: the agent stops without waiting for them, as
//! SIGQUIT and the console's SHUTDOWN do at once.

use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::support::pooler::{connect, exec, runtime, try_connect};
use crate::support::{wait_for, TestAgent};

#[test]
fn a_second_sigint_or_sigterm_stops_at_once_without_waiting_for_open_transactions() {
    for (first, second) in [
        (Signal::SIGINT, Signal::SIGINT),
        (Signal::SIGTERM, Signal::SIGTERM),
    ] {
        // Long enough that only the second signal can explain a prompt exit.
        let mut agent = TestAgent::start_with_shop("[pooler]\nshutdown_timeout = 120\n");
        let url = agent.tenant_url("shop");
        let pid = Pid::from_raw(agent.pid().expect("the agent runs"));
        let rt = runtime();
        // A client idle inside a transaction: a safe shutdown waits for it.
        let client = rt.block_on(async {
            let client = connect(&url).await;
            exec(&client, "begin; select 1").await;
            client
        });

        let log_before = agent.log_contents().len();
        kill(pid, first).unwrap();
        // The safe shutdown has begun once new logins are refused.
        wait_for(Duration::from_secs(20), "new logins refused", || {
            rt.block_on(try_connect(&url)).is_err().then_some(())
        });
        assert!(
            agent.is_running(),
            "{first:?} stopped the agent while a transaction was open"
        );
        let log = agent.log_contents();
        assert!(
            log[log_before..].contains("received, shutting down"),
            "{}",
            agent.log_tail(20)
        );

        let signalled = Instant::now();
        kill(pid, second).unwrap();
        wait_for(
            Duration::from_secs(90),
            "the agent to exit after the second signal",
            || (!agent.is_running()).then_some(()),
        );
        assert!(
            signalled.elapsed() < Duration::from_secs(30),
            "the second {second:?} took {:?}",
            signalled.elapsed()
        );
        let log = agent.log_contents();
        assert!(
            log[log_before..].contains("received during shutdown: stopping at once"),
            "{}",
            agent.log_tail(20)
        );
        assert!(
            log[log_before..].contains("pgplatform stopped"),
            "the agent did not stop cleanly: {}",
            agent.log_tail(20)
        );
        drop(client);
    }
}

/// SIGQUIT and the console's SHUTDOWN are PgBouncer's immediate shutdown: the agent does
/// not wait for a client idle in its transaction (shutdown_timeout is 120 s here).
#[test]
fn sigquit_and_the_console_shutdown_stop_at_once() {
    for how in ["SIGQUIT", "SHUTDOWN"] {
        let mut agent = TestAgent::start_with_shop("[pooler]\nshutdown_timeout = 120\n");
        let url = agent.tenant_url("shop");
        let pid = Pid::from_raw(agent.pid().expect("the agent runs"));
        let rt = runtime();
        let client = rt.block_on(async {
            let client = connect(&url).await;
            exec(&client, "begin; select 1").await;
            client
        });
        let log_before = agent.log_contents().len();
        let stopping = Instant::now();
        if how == "SIGQUIT" {
            kill(pid, Signal::SIGQUIT).unwrap();
        } else {
            rt.block_on(async {
                let console = crate::support::pooler::console(&agent).await;
                // The answer may or may not arrive before the console's session ends.
                let _ = console.simple_query("SHUTDOWN").await;
            });
        }
        wait_for(Duration::from_secs(90), "the agent to exit", || {
            (!agent.is_running()).then_some(())
        });
        assert!(
            stopping.elapsed() < Duration::from_secs(30),
            "{how} took {:?}",
            stopping.elapsed()
        );
        let log = agent.log_contents();
        assert!(
            log[log_before..].contains("immediate shutdown"),
            "{how}: {}",
            agent.log_tail(20)
        );
        drop(client);
    }
}
