//! The stored form of one WAL file: a magic, a JSON header with the file's name, size
//! and SHA-256 before and after compression, then the zstd payload. An archived segment
//! is self-checking: `verify` and `wal fetch` need nothing else to catch a flipped byte.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

const MAGIC: &[u8; 8] = b"PGPLWAL1";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    pub name: String,
    pub raw_size: u64,
    pub raw_sha256: String,
    pub zstd_sha256: String,
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Compresses `raw` into a stored object.
pub fn seal(name: &str, raw: &[u8], level: i32) -> anyhow::Result<Vec<u8>> {
    let payload = zstd::bulk::compress(raw, level)?;
    let header = Header {
        name: name.to_owned(),
        raw_size: raw.len() as u64,
        raw_sha256: sha256_hex(raw),
        zstd_sha256: sha256_hex(&payload),
    };
    let header = serde_json::to_vec(&header)?;
    let mut out = Vec::with_capacity(12 + header.len() + payload.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(header.len() as u32).to_le_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(&payload);
    Ok(out)
}

/// Reads only the header (to compare an existing object with a new push).
pub fn header(object: &[u8]) -> anyhow::Result<(Header, &[u8])> {
    let rest = object
        .strip_prefix(MAGIC.as_slice())
        .ok_or_else(|| anyhow::anyhow!("not a pgplatform WAL object (bad magic)"))?;
    anyhow::ensure!(rest.len() >= 4, "truncated WAL object");
    let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
    let rest = &rest[4..];
    anyhow::ensure!(rest.len() >= len, "truncated WAL object header");
    let header: Header = serde_json::from_slice(&rest[..len])
        .map_err(|e| anyhow::anyhow!("corrupt WAL object header: {e}"))?;
    Ok((header, &rest[len..]))
}

/// Checks both checksums and returns the original bytes.
pub fn open(object: &[u8]) -> anyhow::Result<(Header, Vec<u8>)> {
    let (header, payload) = header(object)?;
    anyhow::ensure!(
        sha256_hex(payload) == header.zstd_sha256,
        "checksum mismatch in the stored object of {}",
        header.name
    );
    let raw = zstd::bulk::decompress(payload, header.raw_size as usize)
        .map_err(|e| anyhow::anyhow!("decompress {}: {e}", header.name))?;
    anyhow::ensure!(
        raw.len() as u64 == header.raw_size && sha256_hex(&raw) == header.raw_sha256,
        "checksum mismatch after decompressing {}",
        header.name
    );
    Ok((header, raw))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_objects_open_to_the_same_bytes() {
        let raw: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let object = seal("000000010000000000000001", &raw, 3).unwrap();
        assert!(object.len() < raw.len() / 10);
        let (header, back) = open(&object).unwrap();
        assert_eq!(back, raw);
        assert_eq!(header.name, "000000010000000000000001");
        assert_eq!(header.raw_sha256, sha256_hex(&raw));
    }

    #[test]
    fn any_flipped_byte_is_caught() {
        let raw = vec![7u8; 10_000];
        let object = seal("x", &raw, 3).unwrap();
        for at in [0, 5, 10, object.len() / 2, object.len() - 1] {
            let mut bad = object.clone();
            bad[at] ^= 0x40;
            assert!(open(&bad).is_err(), "flip at {at} went unnoticed");
        }
        assert!(open(&object[..object.len() - 3]).is_err());
    }
}
