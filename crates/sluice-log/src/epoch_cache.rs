//! The leader-epoch cache of a partition log (Kafka's `LeaderEpochFileCache`, KIP-101/279):
//! for every leader epoch that has data in the log, the offset of its first batch. A follower
//! asks the leader for the end offset of its own latest epoch (OffsetsForLeaderEpoch) and
//! truncates to the answer instead of the high watermark, which is what keeps replicas from
//! diverging across leader changes.
//!
//! Invariant of `EpochCache`: epochs and start offsets both strictly increase, no epoch is
//! negative, and every start offset is below the log end (an entry is only made together with
//! a batch, and truncation drops the entries whose batches it cut).
//!
//! Persisted as `leader-epoch-checkpoint` in the partition directory, in Kafka's format:
//!
//! ```text
//! 0\n                      format version
//! <N>\n                    number of entries
//! <epoch> <startOffset>\n  N times, decimal i32 and i64, one space, oldest first
//! ```
//!
//! The file may lag behind memory; what keeps it sufficient is that a flush round writes it
//! (when it changed) before it moves the recovery point or publishes the durable offset, so
//! every batch below the recovery point has its epoch in the file. Open then repairs the rest:
//! entries from the first rescanned offset on are rebuilt from the batches, entries at or past
//! the log end are dropped and the first entry is moved up to the log start (see `Log::open`
//! and docs/STORAGE.md).

use std::io;
use std::path::Path;

use sluice_types::{LeaderEpoch, Offset};

use crate::checkpoint::{self, ListFile};
use crate::io::Io;

pub(crate) const FILE_NAME: &str = "leader-epoch-checkpoint";
/// Far above any real file (a line per leader change, ~20 bytes each).
const MAX_FILE_BYTES: u64 = 16 << 20;

/// "Leader epoch `epoch` starts at offset `start_offset`" (Kafka's `EpochEntry`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EpochEntry {
    pub epoch: LeaderEpoch,
    /// Base offset of the first batch written in this epoch (or the log start, if the log
    /// start has moved past it).
    pub start_offset: Offset,
}

/// The entries, in memory. Pure: the log decides when to write them (see the module docs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct EpochCache {
    entries: Vec<EpochEntry>,
}

impl EpochCache {
    /// A cache holding `entries`, if they satisfy the invariant (epochs >= 0, offsets >= 0,
    /// both strictly increasing).
    pub fn from_entries(entries: Vec<EpochEntry>) -> Result<EpochCache, String> {
        for (i, e) in entries.iter().enumerate() {
            if e.epoch.0 < 0 || e.start_offset.0 < 0 {
                return Err(format!("negative entry {} {}", e.epoch, e.start_offset));
            }
            if let Some(prev) = i.checked_sub(1).map(|p| entries[p]) {
                if e.epoch <= prev.epoch || e.start_offset <= prev.start_offset {
                    return Err(format!(
                        "entry {} {} does not follow {} {}",
                        e.epoch, e.start_offset, prev.epoch, prev.start_offset
                    ));
                }
            }
        }
        Ok(EpochCache { entries })
    }

    pub fn entries(&self) -> &[EpochEntry] {
        &self.entries
    }

    pub fn latest(&self) -> Option<EpochEntry> {
        self.entries.last().copied()
    }

    /// Records that `epoch` starts at `start_offset`, if `epoch` is newer than the latest one;
    /// returns whether the cache changed. Negative epochs (`-1`: a batch written without an
    /// epoch) and epochs not above the latest are ignored, as Kafka's segment recovery does.
    /// (Kafka's `assign` would instead drop the later entries for an older epoch; an older
    /// epoch after a newer one never comes from a leader's log, so here it changes nothing.)
    ///
    /// Should the new start not lie above the latest entry's (it always does when entries come
    /// with batches), the entries at or after it are dropped first, as Kafka does, to keep
    /// start offsets increasing.
    pub fn assign(&mut self, epoch: i32, start_offset: i64) -> bool {
        if epoch < 0 || start_offset < 0 {
            return false;
        }
        if self.latest().is_some_and(|l| l.epoch.0 >= epoch) {
            return false;
        }
        while self
            .entries
            .last()
            .is_some_and(|l| l.start_offset.0 >= start_offset)
        {
            self.entries.pop();
        }
        self.entries.push(EpochEntry {
            epoch: LeaderEpoch(epoch),
            start_offset: Offset(start_offset),
        });
        true
    }

