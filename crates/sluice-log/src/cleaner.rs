//! Compaction (`cleanup.policy=compact`): one cleaning pass over the closed segments keeps, for
//! every key, only its latest record.
//!
//! A pass:
//! 1. Snapshot the closed segments (never the active one) under the append lock. The
//!    *cleanable range* is the longest prefix of them whose largest timestamp is at least
//!    `min_compaction_lag_ms` old.
//! 2. Build the offset map `key -> latest offset` over the whole cleanable range. Closed
//!    segments are immutable, so this reads them by pread with no lock held; truncation, the
//!    only thing that could change them, is detected at the swap and the group abandoned.
//! 3. Group consecutive segments (total size within `segment_bytes`, index within
//!    `segment_index_bytes`, offsets within u32 of the group base). For each group decide per
//!    batch: copy verbatim, drop, or rewrite with the surviving records (`records::rebuild`:
//!    same base offset, lastOffsetDelta, codec, producer fields, leader epoch; fresh CRC). A
//!    record survives if it has no key, or it is the latest for its key and not an expired
//!    tombstone. A tombstone expires when its segment was already cleaned by an earlier pass
//!    and `now - batch max timestamp > delete_retention_ms`. Control and transactional batches
//!    are copied verbatim and do not enter the map (without transaction state the cleaner cannot
//!    tell committed from aborted data). The group's last batch is always kept (emptied if
//!    nothing survives) so the new segment ends exactly where the group did: segment boundaries
//!    stay contiguous, and an interrupted swap knows which old segments it replaces.
//! 4. A group that would come out unchanged (one segment, nothing dropped) is skipped.
//!    Otherwise it is written to `<base>.{log,index,timeindex}.cleaned`, fsynced, and swapped in
//!    under the flush lock (which excludes truncation and other file-name changes):
//!    - validate that every source segment is still in the map, same file, same size;
//!    - commit: rename the three files `.cleaned` -> `.swap` (log last), fsync the directory;
//!    - replace the sources by the new segment in the map (append lock, briefly);
//!    - delete the other sources' files, rename the index `.swap`s into place, fsync the
//!      directory, then rename `<base>.log.swap` -> `<base>.log` and fsync the directory.
//!
//!    A crash before the commit leaves `.cleaned` files (deleted on open, old segments intact);
//!    after it, a `.log.swap` that open completes (see `recovery::complete_swaps`).
//! 5. Persist the cleaner checkpoint (end of the cleanable range) for the dirty-ratio
//!    bookkeeping and the tombstone rule.
//!
//! Failures while writing `.cleaned` files leave the live log untouched: the files are deleted
//! and the error returned, the log stays online. A failure during the swap takes it offline.

use std::collections::HashMap;
use std::fs::File;
use std::sync::Arc;

use sluice_protocol::batch::BatchHeader;
use sluice_types::Offset;

use crate::checkpoint;
use crate::config::LogConfig;
use crate::error::LogError;
use crate::index::INDEX_ENTRY_LEN;
use crate::io::{read_exact_at, Io};
use crate::log::Log;
use crate::records::{self, DecodedBatch};
use crate::recovery::{scan, Checks, ScanEnd};
use crate::segment::{BatchMeta, Segment, CLEANED_SUFFIX, SWAP_SUFFIX};

/// Kafka's compaction configs for one pass, with the current time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CleanOptions {
    pub now_ms: i64,
    /// `delete.retention.ms`: how long a tombstone survives once its segment has been cleaned.
    pub delete_retention_ms: i64,
    /// `min.compaction.lag.ms`: segments holding records newer than this are not cleaned.
    pub min_compaction_lag_ms: i64,
    /// `max.compaction.lag.ms`: clean, whatever the dirty ratio, once the oldest dirty data is
    /// older than this.
    pub max_compaction_lag_ms: i64,
    /// `min.cleanable.dirty.ratio`.
    pub min_cleanable_dirty_ratio: f64,
    /// Ignore the ratio and lag thresholds that decide *whether* to clean (not the min lag).
    pub force: bool,
}

