//! Frame + header + body decoding of one request, exactly as a connection sees it.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use sluice_protocol::frame::{check_request_size, DEFAULT_MAX_REQUEST_BYTES};
use sluice_protocol::request::decode_request;

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let size = [data[0], data[1], data[2], data[3]];
    if let Ok(len) = check_request_size(size, DEFAULT_MAX_REQUEST_BYTES) {
        let body = &data[4..];
        if body.len() >= len {
            let _ = decode_request(Bytes::copy_from_slice(&body[..len]));
        }
    }
    // Also decode whatever follows the size as a frame, to reach the body decoders often.
    let _ = decode_request(Bytes::copy_from_slice(&data[4..]));
});
