//! Opening a log directory: find the segments, load or rebuild their indexes, and after a crash
//! cut the log at the first batch that is not intact.
//!
//! Two modes:
//! - **trusted** (segments below the recovery point, or everything after a clean shutdown
//!   whose checkpoint matches the log end): load the indexes, check them structurally, and scan
//!   batch headers (no CRC) from the last index entry to the end of the file. This rebuilds an
//!   index tail that is shorter than the log and recovers the segment's end offset and max
//!   timestamp cheaply. A broken index is rebuilt from the log; a header that does not check
//!   out sends the segment to full recovery.
//! - **recover** (from the segment containing the recovery point on): scan every batch from
//!   the start of the segment — length sanity, magic 2, CRC32C, base offset contiguous with the
//!   previous batch — rebuilding both indexes; at the first bad batch truncate the file there
//!   and delete every later segment.
//!
//! Recovery also notes where the partition leader epoch changes in the batches it scans
//! ([`Rescanned`]), from which `Log::open` rebuilds that part of the leader-epoch cache, as
//! Kafka's segment recovery re-assigns epochs. After a recovery the surviving data is fsynced;
//! the caller then writes the epoch checkpoint and only then moves the recovery point to the
//! log end, so the next crash does not scan it again. Nothing here panics on any disk content.

use std::fs::{self, File};
use std::io;
use std::path::Path;

use sluice_protocol::batch::{
    verify_crc, BatchHeader, BATCH_HEADER_LEN, MAGIC_V2, MIN_BATCH_LENGTH,
};

use crate::checkpoint;
use crate::config::LogConfig;
use crate::epoch_cache::EpochStarts;
use crate::error::LogError;
use crate::io::{read_exact_at, Io};
use crate::segment::{
    parse_file_name, BatchMeta, Segment, CLEANED_SUFFIX, GAPS_EXT, INDEX_EXT, LOG_EXT, SWAP_SUFFIX,
    TIME_INDEX_EXT,
};

/// The segments of a directory, as [`open_segments`] found them.
#[derive(Debug)]
pub(crate) struct Opened {
    /// In offset order, at least one.
    pub segments: Vec<Segment>,
    /// `Some` if recovery rescanned part of the log: the recovery point must then be moved to
    /// the log end by the caller, after the epoch checkpoint is written.
    pub rescanned: Option<Rescanned>,
}

/// What recovery saw of the batches it scanned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Rescanned {
    /// Base offset of the first recovered segment: every batch from here to the log end was
    /// scanned (and the epoch cache entries from here on are rebuilt from them).
    pub from_offset: i64,
    /// Where the partition leader epoch changes in the scanned batches.
    pub epoch_starts: EpochStarts,
}

/// How a scan ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ScanEnd {
    /// Reached `end` on a batch boundary.
    Clean,
    /// The batch at `position` is not valid; everything before it is.
    Invalid { position: u64, reason: String },
}

/// Reads the 61-byte header at `position`, if the file has that many bytes before `end`.
pub(crate) fn read_header(file: &File, position: u64, end: u64) -> io::Result<Option<BatchHeader>> {
    if end.saturating_sub(position) < BATCH_HEADER_LEN as u64 {
        return Ok(None);
    }
    let mut buf = [0u8; BATCH_HEADER_LEN];
    read_exact_at(file, &mut buf, position)?;
    Ok(BatchHeader::parse(&buf).ok())
}

/// What a scan checks beyond framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Checks {
    /// Read each batch whole and check its CRC (otherwise only headers are read).
    pub crc: bool,
    /// The segment was written by the cleaner: a batch may start after the previous one's
    /// end. Elsewhere base offsets must chain exactly, which is the only check a damaged
    /// baseOffset (outside the CRC) can fail.
    pub gaps: bool,
}

