//! ElectLeaders (API 43, KIP-183/460): preferred or unclean leader elections, decided by the
//! controller.

use std::collections::BTreeMap;

use kafka_protocol::messages::elect_leaders_request::ElectLeadersRequest;
use kafka_protocol::messages::elect_leaders_response::{
    ElectLeadersResponse, PartitionResult, ReplicaElectionResult,
};
use kafka_protocol::messages::TopicName;

use super::str_bytes;
use crate::controller::Controller;

pub async fn handle(
    controller: &Controller,
    req: ElectLeadersRequest,
    version: i16,
) -> ElectLeadersResponse {
    // v0 knows only preferred elections.
    let unclean = version >= 1 && req.election_type == 1;
    let partitions = req.topic_partitions.map(|topics| {
        topics
            .iter()
            .flat_map(|t| {
                let name = t.topic.as_str().to_string();
                t.partitions.iter().map(move |p| (name.clone(), *p))
            })
            .collect()
    });
    let mut by_topic: BTreeMap<String, Vec<PartitionResult>> = BTreeMap::new();
    match controller.elect_leaders(unclean, partitions).await {
        Ok(results) => {
            for ((topic, index), outcome) in results {
                let mut r = PartitionResult::default().with_partition_id(index);
                if let Err(e) = outcome {
                    r = r
                        .with_error_code(e.code.code())
                        .with_error_message(e.message.as_deref().map(str_bytes));
                }
                by_topic.entry(topic).or_default().push(r);
            }
        }
        Err(e) => {
            let resp = ElectLeadersResponse::default();
            return if version >= 1 {
                resp.with_error_code(e.code.code())
            } else {
                resp
            };
        }
    }
    ElectLeadersResponse::default().with_replica_election_results(
        by_topic
            .into_iter()
            .map(|(topic, partition_result)| {
                ReplicaElectionResult::default()
                    .with_topic(TopicName(str_bytes(&topic)))
                    .with_partition_result(partition_result)
            })
            .collect(),
    )
}
