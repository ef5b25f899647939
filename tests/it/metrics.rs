//! Runbook "is it healthy?": `/metrics` passes `promtool check metrics` on a live platform,
//! its values follow real activity (commits, pooled clients, failed archiving, tenants),
//! the dedicated metrics port serves the same, and the Grafana dashboard only queries
//! metrics we export.

use crate::support::ports::free_port;
use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::time::Duration;

use crate::support::metrics::{families, promtool, promtool_check_metrics, sample};
use crate::support::pooler::{connect, exec, runtime, try_connect_config};
use crate::support::{wait_for, TestAgent};

#[test]
fn metrics_follow_real_activity_and_pass_promtool() {
    let metrics_port = free_port();
    let agent = TestAgent::start_with_shop(&format!(
        "[metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\nstatements_top = 5\n\
         [backup]\narchive = false\n[postgres.parameters]\narchive_mode = \"on\"\narchive_command = \"/bin/false\"\n"
    ));
    let before = agent.scrape();
    assert_eq!(sample(&before, "pg_up", &[]), Some(1.0), "{before}");
    assert_eq!(sample(&before, "pgbouncer_up", &[]), Some(1.0));
    assert_eq!(sample(&before, "pgplatform_tenants", &[]), Some(1.0));
    let shop = [("datname", "shop")];
    let commits_before = sample(&before, "pg_stat_database_xact_commit", &shop).unwrap();
    let failed_before = sample(&before, "pg_stat_archiver_failed_count", &[]).unwrap();

    let rt = runtime();
    let url = agent.tenant_url("shop");
    let during = rt.block_on(async {
        let app = connect(&url).await;
        exec(&app, "CREATE TABLE t (x int); INSERT INTO t VALUES (1)").await;
        // A second client holds a server connection inside a transaction.
        let holder = connect(&url).await;
        exec(&holder, "BEGIN; SELECT 1").await;
        let admin = try_connect_config(&agent.superuser_config()).await.unwrap();
        exec(&admin, "SELECT pg_switch_wal()").await;
        let scrape = tokio::task::block_in_place(|| agent.scrape());
        exec(&holder, "COMMIT").await;
        scrape
    });

    let commits = sample(&during, "pg_stat_database_xact_commit", &shop).unwrap();
    assert!(
        commits > commits_before,
        "xact_commit {commits_before} -> {commits}"
    );
    let pool = [("database", "shop"), ("user", "shop")];
    let active = sample(&during, "pgbouncer_pools_client_active_connections", &pool);
    assert!(active >= Some(1.0), "client_active {active:?}\n{during}");
    let servers = sample(&during, "pgbouncer_pools_server_active_connections", &pool);
    assert!(servers >= Some(1.0), "server_active {servers:?}");
    let backends = sample(
        &during,
        "pgplatform_tenant_connections",
        &[("tenant", "shop")],
    );
    assert!(backends >= Some(1.0), "tenant connections {backends:?}");
    for family in [
        "pg_postmaster_start_time_seconds",
        "pg_database_size_bytes",
        "pg_stat_activity_count",
        "pg_stat_activity_max_tx_duration",
        "pg_locks_count",
        "pg_settings_max_connections",
        "pg_settings_shared_buffers_bytes",
        "pg_stat_bgwriter_buffers_alloc_total",
        "pg_replication_lag_seconds",
        "pg_database_wraparound_age_datfrozenxid_seconds",
        "pgbouncer_stats_queries_pooled_total",
        "pgbouncer_stats_queries_duration_seconds_total",
        "pgbouncer_stats_client_wait_seconds_total",
        "pgbouncer_stats_received_bytes_total",
        "pgbouncer_stats_sent_bytes_total",
        "pgbouncer_pools_client_waiting_connections",
        "pgbouncer_pools_server_idle_connections",
        "pgbouncer_pools_client_maxwait_seconds",
        "pgbouncer_databases_current_connections",
        "pgplatform_build_info",
        "pgplatform_agent_uptime_seconds",
        "pgplatform_tenant_database_size_bytes",
        "pgplatform_data_dir_filesystem_avail_bytes",
    ] {
        assert!(
            families(&during).iter().any(|f| f == family),
            "{family} missing"
        );
    }
    let has_statements = families(&during)
        .iter()
        .any(|f| f == "pg_stat_statements_calls_total");

    // archive_command = /bin/false: the switched segment fails to archive.
    let failed = wait_for(Duration::from_secs(30), "a failed archive attempt", || {
        let text = agent.scrape();
        let failed = sample(&text, "pg_stat_archiver_failed_count", &[])?;
        (failed > failed_before).then_some(text)
    });
    assert!(sample(&failed, "pgplatform_wal_archive_pending_segments", &[]) >= Some(1.0));

    if let Some(promtool) = promtool() {
        let (ok, report) = promtool_check_metrics(promtool, &failed);
        assert!(ok, "promtool check metrics: {report}");
    }

    let dedicated = agent
        .http_get_text(&format!("http://127.0.0.1:{metrics_port}/metrics"))
        .expect("the dedicated metrics port answers");
    assert_eq!(sample(&dedicated, "pg_up", &[]), Some(1.0));
    assert!(dedicated.contains("pgbouncer_pools_client_active_connections"));

    // Every metric a dashboard panel queries is one we export.
    let exported: BTreeSet<String> = families(&failed).into_iter().collect();
    let mut missing = Vec::new();
    for name in dashboard_metrics(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/grafana/pgplatform.json"),
    ) {
        let statements_off = name.starts_with("pg_stat_statements_") && !has_statements;
        if !exported.contains(&name) && !statements_off {
            missing.push(name);
        }
    }
    assert!(
        missing.is_empty(),
        "the dashboard queries metrics we do not export: {missing:?}"
    );
}

/// The metric names in every panel's queries.
fn dashboard_metrics(path: &Path) -> BTreeSet<String> {
    let text = fs::read_to_string(path).unwrap();
    let dashboard: serde_json::Value =
        serde_json::from_str(&text).expect("the dashboard is valid JSON");
    let mut names = BTreeSet::new();
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(panels.len() > 10, "the dashboard has panels");
    for panel in panels {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().expect("every target has an expr");
            let words = expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'));
            for word in words {
                if ["pg_", "pgbouncer_", "pgplatform_"]
                    .iter()
                    .any(|p| word.starts_with(p))
                {
                    names.insert(word.to_owned());
                }
            }
        }
    }
    assert!(names.len() > 20, "found the dashboard's metrics: {names:?}");
    names
}
