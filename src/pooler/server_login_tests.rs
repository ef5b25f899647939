//! Attack: a fake PostgreSQL over TCP (what an etcd writer could name as the primary) that
//! answers a login without proving it holds the role's secret. The pooler must refuse it
//! and send it nothing after the login: no tenant traffic reaches a fake primary.

use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::*;
use crate::pooler::protocol::backend::{encode as be, TransactionStatus};
use crate::pooler::scram::{ClientKey, Verifier};

/// What the fake server does once it has the startup packet.
#[derive(Clone, Copy, Debug)]
enum Fake {
    /// AuthenticationOk at once, as a `trust` line would answer.
    OkAtOnce,
    /// No authentication message at all: straight to ReadyForQuery.
    ReadyAtOnce,
    /// Starts SCRAM, then says ok without a server-final message.
    OkWithoutServerFinal,
    /// Completes SCRAM with a made-up server signature.
    WrongServerSignature,
}

async fn read_startup(socket: &mut TcpStream) -> Option<()> {
    let mut len = [0u8; 4];
    socket.read_exact(&mut len).await.ok()?;
    let mut rest = vec![
        0u8;
        usize::try_from(u32::from_be_bytes(len))
            .ok()?
            .checked_sub(4)?
    ];
    socket.read_exact(&mut rest).await.ok()?;
    Some(())
}

async fn read_message(socket: &mut TcpStream) -> Option<Vec<u8>> {
    let mut header = [0u8; 5];
    socket.read_exact(&mut header).await.ok()?;
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]);
    let mut body = vec![0u8; usize::try_from(len).ok()?.checked_sub(4)?];
    socket.read_exact(&mut body).await.ok()?;
    Some(body)
}

/// Plays `fake` toward one pooler connection, then returns every byte the pooler sent
/// after the login (a tenant's query would show up here) until it closed.
async fn fake_primary(listener: TcpListener, fake: Fake) -> Vec<u8> {
    let (mut socket, _) = listener.accept().await.unwrap();
    read_startup(&mut socket).await.unwrap();
    let mut out = BytesMut::new();
    match fake {
        Fake::OkAtOnce => be::authentication_ok(&mut out),
        Fake::ReadyAtOnce => {}
        Fake::OkWithoutServerFinal | Fake::WrongServerSignature => {
            be::authentication_sasl(&mut out, &[scram::MECHANISM]);
            socket.write_all(&out).await.unwrap();
            out.clear();
            let initial = read_message(&mut socket).await.unwrap();
            let at = initial.windows(2).rposition(|w| w == b"r=").unwrap();
            let client_nonce = String::from_utf8(initial[at + 2..].to_vec()).unwrap();
            let server_first = format!("r={client_nonce}fake,s=c2FsdHNhbHRzYWx0c2FsdA==,i=4096");
            be::authentication_sasl_continue(&mut out, server_first.as_bytes());
            socket.write_all(&out).await.unwrap();
            out.clear();
            read_message(&mut socket).await.unwrap();
            if matches!(fake, Fake::WrongServerSignature) {
                let forged = format!("v={}", BASE64.encode([0u8; 32]));
                be::authentication_sasl_final(&mut out, forged.as_bytes());
            }
            be::authentication_ok(&mut out);
        }
    }
    be::parameter_status(&mut out, "server_version", "15.0");
    be::backend_key_data(&mut out, 42, &[1, 2, 3, 4]);
    be::ready_for_query(&mut out, TransactionStatus::Idle);
    // The pooler may already have closed; what it sent afterwards is what matters.
    let _ = socket.write_all(&out).await;
    let mut after = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), socket.read_to_end(&mut after)).await;
    after
}

#[tokio::test]
async fn a_server_that_skips_or_fakes_scram_gets_no_connection_and_no_traffic() {
    let verifier = Verifier::from_password(b"tenant password", b"0123456789abcdef", 4096);
    let credentials = Credentials {
        client_key: ClientKey::new([9; 32]),
        server_key: verifier.server_key(),
    };
    let key = PoolKey {
        database: "shop".into(),
        user: "shop".into(),
    };
    for fake in [
        Fake::OkAtOnce,
        Fake::ReadyAtOnce,
        Fake::OkWithoutServerFinal,
        Fake::WrongServerSignature,
    ] {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (_route_tx, route) = watch::channel(vec![PgTarget::Remote {
            host: "127.0.0.1".into(),
            port,
        }]);
        let target = ServerTarget {
            socket_dir: std::env::temp_dir(),
            port,
            route: Some(route),
            next: Arc::default(),
        };
        let server = tokio::spawn(fake_primary(listener, fake));
        let result =
            ServerConn::connect(&target, &key, &credentials, Duration::from_secs(10)).await;
        let error = match result {
            Ok(_) => panic!("{fake:?}: the pooler accepted a server that did not prove SCRAM"),
            Err(e) => e,
        };
        assert!(
            matches!(error, ServerError::Protocol(_)),
            "{fake:?}: {error}"
        );
        let after_login = server.await.unwrap();
        // Only SCRAM messages ('p') may have gone out; no query, no Terminate-and-reuse.
        assert!(
            after_login.is_empty(),
            "{fake:?}: the fake server received {after_login:?} after its login"
        );
    }
}
