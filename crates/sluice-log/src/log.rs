//! [`Log`]: one partition's log — segments, offsets, append (as leader or follower),
//! group-commit flush, reads, timestamp lookups, truncation, the leader-epoch cache.
//!
//! Locking (always taken in this order; none is held across another's I/O except as noted):
//! - `maintenance` (mutex): one retention, DeleteRecords or cleaning pass at a time; held for a
//!   whole cleaning pass, so nothing else removes segments under the cleaner.
//! - `flush_lock` (mutex): serialises fsyncs and truncation; holds the checkpoint bookkeeping.
//!   Appends never take it, so they continue while an fsync runs.
//! - `files` (rwlock): readers hold it shared while they pread outside the append lock;
//!   truncation takes it exclusively so no reader sees bytes being cut and rewritten.
//! - `state` (mutex, "the append lock"): segments, offsets, indexes, the leader-epoch cache.
//!   Appends hold it for the pwrite (page cache, no fsync); readers, flush and lookups hold it
//!   only to snapshot.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use bytes::Bytes;
use sluice_protocol::batch::{
    set_base_offset, set_partition_leader_epoch, verify_crc, BatchError, BatchHeader, Batches,
    BATCH_HEADER_LEN, MAGIC_V2,
};
use sluice_types::{LeaderEpoch, Offset};

use crate::checkpoint;
use crate::config::LogConfig;
use crate::epoch_cache::{self, EpochCache, EpochEntry};
use crate::error::LogError;
use crate::io::{Io, StdIo};
use crate::read::{find_batch, read_batches, SegmentView};
use crate::recovery::{self, Rescanned};
use crate::segment::{BatchMeta, Segment};

/// Result of a successful [`Log::append`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    pub base_offset: Offset,
    pub last_offset: Offset,
    /// Largest `maxTimestamp` of the appended batches.
    pub max_timestamp: i64,
    pub log_start_offset: Offset,
}

/// Result of [`Log::read`]: whole batches, verbatim from the segment files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadResult {
    pub data: Bytes,
    pub log_start_offset: Offset,
    pub log_end_offset: Offset,
}

/// Unused capacity a read buffer may keep; beyond this it is shrunk to its length.
const READ_SLACK: usize = 64 * 1024;

/// The leading bytes of a batch the log rewrites: base offset (0..8), batch length (8..12,
/// unchanged) and partition leader epoch (12..16).
const PATCHED_PREFIX: usize = 16;

fn set_base_offset_prefix(prefix: &mut [u8; PATCHED_PREFIX], base_offset: i64) {
    prefix[0..8].copy_from_slice(&base_offset.to_be_bytes());
}

fn set_leader_epoch_prefix(prefix: &mut [u8; PATCHED_PREFIX], epoch: i32) {
    prefix[12..16].copy_from_slice(&epoch.to_be_bytes());
}

/// How an append places its batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Placement {
    /// Leader: offsets assigned from the log end, this epoch stamped on every batch.
    Assign { leader_epoch: i32 },
    /// Follower: offsets and epochs as the batches carry them.
    AsGiven,
}

/// One batch of an append's input, as framing found it.
#[derive(Debug, Clone, Copy)]
struct Incoming {
    /// Byte position in the caller's buffer.
    position: usize,
    header: BatchHeader,
}

/// Splits `batches` into well-framed v2 batches with a sane lastOffsetDelta, checking each
/// CRC if `check_crc`. Nothing is written, so a refusal leaves the log as it was.
fn frame(batches: &[u8], check_crc: bool) -> Result<Vec<Incoming>, LogError> {
    let mut incoming = Vec::new();
    let mut it = Batches::new(batches);
    loop {
        let position = it.position();
        let Some(item) = it.next() else { break };
        let (header, bytes) = item?;
        if header.magic != MAGIC_V2 {
            return Err(BatchError::UnsupportedMagic(header.magic).into());
        }
        if header.last_offset_delta < 0 {
            return Err(BatchError::InvalidRecordCount {
                records_count: header.records_count,
                last_offset_delta: header.last_offset_delta,
            }
            .into());
        }
        if check_crc {
            verify_crc(bytes)?;
        }
        incoming.push(Incoming { position, header });
    }
    if incoming.is_empty() {
        return Err(BatchError::Empty.into());
    }
    Ok(incoming)
}

/// Everything behind the append lock.
#[derive(Debug)]
pub(crate) struct State {
    /// By base offset; contiguous; the last one is active. Never empty.
    pub segments: BTreeMap<i64, Segment>,
    /// Log-wide (max timestamp, base offset of the first batch carrying it).
    pub max_timestamp: Option<(i64, i64)>,
    /// A segment file was created since the last directory fsync.
    pub dir_dirty: bool,
    /// Segment size/age and index settings; replaced live by [`Log::set_config`].
    pub config: LogConfig,
    /// The log start set by DeleteRecords (persisted in `log-start-offset`); the effective log
    /// start is the larger of this and the first segment's base offset.
    pub explicit_log_start: i64,
    /// Segments with a base offset below this have been through a cleaning pass (persisted in
    /// `cleaner-offset-checkpoint`).
    pub cleaned_offset: i64,
    /// Where each leader epoch starts (persisted in `leader-epoch-checkpoint`).
    pub epochs: EpochCache,
    /// `epochs` changed since the checkpoint was last written; the next flush round writes it.
    pub epochs_dirty: bool,
}