/// Walks batches from `start` to `end` in a segment based at `segment_base`, expecting the
/// first to start at offset `expected_base` (or later, with `checks.gaps`). Calls `on_batch`
/// for each valid one.
pub(crate) fn scan(
    file: &File,
    start: u64,
    end: u64,
    segment_base: i64,
    mut expected_base: i64,
    checks: Checks,
    mut on_batch: impl FnMut(&BatchMeta),
) -> io::Result<ScanEnd> {
    let mut position = start;
    let mut buf = Vec::new();
    while position < end {
        let invalid = |reason: String| Ok(ScanEnd::Invalid { position, reason });
        let Some(header) = read_header(file, position, end)? else {
            return invalid(format!("{} bytes left, less than a header", end - position));
        };
        if header.batch_length < MIN_BATCH_LENGTH {
            return invalid(format!("batch length {}", header.batch_length));
        }
        let size = header.total_size() as u64;
        if size > end - position {
            return invalid(format!("batch of {size} bytes, {} left", end - position));
        }
        if header.magic != MAGIC_V2 {
            return invalid(format!("magic {}", header.magic));
        }
        let chains = if checks.gaps {
            header.base_offset >= expected_base
        } else {
            header.base_offset == expected_base
        };
        if !chains {
            return invalid(format!(
                "base offset {} where {expected_base} was expected",
                header.base_offset
            ));
        }
        if header.last_offset_delta < 0
            || header.last_offset() - segment_base > i64::from(u32::MAX)
            || position + size > u64::from(u32::MAX)
        {
            return invalid(format!("last offset delta {}", header.last_offset_delta));
        }
        if checks.crc {
            buf.resize(size as usize, 0);
            read_exact_at(file, &mut buf, position)?;
            if let Err(e) = verify_crc(&buf) {
                return invalid(e.to_string());
            }
        }
        on_batch(&BatchMeta {
            position,
            size,
            base_offset: header.base_offset,
            last_offset: header.last_offset(),
            max_timestamp: header.max_timestamp,
            leader_epoch: header.partition_leader_epoch,
        });
        expected_base = header.last_offset() + 1;
        position += size;
    }
    Ok(ScanEnd::Clean)
}

/// Where the partition leader epoch changes across every batch of `segments`, by header scan
/// (no CRC): how a missing or damaged leader-epoch checkpoint is rebuilt. A segment whose
/// headers stop checking out contributes its batches up to there.
pub(crate) fn epoch_starts_of(segments: &[&Segment]) -> io::Result<EpochStarts> {
    let mut starts = EpochStarts::default();
    for seg in segments {
        let checks = Checks {
            crc: false,
            gaps: seg.compacted,
        };
        let end = scan(
            &seg.log,
            0,
            seg.size,
            seg.base_offset,
            seg.base_offset,
            checks,
            |m| starts.note(m.leader_epoch, m.base_offset),
        )?;
        if let ScanEnd::Invalid { position, reason } = end {
            tracing::warn!(
                segment = seg.base_offset,
                position,
                %reason,
                "epoch rebuild stopped early in a segment"
            );
        }
    }
    Ok(starts)
}

/// Full recovery of one segment: every batch checked (CRC included), indexes rebuilt, the file
/// cut at the first invalid batch, the epochs of the valid batches noted in `epochs`. Returns
/// whether it cut anything.
pub(crate) fn recover_segment(
    io: &dyn Io,
    seg: &mut Segment,
    config: &LogConfig,
    epochs: &mut EpochStarts,
) -> Result<bool, LogError> {
    seg.reset_derived(io)?;
    let end = seg.size;
    let log = seg.log.clone();
    let mut metas = Vec::new();
    let checks = Checks {
        crc: true,
        gaps: seg.compacted,
    };
    let outcome = scan(
        &log,
        0,
        end,
        seg.base_offset,
        seg.base_offset,
        checks,
        |m| metas.push(*m),
    )?;
    for m in &metas {
        seg.track_batch(m, config.index_interval_bytes);
        epochs.note(m.leader_epoch, m.base_offset);
    }
    let cut = match outcome {
        ScanEnd::Clean => false,
        ScanEnd::Invalid { position, reason } => {
            tracing::warn!(
                segment = seg.base_offset,
                position,
                dropped_bytes = end - position,
                %reason,
                "truncating log at first invalid batch"
            );
            io.set_len(&seg.log, position)?;
            seg.size = position;
            true
        }
    };
    seg.log_dirty = true;
    seg.persist_indexes(io)?;
    seg.index_dirty = true;
    Ok(cut)
}

