//! High availability through etcd. At `up`, `formation` makes this node's data directory
//! (bootstrap the cluster, clone the primary, or keep the data as a replica); then
//! `node::task_main` runs the loop: look at the local PostgreSQL and at etcd, ask `decide`
//! (the pure rules) what to do, do it, and publish a `ClusterView` for the pooler, the
//! API and `cluster status`.
//!
//! - `etcd.rs`: the etcd v3 client; `keys.rs`: the key layout and member records.
//! - `local.rs`: the local PostgreSQL in SQL; `replica.rs`: standby files, clone, rewind.
//! - `secret.rs`: the shared cluster secret and what derives from it; `peer.rs`: signed
//!   requests between agents (no bearer token), only to verified member records.

pub mod decide;
pub mod etcd;
pub mod formation;
pub mod keys;
pub mod local;
pub mod node;
pub mod peer;
pub mod replica;
pub mod secret;
pub mod switchover;

use std::path::PathBuf;

use serde::Serialize;

use crate::config::HaConfig;
use crate::pg::bin::Binaries;
use crate::pooler::PgTarget;
use crate::run_as::RunAs;

pub use self::keys::MemberRecord;

/// What the HA parts of the agent need to know about this node.
pub struct Node {
    pub config: HaConfig,
    pub etcd: etcd::Etcd,
    pub keys: keys::Keys,
    pub secret: secret::ClusterSecret,
    pub binaries: Binaries,
    pub pgdata: PathBuf,
    pub socket_dir: PathBuf,
    pub port: u16,
    pub run_as: Option<RunAs>,
    /// This node's API as the other nodes reach it.
    pub api_url: String,
    pub pooler_port: Option<u16>,
    /// When this replica last confirmed a primary's failsafe request.
    pub failsafe_acked: std::sync::Mutex<Option<std::time::Instant>>,
    /// Nonces of signed requests seen, forged records reported, this API's certificate.
    pub peers: peer::Peers,
}

impl Node {
    /// Everything under the cluster's prefix; member records that do not verify are
    /// left out (and logged).
    pub async fn read_cluster(&self) -> anyhow::Result<keys::ClusterKeys> {
        let kvs = self.etcd.get_prefix(self.keys.prefix()).await?;
        let cluster = keys::ClusterKeys::parse(&self.keys, kvs, &self.secret);
        self.peers.report_forged(&cluster.forged);
        Ok(cluster)
    }

    /// Whether this node confirmed a failsafe primary within two lease times.
    pub fn failsafe_recent(&self) -> bool {
        let acked = match self.failsafe_acked.lock() {
            Ok(g) => *g,
            Err(poisoned) => *poisoned.into_inner(),
        };
        acked.is_some_and(|at| at.elapsed() < self.config.ttl * 2)
    }

    pub fn note_failsafe_ack(&self) {
        let now = Some(std::time::Instant::now());
        match self.failsafe_acked.lock() {
            Ok(mut g) => *g = now,
            Err(poisoned) => *poisoned.into_inner() = now,
        }
    }

    /// Makes the next start a standby of `upstream` (or of nobody yet); whether whom to
    /// stream from changed.
    pub fn write_standby(&self, upstream: Option<&replica::Upstream>) -> anyhow::Result<bool> {
        replica::write_standby(
            &self.pgdata,
            &self.config.name,
            upstream,
            &self.secret.replication_password(),
            self.run_as.as_ref(),
        )
    }

    pub fn upstream(&self, member: &MemberRecord) -> replica::Upstream {
        replica::Upstream {
            name: member.name.clone(),
            host: member.host.clone(),
            port: member.postgres_port,
            tls: self.config.replication_tls.clone(),
        }
    }
}

/// The cluster as this node last saw it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ClusterView {
    pub cluster: String,
    pub me: String,
    pub leader: Option<String>,
    pub members: Vec<MemberRecord>,
    /// The last WAL position the primary published.
    pub optime: u64,
    pub paused: bool,
    /// The synchronous standbys the primary published.
    pub sync: Vec<String>,
    pub etcd_reachable: bool,
    /// What this node decided last, and why.
    pub last_action: String,
    /// Why each replica may or may not be promoted, by name.
    pub eligibility: Vec<(String, Option<String>)>,
}

impl ClusterView {
    /// Where read-only connections go: replicas that stream and replay within
    /// `max_lag_bytes` of the primary (this node's own by its socket), else the primary.
    pub fn replica_targets(&self, max_lag_bytes: u64) -> Vec<PgTarget> {
        let primary_position = self
            .members
            .iter()
            .find(|m| Some(&m.name) == self.leader.as_ref())
            .map_or(self.optime, |m| m.wal_position.max(self.optime));
        let mut targets: Vec<PgTarget> = self
            .members
            .iter()
            .filter(|m| {
                m.role == "replica"
                    && m.state == "streaming"
                    && primary_position.saturating_sub(m.replay_position) <= max_lag_bytes
            })
            .map(|m| {
                if m.name == self.me {
                    PgTarget::Local
                } else {
                    PgTarget::Remote {
                        host: m.host.clone(),
                        port: m.postgres_port,
                    }
                }
            })
            .collect();
        if targets.is_empty() {
            targets.push(self.primary_target());
        }
        targets
    }

    pub fn primary_target(&self) -> PgTarget {
        match &self.leader {
            Some(leader) if *leader == self.me => PgTarget::Local,
            Some(leader) => match self.members.iter().find(|m| m.name == *leader) {
                Some(m) if m.role == "primary" => PgTarget::Remote {
                    host: m.host.clone(),
                    port: m.postgres_port,
                },
                _ => PgTarget::Unknown,
            },
            None => PgTarget::Unknown,
        }
    }
}
