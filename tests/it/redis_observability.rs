//! Tenants' Redis in `/metrics` (redis_exporter's names, label `tenant`, promtool-clean)
//! and in `status`.

use crate::support::metrics::{families, promtool, promtool_check_metrics, sample};
use crate::support::redis::{cli, redis_toml, require_redis};
use crate::support::TestAgent;

#[test]
fn metrics_and_status_show_each_tenants_redis() {
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
        "8mb",
    ]);
    agent.cli_ok(&["tenant", "create", "blog", "--redis"]);
    let shop = agent.redis_url("shop");
    for key in ["a", "b", "c"] {
        assert_eq!(cli(&shop, &["set", key, "1"]), "OK");
    }
    assert_eq!(cli(&shop, &["get", "a"]), "1");
    assert_eq!(cli(&shop, &["get", "missing"]), "");

    let text = agent.scrape();
    let shop_label = [("tenant", "shop")];
    assert_eq!(sample(&text, "redis_up", &shop_label), Some(1.0));
    assert_eq!(sample(&text, "redis_up", &[("tenant", "blog")]), Some(1.0));
    assert_eq!(
        sample(&text, "redis_db_keys", &[("tenant", "shop"), ("db", "db0")]),
        Some(3.0)
    );
    assert_eq!(
        sample(&text, "redis_db_keys", &[("tenant", "blog"), ("db", "db0")]),
        None,
        "blog has no keys"
    );
    assert_eq!(
        sample(&text, "redis_memory_max_bytes", &shop_label),
        Some(8.0 * 1024.0 * 1024.0)
    );
    assert!(sample(&text, "redis_memory_used_bytes", &shop_label) > Some(0.0));
    assert!(sample(&text, "redis_keyspace_hits_total", &shop_label) >= Some(1.0));
    assert!(sample(&text, "redis_keyspace_misses_total", &shop_label) >= Some(1.0));
    assert!(sample(&text, "redis_commands_processed_total", &shop_label) >= Some(5.0));
    assert!(sample(&text, "redis_connected_clients", &shop_label) >= Some(1.0));
    assert_eq!(
        sample(&text, "redis_aof_last_write_status", &shop_label),
        Some(1.0)
    );
    for name in [
        "redis_evicted_keys_total",
        "redis_expired_keys_total",
        "redis_rdb_last_bgsave_status",
    ] {
        assert!(sample(&text, name, &shop_label).is_some(), "{name} missing");
    }
    if let Some(promtool) = promtool() {
        let (ok, report) = promtool_check_metrics(promtool, &text);
        assert!(ok, "promtool check metrics: {report}");
    }
    // The dashboard's Redis row and the Redis alert rules query only what we export.
    let exported = families(&text);
    for file in [
        "deploy/grafana/pgplatform.json",
        "deploy/prometheus/alerts.yml",
    ] {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
        let source = std::fs::read_to_string(&path).unwrap();
        let names: Vec<&str> = source
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|word| word.starts_with("redis_") && *word != "redis_exporter")
            .collect();
        assert!(names.len() >= 3, "{file} queries Redis: {names:?}");
        for name in names {
            assert!(
                exported.iter().any(|e| e == name),
                "{file} queries {name}, not exported"
            );
        }
    }

    let status = agent.cli_json(&["status", "--json"]);
    let redis = status["redis"]
        .as_array()
        .expect("status lists the Redis servers");
    let shop_status = redis.iter().find(|r| r["tenant"] == "shop").expect("shop");
    assert_eq!(shop_status["state"], "running");
    assert_eq!(shop_status["maxmemory_bytes"], 8u64 << 20);
    assert!(shop_status["used_memory_bytes"].as_u64() > Some(0));
    let screen = agent.cli_ok(&["status"]);
    assert!(screen.contains("redis (2)"), "{screen}");

    // A disabled Redis leaves the metrics; the other stays.
    agent.cli_ok(&["tenant", "redis", "disable", "blog"]);
    let text = agent.scrape();
    assert_eq!(sample(&text, "redis_up", &[("tenant", "blog")]), None);
    assert_eq!(sample(&text, "redis_up", &shop_label), Some(1.0));
}
