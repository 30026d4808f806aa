//! Behaviour of `Log` through its public API, on real files in temp directories.

use sluice_protocol::batch::testing::Rng;
use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sluice_log::{AppendInfo, FaultInjectingIo, Log, LogConfig, LogError};
use sluice_protocol::batch::testing::build_batch;
use sluice_protocol::batch::{verify_crc, BatchHeader, Batches};
use sluice_types::{LeaderEpoch, Offset};

/// A batch of `n` records with timestamp `ts`, values of `value_len` bytes.
fn batch(n: usize, ts: i64, value_len: usize) -> Vec<u8> {
    let value = vec![b'v'; value_len];
    let records: Vec<_> = (0..n).map(|_| (None, Some(&value[..]), ts)).collect();
    build_batch(0, &records)
}

fn small_config() -> LogConfig {
    LogConfig {
        segment_bytes: 1000,
        index_interval_bytes: 150,
        ..LogConfig::default()
    }
}

fn append(log: &Log, n: usize, ts: i64) -> AppendInfo {
    log.append(&mut batch(n, ts, 40), LeaderEpoch(5), 0)
        .unwrap()
}

/// Headers of every batch the log returns from `from` on.
fn headers(log: &Log, from: i64) -> Vec<BatchHeader> {
    let r = log
        .read(Offset(from), usize::MAX, Offset(i64::MAX), true)
        .unwrap();
    Batches::new(&r.data).map(|b| b.unwrap().0).collect()
}

fn segment_files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    v.sort();
    v
}

fn last_segment(dir: &Path) -> PathBuf {
    segment_files(dir, "log").pop().unwrap()
}

#[test]
fn append_read_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogConfig::default(), false).unwrap();
    assert_eq!(
        (log.log_start_offset(), log.log_end_offset()),
        (Offset(0), Offset(0))
    );
    assert!(log.dir().join("00000000000000000000.log").exists());

    let mut a = batch(3, 100, 10);
    let mut b = batch(2, 200, 5000);
    let mut c = batch(1, 150, 0);
    let ia = log.append(&mut a, LeaderEpoch(7), 0).unwrap();
    assert_eq!(
        (ia.base_offset, ia.last_offset, ia.max_timestamp),
        (Offset(0), Offset(2), 100)
    );
    let ib = log.append(&mut b, LeaderEpoch(7), 0).unwrap();
    assert_eq!((ib.base_offset, ib.last_offset), (Offset(3), Offset(4)));
    let ic = log.append(&mut c, LeaderEpoch(8), 0).unwrap();
    assert_eq!(
        (ic.base_offset, ic.last_offset, ic.log_start_offset),
        (Offset(5), Offset(5), Offset(0))
    );
    assert_eq!(log.log_end_offset(), Offset(6));

    // The caller's buffers were rewritten in place; the log returns exactly those bytes.
    let h = BatchHeader::parse(&b).unwrap();
    assert_eq!((h.base_offset, h.partition_leader_epoch), (3, 7));
    let all = log
        .read(Offset(0), usize::MAX, Offset(i64::MAX), false)
        .unwrap();
    assert_eq!(all.data, [&a[..], &b[..], &c[..]].concat());
    assert_eq!(
        (all.log_start_offset, all.log_end_offset),
        (Offset(0), Offset(6))
    );
    for item in Batches::new(&all.data) {
        verify_crc(item.unwrap().1).unwrap();
    }
    // An offset inside a batch returns the whole batch containing it.
    assert_eq!(
        log.read(Offset(4), usize::MAX, Offset(i64::MAX), false)
            .unwrap()
            .data,
        [&b[..], &c[..]].concat()
    );
    assert_eq!(
        log.read(Offset(5), usize::MAX, Offset(i64::MAX), false)
            .unwrap()
            .data,
        c
    );
    // At the log end: empty, not an error.
    assert!(log
        .read(Offset(6), usize::MAX, Offset(i64::MAX), false)
        .unwrap()
        .data
        .is_empty());
}

#[test]
fn append_rejects_malformed_input_without_writing() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogConfig::default(), false).unwrap();
    let mut half = batch(1, 1, 10);
    half.truncate(30);
    assert!(matches!(
        log.append(&mut half, LeaderEpoch(0), 0),
        Err(LogError::InvalidBatch(_))
    ));
    assert!(matches!(
        log.append(&mut [], LeaderEpoch(0), 0),
        Err(LogError::InvalidBatch(_))
    ));
    let mut v1 = batch(1, 1, 10);
    v1[16] = 1;
    assert!(matches!(
        log.append(&mut v1, LeaderEpoch(0), 0),
        Err(LogError::InvalidBatch(_))
    ));
    assert_eq!(log.log_end_offset(), Offset(0));
    append(&log, 1, 1);
    assert_eq!(log.log_end_offset(), Offset(1));
}

