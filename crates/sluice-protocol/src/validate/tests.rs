use std::io::Write;

use super::*;
use crate::batch::testing::Rng;
use crate::batch::testing::{build_batch, build_batch_with, BatchOptions};
use crate::batch::{update_crc, validate_produce_batches};

const CODECS: [Compression; 5] = [
    Compression::None,
    Compression::Gzip,
    Compression::Snappy,
    Compression::Lz4,
    Compression::Zstd,
];

const LIMIT: usize = 1 << 20;

fn code(c: Compression) -> i16 {
    match c {
        Compression::None => 0,
        Compression::Gzip => 1,
        Compression::Snappy => 2,
        Compression::Lz4 => 3,
        Compression::Zstd => 4,
    }
}

/// Compresses `raw` as Kafka producers do for `codec`.
pub(crate) fn compress(codec: Compression, raw: &[u8]) -> Vec<u8> {
    match codec {
        Compression::None => raw.to_vec(),
        Compression::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(raw).unwrap();
            e.finish().unwrap()
        }
        Compression::Snappy => {
            // xerial framing: magic, version 1, compatible version 1, [len][block]...
            let mut out = SNAPPY_MAGIC.to_vec();
            out.extend_from_slice(&1u32.to_be_bytes());
            out.extend_from_slice(&1u32.to_be_bytes());
            for chunk in raw.chunks(32 * 1024) {
                let block = snap::raw::Encoder::new().compress_vec(chunk).unwrap();
                out.extend_from_slice(&(block.len() as u32).to_be_bytes());
                out.extend_from_slice(&block);
            }
            out
        }
        Compression::Lz4 => {
            let mut e = lz4::EncoderBuilder::new().build(Vec::new()).unwrap();
            e.write_all(raw).unwrap();
            let (out, r) = e.finish();
            r.unwrap();
            out
        }
        Compression::Zstd => zstd::encode_all(raw, 1).unwrap(),
    }
}

/// Replaces the records of `batch` (as built uncompressed) by `records_bytes` compressed with
/// `codec`, fixing length, attributes and CRC. The header's counts are kept as they are.
pub(crate) fn with_records(batch: &[u8], codec: Compression, records_bytes: &[u8]) -> Vec<u8> {
    let mut out = batch[..BATCH_HEADER_LEN].to_vec();
    out.extend_from_slice(&compress(codec, records_bytes));
    let len = (out.len() - 12) as i32;
    out[8..12].copy_from_slice(&len.to_be_bytes());
    let attributes = i16::from_be_bytes([out[21], out[22]]) & !0x07 | code(codec);
    out[21..23].copy_from_slice(&attributes.to_be_bytes());
    update_crc(&mut out).unwrap();
    out
}

/// A valid batch of `records` compressed with `codec`.
fn batch_in(codec: Compression, records: &[crate::batch::testing::TestRecord<'_>]) -> Vec<u8> {
    let plain = build_batch(0, records);
    with_records(&plain, codec, &plain[BATCH_HEADER_LEN..])
}

fn three() -> Vec<crate::batch::testing::TestRecord<'static>> {
    vec![
        (Some(b"k1"), Some(b"v1"), 1_000),
        (None, Some(b"v2"), 1_005),
        (Some(b"k3"), None, 1_002),
    ]
}

fn walk_all(batch: &[u8]) -> Result<(WalkSummary, Vec<RecordView>), RecordsError> {
    let mut seen = Vec::new();
    let s = walk_records(batch, LIMIT, |r| seen.push(*r))?;
    Ok((s, seen))
}

#[test]
fn walks_every_codec_and_reports_each_record() {
    for codec in CODECS {
        let b = batch_in(codec, &three());
        validate_produce_batches(&b).unwrap();
        let (summary, seen) = walk_all(&b).unwrap_or_else(|e| panic!("{codec:?}: {e}"));
        assert_eq!(summary.records, 3, "{codec:?}");
        assert_eq!(summary.max_timestamp, 1_005);
        assert_eq!(
            seen.iter()
                .map(|r| (r.index, r.timestamp, r.has_key(), r.value_len))
                .collect::<Vec<_>>(),
            vec![
                (0, 1_000, true, 2),
                (1, 1_005, false, 2),
                (2, 1_002, true, -1)
            ],
            "{codec:?}"
        );
    }
}

