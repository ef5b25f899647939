//! HA when etcd stops answering (frozen with SIGSTOP, so requests hang): without failsafe
//! the primary stops accepting writes before its lease could expire, and the cluster
//! converges on one primary when etcd returns; with failsafe it keeps writing while every
//! replica confirms it follows, and stays the only primary afterwards.

use std::time::{Duration, Instant};

use crate::support::cluster::TestCluster;
use crate::support::psql::{query, run_sql_over};
use crate::support::wait_for;

/// Node `i`'s PostgreSQL directly (not its pooler), as the tenant.
fn direct(cluster: &TestCluster, url: &str, i: usize) -> String {
    let via = cluster.url_via(url, i);
    via.replace(
        &format!(":{}/", cluster.nodes[i].pooler_port()),
        &format!(":{}/", cluster.nodes[i].pg_port()),
    )
}

/// The nodes whose PostgreSQL accepts writes now (a node that does not answer does not).
fn writable(cluster: &TestCluster, url: &str) -> Vec<usize> {
    (0..3)
        .filter(|&i| {
            let out = run_sql_over(&direct(cluster, url, i), "SELECT pg_is_in_recovery()");
            out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "f"
        })
        .collect()
}

fn with_table(cluster: &TestCluster) -> String {
    cluster.nodes[0].cli_ok(&["tenant", "create", "shop"]);
    let url = cluster.nodes[0].tenant_url("shop");
    query(&url, "CREATE TABLE t (id int PRIMARY KEY)");
    // Replicas render pg_hba.conf from the registry every few seconds.
    wait_for(
        Duration::from_secs(30),
        "tenant reachable on every node",
        || {
            (0..3)
                .all(|i| {
                    run_sql_over(&direct(cluster, &url, i), "SELECT 1")
                        .status
                        .success()
                })
                .then_some(())
        },
    );
    url
}

#[test]
fn without_failsafe_an_etcd_outage_stops_writes_in_time_and_heals_to_one_primary() {
    let Some(cluster) = TestCluster::start("") else {
        return;
    };
    let url = with_table(&cluster);
    assert_eq!(writable(&cluster, &url), vec![0]);

    cluster.etcd.freeze();
    let frozen = Instant::now();
    // ttl is 3 s; the primary fences 1 s before its lease could expire.
    wait_for(
        Duration::from_secs(10),
        "the primary to stop writes",
        || writable(&cluster, &url).is_empty().then_some(()),
    );
    let fenced = frozen.elapsed();
    assert!(
        fenced < Duration::from_secs(6),
        "writes stopped only after {fenced:?}"
    );
    // Time is under test: past the lease's expiry (3 s), no node has started writing.
    std::thread::sleep(Duration::from_secs(5));
    assert!(
        writable(&cluster, &url).is_empty(),
        "a node writes without etcd"
    );

    cluster.etcd.thaw();
    let primary = wait_for(Duration::from_secs(60), "one primary again", || {
        let now = writable(&cluster, &url);
        (now.len() == 1).then(|| now[0])
    });
    let via = cluster.url_via(&url, (primary + 1) % 3);
    wait_for(Duration::from_secs(30), "a write through a pooler", || {
        run_sql_over(&via, "INSERT INTO t VALUES (1)")
            .status
            .success()
            .then_some(())
    });
    // Time is under test: one primary still, a lease's length later.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        writable(&cluster, &url),
        vec![primary],
        "converged on one primary"
    );
}

#[test]
fn with_failsafe_the_primary_keeps_writing_through_an_etcd_outage() {
    let Some(cluster) = TestCluster::start("failsafe = true") else {
        return;
    };
    let url = with_table(&cluster);
    let via = cluster.url_via(&url, 1);

    cluster.etcd.freeze();
    let frozen = Instant::now();
    let mut acked = 0;
    let mut failed = 0;
    while frozen.elapsed() < Duration::from_secs(12) {
        let out = run_sql_over(&via, &format!("INSERT INTO t VALUES ({})", acked + 1));
        if out.status.success() {
            acked += 1;
        } else {
            failed += 1;
        }
        assert!(writable(&cluster, &url).len() <= 1, "two primaries");
        // Pacing: the outage (time) is under test, four times the lease long.
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(failed, 0, "writes failed during the etcd outage (failsafe)");
    assert_eq!(writable(&cluster, &url), vec![0]);

    cluster.etcd.thaw();
    wait_for(Duration::from_secs(30), "node1 leads in etcd again", || {
        (cluster.status(1)["leader"] == "node1").then_some(())
    });
    // Time is under test: node1 is still the only primary a lease's length later.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(writable(&cluster, &url), vec![0]);
    assert_eq!(
        query(&url, "SELECT count(*) FROM t"),
        acked.to_string(),
        "commits acknowledged in failsafe were lost"
    );
}
