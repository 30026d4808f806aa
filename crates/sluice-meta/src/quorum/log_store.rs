//! The quorum's durable Raft log and vote: [`MetaLogStore`], openraft's `RaftLogStorage`, in
//! `<data-dir>/__cluster_metadata/raft/`:
//! - `log`: the entries, one checksummed JSON [`Entry`] per line (the metadata log's line
//!   format, [`crate::replay`]), in increasing index order; appended with one write and one
//!   fdatasync per `append`.
//! - `purged`: the last purged log id. Entries at or below it that are still in `log` are dead
//!   and skipped when the log is read.
//! - `vote`, `committed`: the last saved vote and committed log id.
//!
//! The small files are replaced atomically (tmp, fsync, rename, directory fsync). The entries
//! are also held in memory (a `BTreeMap` shared with the [`MetaLogReader`]s): the log is
//! bounded by snapshots, since openraft purges everything a snapshot covers (keeping
//! `max_in_snapshot_log_to_keep`) once `snapshot_policy` builds one, so memory holds at most
//! one snapshot interval plus that tail (about 6000 entries with openraft's defaults). The
//! quorum's config must keep snapshots on.
//!
//! Entries are written in strictly increasing index order (a truncation cuts at a byte
//! position, so the file order must be the index order): an append at or below the last entry
//! is refused. Appended entries at or below the last purged id are already in a snapshot and
//! are dropped with a warning (openraft never sends them in operation; its storage suite does).
//!
//! # Crash analysis
//!
//! - **append**: an entry is durable, and openraft is told so (the `LogFlushed` callback), only
//!   after its line is fsynced. A crash mid-append leaves at most one torn last line (no
//!   newline or a bad checksum); open cuts it with a warning: openraft never acted on it.
//!   Damage before the last line is acknowledged history: open fails with the file, line and
//!   byte position rather than guess.
//! - **truncate(i)**: ftruncate at the byte position of entry i's line, then fsync. A crash
//!   before the fsync leaves the old tail (openraft truncates again: the leader still conflicts)
//!   or part of it; either is a valid log.
//! - **purge(i)**: `purged` is replaced first, so a crash at any later point leaves entries
//!   <= i dead in `log`, skipped at open. When the dead prefix is at least
//!   [`COMPACT_AFTER_BYTES`] and no smaller than the live part, the live entries are rewritten
//!   to `log.compact`, fsynced and renamed over `log` (then the directory fsynced); a stale
//!   `log.compact` is removed at open.
//!
//! Sticky error: after any failed write or fsync the store refuses every later write until
//! the node restarts, for the reasons [`crate::store`] gives (a partial line would sit before
//! the next entry; after a failed fsync the kernel may have dropped the dirty pages, so a
//! later successful fsync would lie). openraft stops the node on a storage error anyway; this
//! keeps the store safe for any other caller. Writes run on tokio's blocking pool, one at a
//! time (every write method takes `&mut self` and completes before it returns).

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{
    Entry, ErrorSubject, ErrorVerb, LogId, LogState, OptionalSend, RaftLogReader, StorageError,
    Vote,
};

use super::error::{io_at, RaftStoreError};
use super::files::{self, encode, read_value, remove_stale, sync_dir, write_atomic};
use super::types::{MetaRaft, NodeId};
use crate::replay::{checked_json, TornTail};

/// The log file's name in the Raft directory.
pub const LOG_FILE: &str = "log";
const COMPACT_FILE: &str = "log.compact";
const PURGED_FILE: &str = "purged";
const VOTE_FILE: &str = "vote";
const COMMITTED_FILE: &str = "committed";

/// The dead prefix (purged entries still in `log`) worth a rewrite.
pub const COMPACT_AFTER_BYTES: u64 = 1 << 20;

/// The narrow seam through which the log file is written, so tests can inject a failed write or
/// fsync. Opening (read, cut a torn tail) and the compaction rewrite use files directly.
pub trait LogFile: Send + Sync + fmt::Debug + 'static {
    /// Appends all of `buf` at the end of the file.
    fn append(&mut self, buf: &[u8]) -> io::Result<()>;
    /// fdatasync.
    fn sync_data(&mut self) -> io::Result<()>;
    /// ftruncate (not synced).
    fn set_len(&mut self, len: u64) -> io::Result<()>;
}

