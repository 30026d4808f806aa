//! One segment: `<base>.log` plus its two sparse indexes, all named by the segment's base
//! offset (20 digits, zero padded).
//!
//! The `.log` file is the concatenation of the batches exactly as appended (offsets assigned);
//! its length is the segment's size, always on a batch boundary (recovery cuts torn tails).
//! A `Segment` is owned by the log state behind the append lock; readers take `Arc` clones of
//! the file handles and read with pread outside the lock.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::LogConfig;
use crate::index::{IndexEntry, OffsetIndex, INDEX_ENTRY_LEN};
use crate::io::Io;
use crate::time_index::{TimeEntry, TimeIndex, TIME_ENTRY_LEN};

pub(crate) const LOG_EXT: &str = "log";
pub(crate) const INDEX_EXT: &str = "index";
pub(crate) const TIME_INDEX_EXT: &str = "timeindex";
/// `<base>.gaps`: an empty marker file saying the segment may have gaps between batches
/// although it is not below the cleaner checkpoint (a follower copied a compacted leader log
/// into it; see `Log::append_as_follower`).
pub(crate) const GAPS_EXT: &str = "gaps";
/// The three extensions of a segment, in the order [`Segment::paths`] returns them.
pub(crate) const SEGMENT_EXTS: [&str; 3] = [LOG_EXT, INDEX_EXT, TIME_INDEX_EXT];
/// Suffix of a segment file the cleaner is still writing (deleted on open).
pub(crate) const CLEANED_SUFFIX: &str = "cleaned";
/// Suffix of a cleaned segment file that is committed but not yet renamed into place
/// (completed on open).
pub(crate) const SWAP_SUFFIX: &str = "swap";

/// `00000000000000000042.log` for base offset 42.
pub(crate) fn file_name(base_offset: i64, ext: &str) -> String {
    format!("{base_offset:020}.{ext}")
}

/// Parses a segment file name back to its base offset and extension.
pub(crate) fn parse_file_name(name: &str) -> Option<(i64, &str)> {
    let (stem, ext) = name.split_once('.')?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((stem.parse().ok()?, ext))
}

/// What the log knows about one stored batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BatchMeta {
    /// Byte position in the segment's .log file.
    pub position: u64,
    pub size: u64,
    pub base_offset: i64,
    pub last_offset: i64,
    pub max_timestamp: i64,
    /// partitionLeaderEpoch of the stored batch (-1: none).
    pub leader_epoch: i32,
}

#[derive(Debug)]
pub(crate) struct Segment {
    pub base_offset: i64,
    pub log: Arc<File>,
    pub index: OffsetIndex,
    pub time_index: TimeIndex,
    /// Bytes of whole batches in the .log file (== its length).
    pub size: u64,
    /// One past the last offset stored here; `base_offset` when empty.
    pub next_offset: i64,
    /// (max timestamp, base offset of the first batch carrying it).
    pub max_timestamp: Option<(i64, i64)>,
    /// Log bytes appended since the last offset-index entry.
    pub bytes_since_index: u64,
    /// Written by the cleaner (or below the cleaner checkpoint), or marked by a `.gaps` file:
    /// batches may have gaps between them. Only such segments accept a base offset beyond the
    /// previous batch's end.
    pub compacted: bool,
    /// maxTimestamp of the first batch (Kafka's "first batch timestamp"): how old the oldest
    /// data of a dirty segment is, for `max.compaction.lag.ms`.
    pub first_batch_ts: Option<i64>,
    /// Time the segment's age is measured from, for `segment_ms`.
    pub roll_base_ms: Option<i64>,
    /// The .log file has writes no flush has synced yet.
    pub log_dirty: bool,
    /// The index files have writes that are not synced. Only synced once the segment is no
    /// longer active (recovery rebuilds the active one's indexes anyway).
    pub index_dirty: bool,
}

impl Segment {
    pub fn paths(dir: &Path, base_offset: i64) -> [PathBuf; 3] {
        SEGMENT_EXTS.map(|ext| dir.join(file_name(base_offset, ext)))
    }

