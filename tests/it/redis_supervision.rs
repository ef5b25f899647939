//! Tenants' Redis under the agent's supervision: a redis-server killed with SIGKILL comes
//! back with its data (AOF); the agent stops them when it stops and starts them again,
//! and stops one a killed agent left behind;
//! `tenant redis disable|enable`, drop keeping the data aside (or --purge); and the bad
//! inputs: unknown tenant, missing binary, port range exhausted.

use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::support::redis::{cli, dropped, port_of, redis_toml, require_redis};
use crate::support::{process_alive, wait_for, TestAgent};

#[test]
fn a_killed_redis_server_is_restarted_with_its_data_and_follows_the_agent() {
    if !require_redis() {
        return;
    }
    // appendfsync always: every acknowledged write is on disk before the reply.
    let mut agent = TestAgent::start_with(&format!("{}appendfsync = \"always\"\n", redis_toml(20)));
    agent.cli_ok(&["tenant", "create", "shop", "--redis"]);
    let conf = std::fs::read_to_string(agent.redis_dir("shop").join("redis.conf")).unwrap();
    assert!(
        conf.contains("appendonly yes\nappendfsync always\n"),
        "{conf}"
    );
    let url = agent.redis_url("shop");
    for i in 0..100 {
        assert_eq!(cli(&url, &["set", &format!("order:{i}"), "paid"]), "OK");
    }
    let pid = agent.redis_pid("shop").expect("shop's redis-server runs");

    kill(Pid::from_raw(pid), Signal::SIGKILL).unwrap();
    let restarted = wait_for(Duration::from_secs(30), "a new redis-server", || {
        agent
            .redis_pid("shop")
            .filter(|new| *new != pid && cli(&url, &["ping"]) == "PONG")
    });
    assert!(!process_alive(pid));
    assert_eq!(
        cli(&url, &["dbsize"]),
        "100",
        "acknowledged writes came back from the AOF"
    );
    assert_eq!(cli(&url, &["get", "order:99"]), "paid");
    assert!(agent
        .log_contents()
        .contains("redis-server exited unexpectedly"));

    // The agent's stop stops it; its start starts it again, data and password intact.
    agent.stop();
    assert!(!process_alive(restarted), "redis-server outlived the agent");
    assert!(cli(&url, &["ping"]).contains("refused"));
    agent.start_again();
    wait_for(
        Duration::from_secs(30),
        "shop's Redis after the agent's start",
        || (cli(&url, &["ping"]) == "PONG").then_some(()),
    );
    assert_eq!(cli(&url, &["get", "order:0"]), "paid");

    // An agent killed with SIGKILL leaves its redis-server running; the next agent stops
    // that one (its pid file checked against the process) before starting its own.
    let orphan = agent.redis_pid("shop").expect("shop's redis-server runs");
    agent.kill9_agent();
    assert!(process_alive(orphan), "redis-server died with the agent");
    agent.start_again();
    wait_for(
        Duration::from_secs(30),
        "a new redis-server after the orphan",
        || {
            agent
                .redis_pid("shop")
                .filter(|new| *new != orphan && cli(&url, &["ping"]) == "PONG")
        },
    );
    assert!(
        !process_alive(orphan),
        "the orphaned redis-server still runs"
    );
    assert!(agent
        .log_contents()
        .contains("a redis-server from a previous agent is still running"));
    assert_eq!(cli(&url, &["dbsize"]), "100");
}

#[test]
fn disable_enable_and_drop_keep_or_purge_the_data() {
    if !require_redis() {
        return;
    }
    let agent = TestAgent::start_with(&redis_toml(20));
    agent.cli_ok(&["tenant", "create", "shop"]);
    assert!(!agent.secrets_dir("shop").join("redis_url").exists());
    agent.cli_ok(&["tenant", "redis", "enable", "shop", "--maxmemory", "64mb"]);
    let url = agent.redis_url("shop");
    assert_eq!(cli(&url, &["set", "k", "kept"]), "OK");
    assert!(cli(&url, &["config", "get", "maxmemory"]).contains("NOPERM"));
    let shown = agent.cli_json(&["tenant", "show", "shop", "--json"]);
    assert_eq!(shown["redis_maxmemory"], 64u64 << 20);
    let list = agent.cli_json(&["tenant", "list", "--json"]);
    assert_eq!(list[0]["redis_port"], port_of(&url));
    assert!(agent.cli_ok(&["tenant", "list"]).contains("REDIS"));
    let again = agent.cli_err(&["tenant", "redis", "enable", "shop"]);
    assert!(again.contains("already has Redis"), "{again}");

    agent.cli_ok(&["tenant", "redis", "disable", "shop"]);
    assert!(cli(&url, &["ping"]).contains("refused"));
    assert!(!agent.secrets_dir("shop").join("redis_url").exists());
    assert!(!agent.secret("shop", "env").contains("REDIS"));
    let twice = agent.cli_err(&["tenant", "redis", "disable", "shop"]);
    assert!(twice.contains("has no Redis"), "{twice}");

    // Enabled again: a new password, the data kept by the disable.
    agent.cli_ok(&["tenant", "redis", "enable", "shop"]);
    let new = agent.redis_url("shop");
    assert_ne!(new, url);
    assert_eq!(cli(&new, &["get", "k"]), "kept");

    // Drop keeps the data aside; --purge does not.
    agent.cli_ok(&["tenant", "drop", "shop", "--yes"]);
    assert!(cli(&new, &["ping"]).contains("refused"));
    assert!(!agent.redis_dir("shop").exists());
    let aside = dropped(&agent.data_dir());
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert!(aside[0].starts_with("shop."));
    agent.cli_ok(&["tenant", "create", "blog", "--redis"]);
    agent.cli_ok(&["tenant", "drop", "blog", "--yes", "--purge"]);
    assert!(!agent.redis_dir("blog").exists());
    assert_eq!(dropped(&agent.data_dir()).len(), 1);
}