#[test]
fn multiple_batches_in_one_append_get_consecutive_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogConfig::default(), false).unwrap();
    let mut buf = batch(2, 10, 5);
    buf.extend_from_slice(&batch(3, 30, 5));
    buf.extend_from_slice(&batch(1, 20, 5));
    let info = log.append(&mut buf, LeaderEpoch(1), 0).unwrap();
    assert_eq!(
        (info.base_offset, info.last_offset, info.max_timestamp),
        (Offset(0), Offset(5), 30)
    );
    let bases: Vec<_> = headers(&log, 0).iter().map(|h| h.base_offset).collect();
    assert_eq!(bases, [0, 2, 5]);
}

#[test]
fn reads_span_segments() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config(), false).unwrap();
    let mut expected = Vec::new();
    for i in 0..60 {
        let mut b = batch(1 + i % 3, i as i64, 20 + i * 3);
        log.append(&mut b, LeaderEpoch(0), 0).unwrap();
        expected.extend_from_slice(&b);
    }
    assert!(log.segment_count() > 5, "{} segments", log.segment_count());
    assert_eq!(segment_files(dir.path(), "log").len(), log.segment_count());
    let all = log
        .read(Offset(0), usize::MAX, Offset(i64::MAX), false)
        .unwrap();
    assert_eq!(all.data, expected);
    // Every offset finds the batch containing it, wherever it lives.
    let hs = headers(&log, 0);
    for offset in 0..log.log_end_offset().get() {
        let first = headers(&log, offset)[0];
        assert!(first.base_offset <= offset && offset <= first.last_offset());
        let idx = hs
            .iter()
            .position(|h| h.base_offset == first.base_offset)
            .unwrap();
        assert_eq!(headers(&log, offset).len(), hs.len() - idx);
    }
}

#[test]
fn rolls_by_size_and_by_time() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_bytes: 500,
        segment_ms: 1000,
        ..LogConfig::default()
    };
    let log = Log::open(dir.path(), config, false).unwrap();
    let mut b = batch(1, 0, 300);
    // A batch bigger than the segment still goes into an empty segment.
    log.append(&mut batch(1, 0, 600), LeaderEpoch(0), 0)
        .unwrap();
    assert_eq!(log.segment_count(), 1);
    log.append(&mut b.clone(), LeaderEpoch(0), 0).unwrap();
    assert_eq!(log.segment_count(), 2, "size roll");
    assert!(dir.path().join("00000000000000000001.log").exists());

    let log2_dir = tempfile::tempdir().unwrap();
    let log2 = Log::open(log2_dir.path(), config, false).unwrap();
    let small = batch(1, 0, 10);
    log2.append(&mut small.clone(), LeaderEpoch(0), 10_000)
        .unwrap();
    log2.append(&mut small.clone(), LeaderEpoch(0), 10_500)
        .unwrap();
    log2.append(&mut small.clone(), LeaderEpoch(0), 11_000)
        .unwrap();
    assert_eq!(
        log2.segment_count(),
        1,
        "exactly segment_ms old: no roll yet"
    );
    log2.append(&mut small.clone(), LeaderEpoch(0), 11_001)
        .unwrap();
    assert_eq!(log2.segment_count(), 2, "time roll");
    assert!(log2_dir.path().join("00000000000000000003.log").exists());
    log2.append(&mut b, LeaderEpoch(0), 11_002).unwrap();
    assert_eq!(log2.segment_count(), 2);
}

#[test]
fn rolls_when_the_index_is_full() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        index_interval_bytes: 0,
        // Room for 4 time-index entries (12 bytes each, one per index point here).
        segment_index_bytes: 12 * 4,
        ..LogConfig::default()
    };
    let log = Log::open(dir.path(), config, false).unwrap();
    for ts in 0..20 {
        append(&log, 1, ts);
    }
    // Every batch but a segment's first is indexed: 5 batches per segment.
    assert_eq!(log.segment_count(), 4);
    assert_eq!(headers(&log, 0).len(), 20);
}

