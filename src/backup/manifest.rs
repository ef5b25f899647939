//! Manifests: what one base backup or dump holds, written last as its commit marker (a
//! backup without a readable manifest was interrupted and is never listed). A manifest
//! carries an HMAC-SHA256 under the repository key (`key.rs`) on its first line, so a
//! damaged, changed or forged one is refused, not trusted; and every value in it that
//! reaches a file name, a configuration file or SQL is checked for its form (`check`).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::envelope::hex;
use super::key::RepositoryKey;

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
    /// The next transaction id (64-bit, as `pg_current_xact_id`) once the backup had
    /// stopped: any transaction with this id or a later one committed after the backup's
    /// end, so `restore --xid` can start from it. `None` in manifests of older versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_xid: Option<u64>,
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

impl BaseManifest {
    /// Every value that later reaches a path, postgresql.auto.conf or SQL has its
    /// expected form; `id` is the backup the manifest is stored as.
    pub fn check(&self, id: &str) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.id == id && is_backup_id(id),
            "it describes backup {:?}",
            self.id
        );
        for (what, lsn) in [("start_lsn", &self.start_lsn), ("stop_lsn", &self.stop_lsn)] {
            anyhow::ensure!(is_lsn(lsn), "{what} {lsn:?} is not an LSN");
        }
        if let Some(lsn) = &self.counts_lsn {
            anyhow::ensure!(is_lsn(lsn), "counts_lsn {lsn:?} is not an LSN");
        }
        for (what, name) in [("start_wal", &self.start_wal), ("stop_wal", &self.stop_wal)] {
            anyhow::ensure!(
                is_segment_name(name),
                "{what} {name:?} is not a WAL segment name"
            );
        }
        anyhow::ensure!(
            !self.system_identifier.is_empty()
                && self.system_identifier.bytes().all(|b| b.is_ascii_digit()),
            "system_identifier {:?} is not a number",
            self.system_identifier
        );
        check_object(&self.object, &super::layout::base_data_key(id))?;
        for file in &self.files {
            anyhow::ensure!(
                is_relative_path(&file.path),
                "file path {:?} leaves the data directory",
                file.path
            );
            // PostgreSQL makes a link for each line of a tablespace_map, to any path;
            // base backups never have one (`walk.rs` refuses tablespaces).
            anyhow::ensure!(
                file.path != "tablespace_map",
                "it lists a tablespace_map, which pgplatform's base backups never contain"
            );
        }
        for tenant in &self.tenants {
            crate::tenants::TenantName::parse(&tenant.name)
                .map_err(|e| anyhow::anyhow!("tenant {:?}: {e}", tenant.name))?;
            for table in tenant.tables.keys() {
                anyhow::ensure!(
                    split_qualified_name(table).is_some(),
                    "table {table:?} of {} is not a quoted schema.table name",
                    tenant.name
                );
            }
        }
        Ok(())
    }
}

impl DumpManifest {
    /// Like `BaseManifest::check`, for the dump `id` of `tenant`.
    pub fn check(&self, tenant: &str, id: &str) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.id == id && self.tenant == tenant && is_backup_id(id),
            "it describes dump {:?} of {:?}",
            self.id,
            self.tenant
        );
        crate::tenants::TenantName::parse(tenant)
            .map_err(|e| anyhow::anyhow!("tenant {tenant:?}: {e}"))?;
        check_object(&self.object, &super::layout::dump_data_key(tenant, id))
    }
}

fn check_object(object: &ObjectRef, expected_key: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        object.key == expected_key,
        "its data object is {:?}, not {expected_key:?}",
        object.key
    );
    anyhow::ensure!(
        object.sha256.len() == 64
            && object
                .sha256
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "its data checksum {:?} is not a SHA-256",
        object.sha256
    );
    Ok(())
}

pub use super::layout::is_backup_id;

