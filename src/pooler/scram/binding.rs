//! `tls-server-end-point` channel binding data (RFC 5929 §4.1), as PostgreSQL computes it
//! for SCRAM-SHA-256-PLUS: the hash of the server's certificate (DER), with the hash of the
//! certificate's signature algorithm, MD5 and SHA-1 replaced by SHA-256.

use sha2::{Digest, Sha256, Sha384, Sha512};

/// The binding data for `certificate` (DER), or `None` when its signature algorithm names
/// no hash RFC 5929 can use (Ed25519, RSASSA-PSS, anything unknown): then -PLUS is not
/// offered, as PostgreSQL does not offer it either.
pub fn tls_server_end_point(certificate: &[u8]) -> Option<Vec<u8>> {
    // Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm, signatureValue }
    let (0x30, certificate_fields, _) = tlv(certificate)? else {
        return None;
    };
    let (0x30, _tbs, rest) = tlv(certificate_fields)? else {
        return None;
    };
    let (0x30, algorithm, _) = tlv(rest)? else {
        return None;
    };
    let (0x06, oid, _) = tlv(algorithm)? else {
        return None;
    };
    const RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01];
    const ECDSA_SHA2: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03];
    const ECDSA_SHA1: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x01];
    let hash = match (oid.split_last()?, oid) {
        // md5WithRSAEncryption, sha1WithRSAEncryption, sha256WithRSAEncryption
        ((4 | 5 | 11, prefix), _) if prefix == RSA => Hash::Sha256,
        ((12, prefix), _) if prefix == RSA => Hash::Sha384,
        ((13, prefix), _) if prefix == RSA => Hash::Sha512,
        (_, oid) if oid == ECDSA_SHA1 => Hash::Sha256,
        ((2, prefix), _) if prefix == ECDSA_SHA2 => Hash::Sha256,
        ((3, prefix), _) if prefix == ECDSA_SHA2 => Hash::Sha384,
        ((4, prefix), _) if prefix == ECDSA_SHA2 => Hash::Sha512,
        _ => return None,
    };
    Some(match hash {
        Hash::Sha256 => Sha256::digest(certificate).to_vec(),
        Hash::Sha384 => Sha384::digest(certificate).to_vec(),
        Hash::Sha512 => Sha512::digest(certificate).to_vec(),
    })
}

enum Hash {
    Sha256,
    Sha384,
    Sha512,
}

/// One DER element: (tag, contents, what follows it).
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (length, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 {
            return None;
        }
        let (bytes, rest) = rest.split_at_checked(count)?;
        let length = bytes
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (length, rest)
    };
    let (contents, rest) = rest.split_at_checked(length)?;
    Some((tag, contents, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ecdsa_p256_certificate_binds_with_the_sha256_of_its_der() {
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let der = certified.cert.der().to_vec();
        assert_eq!(
            tls_server_end_point(&der),
            Some(Sha256::digest(&der).to_vec())
        );
    }

    #[test]
    fn garbage_and_truncated_input_give_none() {
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let der = certified.cert.der().to_vec();
        for cut in 0..der.len() {
            assert_eq!(tls_server_end_point(&der[..cut]), None, "cut at {cut}");
        }
        assert_eq!(tls_server_end_point(b"\x30\x84\xff\xff\xff\xff"), None);
        assert_eq!(tls_server_end_point(b""), None);
    }
}