#[test]
fn read_bounds() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config(), false).unwrap();
    let mut sizes = Vec::new();
    for _ in 0..10 {
        let mut b = batch(2, 1, 50);
        sizes.push(b.len());
        log.append(&mut b, LeaderEpoch(0), 0).unwrap();
    }
    // max_offset: only batches whose last offset is below it (the high watermark).
    let hs = headers(&log, 0);
    assert_eq!(hs.len(), 10);
    let r = log.read(Offset(0), usize::MAX, Offset(7), false).unwrap();
    let got: Vec<_> = Batches::new(&r.data)
        .map(|b| b.unwrap().0.last_offset())
        .collect();
    assert_eq!(got, [1, 3, 5]);
    assert!(
        log.read(Offset(6), usize::MAX, Offset(7), true)
            .unwrap()
            .data
            .is_empty(),
        "batch 6-7 straddles"
    );
    assert!(log
        .read(Offset(7), usize::MAX, Offset(7), true)
        .unwrap()
        .data
        .is_empty());
    // max_bytes: whole batches only.
    let r = log
        .read(Offset(0), sizes[0] + sizes[1] + 10, Offset(i64::MAX), false)
        .unwrap();
    assert_eq!(r.data.len(), sizes[0] + sizes[1]);
    let r = log
        .read(Offset(0), sizes[0] + sizes[1], Offset(i64::MAX), false)
        .unwrap();
    assert_eq!(r.data.len(), sizes[0] + sizes[1]);
    // min_one: the first batch even if larger than max_bytes; without it, nothing.
    let r = log.read(Offset(3), 1, Offset(i64::MAX), true).unwrap();
    assert_eq!(Batches::new(&r.data).count(), 1);
    assert_eq!(BatchHeader::parse(&r.data).unwrap().base_offset, 2);
    assert!(log
        .read(Offset(3), 1, Offset(i64::MAX), false)
        .unwrap()
        .data
        .is_empty());
    let r = log.read(Offset(0), 0, Offset(i64::MAX), true).unwrap();
    assert_eq!(r.data.len(), sizes[0]);
    let r = log
        .read(Offset(0), sizes[0] + 1, Offset(i64::MAX), true)
        .unwrap();
    assert_eq!(r.data.len(), sizes[0]);
}

#[test]
fn out_of_range() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogConfig::default(), false).unwrap();
    append(&log, 3, 1);
    assert!(matches!(
        log.read(Offset(4), 100, Offset(i64::MAX), true),
        Err(LogError::OffsetOutOfRange {
            offset: Offset(4),
            log_start: Offset(0),
            log_end: Offset(3)
        })
    ));
    assert!(matches!(
        log.read(Offset(-1), 100, Offset(i64::MAX), true),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    assert!(log
        .read(Offset(3), 100, Offset(i64::MAX), true)
        .unwrap()
        .data
        .is_empty());
}

/// Brute-force answer over all batches: (base offset, max ts) of the first with max ts >= ts.
fn model_offset_for_timestamp(hs: &[BatchHeader], ts: i64) -> Option<(i64, i64)> {
    hs.iter()
        .find(|h| h.max_timestamp >= ts)
        .map(|h| (h.base_offset, h.max_timestamp))
}

#[test]
fn timestamps() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config(), false).unwrap();
    assert_eq!(log.max_timestamp(), None);
    assert_eq!(log.offset_for_timestamp(0).unwrap(), None);
    append(&log, 2, 100); // 0-1
    append(&log, 1, 200); // 2
    append(&log, 1, 150); // 3
    append(&log, 1, 300); // 4
    append(&log, 1, 300); // 5
    assert_eq!(
        log.offset_for_timestamp(50).unwrap(),
        Some((Offset(0), 100))
    );
    assert_eq!(
        log.offset_for_timestamp(150).unwrap(),
        Some((Offset(2), 200))
    );
    assert_eq!(
        log.offset_for_timestamp(201).unwrap(),
        Some((Offset(4), 300))
    );
    assert_eq!(log.offset_for_timestamp(301).unwrap(), None);
    assert_eq!(
        log.max_timestamp(),
        Some((300, Offset(4))),
        "first batch carrying the max"
    );

    // Many batches over many segments and index points, against the brute-force model.
    let mut ts_seq = 1000i64;
    for i in 0..200 {
        ts_seq += [7, -3, 11, 0, -20, 2][i % 6];
        append(&log, 1 + i % 2, ts_seq);
    }
    assert!(log.segment_count() > 10);
    let check = |log: &Log| {
        let hs = headers(log, 0);
        for ts in (0..1500).step_by(7) {
            assert_eq!(
                log.offset_for_timestamp(ts).unwrap(),
                model_offset_for_timestamp(&hs, ts).map(|(o, t)| (Offset(o), t)),
                "ts {ts}"
            );
        }
        let max = hs.iter().map(|h| h.max_timestamp).max().unwrap();
        let carrier = hs
            .iter()
            .find(|h| h.max_timestamp == max)
            .unwrap()
            .base_offset;
        assert_eq!(log.max_timestamp(), Some((max, Offset(carrier))));
    };
    check(&log);
    log.close().unwrap();
    drop(log);
    let log = Log::open(dir.path(), small_config(), true).unwrap();
    check(&log);
    drop(log);
    let log = Log::open(dir.path(), small_config(), false).unwrap();
    check(&log);
}