/// An LSN as PostgreSQL prints it: `16/B374D848`.
pub fn is_lsn(text: &str) -> bool {
    let part = |p: &str| {
        (1..=8).contains(&p.len())
            && p.bytes()
                .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
    };
    text.split_once('/')
        .is_some_and(|(hi, lo)| part(hi) && part(lo))
}

/// A WAL segment name: 24 upper-case hex digits.
pub fn is_segment_name(text: &str) -> bool {
    text.len() == 24
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
}

/// Relative, `/`-separated, without `.`, `..` or empty parts.
pub fn is_relative_path(text: &str) -> bool {
    !text.is_empty()
        && !text.contains('\0')
        && text
            .split('/')
            .all(|p| !p.is_empty() && p != "." && p != "..")
}

/// `schema.table` as `format('%I.%I')` writes it, split into the two names (quotes
/// removed), or `None` for anything else.
pub fn split_qualified_name(text: &str) -> Option<(String, String)> {
    let (schema, rest) = take_identifier(text)?;
    let (table, rest) = take_identifier(rest.strip_prefix('.')?)?;
    rest.is_empty().then_some((schema, table))
}

fn take_identifier(text: &str) -> Option<(String, &str)> {
    if let Some(quoted) = text.strip_prefix('"') {
        let mut name = String::new();
        let mut chars = quoted.char_indices();
        while let Some((i, c)) = chars.next() {
            if c != '"' {
                name.push(c);
                continue;
            }
            if quoted[i + 1..].starts_with('"') {
                name.push('"');
                chars.next();
                continue;
            }
            return (!name.is_empty() && !name.contains('\0')).then(|| (name, &quoted[i + 1..]));
        }
        return None;
    }
    let end = text
        .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '$'))
        .unwrap_or(text.len());
    let name = &text[..end];
    let starts_well = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    starts_well.then(|| (name.to_owned(), &text[end..]))
}

const FORMAT: &str = "pgplatform-manifest-v2";
const DOMAIN: &str = "pgplatform manifest v2";

/// `pgplatform-manifest-v2 key=<fingerprint> hmac-sha256=<hex>\n<JSON>`: the HMAC covers
/// the repository key the manifest is stored under and the JSON exactly as stored, so it
/// can neither be changed nor moved to another backup's place.
pub fn seal<T: Serialize>(
    key: &RepositoryKey,
    object_key: &str,
    manifest: &T,
) -> anyhow::Result<Vec<u8>> {
    let body = serde_json::to_vec_pretty(manifest)?;
    let tag = key.sign(DOMAIN, &[object_key.as_bytes(), &body]);
    let mut out = format!(
        "{FORMAT} key={} hmac-sha256={}\n",
        key.fingerprint(),
        hex(&tag)
    )
    .into_bytes();
    out.extend_from_slice(&body);
    Ok(out)
}

