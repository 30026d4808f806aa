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
use sluice_protocol::batch::{self, BatchError};

use super::{now_ms, str_bytes};
use crate::broker::Broker;
use crate::error::ApiError;
use crate::partition::{AppendOutcome, Partition};
use crate::producer_state::IncomingBatch;
use crate::topic_config::TopicSettings;

fn batch_error(e: BatchError) -> ApiError {
    let code = match e {
        BatchError::UnsupportedMagic(_) => ResponseError::UnsupportedForMessageFormat,
        BatchError::InvalidRecordCount { .. } | BatchError::Empty => ResponseError::InvalidRecord,
        _ => ResponseError::CorruptMessage,
    };
    ApiError::new(code, e.to_string())
}

/// What a successful partition append answers with.
struct Appended {
    partition: Arc<Partition>,
    base_offset: i64,
    /// Exclusive end of the appended range; `None` for an idempotent duplicate (nothing new
    /// to make durable beyond what the original append already waits for).
    end_offset: Option<i64>,
    log_append_time: i64,
}

/// Kafka's per-record checks that need the records themselves (so decompression): keys on
/// compacted topics and timestamp bounds. Only run when the topic asks for them.
fn check_records(batch: &[u8], settings: &TopicSettings, now: i64) -> Result<(), ApiError> {
    let check_time = !settings.log_append_time
        && (settings.timestamp_before_max_ms != i64::MAX
            || settings.timestamp_after_max_ms != i64::MAX);
    if !settings.compact && !check_time {
        return Ok(());
    }
    let records = sluice_protocol::records::decode(batch)
        .map_err(|e| ApiError::new(ResponseError::CorruptMessage, e.to_string()))?;
    for r in &records {
        if settings.compact && r.key.is_none() {
            return Err(ApiError::new(
                ResponseError::InvalidRecord,
                "Compacted topic cannot accept message without key",
            ));
        }
        if check_time
            && (r.timestamp < now.saturating_sub(settings.timestamp_before_max_ms)
                || r.timestamp > now.saturating_add(settings.timestamp_after_max_ms))
        {
            return Err(ApiError::new(
                ResponseError::InvalidTimestamp,
                format!(
                    "Timestamp {} of a record is out of range: it must be within [{} ms before, {} ms after] the broker time {now}",
                    r.timestamp, settings.timestamp_before_max_ms, settings.timestamp_after_max_ms
                ),
            ));
        }
    }
    Ok(())
}

/// Validates and appends one partition's records.
fn append_one(
    broker: &Broker,
    topic: &str,
    data: &PartitionProduceData,
    now: i64,
) -> Result<Appended, ApiError> {
    let partition = broker
        .replicas
        .get(topic, data.index)
        .ok_or(ResponseError::UnknownTopicOrPartition)?;
    let settings = partition.settings();
    let records = data
        .records
        .as_ref()
        .filter(|r| !r.is_empty())
        .ok_or_else(|| ApiError::new(ResponseError::InvalidRecord, "produce carried no records"))?;
    let summary = batch::validate_produce_batches(records).map_err(batch_error)?;
    // Produce v3+ carries exactly one batch per partition (Kafka refuses more).
    if summary.batch_count != 1 {
        return Err(ApiError::new(
            ResponseError::InvalidRecord,
            "Produce requests with version 3 and above must contain exactly one record batch per partition",
        ));
    }
    // Validation checked that the one batch fills the records exactly: its size is theirs.
    let max = settings.max_message_bytes;
    if records.len() > max {
        return Err(ApiError::new(
            ResponseError::MessageTooLarge,
            format!(
                "record batch of {} bytes exceeds the topic's max.message.bytes {max}",
                records.len()
            ),
        ));
    }
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
    check_records(records, &settings, now)?;
    let producer = (summary.producer_id >= 0).then_some(IncomingBatch {
        producer_id: summary.producer_id,
        epoch: summary.producer_epoch,
        first_seq: summary.first_sequence,
        last_seq: summary.last_sequence,
    });
    // The batch is written from the request buffer itself (the log patches the assigned offset
    // into the header it writes). Only LogAppendTime topics need a copy: the timestamp type bit
    // and max timestamp are inside the CRC, so the CRC is recomputed (Kafka does the same).
    let stamped;
    let (batch_bytes, log_append_time) = if settings.log_append_time {
        let mut buf = records.to_vec();
        let attributes = i16::from_be_bytes([buf[21], buf[22]]) | 0x08;
        buf[21..23].copy_from_slice(&attributes.to_be_bytes());
        buf[35..43].copy_from_slice(&now.to_be_bytes());
        batch::update_crc(&mut buf).map_err(batch_error)?;
        stamped = buf;
        (&stamped[..], now)
    } else {
        (&records[..], -1)
    };
    let outcome = partition
        .append(batch_bytes, now, producer)
        .map_err(ApiError::from_append)?;
    Ok(match outcome {
        AppendOutcome::Appended(info) => Appended {
            partition,
            base_offset: info.base_offset,
            end_offset: Some(info.last_offset + 1),
            log_append_time,
        },
        AppendOutcome::Duplicate { base_offset } => {
            tracing::debug!(
                topic,
                partition = data.index,
                base_offset,
                "duplicate idempotent batch"
            );
            Appended {
                // The original append is durable or will be, like any other: wait on it too.
                end_offset: Some(base_offset + summary.record_count),
                partition,
                base_offset,
                log_append_time,
            }
        }
    })
}