impl State {
    pub fn active(&self) -> &Segment {
        self.segments
            .values()
            .next_back()
            .expect("a log always has a segment")
    }

    fn active_mut(&mut self) -> &mut Segment {
        self.segments
            .values_mut()
            .next_back()
            .expect("a log always has a segment")
    }

    pub fn first_segment_base(&self) -> i64 {
        self.segments.keys().next().copied().unwrap_or(0)
    }

    pub fn log_start(&self) -> i64 {
        self.first_segment_base().max(self.explicit_log_start)
    }

    pub fn log_end(&self) -> i64 {
        self.active().next_offset
    }

    /// Moves the first epoch entry up to the log start after the log start moved (Kafka's
    /// `truncateFromStart`). The checkpoint is rewritten by the next flush round; until then
    /// open re-applies this from the persisted log start.
    pub fn epochs_follow_log_start(&mut self) {
        let log_start = self.log_start();
        if self.epochs.truncate_from_start(log_start) {
            self.epochs_dirty = true;
        }
    }

    /// Base offset of the segment holding `offset` (or the first segment).
    fn segment_base_for(&self, offset: i64) -> i64 {
        self.segments
            .range(..=offset)
            .next_back()
            .map_or_else(|| self.log_start(), |(b, _)| *b)
    }

    pub fn recompute_max_timestamp(&mut self) {
        self.max_timestamp = None;
        for seg in self.segments.values() {
            if let Some((ts, off)) = seg.max_timestamp {
                if self.max_timestamp.is_none_or(|(max, _)| ts > max) {
                    self.max_timestamp = Some((ts, off));
                }
            }
        }
    }

    /// Views of the segment holding `offset` and all later ones.
    fn views_from(&self, offset: i64) -> Vec<SegmentView> {
        let base = self.segment_base_for(offset);
        self.segments
            .range(base..)
            .map(|(_, s)| SegmentView {
                base_offset: s.base_offset,
                file: s.log.clone(),
                size: s.size,
                gaps: s.compacted,
            })
            .collect()
    }
}

/// Behind the flush mutex.
#[derive(Debug)]
pub(crate) struct FlushState {
    /// The offset stored in the `recovery-point` file (None: no file yet).
    checkpointed: Option<i64>,
}

/// One partition's log. `Send + Sync`; share it as `Arc<Log>`.
#[derive(Debug)]
pub struct Log {
    pub(crate) dir: PathBuf,
    pub(crate) io: Arc<dyn Io>,
    pub(crate) state: Mutex<State>,
    pub(crate) flush_lock: Mutex<FlushState>,
    pub(crate) files: RwLock<()>,
    /// Serialises retention, DeleteRecords and cleaning (see the module docs).
    pub(crate) maintenance: Mutex<()>,
    /// Everything below is fsynced (the recovery point).
    durable: AtomicI64,
    /// Sticky after a failed write or fsync.
    offline: AtomicBool,
}

impl Log {
    /// Opens or creates the log in `dir`. `clean_shutdown == false` means the previous process
    /// may have crashed: recover (see the `recovery` module).
    pub fn open(dir: &Path, config: LogConfig, clean_shutdown: bool) -> Result<Log, LogError> {
        Log::open_with_io(dir, config, clean_shutdown, Arc::new(StdIo))
    }

