//! Where the cluster lives in etcd, and what each member publishes there.
//!
//! Under `/pgplatform/<cluster>/`:
//! - `initialize`: the node that bootstrapped the cluster (created once, by a transaction);
//! - `leader`: the primary's name, under the primary's lease (its expiry is the failover);
//! - `members/<name>`: each node's [`MemberRecord`], under its own lease;
//! - `optime`: the last WAL position the primary published (the lag rule's reference);
//! - `paused`: present while automatic failover is off (`cluster pause`);
//! - `switchover`: the target of a planned switchover while it runs.

use serde::{Deserialize, Serialize};

use super::etcd::KeyValue;

pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(cluster: &str) -> Keys {
        Keys {
            prefix: format!("/pgplatform/{cluster}/"),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn leader(&self) -> String {
        format!("{}leader", self.prefix)
    }

    pub fn initialize(&self) -> String {
        format!("{}initialize", self.prefix)
    }

    pub fn member(&self, name: &str) -> String {
        format!("{}members/{name}", self.prefix)
    }

    pub fn optime(&self) -> String {
        format!("{}optime", self.prefix)
    }

    pub fn paused(&self) -> String {
        format!("{}paused", self.prefix)
    }

    pub fn sync(&self) -> String {
        format!("{}sync", self.prefix)
    }

    pub fn switchover(&self) -> String {
        format!("{}switchover", self.prefix)
    }
}

/// What one member publishes about itself every loop.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRecord {
    pub name: String,
    /// primary | replica | down
    pub role: String,
    /// PostgreSQL's state: running, streaming, starting, stopped, …
    pub state: String,
    pub host: String,
    pub postgres_port: u16,
    pub api_url: String,
    pub pooler_port: Option<u16>,
    pub timeline: u32,
    /// WAL written (primary) or received (replica), in bytes.
    pub wal_position: u64,
    /// WAL replayed (replica); equal to `wal_position` on a primary.
    pub replay_position: u64,
    pub nofailover: bool,
    /// The member this one streams from, if it is a replica.
    pub following: Option<String>,
    /// pg_control's system identifier (a clone from a backup must match the primary's).
    #[serde(default)]
    pub system_identifier: String,
}

/// Everything under the cluster's prefix, read in one request.
#[derive(Debug, Clone, Default)]
pub struct ClusterKeys {
    pub leader: Option<KeyValue>,
    pub members: Vec<MemberRecord>,
    pub optime: u64,
    pub paused: bool,
    pub switchover: Option<String>,
    pub initialized: bool,
    /// The synchronous standbys the primary published (only these may be promoted when
    /// synchronous replication is on).
    pub sync: Vec<String>,
}

impl ClusterKeys {
    pub fn parse(keys: &Keys, kvs: Vec<KeyValue>) -> ClusterKeys {
        let mut out = ClusterKeys::default();
        let members_prefix = keys.member("");
        for kv in kvs {
            let text = String::from_utf8_lossy(&kv.value).into_owned();
            if kv.key == keys.leader() {
                out.leader = Some(kv);
            } else if kv.key == keys.optime() {
                out.optime = text.trim().parse().unwrap_or(0);
            } else if kv.key == keys.paused() {
                out.paused = true;
            } else if kv.key == keys.switchover() {
                out.switchover = Some(text);
            } else if kv.key == keys.sync() {
                out.sync = serde_json::from_slice(&kv.value).unwrap_or_default();
            } else if kv.key == keys.initialize() {
                out.initialized = true;
            } else if kv.key.starts_with(&members_prefix) {
                match serde_json::from_slice::<MemberRecord>(&kv.value) {
                    Ok(record) => out.members.push(record),
                    Err(e) => {
                        tracing::warn!(key = %kv.key, "ignoring a malformed member record: {e}")
                    }
                }
            }
        }
        out.members.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    pub fn leader_name(&self) -> Option<String> {
        self.leader
            .as_ref()
            .map(|kv| String::from_utf8_lossy(&kv.value).into_owned())
    }

    pub fn member(&self, name: &str) -> Option<&MemberRecord> {
        self.members.iter().find(|m| m.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(key: &str, value: &[u8]) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: value.to_vec(),
            create_revision: 1,
            mod_revision: 1,
            lease: 0,
        }
    }

    #[test]
    fn one_range_read_becomes_the_cluster_picture() {
        let keys = Keys::new("main");
        let record = MemberRecord {
            name: "b".into(),
            role: "replica".into(),
            state: "streaming".into(),
            host: "127.0.0.1".into(),
            postgres_port: 5433,
            api_url: "http://127.0.0.1:8009".into(),
            pooler_port: Some(6433),
            timeline: 1,
            wal_position: 100,
            replay_position: 90,
            nofailover: false,
            following: Some("a".into()),
            system_identifier: "7301".into(),
        };
        let parsed = ClusterKeys::parse(
            &keys,
            vec![
                kv("/pgplatform/main/leader", b"a"),
                kv("/pgplatform/main/optime", b"120"),
                kv(
                    "/pgplatform/main/members/b",
                    &serde_json::to_vec(&record).unwrap(),
                ),
                kv("/pgplatform/main/members/c", b"not json"),
                kv("/pgplatform/main/paused", b""),
            ],
        );
        assert_eq!(parsed.leader_name().as_deref(), Some("a"));
        assert_eq!(parsed.optime, 120);
        assert!(parsed.paused);
        assert_eq!(parsed.members, vec![record]);
        assert!(parsed.switchover.is_none());
    }
}