impl Default for CleanOptions {
    /// Kafka's defaults (1 day, 0, forever, 0.5), at time 0, not forced.
    fn default() -> Self {
        CleanOptions {
            now_ms: 0,
            delete_retention_ms: 24 * 60 * 60 * 1000,
            min_compaction_lag_ms: 0,
            max_compaction_lag_ms: i64::MAX,
            min_cleanable_dirty_ratio: 0.5,
            force: false,
        }
    }
}

/// What one [`Log::clean`] call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CleanOutcome {
    /// A pass ran (thresholds met or forced, and something was cleanable).
    pub cleaned: bool,
    /// Old segments replaced by cleaned ones.
    pub segments_replaced: usize,
    /// Cleaned segments swapped in.
    pub segments_written: usize,
    /// Sizes of the replaced and the new segments.
    pub bytes_before: u64,
    pub bytes_after: u64,
    /// Records dropped because a later record has the same key.
    pub records_removed: u64,
    /// Expired tombstones dropped.
    pub tombstones_removed: u64,
    /// The cleaner checkpoint after the call.
    pub cleaned_offset: Offset,
}

/// Cheap, in-memory view for the broker's scheduler.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct CleaningStatus {
    /// Bytes of closed segments not yet cleaned (base offset >= `cleaned_offset`).
    pub dirty_bytes: u64,
    /// Bytes of all closed segments.
    pub closed_bytes: u64,
    /// `dirty_bytes / closed_bytes`, 0 without closed segments.
    pub dirty_ratio: f64,
    /// Max timestamp of the first batch of the oldest dirty closed segment (Kafka's first batch
    /// timestamp), for `max.compaction.lag.ms`.
    pub oldest_dirty_timestamp: Option<i64>,
    /// The cleaner checkpoint: segments below it have been cleaned.
    pub cleaned_offset: Offset,
}

impl CleaningStatus {
    /// Whether a pass is due under `opts` (ignoring `force`): something is dirty and either
    /// the dirty ratio reaches the minimum or the oldest dirty data exceeds the max lag.
    pub fn should_clean(&self, opts: &CleanOptions) -> bool {
        self.dirty_bytes > 0
            && (self.dirty_ratio >= opts.min_cleanable_dirty_ratio
                || self
                    .oldest_dirty_timestamp
                    .is_some_and(|ts| opts.now_ms.saturating_sub(ts) > opts.max_compaction_lag_ms))
    }
}

/// A closed segment as the cleaner snapshotted it.
#[derive(Debug, Clone)]
struct Source {
    base: i64,
    /// One past its last offset (== the next segment's base).
    end: i64,
    file: Arc<File>,
    size: u64,
    index_bytes: u64,
    max_timestamp: Option<i64>,
    /// Cleaned by an earlier pass (tombstones in it may expire).
    was_clean: bool,
    /// Written by the cleaner: gaps between batches are expected.
    gaps: bool,
}

/// Per-batch decision.
#[derive(Debug)]
enum Action {
    Copy,
    Drop,
    /// Rebuild with these records (indexes into the decoded batch; may be empty).
    Rewrite(Vec<usize>),
}

/// Counters of one group's filtering.
#[derive(Debug, Default)]
struct Removed {
    records: u64,
    tombstones: u64,
}

type OffsetMap = HashMap<Vec<u8>, i64>;

impl Log {
    /// Dirty ratio and oldest dirty timestamp, from in-memory bookkeeping only.
    pub fn cleaning_status(&self) -> CleaningStatus {
        let Ok(st) = self.lock_state() else {
            return CleaningStatus::default();
        };
        let mut status = CleaningStatus {
            cleaned_offset: Offset(st.cleaned_offset),
            ..CleaningStatus::default()
        };
        let closed = st.segments.len() - 1;
        for seg in st.segments.values().take(closed) {
            status.closed_bytes += seg.size;
            if seg.base_offset >= st.cleaned_offset {
                status.dirty_bytes += seg.size;
                if let Some(ts) = seg.first_batch_ts.filter(|&ts| ts >= 0) {
                    status.oldest_dirty_timestamp =
                        Some(status.oldest_dirty_timestamp.map_or(ts, |o| o.min(ts)));
                }
            }
        }
        if status.closed_bytes > 0 {
            status.dirty_ratio = status.dirty_bytes as f64 / status.closed_bytes as f64;
        }
        status
    }

