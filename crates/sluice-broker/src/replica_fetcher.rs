//! The follower side of replication (Kafka's `ReplicaFetcherManager` and
//! `ReplicaFetcherThread`): every partition this broker hosts as a follower of a live leader is
//! fetched from that leader, one task per leader broker fetching all its partitions in one
//! Fetch request.
//!
//! # One round of a leader's task
//! 1. For each followed partition not backing off: `fetch_offset` = local log end,
//!    `last_fetched_epoch` = the epoch of the last batch in the local log, and the leader epoch
//!    the follower believes current ([`build_request`]). Sessionless (session 0, epoch -1),
//!    Fetch v15: replica id and broker epoch in `replica_state`, topics by id.
//! 2. Send it to the leader's address from the metadata image and wait for the answer (the
//!    leader parks it up to `replica.fetch.wait.max.ms`).
//! 3. On the blocking pool, per partition ([`decide`]): records are appended as they are (the
//!    leader's offsets and epochs), then in fsync mode flushed, so the next fetch offset, which
//!    the leader counts toward the HW, only covers data a crash cannot take back; the
//!    follower's HW becomes min(leader HW, local end). A `diverging_epoch` truncates the log
//!    ([`truncation_offset`], KIP-320/KIP-279) and the next round fetches again; a leader whose
//!    log start is past the local end restarts the log there. Errors (not leader, fenced or
//!    unknown epoch, ...) make that partition back off for `replica.fetch.backoff.ms` while the
//!    metadata catches up; a connection failure or a malformed answer closes the connection
//!    and backs the whole task off.
//!
//! The publisher tells the manager which partitions follow whom ([`ReplicaFetchers::follow`],
//! [`ReplicaFetchers::unfollow`]); a partition that starts leading, loses its leader or goes
//! leaves its fetcher at once, and one whose leader changes moves to the new leader's. Writes
//! go through [`Partition`]'s follower methods, which drop anything fetched under a leader epoch
//! that is no longer the partition's.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic, ReplicaState};
use kafka_protocol::messages::fetch_response::PartitionData;
use kafka_protocol::messages::{FetchRequest, FetchResponse, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};
use kafka_protocol::ResponseError;
use sluice_log::LogError;
use sluice_types::{BrokerId, LeaderEpoch, Offset, TopicPartition};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use uuid::Uuid;

use crate::blocking::off_reactor;
use crate::config::ReplicaFetchSettings;
use crate::image::MetadataImage;
use crate::partition::Partition;
use crate::peer_routes::PeerRoutes;
use crate::throttle::ReplicationThrottles;

/// The Fetch version followers send: the first with the replica's broker epoch
/// (`replica_state`); topics by id.
pub const FETCH_VERSION: i16 = 15;

/// How long a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Kafka's `replica.socket.timeout.ms`: how long an answer may take beyond the leader's wait.
const SOCKET_TIMEOUT: Duration = Duration::from_secs(30);

/// Bytes an answer may carry beyond `replica.fetch.response.max.bytes`: the first batch comes
/// whole even when larger (KIP-74), up to the leader's `message.max.bytes`.
const RESPONSE_SLACK: usize = 64 << 20;

/// What one follower fetch asks for one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchTarget {
    pub topic_id: Uuid,
    pub partition: i32,
    /// The leader epoch this follower follows under; the leader refuses a stale one.
    pub current_leader_epoch: LeaderEpoch,
    /// The local log end: everything before it is held (and durable in fsync mode).
    pub fetch_offset: Offset,
    /// The epoch of the last batch in the local log; `None` when the log is empty.
    pub last_fetched_epoch: Option<LeaderEpoch>,
    pub log_start_offset: Offset,
    /// A smaller per-partition limit than `replica.fetch.max.bytes`: a throttled partition
    /// asks for a slice of its quota at a time (the first batch still comes whole).
    pub max_bytes: Option<i32>,
}

/// The Fetch request for `targets`: sessionless, from replica `local` (incarnation
/// `broker_epoch`), bounded by `settings`.
pub fn build_request(
    local: BrokerId,
    broker_epoch: i64,
    settings: &ReplicaFetchSettings,
    targets: &[FetchTarget],
) -> FetchRequest {
    let mut topics: Vec<FetchTopic> = Vec::new();
    for t in targets {
        let partition = FetchPartition::default()
            .with_partition(t.partition)
            .with_current_leader_epoch(t.current_leader_epoch.get())
            .with_fetch_offset(t.fetch_offset.get())
            .with_last_fetched_epoch(t.last_fetched_epoch.map_or(-1, |e| e.get()))
            .with_log_start_offset(t.log_start_offset.get())
            .with_partition_max_bytes(
                t.max_bytes
                    .map_or(settings.max_bytes, |m| m.min(settings.max_bytes)),
            );
        match topics.iter_mut().find(|x| x.topic_id == t.topic_id) {
            Some(topic) => topic.partitions.push(partition),
            None => topics.push(
                FetchTopic::default()
                    .with_topic_id(t.topic_id)
                    .with_partitions(vec![partition]),
            ),
        }
    }
    FetchRequest::default()
        .with_replica_id(kafka_protocol::messages::BrokerId(-1))
        .with_replica_state(
            ReplicaState::default()
                .with_replica_id(kafka_protocol::messages::BrokerId(local.get()))
                .with_replica_epoch(broker_epoch),
        )
        .with_max_wait_ms(settings.wait_max.as_millis().min(i32::MAX as u128) as i32)
        .with_min_bytes(settings.min_bytes)
        .with_max_bytes(settings.response_max_bytes)
        .with_isolation_level(0)
        .with_session_id(0)
        .with_session_epoch(-1)
        .with_topics(topics)
}

/// What to do with one partition's part of the leader's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Append these batches (possibly none), then take the leader's HW and log start.
    Append {
        records: Bytes,
        leader_hw: Offset,
        leader_log_start: Offset,
    },
    /// The local log diverges (KIP-320): the leader's answer for the last fetched epoch.
    Diverged {
        epoch: LeaderEpoch,
        end_offset: Offset,
    },
    /// The leader's log starts after the local end: empty the log and start it there.
    RestartAt(Offset),
    /// Out of range, not explained by the leader's log start (the local log runs past what the
    /// leader has without epochs to tell where): cut back to the leader's HW and fetch again.
    TruncateTo(Offset),
    /// Back off and fetch again with the latest metadata.
    Retry(i16),
}

