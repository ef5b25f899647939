//! The stored form of one WAL file: a magic, a JSON header with the file's name, size
//! and SHA-256 before and after compression, an HMAC-SHA256 of that header under the
//! repository key, then the zstd payload. An archived segment is self-checking (`verify`
//! and `wal fetch` catch a flipped byte) and authenticated: replayed WAL can do anything a
//! superuser can, so a segment whoever writes the bucket made up is refused.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::key::RepositoryKey;

const MAGIC: &[u8; 8] = b"PGPLWAL2";
/// Before WAL objects were authenticated.
const UNAUTHENTICATED_MAGIC: &[u8; 8] = b"PGPLWAL1";
const DOMAIN: &str = "pgplatform wal v2";
const TAG_LEN: usize = 32;
/// WAL segments are at most 1 GiB (initdb --wal-segsize).
const MAX_RAW_SIZE: u64 = 1 << 30;

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

pub use super::key::hex;

/// Compresses `raw` into a stored object.
pub fn seal(key: &RepositoryKey, name: &str, raw: &[u8], level: i32) -> anyhow::Result<Vec<u8>> {
    let payload = zstd::bulk::compress(raw, level)?;
    let header = Header {
        name: name.to_owned(),
        raw_size: raw.len() as u64,
        raw_sha256: sha256_hex(raw),
        zstd_sha256: sha256_hex(&payload),
    };
    let header = serde_json::to_vec(&header)?;
    let tag = key.sign(DOMAIN, &[&header]);
    let mut out = Vec::with_capacity(12 + header.len() + TAG_LEN + payload.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(header.len() as u32).to_le_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(&tag);
    out.extend_from_slice(&payload);
    Ok(out)
}

/// Reads and authenticates only the header (to compare an existing object with a new
/// push); returns it with the payload it vouches for.
pub fn header<'a>(key: &RepositoryKey, object: &'a [u8]) -> anyhow::Result<(Header, &'a [u8])> {
    if object.starts_with(UNAUTHENTICATED_MAGIC) {
        anyhow::bail!(
            "the WAL object carries no HMAC (archived before WAL was authenticated, or forged)"
        );
    }
    let rest = object
        .strip_prefix(MAGIC.as_slice())
        .ok_or_else(|| anyhow::anyhow!("not a pgplatform WAL object (bad magic)"))?;
    anyhow::ensure!(rest.len() >= 4, "truncated WAL object");
    let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
    let rest = &rest[4..];
    anyhow::ensure!(rest.len() >= len + TAG_LEN, "truncated WAL object header");
    let (header_bytes, rest) = rest.split_at(len);
    let (tag, payload) = rest.split_at(TAG_LEN);
    anyhow::ensure!(
        key.verify(DOMAIN, &[header_bytes], tag),
        "the WAL object's HMAC does not verify under this host's repository key \
         (key {}): it was changed or forged, or another cluster's key wrote it",
        key.fingerprint()
    );
    let header: Header = serde_json::from_slice(header_bytes)
        .map_err(|e| anyhow::anyhow!("corrupt WAL object header: {e}"))?;
    anyhow::ensure!(
        header.raw_size <= MAX_RAW_SIZE,
        "{}: implausible size {}",
        header.name,
        header.raw_size
    );
    Ok((header, payload))
}

/// Authenticates the object as WAL file `name`, checks both checksums and returns the
/// original bytes.
pub fn open(key: &RepositoryKey, name: &str, object: &[u8]) -> anyhow::Result<(Header, Vec<u8>)> {
    let (header, payload) = self::header(key, object)?;
    // A genuine object of another file, copied under this name, is not this file.
    anyhow::ensure!(
        header.name == name,
        "the object stored as {name} is WAL file {:?}",
        header.name
    );
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
        let key = RepositoryKey::random();
        let raw: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let object = seal(&key, "000000010000000000000001", &raw, 3).unwrap();
        assert!(object.len() < raw.len() / 10);
        let (header, back) = open(&key, "000000010000000000000001", &object).unwrap();
        assert_eq!(back, raw);
        assert_eq!(header.name, "000000010000000000000001");
        assert_eq!(header.raw_sha256, sha256_hex(&raw));
    }

    #[test]
    fn any_flipped_byte_is_caught() {
        let key = RepositoryKey::random();
        let raw = vec![7u8; 10_000];
        let object = seal(&key, "x", &raw, 3).unwrap();
        for at in [0, 5, 10, 30, object.len() / 2, object.len() - 1] {
            let mut bad = object.clone();
            bad[at] ^= 0x40;
            assert!(
                open(&key, "x", &bad).is_err(),
                "flip at {at} went unnoticed"
            );
        }
        assert!(open(&key, "x", &object[..object.len() - 3]).is_err());
    }

    #[test]
    fn forged_renamed_and_unauthenticated_objects_are_refused() {
        let key = RepositoryKey::random();
        let raw = vec![7u8; 10_000];
        // Self-consistent checksums, made without the key.
        let forged = seal(&RepositoryKey::random(), "x", &raw, 3).unwrap();
        let err = open(&key, "x", &forged).unwrap_err().to_string();
        assert!(err.contains("HMAC does not verify"), "{err}");
        // A genuine object of another file stored under this name.
        let genuine = seal(&key, "y", &raw, 3).unwrap();
        assert!(open(&key, "x", &genuine).is_err());
        // The old, unauthenticated format.
        let mut old = genuine.clone();
        old[..8].copy_from_slice(UNAUTHENTICATED_MAGIC);
        let err = open(&key, "y", &old).unwrap_err().to_string();
        assert!(err.contains("no HMAC"), "{err}");
    }
}
