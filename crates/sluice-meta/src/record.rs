//! Metadata records: the only way cluster state changes. Serialized as one JSON object per line
//! in the metadata log (and, with the controller quorum, as Raft log entries), so the format
//! stays readable and new optional fields can be added with `#[serde(default)]`.
//!
//! Every record is decided and validated by the controller before it is proposed; applying one
//! is infallible and deterministic (see [`crate::state`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sluice_types::{PartitionId, ProducerId};
use uuid::Uuid;

use crate::BrokerId;

/// Topic-level config overrides (`retention.ms`, `cleanup.policy`, ...), by Kafka name.
pub type TopicConfigs = BTreeMap<String, String>;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum MetadataRecord {
    /// The cluster is formed: its id is chosen once, by the first controller, and never
    /// changes. Data directories written before this record existed get it from their
    /// `meta.properties` at the first start of a release that has it.
    FormCluster {
        cluster_id: String,
    },
    /// A broker announces itself and where clients reach it. Its broker epoch is the offset
    /// of this record in the metadata log (as in KRaft), so every registration fences the
    /// previous incarnation of the same node.
    RegisterBroker {
        broker_id: BrokerId,
        host: String,
        port: i32,
        #[serde(default)]
        rack: Option<String>,
        /// A random id per process start.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        incarnation_id: Option<Uuid>,
        /// The registering data directory's id (`meta.properties`): a restart of the same
        /// directory replaces its registration at once (the directory lock guarantees the old
        /// process is gone); another directory with a live node id is a duplicate.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        directory_id: Option<Uuid>,
        /// Registered fenced: the broker may not lead until the controller unfences it.
        #[serde(default, skip_serializing_if = "is_false")]
        fenced: bool,
    },
    /// The broker may no longer lead or be in an ISR (shut down, or lost its session).
    FenceBroker {
        broker_id: BrokerId,
        epoch: i64,
    },
    /// The broker is alive and caught up with the metadata: it may lead again.
    UnfenceBroker {
        broker_id: BrokerId,
        epoch: i64,
    },
    /// A new topic with its partitions placed on `replicas[i]` for partition i. Each partition
    /// starts led by its first replica at leader epoch 0 with every replica in the ISR.
    CreateTopic {
        name: String,
        topic_id: Uuid,
        replicas: Vec<Vec<BrokerId>>,
        configs: TopicConfigs,
    },
    /// Adds partitions to a topic; `replicas` holds only the new ones.
    CreatePartitions {
        topic_id: Uuid,
        replicas: Vec<Vec<BrokerId>>,
    },
    DeleteTopic {
        topic_id: Uuid,
    },
    /// Changes one partition: only the fields present change. Every change bumps the partition
    /// epoch; a new leader (even the same broker again, or none) bumps the leader epoch, which
    /// fences whoever led under the old one (KIP-101).
    PartitionChange {
        topic_id: Uuid,
        partition: PartitionId,
        /// `Some(BrokerId::NONE)`: no leader (no eligible replica is alive).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        leader: Option<BrokerId>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        isr: Option<Vec<BrokerId>>,
        /// Eligible leader replicas (KIP-966): out of the ISR but known to hold every
        /// committed record, so still electable.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        elr: Option<Vec<BrokerId>>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        replicas: Option<Vec<BrokerId>>,
        /// The replicas an ongoing reassignment adds (KIP-455); `Some(vec![])` ends it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        adding: Option<Vec<BrokerId>>,
        /// The replicas an ongoing reassignment removes; `Some(vec![])` ends it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        removing: Option<Vec<BrokerId>>,
    },
    /// Replaces a topic's config overrides (what Alter/IncrementalAlterConfigs computed).
    SetTopicConfigs {
        topic_id: Uuid,
        configs: TopicConfigs,
    },
    /// Replaces the dynamic broker configs of one broker, or the cluster-wide defaults when
    /// `broker_id` is `None` (Kafka's resource name "").
    SetBrokerConfigs {
        broker_id: Option<BrokerId>,
        configs: TopicConfigs,
    },
    /// Reserves producer ids `[first_id, first_id + size)` for `broker_id`. Ids are handed out
    /// from such blocks and never reused, even after a restart (the next block starts after
    /// the last one recorded).
    AllocateProducerIds {
        broker_id: BrokerId,
        first_id: ProducerId,
        size: i64,
    },
}

fn is_false(b: &bool) -> bool {
    !*b
}
