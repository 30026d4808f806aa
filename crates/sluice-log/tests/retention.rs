//! Retention by time and size, DeleteRecords, and live config changes, through the public API.

use std::fs;
use std::path::Path;

use sluice_log::{Log, LogConfig, LogError, RetentionPolicy};
use sluice_protocol::batch::testing::build_batch;
use sluice_protocol::batch::{BatchHeader, Batches};
use sluice_types::{LeaderEpoch, Offset};

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 1000,
        index_interval_bytes: 150,
        ..LogConfig::default()
    }
}

/// One batch of 3 records (about 190 bytes) with timestamp `ts`.
fn append(log: &Log, ts: i64) -> i64 {
    let value = [b'v'; 30];
    let recs = [(None, Some(&value[..]), ts); 3];
    log.append(&mut build_batch(0, &recs), LeaderEpoch(1), 0)
        .unwrap()
        .base_offset
        .get()
}

fn headers(log: &Log, from: i64) -> Vec<BatchHeader> {
    let r = log
        .read(Offset(from), usize::MAX, Offset(i64::MAX), true)
        .unwrap();
    Batches::new(&r.data).map(|b| b.unwrap().0).collect()
}

fn log_files(dir: &Path) -> usize {
    fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "log")
        })
        .count()
}

fn out_of_range(log: &Log, offset: i64) -> bool {
    matches!(
        log.read(Offset(offset), 1000, Offset(i64::MAX), true),
        Err(LogError::OffsetOutOfRange { .. })
    )
}

const NEVER: i64 = -1;

#[test]
fn retention_by_time_deletes_expired_closed_segments_oldest_first() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), config(), false).unwrap();
    // 25 batches, 5 per segment (1000 bytes each): segment i holds timestamps 100i..100i+4.
    for i in 0..25 {
        append(&log, 100 * (i / 5) + i % 5);
    }
    append(&log, 50); // the active segment: old, but never deleted
    let segments = log.segment_count();
    assert_eq!(segments, 6);
    let policy = |ms| RetentionPolicy {
        retention_ms: ms,
        retention_bytes: NEVER,
    };

    tracing::info!("--- nothing expired");
    let out = log.enforce_retention(&policy(1000), 1000).unwrap();
    assert_eq!((out.segments_deleted, out.log_start_offset), (0, Offset(0)));

    tracing::info!("--- segments 0 and 1 expired (max timestamps 4 and 104 < 150)");
    let out = log.enforce_retention(&policy(850), 1000).unwrap();
    assert_eq!(out.segments_deleted, 2);
    assert!(out.bytes_deleted > 0);
    assert_eq!(out.log_start_offset, Offset(30));
    assert_eq!(log.log_start_offset(), Offset(30));
    assert_eq!(log_files(dir.path()), segments - 2);
    assert!(out_of_range(&log, 29));
    assert_eq!(headers(&log, 30)[0].base_offset, 30);

    tracing::info!("--- everything expired: the active segment stays");
    let out = log.enforce_retention(&policy(0), 1_000_000).unwrap();
    assert_eq!(out.segments_deleted, 3);
    assert_eq!(log.segment_count(), 1);
    assert_eq!(log.log_start_offset(), Offset(75));
    assert_eq!(log.log_end_offset(), Offset(78));
    assert_eq!(log.max_timestamp(), Some((50, Offset(75))));
    assert_eq!(append(&log, 7), 78);

    drop(log);
    for clean in [false, true] {
        let log = Log::open(dir.path(), config(), clean).unwrap();
        assert_eq!(
            (log.log_start_offset(), log.log_end_offset()),
            (Offset(75), Offset(81))
        );
        log.close().unwrap();
    }
}

#[test]
fn retention_by_time_stops_at_the_first_unexpired_segment() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), config(), false).unwrap();
    let ts = [10, 900, 20, 30];
    for t in ts {
        for _ in 0..5 {
            append(&log, t);
        }
    }
    append(&log, 0);
    let out = log
        .enforce_retention(
            &RetentionPolicy {
                retention_ms: 500,
                retention_bytes: NEVER,
            },
            1000,
        )
        .unwrap();
    // Segment 0 (ts 10) goes; segment 1 (ts 900) is fresh, so 2 and 3 stay although expired.
    assert_eq!(out.segments_deleted, 1);
    assert_eq!(log.log_start_offset(), Offset(15));
}

