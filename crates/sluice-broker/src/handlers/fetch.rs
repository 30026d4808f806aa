//! Fetch: long-polling reads of whole batches below the high watermark.
//!
//! - `max_wait_ms`/`min_bytes`: if fewer than `min_bytes` are available the request parks in the
//!   partitions' purgatories until data arrives or the wait ends; no busy loop.
//! - `max_bytes` bounds the response and `partition_max_bytes` each partition, except that the
//!   first batch of the first partition with data is always returned whole (KIP-74), so a batch
//!   larger than the limits can never stall a consumer.
//! - Incremental fetch sessions (KIP-227), see [`crate::fetch_session`].
//! - v13+ name topics by id; unknown ids get UNKNOWN_TOPIC_ID.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::fetch_request::FetchRequest;
use kafka_protocol::messages::fetch_response::{
    FetchResponse, FetchableTopicResponse, PartitionData,
};
use kafka_protocol::ResponseError;
use sluice_meta::Uuid;
use tokio::sync::Notify;

use super::topic_name;
use crate::error::ApiError;
use crate::fetch_session::{next_epoch, FetchSession, FetchSessionCache, SessionPartition};
use crate::image::MetadataImage;
use crate::partition::Partition;
use crate::replica_manager::ReplicaManager;
use sluice_meta::ClusterState;
use sluice_types::Offset;

/// What one partition contributes to a response.
struct PartitionRead {
    error: Option<ResponseError>,
    high_watermark: i64,
    log_start_offset: i64,
    records: Bytes,
}

enum Mode {
    /// Full request and response, no session (pre-v7 clients, or epoch -1).
    Sessionless,
    /// Full request; the response carries a new session id.
    NewSession,
    /// Changes only, against a session taken from the cache.
    Incremental(i32, FetchSession),
}

fn session_partition(
    topic: String,
    topic_id: Uuid,
    partition: i32,
    offset: i64,
    max_bytes: i32,
    current_leader_epoch: i32,
) -> SessionPartition {
    SessionPartition {
        topic,
        topic_id,
        partition,
        fetch_offset: offset,
        max_bytes,
        current_leader_epoch,
        last_high_watermark: -1,
        last_log_start_offset: -1,
    }
}

/// Resolves a topic named by id (v13+) or by name to (name, id) from the metadata image (no
/// lock); unknown ones keep an empty name or a nil id.
fn resolve(image: &ClusterState, by_id: bool, name: &str, id: Uuid) -> (String, Uuid) {
    if by_id {
        (
            image
                .topic_by_id(&id)
                .map(|t| t.name.clone())
                .unwrap_or_default(),
            id,
        )
    } else {
        let id = image.topic(name).map_or(Uuid::nil(), |t| t.topic_id);
        (name.to_string(), id)
    }
}

/// Whether a consumer may read `p` here, as Kafka's `checkCurrentLeaderEpoch`: this broker
/// must lead it, and a fetcher that names a leader epoch must name the current one (older:
/// FENCED_LEADER_EPOCH, it must refresh its metadata; newer: UNKNOWN_LEADER_EPOCH, this broker
/// has not caught up yet). -1 skips the epoch check (clients before KIP-320).
pub fn check_leader(p: &Partition, current_leader_epoch: i32) -> Result<(), ResponseError> {
    let epoch = p.leader_epoch().get();
    if current_leader_epoch >= 0 && current_leader_epoch < epoch {
        return Err(ResponseError::FencedLeaderEpoch);
    }
    if current_leader_epoch > epoch {
        return Err(ResponseError::UnknownLeaderEpoch);
    }
    if !p.is_leader() {
        return Err(ResponseError::NotLeaderOrFollower);
    }
    Ok(())
}

