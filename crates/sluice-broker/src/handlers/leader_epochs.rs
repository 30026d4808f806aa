//! OffsetForLeaderEpoch (API 23): the end offset of a leader epoch, answered from each
//! partition's leader-epoch cache (KIP-101, KIP-279). Consumers use it after a leader change to
//! detect that the log they were reading was truncated (KIP-320); followers will use it after a
//! restart to find where their log diverges from the leader's.
//!
//! For epoch E the answer is `(E', end)`: E' is the largest epoch <= E this log knows, and
//! `end` is the first offset of the epoch after E' (the log end if E' is the latest). An epoch
//! below every one the log knows, or a log with no epochs, is answered (-1, -1).

use kafka_protocol::messages::offset_for_leader_epoch_request::OffsetForLeaderEpochRequest;
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderEpochResponse, OffsetForLeaderTopicResult,
};
use kafka_protocol::ResponseError;
use sluice_types::LeaderEpoch;

use super::fetch::check_leader;
use crate::replica_manager::ReplicaManager;

pub fn handle(
    replicas: &ReplicaManager,
    req: OffsetForLeaderEpochRequest,
) -> OffsetForLeaderEpochResponse {
    let topics = req
        .topics
        .iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|q| {
                    let resp = EpochEndOffset::default()
                        .with_partition(q.partition)
                        .with_leader_epoch(-1)
                        .with_end_offset(-1);
                    let Some(p) = replicas.get(t.topic.as_str(), q.partition) else {
                        return resp.with_error_code(ResponseError::UnknownTopicOrPartition.code());
                    };
                    if let Err(e) = check_leader(&p, q.current_leader_epoch) {
                        return resp.with_error_code(e.code());
                    }
                    match p.log.end_offset_for_epoch(LeaderEpoch(q.leader_epoch)) {
                        Some((epoch, end)) => resp
                            .with_leader_epoch(epoch.get())
                            .with_end_offset(end.get()),
                        None => resp,
                    }
                })
                .collect();
            OffsetForLeaderTopicResult::default()
                .with_topic(t.topic.clone())
                .with_partitions(partitions)
        })
        .collect();
    OffsetForLeaderEpochResponse::default().with_topics(topics)
}
