//! What a tenant's server says about itself (`INFO`), read for `/metrics` and `status`.
//! `parse` is pure; `Fleet::observe` asks every running server.

use std::time::Duration;

/// The INFO fields the metrics and the status use.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Info {
    pub used_memory: u64,
    pub maxmemory: u64,
    pub connected_clients: u64,
    pub total_commands_processed: u64,
    pub keyspace_hits: u64,
    pub keyspace_misses: u64,
    pub evicted_keys: u64,
    pub expired_keys: u64,
    /// `db0` → number of keys, for every database holding keys.
    pub db_keys: Vec<(String, u64)>,
    pub aof_last_write_ok: bool,
    pub rdb_last_bgsave_ok: bool,
}

/// How long one server may take to answer INFO.
pub const TIMEOUT: Duration = Duration::from_secs(2);

/// Reads INFO's `name:value` lines; unknown or malformed lines are skipped.
pub fn parse(text: &str) -> Info {
    let mut info = Info::default();
    for line in text.lines() {
        let Some((name, value)) = line.trim_end().split_once(':') else {
            continue;
        };
        let number = || value.parse::<u64>().unwrap_or(0);
        match name {
            "used_memory" => info.used_memory = number(),
            "maxmemory" => info.maxmemory = number(),
            "connected_clients" => info.connected_clients = number(),
            "total_commands_processed" => info.total_commands_processed = number(),
            "keyspace_hits" => info.keyspace_hits = number(),
            "keyspace_misses" => info.keyspace_misses = number(),
            "evicted_keys" => info.evicted_keys = number(),
            "expired_keys" => info.expired_keys = number(),
            "aof_last_write_status" => info.aof_last_write_ok = value == "ok",
            "rdb_last_bgsave_status" => info.rdb_last_bgsave_ok = value == "ok",
            db if db.starts_with("db") && db[2..].bytes().all(|b| b.is_ascii_digit()) => {
                let keys = value
                    .split(',')
                    .find_map(|field| field.strip_prefix("keys="))
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0);
                info.db_keys.push((db.to_owned(), keys));
            }
            _ => {}
        }
    }
    info
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_fields_are_read() {
        let text = "# Memory\r\nused_memory:1048576\r\nused_memory_human:1.00M\r\nmaxmemory:268435456\r\n\
                    # Clients\r\nconnected_clients:3\r\n# Stats\r\ntotal_commands_processed:42\r\n\
                    keyspace_hits:7\r\nkeyspace_misses:2\r\nevicted_keys:1\r\nexpired_keys:5\r\n\
                    # Persistence\r\naof_last_write_status:ok\r\nrdb_last_bgsave_status:err\r\n\
                    # Keyspace\r\ndb0:keys=100,expires=0,avg_ttl=0\r\ndb3:keys=2,expires=1,avg_ttl=9\r\n\
                    dbx:keys=9\r\ngarbage\r\n";
        let info = parse(text);
        assert_eq!(info.used_memory, 1 << 20);
        assert_eq!(info.maxmemory, 256 << 20);
        assert_eq!(info.connected_clients, 3);
        assert_eq!(info.total_commands_processed, 42);
        assert_eq!((info.keyspace_hits, info.keyspace_misses), (7, 2));
        assert_eq!((info.evicted_keys, info.expired_keys), (1, 5));
        assert!(info.aof_last_write_ok && !info.rdb_last_bgsave_ok);
        assert_eq!(
            info.db_keys,
            [("db0".to_owned(), 100), ("db3".to_owned(), 2)]
        );
    }
}
