//! Fuzzes client-to-server messages: framing with PostgreSQL's per-message limits, typed
//! decoding, and the Bind rewrite the pooler applies to named statements. Must never panic.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use pgplatform::protocol::{frontend, split_frame_limited};

fuzz_target!(|data: &[u8]| {
    let _ = frontend::decode_sasl_initial_response(data);
    let _ = frontend::decode_password_message(data);
    let mut buf = BytesMut::from(data);
    while let Ok(Some(frame)) = split_frame_limited(&mut buf, frontend::max_body_length) {
        let _ = frontend::decode(&frame);
        let _ = frontend::rewrite_bind_statement(&frame, b"pgplatform_1");
    }
});
