//! `[redis]`: the redis-server the agent runs for each tenant that asks for one — which
//! binary, where it listens, which ports it may take, and its memory and persistence
//! defaults, validated.

use std::net::IpAddr;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{invalid, ConfigError};

/// `[redis]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisSection {
    /// The redis-server binary; default: found on PATH.
    pub bin: Option<String>,
    /// The address every tenant's redis-server binds (and its URL names, unless it is a
    /// wildcard). Beyond loopback the servers speak TLS only.
    pub listen_addr: Option<String>,
    /// TCP ports handed to tenants' servers, "FIRST-LAST".
    pub port_range: Option<String>,
    /// A tenant's `maxmemory` when `--redis-maxmemory` is not given (Redis units).
    pub default_maxmemory: Option<String>,
    /// Redis's `maxmemory-policy` for every tenant.
    pub maxmemory_policy: Option<String>,
    /// Redis's `appendfsync`: always | everysec | no.
    pub appendfsync: Option<String>,
}

/// Validated `[redis]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisConfig {
    pub bin: Option<PathBuf>,
    pub listen_addr: IpAddr,
    pub port_range: RangeInclusive<u16>,
    /// Bytes.
    pub default_maxmemory: u64,
    pub maxmemory_policy: String,
    pub appendfsync: String,
}

/// Redis 7.0's eviction policies.
const POLICIES: &[&str] = &[
    "noeviction",
    "allkeys-lru",
    "allkeys-lfu",
    "allkeys-random",
    "volatile-lru",
    "volatile-lfu",
    "volatile-random",
    "volatile-ttl",
];

/// The smallest `maxmemory` accepted: below it Redis refuses nearly every write.
pub const MIN_MAXMEMORY: u64 = 1 << 20;
const MAX_MAXMEMORY: u64 = 1 << 40;

impl RedisConfig {
    pub fn from_section(section: RedisSection, base: &Path) -> Result<RedisConfig, ConfigError> {
        let RedisSection {
            bin,
            listen_addr,
            port_range,
            default_maxmemory,
            maxmemory_policy,
            appendfsync,
        } = section;
        let bin = match bin {
            Some(b) if b.trim().is_empty() => None,
            Some(b) => Some(base.join(b)),
            None => None,
        };
        let listen_text = listen_addr.unwrap_or_else(|| "127.0.0.1".to_owned());
        let listen_addr: IpAddr = listen_text.parse().map_err(|_| {
            invalid(
                "redis.listen_addr",
                format!("`{listen_text}` is not an IP address like 127.0.0.1"),
            )
        })?;
        let range_text = port_range.unwrap_or_else(|| "6380-6479".to_owned());
        let port_range = parse_port_range(&range_text)
            .map_err(|message| invalid("redis.port_range", message))?;
        let default_maxmemory = parse_memory(default_maxmemory.as_deref().unwrap_or("256mb"))
            .map_err(|message| invalid("redis.default_maxmemory", message))?;
        let maxmemory_policy = maxmemory_policy.unwrap_or_else(|| "noeviction".to_owned());
        if !POLICIES.contains(&maxmemory_policy.as_str()) {
            return Err(invalid(
                "redis.maxmemory_policy",
                format!("must be one of {}", POLICIES.join(", ")),
            ));
        }
        let appendfsync = appendfsync.unwrap_or_else(|| "everysec".to_owned());
        if !["always", "everysec", "no"].contains(&appendfsync.as_str()) {
            return Err(invalid(
                "redis.appendfsync",
                "must be always, everysec or no",
            ));
        }
        Ok(RedisConfig {
            bin,
            listen_addr,
            port_range,
            default_maxmemory,
            maxmemory_policy,
            appendfsync,
        })
    }
}

fn parse_port_range(text: &str) -> Result<RangeInclusive<u16>, String> {
    let wrong = || format!("`{text}` is not a port range like 6380-6479");
    let (first, last) = text.split_once('-').ok_or_else(wrong)?;
    let first: u16 = first.trim().parse().map_err(|_| wrong())?;
    let last: u16 = last.trim().parse().map_err(|_| wrong())?;
    if first == 0 || first > last {
        return Err(wrong());
    }
    Ok(first..=last)
}

/// A size as Redis writes it: a number of bytes, or with `k`/`m`/`g` (powers of 1000)
/// or `kb`/`mb`/`gb` (powers of 1024), case-insensitive. Between 1mb and 1024gb.
pub fn parse_memory(text: &str) -> Result<u64, String> {
    let lower = text.trim().to_ascii_lowercase();
    let digits_end = lower
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(lower.len());
    let (number, unit) = lower.split_at(digits_end);
    let multiplier: u64 = match unit {
        "" | "b" => 1,
        "k" => 1000,
        "kb" => 1 << 10,
        "m" => 1_000_000,
        "mb" => 1 << 20,
        "g" => 1_000_000_000,
        "gb" => 1 << 30,
        _ => return Err(format!("`{text}` is not a size like 256mb or 1gb")),
    };
    let bytes = number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(multiplier))
        .ok_or_else(|| format!("`{text}` is not a size like 256mb or 1gb"))?;
    if !(MIN_MAXMEMORY..=MAX_MAXMEMORY).contains(&bytes) {
        return Err(format!("`{text}` must be between 1mb and 1024gb"));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_use_redis_units() {
        assert_eq!(parse_memory("256mb"), Ok(256 << 20));
        assert_eq!(parse_memory("1GB"), Ok(1 << 30));
        assert_eq!(parse_memory("2m"), Ok(2_000_000));
        assert_eq!(parse_memory("1048576"), Ok(1 << 20));
        for bad in [
            "",
            "mb",
            "12xb",
            "-1mb",
            "0",
            "1kb",
            "2048gb",
            "99999999999999999999gb",
        ] {
            assert!(parse_memory(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn defaults_and_refusals_name_the_key() {
        let d = RedisConfig::from_section(RedisSection::default(), Path::new("/")).unwrap();
        assert_eq!(d.port_range, 6380..=6479);
        assert_eq!(d.default_maxmemory, 256 << 20);
        assert_eq!(d.appendfsync, "everysec");
        let refuse = |section: RedisSection, key: &str| {
            let e = RedisConfig::from_section(section, Path::new("/")).unwrap_err();
            assert!(e.to_string().contains(key), "{e}");
        };
        refuse(
            RedisSection {
                listen_addr: Some("localhost".into()),
                ..Default::default()
            },
            "redis.listen_addr",
        );
        refuse(
            RedisSection {
                port_range: Some("7000-6000".into()),
                ..Default::default()
            },
            "redis.port_range",
        );
        refuse(
            RedisSection {
                maxmemory_policy: Some("lru".into()),
                ..Default::default()
            },
            "redis.maxmemory_policy",
        );
        refuse(
            RedisSection {
                appendfsync: Some("sometimes".into()),
                ..Default::default()
            },
            "redis.appendfsync",
        );
    }
}
