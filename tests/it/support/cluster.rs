//! A three-node HA cluster on loopback: one real etcd, three agents sharing a cluster
//! secret, each with its own PostgreSQL and pooler.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use serde_json::Value;

use super::etcd::EtcdServer;
use super::{try_wait_for, wait_for, TestAgent};

pub struct TestCluster {
    /// Agents first: they stop before etcd goes away.
    pub nodes: Vec<TestAgent>,
    /// Each node's read-only pooler listener.
    pub read_only_ports: Vec<u16>,
    pub etcd: EtcdServer,
    _secret_dir: tempfile::TempDir,
    /// Last: released once everything above has stopped.
    _turn: MutexGuard<'static, ()>,
}

static CLUSTER_TURN: Mutex<()> = Mutex::new(());

/// Three-node clusters run one at a time: two at once on a 2-core machine (nine
/// PostgreSQL and agent processes, debug builds) can slow a primary's etcd round past its
/// fence deadline, and the test then measures the machine, not the platform.
pub fn one_cluster_at_a_time() -> MutexGuard<'static, ()> {
    // A test that panicked while holding the turn leaves nothing behind to protect.
    CLUSTER_TURN
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub fn ha_toml(etcd: &str, name: &str, secret: &Path, read_only_port: u16, extra: &str) -> String {
    format!(
        "[ha]\netcd = [\"{etcd}\"]\nname = \"{name}\"\nsecret_file = \"{}\"\n\
         read_only_port = {read_only_port}\n{extra}\n\
         [backup]\narchive = false\nschedule = \"\"\ndrill_schedule = \"\"\n",
        secret.display()
    )
}

/// What nodes that share one backup repository have in common: a directory (any node's
/// `postgres` user may write it) holding the repository, its key and the cluster secret.
/// Like the cluster secret, every node has the same repository key (the first node
/// creates it); without it a node cannot verify the others' backups.
pub struct SharedRepository {
    pub dir: tempfile::TempDir,
}

impl SharedRepository {
    pub fn new() -> SharedRepository {
        let dir = tempfile::Builder::new()
            .prefix("pgplatform-it-repo-")
            .tempdir()
            .unwrap();
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o777),
        )
        .unwrap();
        SharedRepository { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Node `name`'s `[ha]` and `[backup]` sections, in a cluster on `etcd`.
    pub fn node_toml(&self, etcd: &EtcdServer, name: &str) -> String {
        format!(
            "[ha]\netcd = [\"{}\"]\nname = \"{name}\"\nsecret_file = \"{}\"\nread_only_port = 0\n\
             [backup]\npath = \"{}\"\nrepository_key_file = \"{}\"\nschedule = \"\"\n\
             drill_schedule = \"\"\n",
            etcd.endpoint,
            self.path().join("cluster.secret").display(),
            self.path().join("repo").display(),
            self.path().join("repository.key").display()
        )
    }
}

/// Waits until `node` (named `name`) leads its cluster.
pub fn wait_leads(node: &TestAgent, name: &str) {
    wait_for(Duration::from_secs(30), &format!("{name} leads"), || {
        (node.cli_json(&["cluster", "status", "--json"])["leader"] == name).then_some(())
    });
}

impl TestCluster {
    /// `None` only when etcd is missing and skipping is allowed (see `support::skip`). `extra` goes into `[ha]`.
    pub fn start(extra: &str) -> Option<TestCluster> {
        let turn = one_cluster_at_a_time();
        let etcd = EtcdServer::start()?;
        let secret_dir = tempfile::tempdir().unwrap();
        let secret = secret_dir.path().join("cluster.secret");
        let mut nodes = Vec::new();
        let mut read_only_ports = Vec::new();
        for name in ["node1", "node2", "node3"] {
            let port = super::ports::free_port();
            read_only_ports.push(port);
            nodes.push(TestAgent::start_with(&ha_toml(
                &etcd.endpoint,
                name,
                &secret,
                port,
                extra,
            )));
        }
        let cluster = TestCluster {
            nodes,
            read_only_ports,
            etcd,
            _secret_dir: secret_dir,
            _turn: turn,
        };
        cluster.wait_formed(0, "node1", 2);
        Some(cluster)
    }

    pub fn status(&self, node: usize) -> Value {
        self.nodes[node].cli_json(&["cluster", "status", "--json"])
    }

    /// Waits until node `seen_from` sees `leader` lead with `streaming` streaming replicas.
    pub fn wait_formed(&self, seen_from: usize, leader: &str, streaming: usize) -> Value {
        let mut last = Value::Null;
        let formed = try_wait_for(Duration::from_secs(90), || {
            last = self.status(seen_from);
            (last["leader"] == leader && streaming_replicas(&last) == streaming)
                .then(|| last.clone())
        });
        formed.unwrap_or_else(|| {
            panic!("the cluster did not form with leader {leader} and {streaming} streaming replicas: {last:#}")
        })
    }

    /// The leader every running node agrees on, once they agree and it writes.
    pub fn wait_new_leader(&self, running: &[usize], not: &str) -> String {
        wait_for(Duration::from_secs(60), "a new leader", || {
            let leaders: Vec<Value> = running
                .iter()
                .map(|&i| self.status(i)["leader"].clone())
                .collect();
            let first = leaders[0].as_str()?;
            (first != not && leaders.iter().all(|l| l == first)).then(|| first.to_owned())
        })
    }

    /// A tenant URL that goes through node `i`'s pooler.
    pub fn url_via(&self, url: &str, i: usize) -> String {
        let port = self.nodes[i].pooler_port();
        let (before, after) = url.split_once("@127.0.0.1:").expect("URL on 127.0.0.1");
        let rest = after.split_once('/').expect("URL with a database").1;
        format!("{before}@127.0.0.1:{port}/{rest}")
    }

    /// A tenant URL that goes through node `i`'s read-only listener.
    pub fn read_only_via(&self, url: &str, i: usize) -> String {
        self.url_via(url, i).replace(
            &format!(":{}/", self.nodes[i].pooler_port()),
            &format!(":{}/", self.read_only_ports[i]),
        )
    }

    pub fn index_of(&self, name: &str) -> usize {
        name.trim_start_matches("node").parse::<usize>().unwrap() - 1
    }
}

pub fn streaming_replicas(status: &Value) -> usize {
    status["members"]
        .as_array()
        .map(|members| {
            members
                .iter()
                .filter(|m| {
                    matches!(m["role"].as_str(), Some("replica" | "sync_standby"))
                        && m["state"] == "streaming"
                })
                .count()
        })
        .unwrap_or(0)
}
