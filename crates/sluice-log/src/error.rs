//! The one error type of the storage engine.

use std::io;

use sluice_protocol::batch::BatchError;
use sluice_types::Offset;
use thiserror::Error;

/// Errors returned by [`crate::Log`]. The broker maps them to Kafka error codes.
#[derive(Debug, Error)]
pub enum LogError {
    /// A file operation failed. If it was a write or an fsync the log is now [`LogError::Offline`].
    #[error("log I/O error: {0}")]
    Io(#[from] io::Error),
    /// Kafka: `OFFSET_OUT_OF_RANGE`.
    #[error("offset {offset} out of range [{log_start}, {log_end}]")]
    OffsetOutOfRange {
        offset: Offset,
        log_start: Offset,
        log_end: Offset,
    },
    /// Sticky: a write or fsync failed earlier (or a thread panicked inside the log). Nothing is
    /// retried, because after a failed fsync the kernel may have dropped the dirty pages and a
    /// later "successful" fsync would lie. Close the log and reopen it (which runs recovery).
    /// Kafka: `KAFKA_STORAGE_ERROR`.
    #[error("log is offline after an earlier I/O failure")]
    Offline,
    /// The files contradict themselves in a way reading cannot work around.
    #[error("corrupt log: {0}")]
    Corrupt(String),
    /// `append` was given bytes that are not well-framed v2 batches (or, for
    /// `append_as_follower`, a batch whose CRC does not match).
    #[error("invalid batch: {0}")]
    InvalidBatch(#[from] BatchError),
    /// `append_as_follower` was given batches starting below the log end (Kafka:
    /// `UnexpectedAppendOffsetException`). Nothing was written: the follower has to truncate,
    /// or fetch from its log end.
    #[error("follower append starts at offset {first_offset}, below the log end {log_end}")]
    AppendBelowLogEnd {
        first_offset: Offset,
        log_end: Offset,
    },
    /// `append_as_follower` was given offsets the log cannot store as they are: not increasing
    /// from batch to batch (Kafka: `OffsetsOutOfOrderException`), or more than 2^32 offsets past
    /// the active segment's base. Nothing was written.
    #[error("follower append refused at offset {offset}: {reason}")]
    InvalidOffsets { offset: Offset, reason: String },
}
