//! A deterministic stand-in for the cargo-fuzz targets in `fuzz/`, run by `cargo test`:
//! pseudo-random byte strings through every decoder, which must return, never panic.

use bytes::BytesMut;

use super::{backend, frontend, split_frame, startup};
use crate::pooler::protocol::frame::LARGE_MESSAGE_LIMIT;

/// xorshift64*: tiny, seeded, so a failure reproduces exactly.
struct Xorshift(u64);

impl Xorshift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }

    fn below(&mut self, n: u64) -> usize {
        (self.next() % n) as usize
    }
}

const TAGS: &[u8] = b"BCdcfDEHFPpQSXR2KcGHWDIEVvnNAt1sZTx";

/// Either pure noise, or a plausible frame (known tag, correct length) with a noisy body so
/// the body decoders are reached, not just the length check.
fn input(rng: &mut Xorshift) -> Vec<u8> {
    let len = rng.below(64);
    if rng.next() & 1 == 0 {
        return rng.bytes(len);
    }
    let mut body = rng.bytes(len);
    // NULs make string fields terminate, so later fields get parsed too.
    for byte in body.iter_mut() {
        if rng.below(5) == 0 {
            *byte = 0;
        }
    }
    let mut frame = vec![TAGS[rng.below(TAGS.len() as u64)]];
    frame.extend_from_slice(&(len as i32 + 4).to_be_bytes());
    frame.extend_from_slice(&body);
    frame
}

fn decode_everything(bytes: &[u8]) {
    let _ = startup::decode(
        &mut BytesMut::from(bytes),
        startup::MAX_STARTUP_PACKET_LENGTH,
    );
    // As a startup packet: drop the tag so the length word comes first.
    let _ = startup::decode(&mut BytesMut::from(bytes.get(1..).unwrap_or_default()), 64);
    let _ = frontend::decode_sasl_initial_response(bytes);
    let _ = frontend::decode_password_message(bytes);
    let mut buf = BytesMut::from(bytes);
    while let Ok(Some(frame)) = split_frame(&mut buf, LARGE_MESSAGE_LIMIT) {
        let _ = frontend::decode(&frame);
        let _ = frontend::rewrite_bind_statement(&frame, b"renamed");
        let _ = frontend::decode_sasl_initial_response(frame.body());
        if let Ok(backend::BackendMessage::ErrorResponse(fields)) = backend::decode(&frame) {
            let _ = (fields.code(), fields.message(), fields.severity());
        }
    }
}

#[test]
fn twenty_thousand_random_inputs_never_panic() {
    let mut rng = Xorshift(0x9e37_79b9_7f4a_7c15);
    for _ in 0..20_000 {
        decode_everything(&input(&mut rng));
    }
}

/// Inputs that once looked risky, pinned as regressions (add fuzz crashes here).
#[test]
fn known_tricky_inputs_never_panic() {
    let cases: &[&[u8]] = &[
        b"",
        b"\0\0\0\0",
        b"\xff\xff\xff\xff\xff",
        b"P\0\0\0\x0a\0\0\x7f\xff",
        b"v\0\0\0\x0c\0\0\0\0\x7f\xff\xff\xff",
        b"\0\0\0\x0c\x04\xd2\x16\x2e\0\0\0\0",
        b"R\0\0\0\x08\0\0\0\x05",
        b"B\0\0\0\x04",
    ];
    for case in cases {
        decode_everything(case);
    }
}
