//! Produce: validate each partition's batches, append them in request order, then answer once
//! they are as durable as `--durability` promises (`acks=1`/`all`), or not at all (`acks=0`).
//!
//! Batches are stored as sent, after the log validator has walked every record and found it to
//! match the batch header (`sluice_protocol::validate`; compressed batches stream through their
//! decompressor with a bound). The broker rewrites only the base offset and partition leader
//! epoch, which lie outside the CRC; a batch whose header `maxTimestamp` lies, and every batch of
//! a LogAppendTime topic, is copied once to fix the timestamp and CRC.
//!
//! Internal topics (`__consumer_offsets`) belong to the broker: clients cannot produce to them.

use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::produce_request::{PartitionProduceData, ProduceRequest};
use kafka_protocol::messages::produce_response::{
    BatchIndexAndErrorMessage, PartitionProduceResponse, ProduceResponse, TopicProduceResponse,
};
use kafka_protocol::ResponseError;
use sluice_protocol::batch::{self, BatchError};
use sluice_protocol::validate::{self, RecordsError, WalkSummary};

use super::str_bytes;
use crate::error::ApiError;
use crate::partition::{AppendOutcome, Partition};
use crate::producer_state::IncomingBatch;
use crate::replica_manager::ReplicaManager;
use crate::topic_config::TopicSettings;
use sluice_types::{Clock, Offset};

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
    end_offset: Option<Offset>,
    log_append_time: i64,
}

/// A partition's records refused: the error, and (KIP-467) the records at fault by their index
/// in the batch, so a client can tell them from the records refused only for sharing their batch.
#[derive(Debug)]
struct Refused {
    error: ApiError,
    record_errors: Vec<(i32, String)>,
}

impl From<ApiError> for Refused {
    fn from(error: ApiError) -> Refused {
        Refused {
            error,
            record_errors: Vec::new(),
        }
    }
}

impl From<ResponseError> for Refused {
    fn from(code: ResponseError) -> Refused {
        ApiError::from(code).into()
    }
}

/// Most record errors a response lists (Kafka lists them all; a hostile batch of a million
/// keyless records should not make a response of a million strings).
const MAX_RECORD_ERRORS: usize = 1000;

/// The log validator's walk over one batch, with Kafka's per-record rules: keys on compacted
/// topics and timestamp bounds. Every batch is walked (a batch whose records do not match its
/// header never reaches the log); compressed batches stream through their decompressor,
/// bounded by `validate::MAX_UNCOMPRESSED_BATCH_BYTES`.
fn validate_records(
    batch: &[u8],
    settings: &TopicSettings,
    topic: &str,
    partition: i32,
    now: i64,
) -> Result<WalkSummary, Refused> {
    let check_time = !settings.log_append_time
        && (settings.timestamp_before_max_ms != i64::MAX
            || settings.timestamp_after_max_ms != i64::MAX);
    let earliest = now.saturating_sub(settings.timestamp_before_max_ms);
    let latest = now.saturating_add(settings.timestamp_after_max_ms);
    let mut record_errors = Vec::new();
    let mut rejected = 0usize;
    let mut bad_timestamp = false;
    let walked = validate::walk_records(batch, validate::MAX_UNCOMPRESSED_BATCH_BYTES, |r| {
        let problem = if settings.compact && !r.has_key() {
            Some(format!(
                "Compacted topic cannot accept message without key in topic partition {topic}-{partition}."
            ))
        } else if check_time && (r.timestamp < earliest || r.timestamp > latest) {
            bad_timestamp = true;
            Some(format!(
                "Timestamp {} of message with offset {} is out of range. The timestamp should be within [{earliest}, {latest}]",
                r.timestamp, r.index
            ))
        } else {
            None
        };
        if let Some(message) = problem {
            rejected += 1;
            if record_errors.len() < MAX_RECORD_ERRORS {
                record_errors.push((r.index, message));
            }
        }
    });
    let summary = walked.map_err(|e| {
        let message = format!("Invalid records in topic partition {topic}-{partition}: {e}");
        let code = match e {
            RecordsError::Batch(b) => return Refused::from(batch_error(b)),
            _ => ResponseError::InvalidRecord,
        };
        Refused {
            record_errors: e
                .record_index()
                .map(|i| (i, message.clone()))
                .into_iter()
                .collect(),
            error: ApiError::new(code, message),
        }
    })?;
    if rejected == 0 {
        return Ok(summary);
    }
    // Kafka's summary messages (LogValidator.processRecordErrors).
    let error = if bad_timestamp {
        ApiError::new(
            ResponseError::InvalidTimestamp,
            format!(
                "One or more records have been rejected due to invalid timestamp: {}",
                record_errors[0].1
            ),
        )
    } else {
        let first: Vec<&str> = record_errors.iter().take(3).map(|e| e.1.as_str()).collect();
        ApiError::new(
            ResponseError::InvalidRecord,
            format!(
                "One or more records have been rejected due to {rejected} record errors in total, and only showing the first three errors at most: {first:?}"
            ),
        )
    };
    Err(Refused {
        error,
        record_errors,
    })
}

