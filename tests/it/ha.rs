//! High availability with a real etcd and three agents on loopback: the cluster forms
//! (one bootstrap, two clones), a primary killed with SIGKILL (agent and PostgreSQL) is
//! replaced and every node's pooler follows, the old primary rejoins by itself; pause
//! holds failover off; a graceful stop hands the leader key over.

use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::support::cluster::{streaming_replicas, TestCluster};
use crate::support::metrics::sample;
use crate::support::psql::{query, run_sql_over};
use crate::support::{try_wait_for, wait_for};

fn primaries(cluster: &TestCluster, running: &[usize]) -> Vec<usize> {
    running
        .iter()
        .copied()
        .filter(|&i| {
            cluster.nodes[i].admin_psql_in("postgres", "SELECT pg_is_in_recovery()") == "f"
        })
        .collect()
}

/// How long past a dead leader's lease a test watches for a promotion that must not happen:
/// eight of the HA loop's 0.25 s turns.
const NO_PROMOTION_WINDOW: Duration = Duration::from_secs(2);

/// Waits until node `i` sees no leader (the killed primary's 3 s lease has expired, so a
/// candidate would now take over), then watches for `NO_PROMOTION_WINDOW`: the absence of a
/// promotion is what is under test. Node `i`'s status afterwards.
fn leaderless_for_a_while(cluster: &TestCluster, i: usize) -> serde_json::Value {
    wait_for(
        Duration::from_secs(30),
        "the dead leader's lease to expire",
        || cluster.status(i)["leader"].is_null().then_some(()),
    );
    std::thread::sleep(NO_PROMOTION_WINDOW);
    cluster.status(i)
}

/// Kills node `i`'s agent and its PostgreSQL with SIGKILL, as a lost machine.
fn kill_node(cluster: &mut TestCluster, i: usize) {
    let postmaster = cluster.nodes[i].postmaster_pid().expect("postmaster pid");
    cluster.nodes[i].kill9_agent();
    let _ = kill(Pid::from_raw(postmaster), Signal::SIGKILL);
}

