//! The active controller's decisions: given the current state and an operation, the answer and
//! the records that carry it out. Pure: the caller commits the records through Raft.

use std::collections::BTreeMap;

use kafka_protocol::ResponseError;
use sluice_meta::{
    BrokerId, ClusterState, MetadataRecord, PartitionInfo, TopicConfigs, TopicInfo, Uuid,
};
use sluice_types::{PartitionId, ProducerId};

use super::placement::{place_replicas, rack_alternated, validate_assignment, validate_topic_name};
use super::rpc::{ControllerOp, OpOutcome, Reassignment, WireResult};
use super::{validate_broker_config, NewTopic, TopicDefaults, PRODUCER_ID_BLOCK};
use crate::error::ApiError;
use crate::topic_config;

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
            ControllerOp::ReadBarrier => (OpOutcome::Unit(Ok(())), Vec::new()),
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
            ControllerOp::AlterPartition(change) => match alter_partition(state, &change) {
                Ok(records) => (OpOutcome::Unit(Ok(())), records),
                Err(e) => (OpOutcome::Unit(Err(e.into())), Vec::new()),
            },
            ControllerOp::ElectLeaders {
                unclean,
                partitions,
            } => {
                let (results, records) = elect_leaders(state, unclean, partitions);
                (
                    OpOutcome::Elections(
                        results.into_iter().map(|(tp, r)| (tp, wire(r))).collect(),
                    ),
                    records,
                )
            }
            ControllerOp::AlterReassignments {
                reassignments,
                allow_replication_factor_change,
            } => {
                let (results, records) =
                    alter_reassignments(state, reassignments, allow_replication_factor_change);
                (
                    OpOutcome::Reassignments(
                        results.into_iter().map(|(tp, r)| (tp, wire(r))).collect(),
                    ),
                    records,
                )
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
                let live = placeable(state);
                let rf = match t.replication_factor {
                    -1 if self.defaults.replication_factor_explicit => {
                        self.defaults.replication_factor
                    }
                    // The default default: as many copies as there are brokers, up to it.
                    -1 => self
                        .defaults
                        .replication_factor
                        .min(live.len().max(1) as i16),
                    rf => rf,
                };
                place_replicas(partitions, rf, &live, random_start(live.len()))?
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
    if topic.is_internal() {
        // A group's offsets partition is its hash modulo the partition count: growing
        // __consumer_offsets would move every group away from its commits.
        return Err(ApiError::new(
            ResponseError::InvalidPartitions,
            format!(
                "Internal topic '{}' cannot have partitions added.",
                topic.name
            ),
        ));
    }
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
            a
        }
        None => {
            // A partition being reassigned counts the replicas it ends with.
            let rf = topic.partitions[0].target_replicas().len() as i16;
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

/// Checks a leader's ISR change against the current partition (Kafka's
/// `ReplicationControlManager.alterPartition`) and returns the record that makes it.
pub fn alter_partition(
    state: &ClusterState,
    change: &super::rpc::AlterPartition,
) -> Result<Vec<MetadataRecord>, ApiError> {
    let broker = state
        .brokers
        .get(&change.broker_id)
        .filter(|b| b.epoch == change.broker_epoch)
        .ok_or(ResponseError::StaleBrokerEpoch)?;
    if broker.fenced {
        return Err(ResponseError::StaleBrokerEpoch.into());
    }
    let p = state
        .topic_by_id(&change.topic_id)
        .and_then(|t| t.partition(PartitionId(change.partition)))
        .ok_or(ResponseError::UnknownTopicOrPartition)?;
    if p.leader != change.broker_id {
        return Err(ResponseError::NotLeaderOrFollower.into());
    }
    if change.leader_epoch < p.leader_epoch {
        return Err(ResponseError::FencedLeaderEpoch.into());
    }
    if change.leader_epoch > p.leader_epoch {
        return Err(ResponseError::UnknownLeaderEpoch.into());
    }
    if change.partition_epoch != p.partition_epoch {
        return Err(ApiError::new(
            ResponseError::InvalidUpdateVersion,
            format!(
                "partition epoch {} is not the current {}",
                change.partition_epoch, p.partition_epoch
            ),
        ));
    }
    if !change.isr.contains(&change.broker_id) {
        return Err(ApiError::new(
            ResponseError::InvalidRequest,
            "the leader must stay in the ISR",
        ));
    }
    for b in &change.isr {
        let live = state.brokers.get(b).is_some_and(|i| !i.fenced);
        if !p.replicas.contains(b) || (!live && !p.isr.contains(b)) {
            return Err(ApiError::new(
                ResponseError::IneligibleReplica,
                format!("broker {b} cannot join the ISR"),
            ));
        }
    }
    // KIP-903: the leader vouches for each member under the broker epoch it fetched with; one
    // whose registration has since changed (a restart, perhaps with an empty disk) is not the
    // replica the leader saw catch up.
    for (b, epoch) in &change.isr_epochs {
        let current = state.brokers.get(b).map(|i| i.epoch);
        if *epoch != -1 && current != Some(*epoch) {
            return Err(ApiError::new(
                ResponseError::IneligibleReplica,
                format!(
                    "broker {b} was seen with broker epoch {epoch}, not its current {}",
                    current.map_or("(none)".to_string(), |e| e.to_string())
                ),
            ));
        }
    }
    if change.isr == p.isr {
        return Ok(Vec::new());
    }
    let mut next = PartitionChange::isr(change.isr.clone());
    next.complete_reassignment(state, p);
    Ok(vec![next.record(change.topic_id, change.partition)])
}

/// A partition change being decided: the fields that change, as in the record.
#[derive(Debug, Default)]
struct PartitionChange {
    leader: Option<BrokerId>,
    isr: Option<Vec<BrokerId>>,
    replicas: Option<Vec<BrokerId>>,
    adding: Option<Vec<BrokerId>>,
    removing: Option<Vec<BrokerId>>,
}

impl PartitionChange {
    fn isr(isr: Vec<BrokerId>) -> PartitionChange {
        PartitionChange {
            isr: Some(isr),
            ..PartitionChange::default()
        }
    }

    fn record(self, topic_id: Uuid, partition: i32) -> MetadataRecord {
        MetadataRecord::PartitionChange {
            topic_id,
            partition: PartitionId(partition),
            leader: self.leader,
            isr: self.isr,
            elr: None,
            replicas: self.replicas,
            adding: self.adding,
            removing: self.removing,
        }
    }

    /// Finishes a reassignment once this change lets it (Kafka's
    /// `PartitionChangeBuilder.completeReassignmentIfNeeded`): every adding replica is in the
    /// ISR and some in-sync replica stays. The removed replicas leave the replicas and the ISR
    /// together, and a leader among them hands over to the first in-sync target replica.
    fn complete_reassignment(&mut self, state: &ClusterState, p: &PartitionInfo) {
        let replicas = self.replicas.clone().unwrap_or_else(|| p.replicas.clone());
        let adding = self.adding.clone().unwrap_or_else(|| p.adding.clone());
        let removing = self.removing.clone().unwrap_or_else(|| p.removing.clone());
        if adding.is_empty() && removing.is_empty() {
            return;
        }
        let isr = self.isr.clone().unwrap_or_else(|| p.isr.clone());
        let kept: Vec<BrokerId> = isr
            .iter()
            .copied()
            .filter(|b| !removing.contains(b))
            .collect();
        if kept.is_empty() || !adding.iter().all(|b| kept.contains(b)) {
            return;
        }
        let target: Vec<BrokerId> = replicas
            .iter()
            .copied()
            .filter(|b| !removing.contains(b))
            .collect();
        let leader = self.leader.unwrap_or(p.leader);
        if !kept.contains(&leader) {
            self.leader = Some(first_live(state, &target, &kept));
        }
        self.replicas = Some(target);
        self.isr = Some(kept);
        self.adding = Some(Vec::new());
        self.removing = Some(Vec::new());
    }
}

/// The first of `order` that is live and in `isr`, else no leader.
fn first_live(state: &ClusterState, order: &[BrokerId], isr: &[BrokerId]) -> BrokerId {
    order
        .iter()
        .copied()
        .find(|b| isr.contains(b) && state.brokers.get(b).is_some_and(|i| !i.fenced))
        .unwrap_or(BrokerId::NONE)
}

/// One partition's answer to a reassignment request.
pub type ReassignResult = ((String, i32), Result<(), ApiError>);

/// AlterPartitionReassignments (KIP-455, as KRaft's `ReplicationControlManager` does it). A
/// target starts a reassignment from the current replicas (an ongoing one included): the
/// replicas become the target followed by those it drops, `adding` the target's new ones,
/// `removing` the dropped ones, and the reassignment completes (at once, or when an ISR
/// expansion lets it) as [`PartitionChange::complete_reassignment`] says. `None` cancels: the
/// adding replicas go, the original replicas stay, and an adding replica that led hands over.
pub fn alter_reassignments(
    state: &ClusterState,
    reassignments: Vec<Reassignment>,
    allow_rf_change: bool,
) -> (Vec<ReassignResult>, Vec<MetadataRecord>) {
    // Each is decided against the state the earlier ones leave.
    let mut scratch = state.clone();
    let mut records = Vec::new();
    let results = reassignments
        .into_iter()
        .map(|((topic, index), target)| {
            let outcome = reassign_one(&scratch, &topic, index, target, allow_rf_change);
            let outcome = outcome.map(|record| {
                if let Some(r) = record {
                    scratch.apply(scratch.last_offset + 1, &r);
                    records.push(r);
                }
            });
            ((topic, index), outcome)
        })
        .collect();
    (results, records)
}

fn reassign_one(
    state: &ClusterState,
    topic: &str,
    index: i32,
    target: Option<Vec<BrokerId>>,
    allow_rf_change: bool,
) -> Result<Option<MetadataRecord>, ApiError> {
    let t = state
        .topic(topic)
        .ok_or(ResponseError::UnknownTopicOrPartition)?;
    let p = t
        .partition(PartitionId(index))
        .ok_or(ResponseError::UnknownTopicOrPartition)?;
    let change = match target {
        None => cancel_reassignment(state, t, index, p)?,
        Some(target) => {
            let registered: Vec<BrokerId> = state.brokers.keys().copied().collect();
            validate_assignment(std::slice::from_ref(&target), &registered).map_err(|e| {
                ApiError::new(
                    e.code,
                    e.message
                        .unwrap_or_default()
                        .replace("Partition 0", &format!("Partition {index}")),
                )
            })?;
            let original = p.original_replicas();
            if !allow_rf_change && target.len() != original.len() {
                return Err(ApiError::new(
                    ResponseError::InvalidReplicationFactor,
                    format!(
                        "The replication factor is changed from {} to {}",
                        original.len(),
                        target.len()
                    ),
                ));
            }
            let removing: Vec<BrokerId> = p
                .replicas
                .iter()
                .copied()
                .filter(|b| !target.contains(b))
                .collect();
            let adding: Vec<BrokerId> = target
                .iter()
                .copied()
                .filter(|b| !p.replicas.contains(b))
                .collect();
            let replicas: Vec<BrokerId> = target.iter().chain(&removing).copied().collect();
            let mut change = PartitionChange {
                replicas: Some(replicas),
                adding: Some(adding),
                removing: Some(removing),
                ..PartitionChange::default()
            };
            change.complete_reassignment(state, p);
            change
        }
    };
    let unchanged = change.leader.is_none()
        && change.isr.as_ref().is_none_or(|i| *i == p.isr)
        && change.replicas.as_ref().is_none_or(|r| *r == p.replicas)
        && change.adding.as_ref().is_none_or(|a| *a == p.adding)
        && change.removing.as_ref().is_none_or(|r| *r == p.removing);
    Ok((!unchanged).then(|| change.record(t.topic_id, index)))
}

/// Kafka's `PartitionReassignmentRevert`: back to the original replicas, the adding ones out
/// of the ISR. If that leaves no in-sync replica, only an unclean election could revert it.
fn cancel_reassignment(
    state: &ClusterState,
    t: &TopicInfo,
    index: i32,
    p: &PartitionInfo,
) -> Result<PartitionChange, ApiError> {
    if !p.is_reassigning() {
        return Err(ResponseError::NoReassignmentInProgress.into());
    }
    let replicas = p.original_replicas();
    let mut isr: Vec<BrokerId> = p
        .isr
        .iter()
        .copied()
        .filter(|b| !p.adding.contains(b))
        .collect();
    let live = |b: &BrokerId| state.brokers.get(b).is_some_and(|i| !i.fenced);
    if isr.is_empty() {
        match replicas.iter().copied().find(live) {
            Some(b) if unclean_allowed(t) => isr = vec![b],
            _ => {
                return Err(ApiError::new(
                    ResponseError::InvalidReplicaAssignment,
                    format!(
                        "Unable to revert partition assignment for {}-{index} because it would \
                         require an unclean leader election.",
                        t.name
                    ),
                ))
            }
        }
    }
    let leader = (!isr.contains(&p.leader)).then(|| first_live(state, &replicas, &isr));
    Ok(PartitionChange {
        leader,
        isr: Some(isr),
        replicas: Some(replicas),
        adding: Some(Vec::new()),
        removing: Some(Vec::new()),
    })
}

/// One partition's election outcome: (topic, partition) and whether a leader was elected.
pub type Election = ((String, i32), Result<(), ApiError>);

/// ElectLeaders (KIP-460). Preferred: the first replica becomes leader if it is live and in
/// the ISR (ELECTION_NOT_NEEDED if it already leads, PREFERRED_LEADER_NOT_AVAILABLE if it may
/// not). Unclean: a partition without a leader gets a live ISR member, or failing that any live
/// replica, whose log becomes the partition's (ELIGIBLE_LEADERS_NOT_AVAILABLE if none is live).
/// With `partitions` = `None`, every partition that needs an election, and only those, is
/// answered.
pub fn elect_leaders(
    state: &ClusterState,
    unclean: bool,
    partitions: Option<Vec<(String, i32)>>,
) -> (Vec<Election>, Vec<MetadataRecord>) {
    let all = partitions.is_none();
    let wanted: Vec<(String, i32)> = partitions.unwrap_or_else(|| {
        state
            .topics()
            .flat_map(|t| (0..t.partitions.len() as i32).map(move |i| (t.name.clone(), i)))
            .collect()
    });
    let live = |b: &BrokerId| state.brokers.get(b).is_some_and(|i| !i.fenced);
    let mut results = Vec::new();
    let mut records = Vec::new();
    for (topic, index) in wanted {
        let Some((t, p)) = state
            .topic(&topic)
            .and_then(|t| t.partition(PartitionId(index)).map(|p| (t, p)))
        else {
            results.push((
                (topic, index),
                Err(ResponseError::UnknownTopicOrPartition.into()),
            ));
            continue;
        };
        let change =
            |leader: BrokerId, isr: Option<Vec<BrokerId>>| MetadataRecord::PartitionChange {
                topic_id: t.topic_id,
                partition: PartitionId(index),
                leader: Some(leader),
                isr,
                elr: None,
                replicas: None,
                adding: None,
                removing: None,
            };
        let outcome: Result<(), ApiError> = if unclean {
            if p.has_leader() && live(&p.leader) {
                Err(ResponseError::ElectionNotNeeded.into())
            } else if let Some(b) = p.isr.iter().copied().find(live) {
                records.push(change(b, None));
                Ok(())
            } else if let Some(b) = p.replicas.iter().copied().find(live) {
                records.push(change(b, Some(vec![b])));
                Ok(())
            } else {
                Err(ResponseError::EligibleLeadersNotAvailable.into())
            }
        } else {
            let preferred = p.replicas.first().copied().unwrap_or(BrokerId::NONE);
            if p.leader == preferred {
                Err(ResponseError::ElectionNotNeeded.into())
            } else if !live(&preferred) || !p.isr.contains(&preferred) {
                Err(ResponseError::PreferredLeaderNotAvailable.into())
            } else {
                records.push(change(preferred, None));
                Ok(())
            }
        };
        let quiet = all
            && matches!(&outcome, Err(e) if e.code == ResponseError::ElectionNotNeeded
                || e.code == ResponseError::PreferredLeaderNotAvailable);
        if !quiet {
            results.push(((topic, index), outcome));
        }
    }
    (results, records)
}

/// Kafka's auto leader rebalance: for each broker whose share of partitions it should lead (it
/// is their first replica) but does not exceeds `percent`, the preferred elections that can be
/// made (it is live and in the ISR).
pub fn preferred_rebalance(state: &ClusterState, percent: u32) -> Vec<MetadataRecord> {
    let mut preferred: BTreeMap<BrokerId, (usize, Vec<(String, i32)>)> = BTreeMap::new();
    for t in state.topics() {
        for (i, p) in t.partitions.iter().enumerate() {
            let Some(first) = p.replicas.first() else {
                continue;
            };
            let entry = preferred.entry(*first).or_default();
            entry.0 += 1;
            if p.leader != *first {
                entry.1.push((t.name.clone(), i as i32));
            }
        }
    }
    let wanted: Vec<(String, i32)> = preferred
        .into_values()
        .filter(|(total, away)| !away.is_empty() && away.len() * 100 > *total * percent as usize)
        .flat_map(|(_, away)| away)
        .collect();
    if wanted.is_empty() {
        return Vec::new();
    }
    elect_leaders(state, false, Some(wanted)).1
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
            let mut leader = (p.leader == broker)
                .then(|| isr.iter().copied().find(live).unwrap_or(BrokerId::NONE));
            let mut isr = isr;
            // No in-sync replica left alive: offline, unless the topic allows an unclean
            // election (a live replica's log becomes the partition's).
            if leader == Some(BrokerId::NONE) && unclean_allowed(topic) {
                if let Some(b) = p.replicas.iter().copied().find(live) {
                    leader = Some(b);
                    isr = vec![b];
                }
            }
            let isr = (isr != p.isr).then_some(isr);
            if leader.is_some() || isr.is_some() {
                records.push(MetadataRecord::PartitionChange {
                    topic_id: topic.topic_id,
                    partition: PartitionId(i as i32),
                    leader,
                    isr,
                    elr: None,
                    replicas: None,
                    adding: None,
                    removing: None,
                });
            }
        }
    }
    records
}

