//! Sluice's storage engine: one [`Log`] per partition, made of segments on disk.
//!
//! # Layout
//! - [`log`]: [`Log`], the public API — append with offset assignment (leader) or as given
//!   (follower), group-commit flush, reads by offset, lookups by timestamp, truncation,
//!   OffsetsForLeaderEpoch answers; the locking lives here.
//! - [`epoch_cache`]: the leader-epoch cache ([`EpochEntry`]) and its `leader-epoch-checkpoint`
//!   file.
//! - [`high_watermark`]: the data directory's `replication-offset-checkpoint` file (read and
//!   written by the broker; no log touches it).
//! - [`retention`]: [`RetentionPolicy`], `Log::enforce_retention` (time/size, whole closed
//!   segments) and `Log::delete_records_before` (DeleteRecords, persisted log start).
//! - [`cleaner`]: compaction — `Log::clean` (one pass, `.cleaned`/`.swap` commit protocol),
//!   `Log::cleaning_status` (dirty ratio for the scheduler).
//! - `records`: decoding the records inside a stored batch and rebuilding it from a subset.
//! - [`config`]: [`LogConfig`] (segment size/age, index spacing).
//! - [`error`]: [`LogError`], including the sticky `Offline` state.
//! - [`io`]: the narrow seam every disk write and fsync goes through ([`Io`]), with
//!   [`FaultInjectingIo`] for tests.
//! - `segment`: one `<base>.log` with its indexes; roll decisions.
//! - `index`, `time_index`: the sparse `.index` and `.timeindex` files.
//! - `read`: the fetch path (whole batches by pread, outside the append lock).
//! - `recovery`: opening a directory, index validation, torn-tail truncation after a crash,
//!   completing an interrupted cleaner swap.
//! - `checkpoint`: the atomically replaced `recovery-point`, `log-start-offset` and
//!   `cleaner-offset-checkpoint` files, and Kafka's list format the other two files use.
//!
//! Byte layouts, the locking of each path and a crash analysis are in `docs/STORAGE.md`.
//!
//! Batches are stored exactly as the producer sent them; only the base offset and partition
//! leader epoch (outside the CRC) are rewritten on a leader's append; a follower's append
//! stores the leader's bytes unchanged. Compaction rewrites batches (same offsets, fewer
//! records) and leaves gaps between them. The public API takes and returns the `sluice-types`
//! newtypes (`Offset`, `LeaderEpoch`, `TopicPartition`); inside the crate offsets are plain
//! `i64`, converted at the API edge.

mod checkpoint;
pub mod cleaner;
pub mod config;
pub mod epoch_cache;
pub mod error;
pub mod high_watermark;
mod index;
pub mod io;
pub mod log;
mod read;
mod records;
mod recovery;
pub mod retention;
mod segment;
mod time_index;

pub use cleaner::{CleanOptions, CleanOutcome, CleaningStatus};
pub use config::LogConfig;
pub use epoch_cache::EpochEntry;
pub use error::LogError;
pub use io::{FaultInjectingIo, Io, StdIo};
pub use log::{AppendInfo, Log, ReadResult};
pub use retention::{RetentionOutcome, RetentionPolicy};
