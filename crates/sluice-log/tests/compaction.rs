//! Compaction through the public API: exact surviving offsets and values against a model,
//! tombstones, lag and ratio thresholds, crash images of an interrupted swap, and cleaning
//! concurrent with appends and reads.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use sluice_log::{CleanOptions, FaultInjectingIo, Log, LogConfig};
use sluice_protocol::batch::{verify_crc, BatchHeader, Batches};
use sluice_protocol::kafka::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use sluice_types::{LeaderEpoch, Offset};

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 700,
        index_interval_bytes: 100,
        ..LogConfig::default()
    }
}

/// (offset, key, value, timestamp) of one stored record.
type Rec = (i64, Option<String>, Option<String>, i64);

/// One batch of `(key, value)` records at timestamp `ts`, from a producer with id 9.
fn keyed(codec: Compression, recs: &[(&str, Option<&str>)], ts: i64) -> Vec<u8> {
    let records: Vec<Record> = recs
        .iter()
        .enumerate()
        .map(|(i, (k, v))| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: 9,
            producer_epoch: 1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: i as i32,
            timestamp: ts,
            key: Some(Bytes::from(k.to_string())),
            value: v.map(|v| Bytes::from(v.to_string())),
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression: codec,
        },
    )
    .unwrap();
    buf.to_vec()
}

/// Appends a batch; returns the records as stored (with offsets) for the model.
fn put(log: &Log, codec: Compression, recs: &[(&str, Option<&str>)], ts: i64) -> Vec<Rec> {
    let info = log
        .append(&mut keyed(codec, recs, ts), LeaderEpoch(3), ts)
        .unwrap();
    recs.iter()
        .enumerate()
        .map(|(i, (k, v))| {
            (
                info.base_offset.get() + i as i64,
                Some(k.to_string()),
                v.map(str::to_string),
                ts,
            )
        })
        .collect()
}

/// Every record readable from the log start, checking each batch's CRC, that batches come in
/// offset order, and that every record lies inside its batch's range.
fn contents(log: &Log) -> Vec<Rec> {
    let r = log
        .read(log.log_start_offset(), usize::MAX, Offset(i64::MAX), true)
        .unwrap();
    let mut out = Vec::new();
    let mut next = r.log_start_offset.get();
    for item in Batches::new(&r.data) {
        let (h, bytes) = item.unwrap();
        verify_crc(bytes).unwrap();
        assert!(h.base_offset >= next, "batches out of order");
        next = h.last_offset() + 1;
        let set = RecordBatchDecoder::decode(&mut Bytes::copy_from_slice(bytes)).unwrap();
        assert_eq!(set.records.len(), h.records_count as usize);
        for rec in set.records {
            assert!(rec.offset >= h.base_offset && rec.offset <= h.last_offset());
            let s = |b: Option<Bytes>| b.map(|b| String::from_utf8(b.to_vec()).unwrap());
            out.push((rec.offset, s(rec.key), s(rec.value), rec.timestamp));
        }
    }
    assert_eq!(
        next,
        r.log_end_offset.get(),
        "the last batch ends at the log end"
    );
    out
}

/// What compaction of everything below `end` must leave: the latest record of each key
/// among those below `end` (dropping tombstones if `drop_tombstones`), and everything from
/// `end` on.
fn model(all: &[Rec], end: i64, drop_tombstones: bool) -> Vec<Rec> {
    let mut latest: HashMap<&Option<String>, i64> = HashMap::new();
    for r in all.iter().filter(|r| r.0 < end) {
        latest.insert(&r.1, r.0);
    }
    all.iter()
        .filter(|r| r.0 >= end || (latest[&r.1] == r.0 && !(drop_tombstones && r.2.is_none())))
        .cloned()
        .collect()
}

fn force(now_ms: i64) -> CleanOptions {
    CleanOptions {
        now_ms,
        force: true,
        ..CleanOptions::default()
    }
}

