//! The cluster state machine. Pure: no I/O, no clock. Every change is a [`MetadataRecord`]
//! at an offset of the metadata log.
//!
//! - `validate(record)` says whether the controller may propose it. Only the controller calls
//!   it (and replay, for records read back from a disk that may be damaged).
//! - `apply(offset, record)` is infallible and deterministic: every node that applies the same
//!   records reaches the same state. A record that would not validate changes nothing (it can
//!   only come from a damaged log, which replay refuses before applying).
//!
//! The whole state is also its own snapshot: [`ClusterState::snapshot`] and
//! [`ClusterState::from_snapshot`] write and read it back (the Raft state machine's snapshot).

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use sluice_types::{LeaderEpoch, PartitionId, ProducerId};
use thiserror::Error;
use uuid::Uuid;

use crate::record::{MetadataRecord, TopicConfigs};
use crate::BrokerId;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerInfo {
    pub broker_id: BrokerId,
    pub host: String,
    pub port: i32,
    pub rack: Option<String>,
    pub incarnation_id: Option<Uuid>,
    /// The registering data directory (see [`MetadataRecord::RegisterBroker`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub directory_id: Option<Uuid>,
    /// The offset of this registration's record: fences older incarnations' requests.
    pub epoch: i64,
    /// A fenced broker leads nothing and is in no ISR.
    pub fenced: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionInfo {
    pub replicas: Vec<BrokerId>,
    pub isr: Vec<BrokerId>,
    /// Eligible leader replicas (KIP-966).
    #[serde(default)]
    pub elr: Vec<BrokerId>,
    /// [`BrokerId::NONE`] when no replica may lead.
    pub leader: BrokerId,
    /// Bumped on every leader change; fences stale leaders and followers (KIP-101).
    pub leader_epoch: LeaderEpoch,
    /// Bumped on every change of this partition (AlterPartition's optimistic check).
    #[serde(default)]
    pub partition_epoch: i32,
    /// Replicas an ongoing reassignment adds (KIP-455): already in `replicas`, catching up.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub adding: Vec<BrokerId>,
    /// Replicas an ongoing reassignment removes once every adding replica is in the ISR.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removing: Vec<BrokerId>,
}

impl PartitionInfo {
    fn new(replicas: &[BrokerId]) -> PartitionInfo {
        PartitionInfo {
            replicas: replicas.to_vec(),
            isr: replicas.to_vec(),
            elr: Vec::new(),
            leader: replicas.first().copied().unwrap_or(BrokerId::NONE),
            leader_epoch: LeaderEpoch(0),
            partition_epoch: 0,
            adding: Vec::new(),
            removing: Vec::new(),
        }
    }

    pub fn has_leader(&self) -> bool {
        self.leader != BrokerId::NONE
    }

    /// Whether a reassignment is under way (KIP-455).
    pub fn is_reassigning(&self) -> bool {
        !self.adding.is_empty() || !self.removing.is_empty()
    }

    /// The replicas before the ongoing reassignment (all of them when there is none): the
    /// replicas without those being added, in order.
    pub fn original_replicas(&self) -> Vec<BrokerId> {
        self.replicas
            .iter()
            .copied()
            .filter(|b| !self.adding.contains(b))
            .collect()
    }

    /// The replicas the ongoing reassignment ends with (all of them when there is none).
    pub fn target_replicas(&self) -> Vec<BrokerId> {
        self.replicas
            .iter()
            .copied()
            .filter(|b| !self.removing.contains(b))
            .collect()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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

    pub fn partition(&self, index: PartitionId) -> Option<&PartitionInfo> {
        usize::try_from(index.0)
            .ok()
            .and_then(|i| self.partitions.get(i))
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
    #[error("partition {partition} lists broker {broker} twice")]
    DuplicateReplica { partition: usize, broker: BrokerId },
    #[error("replica assignment names unknown broker {0}")]
    UnknownBroker(BrokerId),
    #[error("topic {topic_id} has no partition {partition}")]
    UnknownPartition {
        topic_id: Uuid,
        partition: PartitionId,
    },
    #[error("partition change names leader {leader}, which is not one of its replicas")]
    LeaderNotReplica { leader: BrokerId },
    #[error("partition change puts broker {0} in the ISR or ELR but not in the replicas")]
    IsrNotReplica(BrokerId),
    #[error(
        "partition change adds or removes broker {0}, which is not (only) one of its replicas"
    )]
    ReassigningNotReplica(BrokerId),
    #[error("broker {broker_id} epoch {found} is stale (current {current})")]
    StaleBrokerEpoch {
        broker_id: BrokerId,
        found: i64,
        current: i64,
    },
    #[error("the cluster was already formed with id {0}")]
    AlreadyFormed(String),
    #[error("producer id block must start at {expected}, not {found}")]
    ProducerIdBlock {
        expected: ProducerId,
        found: ProducerId,
    },
    #[error("producer id block of size {size} starting at {first_id} is out of range")]
    ProducerIdRange { first_id: ProducerId, size: i64 },
}

/// The whole cluster as the metadata log describes it, up to [`ClusterState::last_offset`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterState {
    /// Chosen once when the cluster is formed; `None` only before the first record.
    pub cluster_id: Option<String>,
    pub brokers: BTreeMap<BrokerId, BrokerInfo>,
    topics: BTreeMap<String, TopicInfo>,
    /// Reverse index for requests that name topics by id (Fetch v13+, DeleteTopics v6).
    /// Derived: rebuilt when a snapshot is read.
    #[serde(skip)]
    names_by_id: HashMap<Uuid, String>,
    /// First producer id not yet handed to any broker.
    pub next_producer_id: ProducerId,
    /// Dynamic broker configs: `None` holds the cluster-wide defaults.
    #[serde(with = "broker_configs_serde")]
    pub broker_configs: BTreeMap<Option<BrokerId>, TopicConfigs>,
    /// Offset of the last record applied; -1 before any.
    pub last_offset: i64,
}

