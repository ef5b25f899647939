//! A network partition, made with a network namespace: the primary, alone in its
//! namespace, loses etcd and both replicas at once. It stops accepting writes before a
//! replica is promoted (never two writable primaries), and once the partition heals it
//! comes back as a replica of the new primary.

use std::time::{Duration, Instant};

use crate::support::cluster::{ha_toml, streaming_replicas};
use crate::support::etcd::EtcdServer;
use crate::support::netns::NetNs;
use crate::support::psql::{psql_command, run_sql};
use crate::support::{wait_for, TestAgent};

/// Whether the node's PostgreSQL accepts writes, asked over its unix socket (which no
/// network partition cuts). A node that does not answer does not accept writes.
fn writable(node: &TestAgent) -> bool {
    let mut cmd = psql_command();
    cmd.env("PGCONNECT_TIMEOUT", "2")
        .arg("-h")
        .arg(node.data_dir().join("run/socket"));
    cmd.args([
        "-p",
        &node.pg_port().to_string(),
        "-U",
        "pgplatform",
        "-d",
        "postgres",
    ]);
    let out = run_sql(cmd, "SELECT pg_is_in_recovery()");
    out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "f"
}

fn status(node: &TestAgent) -> serde_json::Value {
    node.cli_json(&["cluster", "status", "--json"])
}

#[test]
fn a_partitioned_primary_stops_writes_before_a_replica_is_promoted_and_rejoins() {
    let _turn = crate::support::cluster::one_cluster_at_a_time();
    let Some(ns) = NetNs::create() else {
        return;
    };
    let Some(etcd) = EtcdServer::start_on(&ns.outside) else {
        return;
    };
    let secret_dir = tempfile::tempdir().unwrap();
    let secret = secret_dir.path().join("cluster.secret");
    let toml = |name: &str, host: &str| {
        ha_toml(
            &etcd.endpoint,
            name,
            &secret,
            0,
            &format!("advertise_host = \"{host}\""),
        )
    };
    let node1 = TestAgent::start_at(&ns.inside, Some(&ns.name), &toml("node1", &ns.inside));
    let node2 = TestAgent::start_at(&ns.outside, None, &toml("node2", &ns.outside));
    let node3 = TestAgent::start_at(&ns.outside, None, &toml("node3", &ns.outside));
    wait_for(Duration::from_secs(60), "the cluster to form", || {
        let s = status(&node2);
        (s["leader"] == "node1" && streaming_replicas(&s) == 2).then_some(())
    });
    assert!(writable(&node1) && !writable(&node2) && !writable(&node3));

    ns.cut();
    let cut = Instant::now();
    let mut fenced = None;
    let mut promoted = None;
    while promoted.is_none() {
        assert!(
            cut.elapsed() < Duration::from_secs(60),
            "no replica was promoted"
        );
        let old = writable(&node1);
        let new = writable(&node2) || writable(&node3);
        assert!(!(old && new), "two primaries accept writes");
        if !old && fenced.is_none() {
            fenced = Some(cut.elapsed());
        }
        if new {
            promoted = Some(cut.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let (fenced, promoted) = (fenced.unwrap(), promoted.unwrap());
    eprintln!(
        "partition: old primary fenced after {fenced:?}, new one promoted after {promoted:?}"
    );
    assert!(
        fenced < promoted,
        "fenced {fenced:?}, promoted {promoted:?}"
    );
    assert!(!writable(&node1));

    ns.heal();
    let leader = wait_for(Duration::from_secs(90), "node1 back as a replica", || {
        let s = status(&node2);
        let node1_streams = s["members"].as_array()?.iter().any(|m| {
            m["name"] == "node1"
                && matches!(m["role"].as_str(), Some("replica" | "sync_standby"))
                && m["state"] == "streaming"
        });
        node1_streams.then(|| s["leader"].as_str().map(str::to_owned))?
    });
    assert_ne!(leader, "node1");
    let writable_now: Vec<bool> = [&node1, &node2, &node3]
        .iter()
        .map(|n| writable(n))
        .collect();
    assert_eq!(
        writable_now.iter().filter(|w| **w).count(),
        1,
        "{writable_now:?}"
    );
    drop((node1, node2, node3));
}
