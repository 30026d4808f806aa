//! The leader-epoch cache through the public API: entries made by appends, the
//! `leader-epoch-checkpoint` file, OffsetsForLeaderEpoch answers, truncation from both ends,
//! and rebuilding after a crash or a lost file.

use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};

use sluice_log::{EpochEntry, Log, LogConfig, RetentionPolicy};
use sluice_protocol::batch::testing::build_batch;
use sluice_types::{LeaderEpoch, Offset};

const EPOCH_FILE: &str = "leader-epoch-checkpoint";

/// A batch of `n` records with timestamp `ts`.
fn batch(n: usize, ts: i64) -> Vec<u8> {
    let value = [b'v'; 40];
    let records: Vec<_> = (0..n).map(|_| (None, Some(&value[..]), ts)).collect();
    build_batch(0, &records)
}

fn small_config() -> LogConfig {
    LogConfig {
        segment_bytes: 600,
        index_interval_bytes: 150,
        ..LogConfig::default()
    }
}

/// Appends `batches` batches of `n` records in `epoch`; returns the first offset.
fn append(log: &Log, epoch: i32, batches: usize, n: usize) -> i64 {
    let first = log.log_end_offset().get();
    for i in 0..batches {
        log.append(&mut batch(n, i as i64), LeaderEpoch(epoch), 0)
            .unwrap();
    }
    first
}

fn entries(pairs: &[(i32, i64)]) -> Vec<EpochEntry> {
    pairs
        .iter()
        .map(|&(e, o)| EpochEntry {
            epoch: LeaderEpoch(e),
            start_offset: Offset(o),
        })
        .collect()
}

fn file_text(dir: &Path) -> String {
    fs::read_to_string(dir.join(EPOCH_FILE)).unwrap()
}

fn last_segment(dir: &Path) -> PathBuf {
    let mut logs: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    logs.sort();
    logs.pop().unwrap()
}

fn whole_log(log: &Log) -> bytes::Bytes {
    log.read(log.log_start_offset(), usize::MAX, Offset(i64::MAX), true)
        .unwrap()
        .data
}

#[test]
fn new_epochs_are_recorded_checkpointed_and_trusted_on_a_clean_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config(), false).unwrap();
    assert_eq!(log.latest_epoch(), None);
    assert!(
        !dir.path().join(EPOCH_FILE).exists(),
        "a new log has no file"
    );

    append(&log, -1, 2, 2); // 0..4: written without an epoch, ignored
    assert_eq!(log.latest_epoch(), None);
    append(&log, 0, 3, 2); // 4..10
    assert_eq!(log.epoch_entries(), entries(&[(0, 4)]));
    log.flush(log.log_end_offset()).unwrap();
    assert_eq!(file_text(dir.path()), "0\n1\n0 4\n");

    append(&log, 2, 2, 3); // 10..16
                           // Memory at once; the file with the flush that makes the new epoch's batches durable.
    assert_eq!(log.epoch_entries(), entries(&[(0, 4), (2, 10)]));
    assert_eq!(file_text(dir.path()), "0\n1\n0 4\n");
    log.flush(log.log_end_offset()).unwrap();
    assert_eq!(file_text(dir.path()), "0\n2\n0 4\n2 10\n");

    append(&log, 2, 1, 1); // same epoch: no entry
    append(&log, 1, 1, 1); // an older epoch: stamped, but no entry
    append(&log, 5, 1, 1); // 18
    append(&log, -1, 1, 1);
    let expected = entries(&[(0, 4), (2, 10), (5, 18)]);
    assert_eq!(log.epoch_entries(), expected);
    assert_eq!(log.latest_epoch(), Some(LeaderEpoch(5)));
    log.close().unwrap();
    assert_eq!(file_text(dir.path()), "0\n3\n0 4\n2 10\n5 18\n");
    drop(log);

    let log = Log::open(dir.path(), small_config(), true).unwrap();
    assert_eq!(log.epoch_entries(), expected);
    log.close().unwrap();
    drop(log);

    // A clean open trusts the file (no scan): a different but plausible file is taken as is.
    fs::write(dir.path().join(EPOCH_FILE), "0\n2\n1 4\n7 12\n").unwrap();
    let log = Log::open(dir.path(), small_config(), true).unwrap();
    assert_eq!(log.epoch_entries(), entries(&[(1, 4), (7, 12)]));
}