impl LogFile for File {
    fn append(&mut self, buf: &[u8]) -> io::Result<()> {
        self.write_all(buf)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        File::sync_data(self)
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        File::set_len(self, len)
    }
}

/// Wraps each opened log file (the original, and the one a compaction renames in).
type Wrap = Arc<dyn Fn(File) -> Box<dyn LogFile> + Send + Sync>;

type Entries = Arc<RwLock<BTreeMap<u64, Entry<MetaRaft>>>>;

/// The durable Raft log and vote. See the module docs for the layout and crash analysis.
pub struct MetaLogStore {
    dir: PathBuf,
    log_path: PathBuf,
    /// `None` while a write runs on the blocking pool, and for good if that write was abandoned
    /// (its future dropped): the store is then offline.
    file: Option<Box<dyn LogFile>>,
    wrap: Wrap,
    /// The log file's length: where the next line starts.
    file_len: u64,
    /// Byte position of each live entry's line: where a truncation cuts.
    positions: BTreeMap<u64, u64>,
    /// The live entries, shared with the readers.
    entries: Entries,
    last_purged: Option<LogId<NodeId>>,
    vote: Option<Vote<NodeId>>,
    committed: Option<LogId<NodeId>>,
    /// Rewrite the log once its dead prefix is at least this long (and no shorter than the
    /// live part).
    compact_after: u64,
    /// Set by the first failed write or fsync; sticky until restart (see the module docs).
    offline: bool,
}

/// Reads log entries for openraft's replication tasks; a cheap clone of the store's memory.
#[derive(Clone)]
pub struct MetaLogReader {
    entries: Entries,
}

impl fmt::Debug for MetaLogStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetaLogStore")
            .field("log_path", &self.log_path)
            .field("file_len", &self.file_len)
            .field("last_purged", &self.last_purged)
            .field("offline", &self.offline)
            .finish_non_exhaustive()
    }
}

impl MetaLogStore {
    /// Opens (or creates) the log in `raft_dir` and reads it back.
    pub fn open(raft_dir: &Path) -> Result<MetaLogStore, RaftStoreError> {
        Self::open_with(raft_dir, Arc::new(|f| Box::new(f)))
    }

