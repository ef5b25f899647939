//! Where the cluster lives in etcd, and what each member publishes there.
//!
//! Under `/pgplatform/<cluster>/`:
//! - `initialize`: the node that bootstrapped the cluster (created once, by a transaction);
//! - `leader`: the primary's name, under the primary's lease (its expiry is the failover);
//! - `members/<name>`: each node's [`MemberRecord`], under its own lease, sealed with an
//!   HMAC from the cluster secret over the key and the record (anyone who can write to
//!   etcd can write here: a record that does not verify is ignored and logged, so no
//!   address in it is ever used);
//! - `optime`: the last WAL position the primary published (the lag rule's reference);
//! - `paused`: present while automatic failover is off (`cluster pause`);
//! - `switchover`: the target of a planned switchover while it runs.

use serde::{Deserialize, Serialize};

use super::etcd::KeyValue;
use super::secret::{ClusterSecret, Purpose};

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
    /// Lowercase hex SHA-256 of the API's TLS certificate (DER) when `api_url` is https:
    /// the only certificate other agents accept from this node.
    #[serde(default)]
    pub api_cert_sha256: Option<String>,
    /// Unix seconds when the member wrote this record (every loop): an old genuine record
    /// written back by someone else is recognised as such.
    #[serde(default)]
    pub published_at: u64,
}

/// A record older than this is a replay, not a live member: a member rewrites its record
/// every loop, and its lease (at most 120 s) removes it when it stops. Clocks of the
/// nodes must agree within `peer::WINDOW` anyway.
pub const RECORD_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(180);

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A member record as stored in etcd: the record's JSON text and its MAC.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SealedRecord {
    record: String,
    mac: String,
}

/// What the MAC covers: the etcd key too, so a record cannot be moved to another name.
fn mac_input(key: &str, record: &str) -> Vec<u8> {
    format!("{key}\n{record}").into_bytes()
}

/// The value this node writes at `key` for `record`.
pub fn seal(secret: &ClusterSecret, key: &str, record: &MemberRecord) -> anyhow::Result<Vec<u8>> {
    let record = serde_json::to_string(record)?;
    let mac = secret.sign(Purpose::MemberRecord, &mac_input(key, &record));
    Ok(serde_json::to_vec(&SealedRecord { record, mac })?)
}

/// The record at `key` if its MAC verifies, it names itself as the key does, and it is
/// recent (written within `RECORD_MAX_AGE` of `now`).
fn open(
    secret: &ClusterSecret,
    key: &str,
    name: &str,
    value: &[u8],
    now: u64,
) -> Result<MemberRecord, String> {
    let sealed: SealedRecord =
        serde_json::from_slice(value).map_err(|e| format!("not a sealed member record ({e})"))?;
    if !secret.verify(
        Purpose::MemberRecord,
        &mac_input(key, &sealed.record),
        &sealed.mac,
    ) {
        return Err("its MAC does not verify with the cluster secret".into());
    }
    let record: MemberRecord =
        serde_json::from_str(&sealed.record).map_err(|e| format!("a malformed record ({e})"))?;
    if record.name != name {
        return Err(format!("it names itself {}", record.name));
    }
    let age = now.abs_diff(record.published_at);
    if age > RECORD_MAX_AGE.as_secs() {
        return Err(format!(
            "it was written {age}s from now (an old record written back, or clocks apart)"
        ));
    }
    Ok(record)
}

/// A member record that was ignored, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forged {
    pub key: String,
    pub mod_revision: i64,
    pub why: String,
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
    /// Member records that did not verify (ignored; the caller logs them).
    pub forged: Vec<Forged>,
}

impl ClusterKeys {
    /// Only member records sealed with `secret` count; the others go to `forged`.
    pub fn parse(keys: &Keys, kvs: Vec<KeyValue>, secret: &ClusterSecret) -> ClusterKeys {
        let mut out = ClusterKeys::default();
        let members_prefix = keys.member("");
        let now = unix_now();
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
            } else if let Some(name) = kv.key.strip_prefix(&members_prefix) {
                match open(secret, &kv.key, name, &kv.value, now) {
                    Ok(record) => out.members.push(record),
                    Err(why) => out.forged.push(Forged {
                        key: kv.key.clone(),
                        mod_revision: kv.mod_revision,
                        why,
                    }),
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

    fn secret() -> ClusterSecret {
        let dir = tempfile::tempdir().unwrap();
        ClusterSecret::load(&dir.path().join("s"), true).unwrap()
    }

    #[test]
    fn one_range_read_becomes_the_cluster_picture() {
        let secret = secret();
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
            api_cert_sha256: None,
            published_at: unix_now(),
        };
        let sealed = seal(&secret, "/pgplatform/main/members/b", &record).unwrap();
        let parsed = ClusterKeys::parse(
            &keys,
            vec![
                kv("/pgplatform/main/leader", b"a"),
                kv("/pgplatform/main/optime", b"120"),
                kv("/pgplatform/main/members/b", &sealed),
                kv("/pgplatform/main/members/c", b"not json"),
                kv("/pgplatform/main/paused", b""),
            ],
            &secret,
        );
        assert_eq!(parsed.leader_name().as_deref(), Some("a"));
        assert_eq!(parsed.optime, 120);
        assert!(parsed.paused);
        assert_eq!(parsed.members, vec![record]);
        assert!(parsed.switchover.is_none());
        assert_eq!(parsed.forged.len(), 1);
    }

    #[test]
    fn forged_moved_or_tampered_records_are_ignored() {
        let secret = secret();
        let other = self::secret();
        let keys = Keys::new("main");
        let mut record = MemberRecord {
            name: "b".into(),
            role: "primary".into(),
            state: "running".into(),
            host: "10.0.0.2".into(),
            postgres_port: 5432,
            api_url: "http://10.0.0.2:8008".into(),
            pooler_port: None,
            timeline: 1,
            wal_position: 1,
            replay_position: 1,
            nofailover: false,
            following: None,
            system_identifier: String::new(),
            api_cert_sha256: None,
            published_at: unix_now(),
        };
        let b = "/pgplatform/main/members/b";
        let mut old = record.clone();
        old.published_at -= RECORD_MAX_AGE.as_secs() + 1;
        let replayed = seal(&secret, b, &old).unwrap();
        let plain = serde_json::to_vec(&record).unwrap();
        let wrong_secret = seal(&other, b, &record).unwrap();
        let moved = seal(&secret, "/pgplatform/main/members/c", &record).unwrap();
        let mut tampered: serde_json::Value =
            serde_json::from_slice(&seal(&secret, b, &record).unwrap()).unwrap();
        record.host = "10.6.6.6".into();
        tampered["record"] = serde_json::to_string(&record).unwrap().into();
        let tampered = serde_json::to_vec(&tampered).unwrap();
        for value in [&plain, &wrong_secret, &tampered, &replayed] {
            let parsed = ClusterKeys::parse(&keys, vec![kv(b, value)], &secret);
            assert!(parsed.members.is_empty());
            assert_eq!(parsed.forged.len(), 1, "{:?}", parsed.forged);
        }
        // A genuine record of b copied under c's key.
        let parsed = ClusterKeys::parse(
            &keys,
            vec![kv("/pgplatform/main/members/c", &moved.clone())],
            &secret,
        );
        assert!(parsed.members.is_empty());
        let copied = seal(&secret, b, &record).unwrap();
        let parsed = ClusterKeys::parse(
            &keys,
            vec![kv("/pgplatform/main/members/c", &copied)],
            &secret,
        );
        assert!(parsed.members.is_empty(), "a record moved to another key");
    }
}
