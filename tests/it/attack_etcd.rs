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
use pgplatform::testing::{Etcd, EtcdSecurity};
use serde_json::json;

use crate::support::etcd::EtcdServer;
use crate::support::pki::make_pki;
use crate::support::pooler::runtime;

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
        let e = wrong.put("/pgp/k", b"forged", None).await.unwrap_err();
        assert!(e.to_string().contains("no etcd endpoint answered"), "{e:#}");

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
async fn enable_auth(http: &reqwest::Client, endpoint: &str, password: &str) {
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
        enable_auth(&reqwest::Client::new(), &server.endpoint, "s3cret-pw").await;

        let etcd = Etcd::secured(&endpoints, timeout, &with(&password_file)).unwrap();
        etcd.put("/pgp/k", b"v", None).await.unwrap();
        let lease = etcd.grant(Duration::from_secs(5)).await.unwrap();
        // The passage of time is under test: past the token's TTL, the next calls log in
        // again by themselves.
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

/// A TCP listener the attacker owns: counts connections and keeps every byte sent to it.
struct Trap {
    port: u16,
    received: std::sync::Arc<std::sync::Mutex<(usize, Vec<u8>)>>,
}

impl Trap {
    fn open() -> Trap {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let received = std::sync::Arc::new(std::sync::Mutex::new((0usize, Vec::new())));
        let sink = received.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                sink.lock().unwrap().0 += 1;
                let sink = sink.clone();
                std::thread::spawn(move || {
                    use std::io::Read;
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = stream.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        sink.lock().unwrap().1.extend_from_slice(&buf[..n]);
                    }
                });
            }
        });
        Trap { port, received }
    }

    fn connections(&self) -> usize {
        self.received.lock().unwrap().0
    }

    fn bytes(&self) -> String {
        String::from_utf8_lossy(&self.received.lock().unwrap().1).into_owned()
    }
}

/// One HA node (the primary) on a real etcd, and its cluster secret's path.
struct OneNode {
    agent: crate::support::TestAgent,
    read_only_port: u16,
    secret: PathBuf,
    etcd: EtcdServer,
    _secret_dir: tempfile::TempDir,
    _turn: std::sync::MutexGuard<'static, ()>,
}

fn one_node() -> Option<OneNode> {
    let turn = crate::support::cluster::one_cluster_at_a_time();
    let etcd = EtcdServer::start()?;
    let secret_dir = tempfile::tempdir().unwrap();
    let secret = secret_dir.path().join("cluster.secret");
    let read_only_port = crate::support::ports::free_port();
    let agent = crate::support::TestAgent::start_with(&crate::support::cluster::ha_toml(
        &etcd.endpoint,
        "node1",
        &secret,
        read_only_port,
        "",
    ));
    crate::support::wait_for(Duration::from_secs(30), "node1 leads", || {
        (agent.cli_json(&["cluster", "status", "--json"])["leader"] == "node1").then_some(())
    });
    Some(OneNode {
        agent,
        read_only_port,
        secret,
        etcd,
        _secret_dir: secret_dir,
        _turn: turn,
    })
}