/// 40 batches of 3 records over keys k0..k6 with values naming their position.
fn fill(log: &Log, codec: Compression) -> Vec<Rec> {
    let mut all = Vec::new();
    for b in 0..40 {
        let (k1, k2, k3) = (
            format!("k{}", (3 * b) % 7),
            format!("k{}", (3 * b + 1) % 7),
            format!("k{}", (3 * b + 2) % 7),
        );
        let (v1, v2, v3) = (
            format!("value-{}", 3 * b),
            format!("value-{}", 3 * b + 1),
            format!("value-{}", 3 * b + 2),
        );
        let recs = [
            (k1.as_str(), Some(v1.as_str())),
            (k2.as_str(), Some(v2.as_str())),
            (k3.as_str(), Some(v3.as_str())),
        ];
        all.extend(put(log, codec, &recs, 1000 + b));
    }
    all
}

#[test]
fn keeps_the_latest_value_per_key_with_exact_offsets() {
    for codec in [
        Compression::None,
        Compression::Gzip,
        Compression::Zstd,
        Compression::Lz4,
    ] {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), config(), false).unwrap();
        let all = fill(&log, codec);
        let segments = log.segment_count();
        assert!(segments >= 4, "{codec:?}: {segments} segments");
        let log_end = log.log_end_offset();
        assert_eq!(contents(&log), all);

        let out = log.clean(&force(10_000)).unwrap();
        assert!(out.cleaned);
        // Everything before the active segment was cleanable; the active one is untouched.
        let end = out.cleaned_offset.get();
        assert!(end > 0 && end < log_end.get(), "{codec:?}");
        assert!(
            all.iter().any(|r| r.0 == end),
            "the active segment starts at a record"
        );
        let expected = model(&all, end, false);
        assert_eq!(contents(&log), expected, "{codec:?}");
        assert!(out.records_removed > 0 && out.bytes_after < out.bytes_before);
        assert_eq!(out.tombstones_removed, 0);
        assert_eq!(log.log_end_offset(), log_end);
        assert_eq!(log.cleaning_status().dirty_bytes, 0);

        tracing::info!("--- every surviving offset reads back as the first record returned");
        for r in &expected {
            let got = log.read(Offset(r.0), 1, Offset(i64::MAX), true).unwrap();
            let (h, _) = Batches::new(&got.data).next().unwrap().unwrap();
            assert!(h.base_offset <= r.0 && r.0 <= h.last_offset());
        }
        // An offset in a gap reads from the next surviving batch.
        let gap = (0..end)
            .find(|o| !expected.iter().any(|r| r.0 == *o))
            .unwrap();
        let got = log
            .read(Offset(gap), usize::MAX, Offset(i64::MAX), true)
            .unwrap();
        assert!(!got.data.is_empty());

        tracing::info!("--- a second pass only merges the now small segments");
        let again = log.clean(&force(10_000)).unwrap();
        assert_eq!(again.records_removed, 0);
        assert!(again.segments_replaced > again.segments_written);
        assert!(log.segment_count() < segments);
        assert_eq!(contents(&log), expected);
        // Merging drops the empty batches that ended the merged segments, so a few more
        // passes may merge further; then the log is stable.
        let mut passes = 0;
        loop {
            let out = log.clean(&force(10_000)).unwrap();
            assert_eq!(out.records_removed, 0);
            assert_eq!(contents(&log), expected);
            if out.segments_replaced == 0 {
                break;
            }
            passes += 1;
            assert!(passes < 5, "merging converges");
        }

        tracing::info!("--- appends continue; reopen (clean and unclean) reads the same");
        let mut all2 = expected.clone();
        all2.extend(put(&log, codec, &[("k1", Some("after"))], 5000));
        log.close().unwrap();
        drop(log);
        for clean in [true, false] {
            let log = Log::open(dir.path(), config(), clean).unwrap();
            assert_eq!(contents(&log), all2, "{codec:?} clean={clean}");
            assert_eq!(log.cleaning_status().cleaned_offset, Offset(end));
            drop(log);
        }
        // Unclean recovery without a recovery point rescans cleaned segments (with gaps).
        fs::remove_file(dir.path().join("recovery-point")).unwrap();
        let log = Log::open(dir.path(), config(), false).unwrap();
        assert_eq!(contents(&log), all2);
    }
}