    /// [`open`](Self::open), with the log file's writes going through `wrap(file)`.
    fn open_with(raft_dir: &Path, wrap: Wrap) -> Result<MetaLogStore, RaftStoreError> {
        fs::create_dir_all(raft_dir).map_err(io_at(raft_dir))?;
        for name in [COMPACT_FILE, "purged.tmp", "vote.tmp", "committed.tmp"] {
            remove_stale(&raft_dir.join(name))?;
        }
        let last_purged: Option<LogId<NodeId>> = read_value(raft_dir, PURGED_FILE)?;
        let vote = read_value(raft_dir, VOTE_FILE)?;
        let committed = read_value(raft_dir, COMMITTED_FILE)?;

        let log_path = raft_dir.join(LOG_FILE);
        let file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&log_path)
            .map_err(io_at(&log_path))?;
        let mut bytes = Vec::new();
        (&file).read_to_end(&mut bytes).map_err(io_at(&log_path))?;
        let read = read_log(&log_path, &bytes, last_purged.map(|p| p.index))?;
        if let Some(torn) = &read.torn {
            tracing::warn!(
                path = %log_path.display(),
                line = torn.line,
                reason = %torn.reason,
                dropped_bytes = bytes.len() as u64 - read.valid_len,
                "cutting a torn last Raft log entry (never reported durable)"
            );
            file.set_len(read.valid_len).map_err(io_at(&log_path))?;
            file.sync_all().map_err(io_at(&log_path))?;
        }
        Ok(MetaLogStore {
            dir: raft_dir.to_path_buf(),
            file: Some(wrap(file)),
            wrap,
            file_len: read.valid_len,
            positions: read.positions,
            entries: Arc::new(RwLock::new(read.entries)),
            last_purged,
            vote,
            committed,
            compact_after: COMPACT_AFTER_BYTES,
            offline: false,
            log_path,
        })
    }

    /// Whether an earlier I/O failure took the store offline.
    pub fn is_offline(&self) -> bool {
        self.offline
    }

    /// The last purged log id (durable).
    pub fn last_purged(&self) -> Option<LogId<NodeId>> {
        self.last_purged
    }

    fn reader(&self) -> MetaLogReader {
        MetaLogReader {
            entries: self.entries.clone(),
        }
    }

    fn check_online(&self) -> Result<(), RaftStoreError> {
        if self.offline || self.file.is_none() {
            return Err(RaftStoreError::Offline {
                path: self.log_path.clone(),
            });
        }
        Ok(())
    }

    /// Marks the store offline after `e` (sticky) and passes `e` on.
    fn failed(&mut self, e: RaftStoreError) -> RaftStoreError {
        if !self.offline {
            self.offline = true;
            tracing::error!(
                path = %self.log_path.display(),
                error = %e,
                "Raft log write failed; the metadata quorum log is offline until restart"
            );
        }
        e
    }

    /// Runs `op` with the log file on the blocking pool. Any failure takes the store offline.
    async fn with_file<T: Send + 'static>(
        &mut self,
        op: impl FnOnce(&mut Box<dyn LogFile>) -> Result<T, RaftStoreError> + Send + 'static,
    ) -> Result<T, RaftStoreError> {
        self.check_online()?;
        let Some(mut file) = self.file.take() else {
            unreachable!("check_online saw the file");
        };
        let done = tokio::task::spawn_blocking(move || {
            let r = op(&mut file);
            (file, r)
        })
        .await;
        match done {
            Ok((file, Ok(v))) => {
                self.file = Some(file);
                Ok(v)
            }
            Ok((file, Err(e))) => {
                self.file = Some(file);
                Err(self.failed(e))
            }
            Err(join) => {
                let e = io_at(&self.log_path)(io::Error::other(format!(
                    "log write task failed: {join}"
                )));
                Err(self.failed(e))
            }
        }
    }

    /// Runs a write of a small file on the blocking pool. Any failure takes the store offline.
    async fn write_small(
        &mut self,
        name: &'static str,
        bytes: Vec<u8>,
    ) -> Result<(), RaftStoreError> {
        self.check_online()?;
        let dir = self.dir.clone();
        let done = tokio::task::spawn_blocking(move || write_atomic(&dir, name, &bytes))
            .await
            .unwrap_or_else(|join| {
                Err(io_at(self.dir.join(name))(io::Error::other(format!(
                    "write task failed: {join}"
                ))))
            });
        done.map_err(|e| self.failed(e))
    }

    fn last_index(&self) -> Option<u64> {
        let last_entry = self.positions.last_key_value().map(|(&i, _)| i);
        last_entry.max(self.last_purged.map(|p| p.index))
    }

    async fn append_entries(&mut self, new: Vec<Entry<MetaRaft>>) -> Result<(), RaftStoreError> {
        self.check_online()?;
        if new.is_empty() {
            return Ok(());
        }
        let purged = self.last_purged.map(|p| p.index);
        let covered = new
            .iter()
            .take_while(|e| purged.is_some_and(|p| e.log_id.index <= p))
            .count();
        if covered > 0 {
            // Already in a snapshot (openraft only purges what one covers): nothing to keep.
            // openraft does not send these in operation; its storage suite does.
            tracing::warn!(
                path = %self.log_path.display(),
                entries = covered,
                last_purged = ?self.last_purged,
                "dropping appended entries at or below the last purged log id"
            );
        }
        let new: Vec<_> = new.into_iter().skip(covered).collect();
        if new.is_empty() {
            return Ok(());
        }
        let mut last = self.last_index();
        let mut bytes = Vec::new();
        let mut positions = Vec::with_capacity(new.len());
        for entry in &new {
            let index = entry.log_id.index;
            if let Some(last) = last.filter(|&l| index <= l) {
                return Err(RaftStoreError::OutOfOrder {
                    path: self.log_path.clone(),
                    index,
                    last,
                });
            }
            positions.push((index, self.file_len + bytes.len() as u64));
            bytes.extend(encode("Raft log entry", entry)?);
            last = Some(index);
        }
        let len = bytes.len() as u64;
        let path = self.log_path.clone();
        self.with_file(move |file| {
            file.append(&bytes)
                .and_then(|()| file.sync_data())
                .map_err(io_at(path))
        })
        .await?;
        self.file_len += len;
        self.positions.extend(positions);
        let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
        entries.extend(new.into_iter().map(|e| (e.log_id.index, e)));
        Ok(())
    }

    async fn truncate_from(&mut self, index: u64) -> Result<(), RaftStoreError> {
        self.check_online()?;
        let Some((_, &cut)) = self.positions.range(index..).next() else {
            return Ok(());
        };
        let path = self.log_path.clone();
        self.with_file(move |file| {
            file.set_len(cut)
                .and_then(|()| file.sync_data())
                .map_err(io_at(path))
        })
        .await?;
        self.file_len = cut;
        self.positions.split_off(&index);
        self.entries
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .split_off(&index);
        Ok(())
    }

    async fn purge_upto(&mut self, log_id: LogId<NodeId>) -> Result<(), RaftStoreError> {
        self.check_online()?;
        if self.last_purged.is_some_and(|p| p >= log_id) {
            return Ok(());
        }
        self.write_small(PURGED_FILE, encode("purged log id", &log_id)?)
            .await?;
        self.last_purged = Some(log_id);
        let first_kept = log_id.index.saturating_add(1);
        self.positions = self.positions.split_off(&first_kept);
        {
            let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
            *entries = entries.split_off(&first_kept);
        }
        let dead = self
            .positions
            .first_key_value()
            .map_or(self.file_len, |(_, &p)| p);
        if dead > 0 && dead >= self.compact_after && dead >= self.file_len - dead {
            self.compact().await?;
        }
        Ok(())
    }

    /// Rewrites the live entries into a new log file that replaces the old one.
    async fn compact(&mut self) -> Result<(), RaftStoreError> {
        let mut bytes = Vec::new();
        let mut positions = BTreeMap::new();
        for (index, entry) in self
            .entries
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            positions.insert(*index, bytes.len() as u64);
            bytes.extend(encode("Raft log entry", entry)?);
        }
        let dir = self.dir.clone();
        let wrap = self.wrap.clone();
        let len = bytes.len() as u64;
        let dead = self.file_len.saturating_sub(len);
        // The old file is replaced (and its handle useless) once the rename happens, so this
        // runs outside `with_file`: on any failure the store goes offline.
        self.check_online()?;
        self.file = None;
        let done = tokio::task::spawn_blocking(move || {
            let tmp = dir.join(COMPACT_FILE);
            let path = dir.join(LOG_FILE);
            files::write_synced(&tmp, &bytes)?;
            fs::rename(&tmp, &path).map_err(io_at(&path))?;
            sync_dir(&dir)?;
            let file = OpenOptions::new()
                .append(true)
                .open(&path)
                .map_err(io_at(&path))?;
            Ok(wrap(file))
        })
        .await
        .unwrap_or_else(|join| {
            Err(io_at(&self.log_path)(io::Error::other(format!(
                "log compaction task failed: {join}"
            ))))
        });
        match done {
            Ok(file) => {
                tracing::info!(
                    path = %self.log_path.display(),
                    dropped_bytes = dead,
                    "rewrote the Raft log without its purged entries"
                );
                self.file = Some(file);
                self.file_len = len;
                self.positions = positions;
                Ok(())
            }
            Err(e) => Err(self.failed(e)),
        }
    }

    #[cfg(test)]
    pub(crate) fn set_compact_after(&mut self, bytes: u64) {
        self.compact_after = bytes;
    }

    #[cfg(test)]
    pub(crate) fn file_len(&self) -> u64 {
        self.file_len
    }
}