    /// `<base>.log.<suffix>` etc.: the cleaner's side files for a segment.
    pub fn suffixed_paths(dir: &Path, base_offset: i64, suffix: &str) -> [PathBuf; 3] {
        SEGMENT_EXTS.map(|ext| dir.join(format!("{}.{suffix}", file_name(base_offset, ext))))
    }

    /// Opens (creating if missing) the three files with empty in-memory state; the caller
    /// loads or rebuilds the indexes and sets the offsets (see `recovery`).
    pub fn open_files(io: &dyn Io, dir: &Path, base_offset: i64) -> io::Result<Segment> {
        Self::open_paths(io, &Self::paths(dir, base_offset), base_offset)
    }

    /// [`Segment::open_files`] on explicitly named files (the cleaner's `.cleaned` files).
    pub fn open_paths(io: &dyn Io, paths: &[PathBuf; 3], base_offset: i64) -> io::Result<Segment> {
        let [log, index, time_index] = paths;
        let log = Arc::new(io.open(log)?);
        let size = log.metadata()?.len();
        Ok(Segment {
            base_offset,
            log,
            index: OffsetIndex::empty(Arc::new(io.open(index)?)),
            time_index: TimeIndex::empty(Arc::new(io.open(time_index)?)),
            size,
            next_offset: base_offset,
            max_timestamp: None,
            compacted: false,
            first_batch_ts: None,
            bytes_since_index: 0,
            roll_base_ms: None,
            log_dirty: false,
            index_dirty: false,
        })
    }

    /// A new empty segment (stale files of the same name are emptied).
    pub fn create(io: &dyn Io, dir: &Path, base_offset: i64) -> io::Result<Segment> {
        let mut seg = Self::open_files(io, dir, base_offset)?;
        io.set_len(&seg.log, 0)?;
        seg.index.truncate(io, 0)?;
        seg.time_index.truncate(io, 0)?;
        seg.size = 0;
        seg.log_dirty = true;
        Ok(seg)
    }

    /// Removes the three files and the `.gaps` marker, if any.
    pub fn remove_files(io: &dyn Io, dir: &Path, base_offset: i64) -> io::Result<()> {
        for path in Self::paths(dir, base_offset) {
            io.remove_file(&path)?;
        }
        io.remove_file(&Self::gaps_marker(dir, base_offset))
    }

    pub fn gaps_marker(dir: &Path, base_offset: i64) -> PathBuf {
        dir.join(file_name(base_offset, GAPS_EXT))
    }

    pub fn is_empty(&self) -> bool {
        self.size == 0
    }

    /// Forgets everything derived from the log (indexes, offsets, timestamps), keeping files.
    pub fn reset_derived(&mut self, io: &dyn Io) -> io::Result<()> {
        self.index.truncate(io, 0)?;
        self.time_index.truncate(io, 0)?;
        self.next_offset = self.base_offset;
        self.max_timestamp = None;
        self.first_batch_ts = None;
        self.bytes_since_index = 0;
        Ok(())
    }

    /// Updates the in-memory indexes and counters for a batch just stored at `meta.position`.
    /// Index entries are added for a batch that starts `index_interval_bytes` after the last
    /// indexed one; a time-index entry rides along when the max timestamp has grown.
    pub fn track_batch(&mut self, meta: &BatchMeta, index_interval_bytes: u32) {
        if meta.position == 0 {
            self.first_batch_ts = Some(meta.max_timestamp);
        }
        let mut indexed = false;
        let last_position = self.index.last().map_or(0, |e| u64::from(e.position));
        if meta.position > last_position
            && self.bytes_since_index >= u64::from(index_interval_bytes)
        {
            if let (Ok(rel_offset), Ok(position)) = (
                u32::try_from(meta.base_offset - self.base_offset),
                u32::try_from(meta.position),
            ) {
                self.index.push(IndexEntry {
                    rel_offset,
                    position,
                });
                indexed = true;
            }
            self.bytes_since_index = 0;
        }
        self.bytes_since_index += meta.size;
        if self
            .max_timestamp
            .is_none_or(|(ts, _)| meta.max_timestamp > ts)
        {
            self.max_timestamp = Some((meta.max_timestamp, meta.base_offset));
        }
        if indexed {
            if let Some((ts, offset)) = self.max_timestamp {
                let grown = self.time_index.last().is_none_or(|e| ts > e.timestamp);
                if let (true, Ok(rel_offset)) = (grown, u32::try_from(offset - self.base_offset)) {
                    self.time_index.push(TimeEntry {
                        timestamp: ts,
                        rel_offset,
                    });
                }
            }
        }
        self.next_offset = meta.last_offset + 1;
    }