#[test]
fn a_forged_member_record_gets_no_request_no_credential_and_no_tenant_traffic() {
    let Some(node) = one_node() else {
        return;
    };
    let trap = Trap::open();
    let attacker = Etcd::new(
        std::slice::from_ref(&node.etcd.endpoint),
        Duration::from_secs(3),
    )
    .unwrap();
    // As an etcd writer would: replicas that stream, far ahead, whose PostgreSQL and
    // API are the attacker's listener. One in the old plain form, one in the sealed form
    // with a MAC the attacker had to make up.
    let forged = |name: &str| {
        json!({
            "name": name, "role": "replica", "state": "streaming",
            "host": "127.0.0.1", "postgres_port": trap.port,
            "api_url": format!("http://127.0.0.1:{}", trap.port), "pooler_port": trap.port,
            "timeline": 1, "wal_position": u64::MAX / 2, "replay_position": u64::MAX / 2,
            "nofailover": false, "following": "node1", "system_identifier": "",
        })
    };
    let sealed_guess = json!({
        "record": forged("evil2").to_string(),
        "mac": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([7u8; 32]),
    });
    // And a genuine record of a member long gone (a decommissioned node whose address
    // the attacker now holds), kept and written back: sealed, but old.
    let secret = pgplatform::testing::ClusterSecret::load(&node.secret, false).unwrap();
    let mut ghost: pgplatform::testing::MemberRecord =
        serde_json::from_value(forged("ghost")).unwrap();
    ghost.published_at = pgplatform::testing::unix_now() - 3600;
    let ghost_key = "/pgplatform/main/members/ghost";
    let ghost = pgplatform::testing::seal(&secret, ghost_key, &ghost).unwrap();
    runtime().block_on(async {
        attacker.put(ghost_key, &ghost, None).await.unwrap();
        attacker
            .put(
                "/pgplatform/main/members/evil",
                forged("evil").to_string().as_bytes(),
                None,
            )
            .await
            .unwrap();
        attacker
            .put(
                "/pgplatform/main/members/evil2",
                sealed_guess.to_string().as_bytes(),
                None,
            )
            .await
            .unwrap();
    });

    // The HA loop has read every forgery: it logs each as untrusted.
    crate::support::wait_for(
        Duration::from_secs(30),
        "the forgeries to be logged",
        || {
            let log = node.agent.log_contents();
            let warned: Vec<&str> = log
                .lines()
                .filter(|l| l.contains("untrusted member record"))
                .collect();
            let evil2 = warned.iter().any(|l| l.contains("members/evil2"));
            let ghost = warned.iter().any(|l| l.contains("members/ghost"));
            let evil = warned
                .iter()
                .any(|l| l.contains("members/evil") && !l.contains("members/evil2"));
            (evil && evil2 && ghost).then_some(())
        },
    );

    // A tenant change on the primary notifies every replica's agent (signed): none
    // goes to the forged ones.
    node.agent.cli_ok(&["tenant", "create", "shop"]);
    let url = node.agent.tenant_url("shop");
    // The read-only listener spreads over streaming replicas: none is the forged one.
    let read_only = url.replace(
        &format!(":{}/", node.agent.pooler_port()),
        &format!(":{}/", node.read_only_port),
    );
    assert_ne!(read_only, url);
    let answers: Vec<Option<String>> = (0..6)
        .map(|_| crate::support::psql::run_query(&read_only, "SELECT pg_is_in_recovery()"))
        .collect();
    // An absence is under test: give a late, asynchronous contact a second to show up.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        trap.connections(),
        0,
        "the forged record's address was contacted; it received: {:?}",
        trap.bytes()
    );
    // Reads were served by the real primary.
    assert!(
        answers.iter().all(|a| a.as_deref() == Some("f")),
        "{answers:?}"
    );
    // It is not a member.
    let status = node.agent.cli_json(&["cluster", "status", "--json"]);
    let names: Vec<&str> = status["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["name"].as_str())
        .collect();
    assert_eq!(names, vec!["node1"], "{status:#}");
}

/// The signed headers for `path`, as an agent of the cluster makes them.
fn signed(
    secret: &pgplatform::testing::ClusterSecret,
    to: &str,
    path: &str,
    body: &[u8],
    time: Option<i64>,
) -> Vec<(&'static str, String)> {
    use pgplatform::testing::{sign, sign_at, Request};
    let request = Request {
        from: "node2",
        to,
        method: "POST",
        path_and_query: path,
        body,
    };
    match time {
        Some(t) => sign_at(secret, &request, t),
        None => sign(secret, &request),
    }
}

