//! etcd is a consensus store, not a source of trust. Attacks as an etcd writer or a
//! network client would make them, against a real etcd and real agents:
//! - an etcd that requires client certificates or a user/password is reachable only with
//!   them, and the client says clearly why not;
//! - a forged member record (no valid HMAC) gets no request, no credential, no pooler
//!   traffic, and is logged;
//! - a signed inter-agent request replayed (within or after its window) is refused, and
//!   the old bearer token derived from the cluster secret is no longer accepted.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine;
use pgplatform::ha::etcd::{Etcd, EtcdSecurity};
use serde_json::json;

use crate::support::etcd::EtcdServer;
use crate::support::pooler::runtime;

/// A test CA, etcd's server certificate (for 127.0.0.1) and a client certificate, as PEM
/// files in `dir`.
struct Pki {
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

fn make_pki(dir: &Path, tag: &str) -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("test CA {tag}"));
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let leaf = |names: Vec<String>, usage: Vec<rcgen::ExtendedKeyUsagePurpose>| {
        let mut params = CertificateParams::new(names).unwrap();
        params.extended_key_usages = usage;
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &ca).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let (server_cert, server_key) = leaf(
        vec!["127.0.0.1".into(), "localhost".into()],
        // etcd's JSON gateway dials etcd's gRPC with the server certificate as a client.
        vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ],
    );
    let (client_cert, client_key) = leaf(
        vec!["pgplatform".into()],
        vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth],
    );
    let write = |name: &str, text: &str| {
        let path = dir.join(format!("{tag}-{name}"));
        std::fs::write(&path, text).unwrap();
        path
    };
    Pki {
        ca: write("ca.pem", &ca.as_ref().pem()),
        server_cert: write("server.pem", &server_cert),
        server_key: write("server.key", &server_key),
        client_cert: write("client.pem", &client_cert),
        client_key: write("client.key", &client_key),
    }
}

