//! Where things are in the repository and what they are called: backup ids, the keys of
//! base backups, dumps and marks, and WAL segment arithmetic. The lowest layer of
//! `backup`: it uses nothing else of it, and everything else may use it.

use chrono::{DateTime, Utc};

/// A new backup or dump id: the UTC time it started, to the microsecond
/// (`20261123T150405_123456Z`). Ids sort as text in the order they were taken, also
/// after the older whole-second ids (`20261123T150405Z`), which stay valid.
pub fn new_id(at: DateTime<Utc>) -> String {
    at.format("%Y%m%dT%H%M%S_%6fZ").to_string()
}

/// A backup or dump id, in either form (`new_id`, or the older `20261123T150405Z`).
pub fn is_backup_id(text: &str) -> bool {
    let b = text.as_bytes();
    let digits = |r: &[u8]| r.iter().all(u8::is_ascii_digit);
    let stamp = b.len() >= 16 && b[8] == b'T' && digits(&b[..8]) && digits(&b[9..15]);
    match b.len() {
        16 => stamp && b[15] == b'Z',
        23 => stamp && b[15] == b'_' && digits(&b[16..22]) && b[22] == b'Z',
        _ => false,
    }
}

pub fn base_manifest_key(id: &str) -> String {
    format!("base/{id}/manifest")
}

pub fn base_data_key(id: &str) -> String {
    format!("base/{id}/pgdata.tar.zst")
}

pub fn dump_manifest_key(tenant: &str, id: &str) -> String {
    format!("dump/{tenant}/{id}/manifest")
}

pub fn dump_data_key(tenant: &str, id: &str) -> String {
    format!("dump/{tenant}/{id}/{tenant}.pgdump.zst")
}

/// The repository key of a restore point (`backup mark`); the name is checked first.
pub fn mark_key(name: &str) -> String {
    format!("mark/{name}")
}

/// The repository key of an archived WAL file.
pub fn wal_key(name: &str) -> String {
    format!("wal/{name}.zst")
}

/// A segment name's timeline and number (`(log << 8) | seg`: WAL segments are 16 MiB,
/// PostgreSQL's default, which pgplatform never changes).
pub fn parse_segment(name: &str) -> Option<(u32, u64)> {
    if name.len() != 24 || !name.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let tli = u32::from_str_radix(&name[0..8], 16).ok()?;
    let log = u64::from_str_radix(&name[8..16], 16).ok()?;
    let seg = u64::from_str_radix(&name[16..24], 16).ok()?;
    (seg <= 0xFF).then_some((tli, (log << 8) | seg))
}

pub fn segment_name(timeline: u32, number: u64) -> String {
    format!("{timeline:08X}{:08X}{:08X}", number >> 8, number & 0xFF)
}

/// The WAL segment names from `first` to `last` on `first`'s timeline.
pub fn segments(first: &str, last: &str) -> Vec<String> {
    let (Some((tli, a)), Some((_, b))) = (parse_segment(first), parse_segment(last)) else {
        return Vec::new();
    };
    (a..=b.min(a + 100_000))
        .map(|n| segment_name(tli, n))
        .collect()
}

/// "16/B374D848" → the 64-bit position.
pub fn parse_lsn(text: &str) -> Option<u64> {
    let (hi, lo) = text.trim().split_once('/')?;
    Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
}

/// The 64-bit position as PostgreSQL prints it.
pub fn format_lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_have_microseconds_and_sort_after_the_old_form() {
        let at = DateTime::from_timestamp(1_800_000_000, 123_456_000).unwrap();
        let id = new_id(at);
        assert_eq!(id, "20270115T080000_123456Z");
        assert!(is_backup_id(&id) && is_backup_id("20270115T080000Z"));
        let later = new_id(at + chrono::Duration::microseconds(1));
        assert!(later > id && id.as_str() > "20270115T080000Z");
        for bad in [
            "../20261123T1504Z",
            "2026112xT150405Z",
            "20270115T080000_12345xZ",
            "20270115T080000.123456Z",
            "20270115T080000_123456",
        ] {
            assert!(!is_backup_id(bad), "{bad}");
        }
    }

    #[test]
    fn segment_ranges_cross_log_boundaries() {
        assert_eq!(
            segments("0000000100000000000000FE", "000000010000000100000001"),
            [
                "0000000100000000000000FE",
                "0000000100000000000000FF",
                "000000010000000100000000",
                "000000010000000100000001"
            ]
        );
        assert_eq!(segments("bad", "x"), Vec::<String>::new());
        assert_eq!(parse_segment("000000020000000100000001"), Some((2, 0x101)));
        assert_eq!(segment_name(2, 0x101), "000000020000000100000001");
    }

    #[test]
    fn lsns_parse_like_postgres_prints_them() {
        assert_eq!(parse_lsn("0/3000028"), Some(0x3000028));
        assert_eq!(parse_lsn("16/B374D848"), Some((0x16 << 32) | 0xB374D848));
        assert_eq!(format_lsn((0x16 << 32) | 0xB374D848), "16/B374D848");
        assert_eq!(parse_lsn("nope"), None);
    }
}