/// Trusted load of one segment. Returns false if the log bytes do not check out (the caller
/// then recovers the segment).
pub(crate) fn load_trusted(
    io: &dyn Io,
    seg: &mut Segment,
    config: &LogConfig,
) -> Result<bool, LogError> {
    let index = crate::index::OffsetIndex::load(seg.index.file().clone(), seg.size)?;
    let time_index = crate::time_index::TimeIndex::load(seg.time_index.file().clone(), seg.size)?;
    let (mut index, mut time_index) = match (index, time_index) {
        (Some(i), Some(t)) => (i, t),
        _ => return rebuild_indexes(io, seg, config),
    };
    // The last entry must point at a batch with the offset it claims.
    if let Some(last) = index.last() {
        let expected = seg.base_offset + i64::from(last.rel_offset);
        let header = read_header(&seg.log, u64::from(last.position), seg.size)?;
        if header.map(|h| h.base_offset) != Some(expected) {
            return rebuild_indexes(io, seg, config);
        }
    }
    // Time entries naming a batch after the last offset-index entry can only exist if the
    // offset index lost its tail; drop them, the tail scan below re-adds them consistently.
    let last_rel = index.last().map_or(0, |e| e.rel_offset);
    let keep = time_index
        .entries()
        .partition_point(|e| e.rel_offset <= last_rel);
    if keep < time_index.entries().len() {
        time_index.truncate(io, keep)?;
    }
    std::mem::swap(&mut seg.index, &mut index);
    std::mem::swap(&mut seg.time_index, &mut time_index);
    tail_scan(io, seg, config)
}

/// Scans headers from the last index entry to the end of the file, restoring the counters and
/// indexing batches the index file lost. Returns false if a header does not check out.
pub(crate) fn tail_scan(
    io: &dyn Io,
    seg: &mut Segment,
    config: &LogConfig,
) -> Result<bool, LogError> {
    let (start, expected) = match seg.index.last() {
        Some(e) => (
            u64::from(e.position),
            seg.base_offset + i64::from(e.rel_offset),
        ),
        None => (0, seg.base_offset),
    };
    seg.next_offset = expected;
    seg.bytes_since_index = 0;
    seg.max_timestamp = seg
        .time_index
        .last()
        .map(|e| (e.timestamp, seg.base_offset + i64::from(e.rel_offset)));
    let mut metas = Vec::new();
    let outcome = scan(
        &seg.log,
        start,
        seg.size,
        seg.base_offset,
        expected,
        Checks {
            crc: false,
            gaps: seg.compacted,
        },
        |m| metas.push(*m),
    )?;
    for m in &metas {
        seg.track_batch(m, config.index_interval_bytes);
    }
    seg.persist_indexes(io)?;
    Ok(outcome == ScanEnd::Clean)
}

/// Rebuilds both indexes from the log headers (no CRC).
fn rebuild_indexes(io: &dyn Io, seg: &mut Segment, config: &LogConfig) -> Result<bool, LogError> {
    tracing::warn!(segment = seg.base_offset, "rebuilding corrupt index");
    seg.reset_derived(io)?;
    let ok = tail_scan(io, seg, config)?;
    seg.index_dirty = true;
    Ok(ok)
}