#[test]
fn a_killed_primary_is_replaced_every_pooler_follows_and_it_rejoins() {
    let Some(mut cluster) = TestCluster::start("") else {
        return;
    };
    // Every node sees the same cluster.
    let status = cluster.wait_formed(1, "node1", 2);
    assert_eq!(streaming_replicas(&status), 2, "{status:#}");
    assert_eq!(primaries(&cluster, &[0, 1, 2]), vec![0]);
    // Patroni's metric names, so its dashboards and alerts apply.
    for (i, primary, replica) in [(0, 1.0, 0.0), (1, 0.0, 1.0)] {
        let text = cluster.nodes[i].scrape();
        let name = format!("node{}", i + 1);
        let labels = [("scope", "main"), ("name", name.as_str())];
        assert_eq!(
            sample(&text, "patroni_primary", &labels),
            Some(primary),
            "{text}"
        );
        assert_eq!(
            sample(&text, "patroni_replica", &labels),
            Some(replica),
            "{text}"
        );
        assert_eq!(
            sample(&text, "patroni_cluster_unlocked", &labels),
            Some(0.0)
        );
        assert_eq!(
            sample(
                &text,
                "pgplatform_ha_members",
                &[("scope", "main"), ("role", "replica")]
            ),
            Some(2.0)
        );
    }

    // Tenants are created on the primary; every node's pooler reaches it.
    cluster.nodes[0].cli_ok(&["tenant", "create", "shop"]);
    let url = cluster.nodes[0].tenant_url("shop");
    query(&url, "CREATE TABLE orders (id int PRIMARY KEY, via int)");
    for i in 0..3 {
        let via = cluster.url_via(&url, i);
        query(
            &via,
            &format!(
                "INSERT INTO orders SELECT g, {i} FROM generate_series({i}*100+1, {i}*100+100) g"
            ),
        );
    }
    // The read-only listener of every node (the primary's too) reads from a replica, and
    // the tenant's secrets carry its URL.
    let replica_url =
        std::fs::read_to_string(cluster.nodes[0].data_dir().join("secrets/shop/replica_url"))
            .unwrap();
    assert!(
        replica_url.contains(&format!(":{}/", cluster.read_only_ports[0])),
        "{replica_url}"
    );
    for i in 0..3 {
        let read_only = cluster.read_only_via(&url, i);
        // (Replicas let the new tenant in once they render pg_hba.conf, within seconds.)
        wait_for(Duration::from_secs(20), "a read from a replica", || {
            let out = run_sql_over(&read_only, "SELECT pg_is_in_recovery()");
            (String::from_utf8_lossy(&out.stdout).trim() == "t").then_some(())
        });
    }
    // Every commit so far has reached both replicas.
    wait_for(Duration::from_secs(30), "replicas caught up", || {
        let status = cluster.status(0);
        status["members"]
            .as_array()?
            .iter()
            .filter(|m| m["lag_bytes"].is_number())
            .all(|m| m["lag_bytes"] == 0)
            .then_some(())
    });

    kill_node(&mut cluster, 0);
    let killed = Instant::now();
    let leader = cluster.wait_new_leader(&[1, 2], "node1");
    // Writes succeed through both surviving poolers (the benchmark measures how fast).
    for i in [1, 2] {
        let via = cluster.url_via(&url, i);
        let sql = format!("INSERT INTO orders VALUES ({}, {i})", 1000 + i);
        let mut last = String::new();
        let wrote = try_wait_for(Duration::from_secs(60), || {
            let out = run_sql_over(&via, &sql);
            last = String::from_utf8_lossy(&out.stderr).into_owned();
            out.status.success().then_some(())
        });
        assert!(
            wrote.is_some(),
            "no write through node{}'s pooler: {last}",
            i + 1
        );
    }
    eprintln!(
        "new primary {leader} wrote through both poolers {:.1} s after the kill",
        killed.elapsed().as_secs_f64()
    );
    let new_primary = cluster.index_of(&leader);
    assert_eq!(primaries(&cluster, &[1, 2]), vec![new_primary]);
    let via = cluster.url_via(&url, 1);
    assert_eq!(
        query(&via, "SELECT count(*) FROM orders WHERE id <= 300"),
        "300",
        "a commit acknowledged before the kill is missing"
    );

    // The old primary comes back as a replica of the new one, on its timeline.
    cluster.nodes[0].start_again();
    let status = cluster.wait_formed(0, &leader, 2);
    let node1 = status["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "node1")
        .unwrap()
        .clone();
    assert_eq!(node1["role"], "replica", "{status:#}");
    assert_eq!(primaries(&cluster, &[0, 1, 2]), vec![new_primary]);
    wait_for(
        Duration::from_secs(30),
        "the rejoined node replays new writes",
        || {
            let count = cluster.nodes[0]
                .admin_psql_in("shop", "SELECT count(*) FROM orders WHERE id > 1000");
            (count == "2").then_some(())
        },
    );
}

#[test]
fn pause_holds_failover_off_and_a_graceful_stop_hands_over_at_once() {
    let Some(mut cluster) = TestCluster::start("") else {
        return;
    };
    // A graceful stop of the primary: a replica leads well before the lease (3 s) expires.
    let stopped = Instant::now();
    let status = cluster.nodes[0].stop();
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    let leader = cluster.wait_new_leader(&[1, 2], "node1");
    assert!(
        stopped.elapsed() < Duration::from_secs(30),
        "no hand-over: {:?}",
        stopped.elapsed()
    );
    let leader_index = cluster.index_of(&leader);
    let other = if leader_index == 1 { 2 } else { 1 };

    // Paused: a dead primary is not replaced.
    cluster.nodes[other].cli_ok(&["cluster", "pause"]);
    wait_for(Duration::from_secs(10), "pause seen", || {
        (cluster.status(other)["paused"] == true).then_some(())
    });
    kill_node(&mut cluster, leader_index);
    let status = leaderless_for_a_while(&cluster, other);
    assert!(status["leader"].is_null(), "{status:#}");
    assert_eq!(primaries(&cluster, &[other]), Vec::<usize>::new());
    let text = cluster.nodes[other].cli_ok(&["cluster", "status"]);
    assert!(text.contains("failover: paused"), "{text}");

    // Resumed: the survivor takes over.
    cluster.nodes[other].cli_ok(&["cluster", "resume"]);
    let name = format!("node{}", other + 1);
    wait_for(Duration::from_secs(30), "the survivor leads", || {
        (cluster.status(other)["leader"] == name.as_str()).then_some(())
    });
    wait_for(Duration::from_secs(30), "the survivor writes", || {
        (primaries(&cluster, &[other]) == vec![other]).then_some(())
    });
}

#[test]
fn a_switchover_under_pgbench_load_costs_clients_no_error_and_bad_targets_change_nothing() {
    let Some(cluster) = TestCluster::start("") else {
        return;
    };
    // Asked on a replica, made on the primary (whose agent writes the secrets).
    cluster.nodes[2].cli_ok(&["tenant", "create", "shop"]);
    // Replicas read the replicated registry.
    wait_for(Duration::from_secs(10), "shop listed on a replica", || {
        cluster.nodes[1]
            .cli_ok(&["tenant", "list"])
            .contains("shop")
            .then_some(())
    });
    let url = cluster.url_via(&cluster.nodes[0].tenant_url("shop"), 1);
    let url = url.replace("sslmode=prefer", "sslmode=disable");
    let init = crate::support::run(
        crate::support::command("/usr/bin/pgbench")
            .env_clear()
            .args(["-i", "-s", "1", "-q", &url]),
        Duration::from_secs(60),
    );
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );

    // Refused, and nothing changes: an unknown node, the primary itself, failover while a
    // primary runs.
    let err = cluster.nodes[1].cli_err(&["switchover", "--to", "nosuch"]);
    assert!(err.contains("no member named nosuch"), "{err}");
    let err = cluster.nodes[1].cli_err(&["switchover", "--to", "node1"]);
    assert!(err.contains("already the primary"), "{err}");
    let err = cluster.nodes[2].cli_err(&["failover", "--to", "node2"]);
    assert!(err.contains("node1 holds the leader key"), "{err}");
    assert_eq!(cluster.status(2)["leader"], "node1");

    // pgbench through node2's pooler (TPC-B, 8 clients) while node3 takes over, asked from
    // a replica's CLI: pgbench stops at the first error, so it must finish clean.
    let mut bench = crate::support::command("/usr/bin/pgbench")
        .env_clear()
        .args(["-c", "8", "-j", "2", "-T", "20", &url])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The switchover happens under load: pgbench is committing through node2's pooler.
    let committed = || {
        cluster.nodes[0]
            .admin_psql_in("shop", "SELECT count(*) FROM pgbench_history")
            .parse::<u64>()
            .unwrap()
    };
    wait_for(Duration::from_secs(30), "pgbench committing", || {
        (committed() >= 100).then_some(())
    });
    let said = cluster.nodes[1].cli_ok(&["switchover", "--to", "node3"]);
    assert!(said.contains("node3 is the primary"), "{said}");
    assert!(
        bench.try_wait().unwrap().is_none(),
        "pgbench ended before the switchover did: it was not made under load"
    );
    let out = bench.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "pgbench failed across the switchover:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("number of failed transactions: 0 (0.000%)"),
        "{stdout}"
    );
    cluster.wait_formed(0, "node3", 2);
    assert_eq!(primaries(&cluster, &[0, 1, 2]), vec![2]);
}

