//! TLS for clients: the configured certificate, or a self-signed one generated on first
//! start and kept in `<data>/tls/`.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

/// Builds the acceptor from `cert_file`/`key_file`, or from `<tls_dir>/server.{crt,key}`,
/// generating that pair (self-signed, for `hosts`) if it does not exist.
pub fn acceptor(
    configured: Option<(&Path, &Path)>,
    tls_dir: &Path,
    hosts: &[String],
) -> anyhow::Result<TlsAcceptor> {
    let (cert_path, key_path) = match configured {
        Some((cert, key)) => (cert.to_owned(), key.to_owned()),
        None => {
            let cert = tls_dir.join("server.crt");
            let key = tls_dir.join("server.key");
            if !cert.exists() || !key.exists() {
                generate(tls_dir, &cert, &key, hosts)?;
            }
            (cert, key)
        }
    };
    let certs = CertificateDer::pem_file_iter(&cert_path)
        .with_context(|| format!("read {}", cert_path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parse certificates in {}", cert_path.display()))?;
    let key = PrivateKeyDer::from_pem_file(&key_path)
        .with_context(|| format!("read the private key in {}", key_path.display()))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .context("choose TLS versions")?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .context("use the TLS certificate and key")?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

fn generate(dir: &Path, cert_path: &Path, key_path: &Path, hosts: &[String]) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("create {}", dir.display()))?;
    let mut names = hosts.to_vec();
    for default in ["localhost", "127.0.0.1"] {
        if !names.iter().any(|n| n == default) {
            names.push(default.to_owned());
        }
    }
    let certified =
        rcgen::generate_simple_self_signed(names).context("generate a TLS certificate")?;
    crate::pg::conf::write_atomically(
        key_path,
        certified.signing_key.serialize_pem().as_bytes(),
        0o600,
    )?;
    crate::pg::conf::write_atomically(cert_path, certified.cert.pem().as_bytes(), 0o644)?;
    tracing::info!(cert = %cert_path.display(), "generated a self-signed TLS certificate for the pooler");
    Ok(())
}