#[test]
fn retention_by_size() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), config(), false).unwrap();
    for i in 0..26 {
        append(&log, i);
    }
    let batch_size = headers(&log, 0)[0].total_size() as i64;
    assert_eq!(log.segment_count(), 6); // 5 closed of 5 batches, 1 batch active
    let policy = |bytes| RetentionPolicy {
        retention_ms: NEVER,
        retention_bytes: bytes,
    };
    // 26 batches; keeping at least 21 batches' worth allows deleting one segment.
    let out = log.enforce_retention(&policy(21 * batch_size), 0).unwrap();
    assert_eq!(out.segments_deleted, 1);
    assert_eq!(out.bytes_deleted as i64, 5 * batch_size);
    assert_eq!(log.log_start_offset(), Offset(15));
    // 21 batches left; 17 batches' worth: 16 would remain after another deletion -> none.
    let out = log.enforce_retention(&policy(17 * batch_size), 0).unwrap();
    assert_eq!(out.segments_deleted, 0);
    let out = log.enforce_retention(&policy(0), 0).unwrap();
    assert_eq!(out.segments_deleted, 4);
    assert_eq!(log.segment_count(), 1);
    assert_eq!(log.log_start_offset(), Offset(75));
    assert!(out_of_range(&log, 74));
}

#[test]
fn delete_records_inside_a_segment_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), config(), false).unwrap();
    for i in 0..20 {
        append(&log, i); // batch i: offsets 3i..3i+2; 5 batches per segment
    }
    assert_eq!(log.segment_count(), 4);

    tracing::info!("--- inside the first segment: nothing deleted");
    assert_eq!(log.delete_records_before(Offset(4)).unwrap(), Offset(4));
    assert_eq!(log.log_start_offset(), Offset(4));
    assert_eq!(log.segment_count(), 4);
    assert!(out_of_range(&log, 3));
    // The batch containing the log start comes whole (the client skips records below it).
    assert_eq!(headers(&log, 4)[0].base_offset, 3);
    assert_eq!(
        log.delete_records_before(Offset(2)).unwrap(),
        Offset(4),
        "never moves back"
    );

    tracing::info!("--- inside the third segment: the first two go");
    assert_eq!(log.delete_records_before(Offset(31)).unwrap(), Offset(31));
    assert_eq!(log.segment_count(), 2);
    assert_eq!(log_files(dir.path()), 2);
    assert!(out_of_range(&log, 30));
    assert_eq!(headers(&log, 31)[0].base_offset, 30);
    assert_eq!(
        log.offset_for_timestamp(0).unwrap().map(|f| f.0),
        Some(Offset(31))
    );
    assert!(matches!(
        log.delete_records_before(Offset(61)),
        Err(LogError::OffsetOutOfRange { .. })
    ));

    drop(log); // no close: an unclean restart must honour it too
    for clean in [false, true] {
        let log = Log::open(dir.path(), config(), clean).unwrap();
        assert_eq!(log.log_start_offset(), Offset(31), "clean={clean}");
        assert!(out_of_range(&log, 30));
        log.close().unwrap();
    }

    tracing::info!("--- up to the log end: the active segment stays, empty of readable data");
    let log = Log::open(dir.path(), config(), true).unwrap();
    assert_eq!(log.delete_records_before(Offset(60)).unwrap(), Offset(60));
    assert_eq!(log.segment_count(), 1);
    assert_eq!(
        log.read(Offset(60), 100, Offset(i64::MAX), true)
            .unwrap()
            .data
            .len(),
        0
    );
    assert_eq!(append(&log, 1), 60);

    tracing::info!("--- truncation below the log start restarts the log there");
    log.truncate_to(Offset(10)).unwrap();
    assert_eq!(
        (log.log_start_offset(), log.log_end_offset()),
        (Offset(10), Offset(10))
    );
    drop(log);
    let log = Log::open(dir.path(), config(), false).unwrap();
    assert_eq!(
        (log.log_start_offset(), log.log_end_offset()),
        (Offset(10), Offset(10))
    );
}

#[test]
fn retention_respects_an_explicit_log_start() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), config(), false).unwrap();
    for i in 0..11 {
        append(&log, i);
    }
    log.delete_records_before(Offset(7)).unwrap();
    let out = log
        .enforce_retention(
            &RetentionPolicy {
                retention_ms: NEVER,
                retention_bytes: 0,
            },
            0,
        )
        .unwrap();
    assert_eq!(
        (out.segments_deleted, out.log_start_offset),
        (2, Offset(30))
    );
}

#[test]
fn set_config_changes_the_next_roll() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), config(), false).unwrap();
    for i in 0..10 {
        append(&log, i);
    }
    assert_eq!(log.segment_count(), 2);
    log.set_config(LogConfig {
        segment_bytes: 300,
        ..config()
    });
    assert_eq!(log.config().segment_bytes, 300);
    for i in 0..4 {
        append(&log, i);
    }
    // The next append rolled (the active segment was already over 300 bytes), then one batch
    // per segment.
    assert_eq!(log.segment_count(), 6);
}