    /// Kafka's `endOffsetFor`: the answer to OffsetsForLeaderEpoch for `requested`, given the
    /// log end. `None` is Kafka's `UNDEFINED_EPOCH_OFFSET` (epoch -1, offset -1 on the wire).
    ///
    /// - `requested` is `-1`: undefined.
    /// - `requested` is the latest epoch: `(latest, log_end)`.
    /// - otherwise, with `higher` the first entry with an epoch above `requested`:
    ///   - no `higher` (no entries, or `requested` above the latest): undefined;
    ///   - no entry at or below `requested` (it is older than the first entry, whose data was
    ///     deleted or predates epochs): `(requested, higher.start_offset)`;
    ///   - else `(floor.epoch, higher.start_offset)`, with `floor` the last entry at or below
    ///     `requested`: the largest known epoch not above the requested one, ending where the
    ///     next one starts.
    pub fn end_offset_for(
        &self,
        requested: LeaderEpoch,
        log_end: Offset,
    ) -> Option<(LeaderEpoch, Offset)> {
        if requested == LeaderEpoch::NONE {
            return None;
        }
        if self.latest().is_some_and(|l| l.epoch == requested) {
            return Some((requested, log_end));
        }
        let higher = self.entries.partition_point(|e| e.epoch <= requested);
        let next = self.entries.get(higher)?;
        match higher.checked_sub(1).map(|i| self.entries[i]) {
            None => Some((requested, next.start_offset)),
            Some(floor) => Some((floor.epoch, next.start_offset)),
        }
    }

    /// Kafka's `truncateFromEnd`: drops every entry starting at or after `end_offset` (the new
    /// log end after a truncation or a recovery cut). Returns whether anything was dropped.
    pub fn truncate_from_end(&mut self, end_offset: i64) -> bool {
        let keep = self
            .entries
            .partition_point(|e| e.start_offset.0 < end_offset);
        let changed = keep < self.entries.len();
        self.entries.truncate(keep);
        changed
    }

    /// Kafka's `truncateFromStart`: the log start moved up to `start_offset`. Entries starting
    /// at or below it go, except that the last of them stays with its start moved up to
    /// `start_offset` (its epoch still covers the first offsets of the log). Returns whether
    /// the cache changed.
    pub fn truncate_from_start(&mut self, start_offset: i64) -> bool {
        let gone = self
            .entries
            .partition_point(|e| e.start_offset.0 <= start_offset);
        let Some(last_gone) = gone.checked_sub(1).map(|i| self.entries[i]) else {
            return false;
        };
        let changed = gone > 1 || last_gone.start_offset.0 != start_offset;
        self.entries.drain(..gone);
        self.entries.insert(
            0,
            EpochEntry {
                epoch: last_gone.epoch,
                start_offset: Offset(start_offset),
            },
        );
        changed
    }

    /// Drops every entry (the log was emptied). Returns whether there were any.
    pub fn clear(&mut self) -> bool {
        let changed = !self.entries.is_empty();
        self.entries.clear();
        changed
    }
}

/// Where the partition leader epoch changes along a run of batches, in offset order:
/// `(epoch, base offset of the first batch with it)`. What recovery hands to the cache; one
/// pair per change rather than per batch, so a long scan stays small.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct EpochStarts(pub Vec<(i32, i64)>);

impl EpochStarts {
    pub fn note(&mut self, epoch: i32, base_offset: i64) {
        if self.0.last().map(|&(e, _)| e) != Some(epoch) {
            self.0.push((epoch, base_offset));
        }
    }

    /// Feeds the changes to `cache` in order; returns whether it changed. Gives the same
    /// result as assigning batch by batch, since a batch that repeats the previous one's
    /// epoch is never newer than the latest entry.
    pub fn apply(&self, cache: &mut EpochCache) -> bool {
        let mut changed = false;
        for &(epoch, base) in &self.0 {
            changed |= cache.assign(epoch, base);
        }
        changed
    }
}

/// Reads the checkpoint: `Ok(None)` if there is none, `Err(reason)` if it is unreadable or
/// breaks the cache invariant (the caller rebuilds from the log).
pub(crate) fn read(dir: &Path) -> Result<Option<EpochCache>, String> {
    let lines = match checkpoint::read_list(dir, FILE_NAME, MAX_FILE_BYTES) {
        ListFile::Missing => return Ok(None),
        ListFile::Corrupt(reason) => return Err(reason),
        ListFile::Entries(lines) => lines,
    };
    let mut entries = Vec::with_capacity(lines.len());
    for line in &lines {
        let mut fields = line.split_whitespace();
        let (Some(epoch), Some(offset), None) = (fields.next(), fields.next(), fields.next())
        else {
            return Err(format!("malformed line {line:?}"));
        };
        match (epoch.parse(), offset.parse()) {
            (Ok(epoch), Ok(offset)) => entries.push(EpochEntry {
                epoch: LeaderEpoch(epoch),
                start_offset: Offset(offset),
            }),
            _ => return Err(format!("malformed line {line:?}")),
        }
    }
    EpochCache::from_entries(entries).map(Some)
}

