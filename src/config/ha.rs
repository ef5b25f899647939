//! `[ha]`: the etcd cluster this node joins, its name and addresses, and the failover
//! policy, validated. HA is on exactly when `etcd` lists at least one endpoint.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::{invalid, ConfigError};

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
    /// PEM CA that signs etcd's server certificate (required for https endpoints).
    pub etcd_ca_file: Option<String>,
    /// PEM client certificate and key shown to etcd (`--client-cert-auth`).
    pub etcd_cert_file: Option<String>,
    pub etcd_key_file: Option<String>,
    /// etcd user (etcd's auth enabled) and the file holding its password.
    pub etcd_user: Option<String>,
    pub etcd_password_file: Option<String>,
    /// libpq sslmode of replication and pg_rewind connections (e.g. verify-full).
    pub replication_sslmode: Option<String>,
    /// The CA file verify-ca / verify-full check the primary's certificate against.
    pub replication_sslrootcert: Option<String>,
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
    /// TLS and credentials toward etcd.
    pub etcd_security: EtcdSecurity,
    /// sslmode (and root certificate) of replication and pg_rewind connections; `None`
    /// leaves libpq's default.
    pub replication_tls: Option<ReplicationTls>,
}

/// `[ha] synchronous`: whether the primary waits for standbys to confirm commits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncMode {
    Off,
    On,
    Strict,
}

/// How this node proves itself to etcd and knows it talks to the real etcd.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EtcdSecurity {
    /// PEM CA certificates that sign etcd's server certificate (https endpoints).
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate and key, for etcd's `--client-cert-auth`.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// etcd's role-based access: user name and a file holding the password.
    pub user: Option<String>,
    pub password_file: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicationTls {
    pub sslmode: String,
    pub sslrootcert: Option<PathBuf>,
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
            etcd_ca_file,
            etcd_cert_file,
            etcd_key_file,
            etcd_user,
            etcd_password_file,
            replication_sslmode,
            replication_sslrootcert,
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
        let etcd_security = etcd_security(
            &etcd,
            base,
            EtcdSecurityKeys {
                ca: etcd_ca_file,
                cert: etcd_cert_file,
                key: etcd_key_file,
                user: etcd_user,
                password: etcd_password_file,
            },
        )?;
        let replication_tls = replication_tls(base, replication_sslmode, replication_sslrootcert)?;
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
            etcd_security,
            replication_tls,
        }))
    }
}

struct EtcdSecurityKeys {
    ca: Option<String>,
    cert: Option<String>,
    key: Option<String>,
    user: Option<String>,
    password: Option<String>,
}

fn file(key: &str, value: Option<String>, base: &Path) -> Result<Option<PathBuf>, ConfigError> {
    match value {
        Some(p) if p.trim().is_empty() => Err(invalid(key, "must not be empty")),
        Some(p) => Ok(Some(super::normalize(&base.join(p)))),
        None => Ok(None),
    }
}

/// TLS only with https endpoints (and https only with a CA: no system roots are used);
/// certificate with key; user with password file.
fn etcd_security(
    endpoints: &[String],
    base: &Path,
    keys: EtcdSecurityKeys,
) -> Result<EtcdSecurity, ConfigError> {
    let security = EtcdSecurity {
        ca_file: file("ha.etcd_ca_file", keys.ca, base)?,
        cert_file: file("ha.etcd_cert_file", keys.cert, base)?,
        key_file: file("ha.etcd_key_file", keys.key, base)?,
        user: keys.user,
        password_file: file("ha.etcd_password_file", keys.password, base)?,
    };
    let https = endpoints
        .iter()
        .filter(|e| e.starts_with("https://"))
        .count();
    if https > 0 && security.ca_file.is_none() {
        return Err(invalid(
            "ha.etcd_ca_file",
            "is required with https:// etcd endpoints (the CA that signs etcd's certificate)",
        ));
    }
    if https < endpoints.len() && (security.ca_file.is_some() || security.cert_file.is_some()) {
        return Err(invalid(
            "ha.etcd",
            "mixes http:// endpoints with TLS settings (ha.etcd_ca_file / ha.etcd_cert_file): \
             use https:// for every endpoint",
        ));
    }
    match (&security.cert_file, &security.key_file) {
        (Some(_), None) => {
            return Err(invalid(
                "ha.etcd_key_file",
                "is required with ha.etcd_cert_file",
            ))
        }
        (None, Some(_)) => {
            return Err(invalid(
                "ha.etcd_cert_file",
                "is required with ha.etcd_key_file",
            ))
        }
        _ => {}
    }
    match (&security.user, &security.password_file) {
        (Some(user), _) if user.is_empty() || user.chars().any(char::is_control) => {
            return Err(invalid("ha.etcd_user", "must be a non-empty user name"))
        }
        (Some(_), None) => {
            return Err(invalid(
                "ha.etcd_password_file",
                "is required with ha.etcd_user",
            ))
        }
        (None, Some(_)) => {
            return Err(invalid(
                "ha.etcd_user",
                "is required with ha.etcd_password_file",
            ))
        }
        _ => {}
    }
    // The password (and etcd's token) would cross the network in clear text.
    let remote_http = endpoints.iter().any(|e| {
        e.strip_prefix("http://").is_some_and(|rest| {
            !["127.0.0.1:", "localhost:", "[::1]:"]
                .iter()
                .any(|local| rest.starts_with(local))
        })
    });
    if security.user.is_some() && remote_http {
        return Err(invalid(
            "ha.etcd_user",
            "would send the etcd password in clear text to an http:// endpoint that is not \
             loopback: use https:// endpoints (ha.etcd_ca_file)",
        ));
    }
    Ok(security)
}

