//! DescribeCluster (API 60) and DescribeQuorum (API 55): the brokers and the controller quorum,
//! for admin tools (`kafka-metadata-quorum.sh`, `sluice cluster info`).

use kafka_protocol::messages::describe_cluster_request::DescribeClusterRequest;
use kafka_protocol::messages::describe_cluster_response::{
    DescribeClusterBroker, DescribeClusterResponse,
};
use kafka_protocol::messages::describe_quorum_request::DescribeQuorumRequest;
use kafka_protocol::messages::describe_quorum_response::{
    self as dq, DescribeQuorumResponse, PartitionData, ReplicaState, TopicData,
};
use kafka_protocol::messages::{BrokerId, TopicName};
use kafka_protocol::ResponseError;

use super::str_bytes;
use crate::config::parse_host_port;
use crate::controller::Controller;
use crate::image::MetadataImage;

/// The metadata log's name in DescribeQuorum, as in KRaft.
pub const METADATA_TOPIC: &str = "__cluster_metadata";

pub fn describe_cluster(
    image: &MetadataImage,
    controller: &Controller,
    req: DescribeClusterRequest,
    version: i16,
) -> DescribeClusterResponse {
    let state = image.load();
    let mut resp = DescribeClusterResponse::default()
        .with_cluster_id(str_bytes(state.cluster_id.as_deref().unwrap_or_default()))
        .with_controller_id(BrokerId(
            controller.active_controller().map_or(-1, |c| c as i32),
        ))
        .with_cluster_authorized_operations(i32::MIN);
    if version >= 1 {
        resp = resp.with_endpoint_type(req.endpoint_type);
        // 1: brokers. Controllers are not reachable by clients (their listener speaks
        // Sluice's own protocol), as on a Kafka broker asked for them.
        if req.endpoint_type != 1 {
            return resp
                .with_error_code(ResponseError::UnsupportedEndpointType.code())
                .with_error_message(Some(str_bytes(
                    "only broker endpoints (endpoint type 1) are served",
                )));
        }
    }
    let include_fenced = version >= 2 && req.include_fenced_brokers;
    resp.with_brokers(
        state
            .brokers
            .values()
            .filter(|b| include_fenced || !b.fenced)
            .map(|b| {
                DescribeClusterBroker::default()
                    .with_broker_id(BrokerId(b.broker_id.get()))
                    .with_host(str_bytes(&b.host))
                    .with_port(b.port)
                    .with_rack(b.rack.as_deref().map(str_bytes))
                    .with_is_fenced(b.fenced)
            })
            .collect(),
    )
}

pub async fn describe_quorum(
    controller: &Controller,
    req: DescribeQuorumRequest,
    version: i16,
) -> DescribeQuorumResponse {
    let asks_metadata = req.topics.len() == 1
        && req.topics[0].topic_name.as_str() == METADATA_TOPIC
        && req.topics[0].partitions.len() == 1
        && req.topics[0].partitions[0].partition_index == 0;
    if !asks_metadata {
        return DescribeQuorumResponse::default()
            .with_error_code(ResponseError::InvalidRequest.code())
            .with_error_message(
                (version >= 2).then(|| str_bytes("only __cluster_metadata-0 has a quorum")),
            );
    }
    let partition = PartitionData::default().with_partition_index(0);
    let topic = |p: PartitionData| {
        vec![TopicData::default()
            .with_topic_name(TopicName(str_bytes(METADATA_TOPIC)))
            .with_partitions(vec![p])]
    };
    let q = match controller.describe_quorum().await {
        Ok(q) => q,
        Err(e) => {
            let p = partition
                .with_error_code(ResponseError::NotLeaderOrFollower.code())
                .with_error_message(e.message.filter(|_| version >= 2).map(|m| str_bytes(&m)))
                .with_leader_id(BrokerId(-1))
                .with_leader_epoch(-1);
            return DescribeQuorumResponse::default().with_topics(topic(p));
        }
    };
    let replica = |r: &crate::controller::rpc::ReplicaProgress| {
        ReplicaState::default()
            .with_replica_id(BrokerId(r.id as i32))
            .with_log_end_offset(r.log_end_offset)
            .with_last_fetch_timestamp(-1)
            .with_last_caught_up_timestamp(-1)
    };
    let p = partition
        .with_leader_id(BrokerId(q.leader as i32))
        .with_leader_epoch(q.term.min(i32::MAX as u64) as i32)
        .with_high_watermark(q.high_watermark)
        .with_current_voters(q.voters.iter().map(replica).collect())
        .with_observers(q.observers.iter().map(replica).collect());
    let mut resp = DescribeQuorumResponse::default().with_topics(topic(p));
    if version >= 2 {
        resp = resp.with_nodes(
            q.voters
                .iter()
                .filter_map(|v| {
                    let (host, port) = parse_host_port(&v.addr)?;
                    Some(
                        dq::Node::default()
                            .with_node_id(BrokerId(v.id as i32))
                            .with_listeners(vec![dq::Listener::default()
                                .with_name(str_bytes("CONTROLLER"))
                                .with_host(str_bytes(&host))
                                .with_port(port)]),
                    )
                })
                .collect(),
        );
    }
    resp
}