/// What reading the log file found.
struct ReadLog {
    entries: BTreeMap<u64, Entry<MetaRaft>>,
    positions: BTreeMap<u64, u64>,
    valid_len: u64,
    torn: Option<TornTail>,
}

/// Reads a log file image: the live entries (above `purged`), or the first damage before the
/// last line. Pure, so the rules are tested on bytes.
fn read_log(path: &Path, bytes: &[u8], purged: Option<u64>) -> Result<ReadLog, RaftStoreError> {
    let mut read = ReadLog {
        entries: BTreeMap::new(),
        positions: BTreeMap::new(),
        valid_len: 0,
        torn: None,
    };
    let mut pos = 0usize;
    let mut line_no = 0usize;
    let mut last_index = None;
    while pos < bytes.len() {
        line_no += 1;
        let corrupt = |reason: String| RaftStoreError::Corrupt {
            path: path.to_path_buf(),
            line: line_no,
            offset: pos as u64,
            reason,
        };
        let rest = &bytes[pos..];
        let Some(end) = rest.iter().position(|&b| b == b'\n') else {
            read.torn = Some(TornTail {
                line: line_no,
                reason: "incomplete entry (no newline)".into(),
            });
            break;
        };
        let next = pos + end + 1;
        let json = match checked_json(&rest[..end]) {
            Ok(json) => json,
            Err(reason) if next == bytes.len() => {
                read.torn = Some(TornTail {
                    line: line_no,
                    reason,
                });
                break;
            }
            Err(reason) => return Err(corrupt(format!("{reason}, and entries follow it"))),
        };
        let entry: Entry<MetaRaft> = serde_json::from_slice(json).map_err(|e| {
            corrupt(format!(
                "entry has a valid checksum but cannot be decoded: {e}"
            ))
        })?;
        let index = entry.log_id.index;
        if let Some(last) = last_index.filter(|&l| index <= l) {
            return Err(corrupt(format!(
                "entry index {index} does not follow index {last}"
            )));
        }
        last_index = Some(index);
        if purged.is_none_or(|p| index > p) {
            read.positions.insert(index, pos as u64);
            read.entries.insert(index, entry);
        }
        pos = next;
        read.valid_len = next as u64;
    }
    Ok(read)
}