#[test]
fn bad_input_is_refused_and_changes_nothing() {
    if !require_redis() {
        return;
    }
    let agent = TestAgent::start_with(&redis_toml(1));
    let unknown = agent.cli_err(&["tenant", "redis", "enable", "nosuch"]);
    assert!(unknown.contains("no tenant named `nosuch`"), "{unknown}");
    let size = agent.cli_err(&[
        "tenant",
        "create",
        "shop",
        "--redis",
        "--redis-maxmemory",
        "12xb",
    ]);
    assert!(
        size.contains("Redis maxmemory: `12xb` is not a size"),
        "{size}"
    );
    let before = agent.inventory();

    // One port in the range: the second tenant finds none, and nothing of it is left.
    agent.cli_ok(&["tenant", "create", "shop", "--redis"]);
    let with_shop = agent.inventory();
    let full = agent.cli_err(&["tenant", "create", "blog", "--redis"]);
    assert!(
        full.contains("no free port left in redis.port_range"),
        "{full}"
    );
    assert_eq!(agent.inventory(), with_shop);
    assert!(!agent.redis_dir("blog").exists());
    agent.cli_ok(&["tenant", "create", "blog"]);
    let full = agent.cli_err(&["tenant", "redis", "enable", "blog"]);
    assert!(full.contains("no free port left"), "{full}");
    assert!(!agent.secrets_dir("blog").join("redis_url").exists());
    agent.cli_ok(&["tenant", "drop", "blog", "--yes"]);
    agent.cli_ok(&["tenant", "drop", "shop", "--yes", "--purge"]);
    assert_eq!(agent.inventory(), before);

    // A redis-server that is not there: the error names the package; nothing is created.
    drop(agent);
    let agent = TestAgent::start_with(&format!(
        "{}bin = \"/nonexistent/redis-server\"\n",
        redis_toml(5)
    ));
    let before = agent.inventory();
    let missing = agent.cli_err(&["tenant", "create", "shop", "--redis"]);
    assert!(missing.contains("redis-server"), "{missing}");
    assert!(missing.contains("Debian package"), "{missing}");
    assert_eq!(agent.inventory(), before);
}

/// What the server's OS user may plant in its own directory: a link at redis.conf is
/// replaced, never written through; a pid file naming another process gets it no signal.
#[test]
fn a_planted_link_or_pid_in_the_redis_directory_is_not_followed() {
    if !require_redis() {
        return;
    }
    let mut agent = TestAgent::start_with(&redis_toml(20));
    agent.cli_ok(&["tenant", "create", "shop", "--redis"]);
    let url = agent.redis_url("shop");
    assert_eq!(cli(&url, &["set", "k", "v"]), "OK");
    agent.stop();

    let dir = agent.redis_dir("shop");
    let victim = agent.dir().join("victim");
    std::fs::write(&victim, "precious\n").unwrap();
    std::fs::remove_file(dir.join("redis.conf")).unwrap();
    std::os::unix::fs::symlink(&victim, dir.join("redis.conf")).unwrap();
    let mut bystander = crate::support::command("sleep")
        .arg("120")
        .current_dir(agent.dir())
        .spawn()
        .unwrap();
    std::fs::write(dir.join("redis.pid"), format!("{}\n", bystander.id())).unwrap();

    agent.start_again();
    wait_for(
        Duration::from_secs(30),
        "shop's Redis after the restart",
        || (cli(&url, &["get", "k"]) == "v").then_some(()),
    );
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
    let conf = std::fs::symlink_metadata(dir.join("redis.conf")).unwrap();
    assert!(
        conf.file_type().is_file(),
        "redis.conf is a regular file again"
    );
    assert!(
        bystander.try_wait().unwrap().is_none(),
        "the process the planted pid named was signalled"
    );
    let _ = bystander.kill();
    let _ = bystander.wait();
}
