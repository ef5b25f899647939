//! High availability through etcd. At `up`, `formation` makes this node's data directory
//! (bootstrap the cluster, clone the primary, or keep the data as a replica); then
//! `node::task_main` runs the loop: look at the local PostgreSQL and at etcd, ask `decide`
//! (the pure rules) what to do, do it, and publish a `ClusterView` for the pooler, the
//! API and `cluster status`.
//!
//! - `etcd.rs`: the etcd v3 client; `keys.rs`: the key layout and member records.
//! - `local.rs`: the local PostgreSQL in SQL; `replica.rs`: standby files, clone, rewind.
//! - `secret.rs`: the shared cluster secret and what derives from it.

pub mod decide;
pub mod etcd;
pub mod formation;
pub mod keys;
pub mod local;
pub mod node;
pub mod replica;
pub mod secret;
pub mod switchover;

use std::path::PathBuf;

use serde::Serialize;

use crate::config::HaConfig;
use crate::pg::bin::Binaries;
use crate::pg::process::RunAs;

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
}

impl Node {
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

    pub fn upstream(&self, member: &MemberRecord) -> replica::Upstream {
        replica::Upstream {
            name: member.name.clone(),
            host: member.host.clone(),
            port: member.postgres_port,
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

/// Where this node's pooler sends tenant connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrimaryTarget {
    /// This node is the primary: its own socket.
    Local,
    Remote {
        host: String,
        port: u16,
    },
    /// No primary right now (an election is running): hold new server connections.
    Unknown,
}

impl ClusterView {
    pub fn primary_target(&self) -> PrimaryTarget {
        match &self.leader {
            Some(leader) if *leader == self.me => PrimaryTarget::Local,
            Some(leader) => match self.members.iter().find(|m| m.name == *leader) {
                Some(m) if m.role == "primary" => PrimaryTarget::Remote {
                    host: m.host.clone(),
                    port: m.postgres_port,
                },
                _ => PrimaryTarget::Unknown,
            },
            None => PrimaryTarget::Unknown,
        }
    }
}
