//! `[ha]`: the etcd cluster this node joins, its name and addresses, and the failover
//! policy, validated. HA is on exactly when `etcd` lists at least one endpoint.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::{invalid, ConfigError};
use crate::ha::decide::SyncMode;

/// `[ha]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HaSection {
    /// etcd endpoints, e.g. ["http://10.0.0.1:2379", "http://10.0.0.2:2379"].
    pub etcd: Vec<String>,
    /// The cluster's name: every node of one cluster uses the same.
    pub cluster: Option<String>,
    /// This node's name, unique in the cluster (default: the host name).
    pub name: Option<String>,
    /// Address other nodes reach this node at (PostgreSQL, API, pooler).
    pub advertise_host: Option<String>,
    /// A file of random bytes shared by every node: it derives the replication
    /// role's password and the token agents use with each other. Created by the
    /// node that bootstraps the cluster when missing.
    pub secret_file: Option<String>,
    /// Seconds the leader key lives without renewal: the failover time after a node dies.
    pub ttl_seconds: Option<u64>,
    /// Seconds between two looks at etcd and PostgreSQL.
    pub loop_wait_seconds: Option<f64>,
    /// A replica this many bytes behind the last primary position is not promoted.
    pub maximum_lag_on_failover: Option<u64>,
    /// off | on | strict
    pub synchronous: Option<String>,
    /// How many synchronous standbys the primary waits for.
    pub synchronous_node_count: Option<u32>,
    /// Never promote this node automatically.
    pub nofailover: Option<bool>,
    /// Keep the primary writable through an etcd outage while every other member
    /// confirms (over the agents' API) that it still follows it.
    pub failsafe: Option<bool>,
    /// The pooler's read-only listener (spread over replicas); 0 = off. Default 6433
    /// when the pooler is on its default 6432, else off.
    pub read_only_port: Option<u16>,
    /// Replicas replaying further than this many bytes behind get no read-only traffic.
    pub read_only_max_lag: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct HaConfig {
    pub etcd: Vec<String>,
    pub cluster: String,
    pub name: String,
    pub advertise_host: String,
    pub secret_file: PathBuf,
    pub ttl: Duration,
    pub loop_wait: Duration,
    pub maximum_lag_on_failover: u64,
    pub synchronous: SyncMode,
    pub synchronous_node_count: u32,
    pub nofailover: bool,
    pub failsafe: bool,
    /// As written; `Config` resolves the default against the pooler's port.
    pub read_only_port: Option<u16>,
    pub read_only_max_lag: u64,
}

