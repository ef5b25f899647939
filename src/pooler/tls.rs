//! The agent's TLS certificate: the configured one, or a self-signed one generated on
//! first start and kept in `<data>/tls/`. The pooler, the API (`api.tls = "generated"`)
//! and PostgreSQL (a copy inside PGDATA) serve it; clients verify it with
//! `sslrootcert=<data>/tls/server.crt` (it is its own issuer).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::run_as::RunAs;

/// Names of the copies inside PGDATA that PostgreSQL's `ssl_cert_file`/`ssl_key_file` name.
pub const POSTGRES_CERT_FILE: &str = "pgplatform-server.crt";
pub const POSTGRES_KEY_FILE: &str = "pgplatform-server.key";

/// `<data>/tls/server.crt` and `server.key`: where the generated pair lives.
pub fn generated_paths(data_dir: &Path) -> (PathBuf, PathBuf) {
    let dir = data_dir.join("tls");
    (dir.join("server.crt"), dir.join("server.key"))
}

/// Builds the acceptor from `cert_file`/`key_file`, or from `<tls_dir>/server.{crt,key}`,
/// generating that pair (self-signed, for `hosts`) if it does not exist.
pub fn acceptor(
    configured: Option<(&Path, &Path)>,
    tls_dir: &Path,
    hosts: &[String],
) -> anyhow::Result<TlsAcceptor> {
    let (cert_path, key_path) = match configured {
        Some((cert, key)) => (cert.to_owned(), key.to_owned()),
        None => ensure_generated(tls_dir, hosts)?,
    };
    acceptor_from_files(&cert_path, &key_path)
}

/// The acceptor for one PEM certificate chain and key.
pub fn acceptor_from_files(cert_path: &Path, key_path: &Path) -> anyhow::Result<TlsAcceptor> {
    let certs = read_certificates(cert_path)?;
    let key = PrivateKeyDer::from_pem_file(key_path)
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

/// The certificates in a PEM file, at least one.
pub fn read_certificates(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("read {}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parse certificates in {}", path.display()))?;
    if certs.is_empty() {
        anyhow::bail!("{} holds no PEM certificate", path.display());
    }
    Ok(certs)
}

/// `<tls_dir>/server.{crt,key}`, generated (self-signed, for `hosts`) if either is missing.
pub fn ensure_generated(tls_dir: &Path, hosts: &[String]) -> anyhow::Result<(PathBuf, PathBuf)> {
    let cert = tls_dir.join("server.crt");
    let key = tls_dir.join("server.key");
    if !cert.exists() || !key.exists() {
        generate(tls_dir, &cert, &key, hosts)?;
    }
    Ok((cert, key))
}

/// Copies the certificate and key into PGDATA, owned by PostgreSQL's user and 0600 as
/// PostgreSQL requires of a key, under the names `render` gives `ssl_cert_file` and
/// `ssl_key_file`. Returns whether either changed (PostgreSQL then needs a reload).
pub fn install_for_postgres(
    pgdata: &Path,
    (cert, key): (&Path, &Path),
    run_as: Option<&RunAs>,
) -> anyhow::Result<bool> {
    let read = |path: &Path| {
        std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))
    };
    let (cert_text, key_text) = (read(cert)?, read(key)?);
    let cert_changed =
        crate::pg::conf::write_if_changed(&pgdata.join(POSTGRES_CERT_FILE), &cert_text, run_as)?;
    let key_changed =
        crate::pg::conf::write_if_changed(&pgdata.join(POSTGRES_KEY_FILE), &key_text, run_as)?;
    Ok(cert_changed || key_changed)
}

fn generate(dir: &Path, cert_path: &Path, key_path: &Path, hosts: &[String]) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("create {}", dir.display()))?;
    let mut names = hosts.to_vec();
    for default in ["localhost", "127.0.0.1", "::1"] {
        if !names.iter().any(|n| n == default) {
            names.push(default.to_owned());
        }
    }
    let certified =
        rcgen::generate_simple_self_signed(names).context("generate a TLS certificate")?;
    crate::safe_file::replace(
        key_path,
        certified.signing_key.serialize_pem().as_bytes(),
        0o600,
        None,
    )?;
    crate::safe_file::replace(cert_path, certified.cert.pem().as_bytes(), 0o644, None)?;
    tracing::info!(cert = %cert_path.display(), "generated a self-signed TLS certificate");
    Ok(())
}

/// The names a generated certificate is made for: where tenants and other nodes reach
/// this machine, plus `localhost`, `127.0.0.1` and `::1` (added by `generate`).
pub fn certificate_hosts(config: &crate::config::Config) -> Vec<String> {
    let mut hosts = vec![config.tenant_host.clone()];
    if let Some(ha) = &config.ha {
        if !hosts.contains(&ha.advertise_host) {
            hosts.push(ha.advertise_host.clone());
        }
    }
    hosts
}

/// The certificate and key the pooler serves (and PostgreSQL, through a copy): the
/// configured `pooler.client_tls_*_file`s, or the generated pair, made now if missing.
pub fn server_files(config: &crate::config::Config) -> anyhow::Result<(PathBuf, PathBuf)> {
    match (
        &config.pooler.client_tls_cert_file,
        &config.pooler.client_tls_key_file,
    ) {
        (Some(cert), Some(key)) => Ok((PathBuf::from(cert), PathBuf::from(key))),
        _ => ensure_generated(&config.data_dir.join("tls"), &certificate_hosts(config)),
    }
}
