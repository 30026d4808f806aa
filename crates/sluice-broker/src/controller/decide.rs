//! The active controller's decisions: given the current state and an operation, the answer and
//! the records that carry it out. Pure: the caller commits the records through Raft.

use kafka_protocol::ResponseError;
use sluice_meta::{BrokerId, ClusterState, MetadataRecord, TopicConfigs, TopicInfo, Uuid};
use sluice_types::{PartitionId, ProducerId};

use super::placement::{place_replicas, rack_alternated, validate_assignment, validate_topic_name};
use super::rpc::{ControllerOp, OpOutcome, WireResult};
use super::{validate_broker_config, NewTopic, TopicDefaults, PRODUCER_ID_BLOCK};
use crate::error::ApiError;
use crate::topic_config;

/// The highest replication factor a topic may have. TEST ONLY (replication branch): lifted to
/// Kafka's bound (placement still refuses more replicas than live brokers) so replication can be
/// tested end to end before the controller side (AlterPartition, min ISR) lands.
pub const MAX_REPLICATION_FACTOR: usize = i16::MAX as usize;

pub struct Decider {
    pub defaults: TopicDefaults,
}

fn wire<T>(r: Result<T, ApiError>) -> WireResult<T> {
    r.map_err(Into::into)
}

impl Decider {
    /// Decides `op` against `state`: the answer, and the records to commit (none for a refusal
    /// or a validation-only request).
    pub fn decide(
        &self,
        state: &ClusterState,
        op: ControllerOp,
    ) -> (OpOutcome, Vec<MetadataRecord>) {
        match op {
            ControllerOp::CreateTopics {
                topics,
                validate_only,
            } => {
                let (results, records) = self.create_topics(state, topics);
                let records = if validate_only { Vec::new() } else { records };
                (
                    OpOutcome::CreateTopics(results.into_iter().map(wire).collect()),
                    records,
                )
            }
            ControllerOp::DeleteTopics { ids } => {
                let (results, records) = delete_topics(state, ids);
                (
                    OpOutcome::DeleteTopics(results.into_iter().map(wire).collect()),
                    records,
                )
            }
            ControllerOp::CreatePartitions {
                name,
                count,
                assignment,
                validate_only,
            } => match new_partitions(state, &name, count, assignment) {
                Ok(record) if !validate_only => (OpOutcome::Unit(Ok(())), vec![record]),
                Ok(_) => (OpOutcome::Unit(Ok(())), Vec::new()),
                Err(e) => (OpOutcome::Unit(Err(e.into())), Vec::new()),
            },
            ControllerOp::SetTopicConfigs { name, configs } => {
                match set_topic_configs(state, &name, configs) {
                    Ok(record) => (OpOutcome::Unit(Ok(())), vec![record]),
                    Err(e) => (OpOutcome::Unit(Err(e.into())), Vec::new()),
                }
            }
            ControllerOp::SetBrokerConfigs { broker_id, configs } => {
                match configs
                    .iter()
                    .try_for_each(|(k, v)| validate_broker_config(k, v))
                {
                    Ok(()) => (
                        OpOutcome::Unit(Ok(())),
                        vec![MetadataRecord::SetBrokerConfigs { broker_id, configs }],
                    ),
                    Err(e) => (OpOutcome::Unit(Err(e.into())), Vec::new()),
                }
            }
            ControllerOp::AllocateProducerIds { broker_id } => {
                let first_id = state.next_producer_id;
                (
                    OpOutcome::ProducerIds(Ok((
                        first_id,
                        ProducerId(first_id.get() + PRODUCER_ID_BLOCK),
                    ))),
                    vec![MetadataRecord::AllocateProducerIds {
                        broker_id,
                        first_id,
                        size: PRODUCER_ID_BLOCK,
                    }],
                )
            }
        }
    }

