//! The record-batch view and the log validator: iteration, header parsing, CRC, produce
//! validation, and the record walk through every codec.
//!
//! Random bytes almost never carry a valid CRC32C, which would stop every input at the CRC
//! check; so each input is also tried with its CRC fixed, which lets the fuzzer explore the
//! record walk (varints, lengths, counts, decompression) the produce path runs.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_protocol::batch::{update_crc, validate_produce_batches, verify_crc, Batches};
use sluice_protocol::records::first_at_or_after;
use sluice_protocol::validate::walk_records;

/// Small, so a bomb is caught quickly; the walk's behaviour does not depend on the size.
const LIMIT: usize = 1 << 20;

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

    let mut fixed = data.to_vec();
    if update_crc(&mut fixed).is_ok() && validate_produce_batches(&fixed).is_ok() {
        let mut seen = 0i64;
        if let Ok(summary) = walk_records(&fixed, LIMIT, |_| seen += 1) {
            assert_eq!(i64::from(summary.records), seen);
            assert!(summary.uncompressed_bytes <= LIMIT);
        }
        let _ = first_at_or_after(&fixed, 0);
    }
});
