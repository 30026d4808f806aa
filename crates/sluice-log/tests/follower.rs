//! `Log::append_as_follower`: batches copied from a leader log keep their offsets, epochs and
//! bytes; gaps (a compacted leader) are accepted and survive a restart; offsets below the log
//! end, out of order, or batches that fail their CRC are refused without writing anything.

use std::fs;

use sluice_log::{CleanOptions, Log, LogConfig, LogError};
use sluice_protocol::batch::testing::{build_batch, build_batch_with, BatchOptions};
use sluice_protocol::batch::{BatchError, BatchHeader, Batches};
use sluice_types::{LeaderEpoch, Offset};

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 900,
        index_interval_bytes: 120,
        ..LogConfig::default()
    }
}

/// A batch of `n` records keyed `k<key + i>`, timestamps from `ts`.
fn keyed(n: usize, key: usize, ts: i64) -> Vec<u8> {
    let keys: Vec<String> = (0..n).map(|i| format!("k{}", (key + i) % 5)).collect();
    let value = [b'v'; 30];
    let records: Vec<_> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| (Some(k.as_bytes()), Some(&value[..]), ts + i as i64))
        .collect();
    build_batch(0, &records)
}

/// A leader log with epochs 0, 2 and 3 (and some batches without an epoch) over several
/// segments.
fn leader_log(dir: &std::path::Path) -> Log {
    let log = Log::open(dir, config(), false).unwrap();
    for i in 0..60usize {
        let epoch = match i {
            0..=4 => -1,
            5..=24 => 0,
            25..=44 => 2,
            _ => 3,
        };
        log.append(
            &mut keyed(1 + i % 3, i, 1_000 + i as i64 * 10),
            LeaderEpoch(epoch),
            0,
        )
        .unwrap();
    }
    assert!(log.segment_count() > 4);
    log
}

/// Copies `leader` into `follower` the way a fetcher would: from the follower's log end, a
/// few hundred bytes of whole batches at a time.
fn replicate(leader: &Log, follower: &Log) {
    loop {
        let from = follower.log_end_offset();
        let r = leader.read(
            from.max(leader.log_start_offset()),
            400,
            Offset(i64::MAX),
            true,
        );
        let data = r.unwrap().data;
        if data.is_empty() {
            return;
        }
        follower.append_as_follower(&data).unwrap();
    }
}

fn everything(log: &Log) -> bytes::Bytes {
    log.read(log.log_start_offset(), usize::MAX, Offset(i64::MAX), true)
        .unwrap()
        .data
}

/// The follower holds the leader's log. With `compacted`, the leader's epoch entries may start
/// at offsets whose batches the cleaner removed since; the follower, which never saw those
/// batches, has the same epochs starting at the first batch that survived.
fn assert_same_log(leader: &Log, follower: &Log, compacted: bool) {
    assert_eq!(everything(follower), everything(leader));
    assert_eq!(follower.log_end_offset(), leader.log_end_offset());
    if compacted {
        let (f, l) = (follower.epoch_entries(), leader.epoch_entries());
        assert_eq!(f.len(), l.len());
        for (f, l) in f.iter().zip(&l) {
            assert_eq!(f.epoch, l.epoch);
            assert!(f.start_offset >= l.start_offset, "{f:?} {l:?}");
        }
    } else {
        assert_eq!(follower.epoch_entries(), leader.epoch_entries());
    }
    assert_eq!(follower.max_timestamp(), leader.max_timestamp());
    for ts in (990..1_700).step_by(7) {
        assert_eq!(
            follower.offset_for_timestamp(ts).unwrap(),
            leader.offset_for_timestamp(ts).unwrap(),
            "timestamp {ts}"
        );
    }
    // Every offset finds the same batch (indexes built right for the copied batches).
    for offset in follower.log_start_offset().get()..follower.log_end_offset().get() {
        let f = follower
            .read(Offset(offset), 1, Offset(i64::MAX), true)
            .unwrap()
            .data;
        let l = leader
            .read(Offset(offset), 1, Offset(i64::MAX), true)
            .unwrap()
            .data;
        assert_eq!(f, l, "offset {offset}");
    }
}