#[test]
fn end_offset_for_epoch_answers_like_kafka() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config(), false).unwrap();
    assert_eq!(log.end_offset_for_epoch(LeaderEpoch(0)), None, "no entries");
    append(&log, -1, 1, 5); // 0..5
    assert_eq!(log.end_offset_for_epoch(LeaderEpoch(0)), None);
    append(&log, 1, 2, 5); // 5..15
    append(&log, 3, 2, 5); // 15..25
    append(&log, 6, 3, 5); // 25..40
    let q = |e| log.end_offset_for_epoch(LeaderEpoch(e));
    let some = |e, o| Some((LeaderEpoch(e), Offset(o)));
    assert_eq!(q(6), some(6, 40), "latest: the log end");
    assert_eq!(q(3), some(3, 25), "middle: where the next epoch starts");
    assert_eq!(q(1), some(1, 15));
    assert_eq!(
        q(4),
        some(3, 25),
        "unknown between: the largest epoch below"
    );
    assert_eq!(q(5), some(3, 25));
    assert_eq!(q(0), some(0, 5), "below the first: the first epoch's start");
    assert_eq!(q(7), None, "above the latest: undefined");
    assert_eq!(q(-1), None, "no epoch: undefined");
    append(&log, 6, 1, 2);
    assert_eq!(
        q(6),
        some(6, 42),
        "the latest epoch ends at the moving log end"
    );
}

#[test]
fn truncation_drops_later_epochs_and_a_reopen_agrees() {
    for clean in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), small_config(), false).unwrap();
        append(&log, 0, 2, 5); // 0..10
        append(&log, 1, 2, 5); // 10..20
        append(&log, 2, 2, 5); // 20..30
        log.flush(Offset(30)).unwrap();
        assert_eq!(log.epoch_entries(), entries(&[(0, 0), (1, 10), (2, 20)]));

        log.truncate_to(Offset(20)).unwrap();
        assert_eq!(log.epoch_entries(), entries(&[(0, 0), (1, 10)]));
        assert_eq!(
            log.end_offset_for_epoch(LeaderEpoch(1)),
            Some((LeaderEpoch(1), Offset(20)))
        );
        // Inside epoch 1's first batch: the whole batch goes, so does epoch 1's entry.
        log.truncate_to(Offset(12)).unwrap();
        assert_eq!(log.log_end_offset(), Offset(10));
        assert_eq!(log.epoch_entries(), entries(&[(0, 0)]));
        append(&log, 4, 1, 3); // 10..13 in a new epoch
        let expected = entries(&[(0, 0), (4, 10)]);
        assert_eq!(log.epoch_entries(), expected);
        if clean {
            log.close().unwrap();
        } else {
            // A crash: the file still lists epochs 1 and 2, which recovery must not bring back.
            assert!(file_text(dir.path()).contains("2 20"));
        }
        drop(log);
        let log = Log::open(dir.path(), small_config(), clean).unwrap();
        assert_eq!(log.log_end_offset(), Offset(13));
        assert_eq!(log.epoch_entries(), expected, "clean: {clean}");
        log.close().unwrap();
        assert_eq!(file_text(dir.path()), "0\n2\n0 0\n4 10\n");

        log.truncate_to(Offset(0)).unwrap();
        assert_eq!(log.epoch_entries(), []);
        assert_eq!(log.end_offset_for_epoch(LeaderEpoch(0)), None);
        if clean {
            log.close().unwrap();
            assert_eq!(
                file_text(dir.path()),
                "0\n0\n",
                "close writes the truncated cache"
            );
        }
        drop(log);
        let log = Log::open(dir.path(), small_config(), clean).unwrap();
        assert_eq!(log.epoch_entries(), []);
    }
}

#[test]
fn a_rising_log_start_moves_the_first_epoch_up() {
    for clean in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), small_config(), false).unwrap();
        append(&log, 0, 4, 5); // 0..20
        append(&log, 1, 4, 5); // 20..40
        append(&log, 2, 4, 5); // 40..60
        log.flush(Offset(60)).unwrap();
        assert!(log.segment_count() > 4);

        // DeleteRecords inside epoch 0: it now starts at the new log start.
        assert_eq!(log.delete_records_before(Offset(7)).unwrap(), Offset(7));
        assert_eq!(log.epoch_entries(), entries(&[(0, 7), (1, 20), (2, 40)]));
        // Past epoch 0 and into epoch 1: epoch 0 is gone, epoch 1 starts at the log start.
        assert_eq!(log.delete_records_before(Offset(23)).unwrap(), Offset(23));
        assert_eq!(log.epoch_entries(), entries(&[(1, 23), (2, 40)]));
        assert_eq!(
            log.end_offset_for_epoch(LeaderEpoch(0)),
            Some((LeaderEpoch(0), Offset(23))),
            "below the first epoch: the log start"
        );
        // Retention deleting whole segments (timestamps 0..3 are all long expired).
        let before = log.segment_count();
        let outcome = log
            .enforce_retention(
                &RetentionPolicy {
                    retention_ms: 10,
                    retention_bytes: -1,
                },
                1_000_000,
            )
            .unwrap();
        assert!(outcome.segments_deleted > 0 && log.segment_count() < before);
        let start = log.log_start_offset().get();
        assert!(start > 40, "log start {start}");
        assert_eq!(log.epoch_entries(), entries(&[(2, start)]));
        if clean {
            log.close().unwrap();
        }
        drop(log);
        let log = Log::open(dir.path(), small_config(), clean).unwrap();
        assert_eq!(log.log_start_offset(), Offset(start));
        assert_eq!(
            log.epoch_entries(),
            entries(&[(2, start)]),
            "clean: {clean}"
        );
    }
}