/// The topic's `unclean.leader.election.enable` (an override; the default is false).
fn unclean_allowed(topic: &TopicInfo) -> bool {
    topic
        .configs
        .get("unclean.leader.election.enable")
        .is_some_and(|v| v == "true")
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
                    adding: None,
                    removing: None,
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
                    directory_id: None,
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

    #[test]
    fn the_offsets_topic_keeps_its_partition_count() {
        let mut s = state_with(&[1, 2], vec![vec![BrokerId(1)]]);
        apply_all(
            &mut s,
            &[MetadataRecord::CreateTopic {
                name: "__consumer_offsets".into(),
                topic_id: Uuid::new_v4(),
                replicas: vec![vec![BrokerId(1), BrokerId(2)]; 3],
                configs: TopicConfigs::new(),
            }],
        );
        let refused = new_partitions(&s, "__consumer_offsets", 4, None).unwrap_err();
        assert_eq!(refused.code, ResponseError::InvalidPartitions);
        assert!(new_partitions(&s, "t", 2, None).is_ok());
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
    fn isr_changes_are_checked_against_the_current_partition() {
        let b = BrokerId;
        let mut s = state_with(&[1, 2, 3], vec![vec![b(1), b(2), b(3)]]);
        let t = s.topic("t").unwrap().clone();
        let p = &t.partitions[0];
        let epoch_1 = s.brokers[&b(1)].epoch;
        let change = |isr: &[i32], partition_epoch: i32| super::super::rpc::AlterPartition {
            broker_id: b(1),
            broker_epoch: epoch_1,
            topic_id: t.topic_id,
            partition: 0,
            leader_epoch: p.leader_epoch,
            partition_epoch,
            isr: isr.iter().copied().map(BrokerId).collect(),
            isr_epochs: Vec::new(),
        };
        // A shrink by the leader at the current epochs.
        let records = alter_partition(&s, &change(&[1, 2], p.partition_epoch)).unwrap();
        let stale = change(&[1], p.partition_epoch);
        apply_all(&mut s, &records);
        let after = &s.topic("t").unwrap().partitions[0];
        assert_eq!(after.isr, vec![b(1), b(2)]);
        assert_eq!(
            after.leader_epoch, p.leader_epoch,
            "an ISR change keeps the leader epoch"
        );
        assert_eq!(after.partition_epoch, p.partition_epoch + 1);
        // The same proposal again: its partition epoch is stale now.
        assert_eq!(
            alter_partition(&s, &stale).unwrap_err().code,
            ResponseError::InvalidUpdateVersion
        );
        // Only the leader proposes.
        let mut not_leader = change(&[1, 2], after.partition_epoch);
        not_leader.broker_id = b(2);
        not_leader.broker_epoch = s.brokers[&b(2)].epoch;
        assert_eq!(
            alter_partition(&s, &not_leader).unwrap_err().code,
            ResponseError::NotLeaderOrFollower
        );
        // KIP-903: a member the leader saw under another broker epoch (an incarnation before a
        // restart) cannot be added; under its current epoch, or with none given, it can.
        let pe = after.partition_epoch;
        let epoch_3 = s.brokers[&b(3)].epoch;
        let mut stale_member = change(&[1, 2, 3], pe);
        stale_member.isr_epochs = vec![(b(1), -1), (b(2), -1), (b(3), epoch_3 - 1)];
        assert_eq!(
            alter_partition(&s, &stale_member).unwrap_err().code,
            ResponseError::IneligibleReplica
        );
        stale_member.isr_epochs[2].1 = epoch_3;
        assert!(alter_partition(&s, &stale_member).is_ok());
        // A fenced broker cannot join.
        let fenced = fence(&s, b(3));
        apply_all(&mut s, &fenced);
        let pe = s.topic("t").unwrap().partitions[0].partition_epoch;
        assert_eq!(
            alter_partition(&s, &change(&[1, 2, 3], pe))
                .unwrap_err()
                .code,
            ResponseError::IneligibleReplica
        );
    }

    /// The leader of `t`-0 adds `isr` members (AlterPartition at the current epochs).
    fn expand(s: &mut ClusterState, isr: &[i32]) {
        let t = s.topic("t").unwrap().clone();
        let p = &t.partitions[0];
        let change = super::super::rpc::AlterPartition {
            broker_id: p.leader,
            broker_epoch: s.brokers[&p.leader].epoch,
            topic_id: t.topic_id,
            partition: 0,
            leader_epoch: p.leader_epoch,
            partition_epoch: p.partition_epoch,
            isr: isr.iter().copied().map(BrokerId).collect(),
            isr_epochs: Vec::new(),
        };
        let records = alter_partition(s, &change).unwrap();
        apply_all(s, &records);
    }

    fn reassign(
        s: &mut ClusterState,
        target: Option<&[i32]>,
        allow_rf_change: bool,
    ) -> Result<(), ApiError> {
        let target = target.map(|t| t.iter().copied().map(BrokerId).collect());
        let (mut results, records) =
            alter_reassignments(s, vec![(("t".into(), 0), target)], allow_rf_change);
        apply_all(s, &records);
        results.pop().unwrap().1
    }

    fn ids(v: &[i32]) -> Vec<BrokerId> {
        v.iter().copied().map(BrokerId).collect()
    }

    #[test]
    fn a_reassignment_adds_then_completes_when_the_new_replicas_are_in_sync() {
        let b = BrokerId;
        let mut s = state_with(&[1, 2, 3, 4], vec![vec![b(1), b(2), b(3)]]);
        reassign(&mut s, Some(&[2, 3, 4]), true).unwrap();
        let p = s.topic("t").unwrap().partitions[0].clone();
        assert_eq!(
            p.replicas,
            ids(&[2, 3, 4, 1]),
            "the target, then the leaving ones"
        );
        assert_eq!(
            (p.adding.clone(), p.removing.clone()),
            (ids(&[4]), ids(&[1]))
        );
        assert_eq!(p.isr, ids(&[1, 2, 3]));
        assert_eq!(p.leader, b(1), "the leader stays until the move completes");
        assert_eq!(p.original_replicas(), ids(&[2, 3, 1]));
        assert_eq!(p.target_replicas(), ids(&[2, 3, 4]));
        // The new replica catches up: the same change completes the move and the removed
        // leader hands over to the first in-sync replica of the target.
        expand(&mut s, &[1, 2, 3, 4]);
        let done = s.topic("t").unwrap().partitions[0].clone();
        assert_eq!(done.replicas, ids(&[2, 3, 4]));
        assert_eq!(done.isr, ids(&[2, 3, 4]));
        assert!(!done.is_reassigning());
        assert_eq!(done.leader, b(2));
        assert!(done.leader_epoch > p.leader_epoch);
        // Nothing to cancel any more.
        assert_eq!(
            reassign(&mut s, None, true).unwrap_err().code,
            ResponseError::NoReassignmentInProgress
        );
    }

    #[test]
    fn a_cancelled_reassignment_returns_to_the_original_replicas() {
        let b = BrokerId;
        let mut s = state_with(&[1, 2, 3, 4, 5], vec![vec![b(1), b(2), b(3)]]);
        reassign(&mut s, Some(&[4, 5, 3]), true).unwrap();
        // 4 catches up, 5 does not: not complete.
        expand(&mut s, &[1, 2, 3, 4]);
        let p = s.topic("t").unwrap().partitions[0].clone();
        assert!(p.is_reassigning());
        assert_eq!(p.replicas, ids(&[4, 5, 3, 1, 2]));
        reassign(&mut s, None, true).unwrap();
        let back = s.topic("t").unwrap().partitions[0].clone();
        // The original replicas, in the order the reassignment left them (KRaft's revert).
        assert_eq!(back.replicas, ids(&[3, 1, 2]));
        assert_eq!(back.isr, ids(&[1, 2, 3]));
        assert!(!back.is_reassigning());
        assert_eq!(back.leader, b(1));
        assert_eq!(
            back.leader_epoch, p.leader_epoch,
            "the leader was not moved"
        );
    }

    #[test]
    fn shrinking_completes_at_once_and_bad_targets_are_refused() {
        let b = BrokerId;
        let mut s = state_with(&[1, 2, 3], vec![vec![b(1), b(2), b(3)]]);
        // Refused: unknown broker, duplicates, empty, RF change when not allowed, unknown
        // partition.
        for (target, code) in [
            (vec![1, 9], ResponseError::InvalidReplicaAssignment),
            (vec![1, 1], ResponseError::InvalidReplicaAssignment),
            (vec![], ResponseError::InvalidReplicaAssignment),
        ] {
            assert_eq!(
                reassign(&mut s, Some(&target), true).unwrap_err().code,
                code
            );
        }
        assert_eq!(
            reassign(&mut s, Some(&[2, 3]), false).unwrap_err().code,
            ResponseError::InvalidReplicationFactor
        );
        let (results, records) =
            alter_reassignments(&s, vec![(("t".into(), 7), Some(ids(&[1])))], true);
        assert!(records.is_empty());
        assert_eq!(
            results[0].1.as_ref().unwrap_err().code,
            ResponseError::UnknownTopicOrPartition
        );
        // Dropping a replica that is in sync: done in one change, and the leader, dropped,
        // hands over.
        reassign(&mut s, Some(&[3, 2]), true).unwrap();
        let p = s.topic("t").unwrap().partitions[0].clone();
        assert_eq!(p.replicas, ids(&[3, 2]));
        assert_eq!(p.isr, ids(&[2, 3]));
        assert_eq!(p.leader, b(3));
        assert!(!p.is_reassigning());
        // Reordering only changes the preferred leader.
        let before = p.leader_epoch;
        reassign(&mut s, Some(&[2, 3]), false).unwrap();
        let p = s.topic("t").unwrap().partitions[0].clone();
        assert_eq!(
            (p.replicas, p.leader, p.leader_epoch),
            (ids(&[2, 3]), b(3), before)
        );
        // The same target again changes nothing.
        let (results, records) =
            alter_reassignments(&s, vec![(("t".into(), 0), Some(ids(&[2, 3])))], true);
        assert!(results[0].1.is_ok() && records.is_empty());
    }

    #[test]
    fn a_new_target_during_a_reassignment_starts_from_the_current_replicas() {
        let b = BrokerId;
        let mut s = state_with(&[1, 2, 3, 4], vec![vec![b(1), b(2)]]);
        reassign(&mut s, Some(&[3, 4]), true).unwrap();
        // Changed mind: back to [1, 2] while nothing caught up. The added replicas are
        // removing now and the move completes at once.
        reassign(&mut s, Some(&[1, 2]), true).unwrap();
        let p = s.topic("t").unwrap().partitions[0].clone();
        assert_eq!(p.replicas, ids(&[1, 2]));
        assert!(!p.is_reassigning());
        assert_eq!(p.leader, b(1));
    }

    #[test]
    fn preferred_and_unclean_elections() {
        let b = BrokerId;
        let mut s = state_with(&[1, 2], vec![vec![b(1), b(2)], vec![b(2)]]);
        // Partition 0 led by 2 (1 was fenced and came back), partition 1 has no live replica.
        let fenced = fence(&s, b(1));
        apply_all(&mut s, &fenced);
        let back = unfence(&s, b(1));
        apply_all(&mut s, &back);
        let fenced = fence(&s, b(2));
        apply_all(&mut s, &fenced);
        let t = s.topic("t").unwrap();
        assert_eq!(
            t.partitions[0].leader,
            BrokerId::NONE,
            "1 left the ISR when fenced"
        );
        // Unclean: 1 is live but not in the ISR of partition 0; partition 1 has nobody.
        let (results, records) = elect_leaders(&s, true, None);
        assert_eq!(records.len(), 1, "{results:?}");
        apply_all(&mut s, &records);
        let p0 = &s.topic("t").unwrap().partitions[0];
        assert_eq!(p0.leader, b(1));
        assert_eq!(
            p0.isr,
            vec![b(1)],
            "the unclean leader's log is the partition's now"
        );
        assert!(results.iter().any(|((_, i), r)| *i == 1
            && r.as_ref().unwrap_err().code == ResponseError::EligibleLeadersNotAvailable));
        // Preferred: already led by its preferred replica.
        let (results, records) =
            elect_leaders(&s, false, Some(vec![("t".into(), 0), ("nope".into(), 0)]));
        assert!(records.is_empty());
        assert_eq!(
            results[0].1.as_ref().unwrap_err().code,
            ResponseError::ElectionNotNeeded
        );
        assert_eq!(
            results[1].1.as_ref().unwrap_err().code,
            ResponseError::UnknownTopicOrPartition
        );
    }

    #[test]
    fn replication_factors_above_the_live_brokers_are_refused() {
        let s = state_with(&[1, 2, 3], vec![vec![BrokerId(1)]]);
        let d = Decider {
            defaults: TopicDefaults {
                num_partitions: 3,
                replication_factor: 3,
                replication_factor_explicit: false,
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
        // The default default: 3 copies on 3 brokers, fewer on fewer.
        let (results, _) = d.create_topics(&s, vec![NewTopic::new("x", 12)]);
        let t = results[0].as_ref().unwrap();
        assert!(t.partitions.iter().all(|p| p.replicas.len() == 3));
        let two = state_with(&[1, 2], vec![vec![BrokerId(1)]]);
        let (results, _) = d.create_topics(&two, vec![NewTopic::new("y", 2)]);
        let y = results[0].as_ref().unwrap();
        assert!(y.partitions.iter().all(|p| p.replicas.len() == 2));
        // Set explicitly, it is not capped.
        let explicit = Decider {
            defaults: TopicDefaults {
                replication_factor_explicit: true,
                ..d.defaults
            },
        };
        let (results, _) = explicit.create_topics(&two, vec![NewTopic::new("z", 2)]);
        assert_eq!(
            results[0].as_ref().unwrap_err().code,
            ResponseError::InvalidReplicationFactor
        );
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
