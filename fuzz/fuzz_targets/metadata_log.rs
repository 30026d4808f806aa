//! Metadata log replay: any file content is either replayed (a valid prefix, maybe a torn
//! last record) or refused with a line number; never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_meta::replay_bytes;

fuzz_target!(|data: &[u8]| {
    if let Ok(replay) = replay_bytes(data) {
        let valid = usize::try_from(replay.valid_len).expect("a prefix of the input");
        assert!(valid <= data.len());
        let again = replay_bytes(&data[..valid]).expect("the valid prefix replays");
        assert_eq!(again.records, replay.records);
        assert!(again.torn.is_none());
    }
});