/// The manifest stored under `object_key`, only if its HMAC verifies under `key`.
pub fn open<T: DeserializeOwned>(
    key: &RepositoryKey,
    object_key: &str,
    bytes: &[u8],
) -> anyhow::Result<T> {
    let newline = bytes
        .iter()
        .position(|b| *b == b'\n')
        .ok_or_else(|| anyhow::anyhow!("it has no header line"))?;
    let (first, body) = (&bytes[..newline], &bytes[newline + 1..]);
    let first = std::str::from_utf8(first).unwrap_or("");
    if first.starts_with("sha256:") {
        anyhow::bail!(
            "it carries no HMAC (written before manifests were authenticated, or forged)"
        );
    }
    let fields: Vec<&str> = first.split(' ').collect();
    let [FORMAT, fingerprint, tag] = fields.as_slice() else {
        anyhow::bail!("it is not a pgplatform manifest (bad header line)");
    };
    let fingerprint = fingerprint.strip_prefix("key=").unwrap_or("");
    let tag = tag
        .strip_prefix("hmac-sha256=")
        .and_then(unhex)
        .ok_or_else(|| anyhow::anyhow!("it is not a pgplatform manifest (bad HMAC field)"))?;
    if !key.verify(DOMAIN, &[object_key.as_bytes(), body], &tag) {
        if fingerprint != key.fingerprint() {
            anyhow::bail!(
                "its HMAC does not verify: it names repository key {fingerprint:?} but this \
                 host's key is {} (copy the key of the cluster that wrote it), or it is forged",
                key.fingerprint()
            );
        }
        anyhow::bail!("its HMAC does not verify: it was changed or forged without the key");
    }
    Ok(serde_json::from_slice(body)?)
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
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
        let key = RepositoryKey::random();
        let at = "dump/shop/20261123T150405Z/manifest";
        let sealed = seal(&key, at, &sample()).unwrap();
        assert_eq!(open::<DumpManifest>(&key, at, &sealed).unwrap(), sample());
        let mut bad = sealed.clone();
        let end = bad.len() - 5;
        bad[end] ^= 1;
        assert!(open::<DumpManifest>(&key, at, &bad).is_err());
        assert!(open::<DumpManifest>(&key, at, b"{}").is_err());
    }

    #[test]
    fn values_have_the_form_postgres_gives_them() {
        assert!(is_lsn("0/3000028") && is_lsn("16/B374D848"));
        for bad in [
            "",
            "0/",
            "/1",
            "0/0'",
            "0/0'\nrestore_command='touch /tmp/x'",
            "123456789/0",
            "0/3000028 ",
        ] {
            assert!(!is_lsn(bad), "{bad:?}");
        }
        assert!(is_backup_id("20261123T150405Z"));
        assert!(!is_backup_id("../20261123T1504Z") && !is_backup_id("2026112xT150405Z"));
        assert!(is_relative_path("base/1/1259") && is_relative_path("pg_wal"));
        for bad in ["", "/etc/passwd", "a/../../x", "a//b", "./x", "a/"] {
            assert!(!is_relative_path(bad), "{bad:?}");
        }
        assert_eq!(
            split_qualified_name("public.t"),
            Some(("public".into(), "t".into()))
        );
        assert_eq!(
            split_qualified_name(r#""My ""S"".x"."a.b""#),
            Some((r#"My "S".x"#.into(), "a.b".into()))
        );
        for bad in [
            "t",
            "public.t; DROP TABLE x",
            "public.t--",
            r#""a"b.t"#,
            "Public.t",
            "a.b.c",
            r#""".t"#,
        ] {
            assert_eq!(split_qualified_name(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn forged_moved_or_unauthenticated_manifests_are_refused() {
        let key = RepositoryKey::random();
        let at = "dump/shop/20261123T150405Z/manifest";
        let sealed = seal(&key, at, &sample()).unwrap();
        // Sealed with another key (an attacker's own).
        let other = seal(&RepositoryKey::random(), at, &sample()).unwrap();
        let err = open::<DumpManifest>(&key, at, &other)
            .unwrap_err()
            .to_string();
        assert!(err.contains("does not verify"), "{err}");
        // A genuine manifest copied to another backup's place.
        let moved = "dump/shop/20261124T150405Z/manifest";
        assert!(open::<DumpManifest>(&key, moved, &sealed).is_err());
        // The old format: a bare SHA-256 anybody can compute.
        let body = serde_json::to_vec_pretty(&sample()).unwrap();
        let mut old =
            format!("sha256:{}\n", super::super::envelope::sha256_hex(&body)).into_bytes();
        old.extend_from_slice(&body);
        let err = open::<DumpManifest>(&key, at, &old)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no HMAC"), "{err}");
        // The header changed to claim this host's key fingerprint.
        let text = String::from_utf8(other.clone()).unwrap();
        let forged = text.replacen(
            text.split(' ').nth(1).unwrap(),
            &format!("key={}", key.fingerprint()),
            1,
        );
        let err = open::<DumpManifest>(&key, at, forged.as_bytes())
            .unwrap_err()
            .to_string();
        assert!(err.contains("changed or forged"), "{err}");
    }
}