#[test]
fn rewritten_batches_keep_their_header_fields() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), config(), false).unwrap();
    let all = fill(&log, Compression::Gzip);
    let before: BTreeMap<i64, BatchHeader> = {
        let r = log
            .read(Offset(0), usize::MAX, Offset(i64::MAX), true)
            .unwrap();
        Batches::new(&r.data)
            .map(|b| b.unwrap().0)
            .map(|h| (h.base_offset, h))
            .collect()
    };
    log.clean(&force(10_000)).unwrap();
    let r = log
        .read(Offset(0), usize::MAX, Offset(i64::MAX), true)
        .unwrap();
    let mut rewritten = 0;
    for item in Batches::new(&r.data) {
        let (h, _) = item.unwrap();
        let src = before[&h.base_offset];
        assert_eq!(h.last_offset_delta, src.last_offset_delta, "range kept");
        assert_eq!(
            (h.producer_id, h.producer_epoch, h.base_sequence),
            (src.producer_id, src.producer_epoch, src.base_sequence)
        );
        assert_eq!(h.partition_leader_epoch, 3);
        if h.records_count > 0 {
            assert_eq!(h.attributes, src.attributes, "same codec");
        }
        if h.records_count != src.records_count {
            rewritten += 1;
        }
    }
    assert!(rewritten > 0);
    assert!(!all.is_empty());
}

#[test]
fn tombstones_survive_delete_retention_then_go() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), config(), false).unwrap();
    let mut all = Vec::new();
    all.extend(put(
        &log,
        Compression::None,
        &[("a", Some("1")), ("b", Some("1"))],
        100,
    ));
    all.extend(put(&log, Compression::None, &[("a", None)], 200));
    for i in 0..12 {
        let v = format!("filler-{i}");
        all.extend(put(
            &log,
            Compression::None,
            &[("c", Some(v.as_str()))],
            300 + i,
        ));
    }
    let opts = |now| CleanOptions {
        delete_retention_ms: 1000,
        ..force(now)
    };

    tracing::info!("--- first pass: a=1 goes, the tombstone stays (its segment was dirty)");
    let out = log.clean(&opts(5000)).unwrap();
    let end = out.cleaned_offset.get();
    assert_eq!(contents(&log), model(&all, end, false));
    assert!(contents(&log)
        .iter()
        .any(|r| r.1.as_deref() == Some("a") && r.2.is_none()));

    tracing::info!("--- cleaned, but younger than delete_retention_ms: still there");
    let out = log.clean(&opts(1100)).unwrap();
    assert_eq!(out.tombstones_removed, 0);
    assert!(contents(&log).iter().any(|r| r.1.as_deref() == Some("a")));

    tracing::info!("--- older than delete_retention_ms in a cleaned segment: removed");
    let out = log.clean(&opts(1201)).unwrap();
    assert_eq!(out.tombstones_removed, 1);
    assert_eq!(contents(&log), model(&all, end, true));
    assert!(!contents(&log).iter().any(|r| r.1.as_deref() == Some("a")));
    assert!(contents(&log).iter().any(|r| r.1.as_deref() == Some("b")));
}

#[test]
fn min_compaction_lag_protects_recent_segments() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), config(), false).unwrap();
    let mut all = Vec::new();
    for i in 0..30 {
        let ts = if i < 15 { 1000 } else { 5000 };
        let v = format!("v{i}");
        all.extend(put(
            &log,
            Compression::None,
            &[("x", Some(v.as_str())), ("y", Some("y"))],
            ts,
        ));
    }
    let first_recent = all.iter().find(|r| r.3 == 5000).unwrap().0;
    let out = log
        .clean(&CleanOptions {
            min_compaction_lag_ms: 2000,
            ..force(6000)
        })
        .unwrap();
    // Cleaning stops before the first segment holding a record newer than now - lag.
    assert!(out.cleaned_offset.get() <= first_recent);
    assert!(out.cleaned_offset.get() > 0);
    let got = contents(&log);
    assert_eq!(got, model(&all, out.cleaned_offset.get(), false));
    assert!(
        got.iter().filter(|r| r.3 == 5000).count() == all.iter().filter(|r| r.3 == 5000).count()
    );
    assert!(log.cleaning_status().dirty_bytes > 0);
}