/// Waits until `etcd` serves reads (etcd listens before it has a leader).
async fn ready(etcd: &Etcd) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match etcd.get("/ready").await {
            Ok(_) => return,
            Err(e) => assert!(
                Instant::now() < deadline,
                "etcd did not become ready: {e:#}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[test]
fn etcd_with_client_certificates_is_reachable_only_with_them() {
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(dir.path(), "good");
    let other = make_pki(dir.path(), "other");
    let path = |p: &Path| p.display().to_string();
    let Some(server) = EtcdServer::start_custom(
        "127.0.0.1",
        "https",
        &[
            "--cert-file".into(),
            path(&pki.server_cert),
            "--key-file".into(),
            path(&pki.server_key),
            "--client-cert-auth".into(),
            "--trusted-ca-file".into(),
            path(&pki.ca),
        ],
    ) else {
        return;
    };
    let endpoints = vec![server.endpoint.clone()];
    let full = EtcdSecurity {
        ca_file: Some(pki.ca.clone()),
        cert_file: Some(pki.client_cert.clone()),
        key_file: Some(pki.client_key.clone()),
        ..EtcdSecurity::default()
    };
    let timeout = Duration::from_secs(3);
    runtime().block_on(async {
        let etcd = Etcd::secured(&endpoints, timeout, &full).unwrap();
        ready(&etcd).await;
        etcd.put("/pgp/k", b"v", None).await.unwrap();
        assert_eq!(etcd.get("/pgp/k").await.unwrap().unwrap().value, b"v");

        // Without a client certificate etcd ends the handshake.
        let no_cert = EtcdSecurity {
            ca_file: Some(pki.ca.clone()),
            ..EtcdSecurity::default()
        };
        let e = Etcd::secured(&endpoints, timeout, &no_cert)
            .unwrap()
            .get("/pgp/k")
            .await
            .expect_err("etcd must refuse a client without a certificate");
        assert!(e.to_string().contains("no etcd endpoint answered"), "{e:#}");

        // A client certificate from another CA is refused too.
        let wrong_client = EtcdSecurity {
            ca_file: Some(pki.ca.clone()),
            cert_file: Some(other.client_cert.clone()),
            key_file: Some(other.client_key.clone()),
            ..EtcdSecurity::default()
        };
        let wrong = Etcd::secured(&endpoints, timeout, &wrong_client).unwrap();
        assert!(wrong.put("/pgp/k", b"forged", None).await.is_err());

        // A server whose certificate the configured CA did not sign is not trusted
        // (what a man in the middle would show).
        let wrong_ca = EtcdSecurity {
            ca_file: Some(other.ca.clone()),
            cert_file: Some(pki.client_cert.clone()),
            key_file: Some(pki.client_key.clone()),
            ..EtcdSecurity::default()
        };
        let e = Etcd::secured(&endpoints, timeout, &wrong_ca)
            .unwrap()
            .get("/pgp/k")
            .await
            .expect_err("a server certificate from another CA must not be trusted");
        assert!(e.to_string().contains("no etcd endpoint answered"), "{e:#}");

        // https without a CA is refused before any connection.
        let e = Etcd::secured(&endpoints, timeout, &EtcdSecurity::default())
            .err()
            .expect("https without a CA must be refused");
        assert!(e.to_string().contains("ha.etcd_ca_file"), "{e:#}");

        // Nothing the refused clients sent changed anything.
        assert_eq!(etcd.get("/pgp/k").await.unwrap().unwrap().value, b"v");
    });
}

/// Enables etcd's auth through the JSON gateway: root (required by etcd) and a user
/// `pgp` with read/write on every key.
async fn enable_auth(endpoint: &str, password: &str) {
    let http = reqwest::Client::new();
    let b64 = |s: &[u8]| base64::engine::general_purpose::STANDARD.encode(s);
    let call = |path: &'static str, body: serde_json::Value| {
        let request = http.post(format!("{endpoint}{path}")).json(&body);
        async move {
            let answer = request.send().await.unwrap();
            let status = answer.status();
            let text = answer.text().await.unwrap();
            assert!(status.is_success(), "{path}: {status} {text}");
        }
    };
    call(
        "/v3/auth/user/add",
        json!({"name": "root", "password": "root-password"}),
    )
    .await;
    call("/v3/auth/role/add", json!({"name": "root"})).await;
    call(
        "/v3/auth/user/grant",
        json!({"user": "root", "role": "root"}),
    )
    .await;
    call("/v3/auth/role/add", json!({"name": "pgp"})).await;
    call(
        "/v3/auth/role/grant",
        json!({"name": "pgp", "perm": {"permType": "READWRITE", "key": b64(b"/"), "range_end": b64(b"\0")}}),
    )
    .await;
    call(
        "/v3/auth/user/add",
        json!({"name": "pgp", "password": password}),
    )
    .await;
    call("/v3/auth/user/grant", json!({"user": "pgp", "role": "pgp"})).await;
    call("/v3/auth/enable", json!({})).await;
}

#[test]
fn etcd_with_auth_is_reachable_only_with_the_password_and_tokens_are_renewed() {
    let Some(server) = EtcdServer::start_custom(
        "127.0.0.1",
        "http",
        // Tokens expire quickly, so the client must log in again on its own.
        &["--auth-token-ttl".into(), "1".into()],
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let password_file = dir.path().join("etcd.password");
    std::fs::write(&password_file, "s3cret-pw\n").unwrap();
    let wrong_file = dir.path().join("wrong.password");
    std::fs::write(&wrong_file, "guess\n").unwrap();
    let endpoints = vec![server.endpoint.clone()];
    let timeout = Duration::from_secs(3);
    let with = |file: &Path| EtcdSecurity {
        user: Some("pgp".into()),
        password_file: Some(file.to_owned()),
        ..EtcdSecurity::default()
    };
    runtime().block_on(async {
        let anonymous = Etcd::new(&endpoints, timeout).unwrap();
        ready(&anonymous).await;
        enable_auth(&server.endpoint, "s3cret-pw").await;

        let etcd = Etcd::secured(&endpoints, timeout, &with(&password_file)).unwrap();
        etcd.put("/pgp/k", b"v", None).await.unwrap();
        let lease = etcd.grant(Duration::from_secs(5)).await.unwrap();
        // Past the token's TTL: the next calls log in again by themselves.
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(etcd.get("/pgp/k").await.unwrap().unwrap().value, b"v");
        assert!(etcd.keep_alive(lease.id).await.unwrap() > Duration::ZERO);

        // Without credentials, or with the wrong password: refused, saying so.
        let e = anonymous
            .put("/pgp/k", b"forged", None)
            .await
            .expect_err("etcd must refuse an anonymous write");
        assert!(e.to_string().contains("refused /v3/kv/put"), "{e:#}");
        let e = Etcd::secured(&endpoints, timeout, &with(&wrong_file))
            .unwrap()
            .put("/pgp/k", b"forged", None)
            .await
            .expect_err("etcd must refuse a wrong password");
        assert!(format!("{e:#}").contains("log in to etcd as pgp"), "{e:#}");
        assert_eq!(etcd.get("/pgp/k").await.unwrap().unwrap().value, b"v");
    });
}