pub async fn handle(broker: &Arc<Broker>, req: ProduceRequest) -> Option<ProduceResponse> {
    start(broker, req).finish().await
}

/// A background wait for one partition's appended data to become durable.
type DurabilityTask = tokio::task::JoinHandle<Result<(), sluice_log::LogError>>;

/// A produce whose batches are appended and whose durability is being waited for.
pub struct PendingProduce {
    /// `None` for acks=0: nothing is answered.
    response: Option<ProduceResponse>,
    /// (topic slot, partition slot, durability task) per appended partition.
    waits: Vec<(usize, usize, DurabilityTask)>,
    deadline: tokio::time::Instant,
}

/// The in-order part of a produce: validates and appends every partition's batches now, and
/// starts their durability in background tasks. The connection calls this before reading its
/// next request, so a pipelined stream is appended in order while earlier requests still wait
/// for their fsync; [`PendingProduce::finish`] then waits.
pub fn start(broker: &Arc<Broker>, req: ProduceRequest) -> PendingProduce {
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
                Ok(a) => {
                    let log_start = a.partition.log.log_start_offset();
                    if let Some(end) = a.end_offset {
                        appended.push((ti, pi, a.partition, end));
                    }
                    resp.with_base_offset(a.base_offset)
                        .with_log_append_time_ms(a.log_append_time)
                        .with_log_start_offset(log_start)
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
    // A non-positive timeout is no promise a client can rely on; use Kafka's request default.
    let timeout_ms = if req.timeout_ms > 0 {
        req.timeout_ms as u64
    } else {
        30_000
    };
    PendingProduce {
        response: (acks != 0).then(|| ProduceResponse::default().with_responses(responses)),
        waits,
        deadline: tokio::time::Instant::now() + Duration::from_millis(timeout_ms),
    }
}

impl PendingProduce {
    /// Waits (bounded by the request's timeout) until the appended data is durable.
    pub async fn finish(self) -> Option<ProduceResponse> {
        let mut response = self.response?;
        for (ti, pi, task) in self.waits {
            let code = match tokio::time::timeout_at(self.deadline, task).await {
                Ok(Ok(Ok(()))) => continue,
                Ok(Ok(Err(e))) => ApiError::from_log(e).code,
                Ok(Err(join)) => {
                    tracing::error!(error = %join, "durability task failed");
                    ResponseError::KafkaStorageError
                }
                Err(_) => ResponseError::RequestTimedOut,
            };
            let p = &mut response.responses[ti].partition_responses[pi];
            p.error_code = code.code();
            p.base_offset = -1;
        }
        Some(response)
    }
}
