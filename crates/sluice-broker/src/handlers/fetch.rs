//! Fetch: long-polling reads of whole batches below the high watermark.
//!
//! - `max_wait_ms`/`min_bytes`: if fewer than `min_bytes` are available the request parks in the
//!   partitions' purgatories until data arrives or the wait ends; no busy loop.
//! - `max_bytes` bounds the response and `partition_max_bytes` each partition, except that the
//!   first batch of the first partition with data is always returned whole (KIP-74), so a batch
//!   larger than the limits can never stall a consumer.
//! - Incremental fetch sessions (KIP-227), see [`crate::fetch_session`].
//! - v13+ name topics by id; unknown ids get UNKNOWN_TOPIC_ID.
//! - **Follower fetches** (replica id >= 0: `replica_id` before v15, `replica_state` from v15;
//!   Kafka's `isFromFollower`): the fetcher must be one of the partition's replicas; a
//!   `last_fetched_epoch` (v12+) is checked against this leader's epoch cache first and a
//!   diverging log is answered with `diverging_epoch` and no records (KIP-320); otherwise the
//!   fetch offset is reported to the replica state (it may move the HW) and records are read up
//!   to the log end, not the HW. Follower fetches park on the partition's follower waiters,
//!   which appends wake.
//! - **Fetch from the closest replica (KIP-392)**: a consumer that names its rack (v11+
//!   `rack_id`) is told by the leader which in-sync follower of its rack to read from
//!   ([`crate::replica_selector`]): `preferred_read_replica`, no records, answered at once. A
//!   follower serves v11+ consumer fetches (Kafka's `fetchOnlyFromLeader` is false once a
//!   request carries client metadata) below its own HW, which it learns from its leader's
//!   answers; a fetch offset past its log end is OFFSET_OUT_OF_RANGE and the client goes back
//!   to the leader. Before v11, and on a broker that is neither leader nor follower,
//!   NOT_LEADER_OR_FOLLOWER as before.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::fetch_request::FetchRequest;
use kafka_protocol::messages::fetch_response::{
    EpochEndOffset, FetchResponse, FetchableTopicResponse, LeaderIdAndEpoch, NodeEndpoint,
    PartitionData,
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
use crate::replica_selector::{select_read_replica, FollowerView};
use crate::throttle::ReplicationQuota;
use sluice_meta::ClusterState;
use sluice_types::{BrokerId, LeaderEpoch, Offset};

/// What one partition contributes to a response.
pub(crate) struct PartitionRead {
    pub(crate) error: Option<ResponseError>,
    pub(crate) high_watermark: i64,
    pub(crate) log_start_offset: i64,
    pub(crate) records: Bytes,
    /// KIP-320: the follower's log diverges from this leader's; (epoch, end offset) to
    /// truncate to.
    pub(crate) diverging: Option<(LeaderEpoch, Offset)>,
    /// KIP-392: the consumer should read this partition from that replica (no records).
    pub(crate) preferred_read_replica: Option<BrokerId>,
}

impl PartitionRead {
    fn error(error: ResponseError, high_watermark: i64, log_start_offset: i64) -> Self {
        PartitionRead {
            error: Some(error),
            high_watermark,
            log_start_offset,
            records: Bytes::new(),
            diverging: None,
            preferred_read_replica: None,
        }
    }
}

/// How consumer fetches are routed (KIP-392); the default is the leader-only path (pre-v11).
#[derive(Debug, Default, Clone)]
pub(crate) struct ConsumerRouting {
    /// The request carries client metadata (v11+): a follower may serve it.
    pub(crate) follower_reads: bool,
    /// Per partition, in the order read: the replica the leader chose for this consumer, if
    /// not itself. Empty: none chosen.
    pub(crate) preferred: Vec<Option<BrokerId>>,
}

/// Who is fetching.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fetcher {
    /// A consumer: reads below the HW from the leader.
    Consumer,
    /// A follower replica (its broker id, and its broker epoch from v15, else -1): reads up to
    /// the log end, and its fetch offset is its replication progress.
    Follower {
        replica: BrokerId,
        broker_epoch: i64,
    },
}