#[test]
fn reopen_clean_and_unclean() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config(), false).unwrap();
    for i in 0..30 {
        append(&log, 2, i);
    }
    let before = log
        .read(Offset(0), usize::MAX, Offset(i64::MAX), false)
        .unwrap()
        .data;
    log.close().unwrap();
    drop(log);

    let log = Log::open(dir.path(), small_config(), true).unwrap();
    assert_eq!(log.log_end_offset(), Offset(60));
    assert_eq!(log.durable_offset(), Offset(60));
    assert_eq!(
        log.read(Offset(0), usize::MAX, Offset(i64::MAX), false)
            .unwrap()
            .data,
        before
    );
    assert_eq!(append(&log, 1, 99).base_offset, Offset(60));
    drop(log); // no close: a crash, as far as the files know

    let log = Log::open(dir.path(), small_config(), false).unwrap();
    assert_eq!(log.log_end_offset(), Offset(61));
    assert_eq!(
        log.durable_offset(),
        Offset(61),
        "recovery syncs what it keeps"
    );
    assert_eq!(append(&log, 1, 99).base_offset, Offset(61));
    drop(log);

    // A clean-shutdown claim the checkpoint does not back is not trusted blindly.
    let log = Log::open(dir.path(), small_config(), true).unwrap();
    assert_eq!(log.log_end_offset(), Offset(62));
}

/// Writes a log of `n` single-record batches, flushes, drops it without close. Returns the
/// batches' sizes.
fn crashed_log(dir: &Path, config: LogConfig, n: usize) -> Vec<usize> {
    let log = Log::open(dir, config, false).unwrap();
    let mut sizes = Vec::new();
    for i in 0..n {
        let mut b = batch(1, i as i64, 30 + i);
        sizes.push(b.len());
        log.append(&mut b, LeaderEpoch(0), 0).unwrap();
    }
    log.flush(log.log_end_offset()).unwrap();
    sizes
}

fn assert_recovers_to(dir: &Path, config: LogConfig, clean: bool, leo: i64) {
    let log = Log::open(dir, config, clean).unwrap();
    assert_eq!(log.log_end_offset(), Offset(leo));
    let hs = headers(&log, 0);
    assert_eq!(hs.len() as i64, leo);
    for (i, h) in hs.iter().enumerate() {
        assert_eq!(h.base_offset, i as i64);
    }
    assert_eq!(
        append(&log, 1, 1).base_offset,
        Offset(leo),
        "appends continue after the last valid batch"
    );
    let r = log
        .read(Offset(leo), usize::MAX, Offset(i64::MAX), false)
        .unwrap();
    verify_crc(&r.data).unwrap();
}

#[test]
fn torn_tail_garbage_appended() {
    let dir = tempfile::tempdir().unwrap();
    crashed_log(dir.path(), LogConfig::default(), 5);
    let mut f = OpenOptions::new()
        .append(true)
        .open(last_segment(dir.path()))
        .unwrap();
    std::io::Write::write_all(&mut f, &[0xAB; 100]).unwrap();
    assert_recovers_to(dir.path(), LogConfig::default(), false, 5);
}

#[test]
fn torn_tail_half_a_batch() {
    let dir = tempfile::tempdir().unwrap();
    let sizes = crashed_log(dir.path(), LogConfig::default(), 5);
    let path = last_segment(dir.path());
    let len = fs::metadata(&path).unwrap().len();
    let f = OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(len - sizes[4] as u64 / 2).unwrap();
    assert_recovers_to(dir.path(), LogConfig::default(), false, 4);
}

#[test]
fn torn_tail_flipped_crc_byte() {
    let dir = tempfile::tempdir().unwrap();
    crashed_log(dir.path(), LogConfig::default(), 5);
    let path = last_segment(dir.path());
    let mut bytes = fs::read(&path).unwrap();
    let n = bytes.len();
    bytes[n - 3] ^= 0x40; // inside the last batch's records
    fs::write(&path, &bytes).unwrap();
    assert_recovers_to(dir.path(), LogConfig::default(), false, 4);
}