/// Rewrites the CRC-covered timestamp fields of `batch`: `(true, now)` stamps LogAppendTime,
/// `(false, max)` sets the true max timestamp of a CreateTime batch.
fn stamp_batch(batch: &mut [u8], (log_append, max_timestamp): (bool, i64)) -> Result<(), Refused> {
    if log_append {
        let attributes = i16::from_be_bytes([batch[21], batch[22]]) | 0x08;
        batch[21..23].copy_from_slice(&attributes.to_be_bytes());
    }
    batch[35..43].copy_from_slice(&max_timestamp.to_be_bytes());
    batch::update_crc(batch).map_err(|e| batch_error(e).into())
}

/// Validates and appends one partition's records.
fn append_one(
    replicas: &ReplicaManager,
    topic: &str,
    data: &PartitionProduceData,
    now: i64,
    acks: i16,
) -> Result<Appended, Refused> {
    // Kafka refuses these in ReplicaManager before looking at the records: the broker writes
    // them itself, and a client's record there could poison the coordinator that reads them.
    if sluice_meta::state::is_internal_topic(topic) {
        return Err(ApiError::new(
            ResponseError::InvalidTopicException,
            format!("Cannot append to internal topic {topic}"),
        )
        .into());
    }
    let partition = replicas
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
        )
        .into());
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
        )
        .into());
    }
    if summary.has_control {
        return Err(ApiError::new(
            ResponseError::InvalidRecord,
            "producers may not send control batches",
        )
        .into());
    }
    if summary.has_transactional {
        return Err(ApiError::new(
            ResponseError::InvalidTxnState,
            "transactions are not supported yet",
        )
        .into());
    }
    let walked = validate_records(records, &settings, topic, data.index, now)?;
    // acks=all needs min.insync.replicas in the ISR before anything is written (Kafka checks
    // in `Partition.appendRecordsToLeader`).
    if acks == -1 {
        partition.check_min_insync().map_err(|e| match e {
            sluice_replica::ReplicaError::NotLeader => {
                ApiError::from(ResponseError::NotLeaderOrFollower)
            }
            other => ApiError::new(ResponseError::NotEnoughReplicas, other.to_string()),
        })?;
    }
    let producer = (summary.producer_id >= 0).then_some(IncomingBatch {
        producer_id: summary.producer_id,
        epoch: summary.producer_epoch,
        first_seq: summary.first_sequence,
        last_seq: summary.last_sequence,
    });
    // The batch is written from the request buffer itself (the log patches the assigned offset
    // into the header it writes). Two cases need a copy, because the fields they change are
    // inside the CRC, which is recomputed (Kafka's `setMaxTimestamp` does the same): a
    // LogAppendTime topic stamps the broker's time, and a CreateTime batch whose header
    // `maxTimestamp` is not the largest record timestamp gets the true one, so the time index and
    // ListOffsets by time can trust it.
    // A topic whose compression.type names a codec stores every batch in it: a batch in
    // another codec is decoded and re-encoded (Kafka's recompression), timestamps included.
    let recompressed = match settings.compression {
        Some(codec) if walked.compression != codec => Some(
            sluice_protocol::records::recompress(records, codec).map_err(|e| {
                ApiError::new(ResponseError::InvalidRecord, format!("recompressing: {e}"))
            })?,
        ),
        _ => None,
    };
    let header_max = summary.max_timestamp;
    let stamp = if settings.log_append_time {
        Some((true, now))
    } else if walked.max_timestamp != header_max {
        tracing::debug!(
            topic,
            partition = data.index,
            header_max,
            records_max = walked.max_timestamp,
            "correcting a batch's max timestamp"
        );
        Some((false, walked.max_timestamp))
    } else {
        None
    };
    let owned = match (recompressed, stamp) {
        (Some(mut buf), Some(stamp)) => Some(stamp_batch(&mut buf, stamp).map(|()| buf)?),
        (None, Some(stamp)) => {
            let mut buf = records.to_vec();
            Some(stamp_batch(&mut buf, stamp).map(|()| buf)?)
        }
        (recompressed, None) => recompressed,
    };
    let batch_bytes = owned.as_deref().unwrap_or(&records[..]);
    let log_append_time = if settings.log_append_time { now } else { -1 };
    let outcome = partition
        .append(batch_bytes, now, producer)
        .map_err(ApiError::from_append)?;
    Ok(match outcome {
        AppendOutcome::Appended(info) => Appended {
            partition,
            base_offset: info.base_offset.get(),
            end_offset: Some(info.last_offset.plus(1)),
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
                end_offset: Some(Offset(base_offset + summary.record_count)),
                partition,
                base_offset,
                log_append_time,
            }
        }
    })
}

