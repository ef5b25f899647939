//! Manifests: what one base backup or dump holds, written last as its commit marker (a
//! backup without a readable manifest was interrupted and is never listed). A manifest
//! carries its own SHA-256 on its first line, so a damaged one is refused, not trusted.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::envelope::sha256_hex;

/// A stored object and how to check it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectRef {
    pub key: String,
    pub size: u64,
    pub sha256: String,
}

/// One file of PGDATA in a base backup; CRC-32C like PostgreSQL's own backup manifests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub path: String,
    pub size: u64,
    pub crc32c: u32,
}

/// A tenant's database at backup time: its size, and the exact row count of each table
/// as of `BaseManifest::counts_lsn`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantCounts {
    pub name: String,
    pub size_bytes: i64,
    pub tables: BTreeMap<String, i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BaseManifest {
    pub id: String,
    pub started_at: DateTime<Utc>,
    pub stopped_at: DateTime<Utc>,
    pub start_lsn: String,
    pub stop_lsn: String,
    /// The first WAL segment the backup needs.
    pub start_wal: String,
    /// The last WAL segment it needs to be consistent.
    pub stop_wal: String,
    pub timeline: u32,
    pub pg_version: String,
    pub system_identifier: String,
    /// Bytes read from PGDATA.
    pub data_bytes: u64,
    pub object: ObjectRef,
    pub files: Vec<FileEntry>,
    pub tenants: Vec<TenantCounts>,
    /// The WAL position the tenant counts hold at; `None` if they could not be taken.
    pub counts_lsn: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DumpManifest {
    pub id: String,
    pub tenant: String,
    pub started_at: DateTime<Utc>,
    pub stopped_at: DateTime<Utc>,
    pub pg_version: String,
    pub object: ObjectRef,
    /// Bytes of pg_dump output before compression.
    pub dump_bytes: u64,
}

/// `sha256:<hex of the JSON>\n<JSON>`.
pub fn seal<T: Serialize>(manifest: &T) -> anyhow::Result<Vec<u8>> {
    let body = serde_json::to_vec_pretty(manifest)?;
    let mut out = format!("sha256:{}\n", sha256_hex(&body)).into_bytes();
    out.extend_from_slice(&body);
    Ok(out)
}

pub fn open<T: DeserializeOwned>(bytes: &[u8]) -> anyhow::Result<T> {
    let newline = bytes
        .iter()
        .position(|b| *b == b'\n')
        .ok_or_else(|| anyhow::anyhow!("manifest has no checksum line"))?;
    let (first, body) = (&bytes[..newline], &bytes[newline + 1..]);
    let expected = std::str::from_utf8(first)
        .ok()
        .and_then(|l| l.strip_prefix("sha256:"))
        .ok_or_else(|| anyhow::anyhow!("manifest has no checksum line"))?;
    anyhow::ensure!(sha256_hex(body) == expected, "manifest checksum mismatch");
    Ok(serde_json::from_slice(body)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> DumpManifest {
        DumpManifest {
            id: "20261123T150405Z".into(),
            tenant: "shop".into(),
            started_at: DateTime::from_timestamp(1_800_000_000, 0).unwrap(),
            stopped_at: DateTime::from_timestamp(1_800_000_010, 0).unwrap(),
            pg_version: "15.4".into(),
            object: ObjectRef {
                key: "dump/shop/20261123T150405Z/shop.pgdump.zst".into(),
                size: 10,
                sha256: "00".into(),
            },
            dump_bytes: 100,
        }
    }

    #[test]
    fn sealed_manifests_round_trip_and_refuse_damage() {
        let sealed = seal(&sample()).unwrap();
        assert_eq!(open::<DumpManifest>(&sealed).unwrap(), sample());
        let mut bad = sealed.clone();
        let at = bad.len() - 5;
        bad[at] ^= 1;
        assert!(open::<DumpManifest>(&bad).is_err());
        assert!(open::<DumpManifest>(b"{}").is_err());
    }
}