impl HaConfig {
    /// `None` when HA is off (no etcd endpoints).
    pub fn from_section(s: HaSection, base: &Path) -> Result<Option<HaConfig>, ConfigError> {
        let HaSection {
            etcd,
            cluster,
            name,
            advertise_host,
            secret_file,
            ttl_seconds,
            loop_wait_seconds,
            maximum_lag_on_failover,
            synchronous,
            synchronous_node_count,
            nofailover,
            failsafe,
            read_only_port,
            read_only_max_lag,
        } = s;
        if etcd.is_empty() {
            return Ok(None);
        }
        for endpoint in &etcd {
            if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
                return Err(invalid(
                    "ha.etcd",
                    format!("`{endpoint}` is not a URL like http://127.0.0.1:2379"),
                ));
            }
        }
        let cluster = cluster.unwrap_or_else(|| "main".to_owned());
        check_name("ha.cluster", &cluster)?;
        let name = match name {
            Some(name) => name,
            None => nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_default(),
        };
        check_name("ha.name", &name)?;
        let advertise_host = advertise_host.unwrap_or_else(|| "127.0.0.1".to_owned());
        if advertise_host.trim().is_empty()
            || advertise_host.contains(['/', '@', '?', '#', ' ', '\''])
        {
            return Err(invalid(
                "ha.advertise_host",
                "must be a host name or address",
            ));
        }
        let secret_file = match secret_file {
            Some(p) if p.trim().is_empty() => {
                return Err(invalid("ha.secret_file", "must not be empty"))
            }
            Some(p) => super::normalize(&base.join(p)),
            None => base.join("cluster.secret"),
        };
        // etcd leases count whole seconds.
        let ttl = seconds(
            "ha.ttl_seconds",
            ttl_seconds.unwrap_or(3) as f64,
            2.0,
            120.0,
        )?;
        let loop_wait = seconds(
            "ha.loop_wait_seconds",
            loop_wait_seconds.unwrap_or(0.25),
            0.05,
            10.0,
        )?;
        if loop_wait * 4 > ttl {
            return Err(invalid(
                "ha.loop_wait_seconds",
                "must be at most a quarter of ha.ttl_seconds, so the leader renews in time",
            ));
        }
        let synchronous = match synchronous.as_deref().unwrap_or("off") {
            "off" => SyncMode::Off,
            "on" => SyncMode::On,
            "strict" => SyncMode::Strict,
            other => {
                return Err(invalid(
                    "ha.synchronous",
                    format!("`{other}` is not one of off, on, strict"),
                ))
            }
        };
        let synchronous_node_count = synchronous_node_count.unwrap_or(1);
        if synchronous_node_count == 0 {
            return Err(invalid("ha.synchronous_node_count", "must be at least 1"));
        }
        Ok(Some(HaConfig {
            etcd,
            cluster,
            name,
            advertise_host,
            secret_file,
            ttl,
            loop_wait,
            maximum_lag_on_failover: maximum_lag_on_failover.unwrap_or(1024 * 1024),
            synchronous,
            synchronous_node_count,
            nofailover: nofailover.unwrap_or(false),
            failsafe: failsafe.unwrap_or(false),
            read_only_port,
            read_only_max_lag: read_only_max_lag.unwrap_or(16 * 1024 * 1024),
        }))
    }
}

/// Names become etcd keys and PostgreSQL application names: keep them plain.
fn check_name(key: &str, name: &str) -> Result<(), ConfigError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
    if ok {
        Ok(())
    } else {
        Err(invalid(
            key,
            format!("`{name}` must be 1–63 letters, digits, '-', '_' or '.'"),
        ))
    }
}

fn seconds(key: &str, value: f64, min: f64, max: f64) -> Result<Duration, ConfigError> {
    if !(min..=max).contains(&value) {
        return Err(invalid(key, format!("must be between {min} and {max}")));
    }
    Ok(Duration::from_secs_f64(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(etcd: &[&str]) -> HaSection {
        HaSection {
            etcd: etcd.iter().map(|s| s.to_string()).collect(),
            name: Some("node1".into()),
            ..HaSection::default()
        }
    }

    #[test]
    fn off_without_etcd_and_defaults_with_it() {
        assert!(HaConfig::from_section(section(&[]), Path::new("/etc"))
            .unwrap()
            .is_none());
        let ha = HaConfig::from_section(section(&["http://127.0.0.1:2379"]), Path::new("/etc"))
            .unwrap()
            .unwrap();
        assert_eq!(ha.cluster, "main");
        assert_eq!(ha.ttl, Duration::from_secs(3));
        assert_eq!(ha.secret_file, PathBuf::from("/etc/cluster.secret"));
        assert_eq!(ha.synchronous, SyncMode::Off);
    }

    #[test]
    fn bad_values_name_their_key() {
        let mut s = section(&["127.0.0.1:2379"]);
        let e = HaConfig::from_section(s, Path::new("/")).unwrap_err();
        assert!(e.to_string().contains("ha.etcd"), "{e}");
        s = section(&["http://e:2379"]);
        s.name = Some("no/slash".into());
        let e = HaConfig::from_section(s, Path::new("/")).unwrap_err();
        assert!(e.to_string().contains("ha.name"), "{e}");
        s = section(&["http://e:2379"]);
        s.loop_wait_seconds = Some(2.0);
        let e = HaConfig::from_section(s, Path::new("/")).unwrap_err();
        assert!(e.to_string().contains("ha.loop_wait_seconds"), "{e}");
        s = section(&["http://e:2379"]);
        s.synchronous = Some("maybe".into());
        let e = HaConfig::from_section(s, Path::new("/")).unwrap_err();
        assert!(e.to_string().contains("ha.synchronous"), "{e}");
    }
}