#[test]
fn batches_copied_from_a_leader_read_back_byte_for_byte() {
    let leader_dir = tempfile::tempdir().unwrap();
    let leader = leader_log(leader_dir.path());
    let dir = tempfile::tempdir().unwrap();
    let follower = Log::open(dir.path(), config(), false).unwrap();
    replicate(&leader, &follower);
    assert_same_log(&leader, &follower, false);
    assert_eq!(
        follower
            .epoch_entries()
            .iter()
            .map(|e| e.epoch.0)
            .collect::<Vec<_>>(),
        [0, 2, 3]
    );
    assert_eq!(follower.latest_epoch(), Some(LeaderEpoch(3)));
    assert_eq!(
        follower.end_offset_for_epoch(LeaderEpoch(2)),
        leader.end_offset_for_epoch(LeaderEpoch(2))
    );
    assert!(follower.segment_count() > 4, "the follower rolls too");
    assert_eq!(follower.durable_offset(), Offset(0), "no fsync on append");
    follower.flush(follower.log_end_offset()).unwrap();

    // Appends continue from the copied log end, as leader (after a leader change) or follower.
    let end = follower.log_end_offset();
    let info = follower
        .append(&mut keyed(2, 0, 5_000), LeaderEpoch(4), 0)
        .unwrap();
    assert_eq!(info.base_offset, end);
    assert_eq!(follower.latest_epoch(), Some(LeaderEpoch(4)));
    drop(follower);
    let follower = Log::open(dir.path(), config(), false).unwrap();
    assert_eq!(follower.log_end_offset(), end.plus(2));
    assert_eq!(follower.latest_epoch(), Some(LeaderEpoch(4)));
}

#[test]
fn gaps_from_a_compacted_leader_are_kept_across_restarts() {
    let leader_dir = tempfile::tempdir().unwrap();
    let leader = leader_log(leader_dir.path());
    let outcome = leader
        .clean(&CleanOptions {
            now_ms: 10_000,
            force: true,
            ..CleanOptions::default()
        })
        .unwrap();
    assert!(outcome.records_removed > 0);
    let data = everything(&leader);
    let mut gaps = 0;
    let mut next = 0;
    for item in Batches::new(&data) {
        let h = item.unwrap().0;
        gaps += usize::from(h.base_offset > next);
        next = h.last_offset() + 1;
    }
    assert!(gaps > 3, "the leader log has gaps ({gaps})");

    let dir = tempfile::tempdir().unwrap();
    let follower = Log::open(dir.path(), config(), false).unwrap();
    replicate(&leader, &follower);
    assert_same_log(&leader, &follower, true);
    let markers = fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "gaps")
        })
        .count();
    assert!(markers > 0, "segments with gaps are marked");
    follower.flush(follower.log_end_offset()).unwrap();
    drop(follower);
    // A crash (every segment from the recovery point rescanned) and a clean restart both keep
    // the gapped segments whole.
    let follower = Log::open(dir.path(), config(), false).unwrap();
    assert_same_log(&leader, &follower, true);
    follower.close().unwrap();
    drop(follower);
    fs::remove_file(dir.path().join("recovery-point")).unwrap(); // rescan everything
    let follower = Log::open(dir.path(), config(), false).unwrap();
    assert_same_log(&leader, &follower, true);
    follower.close().unwrap();
    drop(follower);
    let follower = Log::open(dir.path(), config(), true).unwrap();
    assert_same_log(&leader, &follower, true);
}

fn batch_at(base_offset: i64, n: usize, epoch: i32) -> Vec<u8> {
    let value = [b'x'; 10];
    let records: Vec<_> = (0..n)
        .map(|i| (None, Some(&value[..]), 100 + i as i64))
        .collect();
    build_batch_with(
        &BatchOptions {
            base_offset,
            partition_leader_epoch: epoch,
            ..BatchOptions::default()
        },
        &records,
    )
}

#[test]
fn a_gap_moves_the_log_end_to_the_last_offset_plus_one() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), config(), false).unwrap();
    // An empty follower may start past its log end (the leader's log starts later).
    let a = batch_at(10, 2, 1); // 10..11
    let b = batch_at(15, 3, 1); // 15..17
    let c = batch_at(30, 1, 4); // 30
    let info = log.append_as_follower(&[&a[..], &b[..]].concat()).unwrap();
    assert_eq!(
        (info.base_offset, info.last_offset),
        (Offset(10), Offset(17))
    );
    assert_eq!(log.log_end_offset(), Offset(18));
    let info = log.append_as_follower(&c).unwrap();
    assert_eq!(
        (info.base_offset, info.last_offset),
        (Offset(30), Offset(30))
    );
    assert_eq!(log.log_end_offset(), Offset(31));
    let all = [&a[..], &b[..], &c[..]].concat();
    assert_eq!(
        log.read(Offset(0), usize::MAX, Offset(i64::MAX), true)
            .unwrap()
            .data,
        all
    );
    // An offset in a gap reads from the next batch.
    assert_eq!(
        log.read(Offset(13), usize::MAX, Offset(i64::MAX), true)
            .unwrap()
            .data[..],
        all[a.len()..]
    );
    assert_eq!(
        log.read(Offset(20), usize::MAX, Offset(i64::MAX), true)
            .unwrap()
            .data,
        c
    );
    assert_eq!(
        log.epoch_entries()
            .iter()
            .map(|e| (e.epoch.0, e.start_offset.0))
            .collect::<Vec<_>>(),
        [(1, 10), (4, 30)]
    );
    assert_eq!(
        log.end_offset_for_epoch(LeaderEpoch(1)),
        Some((LeaderEpoch(1), Offset(30)))
    );
    drop(log);
    for clean in [false, true] {
        let log = Log::open(dir.path(), config(), clean).unwrap();
        assert_eq!(
            log.read(Offset(0), usize::MAX, Offset(i64::MAX), true)
                .unwrap()
                .data,
            all
        );
        assert_eq!(log.log_end_offset(), Offset(31));
        log.close().unwrap();
    }
}