    fn create_topics(
        &self,
        state: &ClusterState,
        topics: Vec<NewTopic>,
    ) -> (Vec<Result<TopicInfo, ApiError>>, Vec<MetadataRecord>) {
        // Each topic is decided against the state the earlier ones of the batch leave.
        let mut scratch = state.clone();
        let mut records = Vec::new();
        let results = topics
            .into_iter()
            .map(|t| {
                let record = self.new_topic(&scratch, t)?;
                let MetadataRecord::CreateTopic { name, .. } = &record else {
                    unreachable!("new_topic makes CreateTopic records")
                };
                let name = name.clone();
                scratch.apply(scratch.last_offset + 1, &record);
                records.push(record);
                Ok(scratch.topic(&name).expect("just applied").clone())
            })
            .collect();
        (results, records)
    }

    fn new_topic(&self, state: &ClusterState, t: NewTopic) -> Result<MetadataRecord, ApiError> {
        validate_topic_name(&t.name)?;
        if state.topic(&t.name).is_some() {
            return Err(ApiError::new(
                ResponseError::TopicAlreadyExists,
                format!("Topic '{}' already exists.", t.name),
            ));
        }
        for (k, v) in &t.configs {
            topic_config::validate(k, v)?;
        }
        let registered: Vec<BrokerId> = state.brokers.keys().copied().collect();
        let replicas = match t.assignment {
            Some(a) => {
                validate_assignment(&a, &registered)?;
                check_replication_factor(a.iter().map(Vec::len).max().unwrap_or(0))?;
                a
            }
            None => {
                let partitions = if t.num_partitions == -1 {
                    self.defaults.num_partitions
                } else {
                    t.num_partitions
                };
                if partitions <= 0 {
                    return Err(ApiError::new(
                        ResponseError::InvalidPartitions,
                        format!("Number of partitions must be larger than 0 (got {partitions})."),
                    ));
                }
                let rf = if t.replication_factor == -1 {
                    self.defaults.replication_factor
                } else {
                    t.replication_factor
                };
                let live = placeable(state);
                let placed = place_replicas(partitions, rf, &live, random_start(live.len()))?;
                check_replication_factor(rf as usize)?;
                placed
            }
        };
        Ok(MetadataRecord::CreateTopic {
            name: t.name,
            topic_id: Uuid::new_v4(),
            replicas,
            configs: t.configs,
        })
    }
}

/// Refuses replication factors the cluster cannot honour yet (see
/// [`MAX_REPLICATION_FACTOR`]).
fn check_replication_factor(rf: usize) -> Result<(), ApiError> {
    if rf > MAX_REPLICATION_FACTOR {
        return Err(ApiError::new(
            ResponseError::InvalidReplicationFactor,
            format!(
                "Replication factor {rf} is not supported yet: partitions have one replica until \
                 partition replication lands."
            ),
        ));
    }
    Ok(())
}

/// Brokers new replicas may be placed on: registered and not fenced, in rack-alternating order.
fn placeable(state: &ClusterState) -> Vec<BrokerId> {
    let live: Vec<(BrokerId, Option<String>)> = state
        .live_brokers()
        .map(|b| (b.broker_id, b.rack.clone()))
        .collect();
    rack_alternated(&live)
}

/// Where round-robin placement starts, at random, so that topics created one after another do
/// not all put their first leader on the same broker.
fn random_start(brokers: usize) -> usize {
    (Uuid::new_v4().as_u128() % brokers.max(1) as u128) as usize
}

fn delete_topics(
    state: &ClusterState,
    ids: Vec<Uuid>,
) -> (Vec<Result<String, ApiError>>, Vec<MetadataRecord>) {
    let mut scratch = state.clone();
    let mut records = Vec::new();
    let results = ids
        .iter()
        .map(|id| {
            let name = match scratch.topic_by_id(id) {
                Some(t) if t.is_internal() => {
                    return Err(ApiError::new(
                        ResponseError::InvalidTopicException,
                        format!("Internal topic '{}' cannot be deleted.", t.name),
                    ))
                }
                Some(t) => t.name.clone(),
                None => return Err(ResponseError::UnknownTopicId.into()),
            };
            let record = MetadataRecord::DeleteTopic { topic_id: *id };
            scratch.apply(scratch.last_offset + 1, &record);
            records.push(record);
            Ok(name)
        })
        .collect();
    (results, records)
}