/// Decides what the leader's answer for `target` asks of the follower.
pub fn decide(target: &FetchTarget, data: &PartitionData) -> Action {
    if data.error_code == ResponseError::OffsetOutOfRange.code() {
        if data.log_start_offset > target.fetch_offset.get() {
            return Action::RestartAt(Offset(data.log_start_offset));
        }
        if data.high_watermark >= 0 && data.high_watermark < target.fetch_offset.get() {
            return Action::TruncateTo(Offset(data.high_watermark));
        }
        return Action::Retry(data.error_code);
    }
    if data.error_code != 0 {
        return Action::Retry(data.error_code);
    }
    let d = &data.diverging_epoch;
    if d.epoch >= 0 && d.end_offset >= 0 {
        return Action::Diverged {
            epoch: LeaderEpoch(d.epoch),
            end_offset: Offset(d.end_offset),
        };
    }
    Action::Append {
        records: data.records.clone().unwrap_or_default(),
        leader_hw: Offset(data.high_watermark),
        leader_log_start: Offset(data.log_start_offset),
    }
}

/// Where a follower truncates on a diverging epoch (Kafka's `getOffsetTruncationState`): the
/// leader's `(epoch, end)` for the follower's last epoch, and the follower's own
/// `end_offset_for_epoch(epoch)` (`local`):
/// - the follower knows that epoch: the lesser of both ends (the common prefix);
/// - it knows only an older one: the end of that older epoch (KIP-279; the next fetch
///   compares again from there);
/// - it knows none at or below it: the leader's end.
///
/// Never past the local end. If that cuts nothing (the epochs give no way forward), the whole
/// log goes (`log_start`): the follower then copies the leader from its log start.
pub fn truncation_offset(
    leader: (LeaderEpoch, Offset),
    local: Option<(LeaderEpoch, Offset)>,
    local_end: Offset,
    log_start: Offset,
) -> Offset {
    let (epoch, end) = leader;
    let to = match local {
        Some((e, local_epoch_end)) if e == epoch => local_epoch_end.min(end),
        Some((_, local_epoch_end)) => local_epoch_end,
        None => end,
    }
    .min(local_end);
    if to >= local_end {
        log_start
    } else {
        to
    }
}

/// Why a fetch round trip failed; the connection is closed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("malformed answer: {0}")]
    Malformed(String),
    #[error("leader {0} has no known address")]
    NoAddress(BrokerId),
}

/// One connection to a leader.
struct LeaderConn {
    stream: TcpStream,
    next_correlation_id: i32,
}

impl LeaderConn {
    async fn connect(addr: &str) -> Result<LeaderConn, FetchError> {
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| FetchError::Timeout(CONNECT_TIMEOUT))??;
        stream.set_nodelay(true)?;
        Ok(LeaderConn {
            stream,
            next_correlation_id: 0,
        })
    }

    /// Sends `req` and reads its answer, whose size is checked against `max_size` before
    /// anything is allocated for it.
    async fn fetch(
        &mut self,
        req: &FetchRequest,
        client_id: &StrBytes,
        max_size: usize,
        timeout: Duration,
    ) -> Result<FetchResponse, FetchError> {
        let correlation_id = self.next_correlation_id;
        self.next_correlation_id = self.next_correlation_id.wrapping_add(1);
        let header = RequestHeader::default()
            .with_request_api_key(1)
            .with_request_api_version(FETCH_VERSION)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(client_id.clone()));
        let mut buf = BytesMut::with_capacity(256);
        buf.extend_from_slice(&[0; 4]);
        header
            .encode(&mut buf, FetchRequest::header_version(FETCH_VERSION))
            .and_then(|()| req.encode(&mut buf, FETCH_VERSION))
            .map_err(|e| FetchError::Malformed(format!("encoding the request: {e}")))?;
        let size = (buf.len() - 4) as u32;
        buf[..4].copy_from_slice(&size.to_be_bytes());
        let io = async {
            self.stream.write_all(&buf).await?;
            let size = self.stream.read_u32().await? as usize;
            if size > max_size {
                return Err(FetchError::Malformed(format!(
                    "answer of {size} bytes, more than the {max_size} allowed"
                )));
            }
            let mut body = BytesMut::zeroed(size);
            self.stream.read_exact(&mut body).await?;
            Ok(body.freeze())
        };
        let mut body = tokio::time::timeout(timeout, io)
            .await
            .map_err(|_| FetchError::Timeout(timeout))??;
        parse_response(&mut body, correlation_id)
    }
}

/// Decodes a Fetch answer (header and body) of [`FETCH_VERSION`]; record sets stay slices of
/// `body`.
fn parse_response(body: &mut Bytes, correlation_id: i32) -> Result<FetchResponse, FetchError> {
    let header = ResponseHeader::decode(body, FetchResponse::header_version(FETCH_VERSION))
        .map_err(|e| FetchError::Malformed(format!("header: {e}")))?;
    if header.correlation_id != correlation_id {
        return Err(FetchError::Malformed(format!(
            "correlation id {} answers {correlation_id}",
            header.correlation_id
        )));
    }
    let resp = FetchResponse::decode(body, FETCH_VERSION)
        .map_err(|e| FetchError::Malformed(format!("body: {e}")))?;
    if body.has_remaining() {
        return Err(FetchError::Malformed(format!(
            "{} bytes after the body",
            body.remaining()
        )));
    }
    Ok(resp)
}

/// A partition as one leader's fetcher follows it.
#[derive(Clone)]
struct Followed {
    partition: Arc<Partition>,
    leader_epoch: LeaderEpoch,
    /// Not fetched before this instant (it failed; the metadata may not have caught up).
    retry_at: Option<Instant>,
}

/// One leader broker's fetcher: the partitions it follows there and its task.
struct LeaderFetcher {
    leader: BrokerId,
    /// The leader's address as of the latest `follow` (the image is preferred when it knows
    /// the broker: the publisher applies partitions before it swaps the image).
    addr: Mutex<Option<String>>,
    partitions: Mutex<BTreeMap<TopicPartition, Followed>>,
    /// Wakes the task when partitions are added (or it is stopped).
    changed: Notify,
    stop: AtomicBool,
}

/// What every leader fetcher shares.
struct Shared {
    local: BrokerId,
    image: Arc<MetadataImage>,
    settings: ReplicaFetchSettings,
    /// `producer.id.expiration.ms`, for rebuilding producer state after a truncation.
    producer_expiration_ms: i64,
    /// Dial overrides (`--peer-route`) for leaders' addresses.
    routes: Arc<PeerRoutes>,
    client_id: StrBytes,
    /// The follower throttle: partitions a reassignment is adding here wait while it is used
    /// up.
    throttles: Arc<ReplicationThrottles>,
}