fn read_range(entries: &Entries, range: impl RangeBounds<u64>) -> Vec<Entry<MetaRaft>> {
    entries
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .range(range)
        .map(|(_, e)| e.clone())
        .collect()
}

impl RaftLogReader<MetaRaft> for MetaLogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + fmt::Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<MetaRaft>>, StorageError<NodeId>> {
        Ok(read_range(&self.entries, range))
    }
}

impl RaftLogReader<MetaRaft> for MetaLogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + fmt::Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<MetaRaft>>, StorageError<NodeId>> {
        Ok(read_range(&self.entries, range))
    }
}

impl RaftLogStorage<MetaRaft> for MetaLogStore {
    type LogReader = MetaLogReader;

    async fn get_log_state(&mut self) -> Result<LogState<MetaRaft>, StorageError<NodeId>> {
        let last = self
            .entries
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .last_key_value()
            .map(|(_, e)| e.log_id);
        Ok(LogState {
            last_purged_log_id: self.last_purged,
            last_log_id: last.or(self.last_purged),
        })
    }

    async fn get_log_reader(&mut self) -> MetaLogReader {
        self.reader()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        let bytes = encode("vote", vote)
            .map_err(|e| e.into_storage(ErrorSubject::Vote, ErrorVerb::Write))?;
        self.write_small(VOTE_FILE, bytes)
            .await
            .map_err(|e| e.into_storage(ErrorSubject::Vote, ErrorVerb::Write))?;
        self.vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        Ok(self.vote)
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<NodeId>>,
    ) -> Result<(), StorageError<NodeId>> {
        if committed == self.committed {
            return Ok(());
        }
        let bytes = encode("committed log id", &committed)
            .map_err(|e| e.into_storage(ErrorSubject::Store, ErrorVerb::Write))?;
        self.write_small(COMMITTED_FILE, bytes)
            .await
            .map_err(|e| e.into_storage(ErrorSubject::Store, ErrorVerb::Write))?;
        self.committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        Ok(self.committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<MetaRaft>,
    ) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<MetaRaft>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        match self.append_entries(entries.into_iter().collect()).await {
            Ok(()) => {
                // Only now, after the fsync, may openraft act on the entries.
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(io::Error::other(e.to_string())));
                Err(e.into_storage(ErrorSubject::Logs, ErrorVerb::Write))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.truncate_from(log_id.index)
            .await
            .map_err(|e| e.into_storage(ErrorSubject::Logs, ErrorVerb::Delete))
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.purge_upto(log_id)
            .await
            .map_err(|e| e.into_storage(ErrorSubject::Logs, ErrorVerb::Delete))
    }
}

/// Records `log_id` as the last purged log id of the (empty) log in `raft_dir`: the legacy
/// import's hand-over, before any store is open.
pub(crate) fn write_purged(raft_dir: &Path, log_id: LogId<NodeId>) -> Result<(), RaftStoreError> {
    write_atomic(raft_dir, PURGED_FILE, &encode("purged log id", &log_id)?)
}

/// Whether `raft_dir` holds state only a running Raft node writes (a vote, a committed id, or
/// log entries), as opposed to what an interrupted legacy import leaves.
pub(crate) fn has_raft_state(raft_dir: &Path) -> Result<bool, RaftStoreError> {
    for name in [VOTE_FILE, COMMITTED_FILE] {
        if raft_dir.join(name).exists() {
            return Ok(true);
        }
    }
    let log = raft_dir.join(LOG_FILE);
    match fs::metadata(&log) {
        Ok(m) => Ok(m.len() > 0),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io_at(&log)(e)),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use openraft::storage::RaftLogStorageExt;
    use openraft::{CommittedLeaderId, EntryPayload, Membership};

    use super::*;
    use crate::quorum::MetaBatch;
    use crate::record::MetadataRecord;
    use crate::BrokerId;

    fn lid(term: u64, index: u64) -> LogId<NodeId> {
        LogId::new(CommittedLeaderId::new(term, 1), index)
    }

    fn blank(term: u64, index: u64) -> Entry<MetaRaft> {
        Entry {
            log_id: lid(term, index),
            payload: EntryPayload::Blank,
        }
    }

    fn normal(term: u64, index: u64) -> Entry<MetaRaft> {
        Entry {
            log_id: lid(term, index),
            payload: EntryPayload::Normal(MetaBatch {
                records: vec![MetadataRecord::RegisterBroker {
                    broker_id: BrokerId(index as i32),
                    host: "127.0.0.1".into(),
                    port: 9092,
                    rack: None,
                    incarnation_id: None,
                    directory_id: None,
                    fenced: false,
                }],
            }),
        }
    }

    fn membership(term: u64, index: u64) -> Entry<MetaRaft> {
        Entry {
            log_id: lid(term, index),
            payload: EntryPayload::Membership(Membership::new(vec![[1, 2, 3].into()], ())),
        }
    }

    async fn all(store: &mut MetaLogStore) -> Vec<Entry<MetaRaft>> {
        store.try_get_log_entries(..).await.unwrap()
    }

    #[tokio::test]
    async fn reopen_gives_the_same_log_state_entries_and_vote() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = MetaLogStore::open(dir.path()).unwrap();
        store
            .blocking_append([blank(1, 1), normal(1, 2), membership(1, 3)])
            .await
            .unwrap();
        store
            .blocking_append((4..=9).map(|i| normal(2, i)))
            .await
            .unwrap();
        store.truncate(lid(2, 7)).await.unwrap();
        store.blocking_append([normal(3, 7)]).await.unwrap();
        store.purge(lid(1, 2)).await.unwrap();
        store.save_vote(&Vote::new(3, 2)).await.unwrap();
        store.save_committed(Some(lid(3, 7))).await.unwrap();
        let state = store.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id, Some(lid(1, 2)));
        assert_eq!(state.last_log_id, Some(lid(3, 7)));
        let entries = all(&mut store).await;
        let ids: Vec<_> = entries.iter().map(|e| e.log_id).collect();
        assert_eq!(
            ids,
            vec![lid(1, 3), lid(2, 4), lid(2, 5), lid(2, 6), lid(3, 7)]
        );
        // An entry at or below the last one is refused rather than written out of order.
        assert!(store.blocking_append([normal(3, 7)]).await.is_err());
        assert!(!store.is_offline(), "a refused append wrote nothing");
        drop(store);