#[test]
fn clean_open_still_cuts_a_bad_tail() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogConfig::default(), false).unwrap();
    for i in 0..5 {
        append(&log, 1, i);
    }
    log.close().unwrap();
    drop(log);
    let mut f = OpenOptions::new()
        .append(true)
        .open(last_segment(dir.path()))
        .unwrap();
    std::io::Write::write_all(&mut f, &[0; 30]).unwrap();
    assert_recovers_to(dir.path(), LogConfig::default(), true, 5);
}

#[test]
fn corruption_in_an_earlier_segment_drops_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let config = small_config();
    let log = Log::open(dir.path(), config, false).unwrap();
    for i in 0..40 {
        append(&log, 1, i);
    }
    // No flush at all: the recovery point is 0 and recovery scans everything.
    drop(log);
    let segs = segment_files(dir.path(), "log");
    assert!(segs.len() >= 4);
    let victim = &segs[1];
    let first_of_victim: i64 = victim
        .file_stem()
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let mut bytes = fs::read(victim).unwrap();
    let h = BatchHeader::parse(&bytes).unwrap();
    let second = h.total_size();
    bytes[second + 30] ^= 1; // the second batch of segment 1
    fs::write(victim, &bytes).unwrap();

    assert_recovers_to(dir.path(), config, false, first_of_victim + 1);
    assert_eq!(
        segment_files(dir.path(), "log").len(),
        2,
        "later segments deleted"
    );
    assert_eq!(segment_files(dir.path(), "index").len(), 2);
}

#[test]
fn recovery_starts_at_the_checkpoint_segment() {
    let dir = tempfile::tempdir().unwrap();
    let config = small_config();
    let log = Log::open(dir.path(), config, false).unwrap();
    for i in 0..40 {
        append(&log, 1, i);
        log.flush(log.log_end_offset()).unwrap();
    }
    let leo = log.log_end_offset().get();
    drop(log);
    let rp: i64 = fs::read_to_string(dir.path().join("recovery-point"))
        .unwrap()
        .lines()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert!(rp > 0 && rp <= leo);
    // Damage a batch below the checkpoint's segment: trusted, not rescanned (headers intact).
    let segs = segment_files(dir.path(), "log");
    let mut bytes = fs::read(&segs[0]).unwrap();
    let n = bytes.len();
    bytes[n - 1] ^= 1;
    fs::write(&segs[0], &bytes).unwrap();
    // ... while a torn tail in the active segment is cut.
    let mut f = OpenOptions::new()
        .append(true)
        .open(segs.last().unwrap())
        .unwrap();
    std::io::Write::write_all(&mut f, &[7; 70]).unwrap();
    let log = Log::open(dir.path(), config, false).unwrap();
    assert_eq!(log.log_end_offset(), Offset(leo));
}

#[test]
fn corrupt_or_short_index_is_rebuilt() {
    let config = LogConfig {
        index_interval_bytes: 100,
        ..LogConfig::default()
    };
    for damage in 0..4 {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), config, false).unwrap();
        for i in 0..50 {
            append(&log, 1 + i % 2, i as i64);
        }
        log.close().unwrap();
        let expected = log
            .read(Offset(0), usize::MAX, Offset(i64::MAX), false)
            .unwrap()
            .data;
        let answers: Vec<_> = (0..60)
            .map(|ts| log.offset_for_timestamp(ts).unwrap())
            .collect();
        drop(log);
        let index = dir.path().join("00000000000000000000.index");
        let timeindex = dir.path().join("00000000000000000000.timeindex");
        let good = fs::read(&index).unwrap();
        assert!(good.len() >= 8 * 10);
        match damage {
            0 => fs::write(&index, vec![0xFF; good.len()]).unwrap(),
            1 => fs::write(&index, &good[..good.len() / 2]).unwrap(),
            2 => fs::write(&index, [&good[..], &[0u8; 24][..]].concat()).unwrap(),
            _ => {
                fs::write(&index, &good[..13]).unwrap();
                fs::write(&timeindex, b"garbage").unwrap();
            }
        }
        for clean in [true, false] {
            let log = Log::open(dir.path(), config, clean).unwrap();
            assert_eq!(
                log.read(Offset(0), usize::MAX, Offset(i64::MAX), false)
                    .unwrap()
                    .data,
                expected
            );
            for (ts, answer) in answers.iter().enumerate() {
                assert_eq!(&log.offset_for_timestamp(ts as i64).unwrap(), answer);
            }
            for offset in 0..log.log_end_offset().get() {
                let h = headers(&log, offset)[0];
                assert!(h.base_offset <= offset && offset <= h.last_offset());
            }
            log.close().unwrap();
        }
        assert_eq!(
            fs::read(&index).unwrap(),
            good,
            "damage {damage}: index rebuilt exactly"
        );
    }
}

