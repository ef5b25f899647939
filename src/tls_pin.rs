//! A TLS client that trusts exactly one certificate, named by the SHA-256 of its DER,
//! whatever its issuer and names: the agents' certificates are self-signed. The CLI pins
//! the certificate file `run/agent.json` names (`api/client.rs`); agents pin the one a
//! verified member record names (`ha/peer.rs`). The server must still prove it holds the
//! certificate's key: the handshake signature is verified as usual.

use std::sync::Arc;

use anyhow::Context;
use sha2::{Digest, Sha256};

/// The SHA-256 of a certificate's DER, as pinned.
pub fn sha256(der: &[u8]) -> [u8; 32] {
    Sha256::digest(der).into()
}

/// A SHA-256 written as 64 hex digits (either case); `None` for anything else.
pub fn parse_sha256_hex(hex: &str) -> Option<[u8; 32]> {
    let bytes = hex.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        let high = char::from(pair[0]).to_digit(16)?;
        let low = char::from(pair[1]).to_digit(16)?;
        *byte = (high * 16 + low) as u8;
    }
    Some(out)
}

/// A TLS client configuration that accepts only the certificate whose DER hashes to
/// `sha256`; any other fails the handshake with `mismatch` as the error.
pub fn client_config(sha256: [u8; 32], mismatch: String) -> anyhow::Result<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Pinned {
        sha256,
        mismatch,
        provider: provider.clone(),
    };
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("choose TLS versions")?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth())
}

#[derive(Debug)]
struct Pinned {
    sha256: [u8; 32],
    mismatch: String,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &rustls_pki_types::CertificateDer<'_>,
        _intermediates: &[rustls_pki_types::CertificateDer<'_>],
        _server_name: &rustls_pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        if sha256(end_entity.as_ref()) == self.sha256 {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(self.mismatch.clone()))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hex_pin_parses_to_the_digest_and_nothing_else_does() {
        let digest = sha256(b"certificate");
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(parse_sha256_hex(&hex), Some(digest));
        assert_eq!(parse_sha256_hex(&hex.to_ascii_uppercase()), Some(digest));
        assert_eq!(parse_sha256_hex(&hex[..62]), None);
        assert_eq!(parse_sha256_hex(&format!("+{}", &hex[1..])), None);
        assert_eq!(parse_sha256_hex(&"g".repeat(64)), None);
    }
}