    /// One cleaning pass (see the module docs). Appends and reads go on meanwhile; only the
    /// swap of each rewritten group takes the locks, briefly.
    pub fn clean(&self, opts: &CleanOptions) -> Result<CleanOutcome, LogError> {
        self.check_online()?;
        let _maintenance = self.maintenance.lock().map_err(|_| LogError::Offline)?;
        let status = self.cleaning_status();
        let mut outcome = CleanOutcome {
            cleaned_offset: status.cleaned_offset,
            ..CleanOutcome::default()
        };
        if !opts.force && !status.should_clean(opts) {
            return Ok(outcome);
        }
        let (sources, config) = {
            let st = self.lock_state()?;
            let closed = st.segments.len() - 1;
            let sources: Vec<Source> = st
                .segments
                .values()
                .take(closed)
                .map(|s| Source {
                    base: s.base_offset,
                    end: s.next_offset,
                    file: s.log.clone(),
                    size: s.size,
                    index_bytes: s.index.byte_len().max(s.time_index.byte_len()),
                    max_timestamp: s.max_timestamp.map(|(ts, _)| ts),
                    was_clean: s.base_offset < st.cleaned_offset,
                    gaps: s.compacted,
                })
                .collect();
            (sources, st.config)
        };
        let lag_horizon = opts
            .now_ms
            .saturating_sub(opts.min_compaction_lag_ms.max(0));
        let cleanable: Vec<Source> = sources
            .into_iter()
            .take_while(|s| s.max_timestamp.unwrap_or(i64::MIN) <= lag_horizon)
            .collect();
        let Some(cleanable_end) = cleanable.last().map(|s| s.end) else {
            return Ok(outcome);
        };
        outcome.cleaned = true;
        let map = build_offset_map(&cleanable)?;
        for group in group_sources(&cleanable, &config) {
            self.clean_group(group, &map, opts, &config, &mut outcome)?;
        }
        // Bookkeeping only: a crash before this write means the next pass redoes the work.
        let _flush = self.lock_flush()?;
        let mut st = self.lock_state()?;
        let new_offset = cleanable_end.min(st.active().base_offset);
        if new_offset > st.cleaned_offset {
            checkpoint::write_named(&*self.io, &self.dir, checkpoint::CLEANER_NAME, new_offset)
                .map_err(|e| self.fail(e))?;
            st.cleaned_offset = new_offset;
        }
        outcome.cleaned_offset = Offset(st.cleaned_offset);
        drop(st);
        tracing::info!(
            dir = %self.dir.display(),
            replaced = outcome.segments_replaced,
            bytes_before = outcome.bytes_before,
            bytes_after = outcome.bytes_after,
            records_removed = outcome.records_removed,
            tombstones_removed = outcome.tombstones_removed,
            cleaned_offset = outcome.cleaned_offset.get(),
            "cleaning pass done"
        );
        Ok(outcome)
    }

    fn clean_group(
        &self,
        group: &[Source],
        map: &OffsetMap,
        opts: &CleanOptions,
        config: &LogConfig,
        outcome: &mut CleanOutcome,
    ) -> Result<(), LogError> {
        // Decide first (cheap: no writes), so an already clean segment is not rewritten.
        let mut plan = Vec::with_capacity(group.len());
        let mut removed = Removed::default();
        let mut changed = group.len() > 1;
        for (i, src) in group.iter().enumerate() {
            let metas = batches_of(src)?;
            let mut actions = Vec::with_capacity(metas.len());
            for (j, meta) in metas.iter().enumerate() {
                let last_of_group = i + 1 == group.len() && j + 1 == metas.len();
                let action = decide(src, meta, map, opts, last_of_group, &mut removed)?;
                changed |= !matches!(action, Action::Copy);
                actions.push(action);
            }
            plan.push((metas, actions));
        }
        if !changed {
            return Ok(());
        }
        let base = group[0].base;
        let cleaned = Segment::suffixed_paths(&self.dir, base, CLEANED_SUFFIX);
        let io = &*self.io;
        let written = write_cleaned(io, &cleaned, base, group, &plan, config);
        let seg = match written {
            Ok(seg) => seg,
            Err(e) => {
                for path in &cleaned {
                    let _ = io.remove_file(path);
                }
                tracing::warn!(dir = %self.dir.display(), segment = base, error = %e, "cleaning a segment group failed");
                return Err(e);
            }
        };
        let new_size = seg.size;
        if self.swap_in(group, seg)? {
            outcome.segments_replaced += group.len();
            outcome.segments_written += 1;
            outcome.bytes_before += group.iter().map(|s| s.size).sum::<u64>();
            outcome.bytes_after += new_size;
            outcome.records_removed += removed.records;
            outcome.tombstones_removed += removed.tombstones;
        }
        Ok(())
    }