    /// Writes new index entries to their files.
    pub fn persist_indexes(&mut self, io: &dyn Io) -> io::Result<()> {
        let a = self.index.persist(io)?;
        let b = self.time_index.persist(io)?;
        if a || b {
            self.index_dirty = true;
        }
        Ok(())
    }

    /// Appends `bytes` (whole batches described by `metas`, positions already absolute) at the
    /// end of the .log file. No fsync.
    pub fn append(
        &mut self,
        io: &dyn Io,
        parts: &[&[u8]],
        metas: &[BatchMeta],
        config: &LogConfig,
        now_ms: i64,
    ) -> io::Result<()> {
        // The parts are written back to back; `size` moves only once all are written, so a
        // failure leaves them past the end, where the next append (or recovery) overwrites them.
        let mut position = self.size;
        for part in parts {
            io.write_all_at(&self.log, part, position)?;
            position += part.len() as u64;
        }
        self.log_dirty = true;
        if self.roll_base_ms.is_none() {
            self.roll_base_ms = Some(now_ms);
        }
        self.size = position;
        for meta in metas {
            self.track_batch(meta, config.index_interval_bytes);
        }
        self.persist_indexes(io)
    }

    /// Whether an append of `len` bytes ending at offset `last_offset` must go to a new segment.
    /// An empty segment takes any append (a batch larger than `segment_bytes` has to go somewhere).
    pub fn needs_roll(&self, config: &LogConfig, len: u64, last_offset: i64, now_ms: i64) -> bool {
        if self.is_empty() {
            return false;
        }
        let max_size = config.segment_bytes.min(u64::from(u32::MAX));
        let too_big = self.size.saturating_add(len) > max_size;
        let too_old = self
            .roll_base_ms
            .is_some_and(|t| now_ms.saturating_sub(t) > config.segment_ms as i64);
        let index_full = self.index.byte_len() + INDEX_ENTRY_LEN
            > u64::from(config.segment_index_bytes)
            || self.time_index.byte_len() + TIME_ENTRY_LEN > u64::from(config.segment_index_bytes);
        let offsets_overflow = last_offset - self.base_offset > i64::from(u32::MAX);
        too_big || too_old || index_full || offsets_overflow
    }

    /// (position, base offset) of the last indexed batch starting at or before `offset`, or
    /// the segment start: where to scan from for the batch containing `offset`.
    pub fn scan_start_for(&self, offset: i64) -> (u64, i64) {
        let rel = (offset - self.base_offset).clamp(0, i64::from(u32::MAX)) as u32;
        self.index.lookup(rel).map_or((0, self.base_offset), |e| {
            (
                u64::from(e.position),
                self.base_offset + i64::from(e.rel_offset),
            )
        })
    }

    /// Where to scan from for the first batch with max timestamp >= `ts`.
    pub fn scan_start_for_timestamp(&self, ts: i64) -> (u64, i64) {
        match self.time_index.last_before(ts) {
            Some(e) => self.scan_start_for(self.base_offset + i64::from(e.rel_offset)),
            None => (0, self.base_offset),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_round_trip() {
        assert_eq!(file_name(0, "log"), "00000000000000000000.log");
        assert_eq!(file_name(42, "index"), "00000000000000000042.index");
        assert_eq!(
            parse_file_name("00000000000000000042.index"),
            Some((42, "index"))
        );
        assert_eq!(parse_file_name("0042.log"), None);
        assert_eq!(parse_file_name("9999999999999999999999.log"), None);
        assert_eq!(
            parse_file_name("99999999999999999999.log"),
            None,
            "overflows i64"
        );
        assert_eq!(parse_file_name("recovery-point"), None);
    }
}
