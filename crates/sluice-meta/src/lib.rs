//! Cluster metadata: which brokers exist, which topics and partitions, who leads them, and the
//! topic configs.
//!
//! # Layout
//! - [`record`]: the metadata records, the only way state changes.
//! - [`state`]: [`ClusterState`], a pure state machine: `validate(record)` by the controller,
//!   then an infallible `apply(offset, record)` everywhere; also the snapshot format.
//! - [`delta`]: [`MetadataDelta`], what changed between two images and what the local broker
//!   must do about it (lead, follow, remove partitions).
//! - [`replay`]: the metadata log's checksummed line format and its pure replay
//!   ([`replay_bytes`]), shared by start-up, the fuzz target and the tests.
//! - [`store`]: [`MetadataStore`], the durable metadata log on disk, replayed at start-up; with
//!   the quorum, the importer of a data directory from before it.
//! - [`quorum`]: the controller quorum's Raft storage (openraft): [`MetaLogStore`] (log, vote,
//!   committed id), [`MetaStateMachine`] (the applied [`ClusterState`], published as
//!   [`Applied`] on a watch, and its snapshot), [`open_storage`] (both, with the legacy import).
//!
//! A single node is a cluster of one: it is the controller, and its metadata log is the
//! controller's log. The Raft quorum (openraft) replicates these same records between
//! controllers, as [`MetaBatch`]es; the state machine does not change.

pub mod delta;
pub mod properties;
pub mod quorum;
pub mod record;
pub mod replay;
pub mod state;
pub mod store;

pub use delta::{LocalChanges, LocalPartition, MetadataDelta};
pub use quorum::{
    open_storage, Applied, AppliedWatch, MetaBatch, MetaLogReader, MetaLogStore, MetaRaft,
    MetaResponse, MetaSnapshotBuilder, MetaStateMachine, RaftStoreError,
};
pub use record::{MetadataRecord, TopicConfigs};
pub use replay::{encode_line, replay_bytes, Replay, ReplayError, TornTail};
pub use state::{BrokerInfo, ClusterState, MetaError, PartitionInfo, TopicInfo};
pub use store::{MetadataStore, StoreError};
pub use uuid::Uuid;

pub use sluice_types::BrokerId;