impl Fetcher {
    /// Kafka's `FetchRequest.isFromFollower`: a replica id >= 0, in `replica_id` before v15 and
    /// in `replica_state` from v15.
    pub fn of(req: &FetchRequest, version: i16) -> Fetcher {
        let (id, epoch) = if version >= 15 {
            (
                req.replica_state.replica_id.0,
                req.replica_state.replica_epoch,
            )
        } else {
            (req.replica_id.0, -1)
        };
        if id >= 0 {
            Fetcher::Follower {
                replica: BrokerId(id),
                broker_epoch: epoch,
            }
        } else {
            Fetcher::Consumer
        }
    }
}

/// KIP-320 on the leader (Kafka's `Partition.readRecords`): a follower that last fetched
/// `last_fetched_epoch` and now fetches from `fetch_offset` diverges when this leader's answer
/// for that epoch (`leader_answer`: [`sluice_log::Log::end_offset_for_epoch`]) names an older
/// epoch (the leader never had the follower's) or ends below the fetch offset (the follower
/// has records of that epoch the leader does not). The answer is where the follower truncates
/// to. A leader that cannot say (no entry at or below the epoch) answers OFFSET_OUT_OF_RANGE,
/// as Kafka does.
pub fn divergence(
    last_fetched_epoch: LeaderEpoch,
    fetch_offset: Offset,
    leader_answer: Option<(LeaderEpoch, Offset)>,
) -> Result<Option<(LeaderEpoch, Offset)>, ResponseError> {
    match leader_answer {
        None => Err(ResponseError::OffsetOutOfRange),
        Some((epoch, end)) if epoch < last_fetched_epoch || end < fetch_offset => {
            Ok(Some((epoch, end)))
        }
        Some(_) => Ok(None),
    }
}

enum Mode {
    /// Full request and response, no session (pre-v7 clients, or epoch -1).
    Sessionless,
    /// Full request; the response carries a new session id.
    NewSession,
    /// Changes only, against a session taken from the cache.
    Incremental(i32, FetchSession),
}

