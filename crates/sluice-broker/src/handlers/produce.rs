//! Produce: validate each partition's batches, append them in request order, then answer once
//! they are as durable as `--durability` promises (`acks=1`/`all`), or not at all (`acks=0`).
//!
//! Batches are stored as sent. The broker reads only the batch headers (sizes, magic, CRC32C,
//! record count) and rewrites only the base offset and partition leader epoch, which lie outside
//! the CRC. No record is decompressed on this path.

use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::produce_request::{PartitionProduceData, ProduceRequest};
use kafka_protocol::messages::produce_response::{
    PartitionProduceResponse, ProduceResponse, TopicProduceResponse,
};
use kafka_protocol::ResponseError;
use sluice_protocol::batch::{self, BatchError, Batches};

use super::{now_ms, str_bytes};
use crate::broker::Broker;
use crate::error::ApiError;
use crate::partition::Partition;

fn batch_error(e: BatchError) -> ApiError {
    let code = match e {
        BatchError::UnsupportedMagic(_) => ResponseError::UnsupportedForMessageFormat,
        BatchError::InvalidRecordCount { .. } | BatchError::Empty => ResponseError::InvalidRecord,
        _ => ResponseError::CorruptMessage,
    };
    ApiError::new(code, e.to_string())
}

/// Validates and appends one partition's records; returns the partition and the appended range.
fn append_one(
    broker: &Broker,
    topic: &str,
    data: &PartitionProduceData,
    now: i64,
) -> Result<(Arc<Partition>, sluice_log::AppendInfo), ApiError> {
    let partition = broker
        .replicas
        .get(topic, data.index)
        .ok_or(ResponseError::UnknownTopicOrPartition)?;
    let records = data
        .records
        .as_ref()
        .filter(|r| !r.is_empty())
        .ok_or_else(|| ApiError::new(ResponseError::InvalidRecord, "produce carried no records"))?;
    let max = broker.config.message_max_bytes;
    for b in Batches::new(records) {
        let (header, _) = b.map_err(batch_error)?;
        if header.total_size() > max {
            return Err(ApiError::new(
                ResponseError::MessageTooLarge,
                format!(
                    "record batch of {} bytes exceeds message.max.bytes {max}",
                    header.total_size()
                ),
            ));
        }
    }
    let summary = batch::validate_produce_batches(records).map_err(batch_error)?;
    if summary.has_control {
        return Err(ApiError::new(
            ResponseError::InvalidRecord,
            "producers may not send control batches",
        ));
    }
    if summary.has_transactional {
        return Err(ApiError::new(
            ResponseError::InvalidTxnState,
            "transactions are not supported yet",
        ));
    }
    if summary.producer_id >= 0 {
        // Idempotent batches need producer state this broker does not keep yet; storing them
        // without de-duplication would break the guarantee the client asked for.
        return Err(ApiError::new(
            ResponseError::UnknownProducerId,
            "idempotent producers are not supported yet",
        ));
    }
    // The one copy on this path: offsets are assigned in place before the write.
    let mut buf = records.to_vec();
    let info = partition
        .append(&mut buf, now)
        .map_err(ApiError::from_log)?;
    Ok((partition, info))
}

pub async fn handle(broker: &Arc<Broker>, req: ProduceRequest) -> Option<ProduceResponse> {
    let acks = req.acks;
    let now = now_ms();
    let mut responses = Vec::with_capacity(req.topic_data.len());
    // (topic slot, partition slot, partition, end offset) of each successful append.
    let mut appended = Vec::new();
    for (ti, topic) in req.topic_data.iter().enumerate() {
        let name = topic.name.as_str();
        let mut partitions = Vec::with_capacity(topic.partition_data.len());
        for (pi, data) in topic.partition_data.iter().enumerate() {
            let resp = PartitionProduceResponse::default().with_index(data.index);
            let outcome = if !matches!(acks, -1..=1) {
                Err(ApiError::from(ResponseError::InvalidRequiredAcks))
            } else {
                append_one(broker, name, data, now)
            };
            partitions.push(match outcome {
                Ok((partition, info)) => {
                    appended.push((ti, pi, partition, info.last_offset + 1));
                    resp.with_base_offset(info.base_offset)
                        .with_log_start_offset(info.log_start_offset)
                }
                Err(e) => {
                    tracing::debug!(topic = name, partition = data.index, error = ?e.code, message = ?e.message, "produce rejected");
                    resp.with_error_code(e.code.code())
                        .with_error_message(e.message.as_deref().map(str_bytes))
                        .with_base_offset(-1)
                }
            });
        }
        responses.push(
            TopicProduceResponse::default()
                .with_name(topic.name.clone())
                .with_partition_responses(partitions),
        );
    }

    // Durability runs in its own tasks so that a timed-out request does not cancel an fsync
    // others share, and acks=0 data still becomes durable (and visible).
    let waits: Vec<_> = appended
        .into_iter()
        .map(|(ti, pi, partition, end)| {
            let task = tokio::spawn(async move { partition.make_durable(end).await });
            (ti, pi, task)
        })
        .collect();
    if acks == 0 {
        return None;
    }
    // A non-positive timeout is no promise a client can rely on; use Kafka's request default.
    let timeout_ms = if req.timeout_ms > 0 {
        req.timeout_ms as u64
    } else {
        30_000
    };
    let deadline = tokio::time::Instant::now() + Duration::from_millis(timeout_ms);
    for (ti, pi, task) in waits {
        let code = match tokio::time::timeout_at(deadline, task).await {
            Ok(Ok(Ok(()))) => continue,
            Ok(Ok(Err(e))) => ApiError::from_log(e).code,
            Ok(Err(join)) => {
                tracing::error!(error = %join, "durability task failed");
                ResponseError::KafkaStorageError
            }
            Err(_) => ResponseError::RequestTimedOut,
        };
        let p = &mut responses[ti].partition_responses[pi];
        p.error_code = code.code();
        p.base_offset = -1;
    }
    Some(ProduceResponse::default().with_responses(responses))
}