fn new_partitions(
    state: &ClusterState,
    name: &str,
    count: i32,
    assignment: Option<Vec<Vec<BrokerId>>>,
) -> Result<MetadataRecord, ApiError> {
    let topic = state
        .topic(name)
        .ok_or(ResponseError::UnknownTopicOrPartition)?;
    let current = topic.partitions.len() as i32;
    if count <= current {
        return Err(ApiError::new(
            ResponseError::InvalidPartitions,
            format!("Topic currently has {current} partitions, which is higher than or equal to the requested {count}."),
        ));
    }
    let replicas = match assignment {
        Some(a) => {
            if a.len() as i32 != count - current {
                return Err(ApiError::new(
                    ResponseError::InvalidReplicaAssignment,
                    format!(
                        "Increasing the number of partitions by {} but {} assignments provided.",
                        count - current,
                        a.len()
                    ),
                ));
            }
            let registered: Vec<BrokerId> = state.brokers.keys().copied().collect();
            validate_assignment(&a, &registered)?;
            check_replication_factor(a.iter().map(Vec::len).max().unwrap_or(0))?;
            a
        }
        None => {
            let rf = topic.partitions[0].replicas.len() as i16;
            let live = placeable(state);
            place_replicas(count - current, rf, &live, random_start(live.len()))?
        }
    };
    Ok(MetadataRecord::CreatePartitions {
        topic_id: topic.topic_id,
        replicas,
    })
}

fn set_topic_configs(
    state: &ClusterState,
    name: &str,
    configs: TopicConfigs,
) -> Result<MetadataRecord, ApiError> {
    let topic_id = state
        .topic(name)
        .map(|t| t.topic_id)
        .ok_or(ResponseError::UnknownTopicOrPartition)?;
    for (k, v) in &configs {
        topic_config::validate(k, v)?;
    }
    Ok(MetadataRecord::SetTopicConfigs { topic_id, configs })
}

/// Fences `broker`: it may no longer lead or stay in an ISR it shares with others. Each
/// partition it leads moves to another live member of the ISR, or to no leader at all (the
/// partition is offline until an ISR member returns). Every leader change bumps the epoch.
pub fn fence(state: &ClusterState, broker: BrokerId) -> Vec<MetadataRecord> {
    let Some(info) = state.brokers.get(&broker) else {
        return Vec::new();
    };
    let mut records = vec![MetadataRecord::FenceBroker {
        broker_id: broker,
        epoch: info.epoch,
    }];
    let live = |b: &BrokerId| *b != broker && state.brokers.get(b).is_some_and(|i| !i.fenced);
    for topic in state.topics() {
        for (i, p) in topic.partitions.iter().enumerate() {
            if p.leader != broker && !p.isr.contains(&broker) {
                continue;
            }
            // The last ISR member stays in the ISR: it holds every committed record.
            let isr: Vec<BrokerId> = if p.isr.len() > 1 {
                p.isr.iter().copied().filter(|b| *b != broker).collect()
            } else {
                p.isr.clone()
            };
            let leader = (p.leader == broker)
                .then(|| isr.iter().copied().find(live).unwrap_or(BrokerId::NONE));
            let isr = (isr != p.isr).then_some(isr);
            if leader.is_some() || isr.is_some() {
                records.push(MetadataRecord::PartitionChange {
                    topic_id: topic.topic_id,
                    partition: PartitionId(i as i32),
                    leader,
                    isr,
                    elr: None,
                    replicas: None,
                });
            }
        }
    }
    records
}