/// Epochs 0, 1, 2 over several segments, flushed, then dropped without close.
fn crashed_log_with_epochs(dir: &Path) -> (Vec<EpochEntry>, bytes::Bytes) {
    let log = Log::open(dir, small_config(), false).unwrap();
    append(&log, 0, 5, 2); // 0..10
    append(&log, 1, 5, 2); // 10..20
    append(&log, 2, 5, 2); // 20..30
    log.flush(Offset(30)).unwrap();
    let entries = log.epoch_entries();
    assert_eq!(entries, self::entries(&[(0, 0), (1, 10), (2, 20)]));
    assert!(log.segment_count() > 2);
    (entries, whole_log(&log))
}

#[test]
fn a_lost_or_damaged_checkpoint_is_rebuilt_from_the_batches() {
    let damages: [(&str, Option<&[u8]>); 5] = [
        ("deleted", None),
        ("garbage", Some(b"\x00\xffnot a checkpoint")),
        ("wrong count", Some(b"0\n5\n0 0\n1 10\n")),
        ("not increasing", Some(b"0\n2\n1 10\n0 0\n")),
        ("empty", Some(b"")),
    ];
    for clean in [false, true] {
        for (what, damage) in damages {
            let dir = tempfile::tempdir().unwrap();
            let (expected, data) = crashed_log_with_epochs(dir.path());
            if clean {
                let log = Log::open(dir.path(), small_config(), false).unwrap();
                log.close().unwrap();
            }
            let path = dir.path().join(EPOCH_FILE);
            match damage {
                None => fs::remove_file(&path).unwrap(),
                Some(bytes) => fs::write(&path, bytes).unwrap(),
            }
            let log = Log::open(dir.path(), small_config(), clean).unwrap();
            assert_eq!(log.epoch_entries(), expected, "{what}, clean: {clean}");
            assert_eq!(whole_log(&log), data);
            // Rewritten at once, so the next open need not scan again.
            assert_eq!(
                file_text(dir.path()),
                "0\n3\n0 0\n1 10\n2 20\n",
                "{what}, clean: {clean}"
            );
        }
    }
}

#[test]
fn recovery_reassigns_epochs_of_batches_the_file_never_saw() {
    let dir = tempfile::tempdir().unwrap();
    let (_, _) = crashed_log_with_epochs(dir.path());
    let log = Log::open(dir.path(), small_config(), false).unwrap();
    append(&log, 3, 2, 2); // 30..34, never flushed: not in the file
    append(&log, 4, 1, 2); // 34..36
    drop(log);
    assert_eq!(file_text(dir.path()), "0\n3\n0 0\n1 10\n2 20\n");
    let log = Log::open(dir.path(), small_config(), false).unwrap();
    assert_eq!(log.log_end_offset(), Offset(36));
    assert_eq!(
        log.epoch_entries(),
        entries(&[(0, 0), (1, 10), (2, 20), (3, 30), (4, 34)])
    );
    assert_eq!(
        file_text(dir.path()),
        "0\n5\n0 0\n1 10\n2 20\n3 30\n4 34\n",
        "written before the recovery point moved past them"
    );
    drop(log);
    // And the recovery point now covers them: a clean open trusts the file.
    let log = Log::open(dir.path(), small_config(), true).unwrap();
    assert_eq!(log.latest_epoch(), Some(LeaderEpoch(4)));
}

#[test]
fn a_torn_tail_takes_its_epoch_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let (_, _) = crashed_log_with_epochs(dir.path());
    let log = Log::open(dir.path(), small_config(), false).unwrap();
    append(&log, 3, 1, 2); // 30..32: the only batch of epoch 3
    log.flush(Offset(32)).unwrap();
    assert!(file_text(dir.path()).ends_with("3 30\n"));
    drop(log);
    // Cut the last batch in half, as a crash in the middle of its write would.
    let path = last_segment(dir.path());
    let len = fs::metadata(&path).unwrap().len();
    let f = OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(len - 20).unwrap();
    let log = Log::open(dir.path(), small_config(), false).unwrap();
    assert_eq!(log.log_end_offset(), Offset(30));
    assert_eq!(log.epoch_entries(), entries(&[(0, 0), (1, 10), (2, 20)]));
    assert_eq!(file_text(dir.path()), "0\n3\n0 0\n1 10\n2 20\n");
}