#[test]
fn dirty_ratio_and_max_lag_decide_whether_to_clean() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), config(), false).unwrap();
    let all = fill(&log, Compression::None);
    let status = log.cleaning_status();
    assert_eq!(status.dirty_ratio, 1.0);
    assert_eq!(status.oldest_dirty_timestamp, Some(1000));
    let opts = CleanOptions {
        now_ms: 10_000,
        min_cleanable_dirty_ratio: 0.5,
        ..CleanOptions::default()
    };
    let first = log.clean(&opts).unwrap();
    assert!(first.cleaned);
    let cleaned = contents(&log);

    tracing::info!("--- a little new dirt: ratio below the threshold");
    let mut more = cleaned.clone();
    for i in 0..5 {
        let v = format!("late-{i}");
        more.extend(put(
            &log,
            Compression::None,
            &[("k1", Some(v.as_str()))],
            20_000 + i,
        ));
    }
    let status = log.cleaning_status();
    assert!(status.dirty_bytes > 0, "{status:?}");
    assert!(status.dirty_ratio < 0.9, "{status:?}");
    // The segment that was active during the first pass is closed now, and dirty.
    let first_dirty = all
        .iter()
        .find(|r| r.0 == first.cleaned_offset.get())
        .unwrap();
    assert_eq!(status.oldest_dirty_timestamp, Some(first_dirty.3));
    let opts = CleanOptions {
        min_cleanable_dirty_ratio: 0.9,
        ..opts
    };
    let out = log
        .clean(&CleanOptions {
            now_ms: 21_000,
            ..opts
        })
        .unwrap();
    assert!(!out.cleaned);
    assert_eq!(contents(&log), more);

    tracing::info!("--- the same dirt past max_compaction_lag_ms: cleaned");
    let out = log
        .clean(&CleanOptions {
            now_ms: 21_000,
            max_compaction_lag_ms: 500,
            ..opts
        })
        .unwrap();
    assert!(out.cleaned && out.records_removed > 0);

    tracing::info!("--- the bookkeeping survives a restart");
    let status = log.cleaning_status();
    drop(log);
    let log = Log::open(dir.path(), config(), false).unwrap();
    assert_eq!(log.cleaning_status(), status);
    assert!(!all.is_empty());
}

/// Copies every regular file of `from` into a fresh directory.
fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        fs::copy(&p, to.join(p.file_name().unwrap())).unwrap();
    }
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

fn bases(dir: &Path) -> Vec<i64> {
    names(dir)
        .iter()
        .filter_map(|n| n.strip_suffix(".log"))
        .map(|n| n.parse().unwrap())
        .collect()
}