/// Finds, loads and (if needed) recovers the segments in `dir`, creating the directory and a
/// first segment if there are none.
pub(crate) fn open_segments(
    io: &dyn Io,
    dir: &Path,
    config: &LogConfig,
    clean_shutdown: bool,
) -> Result<Opened, LogError> {
    if !dir.exists() {
        io.create_dir_all(dir)?;
        if let Some(parent) = dir.parent() {
            io.sync_dir(parent)?;
        }
    }
    complete_swaps(io, dir)?;
    let bases = list_segments(io, dir)?;
    if bases.is_empty() {
        let seg = Segment::create(io, dir, 0)?;
        io.sync_dir(dir)?;
        return Ok(Opened {
            segments: vec![seg],
            rescanned: None,
        });
    }
    let recovery_point = checkpoint::read(dir);
    // Segments below the cleaner checkpoint may have been rewritten by the cleaner (which
    // writes the checkpoint before committing a segment): they may have gaps.
    let compacted_below = checkpoint::read_named(dir, checkpoint::CLEANER_NAME).unwrap_or(0);
    if clean_shutdown {
        if let Some(rp) = recovery_point {
            let (segments, consistent, _) = load(io, dir, config, &bases, None, compacted_below)?;
            let leo = segments.last().map_or(0, |s| s.next_offset);
            if consistent && leo == rp {
                return Ok(Opened {
                    segments,
                    rescanned: None,
                });
            }
            tracing::warn!(
                dir = %dir.display(),
                recovery_point = rp,
                log_end = leo,
                "clean shutdown claimed but the checkpoint does not cover the log; recovering"
            );
        }
    }
    // A trusted pass above may have cut and deleted segments: list again.
    let bases = list_segments(io, dir)?;
    // Scan from the segment containing the recovery point (all of it without one).
    let from = match recovery_point {
        Some(rp) => bases.partition_point(|&b| b <= rp).saturating_sub(1),
        None => 0,
    };
    tracing::info!(dir = %dir.display(), from_segment = bases[from], "recovering log");
    let (segments, _, rescanned) = load(io, dir, config, &bases, Some(from), compacted_below)?;
    // Make what survived durable before the checkpoint says so.
    for seg in &segments[from.min(segments.len() - 1)..] {
        io.sync_data(&seg.log)?;
        io.sync_data(seg.index.file())?;
        io.sync_data(seg.time_index.file())?;
    }
    for seg in &segments[..from.min(segments.len() - 1)] {
        if seg.index_dirty {
            io.sync_data(seg.index.file())?;
            io.sync_data(seg.time_index.file())?;
        }
    }
    io.sync_dir(dir)?;
    let mut segments = segments;
    for seg in &mut segments {
        seg.log_dirty = false;
        seg.index_dirty = false;
    }
    // Recovering from `from` always recovers something; the default is for the impossible case
    // of no segment left, and scans nothing.
    let rescanned = rescanned.unwrap_or_else(|| Rescanned {
        from_offset: segments.last().map_or(0, |s| s.next_offset),
        epoch_starts: EpochStarts::default(),
    });
    Ok(Opened {
        segments,
        rescanned: Some(rescanned),
    })
}

/// Loads segments `bases` in order; from index `recover_from` on (or from the first one found
/// inconsistent) with full recovery, which deletes everything after a cut or a gap.
/// Returns the segments, whether no recovery was needed, and what recovery scanned (if any).
fn load(
    io: &dyn Io,
    dir: &Path,
    config: &LogConfig,
    bases: &[i64],
    recover_from: Option<usize>,
    compacted_below: i64,
) -> Result<(Vec<Segment>, bool, Option<Rescanned>), LogError> {
    let mut segments: Vec<Segment> = Vec::with_capacity(bases.len());
    let mut consistent = true;
    let mut recovering = false;
    let mut rescanned: Option<Rescanned> = None;
    for (i, &base) in bases.iter().enumerate() {
        if let Some(prev) = segments.last() {
            if prev.next_offset != base {
                tracing::warn!(
                    segment = base,
                    expected = prev.next_offset,
                    "segment does not continue the previous one; deleting it and all later"
                );
                delete_segments(io, dir, &bases[i..])?;
                consistent = false;
                break;
            }
        }
        let mut seg = Segment::open_files(io, dir, base)?;
        seg.compacted = base < compacted_below || Segment::gaps_marker(dir, base).exists();
        recovering |= recover_from.is_some_and(|f| i >= f);
        if !recovering && !load_trusted(io, &mut seg, config)? {
            tracing::warn!(
                segment = base,
                "segment fails a header check; recovering it"
            );
            recovering = true;
            consistent = false;
        }
        let mut cut = false;
        if recovering {
            let scan = rescanned.get_or_insert_with(|| Rescanned {
                from_offset: base,
                epoch_starts: EpochStarts::default(),
            });
            cut = recover_segment(io, &mut seg, config, &mut scan.epoch_starts)?;
        }
        if seg.first_batch_ts.is_none() {
            seg.first_batch_ts = read_header(&seg.log, 0, seg.size)?.map(|h| h.max_timestamp);
        }
        segments.push(seg);
        if cut {
            consistent = false;
            delete_segments(io, dir, &bases[i + 1..])?;
            break;
        }
    }
    if let Some(active) = segments.last_mut() {
        active.roll_base_ms = read_header(&active.log, 0, active.size)?
            .map(|h| h.max_timestamp)
            .filter(|&ts| ts >= 0);
    }
    Ok((segments, consistent, rescanned))
}

