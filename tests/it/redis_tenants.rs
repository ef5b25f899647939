//! Tenants' Redis, dedicated mode: `tenant create --redis` gives a working `redis_url`;
//! two tenants cannot see each other's keys; a tenant's admin commands are denied; its
//! memory limit stops its own writes, not its neighbour's; rotation refuses the old
//! password at once.

use crate::support::redis::{cli, cli_anonymous, cli_tls, port_of, redis_toml, require_redis};
use crate::support::TestAgent;

/// The acceptance line, and what the tenant may and may not do.
#[test]
fn create_with_redis_gives_a_url_that_answers_and_admin_commands_are_denied() {
    if !require_redis() {
        return;
    }
    let agent = TestAgent::start_with(&redis_toml(20));
    let created = agent.cli_json(&["tenant", "create", "shop", "--redis", "--json"]);
    let url = agent.redis_url("shop");
    assert_eq!(cli(&url, &["ping"]), "PONG");
    assert_eq!(cli(&url, &["set", "greeting", "hello"]), "OK");
    assert_eq!(cli(&url, &["get", "greeting"]), "hello");
    assert!(cli(&url, &["acl", "whoami"]).contains("NOPERM"));

    // The URL printed is redacted; the files hold the password.
    let password = agent.secret("shop", "redis_password");
    let shown = created["redis_url"].as_str().unwrap();
    assert!(!shown.contains(&password), "{shown}");
    assert_eq!(created["redis_maxmemory"], 256u64 << 20);
    let env = agent.secret("shop", "env");
    let port = port_of(&url);
    for line in [
        format!("REDIS_URL={url}"),
        "REDIS_HOST=127.0.0.1".to_owned(),
        format!("REDIS_PORT={port}"),
        format!("REDIS_PASSWORD={password}"),
    ] {
        assert!(env.lines().any(|l| l == line), "env lacks {line}: {env}");
    }
    assert!(env.contains("DATABASE_URL=postgresql://"));

    // No way in without the tenant's password: the default user is off.
    assert!(cli_anonymous(port, &["ping"]).contains("NOAUTH"));
    let wrong = url.replace(&password, "not-the-password");
    assert!(cli(&wrong, &["ping"]).contains("WRONGPASS"));

    for command in [
        &["config", "get", "maxmemory"][..],
        &["config", "set", "maxmemory", "0"],
        &["debug", "sleep", "0"],
        &["shutdown", "nosave"],
        &["module", "list"],
        &["replicaof", "127.0.0.1", "1"],
        &["slaveof", "no", "one"],
        &["acl", "setuser", "shop", "nopass"],
        &["monitor"],
        &["save"],
        &["bgsave"],
        &["bgrewriteaof"],
        &["failover"],
        &["migrate", "127.0.0.1", "1", "greeting", "0", "1000"],
    ] {
        let answer = cli(&url, command);
        // DEBUG and MODULE are also off server-wide (enable-*-command no).
        let denied = answer.contains("NOPERM") || answer.contains("command not allowed");
        assert!(denied, "{command:?} answered {answer}");
    }
    // Still up and unchanged after all that.
    assert_eq!(cli(&url, &["get", "greeting"]), "hello");
    // redis.conf holds no password in clear, and the log neither.
    let conf = std::fs::read_to_string(agent.redis_dir("shop").join("redis.conf")).unwrap();
    assert!(!conf.contains(&password));
    assert!(conf.contains("user default off"));
    assert!(!agent.log_contents().contains(&password));
}