#[test]
fn a_crash_at_any_step_of_the_swap_leaves_old_or_new_content() {
    // Build the "before" image, then the "after" image by cleaning a copy.
    let root = tempfile::tempdir().unwrap();
    let before = root.path().join("before");
    let after = root.path().join("after");
    let log = Log::open(&before, config(), false).unwrap();
    let all = fill(&log, Compression::Zstd);
    log.close().unwrap();
    drop(log);
    copy_dir(&before, &after);
    let log = Log::open(&after, config(), true).unwrap();
    // Bigger segments from now on: the pass merges several old segments into one.
    log.set_config(LogConfig {
        segment_bytes: 3000,
        ..config()
    });
    let out = log.clean(&force(10_000)).unwrap();
    let new_content = contents(&log);
    log.close().unwrap();
    drop(log);
    assert_eq!(new_content, model(&all, out.cleaned_offset.get(), false));
    let old_bases = bases(&before);
    let new_bases = bases(&after);
    // The first cleaned group: new segment `g` replacing old segments in [g, next new base).
    let g = new_bases[0];
    let g_end = new_bases[1];
    let replaced: Vec<i64> = old_bases
        .iter()
        .copied()
        .filter(|&b| b >= g && b < g_end)
        .collect();
    assert!(replaced.len() > 1, "the test needs a merged group");
    let name = |b: i64, ext: &str| format!("{b:020}.{ext}");
    let exts = ["log", "index", "timeindex"];

    // Each step: which files of the new segment exist under which suffix, and which old
    // segments of the group are already gone; `new` says which content the group must have.
    struct Step {
        what: &'static str,
        suffix: [&'static str; 3], // for log, index, timeindex: "cleaned", "swap" or "" (final)
        deleted_old: usize,
        new: bool,
    }
    let steps = [
        Step {
            what: "writing .cleaned",
            suffix: ["cleaned"; 3],
            deleted_old: 0,
            new: false,
        },
        Step {
            what: "indexes renamed to .swap",
            suffix: ["cleaned", "swap", "swap"],
            deleted_old: 0,
            new: false,
        },
        Step {
            what: "committed",
            suffix: ["swap"; 3],
            deleted_old: 0,
            new: true,
        },
        Step {
            what: "some old segments deleted",
            suffix: ["swap"; 3],
            deleted_old: 1,
            new: true,
        },
        Step {
            what: "all old deleted, indexes in place",
            suffix: ["swap", "", ""],
            deleted_old: replaced.len() - 1,
            new: true,
        },
        Step {
            what: "done",
            suffix: [""; 3],
            deleted_old: replaced.len() - 1,
            new: true,
        },
    ];
    let group_new: Vec<Rec> = new_content
        .iter()
        .filter(|r| r.0 < g_end)
        .cloned()
        .collect();
    let group_old: Vec<Rec> = all.iter().filter(|r| r.0 < g_end).cloned().collect();
    for (i, step) in steps.iter().enumerate() {
        let dir = root.path().join(format!("crash-{i}"));
        copy_dir(&before, &dir);
        // Deleting old segments goes after the first one (which the rename replaces).
        for b in replaced.iter().skip(1).take(step.deleted_old) {
            for ext in exts {
                fs::remove_file(dir.join(name(*b, ext))).unwrap();
            }
        }
        for (ext, suffix) in exts.iter().zip(step.suffix) {
            let target = if suffix.is_empty() {
                name(g, ext)
            } else {
                format!("{}.{suffix}", name(g, ext))
            };
            fs::copy(after.join(name(g, ext)), dir.join(target)).unwrap();
        }
        // The cleaner checkpoint is written before the commit.
        fs::copy(
            after.join("cleaner-offset-checkpoint"),
            dir.join("cleaner-offset-checkpoint"),
        )
        .unwrap();
        for clean in [true, false] {
            let image = root.path().join(format!("crash-{i}-{clean}"));
            copy_dir(&dir, &image);
            let log = Log::open(&image, config(), clean).unwrap();
            let got = contents(&log);
            let group: Vec<Rec> = got.iter().filter(|r| r.0 < g_end).cloned().collect();
            let expected = if step.new { &group_new } else { &group_old };
            assert_eq!(&group, expected, "step {:?} clean={clean}", step.what);
            let rest: Vec<Rec> = got.iter().filter(|r| r.0 >= g_end).cloned().collect();
            let rest_old: Vec<Rec> = all.iter().filter(|r| r.0 >= g_end).cloned().collect();
            assert_eq!(
                rest, rest_old,
                "step {:?}: later segments untouched",
                step.what
            );
            assert_eq!(log.log_end_offset(), Offset(all.last().unwrap().0 + 1));
            drop(log);
            assert!(
                !names(&image)
                    .iter()
                    .any(|n| n.ends_with(".cleaned") || n.ends_with(".swap")),
                "step {:?}: leftovers {:?}",
                step.what,
                names(&image)
            );
        }
    }
}

#[test]
fn a_failed_write_of_cleaned_files_leaves_the_log_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let io = Arc::new(FaultInjectingIo::new());
    let log = Log::open_with_io(dir.path(), config(), false, io.clone()).unwrap();
    let all = fill(&log, Compression::Gzip);
    io.fail_syncs(true);
    assert!(log.clean(&force(10_000)).is_err());
    io.fail_syncs(false);
    assert!(!log.is_offline(), "the live log was never touched");
    assert_eq!(contents(&log), all);
    assert!(!names(dir.path()).iter().any(|n| n.ends_with(".cleaned")));
    let out = log.clean(&force(10_000)).unwrap();
    assert_eq!(contents(&log), model(&all, out.cleaned_offset.get(), false));
}

