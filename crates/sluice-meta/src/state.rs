//! The cluster state machine. Pure: no I/O, no clock. Every change is a [`MetadataRecord`];
//! `validate` says whether it may be applied, `apply` applies a validated record.

use std::collections::{BTreeMap, HashMap};

use thiserror::Error;
use uuid::Uuid;

use crate::record::{MetadataRecord, TopicConfigs};
use crate::BrokerId;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerInfo {
    pub broker_id: BrokerId,
    pub host: String,
    pub port: i32,
    pub rack: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionInfo {
    pub replicas: Vec<BrokerId>,
    pub isr: Vec<BrokerId>,
    pub leader: BrokerId,
    /// Bumped on every leader change; fences stale leaders and followers (KIP-101).
    pub leader_epoch: i32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    pub name: String,
    pub topic_id: Uuid,
    pub partitions: Vec<PartitionInfo>,
    pub configs: TopicConfigs,
}

impl TopicInfo {
    /// Internal topics are managed by the broker itself and protected from client deletes.
    pub fn is_internal(&self) -> bool {
        is_internal_topic(&self.name)
    }
}

/// Kafka's internal topics: committed offsets, transaction state, share-group state.
pub fn is_internal_topic(name: &str) -> bool {
    matches!(
        name,
        "__consumer_offsets" | "__transaction_state" | "__share_group_state"
    )
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum MetaError {
    #[error("topic '{0}' already exists")]
    TopicExists(String),
    #[error("unknown topic id {0}")]
    UnknownTopicId(Uuid),
    #[error("topic id {0} is already in use")]
    TopicIdInUse(Uuid),
    #[error("a topic needs at least one partition")]
    NoPartitions,
    #[error("partition {partition} has no replicas")]
    NoReplicas { partition: usize },
    #[error("replica assignment names unknown broker {0}")]
    UnknownBroker(BrokerId),
    #[error("producer id block must start at {expected}, not {found}")]
    ProducerIdBlock { expected: i64, found: i64 },
    #[error("producer id block of size {size} starting at {first_id} is out of range")]
    ProducerIdRange { first_id: i64, size: i64 },
}

/// The whole cluster as the metadata log describes it.
#[derive(Debug, Clone, Default)]
pub struct ClusterState {
    pub brokers: BTreeMap<BrokerId, BrokerInfo>,
    topics: BTreeMap<String, TopicInfo>,
    /// Reverse index for requests that name topics by id (Fetch v13+, DeleteTopics v6).
    names_by_id: HashMap<Uuid, String>,
    /// First producer id not yet handed to any broker.
    pub next_producer_id: i64,
    /// Dynamic broker configs: `None` holds the cluster-wide defaults.
    pub broker_configs: BTreeMap<Option<BrokerId>, TopicConfigs>,
}

impl ClusterState {
    pub fn topic(&self, name: &str) -> Option<&TopicInfo> {
        self.topics.get(name)
    }

    pub fn topic_by_id(&self, id: &Uuid) -> Option<&TopicInfo> {
        self.names_by_id.get(id).and_then(|n| self.topics.get(n))
    }

    pub fn topics(&self) -> impl Iterator<Item = &TopicInfo> {
        self.topics.values()
    }

    fn check_replicas(&self, replicas: &[Vec<BrokerId>]) -> Result<(), MetaError> {
        for (partition, set) in replicas.iter().enumerate() {
            if set.is_empty() {
                return Err(MetaError::NoReplicas { partition });
            }
            if let Some(b) = set.iter().find(|b| !self.brokers.contains_key(b)) {
                return Err(MetaError::UnknownBroker(*b));
            }
        }
        Ok(())
    }

    /// Whether `record` may be applied to the current state.
    pub fn validate(&self, record: &MetadataRecord) -> Result<(), MetaError> {
        match record {
            MetadataRecord::RegisterBroker { .. } => Ok(()),
            MetadataRecord::CreateTopic {
                name,
                topic_id,
                replicas,
                ..
            } => {
                if self.topics.contains_key(name) {
                    return Err(MetaError::TopicExists(name.clone()));
                }
                if self.names_by_id.contains_key(topic_id) {
                    return Err(MetaError::TopicIdInUse(*topic_id));
                }
                if replicas.is_empty() {
                    return Err(MetaError::NoPartitions);
                }
                self.check_replicas(replicas)
            }
            MetadataRecord::CreatePartitions { topic_id, replicas } => {
                if !self.names_by_id.contains_key(topic_id) {
                    return Err(MetaError::UnknownTopicId(*topic_id));
                }
                self.check_replicas(replicas)
            }
            MetadataRecord::DeleteTopic { topic_id } => {
                if self.names_by_id.contains_key(topic_id) {
                    Ok(())
                } else {
                    Err(MetaError::UnknownTopicId(*topic_id))
                }
            }
            MetadataRecord::SetTopicConfigs { topic_id, .. } => {
                if self.names_by_id.contains_key(topic_id) {
                    Ok(())
                } else {
                    Err(MetaError::UnknownTopicId(*topic_id))
                }
            }
            MetadataRecord::SetBrokerConfigs { .. } => Ok(()),
            MetadataRecord::AllocateProducerIds { first_id, size, .. } => {
                if *first_id != self.next_producer_id {
                    Err(MetaError::ProducerIdBlock {
                        expected: self.next_producer_id,
                        found: *first_id,
                    })
                } else if *size <= 0 || first_id.checked_add(*size).is_none() {
                    Err(MetaError::ProducerIdRange {
                        first_id: *first_id,
                        size: *size,
                    })
                } else {
                    Ok(())
                }
            }
        }
    }

    /// Validates and applies `record`.
    pub fn apply(&mut self, record: &MetadataRecord) -> Result<(), MetaError> {
        self.validate(record)?;
        let new_partition = |replicas: &Vec<BrokerId>| PartitionInfo {
            replicas: replicas.clone(),
            isr: replicas.clone(),
            leader: replicas[0],
            leader_epoch: 0,
        };
        match record {
            MetadataRecord::RegisterBroker {
                broker_id,
                host,
                port,
                rack,
            } => {
                self.brokers.insert(
                    *broker_id,
                    BrokerInfo {
                        broker_id: *broker_id,
                        host: host.clone(),
                        port: *port,
                        rack: rack.clone(),
                    },
                );
            }
            MetadataRecord::CreateTopic {
                name,
                topic_id,
                replicas,
                configs,
            } => {
                self.names_by_id.insert(*topic_id, name.clone());
                self.topics.insert(
                    name.clone(),
                    TopicInfo {
                        name: name.clone(),
                        topic_id: *topic_id,
                        partitions: replicas.iter().map(new_partition).collect(),
                        configs: configs.clone(),
                    },
                );
            }
            MetadataRecord::CreatePartitions { topic_id, replicas } => {
                let name = &self.names_by_id[topic_id];
                let topic = self.topics.get_mut(name).expect("indexes agree");
                topic.partitions.extend(replicas.iter().map(new_partition));
            }
            MetadataRecord::DeleteTopic { topic_id } => {
                if let Some(name) = self.names_by_id.remove(topic_id) {
                    self.topics.remove(&name);
                }
            }
            MetadataRecord::AllocateProducerIds { first_id, size, .. } => {
                self.next_producer_id = first_id.saturating_add(*size);
            }
            MetadataRecord::SetTopicConfigs { topic_id, configs } => {
                let name = &self.names_by_id[topic_id];
                self.topics.get_mut(name).expect("indexes agree").configs = configs.clone();
            }
            MetadataRecord::SetBrokerConfigs { broker_id, configs } => {
                if configs.is_empty() {
                    self.broker_configs.remove(broker_id);
                } else {
                    self.broker_configs.insert(*broker_id, configs.clone());
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn broker(id: BrokerId) -> MetadataRecord {
        MetadataRecord::RegisterBroker {
            broker_id: id,
            host: "127.0.0.1".into(),
            port: 9092,
            rack: None,
        }
    }

    fn create(name: &str, id: Uuid, partitions: usize) -> MetadataRecord {
        MetadataRecord::CreateTopic {
            name: name.into(),
            topic_id: id,
            replicas: vec![vec![1]; partitions],
            configs: TopicConfigs::new(),
        }
    }

    #[test]
    fn topic_lifecycle() {
        let mut s = ClusterState::default();
        s.apply(&broker(1)).unwrap();
        let id = Uuid::from_u128(1);
        s.apply(&create("orders", id, 3)).unwrap();
        let t = s.topic("orders").unwrap();
        assert_eq!(t.partitions.len(), 3);
        assert_eq!(t.partitions[2].leader, 1);
        assert_eq!(s.topic_by_id(&id).unwrap().name, "orders");

        assert_eq!(
            s.apply(&create("orders", Uuid::from_u128(2), 1)),
            Err(MetaError::TopicExists("orders".into()))
        );
        s.apply(&MetadataRecord::CreatePartitions {
            topic_id: id,
            replicas: vec![vec![1]; 2],
        })
        .unwrap();
        assert_eq!(s.topic("orders").unwrap().partitions.len(), 5);

        s.apply(&MetadataRecord::DeleteTopic { topic_id: id })
            .unwrap();
        assert!(s.topic("orders").is_none());
        assert!(s.topic_by_id(&id).is_none());
        assert_eq!(
            s.apply(&MetadataRecord::DeleteTopic { topic_id: id }),
            Err(MetaError::UnknownTopicId(id))
        );
    }

    #[test]
    fn producer_id_blocks_follow_each_other() {
        let mut s = ClusterState::default();
        let block = |first_id| MetadataRecord::AllocateProducerIds {
            broker_id: 1,
            first_id,
            size: 1000,
        };
        s.apply(&block(0)).unwrap();
        assert_eq!(s.next_producer_id, 1000);
        assert!(
            s.apply(&block(0)).is_err(),
            "a block is never handed out twice"
        );
        s.apply(&block(1000)).unwrap();
        assert_eq!(s.next_producer_id, 2000);
        let overflowing = MetadataRecord::AllocateProducerIds {
            broker_id: 1,
            first_id: 2000,
            size: i64::MAX,
        };
        assert!(matches!(
            s.apply(&overflowing),
            Err(MetaError::ProducerIdRange { .. })
        ));
    }

    #[test]
    fn invalid_assignments_are_refused() {
        let mut s = ClusterState::default();
        s.apply(&broker(1)).unwrap();
        assert_eq!(
            s.apply(&create("t", Uuid::from_u128(1), 0)),
            Err(MetaError::NoPartitions)
        );
        let rec = MetadataRecord::CreateTopic {
            name: "t".into(),
            topic_id: Uuid::from_u128(1),
            replicas: vec![vec![1, 2]],
            configs: TopicConfigs::new(),
        };
        assert_eq!(s.apply(&rec), Err(MetaError::UnknownBroker(2)));
        assert!(s.topic("t").is_none());
    }
}
