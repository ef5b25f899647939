//! A broken config file on the console's RELOAD, on SIGHUP and on `POST /reload`: an error
//! that says why (PgBouncer 1.25's "RELOAD failed" with SQLSTATE F0000 on the console), a
//! line in the log, and the running configuration kept; the fixed file then reloads.

use std::fs;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::support::pooler::{console, message, runtime, sqlstate, table, Table};
use crate::support::psql::query;
use crate::support::{pgplatform, run, stderr_of, wait_for, TestAgent};

#[test]
fn a_broken_file_is_refused_on_reload_with_an_error_and_the_running_config_stays() {
    let agent = TestAgent::start_with_shop("[pooler]\ndefault_pool_size = 2\n");
    let url = agent.tenant_url("shop");
    let rt = runtime();
    let show_config = |key: &str| -> String {
        rt.block_on(async {
            let console = console(&agent).await;
            let config: Table = table(&console, "SHOW CONFIG").await.unwrap();
            let row = config.rows_where("key", key)[0].clone();
            config.get(&row, "value").to_owned()
        })
    };
    let good = fs::read_to_string(agent.config_path()).unwrap();
    assert!(good.contains("default_pool_size = 2"), "{good}");
    // A valid copy for the CLI, which reads the file to find the agent.
    let valid_copy = agent.dir().join("valid-copy.toml");
    fs::write(&valid_copy, &good).unwrap();

    // An unknown key in [pooler], beside a changed value that must not apply.
    let broken = good.replace(
        "default_pool_size = 2",
        "default_pool_size = 5\nno_such_setting = 1",
    );
    fs::write(agent.config_path(), &broken).unwrap();
    let refusals = |log: &str| log.matches("configuration not reloaded").count();

    // The console: PgBouncer's error, the reason in DETAIL, and the log says it too.
    let logged = refusals(&agent.log_contents());
    let error = rt.block_on(async {
        let console = console(&agent).await;
        console
            .simple_query("RELOAD")
            .await
            .expect_err("RELOAD of a broken file succeeded")
    });
    assert_eq!(sqlstate(&error), "F0000", "{error:?}");
    assert!(
        message(&error).contains("RELOAD failed, see logs for additional details"),
        "{error:?}"
    );
    let detail = error
        .as_db_error()
        .and_then(|e| e.detail())
        .unwrap_or_default()
        .to_owned();
    assert!(detail.contains("no_such_setting"), "DETAIL: {detail}");
    // It names the key, without quoting the file to whoever holds an admin role.
    assert!(!detail.contains("no_such_setting = 1"), "DETAIL: {detail}");
    wait_for(Duration::from_secs(10), "the refusal in the log", || {
        (refusals(&agent.log_contents()) > logged).then_some(())
    });
    assert_eq!(show_config("default_pool_size"), "2");
    assert_eq!(query(&url, "select 1"), "1");

    // SIGHUP: nobody to answer, so the log carries it; the running config stays.
    let broken = good.replace("default_pool_size = 2", "default_pool_size = \"many\"");
    fs::write(agent.config_path(), &broken).unwrap();
    let logged = refusals(&agent.log_contents());
    kill(Pid::from_raw(agent.pid().unwrap()), Signal::SIGHUP).unwrap();
    let log = wait_for(
        Duration::from_secs(10),
        "SIGHUP's refusal in the log",
        || {
            let log = agent.log_contents();
            (refusals(&log) > logged).then_some(log)
        },
    );
    let line = log
        .lines()
        .rfind(|l| l.contains("configuration not reloaded"))
        .unwrap();
    assert!(line.contains("default_pool_size"), "{line}");
    assert_eq!(show_config("default_pool_size"), "2");

    // POST /reload (`pgplatform reload`): the command fails naming the key.
    let out = run(
        pgplatform()
            .arg("--config")
            .arg(&valid_copy)
            .args(["reload"]),
        Duration::from_secs(60),
    );
    assert!(!out.status.success(), "the agent accepted a broken file");
    assert!(
        stderr_of(&out).contains("default_pool_size"),
        "{}",
        stderr_of(&out)
    );
    assert_eq!(show_config("default_pool_size"), "2");
    assert_eq!(query(&url, "select 1"), "1");

    // Fixed, the same RELOAD applies it.
    fs::write(
        agent.config_path(),
        good.replace("default_pool_size = 2", "default_pool_size = 3"),
    )
    .unwrap();
    rt.block_on(async {
        let console = console(&agent).await;
        console.simple_query("RELOAD").await.unwrap();
    });
    wait_for(
        Duration::from_secs(10),
        "default_pool_size 3 applied",
        || (show_config("default_pool_size") == "3").then_some(()),
    );
}