/// Every follower fetcher of this broker, by leader.
pub struct ReplicaFetchers {
    shared: Arc<Shared>,
    runtime: tokio::runtime::Handle,
    state: Mutex<Fetchers>,
    /// Set by [`ReplicaFetchers::shutdown`]: a metadata change applied after it starts nothing.
    closed: AtomicBool,
}

#[derive(Default)]
struct Fetchers {
    by_leader: HashMap<BrokerId, (Arc<LeaderFetcher>, JoinHandle<()>)>,
    leader_of: HashMap<TopicPartition, BrokerId>,
}

impl ReplicaFetchers {
    /// Fetchers for broker `local`, spawning their tasks on `runtime`; leaders' addresses and
    /// this broker's epoch come from `image`.
    pub fn new(
        local: BrokerId,
        image: Arc<MetadataImage>,
        settings: ReplicaFetchSettings,
        producer_expiration_ms: i64,
        routes: Arc<PeerRoutes>,
        throttles: Arc<ReplicationThrottles>,
        runtime: tokio::runtime::Handle,
    ) -> ReplicaFetchers {
        ReplicaFetchers {
            shared: Arc::new(Shared {
                local,
                image,
                settings,
                producer_expiration_ms,
                routes,
                throttles,
                client_id: StrBytes::from_string(format!("sluice-replica-fetcher-{local}")),
            }),
            runtime,
            state: Mutex::new(Fetchers::default()),
            closed: AtomicBool::new(false),
        }
    }

    /// Fetches `tp` from `leader` (at `leader_addr`, host:port) under `leader_epoch`, moving
    /// it from any other leader's fetcher. Called by the publisher for every follower change.
    pub fn follow(
        &self,
        tp: &TopicPartition,
        partition: Arc<Partition>,
        leader: BrokerId,
        leader_addr: Option<String>,
        leader_epoch: LeaderEpoch,
    ) {
        let mut st = self.state.lock().expect("fetchers lock");
        if self.closed.load(Ordering::SeqCst) {
            return;
        }
        if let Some(old) = st.leader_of.get(tp).copied() {
            if old != leader {
                Self::detach(&mut st, tp, old);
            }
        }
        let fetcher = match st.by_leader.get(&leader) {
            Some((f, _)) => f.clone(),
            None => {
                let f = Arc::new(LeaderFetcher {
                    leader,
                    addr: Mutex::new(None),
                    partitions: Mutex::new(BTreeMap::new()),
                    changed: Notify::new(),
                    stop: AtomicBool::new(false),
                });
                let task = self.runtime.spawn(run(f.clone(), self.shared.clone()));
                st.by_leader.insert(leader, (f.clone(), task));
                f
            }
        };
        if leader_addr.is_some() {
            *fetcher.addr.lock().expect("addr lock") = leader_addr;
        }
        fetcher.partitions.lock().expect("partitions lock").insert(
            tp.clone(),
            Followed {
                partition,
                leader_epoch,
                retry_at: None,
            },
        );
        st.leader_of.insert(tp.clone(), leader);
        fetcher.changed.notify_one();
        tracing::debug!(partition = %tp, leader = %leader, leader_epoch = %leader_epoch, "following");
    }

    /// Stops fetching `tp` (it leads now, has no leader, or is no longer hosted here).
    pub fn unfollow(&self, tp: &TopicPartition) {
        let mut st = self.state.lock().expect("fetchers lock");
        if let Some(leader) = st.leader_of.get(tp).copied() {
            Self::detach(&mut st, tp, leader);
        }
    }

    /// Removes `tp` from `leader`'s fetcher, stopping the fetcher when it has nothing left.
    fn detach(st: &mut Fetchers, tp: &TopicPartition, leader: BrokerId) {
        st.leader_of.remove(tp);
        let Some((f, _)) = st.by_leader.get(&leader) else {
            return;
        };
        let empty = {
            let mut parts = f.partitions.lock().expect("partitions lock");
            parts.remove(tp);
            parts.is_empty()
        };
        if empty {
            if let Some((f, _task)) = st.by_leader.remove(&leader) {
                f.stop.store(true, Ordering::SeqCst);
                f.changed.notify_one();
            }
        }
    }

    /// The partitions followed, with their leaders (for tests and introspection).
    pub fn followed(&self) -> BTreeMap<TopicPartition, BrokerId> {
        let st = self.state.lock().expect("fetchers lock");
        st.leader_of
            .iter()
            .map(|(tp, l)| (tp.clone(), *l))
            .collect()
    }