/// JSON object keys must be strings: `""` holds the cluster defaults, as in Kafka's resource
/// name.
mod broker_configs_serde {
    use super::*;
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(
        map: &BTreeMap<Option<BrokerId>, TopicConfigs>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        let by_name: BTreeMap<String, &TopicConfigs> = map
            .iter()
            .map(|(k, v)| (k.map(|b| b.to_string()).unwrap_or_default(), v))
            .collect();
        by_name.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<Option<BrokerId>, TopicConfigs>, D::Error> {
        let by_name = BTreeMap::<String, TopicConfigs>::deserialize(d)?;
        by_name
            .into_iter()
            .map(|(k, v)| {
                if k.is_empty() {
                    Ok((None, v))
                } else {
                    k.parse::<i32>()
                        .map(|b| (Some(BrokerId(b)), v))
                        .map_err(serde::de::Error::custom)
                }
            })
            .collect()
    }
}

impl Default for ClusterState {
    fn default() -> Self {
        ClusterState::new()
    }
}

impl ClusterState {
    /// The state before any record.
    pub fn new() -> ClusterState {
        ClusterState {
            cluster_id: None,
            brokers: BTreeMap::new(),
            topics: BTreeMap::new(),
            names_by_id: HashMap::new(),
            next_producer_id: ProducerId(0),
            broker_configs: BTreeMap::new(),
            last_offset: -1,
        }
    }

    pub fn topic(&self, name: &str) -> Option<&TopicInfo> {
        self.topics.get(name)
    }

    pub fn topic_by_id(&self, id: &Uuid) -> Option<&TopicInfo> {
        self.names_by_id.get(id).and_then(|n| self.topics.get(n))
    }

    pub fn topics(&self) -> impl Iterator<Item = &TopicInfo> {
        self.topics.values()
    }

    /// Brokers that may lead and serve: registered and not fenced.
    pub fn live_brokers(&self) -> impl Iterator<Item = &BrokerInfo> {
        self.brokers.values().filter(|b| !b.fenced)
    }

    /// The state as bytes: a snapshot from which [`ClusterState::from_snapshot`] rebuilds it.
    pub fn snapshot(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("the cluster state always serializes")
    }

