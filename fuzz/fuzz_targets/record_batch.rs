//! The record-batch view: iteration, header parsing, CRC and produce validation.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_protocol::batch::{validate_produce_batches, verify_crc, Batches};

fuzz_target!(|data: &[u8]| {
    for item in Batches::new(data) {
        match item {
            Ok((header, bytes)) => {
                let _ = header.compression();
                let _ = header.last_offset();
                let _ = verify_crc(bytes);
            }
            Err(_) => break,
        }
    }
    let _ = validate_produce_batches(data);
});
