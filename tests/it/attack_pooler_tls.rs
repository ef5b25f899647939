//! Attack: an active man in the middle between an application and the pooler. It answers
//! the application's TLS with its own certificate and opens its own TLS to the pooler,
//! relaying everything. With SCRAM-SHA-256-PLUS (channel binding `tls-server-end-point`)
//! the application's proof is bound to the certificate it saw, so the pooler refuses the
//! relayed login; without binding the relay works, which shows the attacker is real.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::psql::{psql_command, run_sql};
use crate::support::{stderr_of, stdout_of, TestAgent};

const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

/// The attacker's TLS toward the pooler trusts any certificate.
#[derive(Debug)]
struct AcceptAnything(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAnything {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Relays one client: TLS with the attacker's certificate toward it, TLS toward the pooler.
async fn relay(
    mut client: TcpStream,
    pooler_port: u16,
    acceptor: tokio_rustls::TlsAcceptor,
    connector: tokio_rustls::TlsConnector,
) -> Option<()> {
    let mut request = [0u8; 8];
    client.read_exact(&mut request).await.ok()?;
    assert_eq!(request, SSL_REQUEST, "the client did not ask for TLS");
    client.write_all(b"S").await.ok()?;
    let mut client = acceptor.accept(client).await.ok()?;
    let mut upstream = TcpStream::connect(("127.0.0.1", pooler_port)).await.ok()?;
    upstream.write_all(&SSL_REQUEST).await.ok()?;
    let mut answer = [0u8; 1];
    upstream.read_exact(&mut answer).await.ok()?;
    assert_eq!(&answer, b"S", "the pooler refused TLS");
    let name = ServerName::try_from("localhost").ok()?;
    let mut upstream = connector.connect(name, upstream).await.ok()?;
    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
    Some(())
}

/// Starts the man in the middle on a free port; returns the port.
async fn start_mitm(pooler_port: u16) -> u16 {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let key = PrivateKeyDer::try_from(certified.signing_key.serialize_der()).unwrap();
    let server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![certified.cert.der().clone()], key)
        .unwrap();
    let client = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnything(provider)))
        .with_no_client_auth();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            tokio::spawn(relay(
                socket,
                pooler_port,
                acceptor.clone(),
                connector.clone(),
            ));
        }
    });
    port
}

fn psql(agent: &TestAgent, port: u16, channel_binding: &str) -> std::process::Output {
    let conninfo = format!(
        "host=127.0.0.1 port={port} user=shop dbname=shop password={} sslmode=require channel_binding={channel_binding}",
        agent.secret("shop", "password")
    );
    let mut cmd = psql_command();
    cmd.arg("-d").arg(conninfo);
    run_sql(cmd, "select current_user")
}

#[test]
fn channel_binding_defeats_a_tls_man_in_the_middle() {
    let agent = TestAgent::start_with_shop("");
    let pooler_port = agent.pooler_port();

    // Straight to the pooler: -PLUS is offered and works, and plain SCRAM still does.
    for binding in ["require", "prefer", "disable"] {
        let out = psql(&agent, pooler_port, binding);
        assert!(
            out.status.success(),
            "channel_binding={binding}: {}",
            stderr_of(&out)
        );
        assert_eq!(stdout_of(&out).trim(), "shop");
    }

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mitm_port = rt.block_on(start_mitm(pooler_port));

    // Without channel binding the relay logs in: the attacker is in the middle for real.
    let out = psql(&agent, mitm_port, "disable");
    assert!(
        out.status.success(),
        "the relay itself does not work: {}",
        stderr_of(&out)
    );
    // With it (libpq's default "prefer" chooses -PLUS when offered), the pooler sees a
    // binding for the attacker's certificate and refuses.
    for binding in ["require", "prefer"] {
        let out = psql(&agent, mitm_port, binding);
        assert!(
            !out.status.success(),
            "channel_binding={binding} logged in through a man in the middle"
        );
        let error = stderr_of(&out);
        assert!(error.contains("channel binding"), "{error}");
    }
    drop(rt);
}
