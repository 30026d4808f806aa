//! The error of the quorum's durable storage (log, vote, snapshot, legacy import), and its
//! mapping onto openraft's [`StorageError`] at the trait boundary.

use std::io;
use std::path::PathBuf;

use openraft::{ErrorSubject, ErrorVerb, StorageError, StorageIOError};
use thiserror::Error;

use super::types::NodeId;
use crate::store::StoreError;

#[derive(Debug, Error)]
pub enum RaftStoreError {
    #[error("metadata quorum I/O on {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    /// Damage that is not a torn last write: acknowledged state that cannot be read back.
    #[error("metadata quorum file {path} is corrupt at line {line} (byte {offset}): {reason}")]
    Corrupt {
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// Byte position of the start of that line.
        offset: u64,
        reason: String,
    },
    #[error(
        "metadata quorum log {path} is offline after an earlier write or fsync failure; \
         no Raft write is possible until the node restarts"
    )]
    Offline { path: PathBuf },
    #[error("cannot encode {what}: {source}")]
    Encode {
        what: &'static str,
        source: serde_json::Error,
    },
    /// openraft appends entries in index order; anything else would make a truncation cut
    /// the wrong bytes.
    #[error("log entry {index} does not follow the last log index {last} of {path}")]
    OutOfOrder {
        path: PathBuf,
        index: u64,
        last: u64,
    },
    #[error("received snapshot does not match its metadata: {0}")]
    SnapshotMismatch(String),
    #[error(
        "{legacy} (the metadata log of a release before the Raft quorum) exists next to a Raft \
         log that is already in use; move one of them away"
    )]
    LegacyConflict { legacy: PathBuf },
    #[error("cannot import the legacy metadata log: {0}")]
    Legacy(#[from] StoreError),
}

pub(crate) fn io_at(path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> RaftStoreError {
    let path = path.into();
    move |source| RaftStoreError::Io { path, source }
}

impl RaftStoreError {
    /// The openraft error for a failure of `verb` on `subject`. Any storage error stops the
    /// Raft node; the message keeps the file and cause.
    pub(crate) fn into_storage(
        self,
        subject: ErrorSubject<NodeId>,
        verb: ErrorVerb,
    ) -> StorageError<NodeId> {
        StorageIOError::new(subject, verb, &self).into()
    }
}
