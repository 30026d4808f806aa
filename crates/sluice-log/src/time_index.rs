//! The sparse time index of one segment: `<base>.timeindex`.
//!
//! ```text
//! entry (12 bytes, big-endian), appended at an offset-index point when the segment's max
//! timestamp has grown since the last entry:
//!   0  timestamp        i64   max timestamp of all batches up to that index point
//!   8  relative offset  u32   base offset of the batch carrying it - segment base offset
//! ```
//!
//! Meaning of an entry `(t, o)`: every batch up to and including the one at `o` has a max
//! timestamp <= t. So to find the first batch with max timestamp >= ts, start scanning at the
//! last entry with `t < ts` (or at the segment start). Timestamps and offsets strictly increase;
//! a file that breaks that is rebuilt from the log.

use std::fs::File;
use std::io;
use std::sync::Arc;

use sluice_protocol::batch::BATCH_HEADER_LEN;

use crate::io::{read_exact_at, Io};

pub(crate) const TIME_ENTRY_LEN: u64 = 12;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TimeEntry {
    pub timestamp: i64,
    pub rel_offset: u32,
}

#[derive(Debug)]
pub(crate) struct TimeIndex {
    file: Arc<File>,
    entries: Vec<TimeEntry>,
    /// Entries `[..persisted]` are in the file.
    persisted: usize,
}

impl TimeIndex {
    pub fn empty(file: Arc<File>) -> TimeIndex {
        TimeIndex {
            file,
            entries: Vec::new(),
            persisted: 0,
        }
    }

    /// Reads and checks the file. `Ok(None)` means corrupt: rebuild it from the log.
    pub fn load(file: Arc<File>, log_size: u64) -> io::Result<Option<TimeIndex>> {
        let len = file.metadata()?.len();
        if len % TIME_ENTRY_LEN != 0 || len / TIME_ENTRY_LEN > log_size / BATCH_HEADER_LEN as u64 {
            return Ok(None);
        }
        let mut buf = vec![0u8; len as usize];
        read_exact_at(&file, &mut buf, 0)?;
        let mut entries: Vec<TimeEntry> = Vec::with_capacity(buf.len() / 12);
        for chunk in buf.chunks_exact(TIME_ENTRY_LEN as usize) {
            let mut ts = [0u8; 8];
            ts.copy_from_slice(&chunk[..8]);
            let e = TimeEntry {
                timestamp: i64::from_be_bytes(ts),
                rel_offset: u32::from_be_bytes([chunk[8], chunk[9], chunk[10], chunk[11]]),
            };
            if let Some(prev) = entries.last() {
                if e.timestamp <= prev.timestamp || e.rel_offset <= prev.rel_offset {
                    return Ok(None);
                }
            }
            entries.push(e);
        }
        let persisted = entries.len();
        Ok(Some(TimeIndex {
            file,
            entries,
            persisted,
        }))
    }

    pub fn file(&self) -> &Arc<File> {
        &self.file
    }

    pub fn entries(&self) -> &[TimeEntry] {
        &self.entries
    }

    pub fn last(&self) -> Option<TimeEntry> {
        self.entries.last().copied()
    }

    pub fn byte_len(&self) -> u64 {
        self.entries.len() as u64 * TIME_ENTRY_LEN
    }

    /// The last entry whose timestamp is < `ts`: scanning may start at its batch.
    pub fn last_before(&self, ts: i64) -> Option<TimeEntry> {
        let n = self.entries.partition_point(|e| e.timestamp < ts);
        n.checked_sub(1).map(|i| self.entries[i])
    }

    pub fn push(&mut self, entry: TimeEntry) {
        self.entries.push(entry);
    }

    pub fn persist(&mut self, io: &dyn Io) -> io::Result<bool> {
        if self.persisted == self.entries.len() {
            return Ok(false);
        }
        let mut buf = Vec::with_capacity((self.entries.len() - self.persisted) * 12);
        for e in &self.entries[self.persisted..] {
            buf.extend_from_slice(&e.timestamp.to_be_bytes());
            buf.extend_from_slice(&e.rel_offset.to_be_bytes());
        }
        io.write_all_at(&self.file, &buf, self.persisted as u64 * TIME_ENTRY_LEN)?;
        self.persisted = self.entries.len();
        Ok(true)
    }

    pub fn truncate(&mut self, io: &dyn Io, keep: usize) -> io::Result<()> {
        self.entries.truncate(keep);
        self.persisted = self.persisted.min(self.entries.len());
        io.set_len(&self.file, self.persisted as u64 * TIME_ENTRY_LEN)
    }
}
