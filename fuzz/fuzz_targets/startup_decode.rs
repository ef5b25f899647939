//! Fuzzes the start of a client connection: one startup packet, then whatever tagged messages
//! follow, exactly as the pooler reads them. Decoding must return, never panic.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use pgplatform::protocol::{frontend, split_frame_limited, startup};

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    let Ok(Some(packet)) = startup::decode(&mut buf, startup::MAX_STARTUP_PACKET_LENGTH) else {
        return;
    };
    let _ = packet.param("user");
    while let Ok(Some(frame)) = split_frame_limited(&mut buf, frontend::max_body_length) {
        if let Ok(frontend::FrontendMessage::PasswordMessage { body }) = frontend::decode(&frame) {
            let _ = frontend::decode_sasl_initial_response(&body);
            let _ = frontend::decode_password_message(&body);
        }
    }
});
