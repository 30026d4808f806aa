//! `__consumer_offsets` records as read back from disk: the key and value decoders and the
//! loader over whole chunks of log. Any bytes: an answer, never a panic, never going backwards.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use sluice_broker::coordinator::offsets::{
    decode_key, decode_value, replay_batches, LoadStats, OffsetCache,
};

fuzz_target!(|data: &[u8]| {
    let split = data.first().map_or(0, |&b| usize::from(b)).min(data.len());
    let (key, value) = data.split_at(split);
    let _ = decode_key(Bytes::copy_from_slice(key));
    let _ = decode_value(Bytes::copy_from_slice(value));
    let mut cache = OffsetCache::new();
    let mut stats = LoadStats::default();
    let outcome = replay_batches(data, 0, 0, &mut cache, &mut stats);
    assert!(outcome.next >= 0);
});
