//! Metadata records. Serialized as one JSON object per line in the metadata log, so the format
//! stays readable and new optional fields can be added with `#[serde(default)]`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::BrokerId;

/// Topic-level config overrides (`retention.ms`, `cleanup.policy`, ...), by Kafka name.
pub type TopicConfigs = BTreeMap<String, String>;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum MetadataRecord {
    /// A broker announces itself and where clients reach it.
    RegisterBroker {
        broker_id: BrokerId,
        host: String,
        port: i32,
        #[serde(default)]
        rack: Option<String>,
    },
    /// A new topic with its partitions placed on `replicas[i]` for partition i.
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
        first_id: i64,
        size: i64,
    },
}