#[test]
fn truncate_to() {
    let dir = tempfile::tempdir().unwrap();
    let config = small_config();
    let log = Log::open(dir.path(), config, false).unwrap();
    for i in 0..20 {
        append(&log, 3, 100 + i); // batch i holds offsets 3i..3i+2
    }
    log.flush(Offset(60)).unwrap();
    let segs_before = log.segment_count();
    assert!(segs_before > 3);
    log.truncate_to(Offset(31)).unwrap(); // inside batch 10 (30..32): the whole batch goes
    assert_eq!(log.log_end_offset(), Offset(30));
    assert!(log.durable_offset() <= Offset(30));
    assert!(log.segment_count() < segs_before);
    assert_eq!(segment_files(dir.path(), "log").len(), log.segment_count());
    assert_eq!(headers(&log, 0).len(), 10);
    assert_eq!(headers(&log, 29)[0].base_offset, 27);
    assert_eq!(log.max_timestamp(), Some((109, Offset(27))));
    assert_eq!(log.offset_for_timestamp(110).unwrap(), None);
    assert_eq!(append(&log, 1, 500).base_offset, Offset(30));
    log.truncate_to(Offset(100)).unwrap(); // beyond the end: nothing
    assert_eq!(log.log_end_offset(), Offset(31));
    log.truncate_to(Offset(30)).unwrap();
    assert_eq!(log.log_end_offset(), Offset(30));
    drop(log);
    for clean in [false, true] {
        let log = Log::open(dir.path(), config, clean).unwrap();
        assert_eq!(log.log_end_offset(), Offset(30));
        assert_eq!(log.max_timestamp(), Some((109, Offset(27))));
        log.close().unwrap();
    }

    let log = Log::open(dir.path(), config, true).unwrap();
    log.truncate_to(Offset(0)).unwrap();
    assert_eq!(
        (
            log.log_start_offset(),
            log.log_end_offset(),
            log.segment_count()
        ),
        (Offset(0), Offset(0), 1)
    );
    assert_eq!(log.max_timestamp(), None);
    assert_eq!(append(&log, 2, 1).base_offset, Offset(0));
    drop(log);
    let log = Log::open(dir.path(), config, false).unwrap();
    assert_eq!(log.log_end_offset(), Offset(2));
}