        let mut store = MetaLogStore::open(dir.path()).unwrap();
        assert_eq!(store.get_log_state().await.unwrap(), state);
        assert_eq!(all(&mut store).await, entries);
        assert_eq!(store.read_vote().await.unwrap(), Some(Vote::new(3, 2)));
        assert_eq!(store.read_committed().await.unwrap(), Some(lid(3, 7)));
        let mut reader = store.get_log_reader().await;
        assert_eq!(
            reader.try_get_log_entries(4..6).await.unwrap(),
            entries[1..3]
        );

        // Truncating everything and purging past the end both survive a restart.
        store.truncate(lid(1, 3)).await.unwrap();
        store.purge(lid(4, 20)).await.unwrap();
        drop(store);
        let mut store = MetaLogStore::open(dir.path()).unwrap();
        let state = store.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id, Some(lid(4, 20)));
        assert_eq!(state.last_log_id, Some(lid(4, 20)));
        assert!(all(&mut store).await.is_empty());
        store.blocking_append([blank(5, 21)]).await.unwrap();
        drop(store);
        let mut store = MetaLogStore::open(dir.path()).unwrap();
        assert_eq!(
            store.get_log_state().await.unwrap().last_log_id,
            Some(lid(5, 21))
        );
    }

    #[tokio::test]
    async fn a_purge_rewrites_a_large_dead_prefix_and_a_crash_around_it_is_harmless() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = MetaLogStore::open(dir.path()).unwrap();
        store
            .blocking_append((1..=10).map(|i| normal(1, i)))
            .await
            .unwrap();
        let full = store.file_len();
        // Below the threshold the dead prefix stays in the file.
        store.purge(lid(1, 3)).await.unwrap();
        assert_eq!(store.file_len(), full);
        store.set_compact_after(1);
        store.purge(lid(1, 6)).await.unwrap();
        assert!(store.file_len() < full / 2, "rewritten");
        assert_eq!(
            fs::metadata(dir.path().join(LOG_FILE)).unwrap().len(),
            store.file_len()
        );
        // The rewritten file is appended to and truncated at the right positions.
        store.blocking_append([normal(2, 11)]).await.unwrap();
        store.truncate(lid(1, 9)).await.unwrap();
        let entries = all(&mut store).await;
        assert_eq!(entries.len(), 2);
        drop(store);

        // A crash after `purged` was replaced but before the rewrite (and with a stale
        // rewrite left behind): the dead entries are skipped, the stale file removed.
        fs::write(dir.path().join(COMPACT_FILE), b"half a rewrite").unwrap();
        write_purged(dir.path(), lid(1, 7)).unwrap();
        let mut store = MetaLogStore::open(dir.path()).unwrap();
        assert!(!dir.path().join(COMPACT_FILE).exists());
        assert_eq!(all(&mut store).await, entries[1..]);
        assert_eq!(
            store.get_log_state().await.unwrap().last_purged_log_id,
            Some(lid(1, 7))
        );
    }

    #[tokio::test]
    async fn a_torn_tail_is_cut_and_earlier_damage_fails_with_its_position() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = MetaLogStore::open(dir.path()).unwrap();
        store
            .blocking_append([blank(1, 1), normal(1, 2), normal(1, 3)])
            .await
            .unwrap();
        drop(store);
        let log = dir.path().join(LOG_FILE);
        let good = fs::read(&log).unwrap();

        // kill -9 mid-append: part of a line, or a whole line with a bad checksum.
        for tail in [&b"0badc0de {\"log_id\""[..], b"00000000 {}\n"] {
            let mut torn = good.clone();
            torn.extend_from_slice(tail);
            fs::write(&log, &torn).unwrap();
            let mut store = MetaLogStore::open(dir.path()).unwrap();
            assert_eq!(fs::read(&log).unwrap(), good, "torn tail cut");
            assert_eq!(all(&mut store).await.len(), 3);
        }

        // A flipped bit in the second line is acknowledged history: open fails, file untouched.
        let second = good.iter().position(|&b| b == b'\n').unwrap() + 1;
        let mut bad = good.clone();
        bad[second + 20] ^= 0x01;
        fs::write(&log, &bad).unwrap();
        let e = MetaLogStore::open(dir.path()).unwrap_err();
        assert!(
            matches!(&e, RaftStoreError::Corrupt { line: 2, offset, .. } if *offset == second as u64),
            "{e}"
        );
        let text = e.to_string();
        assert!(
            text.contains("line 2") && text.contains(&format!("byte {second}")),
            "{text}"
        );
        assert!(text.contains("checksum mismatch"), "{text}");
        assert_eq!(fs::read(&log).unwrap(), bad);

        // So is a damaged vote file (written atomically: never torn).
        fs::write(&log, &good).unwrap();
        fs::write(dir.path().join(VOTE_FILE), b"00000000 {}\n").unwrap();
        let e = MetaLogStore::open(dir.path()).unwrap_err();
        assert!(matches!(e, RaftStoreError::Corrupt { .. }), "{e}");
        assert!(e.to_string().contains("vote"), "{e}");
    }

    #[test]
    fn entries_out_of_order_on_disk_are_corruption() {
        let line = |e: &Entry<MetaRaft>| encode("entry", e).unwrap();
        let mut bytes = line(&blank(1, 2));
        bytes.extend(line(&blank(1, 2)));
        let e = read_log(Path::new("log"), &bytes, None).err().unwrap();
        assert!(matches!(&e, RaftStoreError::Corrupt { line: 2, .. }), "{e}");
        // Entries at or below the purged index are dead, not live.
        let mut bytes = line(&blank(1, 1));
        bytes.extend(line(&blank(1, 2)));
        let read = read_log(Path::new("log"), &bytes, Some(1)).unwrap();
        assert_eq!(read.entries.keys().copied().collect::<Vec<_>>(), vec![2]);
        assert_eq!(read.positions[&2], line(&blank(1, 1)).len() as u64);
    }

    /// Writes through a file whose next write or fsync fails on demand.
    #[derive(Debug, Clone, Default)]
    struct Faults(Arc<Mutex<FaultPlan>>);

    #[derive(Debug, Default)]
    struct FaultPlan {
        /// Fail the next write after writing this many of its bytes.
        write_fails_after: Option<usize>,
        fail_sync: bool,
    }

    #[derive(Debug)]
    struct FaultyFile {
        file: File,
        faults: Faults,
    }

    impl LogFile for FaultyFile {
        fn append(&mut self, buf: &[u8]) -> io::Result<()> {
            let cut = self.faults.0.lock().unwrap().write_fails_after.take();
            match cut {
                Some(n) => {
                    self.file.write_all(&buf[..n.min(buf.len())])?;
                    Err(io::Error::other("injected write failure"))
                }
                None => self.file.write_all(buf),
            }
        }

        fn sync_data(&mut self) -> io::Result<()> {
            if std::mem::take(&mut self.faults.0.lock().unwrap().fail_sync) {
                return Err(io::Error::other("injected fsync failure"));
            }
            self.file.sync_data()
        }

        fn set_len(&mut self, len: u64) -> io::Result<()> {
            self.file.set_len(len)
        }
    }

    fn faulty_store(dir: &Path) -> (MetaLogStore, Faults) {
        let faults = Faults::default();
        let f = faults.clone();
        let store = MetaLogStore::open_with(
            dir,
            Arc::new(move |file| {
                Box::new(FaultyFile {
                    file,
                    faults: f.clone(),
                })
            }),
        )
        .unwrap();
        (store, faults)
    }

    #[tokio::test]
    async fn a_failed_fsync_takes_the_store_offline_until_restart() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, faults) = faulty_store(dir.path());
        store
            .blocking_append([blank(1, 1), normal(1, 2)])
            .await
            .unwrap();
        faults.0.lock().unwrap().fail_sync = true;
        let e = store.blocking_append([normal(1, 3)]).await.unwrap_err();
        assert!(e.to_string().contains("injected fsync failure"), "{e}");
        assert!(store.is_offline());
        assert_eq!(
            all(&mut store).await.len(),
            2,
            "not readable: never durable"
        );
        // The fault is gone, but the store does not retry: every later write is refused.
        let offline = |e: StorageError<NodeId>| {
            let text = e.to_string();
            assert!(text.contains("until the node restarts"), "{text}");
        };
        offline(store.blocking_append([normal(1, 3)]).await.unwrap_err());
        offline(store.save_vote(&Vote::new(2, 1)).await.unwrap_err());
        offline(store.save_committed(Some(lid(1, 2))).await.unwrap_err());
        offline(store.truncate(lid(1, 2)).await.unwrap_err());
        offline(store.purge(lid(1, 1)).await.unwrap_err());
        drop(store);
        // The written but unsynced line was whole: the restart may keep it (it was never
        // reported durable, so either is allowed); what matters is that it opens.
        let mut store = MetaLogStore::open(dir.path()).unwrap();
        assert!(!store.is_offline());
        assert!(all(&mut store).await.len() >= 2);
        assert_eq!(store.read_vote().await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_failed_write_leaves_a_torn_tail_that_the_restart_cuts() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, faults) = faulty_store(dir.path());
        store
            .blocking_append([blank(1, 1), normal(1, 2)])
            .await
            .unwrap();
        let log = dir.path().join(LOG_FILE);
        let good = fs::read(&log).unwrap();
        faults.0.lock().unwrap().write_fails_after = Some(20);
        assert!(store.blocking_append([normal(1, 3)]).await.is_err());
        // Appending behind the torn bytes would put garbage in the middle of the log.
        assert!(store.blocking_append([normal(1, 3)]).await.is_err());
        assert_eq!(fs::read(&log).unwrap().len(), good.len() + 20);
        drop(store);
        let mut store = MetaLogStore::open(dir.path()).unwrap();
        assert_eq!(fs::read(&log).unwrap(), good, "torn tail cut");
        store.blocking_append([normal(1, 3)]).await.unwrap();
        drop(store);
        let mut store = MetaLogStore::open(dir.path()).unwrap();
        assert_eq!(all(&mut store).await.len(), 3);
    }
}