/// Reads every partition once, sharing the response byte budget. Blocking file reads: runs on
/// the blocking pool.
fn read_all(
    parts: &[(SessionPartition, Option<Arc<Partition>>)],
    max_bytes: usize,
    by_id: bool,
) -> Vec<PartitionRead> {
    let mut used = 0usize;
    parts
        .iter()
        .map(|(sp, partition)| {
            let Some(p) = partition else {
                let error = if by_id && sp.topic.is_empty() {
                    ResponseError::UnknownTopicId
                } else {
                    ResponseError::UnknownTopicOrPartition
                };
                return PartitionRead {
                    error: Some(error),
                    high_watermark: -1,
                    log_start_offset: -1,
                    records: Bytes::new(),
                };
            };
            if let Err(error) = check_leader(p, sp.current_leader_epoch) {
                return PartitionRead {
                    error: Some(error),
                    high_watermark: -1,
                    log_start_offset: -1,
                    records: Bytes::new(),
                };
            }
            let high_watermark = p.high_watermark();
            let limit = (sp.max_bytes.max(0) as usize).min(max_bytes.saturating_sub(used));
            let min_one = used == 0;
            let outcome = if limit == 0 && !min_one {
                Ok(Bytes::new())
            } else {
                p.log
                    .read(Offset(sp.fetch_offset), limit, high_watermark, min_one)
                    .map(|r| r.data)
                    .map_err(ApiError::from_log)
            };
            let log_start_offset = p.log.log_start_offset().get();
            let high_watermark = high_watermark.get();
            match outcome {
                Ok(data) => {
                    used += data.len();
                    PartitionRead {
                        error: None,
                        high_watermark,
                        log_start_offset,
                        records: data,
                    }
                }
                Err(e) => PartitionRead {
                    error: Some(e.code),
                    high_watermark,
                    log_start_offset,
                    records: Bytes::new(),
                },
            }
        })
        .collect()
}