#[test]
fn group_commit_from_many_threads() {
    let dir = tempfile::tempdir().unwrap();
    let io = Arc::new(FaultInjectingIo::new());
    let log = Arc::new(Log::open_with_io(dir.path(), small_config(), false, io.clone()).unwrap());
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let log = log.clone();
            std::thread::spawn(move || {
                for i in 0..40 {
                    let info = log
                        .append(&mut batch(1, t * 100 + i, 20), LeaderEpoch(0), 0)
                        .unwrap();
                    log.flush(info.last_offset.plus(1)).unwrap();
                    assert!(log.durable_offset() > info.last_offset);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(log.log_end_offset(), Offset(320));
    assert_eq!(log.durable_offset(), Offset(320));
    // Each flush syncs at most the few files it finds dirty; with sharing, fewer.
    let syncs = io.sync_count();
    assert!(syncs > 0 && syncs <= 320 * 4, "{syncs} fsyncs");
    drop(log);
    let log = Log::open(dir.path(), small_config(), false).unwrap();
    assert_eq!(log.log_end_offset(), Offset(320));
}

#[test]
fn fsync_failure_takes_the_log_offline_for_good() {
    let dir = tempfile::tempdir().unwrap();
    let io = Arc::new(FaultInjectingIo::new());
    let log = Log::open_with_io(dir.path(), LogConfig::default(), false, io.clone()).unwrap();
    append(&log, 1, 1);
    log.flush(Offset(1)).unwrap();
    append(&log, 1, 2);
    io.fail_syncs(true);
    assert!(matches!(log.flush(Offset(2)), Err(LogError::Io(_))));
    assert!(log.is_offline());
    io.fail_syncs(false);
    // Sticky: no retry of the fsync, no more appends or reads.
    assert!(matches!(log.flush(Offset(2)), Err(LogError::Offline)));
    assert!(matches!(
        log.append(&mut batch(1, 1, 1), LeaderEpoch(0), 0),
        Err(LogError::Offline)
    ));
    assert!(matches!(
        log.read(Offset(0), 100, Offset(i64::MAX), true),
        Err(LogError::Offline)
    ));
    assert!(matches!(log.close(), Err(LogError::Offline)));
    assert_eq!(log.durable_offset(), Offset(1));
    drop(log);
    // Reopening recovers.
    let log = Log::open(dir.path(), LogConfig::default(), false).unwrap();
    assert_eq!(log.log_end_offset(), Offset(2));
}

#[test]
fn torn_write_takes_the_log_offline_and_recovery_cuts_it() {
    let dir = tempfile::tempdir().unwrap();
    let io = Arc::new(FaultInjectingIo::new());
    let log = Log::open_with_io(dir.path(), LogConfig::default(), false, io.clone()).unwrap();
    append(&log, 1, 1);
    append(&log, 1, 2);
    append(&log, 1, 2);
    io.tear_next_write(40);
    assert!(matches!(
        log.append(&mut batch(3, 3, 100), LeaderEpoch(0), 0),
        Err(LogError::Io(_))
    ));
    assert!(matches!(
        log.append(&mut batch(1, 3, 1), LeaderEpoch(0), 0),
        Err(LogError::Offline)
    ));
    drop(log);
    assert!(fs::metadata(last_segment(dir.path())).unwrap().len() > 0);
    assert_recovers_to(dir.path(), LogConfig::default(), false, 3);
}

#[test]
fn failed_write_takes_the_log_offline() {
    let dir = tempfile::tempdir().unwrap();
    let io = Arc::new(FaultInjectingIo::new());
    let log = Log::open_with_io(dir.path(), LogConfig::default(), false, io.clone()).unwrap();
    io.fail_writes(true);
    assert!(matches!(
        log.append(&mut batch(1, 1, 1), LeaderEpoch(0), 0),
        Err(LogError::Io(_))
    ));
    io.fail_writes(false);
    assert!(matches!(
        log.append(&mut batch(1, 1, 1), LeaderEpoch(0), 0),
        Err(LogError::Offline)
    ));
}

#[test]
fn arbitrary_disk_bytes_never_panic() {
    let mut rng = Rng(0xdead_beef_cafe_f00d);
    let config = LogConfig {
        index_interval_bytes: 64,
        segment_bytes: 2000,
        ..LogConfig::default()
    };
    for round in 0..60 {
        let dir = tempfile::tempdir().unwrap();
        crashed_log(dir.path(), config, 30);
        // Scribble over random files at random places, sometimes growing or cutting them.
        let mut files: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        for _ in 0..(1 + rng.next() % 4) {
            let path = &files[(rng.next() as usize) % files.len()];
            let mut bytes = fs::read(path).unwrap();
            match rng.next() % 4 {
                0 if !bytes.is_empty() => {
                    for _ in 0..(1 + rng.next() % 8) {
                        let i = (rng.next() as usize) % bytes.len();
                        bytes[i] = rng.next() as u8;
                    }
                }
                1 => bytes.truncate((rng.next() as usize) % (bytes.len() + 1)),
                2 => bytes.extend((0..rng.next() % 200).map(|_| rng.next() as u8)),
                _ => bytes = (0..rng.next() % 300).map(|_| rng.next() as u8).collect(),
            }
            fs::write(path, bytes).unwrap();
        }
        let clean = round % 2 == 0;
        if !clean {
            // Without a checkpoint every byte is rescanned, so the result must be a fully
            // readable log. (Damage below a checkpoint is bit rot in fsynced data, which open
            // does not look for; see docs/STORAGE.md.)
            let _ = fs::remove_file(dir.path().join("recovery-point"));
        }
        let log = match Log::open(dir.path(), config, clean) {
            Ok(log) => log,
            Err(e) => panic!("round {round}: open failed: {e}"),
        };
        // Whatever survived must read back as a well-formed, contiguous log.
        let leo = log.log_end_offset().get();
        let mut next = log.log_start_offset().get();
        if let Ok(r) = log.read(Offset(next), usize::MAX, Offset(i64::MAX), true) {
            for item in Batches::new(&r.data) {
                let (h, _) = item.unwrap();
                assert_eq!(h.base_offset, next, "round {round}");
                next = h.last_offset() + 1;
            }
        }
        if !clean {
            assert_eq!(
                next, leo,
                "round {round}: unclean recovery yields a readable log"
            );
        }
        let _ = log.offset_for_timestamp(5);
        let _ = log.append(&mut batch(1, 1, 1), LeaderEpoch(0), 0);
    }
}

#[test]
fn readers_run_concurrently_with_appends_and_flushes() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(Log::open(dir.path(), small_config(), false).unwrap());
    let writer = {
        let log = log.clone();
        std::thread::spawn(move || {
            for i in 0..400 {
                let info = log
                    .append(
                        &mut batch(1 + i % 4, i as i64, 10 + i % 50),
                        LeaderEpoch(0),
                        0,
                    )
                    .unwrap();
                if i % 10 == 0 {
                    log.flush(info.last_offset.plus(1)).unwrap();
                }
            }
        })
    };
    let readers: Vec<_> = (0..2)
        .map(|r| {
            let log = log.clone();
            std::thread::spawn(move || {
                let mut rng = Rng(17 + r);
                while log.log_end_offset() < Offset(900) {
                    let leo = log.log_end_offset().get();
                    let offset = (rng.next() % (leo as u64 + 1)) as i64;
                    let max_bytes = (rng.next() % 3000) as usize;
                    let r = log
                        .read(Offset(offset), max_bytes, Offset(leo), true)
                        .unwrap();
                    let mut next = None;
                    for item in Batches::new(&r.data) {
                        let (h, bytes) = item.unwrap();
                        verify_crc(bytes).unwrap();
                        assert!(h.last_offset() < leo);
                        match next {
                            None => assert!(h.base_offset <= offset && offset <= h.last_offset()),
                            Some(n) => assert_eq!(h.base_offset, n),
                        }
                        next = Some(h.last_offset() + 1);
                    }
                }
            })
        })
        .collect();
    writer.join().unwrap();
    for r in readers {
        r.join().unwrap();
    }
}

#[test]
fn log_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Log>();
    assert_send_sync::<Arc<Log>>();
}

#[test]
fn delete_removes_the_directory() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("topic-0");
    let log = Log::open(&dir, LogConfig::default(), false).unwrap();
    append(&log, 1, 1);
    log.delete().unwrap();
    assert!(!dir.exists());
}