/// Unfences `broker` (alive and caught up with the metadata) and makes it leader, under a new
/// leader epoch, of every partition it may lead that has no leader or names it as leader from
/// an earlier incarnation: whatever that incarnation appended or answered is fenced.
pub fn unfence(state: &ClusterState, broker: BrokerId) -> Vec<MetadataRecord> {
    let Some(info) = state.brokers.get(&broker) else {
        return Vec::new();
    };
    let mut records = vec![MetadataRecord::UnfenceBroker {
        broker_id: broker,
        epoch: info.epoch,
    }];
    for topic in state.topics() {
        for (i, p) in topic.partitions.iter().enumerate() {
            let may_lead = p.isr.contains(&broker) || p.elr.contains(&broker);
            if may_lead && (p.leader == broker || !p.has_leader()) {
                records.push(MetadataRecord::PartitionChange {
                    topic_id: topic.topic_id,
                    partition: PartitionId(i as i32),
                    leader: Some(broker),
                    isr: None,
                    elr: None,
                    replicas: None,
                });
            }
        }
    }
    records
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state_with(brokers: &[i32], replicas: Vec<Vec<BrokerId>>) -> ClusterState {
        let mut s = ClusterState::new();
        let mut offset = 0;
        let mut apply = |s: &mut ClusterState, r: MetadataRecord| {
            offset += 1;
            s.replay(offset, &r).unwrap();
        };
        apply(
            &mut s,
            MetadataRecord::FormCluster {
                cluster_id: "c".into(),
            },
        );
        for b in brokers {
            apply(
                &mut s,
                MetadataRecord::RegisterBroker {
                    broker_id: BrokerId(*b),
                    host: "h".into(),
                    port: 1,
                    rack: None,
                    incarnation_id: None,
                    fenced: false,
                },
            );
        }
        apply(
            &mut s,
            MetadataRecord::CreateTopic {
                name: "t".into(),
                topic_id: Uuid::new_v4(),
                replicas,
                configs: TopicConfigs::new(),
            },
        );
        s
    }

    fn apply_all(s: &mut ClusterState, records: &[MetadataRecord]) {
        for r in records {
            let next = s.last_offset + 1;
            s.replay(next, r).unwrap();
        }
    }

    #[test]
    fn fencing_moves_leadership_within_the_isr_or_leaves_none() {
        let b = BrokerId;
        let mut s = state_with(&[1, 2], vec![vec![b(1)], vec![b(1), b(2)], vec![b(2)]]);
        let epochs: Vec<_> = s
            .topic("t")
            .unwrap()
            .partitions
            .iter()
            .map(|p| p.leader_epoch)
            .collect();
        let records = fence(&s, b(1));
        apply_all(&mut s, &records);
        let t = s.topic("t").unwrap();
        assert!(s.brokers[&b(1)].fenced);
        // Alone in its ISR: no leader, the ISR keeps it.
        assert_eq!(t.partitions[0].leader, BrokerId::NONE);
        assert_eq!(t.partitions[0].isr, vec![b(1)]);
        assert!(t.partitions[0].leader_epoch > epochs[0]);
        // Another ISR member takes over.
        assert_eq!(t.partitions[1].leader, b(2));
        assert_eq!(t.partitions[1].isr, vec![b(2)]);
        // Untouched.
        assert_eq!(t.partitions[2].leader, b(2));
        assert_eq!(t.partitions[2].leader_epoch, epochs[2]);

        let records = unfence(&s, b(1));
        apply_all(&mut s, &records);
        let t = s.topic("t").unwrap();
        assert!(!s.brokers[&b(1)].fenced);
        assert_eq!(t.partitions[0].leader, b(1));
        assert_eq!(
            t.partitions[1].leader,
            b(2),
            "not in the ISR: does not lead"
        );
    }

    #[test]
    fn replication_factors_above_the_live_brokers_are_refused() {
        let s = state_with(&[1, 2, 3], vec![vec![BrokerId(1)]]);
        let d = Decider {
            defaults: TopicDefaults {
                num_partitions: 3,
                replication_factor: 1,
            },
        };
        let mut t = NewTopic::new("x", 3);
        t.replication_factor = 2;
        let (results, records) = d.create_topics(&s, vec![t]);
        assert!(results[0].is_ok());
        assert_eq!(records.len(), 1);
        let mut t = NewTopic::new("x", 12);
        t.replication_factor = 4;
        let (results, _) = d.create_topics(&s, vec![t]);
        assert_eq!(
            results[0].as_ref().unwrap_err().code,
            ResponseError::InvalidReplicationFactor
        );
        let (results, _) = d.create_topics(&s, vec![NewTopic::new("x", 12)]);
        let t = results[0].as_ref().unwrap();
        for b in 1..=3 {
            let led = t
                .partitions
                .iter()
                .filter(|p| p.leader == BrokerId(b))
                .count();
            assert_eq!(led, 4, "broker {b} leads its share");
        }
    }
}