fn post(url: &str, headers: &[(&'static str, String)], bearer: Option<&str>, body: &[u8]) -> u16 {
    runtime().block_on(async {
        let mut request = reqwest::Client::new()
            .post(url)
            .header("content-type", "application/json")
            .body(body.to_vec());
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
        }
        request.send().await.unwrap().status().as_u16()
    })
}

#[test]
fn replayed_signed_requests_and_the_old_bearer_token_are_refused() {
    let Some(node) = one_node() else {
        return;
    };
    let secret = pgplatform::testing::ClusterSecret::load(&node.secret, false).unwrap();
    let api = node.agent.api_url();
    let etcd = Etcd::new(
        std::slice::from_ref(&node.etcd.endpoint),
        Duration::from_secs(3),
    )
    .unwrap();
    let paused = || {
        runtime()
            .block_on(etcd.get("/pgplatform/main/paused"))
            .unwrap()
            .is_some()
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;

    // The token agents used to send each other, derived from the cluster secret as the
    // old code did: no longer accepted.
    let old_token = {
        use hmac::{KeyInit, Mac};
        let raw = std::fs::read(&node.secret).unwrap();
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(raw.trim_ascii()).unwrap();
        mac.update(b"pgplatform agent token");
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    };
    assert_eq!(
        post(&format!("{api}/cluster/pause"), &[], Some(&old_token), b""),
        401
    );
    assert!(!paused(), "the old bearer token paused the cluster");

    // A request signed 31 s ago (a capture replayed after the window): refused.
    let late = signed(&secret, "node1", "/cluster/pause", b"", Some(now - 31));
    assert_eq!(post(&format!("{api}/cluster/pause"), &late, None, b""), 401);
    assert!(!paused());
    // Signed for another node, or with the body or path changed: refused.
    let elsewhere = signed(&secret, "node2", "/cluster/pause", b"", None);
    assert_eq!(
        post(&format!("{api}/cluster/pause"), &elsewhere, None, b""),
        401
    );
    let resume = signed(&secret, "node1", "/cluster/resume", b"", None);
    assert_eq!(
        post(&format!("{api}/cluster/pause"), &resume, None, b""),
        401
    );
    let body = signed(&secret, "node1", "/pooler/resume", b"{}", None);
    assert_eq!(
        post(
            &format!("{api}/pooler/resume"),
            &body,
            None,
            br#"{"primary":"evil"}"#
        ),
        401
    );
    assert!(!paused());

    // A fresh, genuine request works once (so the refusals above are the checks, not a
    // broken signature); the same request captured and sent again is refused.
    let genuine = signed(&secret, "node1", "/cluster/pause", b"", None);
    assert_eq!(
        post(&format!("{api}/cluster/pause"), &genuine, None, b""),
        200
    );
    assert!(paused());
    let resume = signed(&secret, "node1", "/cluster/resume", b"", None);
    assert_eq!(
        post(&format!("{api}/cluster/resume"), &resume, None, b""),
        200
    );
    assert!(!paused());
    assert_eq!(
        post(&format!("{api}/cluster/pause"), &genuine, None, b""),
        401,
        "a replayed signed request was accepted"
    );
    assert!(!paused(), "the replay paused the cluster");
    let log = node.agent.log_contents();
    assert!(
        log.contains("already received once"),
        "{}",
        node.agent.log_tail(30)
    );
    assert!(
        log.contains("outside the 30s window"),
        "{}",
        node.agent.log_tail(30)
    );
}

/// An https "agent" with its own self-signed certificate: the decrypted bytes of every
/// request it received, and the SHA-256 of its certificate.
async fn tls_agent() -> (u16, String, std::sync::Arc<std::sync::Mutex<Vec<u8>>>) {
    use rustls_pki_types::pem::PemObject;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
    let der = certified.cert.der().to_vec();
    let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(
        certified.signing_key.serialize_pem().as_bytes(),
    )
    .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![certified.cert.der().clone()], key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = received.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let Ok(mut tls) = acceptor.accept(tcp).await else {
                continue;
            };
            let mut buf = vec![0u8; 8192];
            if let Ok(n) = tls.read(&mut buf).await {
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
            let _ = tls
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                .await;
            let _ = tls.shutdown().await;
        }
    });
    (port, pgplatform::testing::sha256_hex(&der), received)
}

