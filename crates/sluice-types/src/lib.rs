//! The nouns every Sluice crate shares, as newtypes so that an offset cannot be passed where a
//! leader epoch is expected, and the clock that pure cores are handed instead of reading time.
//!
//! # Layout
//! - [`ids`]: [`Offset`], [`LeaderEpoch`], [`BrokerId`], [`PartitionId`], [`ProducerId`],
//!   [`TopicPartition`].
//! - [`clock`]: [`Clock`], with [`SystemClock`] for the broker and [`ManualClock`] for tests.
//!
//! The newtypes serialize as their bare number (`#[serde(transparent)]`), so records written
//! before they existed read back unchanged.

pub mod clock;
pub mod ids;

pub use clock::{Clock, ManualClock, SystemClock};
pub use ids::{BrokerId, LeaderEpoch, Offset, PartitionId, ProducerId, TopicPartition};
