//! Sluice's storage engine: one [`Log`] per partition, made of segments on disk.
//!
//! # Layout
//! - [`log`]: [`Log`], the public API — append with offset assignment, group-commit flush,
//!   reads by offset, lookups by timestamp, truncation; the locking lives here.
//! - [`config`]: [`LogConfig`] (segment size/age, index spacing).
//! - [`error`]: [`LogError`], including the sticky `Offline` state.
//! - [`io`]: the narrow seam every disk write and fsync goes through ([`Io`]), with
//!   [`FaultInjectingIo`] for tests.
//! - `segment`: one `<base>.log` with its indexes; roll decisions.
//! - `index`, `time_index`: the sparse `.index` and `.timeindex` files.
//! - `read`: the fetch path (whole batches by pread, outside the append lock).
//! - `recovery`: opening a directory, index validation, torn-tail truncation after a crash.
//! - `checkpoint`: the atomically replaced `recovery-point` file.
//!
//! Byte layouts, the locking of each path and a crash analysis are in `docs/STORAGE.md`.
//!
//! Batches are stored exactly as the producer sent them; only the base offset and partition
//! leader epoch (outside the CRC) are rewritten on append. Offsets in the API are plain `i64`.

mod checkpoint;
pub mod config;
pub mod error;
mod index;
pub mod io;
pub mod log;
mod read;
mod recovery;
mod segment;
mod time_index;

pub use config::LogConfig;
pub use error::LogError;
pub use io::{FaultInjectingIo, Io, StdIo};
pub use log::{AppendInfo, Log, ReadResult};