fn delete_segments(io: &dyn Io, dir: &Path, bases: &[i64]) -> Result<(), LogError> {
    for &base in bases {
        tracing::warn!(segment = base, "deleting segment after recovery cut");
        Segment::remove_files(io, dir, base)?;
    }
    Ok(())
}

/// Base offsets of the `.log` files in `dir`, sorted. Removes stale temp files and index files
/// whose log is gone.
fn list_segments(io: &dyn Io, dir: &Path) -> Result<Vec<i64>, LogError> {
    let mut logs = Vec::new();
    let mut others = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let stale_tmp = name
            .strip_suffix(".tmp")
            .is_some_and(|n| checkpoint::ALL_NAMES.contains(&n));
        if stale_tmp {
            io.remove_file(&entry.path())?;
            continue;
        }
        match parse_file_name(name) {
            Some((base, LOG_EXT)) => logs.push(base),
            Some((base, INDEX_EXT | TIME_INDEX_EXT | GAPS_EXT)) => {
                others.push((base, entry.path()))
            }
            _ => {}
        }
    }
    logs.sort_unstable();
    for (base, path) in others {
        if logs.binary_search(&base).is_err() {
            io.remove_file(&path)?;
        }
    }
    Ok(logs)
}

/// Finishes what a crashed cleaning pass left behind (the cleaner's commit protocol is in
/// `cleaner` and `docs/STORAGE.md`):
/// - `*.cleaned` files were never committed: deleted, the old segments stay.
/// - `<b>.log.swap` is a committed cleaned segment replacing every old segment with a base in
///   `[b, end)`, where `end` is one past its last batch (the cleaner always keeps the last batch
///   of a group, emptied if need be, so `end` is the range it replaced). Old segments in that
///   range are deleted, then it is renamed to `<b>.log`. Its indexes are deleted and rebuilt on
///   load, since a crash may have left either the old or the new ones in place.
/// - Index `.swap` files without a `.log.swap` belong to an uncommitted pass: deleted.
fn complete_swaps(io: &dyn Io, dir: &Path) -> Result<(), LogError> {
    let mut log_swaps = Vec::new();
    let mut index_swaps = Vec::new();
    let mut logs = Vec::new();
    let mut changed = false;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name
            .strip_suffix(CLEANED_SUFFIX)
            .is_some_and(|n| n.ends_with('.'))
        {
            tracing::warn!(file = name, "deleting uncommitted cleaned segment file");
            io.remove_file(&entry.path())?;
            changed = true;
        } else if let Some(stem) = name
            .strip_suffix(SWAP_SUFFIX)
            .and_then(|n| n.strip_suffix('.'))
        {
            match parse_file_name(stem) {
                Some((base, LOG_EXT)) => log_swaps.push(base),
                Some(_) => index_swaps.push(entry.path()),
                None => {}
            }
        } else if let Some((base, LOG_EXT)) = parse_file_name(name) {
            logs.push(base);
        }
    }
    log_swaps.sort_unstable();
    for path in index_swaps {
        io.remove_file(&path)?;
        changed = true;
    }
    for base in log_swaps {
        let [log_swap, _, _] = Segment::suffixed_paths(dir, base, SWAP_SUFFIX);
        let file = File::open(&log_swap)?;
        let size = file.metadata()?.len();
        let mut end = base;
        let checks = Checks {
            crc: false,
            gaps: true,
        };
        scan(&file, 0, size, base, base, checks, |m| {
            end = m.last_offset + 1
        })?;
        tracing::warn!(
            segment = base,
            end,
            "completing an interrupted segment swap"
        );
        for &old in logs.iter().filter(|&&b| b > base && b < end) {
            Segment::remove_files(io, dir, old)?;
        }
        let [log, index, time_index] = Segment::paths(dir, base);
        io.remove_file(&index)?;
        io.remove_file(&time_index)?;
        io.rename(&log_swap, &log)?;
        changed = true;
    }
    if changed {
        io.sync_dir(dir)?;
    }
    Ok(())
}