    /// [`Log::open`] with a chosen I/O implementation (fault injection in tests).
    pub fn open_with_io(
        dir: &Path,
        config: LogConfig,
        clean_shutdown: bool,
        io: Arc<dyn Io>,
    ) -> Result<Log, LogError> {
        let opened = recovery::open_segments(&*io, dir, &config, clean_shutdown)?;
        let mut state = State {
            segments: opened
                .segments
                .into_iter()
                .map(|s| (s.base_offset, s))
                .collect(),
            max_timestamp: None,
            dir_dirty: false,
            config,
            explicit_log_start: 0,
            cleaned_offset: 0,
            epochs: EpochCache::default(),
            epochs_dirty: false,
        };
        state.recompute_max_timestamp();
        let log_end = state.log_end();
        // Recovery may have cut below a stored log start or cleaner checkpoint: clamp.
        state.explicit_log_start = checkpoint::read_named(dir, checkpoint::LOG_START_NAME)
            .unwrap_or(0)
            .min(log_end);
        state.cleaned_offset = checkpoint::read_named(dir, checkpoint::CLEANER_NAME)
            .unwrap_or(0)
            .min(log_end);
        let (epochs, write_epochs) = open_epoch_cache(dir, &state, opened.rescanned.as_ref())?;
        state.epochs = epochs;
        if write_epochs {
            epoch_cache::write(&*io, dir, &state.epochs)?;
        }
        if opened.rescanned.is_some() {
            // Only now: the epochs of the rescanned batches are in the file, so the next open
            // may skip scanning them.
            checkpoint::write(&*io, dir, log_end)?;
        }
        // The recovery point is now the log end, or there is no file for a new log.
        let checkpointed = checkpoint::read(dir).filter(|&c| c == log_end);
        tracing::debug!(dir = %dir.display(), log_end, "log opened");
        Ok(Log {
            dir: dir.to_path_buf(),
            io,
            state: Mutex::new(state),
            flush_lock: Mutex::new(FlushState { checkpointed }),
            files: RwLock::new(()),
            maintenance: Mutex::new(()),
            durable: AtomicI64::new(log_end),
            offline: AtomicBool::new(false),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn is_offline(&self) -> bool {
        self.offline.load(Ordering::SeqCst)
    }

    pub(crate) fn check_online(&self) -> Result<(), LogError> {
        if self.is_offline() {
            Err(LogError::Offline)
        } else {
            Ok(())
        }
    }

    /// Takes the log offline (sticky) because a write or fsync failed.
    pub(crate) fn fail(&self, e: io::Error) -> LogError {
        if !self.offline.swap(true, Ordering::SeqCst) {
            tracing::error!(dir = %self.dir.display(), error = %e, "log I/O failure; log is offline");
        }
        LogError::Io(e)
    }

    /// The append lock. A poisoned lock means a thread panicked mid-update: go offline.
    pub(crate) fn lock_state(&self) -> Result<MutexGuard<'_, State>, LogError> {
        self.state.lock().map_err(|_| {
            self.offline.store(true, Ordering::SeqCst);
            LogError::Offline
        })
    }

    pub(crate) fn lock_flush(&self) -> Result<MutexGuard<'_, FlushState>, LogError> {
        self.flush_lock.lock().map_err(|_| {
            self.offline.store(true, Ordering::SeqCst);
            LogError::Offline
        })
    }

    /// Replaces the segment size/age and index settings (a topic config change). Takes effect
    /// at the next roll decision; existing segments are left as they are.
    pub fn set_config(&self, config: LogConfig) {
        if let Ok(mut st) = self.lock_state() {
            st.config = config;
        }
    }

    /// The settings in force.
    pub fn config(&self) -> LogConfig {
        self.lock_state()
            .map_or_else(|_| LogConfig::default(), |s| s.config)
    }

    pub fn log_start_offset(&self) -> Offset {
        Offset(self.lock_state().map_or(0, |s| s.log_start()))
    }

    /// The next offset to assign.
    pub fn log_end_offset(&self) -> Offset {
        Offset(self.lock_state().map_or(0, |s| s.log_end()))
    }

    /// Everything below this offset is fsynced.
    pub fn durable_offset(&self) -> Offset {
        Offset(self.durable.load(Ordering::SeqCst))
    }

    /// Appends already-validated batches (see `validate_produce_batches`), assigning offsets
    /// from the log end, and rewrites base offset and partition leader epoch in `batches` too
    /// (both outside the CRC) so the caller sees what was stored. See [`Log::append_from`].
    pub fn append(
        &self,
        batches: &mut [u8],
        leader_epoch: LeaderEpoch,
        now_ms: i64,
    ) -> Result<AppendInfo, LogError> {
        let info = self.append_from(batches, leader_epoch, now_ms)?;
        let leader_epoch = leader_epoch.get();
        let mut next = info.base_offset.get();
        let mut position = 0;
        while position + BATCH_HEADER_LEN <= batches.len() {
            let Ok(h) = BatchHeader::parse(&batches[position..]) else {
                break;
            };
            let end = position + h.total_size();
            set_base_offset(&mut batches[position..end], next);
            set_partition_leader_epoch(&mut batches[position..end], leader_epoch);
            next += i64::from(h.last_offset_delta) + 1;
            position = end;
        }
        Ok(info)
    }

    /// Appends already-validated batches without copying or changing them: each batch is
    /// written as its first 16 bytes with the assigned base offset and the partition leader
    /// epoch patched in (both outside the CRC), then the rest of the caller's bytes. Rolls first
    /// if the active segment is too big or too old. No fsync.
    ///
    /// A crash between the two writes of a batch leaves a batch whose CRC does not match (or a
    /// short one): recovery cuts it like any torn tail, and it was never acknowledged.
    pub fn append_from(
        &self,
        batches: &[u8],
        leader_epoch: LeaderEpoch,
        now_ms: i64,
    ) -> Result<AppendInfo, LogError> {
        let leader_epoch = leader_epoch.get();
        self.check_online()?;
        // Framing first, without the lock.
        let incoming = frame(batches, false)?;
        let mut st = self.lock_state()?;
        self.check_online()?;
        self.write_batches(
            &mut st,
            batches,
            &incoming,
            Placement::Assign { leader_epoch },
            now_ms,
        )
    }

    /// Appends batches replicated from the leader, as they are: their base offsets and partition
    /// leader epochs are kept, nothing in them is rewritten (Kafka's `appendAsFollower`). Each
    /// must be a well-framed v2 batch with a valid CRC, each must start after the previous one
    /// ends, and the first must start at or after the log end: a gap is allowed (a compacted
    /// leader log has them) and the log end then jumps to the last offset + 1. Rolls like
    /// [`Log::append_from`], taking the batches' largest timestamp as the time (the follower
    /// rolls by the leader's record timestamps). Records a leader-epoch entry for every batch
    /// whose epoch is newer than the latest. No fsync (see [`Log::flush`]).
    ///
    /// Refusals write nothing: `InvalidBatch` (framing, magic, CRC), `AppendBelowLogEnd` (the
    /// follower must truncate or fetch from its log end), `InvalidOffsets` (not increasing, or
    /// more than 2^32 offsets past the active segment's base).
    pub fn append_as_follower(&self, batches: &[u8]) -> Result<AppendInfo, LogError> {
        self.check_online()?;
        let incoming = frame(batches, true)?;
        for pair in incoming.windows(2) {
            let (prev, h) = (pair[0].header, pair[1].header);
            if h.base_offset <= prev.last_offset() {
                return Err(LogError::InvalidOffsets {
                    offset: Offset(h.base_offset),
                    reason: format!(
                        "offsets out of order: the batch before ends at {}",
                        prev.last_offset()
                    ),
                });
            }
        }
        let now_ms = incoming
            .iter()
            .map(|i| i.header.max_timestamp)
            .max()
            .unwrap_or(0);
        let mut st = self.lock_state()?;
        self.check_online()?;
        self.write_batches(&mut st, batches, &incoming, Placement::AsGiven, now_ms)
    }

    /// The part of an append shared by leader and follower: roll if due, place the batches,
    /// write them (the leader's with base offset and epoch patched into the first 16 bytes),
    /// then update indexes, max timestamp and the epoch cache. Under the append lock.
    fn write_batches(
        &self,
        st: &mut State,
        batches: &[u8],
        incoming: &[Incoming],
        placement: Placement,
        now_ms: i64,
    ) -> Result<AppendInfo, LogError> {
        let log_end = st.log_end();
        let (first, last) = match placement {
            Placement::Assign { .. } => {
                let span: i64 = incoming
                    .iter()
                    .map(|i| i64::from(i.header.last_offset_delta) + 1)
                    .sum();
                (log_end, log_end + span - 1)
            }
            Placement::AsGiven => (
                incoming[0].header.base_offset,
                incoming[incoming.len() - 1].header.last_offset(),
            ),
        };
        if first < log_end {
            return Err(LogError::AppendBelowLogEnd {
                first_offset: Offset(first),
                log_end: Offset(log_end),
            });
        }
        let len = batches.len() as u64;
        let config = st.config;
        if st.active().needs_roll(&config, len, last, now_ms) {
            self.roll(st)?;
        }
        let seg_base = st.active().base_offset;
        if last - seg_base > i64::from(u32::MAX) || len > u64::from(u32::MAX) {
            return Err(match placement {
                // Only reachable with batches claiming billions of records.
                Placement::Assign { .. } => {
                    let delta = incoming[0].header.last_offset_delta;
                    BatchError::InvalidRecordCount {
                        records_count: delta.saturating_add(1),
                        last_offset_delta: delta,
                    }
                    .into()
                }
                Placement::AsGiven => LogError::InvalidOffsets {
                    offset: Offset(last),
                    reason: format!(
                        "more than 2^32 offsets past the active segment's base {seg_base}"
                    ),
                },
            });
        }
        let start_position = st.active().size;
        let mut next = log_end;
        let mut gaps = false;
        let mut metas = Vec::with_capacity(incoming.len());
        for inc in incoming {
            let h = &inc.header;
            let (base_offset, leader_epoch) = match placement {
                Placement::Assign { leader_epoch } => (next, leader_epoch),
                Placement::AsGiven => (h.base_offset, h.partition_leader_epoch),
            };
            gaps |= base_offset != next;
            metas.push(BatchMeta {
                position: start_position + inc.position as u64,
                size: h.total_size() as u64,
                base_offset,
                last_offset: base_offset + i64::from(h.last_offset_delta),
                max_timestamp: h.max_timestamp,
                leader_epoch,
            });
            next = base_offset + i64::from(h.last_offset_delta) + 1;
        }
        if gaps && !st.active().compacted {
            self.allow_gaps(st)?;
        }
        let prefixes: Vec<[u8; PATCHED_PREFIX]> = match placement {
            Placement::Assign { leader_epoch } => incoming
                .iter()
                .zip(&metas)
                .map(|(inc, meta)| {
                    let mut prefix = [0u8; PATCHED_PREFIX];
                    prefix.copy_from_slice(&batches[inc.position..inc.position + PATCHED_PREFIX]);
                    set_base_offset_prefix(&mut prefix, meta.base_offset);
                    set_leader_epoch_prefix(&mut prefix, leader_epoch);
                    prefix
                })
                .collect(),
            Placement::AsGiven => Vec::new(),
        };
        let parts: Vec<&[u8]> = match placement {
            Placement::Assign { .. } => incoming
                .iter()
                .zip(&prefixes)
                .flat_map(|(inc, prefix)| {
                    let end = inc.position + inc.header.total_size();
                    [&prefix[..], &batches[inc.position + PATCHED_PREFIX..end]]
                })
                .collect(),
            // Framing covered the whole buffer: it is the batches, back to back.
            Placement::AsGiven => vec![batches],
        };
        let io = &*self.io;
        st.active_mut()
            .append(io, &parts, &metas, &config, now_ms)
            .map_err(|e| self.fail(e))?;
        let mut max_timestamp = i64::MIN;
        for m in &metas {
            max_timestamp = max_timestamp.max(m.max_timestamp);
            if st.max_timestamp.is_none_or(|(ts, _)| m.max_timestamp > ts) {
                st.max_timestamp = Some((m.max_timestamp, m.base_offset));
            }
            self.note_epoch(st, m);
        }
        Ok(AppendInfo {
            base_offset: Offset(metas[0].base_offset),
            last_offset: Offset(next - 1),
            max_timestamp,
            log_start_offset: Offset(st.log_start()),
        })
    }

    /// Records the epoch of a batch just appended in the epoch cache, if it is a new one.
    fn note_epoch(&self, st: &mut State, meta: &BatchMeta) {
        if st.epochs.assign(meta.leader_epoch, meta.base_offset) {
            st.epochs_dirty = true;
            tracing::info!(
                dir = %self.dir.display(),
                epoch = meta.leader_epoch,
                start_offset = meta.base_offset,
                "new leader epoch"
            );
        } else if let Some(latest) = st.epochs.latest() {
            if (0..latest.epoch.0).contains(&meta.leader_epoch) {
                tracing::warn!(
                    dir = %self.dir.display(),
                    epoch = meta.leader_epoch,
                    offset = meta.base_offset,
                    latest_epoch = latest.epoch.0,
                    "batch carries an epoch older than the latest; epoch cache unchanged"
                );
            }
        }
    }

    /// Lets the active segment take batches with offset gaps: an empty `<base>.gaps` marker
    /// tells open to load it as it loads cleaned segments. The marker's directory entry is
    /// made durable by the flush that syncs the gapped batches (it marks the directory dirty),
    /// before they count as durable; without it recovery would cut the segment at the gap.
    fn allow_gaps(&self, st: &mut State) -> Result<(), LogError> {
        let base = st.active().base_offset;
        self.io
            .open(&Segment::gaps_marker(&self.dir, base))
            .map_err(|e| self.fail(e))?;
        st.active_mut().compacted = true;
        st.dir_dirty = true;
        tracing::info!(dir = %self.dir.display(), segment = base, "segment takes batches with offset gaps");
        Ok(())
    }

    fn roll(&self, st: &mut State) -> Result<(), LogError> {
        let base = st.log_end();
        let seg = Segment::create(&*self.io, &self.dir, base).map_err(|e| self.fail(e))?;
        tracing::debug!(dir = %self.dir.display(), base, "rolled new segment");
        st.segments.insert(base, seg);
        st.dir_dirty = true;
        Ok(())
    }

    /// Group commit: returns once everything below `end_offset` (clamped to the log end) is
    /// fsynced. Concurrent callers share fsyncs: whoever holds the flush mutex syncs everything
    /// appended so far, and the others find their offset already durable.
    pub fn flush(&self, end_offset: Offset) -> Result<(), LogError> {
        self.check_online()?;
        if self.durable_offset() >= end_offset {
            return Ok(());
        }
        let mut flush = self.lock_flush()?;
        self.check_online()?;
        if self.durable_offset() >= end_offset {
            return Ok(());
        }
        self.sync_locked(&mut flush, false)
    }

    /// Syncs every file with unsynced data up to a snapshot of the log end and publishes it as
    /// durable. With `closing`, also the active segment's indexes and an exact checkpoint.
    fn sync_locked(&self, flush: &mut FlushState, closing: bool) -> Result<(), LogError> {
        let (log_end, files, dir, checkpoint_due, epochs) = {
            let mut st = self.lock_state()?;
            let log_end = st.log_end();
            let active = st.active().base_offset;
            let checkpoint_due = if closing {
                flush.checkpointed != Some(log_end)
            } else {
                // Recovery rescans the whole segment holding the recovery point, so the file
                // only needs rewriting when that segment changes: one write per roll.
                flush
                    .checkpointed
                    .is_none_or(|c| st.segment_base_for(c) != st.segment_base_for(log_end))
            };
            let mut files = Vec::new();
            for seg in st.segments.values_mut() {
                if seg.log_dirty {
                    files.push(seg.log.clone());
                    seg.log_dirty = false;
                }
                if seg.index_dirty && (closing || seg.base_offset != active) {
                    files.push(seg.index.file().clone());
                    files.push(seg.time_index.file().clone());
                    seg.index_dirty = false;
                }
            }
            let dir = std::mem::take(&mut st.dir_dirty);
            let epochs = std::mem::take(&mut st.epochs_dirty).then(|| st.epochs.clone());
            (log_end, files, dir, checkpoint_due, epochs)
        };
        // The append lock is released: appends go on while we wait for the disk.
        for file in &files {
            self.io.sync_data(file).map_err(|e| self.fail(e))?;
        }
        if dir {
            self.io.sync_dir(&self.dir).map_err(|e| self.fail(e))?;
        }
        // Before the recovery point moves and before `durable` is published: every batch below
        // the recovery point must have its epoch in the file (see `epoch_cache`).
        if let Some(epochs) = epochs {
            epoch_cache::write(&*self.io, &self.dir, &epochs).map_err(|e| self.fail(e))?;
        }
        if checkpoint_due {
            checkpoint::write(&*self.io, &self.dir, log_end).map_err(|e| self.fail(e))?;
            flush.checkpointed = Some(log_end);
        }
        self.durable.fetch_max(log_end, Ordering::SeqCst);
        Ok(())
    }

    /// Whole batches starting with the one containing `offset`, each with last offset <
    /// `max_offset`, at most `max_bytes` in total unless `min_one` (then the first batch comes
    /// whole whatever its size, KIP-74). Crosses segment boundaries. `offset == log end` (or
    /// `>= max_offset`) gives empty data; outside `[log start, log end]` is out of range.
    pub fn read(
        &self,
        offset: Offset,
        max_bytes: usize,
        max_offset: Offset,
        min_one: bool,
    ) -> Result<ReadResult, LogError> {
        let (offset, max_offset) = (offset.get(), max_offset.get());
        self.check_online()?;
        let _files = self.files.read().unwrap_or_else(|e| e.into_inner());
        let (views, start, log_start, log_end) = {
            let st = self.lock_state()?;
            let (log_start, log_end) = (st.log_start(), st.log_end());
            if offset < log_start || offset > log_end {
                return Err(LogError::OffsetOutOfRange {
                    offset: Offset(offset),
                    log_start: Offset(log_start),
                    log_end: Offset(log_end),
                });
            }
            if offset == log_end || offset >= max_offset {
                return Ok(ReadResult {
                    data: Bytes::new(),
                    log_start_offset: Offset(log_start),
                    log_end_offset: Offset(log_end),
                });
            }
            let base = st.segment_base_for(offset);
            let start = st
                .segments
                .get(&base)
                .map_or((0, base), |s| s.scan_start_for(offset));
            (st.views_from(offset), start, log_start, log_end)
        };
        let mut data = read_batches(&views, start, offset, max_bytes, max_offset, min_one)?;
        // A read can keep much less than it took from the file (the high watermark, a batch
        // cut by the limit). The fetch answer holds this buffer until the client has it, and
        // only its length counts against `connection.max.inflight.bytes`: give the rest back
        // (a shrinking realloc, which does not copy).
        if data.capacity() - data.len() > READ_SLACK {
            data.shrink_to_fit();
        }
        Ok(ReadResult {
            data: Bytes::from(data),
            log_start_offset: Offset(log_start),
            log_end_offset: Offset(log_end),
        })
    }

    /// ListOffsets by timestamp: `(offset, timestamp)` of the first record whose timestamp is
    /// >= `ts`, looking in the first batch whose max timestamp is >= `ts`. `None` if none.
    ///
    /// The batch is found through the time index; the record inside it is found by decoding the
    /// batch (decompressing if needed), as Kafka does. Only this rare path looks inside batches.
    pub fn offset_for_timestamp(&self, ts: i64) -> Result<Option<(Offset, i64)>, LogError> {
        let Some((base_offset, size)) = self.batch_for_timestamp(ts)? else {
            return Ok(None);
        };
        // The batch may start below a DeleteRecords log start: read it through the log start.
        let from = Offset(base_offset).max(self.log_start_offset());
        let read = self.read(from, size, Offset(i64::MAX), true)?;
        let batch = &read.data[..size.min(read.data.len())];
        match sluice_protocol::records::first_at_or_after(batch, ts) {
            // DeleteRecords may have put the log start inside this batch: nothing below it is
            // readable any more, so answer with the log start.
            Ok(found) => {
                Ok(found.map(|(offset, ts)| (Offset(offset).max(read.log_start_offset), ts)))
            }
            Err(e) => Err(LogError::Corrupt(format!(
                "batch at offset {base_offset} cannot be decoded for a timestamp lookup: {e}"
            ))),
        }
    }

    /// Base offset and size of the first batch whose max timestamp is >= `ts`.
    fn batch_for_timestamp(&self, ts: i64) -> Result<Option<(i64, usize)>, LogError> {
        self.check_online()?;
        let _files = self.files.read().unwrap_or_else(|e| e.into_inner());
        let (views, start) = {
            let st = self.lock_state()?;
            // Segment max timestamps are running maxima: skip segments entirely below `ts`.
            let Some(seg) = st
                .segments
                .values()
                .find(|s| s.max_timestamp.is_some_and(|(max, _)| max >= ts))
            else {
                return Ok(None);
            };
            (
                st.views_from(seg.base_offset),
                seg.scan_start_for_timestamp(ts),
            )
        };
        for (i, view) in views.iter().enumerate() {
            let (from, base) = if i == 0 { start } else { (0, view.base_offset) };
            if let Some((_, h)) = find_batch(view, from, base, |h| h.max_timestamp >= ts)? {
                return Ok(Some((h.base_offset, h.total_size())));
            }
        }
        Ok(None)
    }

    /// ListOffsets MAX_TIMESTAMP: (max timestamp, base offset of the first batch carrying it).
    pub fn max_timestamp(&self) -> Option<(i64, Offset)> {
        let (ts, offset) = self.lock_state().ok()?.max_timestamp?;
        Some((ts, Offset(offset)))
    }

    /// Drops every batch at or after `offset`; if `offset` falls inside a batch, that whole
    /// batch goes too (the log end becomes its base offset). An offset at or below the log start
    /// empties the log and restarts it at `offset`. For follower truncation.
    pub fn truncate_to(&self, offset: Offset) -> Result<(), LogError> {
        self.truncate(offset, false)
    }

    /// Empties the log and restarts it at `offset`, wherever that lies (Kafka's
    /// `truncateFullyAndStartAt`): a follower whose log end is below the leader's log start
    /// (the leader deleted what it would fetch) starts over from there.
    pub fn truncate_fully_and_start_at(&self, offset: Offset) -> Result<(), LogError> {
        self.truncate(offset, true)
    }

    fn truncate(&self, offset: Offset, fully: bool) -> Result<(), LogError> {
        self.check_online()?;
        if offset < Offset(0) {
            return Err(LogError::OffsetOutOfRange {
                offset,
                log_start: self.log_start_offset(),
                log_end: self.log_end_offset(),
            });
        }
        let offset = offset.get();
        let mut flush = self.lock_flush()?;
        let _files = self.files.write().unwrap_or_else(|e| e.into_inner());
        let mut st = self.lock_state()?;
        self.check_online()?;
        if offset >= st.log_end() && !fully {
            return Ok(());
        }
        let full = fully || offset <= st.log_start();
        let io = &*self.io;
        // Lower the recovery point first: a crash mid-truncation must rescan what is cut.
        if flush.checkpointed.is_some_and(|c| c > offset) {
            checkpoint::write(io, &self.dir, offset).map_err(|e| self.fail(e))?;
            flush.checkpointed = Some(offset);
        }
        let result = if full {
            self.truncate_fully(&mut st, offset)
        } else {
            self.truncate_inside(&mut st, offset)
        }
        .and_then(|()| self.lower_checkpoints_after_truncation(&mut st));
        result.map_err(|e| match e {
            LogError::Io(e) => self.fail(e),
            other => {
                self.offline.store(true, Ordering::SeqCst);
                other
            }
        })?;
        st.recompute_max_timestamp();
        let log_end = st.log_end();
        // The batches of the dropped entries are gone (Kafka's `truncateFromEnd`, or
        // `clearAndFlush` when the log is emptied). The file follows at the next flush round;
        // until then recovery rescans from the lowered recovery point.
        let epochs_changed = if full {
            st.epochs.clear()
        } else {
            st.epochs.truncate_from_end(log_end)
        };
        st.epochs_dirty |= epochs_changed;
        self.durable.fetch_min(log_end, Ordering::SeqCst);
        tracing::info!(dir = %self.dir.display(), offset, log_end, "log truncated");
        Ok(())
    }

    /// Keeps the DeleteRecords log start and the cleaner checkpoint at or below the new log
    /// end, on disk too, so data appended after the truncation is never taken as cleaned.
    fn lower_checkpoints_after_truncation(&self, st: &mut State) -> Result<(), LogError> {
        let log_end = st.log_end();
        if st.explicit_log_start > log_end {
            st.explicit_log_start = log_end;
            checkpoint::write_named(&*self.io, &self.dir, checkpoint::LOG_START_NAME, log_end)?;
        }
        // Not lower than the log end: a cut cleaned segment must keep accepting its gaps.
        if st.cleaned_offset > log_end {
            st.cleaned_offset = log_end;
            checkpoint::write_named(&*self.io, &self.dir, checkpoint::CLEANER_NAME, log_end)?;
        }
        Ok(())
    }

    fn truncate_fully(&self, st: &mut State, offset: i64) -> Result<(), LogError> {
        let io = &*self.io;
        let bases: Vec<i64> = st.segments.keys().rev().copied().collect();
        for base in bases {
            st.segments.remove(&base);
            Segment::remove_files(io, &self.dir, base)?;
        }
        let seg = Segment::create(io, &self.dir, offset)?;
        io.sync_data(&seg.log)?;
        st.segments.insert(offset, seg);
        io.sync_dir(&self.dir)?;
        Ok(())
    }

    fn truncate_inside(&self, st: &mut State, offset: i64) -> Result<(), LogError> {
        let io = &*self.io;
        let base = st.segment_base_for(offset);
        let later: Vec<i64> = st
            .segments
            .range(base + 1..)
            .map(|(b, _)| *b)
            .rev()
            .collect();
        for b in &later {
            st.segments.remove(b);
            Segment::remove_files(io, &self.dir, *b)?;
        }
        let seg = st
            .segments
            .get_mut(&base)
            .ok_or_else(|| LogError::Corrupt("segment vanished".into()))?;
        let view = SegmentView {
            base_offset: seg.base_offset,
            file: seg.log.clone(),
            size: seg.size,
            gaps: seg.compacted,
        };
        let (from, from_base) = seg.scan_start_for(offset);
        let Some((position, header)) =
            find_batch(&view, from, from_base, |h| h.last_offset() >= offset)?
        else {
            return Err(LogError::Corrupt(format!(
                "offset {offset} not found in segment {base}"
            )));
        };
        io.set_len(&seg.log, position)?;
        seg.size = position;
        let keep = seg
            .index
            .entries()
            .partition_point(|e| u64::from(e.position) < position);
        seg.index.truncate(io, keep)?;
        let cut_rel = header.base_offset - base;
        let keep = seg
            .time_index
            .entries()
            .partition_point(|e| i64::from(e.rel_offset) < cut_rel);
        seg.time_index.truncate(io, keep)?;
        let config = st.config;
        if !recovery::tail_scan(io, seg, &config)? {
            return Err(LogError::Corrupt(format!(
                "segment {base} unreadable after truncation"
            )));
        }
        if seg.is_empty() {
            seg.roll_base_ms = None;
        }
        io.sync_data(&seg.log)?;
        io.sync_data(seg.index.file())?;
        io.sync_data(seg.time_index.file())?;
        seg.log_dirty = false;
        if !later.is_empty() {
            io.sync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// The newest leader epoch with data in the log (Kafka's `latestEpoch`); `None` if no batch
    /// carries an epoch.
    pub fn latest_epoch(&self) -> Option<LeaderEpoch> {
        self.lock_state().ok()?.epochs.latest().map(|e| e.epoch)
    }

    /// The leader-epoch cache, oldest first: where each epoch with data in the log starts.
    pub fn epoch_entries(&self) -> Vec<EpochEntry> {
        self.lock_state()
            .map_or_else(|_| Vec::new(), |s| s.epochs.entries().to_vec())
    }

    /// OffsetsForLeaderEpoch (KIP-101/279, Kafka's `endOffsetForEpoch`): the largest epoch at
    /// or below `requested` and the offset where it ends.
    ///
    /// - `requested` is the latest epoch: `(latest, log end)`.
    /// - an epoch between known ones: `(largest known epoch <= requested, start offset of the
    ///   next higher epoch)`, so a follower truncates to where its last epoch diverged.
    /// - below the first known epoch: `(requested, start offset of the first epoch)`, the start
    ///   of what the log still has.
    /// - `None`, Kafka's `UNDEFINED_EPOCH_OFFSET` (answer epoch -1, offset -1 on the wire): no
    ///   entries, `requested` above the latest epoch, or `requested` is -1.
    pub fn end_offset_for_epoch(&self, requested: LeaderEpoch) -> Option<(LeaderEpoch, Offset)> {
        let st = self.lock_state().ok()?;
        st.epochs.end_offset_for(requested, Offset(st.log_end()))
    }

    /// This replica became leader under `epoch`: the epoch starts at the current log end, even
    /// before a batch is appended under it (Kafka's `makeLeader`), so the previous epoch ends
    /// here. Older or equal epochs change nothing. Persisted with the next flush.
    pub fn assign_leader_epoch(&self, epoch: LeaderEpoch) -> Result<(), LogError> {
        let mut st = self.lock_state()?;
        let end = st.log_end();
        if st.epochs.assign(epoch.0, end) {
            st.epochs_dirty = true;
            tracing::debug!(dir = %self.dir.display(), epoch = epoch.0, start_offset = end,
                "leader epoch starts");
        }
        Ok(())
    }

    /// The leader epoch under which `offset` was written: the latest epoch starting at or
    /// before it (Kafka's `epochForOffset`); `None` when no epoch covers it.
    pub fn epoch_for_offset(&self, offset: Offset) -> Option<LeaderEpoch> {
        let st = self.lock_state().ok()?;
        st.epochs
            .entries()
            .iter()
            .rev()
            .find(|e| e.start_offset <= offset)
            .map(|e| e.epoch)
    }

    /// Flushes everything (indexes included) and writes an exact checkpoint, so the next
    /// `open(.., clean_shutdown = true)` trusts the files without scanning them.
    pub fn close(&self) -> Result<(), LogError> {
        self.check_online()?;
        let mut flush = self.lock_flush()?;
        self.check_online()?;
        self.sync_locked(&mut flush, true)
    }

    /// Removes the log's directory and files.
    pub fn delete(self) -> Result<(), LogError> {
        let Log { dir, io, .. } = self;
        io.remove_dir_all(&dir)?;
        Ok(())
    }

    /// Bytes of record batches stored, over every segment (Kafka's `UnifiedLog.size`, what
    /// DescribeLogDirs reports); 0 when the log is offline.
    pub fn size_bytes(&self) -> u64 {
        self.lock_state()
            .map_or(0, |s| s.segments.values().map(|seg| seg.size).sum())
    }

    /// Number of segments (tests and metrics).
    pub fn segment_count(&self) -> usize {
        self.lock_state().map_or(0, |s| s.segments.len())
    }
}

/// The leader-epoch cache of a log just opened, and whether the file must be written before
/// the recovery point moves (see `epoch_cache` and docs/STORAGE.md §3):
/// - a usable checkpoint is trusted up to where recovery rescanned; from there on the entries
///   are rebuilt from the scanned batches;
/// - a missing or damaged one is rebuilt from every batch in the log (slower: reads every
///   batch header);
/// - then entries at or past the log end are dropped and the first moved up to the log start.
fn open_epoch_cache(
    dir: &Path,
    st: &State,
    rescanned: Option<&Rescanned>,
) -> Result<(EpochCache, bool), LogError> {
    let has_data = st.segments.values().any(|s| !s.is_empty());
    let stored = match epoch_cache::read(dir) {
        Ok(stored) => stored,
        Err(reason) => {
            tracing::warn!(dir = %dir.display(), %reason, "damaged leader-epoch checkpoint");
            None
        }
    };
    let mut cache = match (&stored, rescanned) {
        (Some(stored), None) => stored.clone(),
        (Some(stored), Some(rescanned)) => {
            let mut cache = stored.clone();
            cache.truncate_from_end(rescanned.from_offset);
            rescanned.epoch_starts.apply(&mut cache);
            cache
        }
        (None, _) if !has_data => EpochCache::default(),
        (None, _) => {
            let started = std::time::Instant::now();
            let segments: Vec<&Segment> = st.segments.values().collect();
            let mut cache = EpochCache::default();
            recovery::epoch_starts_of(&segments)?.apply(&mut cache);
            tracing::warn!(
                dir = %dir.display(),
                segments = segments.len(),
                entries = cache.entries().len(),
                elapsed_ms = started.elapsed().as_millis() as u64,
                "leader-epoch checkpoint missing or damaged; rebuilt it from every batch"
            );
            cache
        }
    };
    cache.truncate_from_end(st.log_end());
    cache.truncate_from_start(st.log_start());
    let write = match &stored {
        Some(stored) => *stored != cache,
        None => has_data,
    };
    Ok((cache, write))
}