    /// Stops every fetcher and waits (bounded) for their tasks to end, so no follower write
    /// lands after the logs are closed.
    pub async fn shutdown(&self) {
        let tasks: Vec<JoinHandle<()>> = {
            let mut st = self.state.lock().expect("fetchers lock");
            self.closed.store(true, Ordering::SeqCst);
            st.leader_of.clear();
            st.by_leader
                .drain()
                .map(|(_, (f, task))| {
                    f.stop.store(true, Ordering::SeqCst);
                    f.changed.notify_one();
                    task
                })
                .collect()
        };
        for task in tasks {
            let abort = task.abort_handle();
            if tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
    }
}

/// A leader fetcher's task: rounds of fetch and apply until stopped.
async fn run(f: Arc<LeaderFetcher>, shared: Arc<Shared>) {
    let backoff = shared.settings.backoff;
    let mut conn: Option<LeaderConn> = None;
    let mut failures = 0u32;
    while !f.stop.load(Ordering::SeqCst) {
        let now = Instant::now();
        // While the follower throttle is used up, partitions a reassignment is adding here
        // wait; the others are fetched as ever.
        let held = shared.throttles.follower.exceeded();
        let is_held = |p: &Followed| held && p.partition.is_throttled(shared.local);
        let ready: Vec<(TopicPartition, Followed)> = {
            let parts = f.partitions.lock().expect("partitions lock");
            parts
                .iter()
                .filter(|(_, p)| p.retry_at.is_none_or(|t| t <= now) && !is_held(p))
                .map(|(tp, p)| (tp.clone(), p.clone()))
                .collect()
        };
        if ready.is_empty() {
            let (next_retry, any_held) = {
                let parts = f.partitions.lock().expect("partitions lock");
                (
                    parts.values().filter_map(|p| p.retry_at).min(),
                    parts.values().any(is_held),
                )
            };
            let throttled_until = any_held.then(|| now + shared.throttles.follower.delay());
            let until = next_retry
                .into_iter()
                .chain(throttled_until)
                .min()
                .unwrap_or(now + Duration::from_secs(3600));
            tokio::select! {
                _ = f.changed.notified() => {}
                _ = tokio::time::sleep_until(until) => {}
            }
            continue;
        }
        match round(&f, &shared, &mut conn, ready).await {
            Ok(()) => failures = 0,
            Err(e) => {
                conn = None;
                failures += 1;
                // Once per failure streak at warn, then quietly: a dead leader is normal until
                // the controller fences it.
                if failures == 1 {
                    tracing::warn!(leader = %f.leader, error = %e, "fetch from leader failed; backing off");
                } else {
                    tracing::debug!(leader = %f.leader, error = %e, failures, "fetch from leader failed");
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = wait_stopped(&f) => {}
                }
            }
        }
    }
    tracing::debug!(leader = %f.leader, "fetcher stopped");
}

async fn wait_stopped(f: &LeaderFetcher) {
    while !f.stop.load(Ordering::SeqCst) {
        f.changed.notified().await;
    }
}

/// The leader's address: the current image's, else the one `follow` was given.
fn leader_addr(f: &LeaderFetcher, shared: &Shared) -> Option<String> {
    let image = shared.image.load();
    image
        .brokers
        .get(&f.leader)
        .map(|b| format!("{}:{}", b.host, b.port))
        .or_else(|| f.addr.lock().expect("addr lock").clone())
}

/// One fetch from the leader for the `ready` partitions, and its answer applied.
async fn round(
    f: &Arc<LeaderFetcher>,
    shared: &Arc<Shared>,
    conn: &mut Option<LeaderConn>,
    ready: Vec<(TopicPartition, Followed)>,
) -> Result<(), FetchError> {
    // A throttled partition asks for an eighth of a second's quota at a time, so one answer
    // does not overdraw the throttle by many seconds.
    let throttled_slice = shared
        .throttles
        .follower
        .rate()
        .map(|r| (r / 8).clamp(16 << 10, i32::MAX as u64) as i32);
    let shared_ = shared.clone();
    // Log ends and epochs take the log's locks: read them off the reactor.
    let targets: Vec<(TopicPartition, Followed, FetchTarget)> = off_reactor(move || {
        let shared = shared_;
        ready
            .into_iter()
            .map(|(tp, p)| {
                let log = &p.partition.log;
                let end = log.log_end_offset();
                let start = log.log_start_offset();
                // The epoch of the last batch: an epoch assigned at the log end with no batch
                // under it (this replica led briefly) is not "fetched".
                let last_fetched_epoch = (end > start)
                    .then(|| log.epoch_for_offset(Offset(end.get() - 1)))
                    .flatten();
                let target = FetchTarget {
                    topic_id: p.partition.topic_id,
                    partition: p.partition.index,
                    current_leader_epoch: p.leader_epoch,
                    fetch_offset: end,
                    last_fetched_epoch,
                    log_start_offset: start,
                    max_bytes: throttled_slice.filter(|_| p.partition.is_throttled(shared.local)),
                };
                (tp, p, target)
            })
            .collect()
    })
    .await;
    let broker_epoch = shared
        .image
        .load()
        .brokers
        .get(&shared.local)
        .map_or(-1, |b| b.epoch);
    let only: Vec<FetchTarget> = targets.iter().map(|(_, _, t)| t.clone()).collect();
    let req = build_request(shared.local, broker_epoch, &shared.settings, &only);
    if conn.is_none() {
        let addr = leader_addr(f, shared).ok_or(FetchError::NoAddress(f.leader))?;
        *conn = Some(LeaderConn::connect(&shared.routes.resolve(&addr)).await?);
        tracing::debug!(leader = %f.leader, addr, "connected to leader");
    }
    let c = conn.as_mut().expect("connected above");
    let max_size =
        (shared.settings.response_max_bytes.max(0) as usize).saturating_add(RESPONSE_SLACK);
    let timeout = shared.settings.wait_max + SOCKET_TIMEOUT;
    let resp = c.fetch(&req, &shared.client_id, max_size, timeout).await?;
    if resp.error_code != 0 {
        return Err(FetchError::Malformed(format!(
            "top-level error {}",
            resp.error_code
        )));
    }
    let (f_, shared_) = (f.clone(), shared.clone());
    let retry = off_reactor(move || apply_response(&f_, &shared_, targets, resp)).await?;
    if !retry.is_empty() {
        let at = Instant::now() + shared.settings.backoff;
        let mut parts = f.partitions.lock().expect("partitions lock");
        for (tp, epoch) in retry {
            if let Some(p) = parts.get_mut(&tp) {
                // Only if it was not re-followed meanwhile (a new epoch fetches at once).
                if p.leader_epoch == epoch {
                    p.retry_at = Some(at);
                }
            }
        }
    }
    Ok(())
}

/// Applies the leader's answer; returns the partitions that back off (with the epoch they
/// were fetched under). A malformed record set fails the whole round (the connection closes).
/// Blocking.
fn apply_response(
    f: &LeaderFetcher,
    shared: &Shared,
    targets: Vec<(TopicPartition, Followed, FetchTarget)>,
    resp: FetchResponse,
) -> Result<Vec<(TopicPartition, LeaderEpoch)>, FetchError> {
    let mut retry = Vec::new();
    let mut answered = vec![false; targets.len()];
    // A fetch may carry thousands of partitions: find each answer's target by its key, not by
    // a scan of the targets.
    let by_key: HashMap<(Uuid, i32), usize> = targets
        .iter()
        .enumerate()
        .map(|(i, (_, _, t))| ((t.topic_id, t.partition), i))
        .collect();
    // Unfollowed (or re-followed under another epoch) while the fetch was out: the answer is
    // for a role this replica no longer has. (The follower's writes check the epoch again
    // under the partition's role lock.)
    let current: Vec<bool> = {
        let partitions = f.partitions.lock().expect("partitions lock");
        targets
            .iter()
            .map(|(tp, followed, _)| {
                partitions
                    .get(tp)
                    .is_some_and(|p| p.leader_epoch == followed.leader_epoch)
            })
            .collect()
    };
    for topic in &resp.responses {
        for data in &topic.partitions {
            let Some(&i) = by_key.get(&(topic.topic_id, data.partition_index)) else {
                continue;
            };
            answered[i] = true;
            let (tp, followed, target) = &targets[i];
            if !current[i] {
                continue;
            }
            if followed.partition.is_throttled(shared.local) {
                let bytes = data.records.as_ref().map_or(0, Bytes::len);
                shared.throttles.follower.record(bytes);
            }
            match apply_partition(shared, followed, target, data) {
                Ok(true) => {}
                Ok(false) => retry.push((tp.clone(), followed.leader_epoch)),
                Err(ApplyError::Malformed(e)) => {
                    tracing::warn!(partition = %tp, error = %e, "malformed records from the leader");
                    return Err(FetchError::Malformed(format!("{tp}: {e}")));
                }
                Err(ApplyError::Log(e)) => {
                    tracing::error!(partition = %tp, error = %e, "follower write failed");
                    retry.push((tp.clone(), followed.leader_epoch));
                }
            }
        }
    }
    // A partition the leader did not answer for is asked again after the back-off.
    for (i, (tp, followed, _)) in targets.iter().enumerate() {
        if !answered[i] {
            retry.push((tp.clone(), followed.leader_epoch));
        }
    }
    Ok(retry)
}

enum ApplyError {
    Malformed(String),
    Log(LogError),
}

/// Applies one partition's answer: `Ok(false)` asks for a back-off.
fn apply_partition(
    shared: &Shared,
    followed: &Followed,
    target: &FetchTarget,
    data: &PartitionData,
) -> Result<bool, ApplyError> {
    let p = &followed.partition;
    let epoch = followed.leader_epoch;
    let now_ms = p.now_ms();
    let expiration = shared.producer_expiration_ms;
    match decide(target, data) {
        Action::Append {
            records,
            leader_hw,
            leader_log_start,
        } => {
            if !records.is_empty() {
                match p.append_as_follower(&records, epoch, now_ms) {
                    Ok(_) => {}
                    Err(LogError::InvalidBatch(e)) => {
                        return Err(ApplyError::Malformed(e.to_string()))
                    }
                    Err(e @ LogError::InvalidOffsets { .. }) => {
                        return Err(ApplyError::Malformed(e.to_string()))
                    }
                    // The log end moved under the fetch (it cannot, but a retry is harmless).
                    Err(LogError::AppendBelowLogEnd { .. }) => return Ok(false),
                    Err(e) => return Err(ApplyError::Log(e)),
                }
            }
            p.flush_as_follower(now_ms).map_err(ApplyError::Log)?;
            p.on_leader_high_watermark(leader_hw);
            // The leader's log start moved (DeleteRecords, retention): follow it, as far as
            // this replica's HW (Kafka's `maybeIncrementLogStartOffset` on the follower).
            if leader_log_start > p.log.log_start_offset() && leader_log_start <= p.high_watermark()
            {
                p.log
                    .delete_records_before(leader_log_start)
                    .map_err(ApplyError::Log)?;
            }
            Ok(true)
        }
        Action::Diverged {
            epoch: e,
            end_offset,
        } => {
            let log = &p.log;
            let to = truncation_offset(
                (e, end_offset),
                log.end_offset_for_epoch(e),
                log.log_end_offset(),
                log.log_start_offset(),
            );
            if to < p.high_watermark() {
                tracing::warn!(partition = %TopicPartition::new(p.topic.clone(), p.index),
                    to = to.get(), hw = p.high_watermark().get(),
                    "truncating below the high watermark");
            }
            tracing::info!(partition = %TopicPartition::new(p.topic.clone(), p.index),
                leader_epoch = e.get(), leader_end = end_offset.get(), to = to.get(),
                "log diverges from the leader's; truncating");
            p.truncate_as_follower(to, false, epoch, now_ms, expiration)
                .map_err(ApplyError::Log)?;
            Ok(true)
        }
        Action::RestartAt(start) => {
            tracing::info!(partition = %TopicPartition::new(p.topic.clone(), p.index),
                leader_log_start = start.get(), local_end = target.fetch_offset.get(),
                "the leader's log starts past this one's end; starting over there");
            p.truncate_as_follower(start, true, epoch, now_ms, expiration)
                .map_err(ApplyError::Log)?;
            Ok(true)
        }
        Action::TruncateTo(to) => {
            tracing::warn!(partition = %TopicPartition::new(p.topic.clone(), p.index),
                to = to.get(), local_end = target.fetch_offset.get(),
                "fetch offset out of range at the leader; truncating to its high watermark");
            p.truncate_as_follower(to, false, epoch, now_ms, expiration)
                .map_err(ApplyError::Log)?;
            Ok(true)
        }
        Action::Retry(code) => {
            tracing::debug!(partition = %TopicPartition::new(p.topic.clone(), p.index),
                error_code = code, "leader refused the fetch; backing off");
            Ok(false)
        }
    }
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::fetch_response::EpochEndOffset;

    use super::*;

    fn settings() -> ReplicaFetchSettings {
        ReplicaFetchSettings {
            max_bytes: 1 << 20,
            response_max_bytes: 10 << 20,
            wait_max: Duration::from_millis(500),
            min_bytes: 1,
            backoff: Duration::from_millis(1000),
        }
    }

    fn target(topic: u128, partition: i32, offset: i64, epoch: Option<i32>) -> FetchTarget {
        FetchTarget {
            topic_id: Uuid::from_u128(topic),
            partition,
            current_leader_epoch: LeaderEpoch(7),
            fetch_offset: Offset(offset),
            last_fetched_epoch: epoch.map(LeaderEpoch),
            log_start_offset: Offset(0),
            max_bytes: None,
        }
    }

    #[test]
    fn request_groups_partitions_by_topic_and_carries_the_follower_state() {
        let req = build_request(
            BrokerId(3),
            42,
            &settings(),
            &[
                target(1, 0, 10, Some(5)),
                target(2, 0, 0, None),
                // Throttled: a slice of its quota.
                FetchTarget {
                    max_bytes: Some(1000),
                    ..target(1, 1, 20, Some(6))
                },
            ],
        );
        assert_eq!(req.replica_state.replica_id.0, 3);
        assert_eq!(req.replica_state.replica_epoch, 42);
        assert_eq!((req.session_id, req.session_epoch), (0, -1));
        assert_eq!(req.max_wait_ms, 500);
        assert_eq!(req.min_bytes, 1);
        assert_eq!(req.max_bytes, 10 << 20);
        assert_eq!(req.topics.len(), 2);
        let t1 = &req.topics[0];
        assert_eq!(t1.topic_id, Uuid::from_u128(1));
        let parts: Vec<(i32, i64, i32)> = t1
            .partitions
            .iter()
            .map(|p| (p.partition, p.fetch_offset, p.last_fetched_epoch))
            .collect();
        assert_eq!(parts, vec![(0, 10, 5), (1, 20, 6)]);
        let limits: Vec<i32> = t1
            .partitions
            .iter()
            .map(|p| p.partition_max_bytes)
            .collect();
        assert_eq!(limits, vec![settings().max_bytes, 1000]);
        assert_eq!(req.topics[1].partitions[0].last_fetched_epoch, -1);
        for p in req.topics.iter().flat_map(|t| &t.partitions) {
            assert_eq!(p.current_leader_epoch, 7);
        }
        // It encodes at the version followers send.
        let mut buf = BytesMut::new();
        req.encode(&mut buf, FETCH_VERSION).unwrap();
        let back = FetchRequest::decode(&mut buf.freeze(), FETCH_VERSION).unwrap();
        assert_eq!(back, req);
    }

    fn answer(error: ResponseError, hw: i64, start: i64) -> PartitionData {
        PartitionData::default()
            .with_error_code(error.code())
            .with_high_watermark(hw)
            .with_log_start_offset(start)
    }

    #[test]
    fn answers_decide_append_truncate_restart_or_retry() {
        let t = target(1, 0, 10, Some(5));
        let ok = PartitionData::default()
            .with_high_watermark(12)
            .with_log_start_offset(3)
            .with_records(Some(Bytes::from_static(b"batches")));
        assert_eq!(
            decide(&t, &ok),
            Action::Append {
                records: Bytes::from_static(b"batches"),
                leader_hw: Offset(12),
                leader_log_start: Offset(3),
            }
        );
        let diverged = PartitionData::default()
            .with_high_watermark(8)
            .with_diverging_epoch(EpochEndOffset::default().with_epoch(4).with_end_offset(8));
        assert_eq!(
            decide(&t, &diverged),
            Action::Diverged {
                epoch: LeaderEpoch(4),
                end_offset: Offset(8)
            }
        );
        assert_eq!(
            decide(&t, &answer(ResponseError::OffsetOutOfRange, 50, 40)),
            Action::RestartAt(Offset(40))
        );
        assert_eq!(
            decide(&t, &answer(ResponseError::OffsetOutOfRange, 6, 0)),
            Action::TruncateTo(Offset(6))
        );
        for e in [
            ResponseError::NotLeaderOrFollower,
            ResponseError::FencedLeaderEpoch,
            ResponseError::UnknownLeaderEpoch,
            ResponseError::UnknownTopicId,
        ] {
            assert_eq!(decide(&t, &answer(e, -1, -1)), Action::Retry(e.code()));
        }
    }

    #[test]
    fn truncation_follows_kip_279() {
        let end = Offset(100);
        let start = Offset(0);
        // Both know epoch 4: the common prefix ends at the lesser end.
        assert_eq!(
            truncation_offset(
                (LeaderEpoch(4), Offset(60)),
                Some((LeaderEpoch(4), Offset(80))),
                end,
                start
            ),
            Offset(60)
        );
        assert_eq!(
            truncation_offset(
                (LeaderEpoch(4), Offset(90)),
                Some((LeaderEpoch(4), Offset(70))),
                end,
                start
            ),
            Offset(70)
        );
        // The follower never had epoch 4: back to the end of its older epoch, compare again.
        assert_eq!(
            truncation_offset(
                (LeaderEpoch(4), Offset(90)),
                Some((LeaderEpoch(2), Offset(50))),
                end,
                start
            ),
            Offset(50)
        );
        // It has no epoch at or below: the leader's end.
        assert_eq!(
            truncation_offset((LeaderEpoch(4), Offset(30)), None, end, start),
            Offset(30)
        );
        // Nothing would be cut: start over from the log start rather than loop.
        assert_eq!(
            truncation_offset(
                (LeaderEpoch(4), Offset(200)),
                Some((LeaderEpoch(4), Offset(100))),
                end,
                Offset(5)
            ),
            Offset(5)
        );
    }

    /// A leader and a follower partition in one process, exchanging fetches through the
    /// handler's read and the fetcher's apply (no network).
    mod exchange {
        use std::path::Path;
        use std::sync::Arc;

        use kafka_protocol::records::{
            Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions,
            TimestampType,
        };
        use sluice_log::{Log, LogConfig};
        use sluice_meta::PartitionInfo;
        use sluice_types::SystemClock;

        use super::*;
        use crate::config::{BrokerSettings, Durability, Settings};
        use crate::handlers::fetch::{
            read_all, session_partition, ConsumerRouting, Fetcher, PartitionRead,
        };
        use crate::partition::PartitionEnv;

        const TOPIC: u128 = 9;

        fn partition(dir: &Path, local: i32) -> Arc<Partition> {
            let env = PartitionEnv {
                local: BrokerId(local),
                durability: Durability::Fsync,
                clock: Arc::new(SystemClock),
                isr_changes: None,
                replica_lag_time_max_ms: 30_000,
                unsafe_ack_before_replication: false,
                lease: Arc::new(crate::lease::LeadershipLease::unbounded()),
            };
            let settings = BrokerSettings::from_settings(&Settings::load(None, &[]).unwrap()).log;
            let log = Log::open(
                &dir.join(format!("t-0-{local}")),
                LogConfig::default(),
                false,
            )
            .unwrap();
            Arc::new(Partition::new(
                &env,
                &TopicPartition::new("t", 0),
                Uuid::from_u128(TOPIC),
                log,
                Arc::new(settings),
                None,
            ))
        }

        fn info(leader: i32, epoch: i32, partition_epoch: i32) -> PartitionInfo {
            PartitionInfo {
                replicas: vec![BrokerId(1), BrokerId(2)],
                isr: vec![BrokerId(1), BrokerId(2)],
                elr: Vec::new(),
                leader: BrokerId(leader),
                leader_epoch: LeaderEpoch(epoch),
                partition_epoch,
                adding: Vec::new(),
                removing: Vec::new(),
            }
        }

        fn batch(value: &str) -> Vec<u8> {
            let record = Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: 0,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: 0,
                sequence: -1,
                timestamp: 1_000,
                key: None,
                value: Some(Bytes::copy_from_slice(value.as_bytes())),
                headers: Default::default(),
            };
            let mut buf = BytesMut::new();
            RecordBatchEncoder::encode(
                &mut buf,
                &[record],
                &RecordEncodeOptions {
                    version: 2,
                    compression: Compression::None,
                },
            )
            .unwrap();
            buf.to_vec()
        }

        fn all_bytes(p: &Partition) -> Bytes {
            p.log
                .read(
                    p.log.log_start_offset(),
                    1 << 20,
                    p.log.log_end_offset(),
                    true,
                )
                .unwrap()
                .data
        }

        fn shared() -> Shared {
            Shared {
                local: BrokerId(2),
                image: Arc::new(MetadataImage::new(sluice_meta::ClusterState::new())),
                settings: settings(),
                producer_expiration_ms: 86_400_000,
                routes: Arc::default(),
                client_id: StrBytes::from_static_str("test"),
                throttles: Arc::default(),
            }
        }

        /// One follower round: what the fetcher would send, the leader's read of it, and the
        /// follower applying the answer.
        fn round(leader: &Arc<Partition>, follower: &Arc<Partition>, epoch: i32) -> PartitionData {
            let end = follower.log.log_end_offset();
            let start = follower.log.log_start_offset();
            let target = FetchTarget {
                topic_id: Uuid::from_u128(TOPIC),
                partition: 0,
                current_leader_epoch: LeaderEpoch(epoch),
                fetch_offset: end,
                last_fetched_epoch: (end > start)
                    .then(|| follower.log.epoch_for_offset(Offset(end.get() - 1)))
                    .flatten(),
                log_start_offset: start,
                max_bytes: None,
            };
            let sp = session_partition(
                "t".into(),
                Uuid::from_u128(TOPIC),
                0,
                end.get(),
                1 << 20,
                epoch,
                target.last_fetched_epoch.map_or(-1, |e| e.get()),
            );
            let fetcher = Fetcher::Follower {
                replica: BrokerId(2),
                broker_epoch: 1,
            };
            let read = read_all(
                &[(sp, Some(leader.clone()))],
                1 << 20,
                true,
                fetcher,
                true,
                &ConsumerRouting::default(),
                None,
            )
            .pop()
            .unwrap();
            let mut data = PartitionData::default()
                .with_error_code(read.error.map_or(0, |e| e.code()))
                .with_high_watermark(read.high_watermark)
                .with_log_start_offset(read.log_start_offset)
                .with_records(Some(read.records));
            if let Some((e, o)) = read.diverging {
                data = data.with_diverging_epoch(
                    EpochEndOffset::default()
                        .with_epoch(e.get())
                        .with_end_offset(o.get()),
                );
            }
            let followed = Followed {
                partition: follower.clone(),
                leader_epoch: LeaderEpoch(epoch),
                retry_at: None,
            };
            assert!(matches!(
                apply_partition(&shared(), &followed, &target, &data),
                Ok(true)
            ));
            data
        }

        #[tokio::test]
        async fn a_diverging_follower_truncates_then_copies_the_leader() {
            let dir = tempfile::tempdir().unwrap();
            let (a, b) = (partition(dir.path(), 1), partition(dir.path(), 2));
            // Broker 2 leads epoch 0 and writes five batches; broker 1 copies only three.
            b.set_leadership(true, &info(2, 0, 0), 0);
            a.set_leadership(false, &info(2, 0, 0), 0);
            for i in 0..5 {
                let bytes = batch(&format!("e0-{i}"));
                b.append(&bytes, 0, None).unwrap();
            }
            let first_three = b
                .log
                .read(Offset(0), 1 << 20, Offset(3), true)
                .unwrap()
                .data;
            a.append_as_follower(&first_three, LeaderEpoch(0), 0)
                .unwrap()
                .unwrap();
            // Broker 1 takes over under epoch 1 and writes two batches of its own.
            a.set_leadership(true, &info(1, 1, 1), 0);
            b.set_leadership(false, &info(1, 1, 1), 0);
            for i in 0..2 {
                a.append(&batch(&format!("e1-{i}")), 0, None).unwrap();
            }
            assert_eq!(a.log.log_end_offset(), Offset(5));
            assert_eq!(b.log.log_end_offset(), Offset(5));

            // First round: the leader sees the follower's epoch 0 run past its own end of
            // epoch 0 (3) and answers the diverging epoch; the follower cuts back to 3.
            let data = round(&a, &b, 1);
            assert_eq!(data.diverging_epoch.epoch, 0);
            assert_eq!(data.diverging_epoch.end_offset, 3);
            assert!(data.records.as_ref().unwrap().is_empty());
            assert_eq!(b.log.log_end_offset(), Offset(3));

            // Second round: no divergence; the leader's epoch-1 batches are copied as they are.
            let data = round(&a, &b, 1);
            assert_eq!(data.diverging_epoch.epoch, -1);
            assert_eq!(b.log.log_end_offset(), Offset(5));
            assert_eq!(all_bytes(&b), all_bytes(&a));
            assert_eq!(b.log.epoch_for_offset(Offset(4)), Some(LeaderEpoch(1)));
            // Fsync mode: what the follower reports next is durable.
            assert_eq!(b.log.durable_offset(), Offset(5));

            // Third round: the follower's fetch at 5 tells the leader both hold everything
            // (the HW moves to 5), and the follower takes that HW.
            a.make_durable(Offset(5)).await.unwrap();
            round(&a, &b, 1);
            assert_eq!(a.high_watermark(), Offset(5));
            round(&a, &b, 1);
            assert_eq!(b.high_watermark(), Offset(5));
        }

        #[test]
        fn a_stale_epoch_or_a_leading_replica_drops_what_was_fetched() {
            let dir = tempfile::tempdir().unwrap();
            let b = partition(dir.path(), 2);
            b.set_leadership(false, &info(1, 3, 3), 0);
            let bytes = batch("x");
            // Fetched under epoch 2, applied after epoch 3 arrived: dropped.
            assert_eq!(
                b.append_as_follower(&bytes, LeaderEpoch(2), 0).unwrap(),
                None
            );
            b.set_leadership(true, &info(2, 4, 4), 0);
            assert_eq!(
                b.append_as_follower(&bytes, LeaderEpoch(4), 0).unwrap(),
                None
            );
            assert!(!b
                .truncate_as_follower(Offset(0), false, LeaderEpoch(4), 0, 1)
                .unwrap());
            assert_eq!(b.log.log_end_offset(), Offset(0));
        }

        #[tokio::test]
        async fn partitions_move_between_leader_fetchers_and_leave_them() {
            let dir = tempfile::tempdir().unwrap();
            let p = partition(dir.path(), 2);
            let fetchers = ReplicaFetchers::new(
                BrokerId(2),
                Arc::new(MetadataImage::new(sluice_meta::ClusterState::new())),
                settings(),
                1,
                Arc::default(),
                Arc::default(),
                tokio::runtime::Handle::current(),
            );
            let tp = TopicPartition::new("t", 0);
            let nowhere = Some("127.0.0.1:1".to_string());
            fetchers.follow(&tp, p.clone(), BrokerId(1), nowhere.clone(), LeaderEpoch(1));
            assert_eq!(
                fetchers.followed(),
                BTreeMap::from([(tp.clone(), BrokerId(1))])
            );
            // A new leader: the partition moves, and the old leader's empty fetcher stops.
            fetchers.follow(&tp, p.clone(), BrokerId(3), nowhere, LeaderEpoch(2));
            assert_eq!(
                fetchers.followed(),
                BTreeMap::from([(tp.clone(), BrokerId(3))])
            );
            {
                let st = fetchers.state.lock().unwrap();
                assert_eq!(
                    st.by_leader.keys().copied().collect::<Vec<_>>(),
                    vec![BrokerId(3)]
                );
            }
            fetchers.unfollow(&tp);
            assert!(fetchers.followed().is_empty());
            assert!(fetchers.state.lock().unwrap().by_leader.is_empty());
            fetchers.shutdown().await;
            // Closed: later metadata starts nothing.
            fetchers.follow(&tp, p, BrokerId(1), None, LeaderEpoch(3));
            assert!(fetchers.followed().is_empty());
        }

        /// What a consumer reading `p` from `offset` gets; `follower_reads`: Fetch v11+.
        fn consumer_read(p: &Arc<Partition>, offset: i64, follower_reads: bool) -> PartitionRead {
            let sp = session_partition(
                "t".into(),
                Uuid::from_u128(TOPIC),
                0,
                offset,
                1 << 20,
                -1,
                -1,
            );
            let routing = ConsumerRouting {
                follower_reads,
                preferred: Vec::new(),
            };
            read_all(
                &[(sp, Some(p.clone()))],
                1 << 20,
                true,
                Fetcher::Consumer,
                false,
                &routing,
                None,
            )
            .pop()
            .unwrap()
        }

        fn record_offsets(read: &PartitionRead) -> Vec<i64> {
            let mut bytes = read.records.clone();
            RecordBatchDecoder::decode_all(&mut bytes)
                .unwrap()
                .into_iter()
                .flat_map(|s| s.records)
                .map(|r| r.offset)
                .collect()
        }

        #[tokio::test]
        async fn a_follower_serves_consumers_below_its_hw_and_the_leader_points_there() {
            let dir = tempfile::tempdir().unwrap();
            let (a, b) = (partition(dir.path(), 1), partition(dir.path(), 2));
            a.set_leadership(true, &info(1, 0, 0), 0);
            b.set_leadership(false, &info(1, 0, 0), 0);
            for i in 0..3 {
                a.append(&batch(&format!("c-{i}")), 0, None).unwrap();
            }
            a.make_durable(Offset(3)).await.unwrap();
            round(&a, &b, 0);
            round(&a, &b, 0);
            assert_eq!(b.high_watermark(), Offset(3));
            // Two more the follower copies but the leader cannot commit yet (it has not heard
            // that the follower holds them).
            for i in 3..5 {
                a.append(&batch(&format!("u-{i}")), 0, None).unwrap();
            }
            a.make_durable(Offset(5)).await.unwrap();
            round(&a, &b, 0);
            assert_eq!(b.log.log_end_offset(), Offset(5));
            assert_eq!(b.high_watermark(), Offset(3));

            // Fetch v11+: the follower serves what is below its HW, nothing above it, and a
            // fetch past its log end is out of range.
            let read = consumer_read(&b, 0, true);
            assert_eq!(read.error, None);
            assert_eq!(read.high_watermark, 3);
            assert_eq!(record_offsets(&read), vec![0, 1, 2]);
            let read = consumer_read(&b, 3, true);
            assert_eq!((read.error, read.records.len()), (None, 0));
            assert_eq!(
                consumer_read(&b, 6, true).error,
                Some(ResponseError::OffsetOutOfRange)
            );
            // Before v11 only the leader serves consumers.
            assert_eq!(
                consumer_read(&b, 0, false).error,
                Some(ResponseError::NotLeaderOrFollower)
            );

            // The leader: broker 2 is in rack r2 and in sync; it last fetched at 3.
            let mut image = sluice_meta::ClusterState::new();
            for (id, rack) in [(1, "r1"), (2, "r2")] {
                image.brokers.insert(
                    BrokerId(id),
                    sluice_meta::BrokerInfo {
                        broker_id: BrokerId(id),
                        host: "127.0.0.1".into(),
                        port: 9092,
                        rack: Some(rack.into()),
                        incarnation_id: None,
                        directory_id: None,
                        epoch: 1,
                        fenced: false,
                    },
                );
            }
            use crate::handlers::fetch::preferred_read_replica;
            assert_eq!(
                preferred_read_replica(&image, &a, "r2", 0),
                Some(BrokerId(2))
            );
            assert_eq!(
                preferred_read_replica(&image, &a, "r2", 3),
                Some(BrokerId(2))
            );
            // Past what the leader knows the follower holds; the leader's own rack; no rack.
            assert_eq!(preferred_read_replica(&image, &a, "r2", 4), None);
            assert_eq!(preferred_read_replica(&image, &a, "r1", 0), None);
            assert_eq!(preferred_read_replica(&image, &a, "", 0), None);
            // A follower chooses nothing; a fenced broker is not chosen.
            assert_eq!(preferred_read_replica(&image, &b, "r2", 0), None);
            image.brokers.get_mut(&BrokerId(2)).unwrap().fenced = true;
            assert_eq!(preferred_read_replica(&image, &a, "r2", 0), None);
            // The lag a follower reports: the leader's HW it heard minus its end.
            assert_eq!(b.offset_lag(), 0);
            assert_eq!(a.offset_lag(), 0);
        }

        #[test]
        fn a_fetch_from_outside_the_replica_set_is_refused() {
            let dir = tempfile::tempdir().unwrap();
            let a = partition(dir.path(), 1);
            a.set_leadership(true, &info(1, 1, 1), 0);
            let sp = session_partition("t".into(), Uuid::from_u128(TOPIC), 0, 0, 1024, 1, -1);
            let fetcher = Fetcher::Follower {
                replica: BrokerId(7),
                broker_epoch: 1,
            };
            let read = read_all(
                &[(sp, Some(a))],
                1024,
                true,
                fetcher,
                true,
                &ConsumerRouting::default(),
                None,
            )
            .pop()
            .unwrap();
            assert_eq!(read.error, Some(ResponseError::NotLeaderOrFollower));
        }
    }

    #[test]
    fn a_malformed_answer_is_an_error_not_a_panic() {
        let mut garbage = Bytes::from_static(&[0, 0, 0, 1, 0xff, 0xff, 0xff]);
        assert!(matches!(
            parse_response(&mut garbage, 1),
            Err(FetchError::Malformed(_))
        ));
        let mut wrong_id = Bytes::from_static(&[0, 0, 0, 9, 0]);
        assert!(matches!(
            parse_response(&mut wrong_id, 1),
            Err(FetchError::Malformed(_))
        ));
    }
}