#[test]
fn offsets_below_the_log_end_out_of_order_or_corrupt_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), config(), false).unwrap();
    log.append_as_follower(&batch_at(0, 5, 2)).unwrap(); // 0..4
    let before = everything(&log);
    let unchanged = |log: &Log| {
        assert_eq!(log.log_end_offset(), Offset(5));
        assert_eq!(everything(log), before);
    };

    match log.append_as_follower(&batch_at(3, 4, 2)) {
        Err(LogError::AppendBelowLogEnd {
            first_offset,
            log_end,
        }) => assert_eq!((first_offset, log_end), (Offset(3), Offset(5))),
        other => panic!("{other:?}"),
    }
    unchanged(&log);

    let out_of_order = [&batch_at(5, 3, 2)[..], &batch_at(7, 1, 2)[..]].concat();
    assert!(matches!(
        log.append_as_follower(&out_of_order),
        Err(LogError::InvalidOffsets {
            offset: Offset(7),
            ..
        })
    ));
    unchanged(&log);

    let mut corrupt = batch_at(5, 2, 2);
    let n = corrupt.len();
    corrupt[n - 2] ^= 0x10;
    assert!(matches!(
        log.append_as_follower(&corrupt),
        Err(LogError::InvalidBatch(BatchError::CorruptCrc { .. }))
    ));
    let mut torn = batch_at(5, 2, 2);
    torn.truncate(torn.len() - 1);
    assert!(matches!(
        log.append_as_follower(&torn),
        Err(LogError::InvalidBatch(BatchError::Truncated { .. }))
    ));
    assert!(matches!(
        log.append_as_follower(&[]),
        Err(LogError::InvalidBatch(BatchError::Empty))
    ));
    let too_far = batch_at(5 + (1 << 32), 1, 2);
    assert!(matches!(
        log.append_as_follower(&too_far),
        Err(LogError::InvalidOffsets { .. })
    ));
    unchanged(&log);

    // The batch that does fit goes in, untouched (its epoch is the leader's, not rewritten).
    let next = batch_at(5, 2, 7);
    log.append_as_follower(&next).unwrap();
    let stored = log
        .read(Offset(5), usize::MAX, Offset(i64::MAX), true)
        .unwrap()
        .data;
    assert_eq!(stored, next);
    let h = BatchHeader::parse(&stored).unwrap();
    assert_eq!((h.base_offset, h.partition_leader_epoch), (5, 7));
    assert_eq!(log.latest_epoch(), Some(LeaderEpoch(7)));
    assert!(!log.is_offline(), "refusals do not take the log offline");
}

#[test]
fn a_follower_behind_the_leaders_log_start_starts_over_there() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), config(), false).unwrap();
    log.append_as_follower(&batch_at(0, 3, 1)).unwrap();
    assert_eq!(log.log_end_offset(), Offset(3));
    // The leader's log now starts at 40: everything here goes, and the log restarts there
    // (`truncate_to` would do nothing: 40 is past the end).
    log.truncate_fully_and_start_at(Offset(40)).unwrap();
    assert_eq!(log.log_start_offset(), Offset(40));
    assert_eq!(log.log_end_offset(), Offset(40));
    assert_eq!(log.latest_epoch(), None);
    log.append_as_follower(&batch_at(40, 2, 2)).unwrap();
    assert_eq!(log.log_end_offset(), Offset(42));
    log.close().unwrap();
    drop(log);
    let log = Log::open(dir.path(), config(), false).unwrap();
    assert_eq!(log.log_start_offset(), Offset(40));
    assert_eq!(log.log_end_offset(), Offset(42));
    assert_eq!(log.epoch_for_offset(Offset(41)), Some(LeaderEpoch(2)));
}