#[test]
fn synchronous_mode_loses_no_acknowledged_commit_and_never_promotes_an_async_survivor() {
    let Some(mut cluster) = TestCluster::start("synchronous = \"on\"") else {
        return;
    };
    let sync_standby = wait_for(Duration::from_secs(30), "a synchronous standby", || {
        let status = cluster.status(0);
        let sync = status["synchronous"]
            .as_array()?
            .first()?
            .as_str()?
            .to_owned();
        let shown = status["members"]
            .as_array()?
            .iter()
            .any(|m| m["name"] == sync.as_str() && m["role"] == "sync_standby");
        shown.then_some(sync)
    });
    let sync_index = cluster.index_of(&sync_standby);
    let async_index = 3 - sync_index; // the third node (indices 1 and 2 are the replicas)
    let setting = cluster.nodes[0].admin_psql_in("postgres", "SHOW synchronous_standby_names");
    assert_eq!(setting, format!("FIRST 1 (\"{sync_standby}\")"));

    // Commits acknowledged through the pooler up to the kill: all on the new primary.
    cluster.nodes[0].cli_ok(&["tenant", "create", "shop"]);
    let url = cluster.nodes[0].tenant_url("shop");
    query(&url, "CREATE TABLE acked (id int PRIMARY KEY)");
    let via = cluster.url_via(&url, async_index);
    let mut acked = 0;
    for id in 1..=200 {
        query(&via, &format!("INSERT INTO acked VALUES ({id})"));
        acked = id;
    }
    kill_node(&mut cluster, 0);
    let leader = cluster.wait_new_leader(&[1, 2], "node1");
    assert_eq!(
        leader, sync_standby,
        "only the synchronous standby may be promoted"
    );
    let count = wait_for(Duration::from_secs(60), "the new primary answers", || {
        run_sql_over(
            &cluster.url_via(&url, sync_index),
            "SELECT count(*) FROM acked",
        )
        .status
        .success()
        .then(|| {
            query(
                &cluster.url_via(&url, sync_index),
                "SELECT count(*) FROM acked",
            )
        })
    });
    assert_eq!(count, acked.to_string(), "acknowledged commits were lost");

    // Now the new primary and its own synchronous standby die together: the survivor is
    // not promoted automatically, whatever its WAL position.
    cluster.nodes[0].start_again();
    cluster.wait_formed(async_index, &leader, 2);
    let status = wait_for(Duration::from_secs(30), "a new synchronous standby", || {
        let status = cluster.status(sync_index);
        (status["synchronous"].as_array()?.len() == 1
            && status["synchronous"][0] != leader.as_str())
        .then_some(status)
    });
    let second_sync = cluster.index_of(status["synchronous"][0].as_str().unwrap());
    let survivor = [0, 1, 2]
        .into_iter()
        .find(|&i| i != sync_index && i != second_sync)
        .unwrap();
    kill_node(&mut cluster, sync_index);
    kill_node(&mut cluster, second_sync);
    let status = leaderless_for_a_while(&cluster, survivor);
    assert!(status["leader"].is_null(), "{status:#}");
    assert!(primaries(&cluster, &[survivor]).is_empty());
    let text = cluster.nodes[survivor].cli_ok(&["cluster", "status"]);
    assert!(text.contains("synchronous"), "the reason is shown: {text}");
}

