//! DeleteRecords (KIP-107): moves a partition's log start offset (low watermark) forward.
//! Offset -1 means "up to the high watermark"; beyond it is OFFSET_OUT_OF_RANGE. Whole segments
//! below the new start are deleted; the start itself is persisted by the log.

use kafka_protocol::messages::delete_records_request::DeleteRecordsRequest;
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsResponse, DeleteRecordsTopicResult,
};
use kafka_protocol::ResponseError;
use sluice_types::Offset;

use crate::error::ApiError;
use crate::replica_manager::ReplicaManager;

pub async fn handle(replicas: &ReplicaManager, req: DeleteRecordsRequest) -> DeleteRecordsResponse {
    let mut topics = Vec::with_capacity(req.topics.len());
    for t in &req.topics {
        let mut partitions = Vec::with_capacity(t.partitions.len());
        for q in &t.partitions {
            let resp =
                DeleteRecordsPartitionResult::default().with_partition_index(q.partition_index);
            let outcome = match replicas.get(t.name.as_str(), q.partition_index) {
                None => Err(ApiError::from(ResponseError::UnknownTopicOrPartition)),
                Some(p) => {
                    let hw = p.high_watermark().get();
                    let target = if q.offset == -1 { hw } else { q.offset };
                    if target < 0 || target > hw {
                        Err(ApiError::from(ResponseError::OffsetOutOfRange))
                    } else {
                        tokio::task::spawn_blocking(move || {
                            p.log.delete_records_before(Offset(target))
                        })
                        .await
                        .map_err(|_| ApiError::from(ResponseError::UnknownServerError))
                        .and_then(|r| r.map_err(ApiError::from_log))
                    }
                }
            };
            partitions.push(match outcome {
                Ok(low) => resp.with_low_watermark(low.get()),
                Err(e) => resp.with_low_watermark(-1).with_error_code(e.code.code()),
            });
        }
        topics.push(
            DeleteRecordsTopicResult::default()
                .with_name(t.name.clone())
                .with_partitions(partitions),
        );
    }
    DeleteRecordsResponse::default().with_topics(topics)
}