    pub fn from_snapshot(bytes: &[u8]) -> Result<ClusterState, serde_json::Error> {
        let mut state: ClusterState = serde_json::from_slice(bytes)?;
        state.names_by_id = state
            .topics
            .values()
            .map(|t| (t.topic_id, t.name.clone()))
            .collect();
        Ok(state)
    }

    fn check_replicas(&self, replicas: &[Vec<BrokerId>]) -> Result<(), MetaError> {
        for (partition, set) in replicas.iter().enumerate() {
            self.check_replica_set(partition, set)?;
        }
        Ok(())
    }

    fn check_replica_set(&self, partition: usize, set: &[BrokerId]) -> Result<(), MetaError> {
        if set.is_empty() {
            return Err(MetaError::NoReplicas { partition });
        }
        if let Some(b) = set.iter().find(|b| !self.brokers.contains_key(b)) {
            return Err(MetaError::UnknownBroker(*b));
        }
        for (i, b) in set.iter().enumerate() {
            if set[..i].contains(b) {
                return Err(MetaError::DuplicateReplica {
                    partition,
                    broker: *b,
                });
            }
        }
        Ok(())
    }

    fn check_epoch(&self, broker_id: BrokerId, epoch: i64) -> Result<(), MetaError> {
        let current = self
            .brokers
            .get(&broker_id)
            .ok_or(MetaError::UnknownBroker(broker_id))?
            .epoch;
        if current == epoch {
            Ok(())
        } else {
            Err(MetaError::StaleBrokerEpoch {
                broker_id,
                found: epoch,
                current,
            })
        }
    }

    fn known_topic(&self, topic_id: &Uuid) -> Result<&TopicInfo, MetaError> {
        self.topic_by_id(topic_id)
            .ok_or(MetaError::UnknownTopicId(*topic_id))
    }

