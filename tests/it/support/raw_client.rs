//! A client that speaks PostgreSQL's protocol by hand over TCP (logged in as `shop` by
//! SCRAM), for tests that send what no client library would.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bytes::BytesMut;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use postgres_protocol::message::{backend, frontend};

/// A client speaking the protocol by hand over TCP, logged in as `shop` by SCRAM.
pub struct RawClient {
    pub stream: TcpStream,
    pub buf: BytesMut,
}

impl RawClient {
    pub fn login(port: u16, password: &str) -> RawClient {
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut raw = RawClient {
            stream,
            buf: BytesMut::new(),
        };
        let mut out = BytesMut::new();
        frontend::startup_message([("user", "shop"), ("database", "shop")], &mut out).unwrap();
        raw.stream.write_all(&out).unwrap();
        let mut scram = None;
        loop {
            let mut out = BytesMut::new();
            match raw.next_message() {
                backend::Message::AuthenticationSasl(_) => {
                    let exchange =
                        ScramSha256::new(password.as_bytes(), ChannelBinding::unsupported());
                    frontend::sasl_initial_response("SCRAM-SHA-256", exchange.message(), &mut out)
                        .unwrap();
                    scram = Some(exchange);
                }
                backend::Message::AuthenticationSaslContinue(body) => {
                    let exchange = scram.as_mut().expect("SASL started");
                    exchange.update(body.data()).unwrap();
                    frontend::sasl_response(exchange.message(), &mut out).unwrap();
                }
                backend::Message::AuthenticationSaslFinal(body) => {
                    let exchange = scram.as_mut().expect("SASL started");
                    exchange.finish(body.data()).unwrap();
                }
                backend::Message::ErrorResponse(_) => panic!("login on port {port} refused"),
                backend::Message::ReadyForQuery(_) => return raw,
                _ => {}
            }
            if !out.is_empty() {
                raw.stream.write_all(&out).unwrap();
            }
        }
    }

    pub fn next_message(&mut self) -> backend::Message {
        loop {
            if let Some(message) = backend::Message::parse(&mut self.buf).unwrap() {
                return message;
            }
            let mut chunk = [0u8; 4096];
            let n = self.stream.read(&mut chunk).unwrap();
            assert!(n > 0, "the connection closed");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}