pub async fn handle(
    replicas: &Arc<ReplicaManager>,
    clock: &Arc<dyn Clock>,
    req: ProduceRequest,
) -> Option<ProduceResponse> {
    start(replicas, clock, req).await.finish().await
}

/// A background wait for one partition's appended data to become durable (`acks=1`) and, for
/// `acks=all`, replicated to the ISR (the HW passes it).
type DurabilityTask = tokio::task::JoinHandle<Result<(), ApiError>>;

/// A produce whose batches are appended and whose durability is being waited for.
pub struct PendingProduce {
    /// `None` for acks=0: nothing is answered.
    response: Option<ProduceResponse>,
    /// (topic slot, partition slot, partition, durability task) per appended partition.
    waits: Vec<(
        usize,
        usize,
        Arc<crate::partition::Partition>,
        DurabilityTask,
    )>,
    acks: i16,
    deadline: tokio::time::Instant,
}

/// The in-order part of a produce: validates and appends every partition's batches now, and
/// starts their durability in background tasks. The connection calls this before reading its
/// next request, so a pipelined stream is appended in order while earlier requests still wait
/// for their fsync; [`PendingProduce::finish`] then waits.
///
/// Validation (CRC, the record walk, decompression) and the append run on the blocking pool:
/// a decompressing walk is CPU work, and a `pwrite` can stall when the kernel throttles dirty
/// pages. Neither may hold a reactor thread that other connections need. The caller awaits the
/// result before reading its next request, so request order is kept.
pub async fn start(
    replicas: &Arc<ReplicaManager>,
    clock: &Arc<dyn Clock>,
    req: ProduceRequest,
) -> PendingProduce {
    let (replicas, now) = (replicas.clone(), clock.now_ms());
    super::off_reactor(move || start_blocking(&replicas, now, req)).await
}