    /// Replaces `group` by `seg` (its files still named `.cleaned`) on disk and in memory.
    /// Returns false (and deletes the cleaned files) if a source changed meanwhile.
    fn swap_in(&self, group: &[Source], seg: Segment) -> Result<bool, LogError> {
        let io = &*self.io;
        let base = group[0].base;
        let cleaned = Segment::suffixed_paths(&self.dir, base, CLEANED_SUFFIX);
        let swap = Segment::suffixed_paths(&self.dir, base, SWAP_SUFFIX);
        let live = Segment::paths(&self.dir, base);
        // Excludes truncation, retention and flush rounds while file names change.
        let _flush = self.lock_flush()?;
        let unchanged = {
            let st = self.lock_state()?;
            let active = st.active().base_offset;
            group.iter().all(|src| {
                st.segments.get(&src.base).is_some_and(|s| {
                    Arc::ptr_eq(&s.log, &src.file) && s.size == src.size && s.base_offset != active
                })
            })
        };
        if !unchanged {
            tracing::info!(dir = %self.dir.display(), segment = base, "segments changed during cleaning; group skipped");
            for path in &cleaned {
                io.remove_file(path).map_err(|e| self.fail(e))?;
            }
            return Ok(false);
        }
        let group_end = group.last().map_or(base, |s| s.end);
        let commit = || -> std::io::Result<()> {
            // The cleaner checkpoint first: open accepts gaps only in segments below it.
            if self.lock_state().map_or(0, |st| st.cleaned_offset) < group_end {
                checkpoint::write_named(io, &self.dir, checkpoint::CLEANER_NAME, group_end)?;
            }
            // Index files next: the log's rename is the commit point.
            io.rename(&cleaned[1], &swap[1])?;
            io.rename(&cleaned[2], &swap[2])?;
            io.rename(&cleaned[0], &swap[0])?;
            io.sync_dir(&self.dir)
        };
        commit().map_err(|e| self.fail(e))?;
        {
            let mut st = self.lock_state()?;
            for src in group {
                st.segments.remove(&src.base);
            }
            st.segments.insert(base, seg);
            st.recompute_max_timestamp();
            st.cleaned_offset = st.cleaned_offset.max(group_end);
        }
        let finish = || -> std::io::Result<()> {
            // Old segments must be gone for good before `<base>.log` covers their range, or a
            // restart would see overlapping segments.
            for src in &group[1..] {
                Segment::remove_files(io, &self.dir, src.base)?;
            }
            io.rename(&swap[1], &live[1])?;
            io.rename(&swap[2], &live[2])?;
            io.sync_dir(&self.dir)?;
            io.rename(&swap[0], &live[0])?;
            io.sync_dir(&self.dir)
        };
        finish().map_err(|e| self.fail(e))?;
        Ok(true)
    }
}

/// The batches of a closed segment, by header scan.
fn batches_of(src: &Source) -> Result<Vec<BatchMeta>, LogError> {
    let mut metas = Vec::new();
    let checks = Checks {
        crc: false,
        gaps: src.gaps,
    };
    let end = scan(&src.file, 0, src.size, src.base, src.base, checks, |m| {
        metas.push(*m)
    })?;
    match end {
        ScanEnd::Clean => Ok(metas),
        ScanEnd::Invalid { position, reason } => Err(LogError::Corrupt(format!(
            "segment {} at position {position}: {reason}",
            src.base
        ))),
    }
}