#[test]
fn a_lying_record_count_is_refused_for_every_codec() {
    // The attack from the issue: valid CRC, recordsCount 2^31-1 and lastOffsetDelta 2^31-2,
    // one record behind them.
    for codec in CODECS {
        let plain = build_batch(0, &[(None, Some(b"x"), 1)]);
        let mut b = with_records(&plain, codec, &plain[BATCH_HEADER_LEN..]);
        b[23..27].copy_from_slice(&(i32::MAX - 1).to_be_bytes());
        b[57..61].copy_from_slice(&i32::MAX.to_be_bytes());
        update_crc(&mut b).unwrap();
        validate_produce_batches(&b).expect("the header alone is consistent");
        assert_eq!(
            walk_all(&b).unwrap_err(),
            RecordsError::CountMismatch {
                claimed: i32::MAX,
                found: 1
            },
            "{codec:?}"
        );
    }
    // Fewer claimed than present.
    let plain = build_batch(0, &three());
    let mut b = plain.clone();
    b[23..27].copy_from_slice(&1i32.to_be_bytes());
    b[57..61].copy_from_slice(&2i32.to_be_bytes());
    update_crc(&mut b).unwrap();
    assert_eq!(
        walk_all(&b).unwrap_err(),
        RecordsError::CountMismatch {
            claimed: 2,
            found: 3
        }
    );
}

/// The records of a batch with one record whose bytes are patched by `f` (after the record's
/// own length varint, which the builder writes as one byte for short records).
fn patched_record(f: impl Fn(&mut Vec<u8>)) -> Vec<u8> {
    let plain = build_batch(0, &[(Some(b"key"), Some(b"value"), 5)]);
    let mut records = plain[BATCH_HEADER_LEN..].to_vec();
    f(&mut records);
    let mut b = plain[..BATCH_HEADER_LEN].to_vec();
    b.extend_from_slice(&records);
    let len = (b.len() - 12) as i32;
    b[8..12].copy_from_slice(&len.to_be_bytes());
    update_crc(&mut b).unwrap();
    b
}

#[test]
fn lying_lengths_inside_a_record_are_refused() {
    // Layout of the one record: [len][attr][ts delta][offset delta][key len=6 (zigzag 3)]key...
    let cases: Vec<(&str, Vec<u8>)> = vec![
        // Record length larger than the bytes behind it.
        ("record length", patched_record(|r| r[0] = 0x7e)),
        // Record length shorter than its fields.
        ("short record length", patched_record(|r| r[0] -= 2)),
        // Key length of 2^30 inside a small record.
        (
            "key length",
            patched_record(|r| {
                r.splice(4..5, [0x80, 0x80, 0x80, 0x80, 0x08]);
                r[0] += 4;
            }),
        ),
        // Negative key length below -1.
        ("negative key", patched_record(|r| r[4] = 0x05)),
        // Offset delta 5 for the first record.
        ("offset delta", patched_record(|r| r[3] = 10)),
        // A varint that never ends.
        (
            "endless varint",
            patched_record(|r| {
                for b in &mut r[1..] {
                    *b = 0xff;
                }
            }),
        ),
        // Trailing bytes after the last record.
        ("trailing", patched_record(|r| r.push(0))),
    ];
    for (what, b) in cases {
        validate_produce_batches(&b).unwrap_or_else(|e| panic!("{what}: header {e}"));
        let err = walk_all(&b).expect_err(what);
        assert!(
            matches!(
                err,
                RecordsError::Malformed { .. }
                    | RecordsError::OffsetDelta { .. }
                    | RecordsError::CountMismatch { .. }
            ),
            "{what}: {err:?}"
        );
    }
}

#[test]
fn a_header_count_past_the_record_is_refused_quickly() {
    // Header count 2^30 (zigzag varint) in place of 0: the walk stops at the record end.
    let b = patched_record(|r| {
        let last = r.len() - 1;
        r.splice(last.., [0x80, 0x80, 0x80, 0x80, 0x08]);
        r[0] += 4;
    });
    assert!(matches!(
        walk_all(&b),
        Err(RecordsError::Malformed { index: 0, .. })
    ));
}

#[test]
fn decompression_bombs_are_refused_at_the_limit() {
    // Records that claim one record but inflate to 8 MiB of zeros (a limit of 1 MiB).
    let zeros = vec![0u8; 8 << 20];
    let plain = build_batch(0, &[(None, Some(b"x"), 1)]);
    for codec in [
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ] {
        let b = with_records(&plain, codec, &zeros);
        assert!(b.len() < 1 << 20, "{codec:?} bomb is small on the wire");
        let err = walk_all(&b).unwrap_err();
        // Zeros parse as records of length 0: the walk fails on structure or on size first,
        // never by inflating everything.
        assert!(
            matches!(
                err,
                RecordsError::TooLarge { .. } | RecordsError::Malformed { .. }
            ),
            "{codec:?}: {err:?}"
        );
    }
    // Valid records, many of them, past the limit: refused as too large.
    let value = vec![b'a'; 1000];
    let records: Vec<_> = (0..2000).map(|i| (None, Some(&value[..]), i)).collect();
    let big = build_batch(0, &records);
    for codec in [
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ] {
        let b = with_records(&big, codec, &big[BATCH_HEADER_LEN..]);
        assert_eq!(
            walk_all(&b).unwrap_err(),
            RecordsError::TooLarge { limit: LIMIT },
            "{codec:?}"
        );
        // Under a larger limit the same batch is fine.
        assert_eq!(walk_records(&b, 4 << 20, |_| {}).unwrap().records, 2000);
    }
    // A raw snappy block that claims 2^31 bytes allocates nothing.
    let mut claim = Vec::new();
    let mut n: u64 = 1 << 31;
    while n >= 0x80 {
        claim.push((n as u8) | 0x80);
        n >>= 7;
    }
    claim.push(n as u8);
    let mut b = plain[..BATCH_HEADER_LEN].to_vec();
    b.extend_from_slice(&claim);
    b.extend_from_slice(&[0; 8]);
    let len = (b.len() - 12) as i32;
    b[8..12].copy_from_slice(&len.to_be_bytes());
    b[22] |= 2;
    update_crc(&mut b).unwrap();
    assert!(matches!(
        walk_all(&b),
        Err(RecordsError::TooLarge { .. } | RecordsError::Decompress { .. })
    ));
}

