//! The sparse offset index of one segment: `<base>.index`.
//!
//! ```text
//! entry (8 bytes, big-endian), one per `index_interval_bytes` of log:
//!   0  relative offset  u32   base offset of the indexed batch - segment base offset
//!   4  position         u32   byte position of that batch in the .log file
//! ```
//!
//! Invariants (checked on load; a file breaking them is rebuilt from the log): entries strictly
//! increase in both fields, and both are > 0 because the batch at position 0 is never indexed
//! (a lookup that finds no entry starts at 0). That also makes a zero-filled tail, which a crash
//! can leave behind, detectable. The whole index is held in memory; the file is append-only.

use std::fs::File;
use std::io;
use std::sync::Arc;

use sluice_protocol::batch::BATCH_HEADER_LEN;

use crate::io::{read_exact_at, Io};

pub(crate) const INDEX_ENTRY_LEN: u64 = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IndexEntry {
    pub rel_offset: u32,
    pub position: u32,
}

#[derive(Debug)]
pub(crate) struct OffsetIndex {
    file: Arc<File>,
    entries: Vec<IndexEntry>,
    /// Entries `[..persisted]` are in the file (written, not necessarily synced).
    persisted: usize,
}

impl OffsetIndex {
    pub fn empty(file: Arc<File>) -> OffsetIndex {
        OffsetIndex {
            file,
            entries: Vec::new(),
            persisted: 0,
        }
    }

    /// Reads and checks the file. `Ok(None)` means corrupt: rebuild it from the log.
    pub fn load(file: Arc<File>, log_size: u64) -> io::Result<Option<OffsetIndex>> {
        let len = file.metadata()?.len();
        // Every entry points at a distinct batch of at least 61 bytes: more entries than that
        // is garbage, and checking first bounds the allocation.
        if len % INDEX_ENTRY_LEN != 0 || len / INDEX_ENTRY_LEN > log_size / BATCH_HEADER_LEN as u64
        {
            return Ok(None);
        }
        let mut buf = vec![0u8; len as usize];
        read_exact_at(&file, &mut buf, 0)?;
        let mut entries = Vec::with_capacity(buf.len() / INDEX_ENTRY_LEN as usize);
        let mut prev = IndexEntry {
            rel_offset: 0,
            position: 0,
        };
        for chunk in buf.chunks_exact(INDEX_ENTRY_LEN as usize) {
            let e = IndexEntry {
                rel_offset: u32::from_be_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]),
                position: u32::from_be_bytes([chunk[4], chunk[5], chunk[6], chunk[7]]),
            };
            if e.rel_offset <= prev.rel_offset
                || e.position <= prev.position
                || u64::from(e.position) >= log_size
            {
                return Ok(None);
            }
            entries.push(e);
            prev = e;
        }
        let persisted = entries.len();
        Ok(Some(OffsetIndex {
            file,
            entries,
            persisted,
        }))
    }

    pub fn file(&self) -> &Arc<File> {
        &self.file
    }

    pub fn entries(&self) -> &[IndexEntry] {
        &self.entries
    }

    pub fn last(&self) -> Option<IndexEntry> {
        self.entries.last().copied()
    }

    /// Bytes the file will have once persisted.
    pub fn byte_len(&self) -> u64 {
        self.entries.len() as u64 * INDEX_ENTRY_LEN
    }

    /// The entry with the largest relative offset <= `rel_offset`.
    pub fn lookup(&self, rel_offset: u32) -> Option<IndexEntry> {
        let n = self.entries.partition_point(|e| e.rel_offset <= rel_offset);
        n.checked_sub(1).map(|i| self.entries[i])
    }

    /// Adds an entry in memory; the caller keeps entries increasing.
    pub fn push(&mut self, entry: IndexEntry) {
        debug_assert!(self
            .entries
            .last()
            .is_none_or(|l| l.rel_offset < entry.rel_offset && l.position < entry.position));
        self.entries.push(entry);
    }

    /// Writes the entries not yet in the file with one pwrite. Returns whether it wrote.
    pub fn persist(&mut self, io: &dyn Io) -> io::Result<bool> {
        if self.persisted == self.entries.len() {
            return Ok(false);
        }
        let mut buf = Vec::with_capacity((self.entries.len() - self.persisted) * 8);
        for e in &self.entries[self.persisted..] {
            buf.extend_from_slice(&e.rel_offset.to_be_bytes());
            buf.extend_from_slice(&e.position.to_be_bytes());
        }
        io.write_all_at(&self.file, &buf, self.persisted as u64 * INDEX_ENTRY_LEN)?;
        self.persisted = self.entries.len();
        Ok(true)
    }

    /// Keeps the first `keep` entries, in memory and in the file.
    pub fn truncate(&mut self, io: &dyn Io, keep: usize) -> io::Result<()> {
        self.entries.truncate(keep);
        self.persisted = self.persisted.min(self.entries.len());
        io.set_len(&self.file, self.persisted as u64 * INDEX_ENTRY_LEN)
    }
}