fn read_batch(src: &Source, meta: &BatchMeta) -> Result<Vec<u8>, LogError> {
    let mut buf = vec![0u8; meta.size as usize];
    read_exact_at(&src.file, &mut buf, meta.position)?;
    Ok(buf)
}

fn decode(src: &Source, meta: &BatchMeta, bytes: &[u8]) -> Result<DecodedBatch, LogError> {
    records::decode(bytes).map_err(|e| {
        LogError::Corrupt(format!(
            "batch at offset {} in segment {}: {e}",
            meta.base_offset, src.base
        ))
    })
}

/// Whether the cleaner looks inside a batch at all.
fn compactable(h: &BatchHeader) -> bool {
    !h.is_control() && !h.is_transactional() && h.records_count > 0
}

/// `key -> offset of its latest record` over `sources`.
fn build_offset_map(sources: &[Source]) -> Result<OffsetMap, LogError> {
    let mut map = OffsetMap::new();
    for src in sources {
        for meta in batches_of(src)? {
            let bytes = read_batch(src, &meta)?;
            let header = BatchHeader::parse(&bytes)?;
            if !compactable(&header) {
                continue;
            }
            for r in decode(src, &meta, &bytes)?.records {
                if let Some(key) = r.key {
                    map.insert(key.to_vec(), r.offset);
                }
            }
        }
    }
    Ok(map)
}

fn decide(
    src: &Source,
    meta: &BatchMeta,
    map: &OffsetMap,
    opts: &CleanOptions,
    last_of_group: bool,
    removed: &mut Removed,
) -> Result<Action, LogError> {
    let bytes = read_batch(src, meta)?;
    let header = BatchHeader::parse(&bytes)?;
    if header.is_control() || header.is_transactional() {
        return Ok(Action::Copy);
    }
    if header.records_count == 0 {
        // An empty batch kept by an earlier pass to end its segment.
        return Ok(if last_of_group {
            Action::Copy
        } else {
            Action::Drop
        });
    }
    let tombstones_expire = src.was_clean
        && opts.now_ms.saturating_sub(header.max_timestamp) > opts.delete_retention_ms;
    let batch = decode(src, meta, &bytes)?;
    let mut keep = Vec::with_capacity(batch.records.len());
    for (i, r) in batch.records.iter().enumerate() {
        let Some(key) = &r.key else {
            keep.push(i);
            continue;
        };
        let latest = map.get(key.as_ref()).copied().unwrap_or(r.offset);
        if r.offset < latest {
            removed.records += 1;
        } else if r.tombstone && tombstones_expire {
            removed.tombstones += 1;
        } else {
            keep.push(i);
        }
    }
    Ok(if keep.len() == batch.records.len() {
        Action::Copy
    } else if keep.is_empty() && !last_of_group {
        Action::Drop
    } else {
        Action::Rewrite(keep)
    })
}

