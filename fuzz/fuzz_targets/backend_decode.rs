//! Fuzzes server-to-client messages: framing, typed decoding and the error-field accessors the
//! pooler reads. Must never panic.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use pgplatform::protocol::frame::LARGE_MESSAGE_LIMIT;
use pgplatform::protocol::{backend, split_frame};

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    while let Ok(Some(frame)) = split_frame(&mut buf, LARGE_MESSAGE_LIMIT) {
        match backend::decode(&frame) {
            Ok(backend::BackendMessage::ErrorResponse(fields))
            | Ok(backend::BackendMessage::NoticeResponse(fields)) => {
                let _ = (fields.severity(), fields.code(), fields.message());
                let _ = (fields.detail(), fields.hint());
            }
            _ => {}
        }
    }
});