/// Kafka answers a timestamp lookup with the first *record* at or after the time, even in the
/// middle of a batch.
#[test]
fn timestamp_lookup_finds_the_record_inside_a_batch() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config(), false).unwrap();
    let v: &[u8] = b"v";
    let mut b = build_batch(
        0,
        &[
            (None, Some(v), 1000),
            (None, Some(v), 2000),
            (None, Some(v), 3000),
            (None, Some(v), 2500),
        ],
    );
    log.append(&mut b, LeaderEpoch(0), 0).unwrap();
    let mut b = build_batch(0, &[(None, Some(v), 5000), (None, Some(v), 6000)]);
    log.append(&mut b, LeaderEpoch(0), 0).unwrap();
    assert_eq!(
        log.offset_for_timestamp(0).unwrap(),
        Some((Offset(0), 1000))
    );
    assert_eq!(
        log.offset_for_timestamp(2000).unwrap(),
        Some((Offset(1), 2000))
    );
    assert_eq!(
        log.offset_for_timestamp(2100).unwrap(),
        Some((Offset(2), 3000))
    );
    assert_eq!(
        log.offset_for_timestamp(3001).unwrap(),
        Some((Offset(4), 5000))
    );
    assert_eq!(
        log.offset_for_timestamp(5500).unwrap(),
        Some((Offset(5), 6000))
    );
    assert_eq!(log.offset_for_timestamp(6001).unwrap(), None);
}

/// `append_from` stores the batch with its offset assigned but leaves the caller's bytes alone
/// (the produce path writes straight from the request buffer, without a copy).
#[test]
fn append_from_does_not_touch_the_callers_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config(), false).unwrap();
    append(&log, 3, 100); // offsets 0-2
    let v: &[u8] = b"value";
    let batch = build_batch(0, &[(None, Some(v), 7), (None, Some(v), 8)]);
    let before = batch.clone();
    let info = log.append_from(&batch, LeaderEpoch(5), 0).unwrap();
    assert_eq!((info.base_offset, info.last_offset), (Offset(3), Offset(4)));
    assert_eq!(batch, before, "input unchanged");
    let read = log
        .read(Offset(3), 1 << 20, Offset(i64::MAX), true)
        .unwrap();
    let (h, stored) = Batches::new(&read.data).next().unwrap().unwrap();
    assert_eq!(h.base_offset, 3);
    assert_eq!(h.partition_leader_epoch, 5);
    verify_crc(stored).unwrap();
    assert_eq!(
        &stored[16..],
        &before[16..],
        "everything after the patched prefix is as sent"
    );
    drop(log);
    // And it survives recovery (the two writes are one valid batch on disk).
    let log = Log::open(dir.path(), small_config(), false).unwrap();
    assert_eq!(log.log_end_offset(), Offset(5));
}