pub(crate) fn session_partition(
    topic: String,
    topic_id: Uuid,
    partition: i32,
    offset: i64,
    max_bytes: i32,
    current_leader_epoch: i32,
    last_fetched_epoch: i32,
) -> SessionPartition {
    SessionPartition {
        topic,
        topic_id,
        partition,
        fetch_offset: offset,
        max_bytes,
        current_leader_epoch,
        last_fetched_epoch,
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
    if !p.leads_now() {
        return Err(ResponseError::NotLeaderOrFollower);
    }
    Ok(())
}

/// [`check_leader`] for a consumer that may also read from a follower (KIP-392): the same
/// epoch rules against the epoch this replica follows under, and NOT_LEADER_OR_FOLLOWER only
/// when it is neither.
pub fn check_leader_or_follower(
    p: &Partition,
    current_leader_epoch: i32,
) -> Result<(), ResponseError> {
    match check_leader(p, current_leader_epoch) {
        Err(ResponseError::NotLeaderOrFollower) if p.is_follower() => Ok(()),
        other => other,
    }
}

/// KIP-392 on the leader: the follower `p`'s consumer in `client_rack`, fetching from
/// `fetch_offset`, should read from, with racks and liveness from `image`. `None`: read here
/// (this broker does not lead, no rack, the leader's rack, no suitable follower).
pub(crate) fn preferred_read_replica(
    image: &ClusterState,
    p: &Partition,
    client_rack: &str,
    fetch_offset: i64,
) -> Option<BrokerId> {
    if client_rack.is_empty() || Offset(fetch_offset) < p.log.log_start_offset() {
        return None;
    }
    let view = p.follower_progress()?;
    let local = p.local_broker();
    let leader_rack = image.brokers.get(&local).and_then(|b| b.rack.as_deref());
    let views: Vec<FollowerView> = view
        .followers
        .into_iter()
        .filter(|(b, _)| *b != local)
        .map(|(b, progress)| {
            let info = image.brokers.get(&b);
            FollowerView {
                broker: b,
                rack: info.and_then(|i| i.rack.clone()),
                alive: info.is_some_and(|i| !i.fenced),
                in_isr: view.isr.contains(&b),
                log_end: progress.end,
                last_caught_up_ms: progress.last_caught_up_ms,
            }
        })
        .collect();
    select_read_replica(client_rack, leader_rack, &views, Offset(fetch_offset))
}

/// Reads every partition once, sharing the response byte budget. `report`: a follower's
/// fetch offsets are recorded (once per request, on its first read). `routing`: whether a
/// follower may serve consumers, and the partitions whose consumer the leader sends elsewhere.
/// Blocking file reads: runs on the blocking pool.
pub(crate) fn read_all(
    parts: &[(SessionPartition, Option<Arc<Partition>>)],
    max_bytes: usize,
    by_id: bool,
    fetcher: Fetcher,
    report: bool,
    routing: &ConsumerRouting,
    throttle: Option<&ReplicationQuota>,
) -> Vec<PartitionRead> {
    let mut used = 0usize;
    parts
        .iter()
        .enumerate()
        .map(|(i, (sp, partition))| {
            let Some(p) = partition else {
                let error = if by_id && sp.topic.is_empty() {
                    ResponseError::UnknownTopicId
                } else {
                    ResponseError::UnknownTopicOrPartition
                };
                return PartitionRead::error(error, -1, -1);
            };
            let allowed = match fetcher {
                Fetcher::Consumer if routing.follower_reads => {
                    check_leader_or_follower(p, sp.current_leader_epoch)
                }
                _ => check_leader(p, sp.current_leader_epoch),
            };
            if let Err(error) = allowed {
                return PartitionRead::error(error, -1, -1);
            }
            let high_watermark = p.high_watermark();
            let log_start_offset = p.log.log_start_offset();
            if let Some(Some(preferred)) = routing.preferred.get(i) {
                // Kafka skips the read: the consumer goes to that replica.
                return PartitionRead {
                    error: None,
                    high_watermark: high_watermark.get(),
                    log_start_offset: log_start_offset.get(),
                    records: Bytes::new(),
                    diverging: None,
                    preferred_read_replica: Some(*preferred),
                };
            }
            // A reassignment's new replica, while the leader's throttle is used up, gets
            // nothing this time (its fetch offset above still counts).
            let mut throttled = None;
            let max_offset = match fetcher {
                // On a follower too: its HW is its leader's capped by its own end, so a consumer
                // never reads what is not committed or not held here. A fetch offset past the
                // log end is OFFSET_OUT_OF_RANGE (the read below).
                Fetcher::Consumer => high_watermark,
                Fetcher::Follower {
                    replica,
                    broker_epoch,
                } => {
                    let hw = high_watermark.get();
                    if !p.has_replica(replica) {
                        return PartitionRead::error(
                            ResponseError::NotLeaderOrFollower,
                            hw,
                            log_start_offset.get(),
                        );
                    }
                    let fetch_offset = Offset(sp.fetch_offset);
                    if fetch_offset < log_start_offset {
                        return PartitionRead::error(
                            ResponseError::OffsetOutOfRange,
                            hw,
                            log_start_offset.get(),
                        );
                    }
                    if sp.last_fetched_epoch >= 0 {
                        let last = LeaderEpoch(sp.last_fetched_epoch);
                        match divergence(last, fetch_offset, p.log.end_offset_for_epoch(last)) {
                            Err(e) => {
                                return PartitionRead::error(e, hw, log_start_offset.get());
                            }
                            Ok(Some(diverging)) => {
                                return PartitionRead {
                                    error: None,
                                    high_watermark: hw,
                                    log_start_offset: log_start_offset.get(),
                                    records: Bytes::new(),
                                    diverging: Some(diverging),
                                    preferred_read_replica: None,
                                };
                            }
                            Ok(None) => {}
                        }
                    }
                    let log_end = p.log.log_end_offset();
                    if report && fetch_offset <= log_end {
                        if let Err(e) = p.record_follower_fetch(replica, broker_epoch, fetch_offset)
                        {
                            tracing::debug!(topic = %sp.topic, partition = sp.partition,
                                follower = %replica, error = %e, "follower fetch not recorded");
                            return PartitionRead::error(
                                ResponseError::NotLeaderOrFollower,
                                hw,
                                log_start_offset.get(),
                            );
                        }
                    }
                    throttled = throttle.filter(|_| p.is_throttled(replica));
                    if throttled.is_some_and(ReplicationQuota::exceeded) {
                        return PartitionRead {
                            error: None,
                            high_watermark: p.high_watermark().get(),
                            log_start_offset: log_start_offset.get(),
                            records: Bytes::new(),
                            diverging: None,
                            preferred_read_replica: None,
                        };
                    }
                    log_end
                }
            };
            // A follower's fetch may have moved the HW: report the latest.
            let high_watermark = p.high_watermark().get();
            let limit = (sp.max_bytes.max(0) as usize).min(max_bytes.saturating_sub(used));
            let min_one = used == 0;
            let outcome = if limit == 0 && !min_one {
                Ok(Bytes::new())
            } else {
                p.log
                    .read(Offset(sp.fetch_offset), limit, max_offset, min_one)
                    .map(|r| r.data)
                    .map_err(ApiError::from_log)
            };
            let log_start_offset = p.log.log_start_offset().get();
            match outcome {
                Ok(data) => {
                    used += data.len();
                    if let Some(q) = throttled {
                        q.record(data.len());
                    }
                    PartitionRead {
                        error: None,
                        high_watermark,
                        log_start_offset,
                        records: data,
                        diverging: None,
                        preferred_read_replica: None,
                    }
                }
                Err(e) => PartitionRead::error(e.code, high_watermark, log_start_offset),
            }
        })
        .collect()
}

/// Fetch for consumers and followers: reads the hosted partitions (`replicas`), names topics
/// through the `image`, keeps KIP-227 `sessions`, caps answers at `fetch_max_bytes`, and stops
/// waiting when `stopping` turns true.
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
                if version >= 12 {
                    p.last_fetched_epoch
                } else {
                    -1
                },
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

    let fetcher = Fetcher::of(&req, version);
    let routing = Arc::new(ConsumerRouting {
        follower_reads: fetcher == Fetcher::Consumer && version >= 11,
        preferred: if fetcher == Fetcher::Consumer && version >= 11 && !req.rack_id.is_empty() {
            resolved
                .iter()
                .map(|(sp, p)| {
                    let p = p.as_ref()?;
                    check_leader(p, sp.current_leader_epoch).ok()?;
                    preferred_read_replica(&image, p, req.rack_id.as_str(), sp.fetch_offset)
                })
                .collect()
        } else {
            Vec::new()
        },
    });
    if routing.preferred.iter().any(Option::is_some) {
        tracing::debug!(rack = %req.rack_id.as_str(), preferred = ?routing.preferred,
            "consumer sent to a replica in its rack");
    }
    let mut first = true;
    let reads = loop {
        // Register before reading so a HW advance (a consumer) or an append (a follower) in
        // between still wakes us.
        let waiter = Arc::new(Notify::new());
        for (_, p) in resolved.iter() {
            if let Some(p) = p {
                match fetcher {
                    Fetcher::Consumer => p.waiters.register(&waiter),
                    Fetcher::Follower { .. } => p.follower_waiters.register(&waiter),
                }
            }
        }
        let snapshot = resolved.clone();
        let routing = routing.clone();
        let report = std::mem::take(&mut first);
        let throttles = replicas.throttles().clone();
        let reads = match tokio::task::spawn_blocking(move || {
            read_all(
                &snapshot,
                max_bytes,
                by_id,
                fetcher,
                report,
                &routing,
                Some(&throttles.leader),
            )
        })
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
        // Kafka answers at once on an error, a divergence or a preferred read replica.
        let any_error = reads.iter().any(|r| {
            r.error.is_some() || r.diverging.is_some() || r.preferred_read_replica.is_some()
        });
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
    let mut hinted_leaders = std::collections::BTreeSet::new();
    let mut sent = Vec::with_capacity(reads.len());
    for ((sp, _), read) in resolved.iter().zip(reads) {
        let changed = !read.records.is_empty()
            || read.error.is_some()
            || read.diverging.is_some()
            || read.preferred_read_replica.is_some()
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
        let (error, leader_hint) = route_hint(&image, &sp.topic, sp.partition, read.error);
        if let Some((leader, _)) = leader_hint.filter(|_| version >= 12) {
            hinted_leaders.insert(leader);
        }
        let mut data = PartitionData::default()
            .with_partition_index(sp.partition)
            .with_error_code(error.map_or(0, |e| e.code()))
            .with_high_watermark(read.high_watermark)
            .with_last_stable_offset(read.high_watermark)
            .with_log_start_offset(read.log_start_offset)
            .with_records(Some(read.records));
        if let Some((leader, epoch)) = leader_hint.filter(|_| version >= 12) {
            data = data.with_current_leader(
                LeaderIdAndEpoch::default()
                    .with_leader_id(kafka_protocol::messages::BrokerId(leader.get()))
                    .with_leader_epoch(epoch),
            );
        }
        if let Some(preferred) = read.preferred_read_replica.filter(|_| version >= 11) {
            data = data
                .with_preferred_read_replica(kafka_protocol::messages::BrokerId(preferred.get()));
        }
        if let Some((epoch, end_offset)) = read.diverging {
            data = data.with_diverging_epoch(
                EpochEndOffset::default()
                    .with_epoch(epoch.get())
                    .with_end_offset(end_offset.get()),
            );
        }
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
    let node_endpoints = if version >= 16 {
        hinted_leaders
            .into_iter()
            .filter_map(|id| image.brokers.get(&id).filter(|b| !b.fenced))
            .map(|b| {
                NodeEndpoint::default()
                    .with_node_id(kafka_protocol::messages::BrokerId(b.broker_id.get()))
                    .with_host(super::str_bytes(&b.host))
                    .with_port(b.port)
                    .with_rack(b.rack.as_deref().map(super::str_bytes))
            })
            .collect()
    } else {
        Vec::new()
    };
    FetchResponse::default()
        .with_session_id(session_id)
        .with_responses(topics)
        .with_node_endpoints(node_endpoints)
}

/// Routing help for a fetcher with stale metadata: a partition that exists but is not hosted
/// here is NOT_LEADER_OR_FOLLOWER (not UNKNOWN_TOPIC_OR_PARTITION, as Kafka's
/// `getPartitionOrError`), and one answered NOT_LEADER_OR_FOLLOWER or FENCED_LEADER_EPOCH
/// names its current leader and epoch (KIP-951). Returns the error to send and the hint.
fn route_hint(
    image: &ClusterState,
    topic: &str,
    partition: i32,
    error: Option<ResponseError>,
) -> (Option<ResponseError>, Option<(sluice_types::BrokerId, i32)>) {
    let Some(p) = image
        .topic(topic)
        .and_then(|t| t.partition(sluice_types::PartitionId(partition)))
    else {
        return (error, None);
    };
    let error = match error {
        Some(ResponseError::UnknownTopicOrPartition) => Some(ResponseError::NotLeaderOrFollower),
        other => other,
    };
    let moved = matches!(
        error,
        Some(ResponseError::NotLeaderOrFollower | ResponseError::FencedLeaderEpoch)
    );
    let hint = (moved && p.has_leader()).then(|| (p.leader, p.leader_epoch.get()));
    (error, hint)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(epoch: i32, end: i64) -> Option<(LeaderEpoch, Offset)> {
        Some((LeaderEpoch(epoch), Offset(end)))
    }

    #[test]
    fn divergence_is_kafkas_rule() {
        // The leader has the follower's epoch and it ends at or past the fetch offset.
        assert_eq!(divergence(LeaderEpoch(3), Offset(10), at(3, 10)), Ok(None));
        assert_eq!(divergence(LeaderEpoch(3), Offset(10), at(3, 15)), Ok(None));
        // The epoch ends earlier here: the follower has records of it the leader lacks.
        assert_eq!(
            divergence(LeaderEpoch(3), Offset(10), at(3, 7)),
            Ok(at(3, 7))
        );
        // The leader never had the follower's epoch: the largest older one it has.
        assert_eq!(
            divergence(LeaderEpoch(4), Offset(10), at(2, 12)),
            Ok(at(2, 12))
        );
        // The leader cannot say.
        assert_eq!(
            divergence(LeaderEpoch(4), Offset(10), None),
            Err(ResponseError::OffsetOutOfRange)
        );
    }

    #[test]
    fn a_replica_id_makes_a_follower_fetch() {
        let consumer =
            FetchRequest::default().with_replica_id(kafka_protocol::messages::BrokerId(-1));
        assert_eq!(Fetcher::of(&consumer, 12), Fetcher::Consumer);
        let old = FetchRequest::default().with_replica_id(kafka_protocol::messages::BrokerId(2));
        assert_eq!(
            Fetcher::of(&old, 14),
            Fetcher::Follower {
                replica: BrokerId(2),
                broker_epoch: -1
            }
        );
        let new = FetchRequest::default().with_replica_state(
            kafka_protocol::messages::fetch_request::ReplicaState::default()
                .with_replica_id(kafka_protocol::messages::BrokerId(3))
                .with_replica_epoch(77),
        );
        assert_eq!(
            Fetcher::of(&new, 15),
            Fetcher::Follower {
                replica: BrokerId(3),
                broker_epoch: 77
            }
        );
        assert_eq!(Fetcher::of(&FetchRequest::default(), 17), Fetcher::Consumer);
    }
}