#[test]
fn a_lagging_replica_is_never_promoted_and_a_killed_postgres_comes_back_as_the_only_primary() {
    let Some(mut cluster) = TestCluster::start("") else {
        return;
    };
    cluster.nodes[0].cli_ok(&["tenant", "create", "shop"]);
    let url = cluster.nodes[0].tenant_url("shop");
    query(&url, "CREATE TABLE filler (payload text)");

    // Only PostgreSQL dies on the primary: one primary afterwards, writes resume.
    let postmaster = cluster.nodes[0].postmaster_pid().unwrap();
    kill(Pid::from_raw(postmaster), Signal::SIGKILL).unwrap();
    let via = cluster.url_via(&url, 2);
    wait_for(
        Duration::from_secs(60),
        "writes after PostgreSQL was killed",
        || {
            run_sql_over(&via, "INSERT INTO filler VALUES ('x')")
                .status
                .success()
                .then_some(())
        },
    );
    let leader = cluster.wait_new_leader(&[0, 1, 2], "none");
    let leader_index = cluster.index_of(&leader);
    assert_eq!(primaries(&cluster, &[0, 1, 2]), vec![leader_index]);
    let replicas: Vec<usize> = (0..3).filter(|&i| i != leader_index).collect();
    cluster.wait_formed(leader_index, &leader, 2);

    // One replica must not fail over (nofailover is in its config); the other stops
    // receiving WAL (its receiver frozen) while the primary writes 8 MB.
    let (keeper, lagging) = (replicas[0], replicas[1]);
    let receiver: i32 = cluster.nodes[lagging]
        .admin_psql_in("postgres", "SELECT pid FROM pg_stat_wal_receiver")
        .parse()
        .unwrap();
    kill(Pid::from_raw(receiver), Signal::SIGSTOP).unwrap();
    query(
        &cluster.url_via(&url, leader_index),
        "INSERT INTO filler SELECT repeat('y', 1000) FROM generate_series(1, 8000)",
    );
    wait_for(
        Duration::from_secs(10),
        "the primary publishes its position",
        || {
            let status = cluster.status(leader_index);
            let member = status["members"]
                .as_array()?
                .iter()
                .find(|m| m["name"] == format!("node{}", lagging + 1))?
                .clone();
            (member["lag_bytes"].as_u64()? > 4 << 20).then_some(())
        },
    );
    cluster.nodes[keeper].cli_ok(&["cluster", "pause"]); // keep it out while we re-tag it
    let keeper_toml = cluster.nodes[keeper]
        .extra_toml()
        .replace("[ha]\n", "[ha]\nnofailover = true\n");
    cluster.nodes[keeper].set_extra_toml(&keeper_toml);
    cluster.nodes[keeper].restart();
    cluster.nodes[keeper].cli_ok(&["cluster", "resume"]);

    kill_node(&mut cluster, leader_index);
    // Observed while the receiver is still frozen: once it runs again it replays what its
    // socket buffer held, may come within maximum_lag_on_failover and then rightly be
    // promoted.
    let status = leaderless_for_a_while(&cluster, keeper);
    let text = cluster.nodes[keeper].cli_ok(&["cluster", "status"]);
    let _ = kill(Pid::from_raw(receiver), Signal::SIGCONT);
    assert!(status["leader"].is_null(), "{status:#}");
    assert!(text.contains("maximum_lag_on_failover"), "{text}");
    assert!(text.contains("nofailover"), "{text}");
}

