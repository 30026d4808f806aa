//! Cluster metadata: which brokers exist, which topics and partitions, who leads them, and the
//! topic configs.
//!
//! # Layout
//! - [`record`]: the metadata records, the only way state changes.
//! - [`state`]: [`ClusterState`], a pure state machine: `validate(record)` then `apply(record)`.
//! - [`replay`]: the metadata log's checksummed line format and its pure replay
//!   ([`replay_bytes`]), shared by start-up, the fuzz target and the tests.
//! - [`store`]: [`MetadataStore`], the durable metadata log on disk, replayed at start-up.
//!
//! A single node is a cluster of one: it is the controller, and its metadata log is the
//! controller's log. The Raft quorum (openraft) will replicate these same records between
//! controllers; the state machine does not change.

pub mod record;
pub mod replay;
pub mod state;
pub mod store;

pub use record::{MetadataRecord, TopicConfigs};
pub use replay::{encode_line, replay_bytes, Replay, ReplayError, TornTail};
pub use state::{BrokerInfo, ClusterState, MetaError, PartitionInfo, TopicInfo};
pub use store::{MetadataStore, StoreError};
pub use uuid::Uuid;

/// Kafka's broker/node id.
pub type BrokerId = i32;
