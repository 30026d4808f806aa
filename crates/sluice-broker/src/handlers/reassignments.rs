//! AlterPartitionReassignments (API 45) and ListPartitionReassignments (API 46), KIP-455:
//! moving partitions between brokers. The controller decides every change
//! ([`crate::controller::decide::alter_reassignments`]); the reassignments under way are read
//! from this broker's metadata image once it has caught up with the controller's.

use std::collections::BTreeMap;
use std::time::Duration;

use kafka_protocol::messages::alter_partition_reassignments_request::AlterPartitionReassignmentsRequest;
use kafka_protocol::messages::alter_partition_reassignments_response::{
    AlterPartitionReassignmentsResponse, ReassignablePartitionResponse, ReassignableTopicResponse,
};
use kafka_protocol::messages::list_partition_reassignments_request::ListPartitionReassignmentsRequest;
use kafka_protocol::messages::list_partition_reassignments_response::{
    ListPartitionReassignmentsResponse, OngoingPartitionReassignment, OngoingTopicReassignment,
};
use kafka_protocol::messages::BrokerId as WireBrokerId;
use sluice_meta::{BrokerId, PartitionInfo};
use sluice_types::PartitionId;

use super::{str_bytes, topic_name};
use crate::controller::rpc::Reassignment;
use crate::controller::Controller;
use crate::image::MetadataImage;

pub async fn alter(
    controller: &Controller,
    req: AlterPartitionReassignmentsRequest,
    version: i16,
) -> AlterPartitionReassignmentsResponse {
    // v0 has no flag: the replication factor may change (KIP-860 made refusing it optional).
    let allow_rf_change = version == 0 || req.allow_replication_factor_change;
    let wanted: Vec<Reassignment> = req
        .topics
        .iter()
        .flat_map(|t| {
            let name = t.name.as_str().to_string();
            t.partitions.iter().map(move |p| {
                let target = p
                    .replicas
                    .as_ref()
                    .map(|r| r.iter().map(|b| BrokerId(b.0)).collect());
                ((name.clone(), p.partition_index), target)
            })
        })
        .collect();
    let mut resp = AlterPartitionReassignmentsResponse::default();
    if version >= 1 {
        resp = resp.with_allow_replication_factor_change(allow_rf_change);
    }
    let results = match controller
        .alter_reassignments(wanted, allow_rf_change)
        .await
    {
        Ok(r) => r,
        Err(e) => {
            return resp
                .with_error_code(e.code.code())
                .with_error_message(e.message.as_deref().map(str_bytes));
        }
    };
    // Topics in the order the request named them.
    let mut by_topic: Vec<(String, Vec<ReassignablePartitionResponse>)> = Vec::new();
    for ((topic, index), outcome) in results {
        let mut r = ReassignablePartitionResponse::default().with_partition_index(index);
        if let Err(e) = outcome {
            r = r
                .with_error_code(e.code.code())
                .with_error_message(e.message.as_deref().map(str_bytes));
        }
        match by_topic.iter_mut().find(|(t, _)| *t == topic) {
            Some((_, parts)) => parts.push(r),
            None => by_topic.push((topic, vec![r])),
        }
    }
    resp.with_responses(
        by_topic
            .into_iter()
            .map(|(t, partitions)| {
                ReassignableTopicResponse::default()
                    .with_name(topic_name(&t))
                    .with_partitions(partitions)
            })
            .collect(),
    )
}

/// The reassignments under way: all of them (`topics` null), or those among the partitions
/// named. Partitions not being reassigned, and unknown topics, are left out (as in Kafka).
/// Kafka answers from the controller; this broker first catches its image up with the
/// controller's, so a move started through any broker is listed here at once.
pub async fn list(
    controller: &Controller,
    image: &MetadataImage,
    req: ListPartitionReassignmentsRequest,
) -> ListPartitionReassignmentsResponse {
    // A request's timeout of 0 or less gets the controller's own (as Kafka's admin requests).
    let timeout = u64::try_from(req.timeout_ms)
        .ok()
        .filter(|t| *t > 0)
        .map_or(Duration::MAX, Duration::from_millis);
    if let Err(e) = controller.read_barrier(timeout).await {
        return ListPartitionReassignmentsResponse::default()
            .with_error_code(e.code.code())
            .with_error_message(e.message.as_deref().map(str_bytes));
    }
    let state = image.load();
    let wanted: Option<BTreeMap<String, Vec<i32>>> = req.topics.map(|topics| {
        topics
            .into_iter()
            .map(|t| (t.name.as_str().to_string(), t.partition_indexes))
            .collect()
    });
    let ongoing = |index: i32, p: &PartitionInfo| {
        p.is_reassigning().then(|| {
            let ids = |v: &[BrokerId]| v.iter().map(|b| WireBrokerId(b.0)).collect();
            OngoingPartitionReassignment::default()
                .with_partition_index(index)
                .with_replicas(ids(&p.replicas))
                .with_adding_replicas(ids(&p.adding))
                .with_removing_replicas(ids(&p.removing))
        })
    };
    let mut topics = Vec::new();
    for t in state.topics() {
        let partitions: Vec<OngoingPartitionReassignment> = match &wanted {
            None => t
                .partitions
                .iter()
                .enumerate()
                .filter_map(|(i, p)| ongoing(i as i32, p))
                .collect(),
            Some(w) => match w.get(&t.name) {
                None => continue,
                Some(indexes) => indexes
                    .iter()
                    .filter_map(|i| t.partition(PartitionId(*i)).and_then(|p| ongoing(*i, p)))
                    .collect(),
            },
        };
        if !partitions.is_empty() {
            topics.push(
                OngoingTopicReassignment::default()
                    .with_name(topic_name(&t.name))
                    .with_partitions(partitions),
            );
        }
    }
    ListPartitionReassignmentsResponse::default().with_topics(topics)
}
