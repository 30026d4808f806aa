//! InitProducerId (idempotent producers) and DescribeProducers.
//!
//! Producer ids come from blocks reserved in the metadata log, so an id is never handed out
//! twice, even across restarts. A producer that re-initialises with its id and epoch (KIP-360,
//! v3+) keeps the id with the epoch bumped; at the epoch limit it gets a new id.
//! Transactions do not exist yet: a transactional id is answered COORDINATOR_NOT_AVAILABLE, as a
//! cluster without a transaction coordinator would.

use kafka_protocol::messages::describe_producers_request::DescribeProducersRequest;
use kafka_protocol::messages::describe_producers_response::{
    DescribeProducersResponse, PartitionResponse, ProducerState, TopicResponse,
};
use kafka_protocol::messages::init_producer_id_request::InitProducerIdRequest;
use kafka_protocol::messages::init_producer_id_response::InitProducerIdResponse;
use kafka_protocol::messages::ProducerId;
use kafka_protocol::ResponseError;

use crate::producer_ids::ProducerIds;
use crate::replica_manager::ReplicaManager;

pub async fn init_producer_id(
    ids: &ProducerIds,
    req: InitProducerIdRequest,
) -> InitProducerIdResponse {
    let failed = |code: ResponseError| {
        InitProducerIdResponse::default()
            .with_error_code(code.code())
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1)
    };
    if req.transactional_id.as_ref().is_some_and(|t| !t.is_empty()) {
        return failed(ResponseError::CoordinatorNotAvailable);
    }
    let (pid, epoch) = (req.producer_id.0, req.producer_epoch);
    if pid >= 0
        && epoch >= 0
        && ids.is_issued(sluice_types::ProducerId(pid))
        && epoch < i16::MAX - 1
    {
        return InitProducerIdResponse::default()
            .with_producer_id(ProducerId(pid))
            .with_producer_epoch(epoch + 1);
    }
    match ids.allocate().await {
        Ok(id) => InitProducerIdResponse::default()
            .with_producer_id(ProducerId(id.get()))
            .with_producer_epoch(0),
        Err(e) => failed(e.code),
    }
}

pub fn describe_producers(
    replicas: &ReplicaManager,
    req: DescribeProducersRequest,
) -> DescribeProducersResponse {
    let topics = req
        .topics
        .iter()
        .map(|t| {
            let partitions = t
                .partition_indexes
                .iter()
                .map(|&i| {
                    let resp = PartitionResponse::default().with_partition_index(i);
                    let Some(p) = replicas.get(t.name.as_str(), i) else {
                        return resp.with_error_code(ResponseError::UnknownTopicOrPartition.code());
                    };
                    let table = p.producer_state();
                    resp.with_active_producers(
                        table
                            .producers()
                            .map(|(pid, e)| {
                                ProducerState::default()
                                    .with_producer_id(ProducerId(*pid))
                                    .with_producer_epoch(e.epoch as i32)
                                    .with_last_sequence(e.last_seq().unwrap_or(-1))
                                    .with_last_timestamp(
                                        e.batches.back().map_or(-1, |b| b.timestamp),
                                    )
                                    .with_coordinator_epoch(-1)
                                    .with_current_txn_start_offset(-1)
                            })
                            .collect(),
                    )
                })
                .collect();
            TopicResponse::default()
                .with_name(t.name.clone())
                .with_partitions(partitions)
        })
        .collect();
    DescribeProducersResponse::default().with_topics(topics)
}