/// Fetch for consumers: reads the hosted partitions (`replicas`), names topics through the
/// `image`, keeps KIP-227 `sessions`, caps answers at `fetch_max_bytes`, and stops waiting when
/// `stopping` turns true.
pub async fn handle(
    replicas: &ReplicaManager,
    image: &MetadataImage,
    sessions: &FetchSessionCache,
    fetch_max_bytes: usize,
    mut stopping: tokio::sync::watch::Receiver<bool>,
    req: FetchRequest,
    version: i16,
) -> FetchResponse {
    let image = image.load();
    let by_id = version >= 13;
    let mode = if version < 7 || (req.session_id == 0 && req.session_epoch == -1) {
        Mode::Sessionless
    } else if req.session_epoch == -1 {
        sessions.remove(req.session_id);
        Mode::Sessionless
    } else if req.session_epoch == 0 {
        if req.session_id != 0 {
            sessions.remove(req.session_id);
        }
        Mode::NewSession
    } else {
        match sessions.take(req.session_id, req.session_epoch) {
            Ok(s) => Mode::Incremental(req.session_id, s),
            Err(code) => {
                tracing::debug!(session_id = req.session_id, epoch = req.session_epoch, error = ?code, "fetch session refused");
                return FetchResponse::default().with_error_code(code.code());
            }
        }
    };

    let mut requested = Vec::new();
    for t in &req.topics {
        let (name, id) = resolve(&image, by_id, t.topic.as_str(), t.topic_id);
        for p in &t.partitions {
            requested.push(session_partition(
                name.clone(),
                id,
                p.partition,
                p.fetch_offset,
                p.partition_max_bytes,
                p.current_leader_epoch,
            ));
        }
    }

    let (mut mode, mut parts) = match mode {
        Mode::Incremental(id, mut session) => {
            for p in requested {
                session.upsert(p);
            }
            for f in &req.forgotten_topics_data {
                let (name, _) = resolve(&image, by_id, f.topic.as_str(), f.topic_id);
                for partition in &f.partitions {
                    session.forget(&name, *partition);
                }
            }
            let parts = session.partitions.clone();
            (Mode::Incremental(id, session), parts)
        }
        other => (other, requested),
    };

    let resolved: Vec<(SessionPartition, Option<Arc<Partition>>)> = parts
        .drain(..)
        .map(|sp| {
            let p = replicas.get(&sp.topic, sp.partition);
            (sp, p)
        })
        .collect();
    let resolved = Arc::new(resolved);
    let max_bytes = (req.max_bytes.max(0) as usize).min(fetch_max_bytes);
    let min_bytes = req.min_bytes.max(0) as usize;
    let deadline =
        tokio::time::Instant::now() + Duration::from_millis(req.max_wait_ms.max(0) as u64);

    let reads = loop {
        // Register before reading so a HW advance in between still wakes us.
        let waiter = Arc::new(Notify::new());
        for (_, p) in resolved.iter() {
            if let Some(p) = p {
                p.waiters.register(&waiter);
            }
        }
        let snapshot = resolved.clone();
        let reads = match tokio::task::spawn_blocking(move || read_all(&snapshot, max_bytes, by_id))
            .await
        {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "fetch read task failed");
                if let Mode::Incremental(id, session) = mode {
                    sessions.put_back(id, session);
                }
                return FetchResponse::default()
                    .with_error_code(ResponseError::UnknownServerError.code());
            }
        };
        let bytes: usize = reads.iter().map(|r| r.records.len()).sum();
        let any_error = reads.iter().any(|r| r.error.is_some());
        if bytes >= min_bytes
            || any_error
            || tokio::time::Instant::now() >= deadline
            || *stopping.borrow()
        {
            break reads;
        }
        tokio::select! {
            _ = waiter.notified() => {}
            _ = tokio::time::sleep_until(deadline) => {}
            _ = stopping.changed() => {}
        }
    };

    // Assemble the response, topic by topic in request/session order.
    let incremental = matches!(mode, Mode::Incremental(..));
    let mut topics: Vec<FetchableTopicResponse> = Vec::new();
    let mut sent = Vec::with_capacity(reads.len());
    for ((sp, _), read) in resolved.iter().zip(reads) {
        let changed = !read.records.is_empty()
            || read.error.is_some()
            || read.high_watermark != sp.last_high_watermark
            || read.log_start_offset != sp.last_log_start_offset;
        sent.push((
            read.high_watermark,
            read.log_start_offset,
            !incremental || changed,
        ));
        if incremental && !changed {
            continue;
        }
        let data = PartitionData::default()
            .with_partition_index(sp.partition)
            .with_error_code(read.error.map_or(0, |e| e.code()))
            .with_high_watermark(read.high_watermark)
            .with_last_stable_offset(read.high_watermark)
            .with_log_start_offset(read.log_start_offset)
            .with_records(Some(read.records));
        let same_topic = topics.last().is_some_and(|t| {
            if by_id {
                t.topic_id == sp.topic_id
            } else {
                t.topic.as_str() == sp.topic
            }
        });
        if !same_topic {
            let t = if by_id {
                FetchableTopicResponse::default().with_topic_id(sp.topic_id)
            } else {
                FetchableTopicResponse::default().with_topic(topic_name(&sp.topic))
            };
            topics.push(t);
        }
        topics.last_mut().expect("pushed").partitions.push(data);
    }

    let session_id = match &mut mode {
        Mode::Sessionless => 0,
        Mode::NewSession | Mode::Incremental(..) => {
            let mut partitions: Vec<SessionPartition> =
                resolved.iter().map(|(sp, _)| sp.clone()).collect();
            for (p, (hw, start, included)) in partitions.iter_mut().zip(&sent) {
                if *included {
                    p.last_high_watermark = *hw;
                    p.last_log_start_offset = *start;
                }
            }
            match std::mem::replace(&mut mode, Mode::Sessionless) {
                Mode::Incremental(id, mut session) => {
                    session.partitions = partitions;
                    session.next_epoch = next_epoch(req.session_epoch);
                    sessions.put_back(id, session);
                    id
                }
                _ => sessions.create(FetchSession::new(partitions)),
            }
        }
    };
    FetchResponse::default()
        .with_session_id(session_id)
        .with_responses(topics)
}