    /// Whether `record` may be applied to the current state.
    pub fn validate(&self, record: &MetadataRecord) -> Result<(), MetaError> {
        match record {
            MetadataRecord::FormCluster { .. } => match &self.cluster_id {
                Some(id) => Err(MetaError::AlreadyFormed(id.clone())),
                None => Ok(()),
            },
            MetadataRecord::RegisterBroker { .. } => Ok(()),
            MetadataRecord::FenceBroker { broker_id, epoch }
            | MetadataRecord::UnfenceBroker { broker_id, epoch } => {
                self.check_epoch(*broker_id, *epoch)
            }
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
                self.known_topic(topic_id)?;
                self.check_replicas(replicas)
            }
            MetadataRecord::DeleteTopic { topic_id }
            | MetadataRecord::SetTopicConfigs { topic_id, .. } => {
                self.known_topic(topic_id).map(|_| ())
            }
            MetadataRecord::PartitionChange {
                topic_id,
                partition,
                leader,
                isr,
                elr,
                replicas,
                adding,
                removing,
            } => {
                let current = self.known_topic(topic_id)?.partition(*partition).ok_or(
                    MetaError::UnknownPartition {
                        topic_id: *topic_id,
                        partition: *partition,
                    },
                )?;
                let replicas = match replicas {
                    Some(r) => {
                        self.check_replica_set(partition.0 as usize, r)?;
                        r
                    }
                    None => &current.replicas,
                };
                if let Some(l) = leader {
                    if *l != BrokerId::NONE && !replicas.contains(l) {
                        return Err(MetaError::LeaderNotReplica { leader: *l });
                    }
                }
                for set in [isr, elr].into_iter().flatten() {
                    if let Some(b) = set.iter().find(|b| !replicas.contains(b)) {
                        return Err(MetaError::IsrNotReplica(*b));
                    }
                }
                let adding = adding.as_ref().unwrap_or(&current.adding);
                let removing = removing.as_ref().unwrap_or(&current.removing);
                for b in adding.iter().chain(removing) {
                    if !replicas.contains(b) {
                        return Err(MetaError::ReassigningNotReplica(*b));
                    }
                }
                if let Some(b) = adding.iter().find(|b| removing.contains(b)) {
                    return Err(MetaError::ReassigningNotReplica(*b));
                }
                Ok(())
            }
            MetadataRecord::SetBrokerConfigs { .. } => Ok(()),
            MetadataRecord::AllocateProducerIds { first_id, size, .. } => {
                if *first_id != self.next_producer_id {
                    Err(MetaError::ProducerIdBlock {
                        expected: self.next_producer_id,
                        found: *first_id,
                    })
                } else if *size <= 0 || first_id.get().checked_add(*size).is_none() {
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

    /// Validates `record` and applies it at `offset`: for records read back from a disk, which
    /// may be damaged. The controller validates before proposing and then only applies.
    pub fn replay(&mut self, offset: i64, record: &MetadataRecord) -> Result<(), MetaError> {
        self.validate(record)?;
        self.last_offset = offset;
        self.apply_valid(offset, record);
        Ok(())
    }

    /// Applies the record at log offset `offset`. Infallible and deterministic: a record that
    /// does not validate (only possible from a damaged log, which replay refuses first) changes
    /// nothing but the offset.
    pub fn apply(&mut self, offset: i64, record: &MetadataRecord) {
        self.last_offset = offset;
        if self.validate(record).is_ok() {
            self.apply_valid(offset, record);
        }
    }

    /// Applies a record already validated against this state.
    fn apply_valid(&mut self, offset: i64, record: &MetadataRecord) {
        match record {
            MetadataRecord::FormCluster { cluster_id } => {
                self.cluster_id = Some(cluster_id.clone());
            }
            MetadataRecord::RegisterBroker {
                broker_id,
                host,
                port,
                rack,
                incarnation_id,
                directory_id,
                fenced,
            } => {
                self.brokers.insert(
                    *broker_id,
                    BrokerInfo {
                        broker_id: *broker_id,
                        host: host.clone(),
                        port: *port,
                        rack: rack.clone(),
                        incarnation_id: *incarnation_id,
                        directory_id: *directory_id,
                        epoch: offset,
                        fenced: *fenced,
                    },
                );
            }
            MetadataRecord::FenceBroker { broker_id, .. } => {
                if let Some(b) = self.brokers.get_mut(broker_id) {
                    b.fenced = true;
                }
            }
            MetadataRecord::UnfenceBroker { broker_id, .. } => {
                if let Some(b) = self.brokers.get_mut(broker_id) {
                    b.fenced = false;
                }
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
                        partitions: replicas.iter().map(|r| PartitionInfo::new(r)).collect(),
                        configs: configs.clone(),
                    },
                );
            }
            MetadataRecord::CreatePartitions { topic_id, replicas } => {
                if let Some(topic) = self.topic_mut(topic_id) {
                    topic
                        .partitions
                        .extend(replicas.iter().map(|r| PartitionInfo::new(r)));
                }
            }
            MetadataRecord::DeleteTopic { topic_id } => {
                if let Some(name) = self.names_by_id.remove(topic_id) {
                    self.topics.remove(&name);
                }
            }
            MetadataRecord::PartitionChange {
                topic_id,
                partition,
                leader,
                isr,
                elr,
                replicas,
                adding,
                removing,
            } => {
                let Some(p) = self
                    .topic_mut(topic_id)
                    .and_then(|t| t.partitions.get_mut(partition.0 as usize))
                else {
                    return;
                };
                if let Some(r) = replicas {
                    p.replicas = r.clone();
                }
                if let Some(i) = isr {
                    p.isr = i.clone();
                }
                if let Some(e) = elr {
                    p.elr = e.clone();
                }
                if let Some(a) = adding {
                    p.adding = a.clone();
                }
                if let Some(r) = removing {
                    p.removing = r.clone();
                }
                if let Some(l) = leader {
                    p.leader = *l;
                    p.leader_epoch = p.leader_epoch.next();
                }
                p.partition_epoch += 1;
            }
            MetadataRecord::AllocateProducerIds { first_id, size, .. } => {
                self.next_producer_id = ProducerId(first_id.get().saturating_add(*size));
            }
            MetadataRecord::SetTopicConfigs { topic_id, configs } => {
                if let Some(topic) = self.topic_mut(topic_id) {
                    topic.configs = configs.clone();
                }
            }
            MetadataRecord::SetBrokerConfigs { broker_id, configs } => {
                if configs.is_empty() {
                    self.broker_configs.remove(broker_id);
                } else {
                    self.broker_configs.insert(*broker_id, configs.clone());
                }
            }
        }
    }

    fn topic_mut(&mut self, topic_id: &Uuid) -> Option<&mut TopicInfo> {
        let name = self.names_by_id.get(topic_id)?;
        self.topics.get_mut(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn broker(id: i32) -> MetadataRecord {
        MetadataRecord::RegisterBroker {
            broker_id: BrokerId(id),
            host: "127.0.0.1".into(),
            port: 9092,
            rack: None,
            incarnation_id: Some(Uuid::from_u128(id as u128)),
            directory_id: None,
            fenced: true,
        }
    }

    fn create(name: &str, id: Uuid, partitions: usize) -> MetadataRecord {
        MetadataRecord::CreateTopic {
            name: name.into(),
            topic_id: id,
            replicas: vec![vec![BrokerId(1)]; partitions],
            configs: TopicConfigs::new(),
        }
    }

    /// Applies `records` at consecutive offsets after the state's last one, validating each.
    fn run(s: &mut ClusterState, records: &[MetadataRecord]) -> Result<(), MetaError> {
        for r in records {
            s.replay(s.last_offset + 1, r)?;
        }
        Ok(())
    }

    /// The optional fields of a partition change.
    #[derive(Default)]
    struct Change {
        leader: Option<BrokerId>,
        isr: Option<Vec<BrokerId>>,
        elr: Option<Vec<BrokerId>>,
        replicas: Option<Vec<BrokerId>>,
    }

    impl Change {
        fn on(self, topic_id: Uuid, partition: i32) -> MetadataRecord {
            MetadataRecord::PartitionChange {
                topic_id,
                partition: PartitionId(partition),
                leader: self.leader,
                isr: self.isr,
                elr: self.elr,
                replicas: self.replicas,
                adding: None,
                removing: None,
            }
        }
    }

    /// A stream touching every kind of record.
    fn history() -> Vec<MetadataRecord> {
        let t = Uuid::from_u128(7);
        vec![
            MetadataRecord::FormCluster {
                cluster_id: "c1".into(),
            },
            broker(1),
            MetadataRecord::UnfenceBroker {
                broker_id: BrokerId(1),
                epoch: 1,
            },
            broker(2),
            MetadataRecord::CreateTopic {
                name: "orders".into(),
                topic_id: t,
                replicas: vec![vec![BrokerId(1), BrokerId(2)]; 2],
                configs: TopicConfigs::from([("retention.ms".into(), "5".into())]),
            },
            Change {
                leader: Some(BrokerId(2)),
                isr: Some(vec![BrokerId(2)]),
                elr: Some(vec![BrokerId(1)]),
                ..Change::default()
            }
            .on(t, 1),
            MetadataRecord::SetBrokerConfigs {
                broker_id: None,
                configs: TopicConfigs::from([("log.retention.ms".into(), "9".into())]),
            },
            MetadataRecord::SetBrokerConfigs {
                broker_id: Some(BrokerId(2)),
                configs: TopicConfigs::from([("log.retention.ms".into(), "8".into())]),
            },
            MetadataRecord::AllocateProducerIds {
                broker_id: BrokerId(1),
                first_id: ProducerId(0),
                size: 1000,
            },
            MetadataRecord::FenceBroker {
                broker_id: BrokerId(2),
                epoch: 3,
            },
            create("gone", Uuid::from_u128(8), 1),
            MetadataRecord::DeleteTopic {
                topic_id: Uuid::from_u128(8),
            },
        ]
    }

    #[test]
    fn topic_lifecycle() {
        let mut s = ClusterState::new();
        run(&mut s, &[broker(1)]).unwrap();
        let id = Uuid::from_u128(1);
        run(&mut s, &[create("orders", id, 3)]).unwrap();
        let t = s.topic("orders").unwrap();
        assert_eq!(t.partitions.len(), 3);
        assert_eq!(t.partitions[2].leader, BrokerId(1));
        assert_eq!(t.partitions[2].leader_epoch, LeaderEpoch(0));
        assert_eq!(s.topic_by_id(&id).unwrap().name, "orders");

        assert_eq!(
            run(&mut s, &[create("orders", Uuid::from_u128(2), 1)]),
            Err(MetaError::TopicExists("orders".into()))
        );
        run(
            &mut s,
            &[MetadataRecord::CreatePartitions {
                topic_id: id,
                replicas: vec![vec![BrokerId(1)]; 2],
            }],
        )
        .unwrap();
        assert_eq!(s.topic("orders").unwrap().partitions.len(), 5);

        run(&mut s, &[MetadataRecord::DeleteTopic { topic_id: id }]).unwrap();
        assert!(s.topic("orders").is_none());
        assert!(s.topic_by_id(&id).is_none());
        assert_eq!(
            run(&mut s, &[MetadataRecord::DeleteTopic { topic_id: id }]),
            Err(MetaError::UnknownTopicId(id))
        );
    }

    #[test]
    fn producer_id_blocks_follow_each_other() {
        let mut s = ClusterState::new();
        let block = |first_id| MetadataRecord::AllocateProducerIds {
            broker_id: BrokerId(1),
            first_id,
            size: 1000,
        };
        run(&mut s, &[block(ProducerId(0))]).unwrap();
        assert_eq!(s.next_producer_id, ProducerId(1000));
        assert!(
            run(&mut s, &[block(ProducerId(0))]).is_err(),
            "a block is never handed out twice"
        );
        run(&mut s, &[block(ProducerId(1000))]).unwrap();
        assert_eq!(s.next_producer_id, ProducerId(2000));
        let overflowing = MetadataRecord::AllocateProducerIds {
            broker_id: BrokerId(1),
            first_id: ProducerId(2000),
            size: i64::MAX,
        };
        assert!(matches!(
            run(&mut s, &[overflowing]),
            Err(MetaError::ProducerIdRange { .. })
        ));
    }

    #[test]
    fn invalid_assignments_are_refused() {
        let mut s = ClusterState::new();
        run(&mut s, &[broker(1)]).unwrap();
        assert_eq!(
            run(&mut s, &[create("t", Uuid::from_u128(1), 0)]),
            Err(MetaError::NoPartitions)
        );
        let rec = |replicas: Vec<i32>| MetadataRecord::CreateTopic {
            name: "t".into(),
            topic_id: Uuid::from_u128(1),
            replicas: vec![replicas.into_iter().map(BrokerId).collect()],
            configs: TopicConfigs::new(),
        };
        assert_eq!(
            run(&mut s, &[rec(vec![1, 2])]),
            Err(MetaError::UnknownBroker(BrokerId(2)))
        );
        assert_eq!(
            run(&mut s, &[rec(vec![1, 1])]),
            Err(MetaError::DuplicateReplica {
                partition: 0,
                broker: BrokerId(1)
            })
        );
        assert!(s.topic("t").is_none());
    }

    #[test]
    fn partition_changes_bump_epochs() {
        let mut s = ClusterState::new();
        let t = Uuid::from_u128(3);
        run(&mut s, &[broker(1), broker(2)]).unwrap();
        run(
            &mut s,
            &[MetadataRecord::CreateTopic {
                name: "t".into(),
                topic_id: t,
                replicas: vec![vec![BrokerId(1), BrokerId(2)]],
                configs: TopicConfigs::new(),
            }],
        )
        .unwrap();
        let p = |s: &ClusterState| s.topic("t").unwrap().partitions[0].clone();
        // An ISR change alone: partition epoch only.
        run(
            &mut s,
            &[Change {
                isr: Some(vec![BrokerId(1)]),
                ..Change::default()
            }
            .on(t, 0)],
        )
        .unwrap();
        assert_eq!(
            (p(&s).leader_epoch, p(&s).partition_epoch),
            (LeaderEpoch(0), 1)
        );
        assert_eq!(p(&s).isr, vec![BrokerId(1)]);
        // Leaderless, then the same broker again: each is a new leader epoch.
        for leader in [BrokerId::NONE, BrokerId(1)] {
            run(
                &mut s,
                &[Change {
                    leader: Some(leader),
                    ..Change::default()
                }
                .on(t, 0)],
            )
            .unwrap();
        }
        assert_eq!(p(&s).leader, BrokerId(1));
        assert_eq!(
            (p(&s).leader_epoch, p(&s).partition_epoch),
            (LeaderEpoch(2), 3)
        );
        // Refused: a leader outside the replicas, an ISR member outside them, a bad index.
        assert_eq!(
            run(
                &mut s,
                &[Change {
                    leader: Some(BrokerId(3)),
                    ..Change::default()
                }
                .on(t, 0)]
            ),
            Err(MetaError::LeaderNotReplica {
                leader: BrokerId(3)
            })
        );
        assert!(run(
            &mut s,
            &[Change {
                isr: Some(vec![BrokerId(1)]),
                replicas: Some(vec![BrokerId(2)]),
                ..Change::default()
            }
            .on(t, 0)]
        )
        .is_err());
        assert!(run(&mut s, &[Change::default().on(t, 1)]).is_err());
        assert_eq!(p(&s).partition_epoch, 3, "refused changes change nothing");
    }

    #[test]
    fn broker_epochs_fence_old_incarnations() {
        let mut s = ClusterState::new();
        run(&mut s, &[broker(1)]).unwrap();
        assert_eq!(s.brokers[&BrokerId(1)].epoch, 0);
        assert!(s.brokers[&BrokerId(1)].fenced);
        assert_eq!(s.live_brokers().count(), 0);
        run(
            &mut s,
            &[MetadataRecord::UnfenceBroker {
                broker_id: BrokerId(1),
                epoch: 0,
            }],
        )
        .unwrap();
        assert_eq!(s.live_brokers().count(), 1);
        // A restart registers again: new epoch; the old epoch can no longer fence it.
        run(&mut s, &[broker(1)]).unwrap();
        assert_eq!(s.brokers[&BrokerId(1)].epoch, 2);
        assert!(matches!(
            run(
                &mut s,
                &[MetadataRecord::FenceBroker {
                    broker_id: BrokerId(1),
                    epoch: 0
                }]
            ),
            Err(MetaError::StaleBrokerEpoch { .. })
        ));
    }

    #[test]
    fn the_cluster_is_formed_once() {
        let mut s = ClusterState::new();
        let form = |id: &str| MetadataRecord::FormCluster {
            cluster_id: id.into(),
        };
        run(&mut s, &[form("a")]).unwrap();
        assert_eq!(
            run(&mut s, &[form("b")]),
            Err(MetaError::AlreadyFormed("a".into()))
        );
        // Applying it anyway (a damaged log past validation) changes nothing.
        s.apply(5, &form("b"));
        assert_eq!(s.cluster_id.as_deref(), Some("a"));
        assert_eq!(s.last_offset, 5);
    }

    #[test]
    fn replay_is_deterministic_and_snapshots_round_trip() {
        let mut a = ClusterState::new();
        run(&mut a, &history()).unwrap();
        let mut b = ClusterState::new();
        for (i, r) in history().iter().enumerate() {
            b.apply(i as i64, r);
        }
        assert_eq!(a, b, "replaying the same records gives the same state");
        assert_eq!(a.last_offset, history().len() as i64 - 1);
        assert!(a.brokers[&BrokerId(2)].fenced);
        assert!(a.topic("gone").is_none());

        let restored = ClusterState::from_snapshot(&a.snapshot()).unwrap();
        assert_eq!(restored, a);
        let t = Uuid::from_u128(7);
        assert_eq!(restored.topic_by_id(&t).unwrap().name, "orders");
        // The restored state goes on exactly as the original does.
        let next = Change {
            leader: Some(BrokerId(1)),
            isr: Some(vec![BrokerId(1)]),
            ..Change::default()
        }
        .on(t, 1);
        let (mut a2, mut r2) = (a.clone(), restored);
        a2.replay(100, &next).unwrap();
        r2.replay(100, &next).unwrap();
        assert_eq!(a2, r2);
        assert_eq!(
            a2.topic("orders").unwrap().partitions[1].leader_epoch,
            LeaderEpoch(2)
        );
    }
}