#[test]
fn two_tenants_cannot_see_each_other_and_one_full_redis_does_not_stop_the_other() {
    if !require_redis() {
        return;
    }
    let agent = TestAgent::start_with(&redis_toml(20));
    agent.cli_ok(&[
        "tenant",
        "create",
        "shop",
        "--redis",
        "--redis-maxmemory",
        "4mb",
    ]);
    agent.cli_ok(&["tenant", "create", "blog", "--redis"]);
    let shop = agent.redis_url("shop");
    let blog = agent.redis_url("blog");
    assert_ne!(port_of(&shop), port_of(&blog));

    assert_eq!(cli(&shop, &["set", "cart:1", "shoes"]), "OK");
    assert_eq!(cli(&blog, &["get", "cart:1"]), "");
    assert_eq!(cli(&blog, &["keys", "*"]), "");
    assert_eq!(cli(&blog, &["dbsize"]), "0");
    // blog's credentials on shop's server: no such user there.
    let crossed = blog.replace(
        &format!(":{}/", port_of(&blog)),
        &format!(":{}/", port_of(&shop)),
    );
    assert!(
        cli(&crossed, &["get", "cart:1"]).contains("WRONGPASS"),
        "{crossed}"
    );

    // shop fills its 4 MB; its writes then fail with Redis's OOM error.
    let fill = "for i=1,6000 do redis.call('set','fill:'..i,string.rep('x',1000)) end return 1";
    let _ = cli(&shop, &["eval", fill, "0"]);
    let refused = cli(&shop, &["set", "one", "more"]);
    assert!(
        refused.contains("OOM"),
        "shop over its limit answered {refused}"
    );
    let used: u64 = cli(&shop, &["memory", "usage", "fill:1"])
        .parse()
        .unwrap_or(0);
    assert!(used > 0, "shop's keys were written");
    // Its reads still work; blog keeps writing as much as it likes.
    assert_eq!(cli(&shop, &["get", "cart:1"]), "shoes");
    assert_eq!(cli(&blog, &["eval", fill, "0"]), "1");
    assert_eq!(cli(&blog, &["set", "post:1", "hello"]), "OK");
    assert_eq!(cli(&blog, &["dbsize"]), "6001");

    // A larger limit, at once: shop writes again, and keeps it after a restart.
    let resized = agent.cli_json(&[
        "tenant",
        "redis",
        "resize",
        "shop",
        "--maxmemory",
        "64mb",
        "--json",
    ]);
    assert_eq!(resized["redis_maxmemory"], 64u64 << 20);
    assert_eq!(cli(&shop, &["set", "one", "more"]), "OK");
    let conf = std::fs::read_to_string(agent.redis_dir("shop").join("redis.conf")).unwrap();
    assert!(
        conf.contains(&format!("maxmemory {}\n", 64u64 << 20)),
        "{conf}"
    );
    let bad = agent.cli_err(&["tenant", "redis", "resize", "shop", "--maxmemory", "lots"]);
    assert!(
        bad.contains("Redis maxmemory: `lots` is not a size"),
        "{bad}"
    );
    assert_eq!(
        agent.cli_json(&["tenant", "show", "shop", "--json"])["redis_maxmemory"],
        64u64 << 20
    );
}

#[test]
fn rotate_refuses_the_old_redis_password_at_once_and_survives_a_restart() {
    if !require_redis() {
        return;
    }
    let mut agent = TestAgent::start_with(&redis_toml(20));
    agent.cli_ok(&["tenant", "create", "shop", "--redis"]);
    let old = agent.redis_url("shop");
    assert_eq!(cli(&old, &["set", "k", "v"]), "OK");

    agent.cli_ok(&["tenant", "rotate", "shop"]);
    let new = agent.redis_url("shop");
    assert_ne!(new, old);
    assert!(
        cli(&old, &["ping"]).contains("WRONGPASS"),
        "old password still works"
    );
    assert_eq!(cli(&new, &["get", "k"]), "v");
    let env = agent.secret("shop", "env");
    assert!(env.contains(&format!("REDIS_URL={new}")));
    assert!(!env.contains(&old));

    // Rotating the read-only role leaves the Redis password alone.
    agent.cli_ok(&["tenant", "create", "blog", "--redis", "--with-readonly"]);
    let blog = agent.redis_url("blog");
    agent.cli_ok(&["tenant", "rotate", "blog", "--readonly"]);
    assert_eq!(agent.redis_url("blog"), blog);
    assert_eq!(cli(&blog, &["ping"]), "PONG");

    // The new password is the one the server takes after the agent restarts it.
    agent.restart();
    assert_eq!(cli(&new, &["get", "k"]), "v");
    assert!(cli(&old, &["ping"]).contains("WRONGPASS"));
}

/// Beyond loopback a tenant's Redis speaks TLS only, with the pooler's certificate.
#[test]
fn beyond_loopback_the_redis_speaks_tls_only_with_the_pooler_certificate() {
    if !require_redis() {
        return;
    }
    let toml = format!("{}listen_addr = \"0.0.0.0\"\n", redis_toml(20));
    let agent = TestAgent::start_with(&toml);
    agent.cli_ok(&["tenant", "create", "shop", "--redis"]);
    let url = agent.redis_url("shop");
    // The wildcard is not an address to connect to: the URL names the tenants' host.
    assert!(
        url.starts_with("rediss://shop:") && url.contains("@127.0.0.1:"),
        "{url}"
    );
    let env = agent.secret("shop", "env");
    assert!(env.contains(&format!("REDIS_URL={url}\n")));

    let ca = agent.data_dir().join("tls").join("server.crt");
    assert_eq!(cli_tls(&url, &ca, &["set", "k", "v"]), "OK");
    assert_eq!(cli_tls(&url, &ca, &["get", "k"]), "v");
    // No clear text on the port, and no TLS without trusting the certificate.
    let plain = url.replacen("rediss://", "redis://", 1);
    let answer = cli(&plain, &["get", "k"]);
    assert!(answer.contains("I/O error"), "clear text answered {answer}");
    let untrusted = cli_tls(
        &url,
        std::path::Path::new("/etc/ssl/certs/ca-certificates.crt"),
        &["ping"],
    );
    assert!(
        untrusted.contains("certificate verify failed"),
        "{untrusted}"
    );
    // The server's copy of the key is its own user's, 0600.
    use std::os::unix::fs::MetadataExt;
    let key = std::fs::metadata(agent.redis_dir("shop").join("tls.key")).unwrap();
    assert_eq!(key.mode() & 0o777, 0o600);
}