#[test]
fn a_new_replica_starts_from_the_backup_repository_when_it_holds_this_cluster() {
    let _turn = crate::support::cluster::one_cluster_at_a_time();
    let Some(etcd) = crate::support::etcd::EtcdServer::start() else {
        return;
    };
    let shared = crate::support::cluster::SharedRepository::new();
    let toml = |name: &str| shared.node_toml(&etcd, name);
    let node1 = crate::support::TestAgent::start_with(&toml("node1"));
    crate::support::cluster::wait_leads(&node1, "node1");
    node1.cli_ok(&["tenant", "create", "shop"]);
    let url = node1.tenant_url("shop");
    query(
        &url,
        "CREATE TABLE t AS SELECT generate_series(1, 1000) AS id",
    );
    node1.cli_ok(&["backup", "run"]);
    query(&url, "INSERT INTO t SELECT generate_series(1001, 2000)");

    let node2 = crate::support::TestAgent::start_with(&toml("node2"));
    assert!(
        node2
            .log_contents()
            .contains("cloned from the backup repository"),
        "{}",
        node2.log_tail(30)
    );
    wait_for(
        Duration::from_secs(60),
        "node2 streams with every row",
        || {
            let status = node1.cli_json(&["cluster", "status", "--json"]);
            (streaming_replicas(&status) == 1
                && node2.admin_psql_in("shop", "SELECT count(*) FROM t") == "2000")
                .then_some(())
        },
    );
    drop((node2, node1));
}