#[test]
fn cleaning_runs_concurrently_with_appends_and_reads() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(Log::open(dir.path(), config(), false).unwrap());
    let done = Arc::new(AtomicBool::new(false));
    let writer = {
        let log = log.clone();
        std::thread::spawn(move || {
            let mut latest = HashMap::new();
            for i in 0..600i64 {
                let key = format!("k{}", i % 13);
                let value = format!("v{i}");
                let recs = put(
                    &log,
                    Compression::Zstd,
                    &[(key.as_str(), Some(value.as_str()))],
                    1000 + i,
                );
                latest.insert(key, (recs[0].0, value));
            }
            latest
        })
    };
    let reader = {
        let log = log.clone();
        let done = done.clone();
        std::thread::spawn(move || {
            let mut reads = 0;
            while !done.load(Ordering::SeqCst) {
                let _ = contents(&log);
                reads += 1;
            }
            reads
        })
    };
    let mut passes = 0;
    while !writer.is_finished() {
        log.clean(&force(1_000_000)).unwrap();
        passes += 1;
    }
    let latest = writer.join().unwrap();
    log.clean(&force(1_000_000)).unwrap();
    done.store(true, Ordering::SeqCst);
    assert!(reader.join().unwrap() > 0);
    assert!(passes > 0);

    let got = contents(&log);
    let mut last_seen: HashMap<String, (i64, String)> = HashMap::new();
    for r in &got {
        last_seen.insert(r.1.clone().unwrap(), (r.0, r.2.clone().unwrap()));
    }
    assert_eq!(last_seen, latest, "every key's latest value survives");
    assert!(got.len() < 600);
    drop(got);
    let log = Arc::try_unwrap(log).unwrap();
    drop(log);
    let log = Log::open(dir.path(), config(), false).unwrap();
    assert_eq!(log.log_end_offset(), Offset(600));
}

#[test]
fn unkeyed_transactional_and_control_batches_are_kept_as_is() {
    use sluice_protocol::batch::testing::{build_batch, build_batch_with, BatchOptions};
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), config(), false).unwrap();
    let txn = BatchOptions {
        attributes: 0x10,
        producer_id: 5,
        producer_epoch: 0,
        base_sequence: 0,
        ..BatchOptions::default()
    };
    let marker = BatchOptions {
        attributes: 0x30,
        ..txn
    };
    let mut kept = Vec::new();
    let append = |mut b: Vec<u8>| {
        let info = log.append(&mut b, LeaderEpoch(0), 0).unwrap();
        (info.base_offset.get(), b)
    };
    kept.push(append(build_batch(0, &[(None, Some(b"no key"), 1)])));
    kept.push(append(build_batch_with(
        &txn,
        &[(Some(b"k"), Some(b"txn"), 1)],
    )));
    kept.push(append(build_batch_with(
        &marker,
        &[(Some(b"\0\0\0\0"), Some(b"\0\0\0\0\0\0"), 1)],
    )));
    for i in 0..20 {
        let v = format!("v{i}");
        append(build_batch(0, &[(Some(b"k"), Some(v.as_bytes()), 2)]));
    }
    log.clean(&force(10_000)).unwrap();
    let r = log
        .read(Offset(0), usize::MAX, Offset(i64::MAX), true)
        .unwrap();
    let batches: Vec<(i64, Vec<u8>)> = Batches::new(&r.data)
        .map(|b| b.unwrap())
        .map(|(h, bytes)| (h.base_offset, bytes.to_vec()))
        .collect();
    assert_eq!(&batches[..3], &kept[..], "byte for byte");
    // The transactional "k" does not count as the latest "k": only the last plain one does.
    let plain_k: Vec<_> = batches[3..]
        .iter()
        .filter(|(_, b)| BatchHeader::parse(b).unwrap().records_count > 0)
        .collect();
    assert!(plain_k.len() < 20);
}
