//! Runbook "mark and go back, from any node of an HA cluster": on a replica, `backup
//! mark` and `restore` reach the primary through this node's agent (which forwards to
//! it): the restore point is made on the primary, and the restore has the primary
//! archive the WAL it needs, so a restore run on the replica returns exactly the rows
//! before the mark, with no WAL switch by hand.

use std::time::Duration;

use crate::support::psql::query;
use crate::support::wait_for;

#[test]
fn a_replica_marks_and_restores_through_the_primary() {
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
    query(&url, "CREATE TABLE events (n int PRIMARY KEY)");
    query(&url, "INSERT INTO events VALUES (1)");
    node1.cli_ok(&["backup", "run"]);
    let node2 = crate::support::TestAgent::start_with(&toml("node2"));
    wait_for(Duration::from_secs(60), "node2 replicates", || {
        (node2.admin_psql("SELECT pg_is_in_recovery()") == "t"
            && node2.admin_psql_in("shop", "SELECT count(*) FROM events") == "1")
            .then_some(())
    });

    query(&url, "INSERT INTO events VALUES (2)");
    let mark = node2.cli_json(&["backup", "mark", "from-node2", "--json"]);
    assert_eq!(mark["name"], "from-node2", "{mark}");
    query(&url, "INSERT INTO events VALUES (3)");
    // Made on the primary: its WAL position is the primary's, past the row 2 commit.
    let rows = node2.restored_rows("by-name", &["--name", "from-node2"]);
    assert_eq!(rows, "1,2", "restored on node2 to the mark");
    let listed = node1.cli_json(&["backup", "list", "--json"]);
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["kind"] == "mark" && r["id"] == "from-node2"),
        "the mark is in the shared repository: {listed}"
    );
    drop((node2, node1));
}