/// Atomically replaces the checkpoint with `cache`'s entries.
pub(crate) fn write(io: &dyn Io, dir: &Path, cache: &EpochCache) -> io::Result<()> {
    let lines: Vec<String> = cache
        .entries
        .iter()
        .map(|e| format!("{} {}", e.epoch, e.start_offset))
        .collect();
    checkpoint::write_atomic(
        io,
        dir,
        FILE_NAME,
        checkpoint::format_list(&lines).as_bytes(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::StdIo;

    fn cache(pairs: &[(i32, i64)]) -> EpochCache {
        let mut c = EpochCache::default();
        for &(e, o) in pairs {
            assert!(c.assign(e, o), "assign {e} {o}");
        }
        c
    }

    fn pairs(c: &EpochCache) -> Vec<(i32, i64)> {
        c.entries()
            .iter()
            .map(|e| (e.epoch.0, e.start_offset.0))
            .collect()
    }

    #[test]
    fn assign_takes_only_newer_epochs() {
        let mut c = cache(&[(0, 0), (2, 10)]);
        assert!(!c.assign(-1, 20), "no epoch");
        assert!(!c.assign(2, 30), "same epoch continues");
        assert!(!c.assign(1, 40), "older epoch");
        assert!(c.assign(5, 50));
        assert_eq!(pairs(&c), [(0, 0), (2, 10), (5, 50)]);
        // A newer epoch at or below the latest start replaces the entries it overlaps.
        assert!(c.assign(6, 10));
        assert_eq!(pairs(&c), [(0, 0), (6, 10)]);
    }

    #[test]
    fn end_offset_for_follows_kafka() {
        let end = Offset(100);
        let none = EpochCache::default();
        assert_eq!(none.end_offset_for(LeaderEpoch(0), end), None);
        assert_eq!(none.end_offset_for(LeaderEpoch::NONE, end), None);
        let c = cache(&[(2, 10), (4, 30), (7, 60)]);
        let q = |e| c.end_offset_for(LeaderEpoch(e), end);
        assert_eq!(q(7), Some((LeaderEpoch(7), end)), "latest: log end");
        assert_eq!(q(4), Some((LeaderEpoch(4), Offset(60))));
        assert_eq!(q(5), Some((LeaderEpoch(4), Offset(60))), "unknown: floor");
        assert_eq!(q(2), Some((LeaderEpoch(2), Offset(30))));
        assert_eq!(q(1), Some((LeaderEpoch(1), Offset(10))), "below the first");
        assert_eq!(q(8), None, "above the latest");
        assert_eq!(q(-1), None);
    }

    #[test]
    fn truncation_from_both_ends() {
        let mut c = cache(&[(2, 10), (4, 30), (7, 60)]);
        assert!(!c.truncate_from_end(61));
        assert!(c.truncate_from_end(60));
        assert_eq!(pairs(&c), [(2, 10), (4, 30)]);
        assert!(!c.truncate_from_start(5));
        assert!(
            !c.truncate_from_start(10),
            "start exactly at the first entry"
        );
        assert!(c.truncate_from_start(12));
        assert_eq!(pairs(&c), [(2, 12), (4, 30)]);
        assert!(c.truncate_from_start(30));
        assert_eq!(pairs(&c), [(4, 30)]);
        assert!(c.truncate_from_start(45));
        assert_eq!(pairs(&c), [(4, 45)]);
        assert!(c.truncate_from_end(0));
        assert!(!c.clear());
    }

    #[test]
    fn starts_compress_runs_and_apply_like_batches() {
        let mut s = EpochStarts::default();
        for (e, o) in [(0, 0), (0, 5), (-1, 9), (2, 12), (2, 20), (1, 25), (3, 30)] {
            s.note(e, o);
        }
        assert_eq!(s.0, [(0, 0), (-1, 9), (2, 12), (1, 25), (3, 30)]);
        let mut c = EpochCache::default();
        assert!(s.apply(&mut c));
        assert_eq!(pairs(&c), [(0, 0), (2, 12), (3, 30)]);
    }

    #[test]
    fn file_round_trip_and_damage() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()), Ok(None));
        let c = cache(&[(0, 0), (3, 17), (4, 1 << 40)]);
        write(&StdIo, dir.path(), &c).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join(FILE_NAME)).unwrap(),
            "0\n3\n0 0\n3 17\n4 1099511627776\n"
        );
        assert_eq!(read(dir.path()), Ok(Some(c)));
        write(&StdIo, dir.path(), &EpochCache::default()).unwrap();
        assert_eq!(read(dir.path()), Ok(Some(EpochCache::default())));
        for garbage in [
            "",
            "0\n",
            "0\n1\n",
            "0\n1\n3\n",
            "0\n1\n3 4 5\n",
            "0\n1\nx 4\n",
            "0\n1\n-1 4\n",
            "0\n2\n3 10\n3 20\n",
            "0\n2\n3 10\n4 10\n",
            "0\n2\n4 10\n3 20\n",
            "1\n0\n",
        ] {
            std::fs::write(dir.path().join(FILE_NAME), garbage).unwrap();
            assert!(read(dir.path()).is_err(), "{garbage:?}");
        }
    }
}