#[test]
fn an_https_peer_gets_a_signed_request_only_with_the_certificate_its_record_pins() {
    let dir = tempfile::tempdir().unwrap();
    let secret =
        pgplatform::testing::ClusterSecret::load(&dir.path().join("cluster.secret"), true).unwrap();
    let from = pgplatform::testing::Sender {
        secret: &secret,
        name: "node1",
    };
    runtime().block_on(async {
        let (port, pin, received) = tls_agent().await;
        let record = |pin: Option<String>| pgplatform::testing::MemberRecord {
            name: "node2".into(),
            role: "replica".into(),
            state: "streaming".into(),
            host: "127.0.0.1".into(),
            postgres_port: 1,
            api_url: format!("https://127.0.0.1:{port}"),
            pooler_port: None,
            timeline: 1,
            wal_position: 0,
            replay_position: 0,
            nofailover: false,
            following: None,
            system_identifier: String::new(),
            api_cert_sha256: pin,
            published_at: 0,
        };
        let call = |member: pgplatform::testing::MemberRecord| {
            let from = &from;
            async move {
                pgplatform::testing::call_as(
                    from,
                    &member,
                    reqwest::Method::POST,
                    "/pooler/pause",
                    b"{}".to_vec(),
                    Duration::from_secs(3),
                )
                .await
            }
        };
        // A man in the middle (any other certificate), or a record that pins nothing:
        // no request leaves.
        let e = call(record(Some("ab".repeat(32)))).await.unwrap_err();
        assert!(format!("{e:#}").contains("node2"), "{e:#}");
        let e = call(record(None)).await.unwrap_err();
        assert!(format!("{e:#}").contains("pins no certificate"), "{e:#}");
        // An absence is under test: a request in flight would have arrived by now.
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            received.lock().unwrap().is_empty(),
            "a request reached an unpinned server: {:?}",
            String::from_utf8_lossy(&received.lock().unwrap())
        );
        // The pinned certificate: the signed request arrives.
        let answer = call(record(Some(pin))).await.unwrap();
        assert_eq!(answer.status().as_u16(), 200);
        let text = String::from_utf8_lossy(&received.lock().unwrap()).to_lowercase();
        assert!(text.contains("x-pgplatform-signature"), "{text}");
        assert!(!text.contains("authorization"), "{text}");
    });
}

#[test]
fn an_agent_runs_on_an_etcd_that_requires_a_client_certificate_and_a_password() {
    let turn = crate::support::cluster::one_cluster_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(dir.path(), "etcd");
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
    let tls = EtcdSecurity {
        ca_file: Some(pki.ca.clone()),
        cert_file: Some(pki.client_cert.clone()),
        key_file: Some(pki.client_key.clone()),
        ..EtcdSecurity::default()
    };
    let password_file = dir.path().join("etcd.password");
    std::fs::write(&password_file, "agent-pw\n").unwrap();
    let endpoints = vec![server.endpoint.clone()];
    runtime().block_on(async {
        ready(&Etcd::secured(&endpoints, Duration::from_secs(3), &tls).unwrap()).await;
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(pgplatform::testing::tls_config(&tls).unwrap())
            .build()
            .unwrap();
        enable_auth(&http, &server.endpoint, "agent-pw").await;
    });
    let secret = dir.path().join("cluster.secret");
    let agent = crate::support::TestAgent::start_with(&crate::support::cluster::ha_toml(
        &server.endpoint,
        "node1",
        &secret,
        crate::support::ports::free_port(),
        &format!(
            "etcd_ca_file = \"{}\"\netcd_cert_file = \"{}\"\netcd_key_file = \"{}\"\n\
             etcd_user = \"pgp\"\netcd_password_file = \"{}\"\n",
            pki.ca.display(),
            pki.client_cert.display(),
            pki.client_key.display(),
            password_file.display()
        ),
    ));
    crate::support::wait_for(Duration::from_secs(30), "node1 leads", || {
        (agent.cli_json(&["cluster", "status", "--json"])["leader"] == "node1").then_some(())
    });
    runtime().block_on(async {
        // The agent's keys are there, readable with the credentials, not without.
        let with_password = EtcdSecurity {
            user: Some("pgp".into()),
            password_file: Some(password_file.clone()),
            ..tls.clone()
        };
        let etcd = Etcd::secured(&endpoints, Duration::from_secs(3), &with_password).unwrap();
        let leader = etcd.get("/pgplatform/main/leader").await.unwrap().unwrap();
        assert_eq!(leader.value, b"node1");
        let anonymous = Etcd::secured(&endpoints, Duration::from_secs(3), &tls).unwrap();
        let e = anonymous.get("/pgplatform/main/leader").await.unwrap_err();
        assert!(e.to_string().contains("refused /v3/kv/range"), "{e:#}");
    });
    drop(agent);
    drop(turn);
}