/// Writes a group's surviving batches to the `.cleaned` files and fsyncs them.
fn write_cleaned(
    io: &dyn Io,
    paths: &[std::path::PathBuf; 3],
    base: i64,
    group: &[Source],
    plan: &[(Vec<BatchMeta>, Vec<Action>)],
    config: &LogConfig,
) -> Result<Segment, LogError> {
    const CHUNK: usize = 1 << 20;
    let mut seg = Segment::open_paths(io, paths, base)?;
    seg.compacted = true;
    io.set_len(&seg.log, 0)?;
    seg.index.truncate(io, 0)?;
    seg.time_index.truncate(io, 0)?;
    seg.size = 0;
    let mut buf: Vec<u8> = Vec::with_capacity(CHUNK);
    let mut flushed = 0u64;
    for (src, (metas, actions)) in group.iter().zip(plan) {
        for (meta, action) in metas.iter().zip(actions) {
            let out = match action {
                Action::Drop => continue,
                Action::Copy => read_batch(src, meta)?,
                Action::Rewrite(keep) => {
                    let bytes = read_batch(src, meta)?;
                    let batch = decode(src, meta, &bytes)?;
                    records::rebuild(&batch, keep).map_err(LogError::Corrupt)?
                }
            };
            let header = BatchHeader::parse(&out)?;
            let position = flushed + buf.len() as u64;
            seg.track_batch(
                &BatchMeta {
                    position,
                    size: out.len() as u64,
                    base_offset: header.base_offset,
                    last_offset: header.last_offset(),
                    max_timestamp: header.max_timestamp,
                    leader_epoch: header.partition_leader_epoch,
                },
                config.index_interval_bytes,
            );
            buf.extend_from_slice(&out);
            if buf.len() >= CHUNK {
                io.write_all_at(&seg.log, &buf, flushed)?;
                flushed += buf.len() as u64;
                buf.clear();
            }
        }
    }
    io.write_all_at(&seg.log, &buf, flushed)?;
    seg.size = flushed + buf.len() as u64;
    seg.persist_indexes(io)?;
    io.sync_data(&seg.log)?;
    io.sync_data(seg.index.file())?;
    io.sync_data(seg.time_index.file())?;
    seg.log_dirty = false;
    seg.index_dirty = false;
    if seg.next_offset != group.last().map_or(base, |s| s.end) {
        return Err(LogError::Corrupt(format!(
            "cleaned segment {base} ends at {} instead of {}",
            seg.next_offset,
            group.last().map_or(base, |s| s.end)
        )));
    }
    Ok(seg)
}

/// Consecutive sources merged into one cleaned segment while it stays within the segment and
/// index size limits and u32 relative offsets.
fn group_sources<'a>(sources: &'a [Source], config: &LogConfig) -> Vec<&'a [Source]> {
    let max_size = config.segment_bytes.min(u64::from(u32::MAX));
    let max_index = u64::from(config.segment_index_bytes);
    let mut groups = Vec::new();
    let mut start = 0;
    let (mut size, mut index) = (0u64, 0u64);
    for (i, src) in sources.iter().enumerate() {
        let fits = i > start
            && size + src.size <= max_size
            && index + src.index_bytes + INDEX_ENTRY_LEN <= max_index
            && src.end - 1 - sources[start].base <= i64::from(u32::MAX);
        if i > start && !fits {
            groups.push(&sources[start..i]);
            start = i;
            size = 0;
            index = 0;
        }
        size += src.size;
        index += src.index_bytes;
    }
    if start < sources.len() {
        groups.push(&sources[start..]);
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(base: i64, end: i64, size: u64) -> Source {
        Source {
            gaps: false,
            base,
            end,
            file: Arc::new(tempfile::tempfile().unwrap()),
            size,
            index_bytes: 0,
            max_timestamp: None,
            was_clean: false,
        }
    }

    #[test]
    fn groups_respect_segment_bytes() {
        let config = LogConfig {
            segment_bytes: 100,
            ..LogConfig::default()
        };
        let sources = [
            src(0, 10, 40),
            src(10, 20, 40),
            src(20, 30, 40),
            src(30, 40, 150),
            src(40, 50, 10),
        ];
        let groups: Vec<Vec<i64>> = group_sources(&sources, &config)
            .iter()
            .map(|g| g.iter().map(|s| s.base).collect())
            .collect();
        assert_eq!(groups, vec![vec![0, 10], vec![20], vec![30], vec![40]]);
        assert!(group_sources(&[], &config).is_empty());
    }

    #[test]
    fn status_thresholds() {
        let status = CleaningStatus {
            dirty_bytes: 30,
            closed_bytes: 100,
            dirty_ratio: 0.3,
            oldest_dirty_timestamp: Some(1000),
            cleaned_offset: Offset(0),
        };
        let opts = CleanOptions {
            now_ms: 5000,
            ..CleanOptions::default()
        };
        assert!(!status.should_clean(&opts));
        assert!(status.should_clean(&CleanOptions {
            min_cleanable_dirty_ratio: 0.3,
            ..opts
        }));
        assert!(status.should_clean(&CleanOptions {
            max_compaction_lag_ms: 3999,
            ..opts
        }));
        assert!(!CleaningStatus::default().should_clean(&CleanOptions {
            min_cleanable_dirty_ratio: 0.0,
            ..opts
        }));
    }
}