#[test]
fn corrupt_compressed_streams_are_errors() {
    let plain = build_batch(0, &three());
    for codec in [
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ] {
        let good = with_records(&plain, codec, &plain[BATCH_HEADER_LEN..]);
        let middle = BATCH_HEADER_LEN + (good.len() - BATCH_HEADER_LEN) / 2;
        for cut in [BATCH_HEADER_LEN, BATCH_HEADER_LEN + 3, middle] {
            let mut b = good[..cut].to_vec();
            let len = (b.len() - 12) as i32;
            b[8..12].copy_from_slice(&len.to_be_bytes());
            update_crc(&mut b).unwrap();
            assert!(walk_all(&b).is_err(), "{codec:?} cut at {cut}");
        }
    }
}

/// The bounded mutation pass the gate runs on stable Rust (the cargo-fuzz target
/// `record_batch` does the same, guided by coverage): valid batches of every codec, mutated
/// inside the CRC range and re-checksummed so the walk itself is exercised, never panic, never
/// report more records than the header claims, and never exceed the limit.
#[test]
fn mutated_batches_never_panic() {
    let mut rng = Rng(0x5eed_cafe_f00d_0001);
    let value = [b'v'; 40];
    let records: Vec<_> = (0..20)
        .map(|i| (Some(&b"key"[..]), Some(&value[..]), 100 + i))
        .collect();
    let plain = build_batch(0, &records);
    let bases: Vec<Vec<u8>> = CODECS
        .iter()
        .map(|&c| with_records(&plain, c, &plain[BATCH_HEADER_LEN..]))
        .collect();
    for round in 0..6_000 {
        let mut b = bases[round % bases.len()].clone();
        for _ in 0..=(rng.next() % 4) {
            let i = BATCH_HEADER_LEN - 4 + (rng.next() as usize) % (b.len() - 57);
            b[i] = rng.next() as u8;
        }
        if rng.next().is_multiple_of(4) {
            let cut = BATCH_HEADER_LEN + (rng.next() as usize) % (b.len() - BATCH_HEADER_LEN);
            b.truncate(cut);
            let len = (b.len() - 12) as i32;
            b[8..12].copy_from_slice(&len.to_be_bytes());
        }
        let _ = update_crc(&mut b);
        let mut seen = 0i64;
        if let Ok(s) = walk_records(&b, 64 << 10, |_| seen += 1) {
            assert_eq!(i64::from(s.records), seen);
            assert!(s.uncompressed_bytes <= 64 << 10);
        }
    }
}

#[test]
fn transactional_and_producer_fields_do_not_matter_to_the_walk() {
    let b = build_batch_with(
        &BatchOptions {
            producer_id: 7,
            producer_epoch: 1,
            base_sequence: 0,
            ..BatchOptions::default()
        },
        &three(),
    );
    assert_eq!(walk_all(&b).unwrap().0.records, 3);
}

#[test]
fn the_reused_zstd_context_recovers_from_a_bad_batch() {
    // The thread's zstd context is reused: a batch that fails half-way (cut stream, bomb) must
    // not leave state behind that breaks the next good one.
    let plain = build_batch(0, &three());
    let good = with_records(&plain, Compression::Zstd, &plain[BATCH_HEADER_LEN..]);
    let zeros = vec![0u8; 4 << 20];
    let bomb = with_records(&plain, Compression::Zstd, &zeros);
    let mut cut = good[..good.len() - 4].to_vec();
    let len = (cut.len() - 12) as i32;
    cut[8..12].copy_from_slice(&len.to_be_bytes());
    update_crc(&mut cut).unwrap();
    for bad in [&cut, &bomb] {
        assert!(walk_records(bad, 1 << 16, |_| {}).is_err());
        assert_eq!(walk_records(&good, LIMIT, |_| {}).unwrap().records, 3);
    }
}