#[test]
fn replication_verifies_the_primary_certificate_and_requires_scram_channel_binding() {
    let turn = crate::support::cluster::one_cluster_at_a_time();
    let Some(etcd) = EtcdServer::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let pki = make_pki(dir.path(), "pg");
    // PostgreSQL (running as postgres) reads its key and the replica's root certificate.
    let postgres = nix::unistd::User::from_name("postgres").unwrap().unwrap();
    for file in [&pki.server_key, &pki.server_cert, &pki.ca] {
        nix::unistd::chown(file, Some(postgres.uid), Some(postgres.gid)).unwrap();
    }
    std::fs::set_permissions(
        &pki.server_key,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let secret = dir.path().join("cluster.secret");
    let toml = |name: &str| {
        format!(
            "{}\n[postgres.parameters]\nssl_cert_file = \"{}\"\nssl_key_file = \"{}\"\n",
            crate::support::cluster::ha_toml(
                &etcd.endpoint,
                name,
                &secret,
                0,
                &format!(
                    "replication_sslmode = \"verify-full\"\nreplication_sslrootcert = \"{}\"\n",
                    pki.ca.display()
                ),
            ),
            pki.server_cert.display(),
            pki.server_key.display(),
        )
    };
    let node1 = crate::support::TestAgent::start_with(&toml("node1"));
    crate::support::wait_for(Duration::from_secs(30), "node1 leads", || {
        (node1.cli_json(&["cluster", "status", "--json"])["leader"] == "node1").then_some(())
    });
    let node2 = crate::support::TestAgent::start_with(&toml("node2"));
    crate::support::wait_for(Duration::from_secs(60), "node2 streams", || {
        let status = node1.cli_json(&["cluster", "status", "--json"]);
        (crate::support::cluster::streaming_replicas(&status) == 1).then_some(())
    });
    // The walsender's connection is TLS, and the replica asked for verify-full with
    // channel binding (SCRAM-SHA-256-PLUS, or no connection at all).
    let ssl = node1.admin_psql_in(
        "postgres",
        "SELECT s.ssl FROM pg_stat_replication r JOIN pg_stat_ssl s USING (pid)",
    );
    assert_eq!(ssl, "t");
    let conninfo = node2.admin_psql_in("postgres", "SHOW primary_conninfo");
    assert!(conninfo.contains("sslmode=verify-full"), "{conninfo}");
    assert!(conninfo.contains("channel_binding=require"), "{conninfo}");

    // A primary whose certificate the replica's root does not vouch for (what an impostor
    // at the primary's address would show) gets no replication connection.
    let other = make_pki(dir.path(), "other");
    nix::unistd::chown(&other.ca, Some(postgres.uid), Some(postgres.gid)).unwrap();
    let mut node2 = node2;
    let distrusting = node2.extra_toml().replace(
        &pki.ca.display().to_string(),
        &other.ca.display().to_string(),
    );
    node2.set_extra_toml(&distrusting);
    node2.restart();
    let refused = |log: String| log.contains("certificate verify failed").then_some(());
    let seen =
        crate::support::try_wait_for(Duration::from_secs(60), || refused(node2.log_contents()));
    assert!(seen.is_some(), "no refusal logged:\n{}", node2.log_tail(30));
    let streaming = node1.admin_psql_in("postgres", "SELECT count(*) FROM pg_stat_replication");
    assert_eq!(
        streaming, "0",
        "node2 streams from a primary its root does not trust"
    );
    drop((node2, node1));
    drop(turn);
}