const SSLMODES: &[&str] = &[
    "disable",
    "allow",
    "prefer",
    "require",
    "verify-ca",
    "verify-full",
];

fn replication_tls(
    base: &Path,
    sslmode: Option<String>,
    sslrootcert: Option<String>,
) -> Result<Option<ReplicationTls>, ConfigError> {
    let sslrootcert = file("ha.replication_sslrootcert", sslrootcert, base)?;
    let Some(sslmode) = sslmode else {
        if sslrootcert.is_some() {
            return Err(invalid(
                "ha.replication_sslrootcert",
                "is only used with ha.replication_sslmode = \"verify-ca\" or \"verify-full\"",
            ));
        }
        return Ok(None);
    };
    if !SSLMODES.contains(&sslmode.as_str()) {
        return Err(invalid(
            "ha.replication_sslmode",
            format!("`{sslmode}` is not one of {}", SSLMODES.join(", ")),
        ));
    }
    if sslmode.starts_with("verify-") && sslrootcert.is_none() {
        return Err(invalid(
            "ha.replication_sslrootcert",
            format!("is required with ha.replication_sslmode = \"{sslmode}\" (the CA of the nodes' PostgreSQL certificates)"),
        ));
    }
    Ok(Some(ReplicationTls {
        sslmode,
        sslrootcert,
    }))
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

    fn error_of(s: HaSection) -> String {
        HaConfig::from_section(s, Path::new("/etc"))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn etcd_security_is_complete_or_refused_by_key() {
        let mut s = section(&["https://e:2379"]);
        assert!(error_of(s).contains("ha.etcd_ca_file"));
        s = section(&["https://e:2379", "http://f:2379"]);
        s.etcd_ca_file = Some("ca.pem".into());
        assert!(error_of(s).contains("`ha.etcd`"));
        s = section(&["https://e:2379"]);
        s.etcd_ca_file = Some("ca.pem".into());
        s.etcd_cert_file = Some("c.pem".into());
        assert!(error_of(s).contains("ha.etcd_key_file"));
        s = section(&["http://127.0.0.1:2379"]);
        s.etcd_user = Some("pgp".into());
        assert!(error_of(s).contains("ha.etcd_password_file"));
        s = section(&["http://10.0.0.1:2379"]);
        s.etcd_user = Some("pgp".into());
        s.etcd_password_file = Some("pw".into());
        assert!(error_of(s).contains("clear text"));
        s = section(&["http://127.0.0.1:2379"]);
        s.etcd_user = Some("pgp".into());
        s.etcd_password_file = Some("pw".into());
        assert!(HaConfig::from_section(s, Path::new("/etc")).is_ok());
        s = section(&["http://e:2379"]);
        s.etcd_password_file = Some("pw".into());
        assert!(error_of(s).contains("ha.etcd_user"));
        s = section(&["https://e:2379"]);
        s.etcd_ca_file = Some("ca.pem".into());
        s.etcd_cert_file = Some("c.pem".into());
        s.etcd_key_file = Some("/k.pem".into());
        s.etcd_user = Some("pgp".into());
        s.etcd_password_file = Some("pw".into());
        let ha = HaConfig::from_section(s, Path::new("/etc"))
            .unwrap()
            .unwrap();
        assert_eq!(ha.etcd_security.ca_file, Some(PathBuf::from("/etc/ca.pem")));
        assert_eq!(ha.etcd_security.key_file, Some(PathBuf::from("/k.pem")));
        assert_eq!(ha.etcd_security.user.as_deref(), Some("pgp"));
    }

    #[test]
    fn replication_sslmode_is_checked_and_verify_needs_a_root() {
        let mut s = section(&["http://e:2379"]);
        s.replication_sslmode = Some("verify-everything".into());
        assert!(error_of(s).contains("ha.replication_sslmode"));
        s = section(&["http://e:2379"]);
        s.replication_sslmode = Some("verify-full".into());
        assert!(error_of(s).contains("ha.replication_sslrootcert"));
        s = section(&["http://e:2379"]);
        s.replication_sslrootcert = Some("ca.pem".into());
        assert!(error_of(s).contains("ha.replication_sslrootcert"));
        s = section(&["http://e:2379"]);
        s.replication_sslmode = Some("verify-full".into());
        s.replication_sslrootcert = Some("ca.pem".into());
        let ha = HaConfig::from_section(s, Path::new("/etc"))
            .unwrap()
            .unwrap();
        assert_eq!(
            ha.replication_tls,
            Some(ReplicationTls {
                sslmode: "verify-full".into(),
                sslrootcert: Some(PathBuf::from("/etc/ca.pem"))
            })
        );
    }
}
