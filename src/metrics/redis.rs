//! Tenants' Redis under redis_exporter's names, one series per tenant (label `tenant`),
//! read from each server's INFO (`redis::Fleet::observe`). A server that is not running
//! or does not answer has `redis_up 0` and nothing else.

use super::exposition::Exposition;
use crate::redis::Observed;

pub fn collect(out: &mut Exposition, servers: &[Observed]) {
    for server in servers {
        let tenant = [("tenant", server.tenant.as_str())];
        out.gauge(
            "redis_up",
            "Information about the Redis instance",
            &tenant,
            if server.info.is_some() { 1.0 } else { 0.0 },
        );
        let Some(info) = &server.info else {
            continue;
        };
        let gauges = [
            (
                "redis_memory_used_bytes",
                "used_memory metric",
                info.used_memory,
            ),
            ("redis_memory_max_bytes", "maxmemory metric", info.maxmemory),
            (
                "redis_connected_clients",
                "connected_clients metric",
                info.connected_clients,
            ),
        ];
        for (name, help, value) in gauges {
            out.gauge(name, help, &tenant, value as f64);
        }
        let counters = [
            (
                "redis_commands_processed_total",
                "commands_processed_total metric",
                info.total_commands_processed,
            ),
            (
                "redis_keyspace_hits_total",
                "keyspace_hits_total metric",
                info.keyspace_hits,
            ),
            (
                "redis_keyspace_misses_total",
                "keyspace_misses_total metric",
                info.keyspace_misses,
            ),
            (
                "redis_evicted_keys_total",
                "evicted_keys_total metric",
                info.evicted_keys,
            ),
            (
                "redis_expired_keys_total",
                "expired_keys_total metric",
                info.expired_keys,
            ),
        ];
        for (name, help, value) in counters {
            out.counter(name, help, &tenant, value as f64);
        }
        for (db, keys) in &info.db_keys {
            out.gauge(
                "redis_db_keys",
                "Total number of keys by DB",
                &[("tenant", server.tenant.as_str()), ("db", db.as_str())],
                *keys as f64,
            );
        }
        let ok = |ok: bool| if ok { 1.0 } else { 0.0 };
        out.gauge(
            "redis_aof_last_write_status",
            "aof_last_write_status metric",
            &tenant,
            ok(info.aof_last_write_ok),
        );
        out.gauge(
            "redis_rdb_last_bgsave_status",
            "rdb_last_bgsave_status metric",
            &tenant,
            ok(info.rdb_last_bgsave_ok),
        );
    }
}