fn start_blocking(replicas: &ReplicaManager, now: i64, req: ProduceRequest) -> PendingProduce {
    let acks = req.acks;
    let mut responses = Vec::with_capacity(req.topic_data.len());
    // (topic slot, partition slot, partition, end offset) of each successful append.
    let mut appended = Vec::new();
    for (ti, topic) in req.topic_data.iter().enumerate() {
        let name = topic.name.as_str();
        let mut partitions = Vec::with_capacity(topic.partition_data.len());
        for (pi, data) in topic.partition_data.iter().enumerate() {
            let resp = PartitionProduceResponse::default().with_index(data.index);
            let outcome = if !matches!(acks, -1..=1) {
                Err(Refused::from(ResponseError::InvalidRequiredAcks))
            } else {
                append_one(replicas, name, data, now, acks)
            };
            partitions.push(match outcome {
                Ok(a) => {
                    let log_start = a.partition.log.log_start_offset().get();
                    if let Some(end) = a.end_offset {
                        appended.push((ti, pi, a.partition, end));
                    }
                    resp.with_base_offset(a.base_offset)
                        .with_log_append_time_ms(a.log_append_time)
                        .with_log_start_offset(log_start)
                }
                Err(Refused {
                    error: e,
                    record_errors,
                }) => {
                    tracing::debug!(topic = name, partition = data.index, error = ?e.code, message = ?e.message, "produce rejected");
                    resp.with_error_code(e.code.code())
                        .with_error_message(e.message.as_deref().map(str_bytes))
                        .with_base_offset(-1)
                        .with_record_errors(
                            record_errors
                                .into_iter()
                                .map(|(index, message)| {
                                    BatchIndexAndErrorMessage::default()
                                        .with_batch_index(index)
                                        .with_batch_index_error_message(Some(str_bytes(&message)))
                                })
                                .collect(),
                        )
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
            let p = partition.clone();
            let task = tokio::spawn(async move {
                p.make_durable(end).await.map_err(ApiError::from_log)?;
                if acks == -1 {
                    p.wait_for_hw(end).await.map_err(ApiError::from_append)?;
                }
                Ok(())
            });
            (ti, pi, partition, task)
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
        acks,
        deadline: tokio::time::Instant::now() + Duration::from_millis(timeout_ms),
    }
}

impl PendingProduce {
    /// Waits (bounded by the request's timeout) until the appended data is durable.
    pub async fn finish(self) -> Option<ProduceResponse> {
        let mut response = self.response?;
        for (ti, pi, partition, task) in self.waits {
            let code = match tokio::time::timeout_at(self.deadline, task).await {
                Ok(Ok(Ok(()))) => continue,
                Ok(Ok(Err(e))) => e.code,
                Ok(Err(join)) => {
                    tracing::error!(error = %join, "durability task failed");
                    ResponseError::KafkaStorageError
                }
                // Written here, but the ISR shrank below min.insync.replicas before it was
                // replicated: Kafka's NOT_ENOUGH_REPLICAS_AFTER_APPEND.
                Err(_) if self.acks == -1 && partition.check_min_insync().is_err() => {
                    ResponseError::NotEnoughReplicasAfterAppend
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

/// Routing help for a client with stale metadata. A partition that exists but is not hosted
/// here is NOT_LEADER_OR_FOLLOWER, not UNKNOWN_TOPIC_OR_PARTITION (Kafka's
/// `getPartitionOrError`). And (KIP-951, Produce v10+) a partition answered
/// NOT_LEADER_OR_FOLLOWER or FENCED_LEADER_EPOCH names its current leader and epoch, with that
/// leader's endpoint in the response, so the client re-routes without a Metadata round trip.
pub fn add_leader_hints(
    resp: &mut ProduceResponse,
    image: &sluice_meta::ClusterState,
    version: i16,
) {
    use kafka_protocol::messages::produce_response::{LeaderIdAndEpoch, NodeEndpoint};
    let mut leaders = std::collections::BTreeSet::new();
    for topic in &mut resp.responses {
        let Some(info) = image.topic(topic.name.as_str()) else {
            continue;
        };
        for p in &mut topic.partition_responses {
            let Some(part) = info.partition(sluice_types::PartitionId(p.index)) else {
                continue;
            };
            if p.error_code == ResponseError::UnknownTopicOrPartition.code() {
                p.error_code = ResponseError::NotLeaderOrFollower.code();
                p.error_message = None;
            }
            let moved = p.error_code == ResponseError::NotLeaderOrFollower.code()
                || p.error_code == ResponseError::FencedLeaderEpoch.code();
            if version >= 10 && moved && part.has_leader() {
                p.current_leader = LeaderIdAndEpoch::default()
                    .with_leader_id(kafka_protocol::messages::BrokerId(part.leader.get()))
                    .with_leader_epoch(part.leader_epoch.get());
                leaders.insert(part.leader);
            }
        }
    }
    resp.node_endpoints = leaders
        .into_iter()
        .filter_map(|id| image.brokers.get(&id).filter(|b| !b.fenced))
        .map(|b| {
            NodeEndpoint::default()
                .with_node_id(kafka_protocol::messages::BrokerId(b.broker_id.get()))
                .with_host(str_bytes(&b.host))
                .with_port(b.port)
                .with_rack(b.rack.as_deref().map(str_bytes))
        })
        .collect();
}
