//! Committed offsets, stored in the internal compacted topic `__consumer_offsets`.
//!
//! A group's commits live in partition `abs(javaHashCode(group)) % offsets.topic.num.partitions`,
//! as in Kafka, so tools that know Kafka's layout find them. Records use Kafka's schemas:
//!
//! ```text
//! key   (OffsetCommitKey v1):   version i16 = 1 | group string | topic string | partition i32
//! value (OffsetCommitValue v3): version i16 = 3 | offset i64 | leader_epoch i32 | metadata string | commit_timestamp i64
//! tombstone: the same key with a null value (offset deleted)
//!
//! key   (GroupMetadataKey v2):   version i16 = 2 | group string
//! value (GroupMetadataValue v3): version i16 = 3 | protocol_type string | generation i32
//!        | protocol nullable string | leader nullable string | current_state_timestamp i64
//!        | members [member_id string | group_instance_id nullable string | client_id string
//!                   | client_host string | rebalance_timeout i32 | session_timeout i32
//!                   | subscription bytes | assignment bytes]
//! ```
//!
//! # Partitions, leadership and commits
//! The broker leading an offsets partition coordinates its groups. When it becomes leader it
//! replays the partition into a [`Shard`] (committed offsets, and the groups' stored state for
//! the coordinator to restore); when it stops leading, the shard goes. A write (commit,
//! deletion, a group's state) is appended to the leader's log, made durable and acknowledged
//! only once the partition's high watermark passes it, that is once it is on the in-sync
//! replicas (fsynced, in fsync mode), within `offsets.commit.timeout.ms`. Only then is it
//! applied to the shard's cache, in log order, so OffsetFetch never shows a commit a failover
//! could take back. Errors are Kafka's: NOT_COORDINATOR when this broker stopped leading,
//! COORDINATOR_NOT_AVAILABLE when the ISR is too small or the replication timed out (the
//! write may still become committed later, like any write whose answer was lost).
//!
//! # Loading untrusted bytes
//!
//! The partitions are read back from disk, so the loader ([`replay_batches`]) treats every byte
//! as untrusted: no panic, no allocation sized by a number it read, and always progress.
//! - A record that is well framed but not understood (no key, unknown key version, truncated
//!   fields, a value that does not decode) is skipped with a warning naming partition and
//!   offset. A bad value is *not* taken as a tombstone: that would delete a good older commit.
//! - A batch that fails its CRC or does not decode is skipped whole with an error; loading goes
//!   on with the next batch (the log's framing still holds, and stopping would also hide every
//!   commit made after the damage, at this start and every later one). Its commits are lost;
//!   the group's older commits for those partitions, if any, are what it sees.
//! - Compressed and control batches are skipped with a warning: this coordinator writes
//!   neither, and decompression of untrusted bytes is unbounded.
//! - When the log itself cannot be read further (framing lost, I/O error), loading that
//!   partition stops there with an error and the broker serves what was loaded.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::records::{
    Compression as RecordCompression, Record, RecordBatchEncoder, RecordEncodeOptions,
    TimestampType,
};
use kafka_protocol::ResponseError;
use sluice_protocol::batch::{verify_crc, Batches, Compression};
use sluice_types::Offset;
use thiserror::Error;

use sluice_group::{GroupSnapshot, MemberSnapshot};

use crate::error::ApiError;
use crate::partition::Partition;

pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// One committed offset.
#[derive(Debug, Clone, PartialEq)]
pub struct CommittedOffset {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
    pub commit_timestamp: i64,
}

/// `(topic, partition)`.
pub type TopicPartition = (String, i32);

/// Java's `String.hashCode` over UTF-16 code units, as Kafka uses for partition placement.
pub fn java_hash(s: &str) -> i32 {
    s.encode_utf16()
        .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(c as i32))
}

/// Kafka's `Utils.abs`: `Integer.MIN_VALUE` maps to 0.
fn kafka_abs(n: i32) -> i32 {
    if n == i32::MIN {
        0
    } else {
        n.abs()
    }
}

pub fn partition_for(group: &str, partitions: usize) -> usize {
    kafka_abs(java_hash(group)) as usize % partitions
}

fn put_str(buf: &mut BytesMut, s: &str) {
    buf.put_i16(s.len() as i16);
    buf.put_slice(s.as_bytes());
}

/// Why a stored offsets record was not understood.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum OffsetRecordError {
    #[error("record has no key")]
    NoKey,
    #[error("key version {0} is not known")]
    UnknownKeyVersion(i16),
    #[error("value version {0} is not known")]
    UnknownValueVersion(i16),
    #[error("{0} is truncated")]
    Truncated(&'static str),
    #[error("{0} has an invalid length")]
    BadLength(&'static str),
    #[error("{0} is not UTF-8")]
    NotUtf8(&'static str),
}

use OffsetRecordError::{BadLength, NotUtf8, Truncated};

fn get_i16(buf: &mut Bytes, what: &'static str) -> Result<i16, OffsetRecordError> {
    (buf.remaining() >= 2)
        .then(|| buf.get_i16())
        .ok_or(Truncated(what))
}

fn get_i32(buf: &mut Bytes, what: &'static str) -> Result<i32, OffsetRecordError> {
    (buf.remaining() >= 4)
        .then(|| buf.get_i32())
        .ok_or(Truncated(what))
}

fn get_i64(buf: &mut Bytes, what: &'static str) -> Result<i64, OffsetRecordError> {
    (buf.remaining() >= 8)
        .then(|| buf.get_i64())
        .ok_or(Truncated(what))
}

/// A string of `len` bytes; `len` was checked against nothing yet.
fn get_utf8(buf: &mut Bytes, len: usize, what: &'static str) -> Result<String, OffsetRecordError> {
    if buf.remaining() < len {
        return Err(Truncated(what));
    }
    String::from_utf8(buf.split_to(len).to_vec()).map_err(|_| NotUtf8(what))
}

/// A classic (i16-length) string; null reads as empty.
fn get_str(buf: &mut Bytes, what: &'static str) -> Result<String, OffsetRecordError> {
    match get_i16(buf, what)? {
        -1 => Ok(String::new()),
        len if len < 0 => Err(BadLength(what)),
        len => get_utf8(buf, len as usize, what),
    }
}

/// A compact (unsigned varint length + 1) string of a flexible version; null reads as empty.
fn get_compact_str(buf: &mut Bytes, what: &'static str) -> Result<String, OffsetRecordError> {
    let mut n: u64 = 0;
    for shift in (0..35).step_by(7) {
        if !buf.has_remaining() {
            return Err(Truncated(what));
        }
        let b = buf.get_u8();
        n |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return match n {
                0 => Ok(String::new()),
                n => get_utf8(
                    buf,
                    usize::try_from(n - 1).map_err(|_| BadLength(what))?,
                    what,
                ),
            };
        }
    }
    Err(BadLength(what))
}

pub fn encode_key(group: &str, topic: &str, partition: i32) -> Bytes {
    let mut b = BytesMut::with_capacity(8 + group.len() + topic.len());
    b.put_i16(1);
    put_str(&mut b, group);
    put_str(&mut b, topic);
    b.put_i32(partition);
    b.freeze()
}

pub fn encode_value(v: &CommittedOffset) -> Bytes {
    let meta = v.metadata.as_deref().unwrap_or("");
    let mut b = BytesMut::with_capacity(24 + meta.len());
    b.put_i16(3);
    b.put_i64(v.offset);
    b.put_i32(v.leader_epoch);
    put_str(&mut b, meta);
    b.put_i64(v.commit_timestamp);
    b.freeze()
}

/// What a record of `__consumer_offsets` is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordKey {
    /// A committed offset (OffsetCommitKey v0/v1).
    Offset {
        group: String,
        topic: String,
        partition: i32,
    },
    /// A group's state (GroupMetadataKey v2).
    Group(String),
}

pub fn decode_key(mut key: Bytes) -> Result<RecordKey, OffsetRecordError> {
    match get_i16(&mut key, "key version")? {
        0 | 1 => {
            let group = get_str(&mut key, "group id")?;
            let topic = get_str(&mut key, "topic")?;
            let partition = get_i32(&mut key, "partition")?;
            Ok(RecordKey::Offset {
                group,
                topic,
                partition,
            })
        }
        2 => Ok(RecordKey::Group(get_str(&mut key, "group id")?)),
        v => Err(OffsetRecordError::UnknownKeyVersion(v)),
    }
}

pub fn encode_group_key(group: &str) -> Bytes {
    let mut b = BytesMut::with_capacity(4 + group.len());
    b.put_i16(2);
    put_str(&mut b, group);
    b.freeze()
}

fn put_nullable_str(buf: &mut BytesMut, s: Option<&str>) {
    match s {
        Some(s) => put_str(buf, s),
        None => buf.put_i16(-1),
    }
}

fn put_bytes(buf: &mut BytesMut, b: &[u8]) {
    buf.put_i32(b.len() as i32);
    buf.put_slice(b);
}

/// A GroupMetadataValue v3.
pub fn encode_group_value(g: &GroupSnapshot) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(3);
    put_str(&mut b, &g.protocol_type);
    b.put_i32(g.generation_id);
    put_nullable_str(&mut b, g.protocol_name.as_deref());
    put_nullable_str(&mut b, g.leader.as_deref());
    b.put_i64(g.current_state_timestamp_ms);
    b.put_i32(g.members.len() as i32);
    for m in &g.members {
        put_str(&mut b, &m.member_id);
        put_nullable_str(&mut b, m.group_instance_id.as_deref());
        put_str(&mut b, &m.client_id);
        put_str(&mut b, &m.client_host);
        b.put_i32(m.rebalance_timeout_ms);
        b.put_i32(m.session_timeout_ms);
        put_bytes(&mut b, &m.subscription);
        put_bytes(&mut b, &m.assignment);
    }
    b.freeze()
}

/// A classic nullable string.
fn get_nullable_str(
    buf: &mut Bytes,
    what: &'static str,
) -> Result<Option<String>, OffsetRecordError> {
    match get_i16(buf, what)? {
        -1 => Ok(None),
        len if len < 0 => Err(BadLength(what)),
        len => get_utf8(buf, len as usize, what).map(Some),
    }
}

/// Classic bytes (i32 length); null reads as empty.
fn get_bytes(buf: &mut Bytes, what: &'static str) -> Result<Bytes, OffsetRecordError> {
    match get_i32(buf, what)? {
        -1 => Ok(Bytes::new()),
        len if len < 0 => Err(BadLength(what)),
        len if buf.remaining() < len as usize => Err(Truncated(what)),
        len => Ok(buf.split_to(len as usize)),
    }
}

/// A GroupMetadataValue of versions 0 to 3 for `group`. The member count is only a loop bound:
/// every member read consumes bytes or fails, so a lying count allocates nothing.
pub fn decode_group_value(group: &str, mut v: Bytes) -> Result<GroupSnapshot, OffsetRecordError> {
    let version = get_i16(&mut v, "value version")?;
    if !(0..=3).contains(&version) {
        return Err(OffsetRecordError::UnknownValueVersion(version));
    }
    let protocol_type = get_str(&mut v, "protocol type")?;
    let generation_id = get_i32(&mut v, "generation")?;
    let protocol_name = get_nullable_str(&mut v, "protocol")?;
    let leader = get_nullable_str(&mut v, "leader")?;
    let current_state_timestamp_ms = if version >= 2 {
        get_i64(&mut v, "state timestamp")?
    } else {
        -1
    };
    let count = get_i32(&mut v, "member count")?;
    if count < -1 {
        return Err(BadLength("member count"));
    }
    let mut members = Vec::new();
    for _ in 0..count.max(0) {
        let member_id = get_str(&mut v, "member id")?;
        let group_instance_id = if version >= 3 {
            get_nullable_str(&mut v, "group instance id")?
        } else {
            None
        };
        let client_id = get_str(&mut v, "client id")?;
        let client_host = get_str(&mut v, "client host")?;
        let rebalance_timeout_ms = if version >= 1 {
            Some(get_i32(&mut v, "rebalance timeout")?)
        } else {
            None
        };
        let session_timeout_ms = get_i32(&mut v, "session timeout")?;
        members.push(MemberSnapshot {
            member_id,
            group_instance_id,
            client_id,
            client_host,
            rebalance_timeout_ms: rebalance_timeout_ms.unwrap_or(session_timeout_ms),
            session_timeout_ms,
            subscription: get_bytes(&mut v, "subscription")?,
            assignment: get_bytes(&mut v, "assignment")?,
        });
    }
    Ok(GroupSnapshot {
        group_id: group.to_string(),
        protocol_type,
        generation_id,
        protocol_name,
        leader,
        current_state_timestamp_ms,
        members,
    })
}

/// An OffsetCommitValue of versions 0 to 4. Trailing bytes (v1's expire timestamp, v4's tagged
/// fields) are ignored.
pub fn decode_value(mut value: Bytes) -> Result<CommittedOffset, OffsetRecordError> {
    let version = get_i16(&mut value, "value version")?;
    if !(0..=4).contains(&version) {
        return Err(OffsetRecordError::UnknownValueVersion(version));
    }
    let offset = get_i64(&mut value, "offset")?;
    let leader_epoch = if version >= 3 {
        get_i32(&mut value, "leader epoch")?
    } else {
        -1
    };
    let metadata = if version >= 4 {
        get_compact_str(&mut value, "metadata")?
    } else {
        get_str(&mut value, "metadata")?
    };
    let commit_timestamp = get_i64(&mut value, "commit timestamp")?;
    Ok(CommittedOffset {
        offset,
        leader_epoch,
        metadata: Some(metadata),
        commit_timestamp,
    })
}

/// Builds one uncompressed batch of `(key, value)` records.
fn encode_batch(records: Vec<(Bytes, Option<Bytes>)>, now_ms: i64) -> Vec<u8> {
    encode_records(
        records.into_iter().map(|(k, v)| (Some(k), v)).collect(),
        now_ms,
        RecordCompression::None,
    )
}

fn encode_records(
    records: Vec<(Option<Bytes>, Option<Bytes>)>,
    now_ms: i64,
    compression: RecordCompression,
) -> Vec<u8> {
    let records: Vec<Record> = records
        .into_iter()
        .enumerate()
        .map(|(i, (key, value))| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // The encoder keeps records in one batch while offset - sequence is constant;
            // this yields baseSequence -1 (no idempotence) for the whole batch.
            sequence: i as i32 - 1,
            timestamp: now_ms,
            key,
            value,
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression,
        },
    )
    .expect("encoding a batch of valid records");
    buf.to_vec()
}

/// One group's committed offsets.
pub type GroupOffsets = BTreeMap<TopicPartition, CommittedOffset>;

/// group -> committed offsets.
pub type OffsetCache = HashMap<String, GroupOffsets>;

/// What replaying an offsets partition found: the committed offsets, and each group's latest
/// stored state.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Replayed {
    pub offsets: OffsetCache,
    pub groups: BTreeMap<String, GroupSnapshot>,
}

/// Per-load counts, and how many warnings were already logged one by one.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LoadStats {
    pub records: usize,
    pub skipped_records: usize,
    pub skipped_batches: usize,
}

/// Individual warnings per partition before the loader only counts (a log full of garbage
/// must not flood the broker's log).
const WARNINGS_PER_PARTITION: usize = 20;

impl LoadStats {
    fn warn_record(&mut self, partition: i32, offset: i64, error: &OffsetRecordError) {
        self.skipped_records += 1;
        if self.skipped_records <= WARNINGS_PER_PARTITION {
            tracing::warn!(
                topic = OFFSETS_TOPIC,
                partition,
                offset,
                %error,
                "skipping a record of __consumer_offsets that is not understood"
            );
        }
    }

    fn skip_batch(&mut self, partition: i32, base: i64, last: i64, why: &str, damaged: bool) {
        self.skipped_batches += 1;
        if damaged {
            tracing::error!(
                topic = OFFSETS_TOPIC,
                partition,
                base_offset = base,
                last_offset = last,
                reason = why,
                "skipping a damaged batch of __consumer_offsets; commits in it are lost"
            );
        } else {
            tracing::warn!(
                topic = OFFSETS_TOPIC,
                partition,
                base_offset = base,
                last_offset = last,
                reason = why,
                "skipping a batch of __consumer_offsets this coordinator does not write"
            );
        }
    }
}

/// What [`replay_batches`] did with one chunk of log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkOutcome {
    /// The offset after the last batch handled; the next read starts here.
    pub next: i64,
    /// Set when the chunk's framing broke: nothing after this point can be trusted.
    pub stopped: Option<String>,
}

/// Applies the records in `data` (whole v2 batches, as a log read returns them) to `state`.
/// Batches ending before `from` were applied already and are ignored. Pure and total: any
/// bytes give an outcome, never a panic (see the module docs for what is skipped).
pub fn replay_batches(
    data: &[u8],
    partition: i32,
    from: i64,
    state: &mut Replayed,
    stats: &mut LoadStats,
) -> ChunkOutcome {
    let mut next = from;
    for item in Batches::new(data) {
        let (header, bytes) = match item {
            Ok(b) => b,
            Err(e) => {
                return ChunkOutcome {
                    next,
                    stopped: Some(format!("batch framing broken after offset {next}: {e}")),
                }
            }
        };
        let (base, last) = (header.base_offset, header.last_offset());
        if last < next {
            continue;
        }
        next = last.saturating_add(1);
        if let Err(e) = verify_crc(bytes) {
            stats.skip_batch(partition, base, last, &e.to_string(), true);
            continue;
        }
        if header.is_control() {
            stats.skip_batch(partition, base, last, "control batch", false);
            continue;
        }
        if !matches!(header.compression(), Ok(Compression::None)) {
            stats.skip_batch(partition, base, last, "compressed batch", false);
            continue;
        }
        // Every record takes at least 7 bytes; a count beyond what the batch can hold is
        // damage (and must never size an allocation).
        let room = bytes.len().saturating_sub(61) / 7;
        if header.records_count < 0 || header.records_count as usize > room {
            let why = format!(
                "record count {} does not fit the batch",
                header.records_count
            );
            stats.skip_batch(partition, base, last, &why, true);
            continue;
        }
        let records = match sluice_protocol::records::decode(bytes) {
            Ok(r) => r,
            Err(e) => {
                stats.skip_batch(partition, base, last, &e.to_string(), true);
                continue;
            }
        };
        for r in records {
            apply_record(r, partition, state, stats);
        }
    }
    ChunkOutcome {
        next,
        stopped: None,
    }
}

fn apply_record(r: Record, partition: i32, state: &mut Replayed, stats: &mut LoadStats) {
    let key = match r.key.ok_or(OffsetRecordError::NoKey).and_then(decode_key) {
        Ok(k) => k,
        Err(e) => return stats.warn_record(partition, r.offset, &e),
    };
    let (group, topic, tp_partition) = match key {
        RecordKey::Offset {
            group,
            topic,
            partition,
        } => (group, topic, partition),
        RecordKey::Group(group) => {
            match r.value.map(|v| decode_group_value(&group, v)) {
                Some(Ok(g)) => {
                    state.groups.insert(group, g);
                }
                Some(Err(e)) => return stats.warn_record(partition, r.offset, &e),
                None => {
                    state.groups.remove(&group);
                }
            }
            stats.records += 1;
            return;
        }
    };
    let cache = &mut state.offsets;
    match r.value.map(decode_value) {
        Some(Ok(v)) => {
            cache
                .entry(group)
                .or_default()
                .insert((topic, tp_partition), v);
        }
        Some(Err(e)) => return stats.warn_record(partition, r.offset, &e),
        None => {
            if let Some(g) = cache.get_mut(&group) {
                g.remove(&(topic, tp_partition));
                if g.is_empty() {
                    cache.remove(&group);
                }
            }
        }
    }
    stats.records += 1;
}

/// The offsets partitions this broker leads and has loaded, by partition index.
pub struct OffsetStore {
    shards: Mutex<HashMap<i32, Arc<Shard>>>,
    /// `offsets.commit.timeout.ms`: how long a write waits for the ISR.
    commit_timeout: Duration,
}

/// One loaded offsets partition.
pub struct Shard {
    pub partition: Arc<Partition>,
    state: Mutex<ShardState>,
}

#[derive(Default)]
struct ShardState {
    /// Committed offsets: every write below the high watermark, applied in log order.
    offsets: OffsetCache,
    /// Writes appended but not yet known to be committed, in log order.
    pending: VecDeque<PendingWrite>,
}

/// An appended write of offsets, applied to the cache once the HW reaches `end`.
struct PendingWrite {
    end: i64,
    group: String,
    records: Vec<(TopicPartition, Option<CommittedOffset>)>,
}

impl ShardState {
    fn apply(&mut self, group: String, records: Vec<(TopicPartition, Option<CommittedOffset>)>) {
        let entry = self.offsets.entry(group.clone()).or_default();
        for (tp, v) in records {
            match v {
                Some(v) => {
                    entry.insert(tp, v);
                }
                None => {
                    entry.remove(&tp);
                }
            }
        }
        if entry.is_empty() {
            self.offsets.remove(&group);
        }
    }
}

impl Shard {
    /// Applies, in log order, every pending write the high watermark `hw` has passed.
    fn apply_committed(&self, hw: Offset) {
        let mut state = self.state.lock().expect("offset shard lock");
        while state.pending.front().is_some_and(|w| w.end <= hw.get()) {
            if let Some(w) = state.pending.pop_front() {
                state.apply(w.group, w.records);
            }
        }
    }
}

/// Kafka's mapping of a failed offsets append to what the committer is told
/// (`GroupMetadataManager.storeOffsets`).
fn append_error(e: crate::append::AppendError) -> ApiError {
    use crate::append::AppendError;
    match e {
        AppendError::NotLeader => ResponseError::NotCoordinator.into(),
        AppendError::Log(e) => {
            tracing::error!(topic = OFFSETS_TOPIC, error = %e, "writing to __consumer_offsets failed");
            ResponseError::NotCoordinator.into()
        }
        other => {
            tracing::error!(topic = OFFSETS_TOPIC, error = ?other, "writing to __consumer_offsets refused");
            ResponseError::CoordinatorNotAvailable.into()
        }
    }
}

impl OffsetStore {
    pub fn new(commit_timeout: Duration) -> OffsetStore {
        OffsetStore {
            shards: Mutex::new(HashMap::new()),
            commit_timeout,
        }
    }

    /// Replays `partition` (this broker now leads it). Blocking. Never fails: damage is
    /// skipped or stops the load there, with an error logged.
    pub fn replay(partition: &Partition) -> Replayed {
        let mut state = Replayed::default();
        let mut stats = LoadStats::default();
        load_partition(partition, &mut state, &mut stats);
        if stats.skipped_records > WARNINGS_PER_PARTITION {
            tracing::warn!(
                topic = OFFSETS_TOPIC,
                partition = partition.index,
                skipped_records = stats.skipped_records,
                "skipped more records of __consumer_offsets than were logged one by one"
            );
        }
        tracing::debug!(
            topic = OFFSETS_TOPIC,
            partition = partition.index,
            groups = state.groups.len(),
            groups_with_offsets = state.offsets.len(),
            records = stats.records,
            skipped_records = stats.skipped_records,
            skipped_batches = stats.skipped_batches,
            "loaded an offsets partition"
        );
        state
    }

    /// Serves partition `index` from now on, with the offsets its replay found.
    pub fn install(&self, index: i32, partition: Arc<Partition>, offsets: OffsetCache) {
        let shard = Arc::new(Shard {
            partition,
            state: Mutex::new(ShardState {
                offsets,
                pending: VecDeque::new(),
            }),
        });
        self.lock().insert(index, shard);
    }

    /// Stops serving partition `index` (this broker no longer leads it).
    pub fn uninstall(&self, index: i32) {
        self.lock().remove(&index);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i32, Arc<Shard>>> {
        self.shards.lock().expect("offset shards lock")
    }

    fn shard(&self, index: i32) -> Result<Arc<Shard>, ApiError> {
        self.lock()
            .get(&index)
            .cloned()
            .ok_or_else(|| ResponseError::NotCoordinator.into())
    }

    fn shards(&self) -> Vec<(i32, Arc<Shard>)> {
        self.lock().iter().map(|(i, s)| (*i, s.clone())).collect()
    }

    /// Appends `records` (keys and values of `__consumer_offsets`) to partition `index` and
    /// waits until they are committed (see the module docs); `offsets`, the same writes as
    /// offsets, are then applied to the cache.
    async fn write(
        &self,
        index: i32,
        group: &str,
        records: Vec<(Bytes, Option<Bytes>)>,
        offsets: Vec<(TopicPartition, Option<CommittedOffset>)>,
        now_ms: i64,
    ) -> Result<(), ApiError> {
        if records.is_empty() {
            return Ok(());
        }
        let shard = self.shard(index)?;
        let partition = shard.partition.clone();
        if let Err(e) = partition.check_min_insync() {
            return Err(match partition.is_leader() {
                false => ResponseError::NotCoordinator.into(),
                true => ApiError::new(
                    ResponseError::CoordinatorNotAvailable,
                    format!("__consumer_offsets-{index}: {e}"),
                ),
            });
        }
        let batch = encode_batch(records, now_ms);
        // The append can wait on the disk (a throttled pwrite): off the reactor. The shard lock
        // is held across it, so pending writes are queued in log order.
        let (appending, group) = (shard.clone(), group.to_string());
        let end = crate::blocking::off_reactor(move || -> Result<Offset, ApiError> {
            let mut state = appending.state.lock().expect("offset shard lock");
            let info = match appending
                .partition
                .append(&batch, now_ms, None)
                .map_err(append_error)?
            {
                crate::partition::AppendOutcome::Appended(info) => info,
                crate::partition::AppendOutcome::Duplicate { .. } => {
                    unreachable!("non-idempotent batches are never duplicates")
                }
            };
            let end = info.last_offset.plus(1);
            if !offsets.is_empty() {
                state.pending.push_back(PendingWrite {
                    end: end.get(),
                    group,
                    records: offsets,
                });
            }
            Ok(end)
        })
        .await?;
        partition.make_durable(end).await.map_err(|e| {
            tracing::error!(topic = OFFSETS_TOPIC, partition = index, error = %e,
                "making an offsets write durable failed");
            ApiError::from(ResponseError::CoordinatorNotAvailable)
        })?;
        match tokio::time::timeout(self.commit_timeout, partition.wait_for_hw(end)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(ResponseError::NotCoordinator.into()),
            Err(_) => {
                return Err(ApiError::new(
                    ResponseError::CoordinatorNotAvailable,
                    format!(
                        "__consumer_offsets-{index} did not replicate the write within \
                         offsets.commit.timeout.ms ({:?})",
                        self.commit_timeout
                    ),
                ))
            }
        }
        shard.apply_committed(partition.high_watermark());
        Ok(())
    }

    /// Commits `offsets` of `group` (in partition `index`).
    pub async fn commit(
        &self,
        index: i32,
        group: &str,
        offsets: Vec<(TopicPartition, CommittedOffset)>,
        now_ms: i64,
    ) -> Result<(), ApiError> {
        let writes: Vec<(TopicPartition, Option<CommittedOffset>)> =
            offsets.into_iter().map(|(tp, v)| (tp, Some(v))).collect();
        let records = offset_records(group, &writes);
        self.write(index, group, records, writes, now_ms).await
    }

    /// Stores a group's state, or its tombstone (`None`: the group was deleted).
    pub async fn store_group(
        &self,
        index: i32,
        group: &str,
        snapshot: Option<&GroupSnapshot>,
        now_ms: i64,
    ) -> Result<(), ApiError> {
        let record = (encode_group_key(group), snapshot.map(encode_group_value));
        self.write(index, group, vec![record], Vec::new(), now_ms)
            .await
    }

    /// Deletes the given committed offsets of `group` (all of them when `which` is None).
    pub async fn delete(
        &self,
        index: i32,
        group: &str,
        which: Option<Vec<TopicPartition>>,
        now_ms: i64,
    ) -> Result<usize, ApiError> {
        let targets: Vec<TopicPartition> = {
            let shard = self.shard(index)?;
            let state = shard.state.lock().expect("offset shard lock");
            let Some(g) = state.offsets.get(group) else {
                return Ok(0);
            };
            match which {
                None => g.keys().cloned().collect(),
                Some(w) => w.into_iter().filter(|tp| g.contains_key(tp)).collect(),
            }
        };
        let n = targets.len();
        let writes: Vec<(TopicPartition, Option<CommittedOffset>)> =
            targets.into_iter().map(|tp| (tp, None)).collect();
        let records = offset_records(group, &writes);
        self.write(index, group, records, writes, now_ms).await?;
        Ok(n)
    }

    /// Reads the committed offsets of partition `index` (empty when it is not loaded here).
    fn read<T>(&self, index: i32, f: impl FnOnce(&OffsetCache) -> T) -> Option<T> {
        let shard = self.lock().get(&index).cloned()?;
        let state = shard.state.lock().expect("offset shard lock");
        Some(f(&state.offsets))
    }

    pub fn get(&self, index: i32, group: &str, tp: &TopicPartition) -> Option<CommittedOffset> {
        self.read(index, |c| c.get(group).and_then(|g| g.get(tp).cloned()))
            .flatten()
    }

    /// Every committed offset of `group`.
    pub fn all(&self, index: i32, group: &str) -> Vec<(TopicPartition, CommittedOffset)> {
        self.read(index, |c| {
            c.get(group)
                .map(|g| g.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                .unwrap_or_default()
        })
        .unwrap_or_default()
    }

    pub fn has_offsets(&self, index: i32, group: &str) -> bool {
        self.read(index, |c| c.contains_key(group)).unwrap_or(false)
    }

    /// Groups whose newest commit is older than `cutoff_ms` (retention candidates), with their
    /// partition.
    pub fn groups_idle_since(&self, cutoff_ms: i64) -> Vec<(i32, String)> {
        let mut idle = Vec::new();
        for (index, shard) in self.shards() {
            let state = shard.state.lock().expect("offset shard lock");
            idle.extend(
                state
                    .offsets
                    .iter()
                    .filter(|(_, g)| g.values().all(|v| v.commit_timestamp < cutoff_ms))
                    .map(|(name, _)| (index, name.clone())),
            );
        }
        idle
    }

    /// Every topic some group has committed offsets for, in the loaded partitions.
    pub fn topics(&self) -> std::collections::BTreeSet<String> {
        let mut topics = std::collections::BTreeSet::new();
        for (_, shard) in self.shards() {
            let state = shard.state.lock().expect("offset shard lock");
            topics.extend(
                state
                    .offsets
                    .values()
                    .flat_map(|g| g.keys().map(|(t, _)| t.clone())),
            );
        }
        topics
    }

    /// Drops the offsets of a deleted topic from every group of the loaded partitions
    /// (tombstones, committed); returns the groups left without any offsets.
    pub async fn forget_topic(&self, topic: &str, now_ms: i64) -> Vec<String> {
        let mut affected: Vec<(i32, String, Vec<TopicPartition>)> = Vec::new();
        for (index, shard) in self.shards() {
            let state = shard.state.lock().expect("offset shard lock");
            for (g, offs) in &state.offsets {
                let tps: Vec<_> = offs.keys().filter(|(t, _)| t == topic).cloned().collect();
                if !tps.is_empty() {
                    affected.push((index, g.clone(), tps));
                }
            }
        }
        let mut emptied = Vec::new();
        for (index, group, tps) in affected {
            match self.delete(index, &group, Some(tps), now_ms).await {
                Ok(_) if !self.has_offsets(index, &group) => emptied.push(group),
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(group, topic, error = ?e.code, "could not drop offsets of a deleted topic")
                }
            }
        }
        emptied
    }
}

/// The `__consumer_offsets` records of offset writes of `group`.
fn offset_records(
    group: &str,
    writes: &[(TopicPartition, Option<CommittedOffset>)],
) -> Vec<(Bytes, Option<Bytes>)> {
    writes
        .iter()
        .map(|((t, p), v)| (encode_key(group, t, *p), v.as_ref().map(encode_value)))
        .collect()
}

/// Replays one partition from its log start to its end, or to the first point it cannot read.
fn load_partition(p: &Partition, state: &mut Replayed, stats: &mut LoadStats) {
    let mut offset = p.log.log_start_offset().get();
    let end = p.log.log_end_offset().get();
    while offset < end {
        let stop = |offset: i64, reason: &str| {
            tracing::error!(
                topic = OFFSETS_TOPIC,
                partition = p.index,
                offset,
                log_end = end,
                reason,
                "stopped loading a __consumer_offsets partition at damage; commits after it \
                 are not loaded (the broker serves the rest)"
            );
        };
        let read = match p.log.read(Offset(offset), 1 << 20, Offset(end), true) {
            Ok(r) => r,
            Err(e) => return stop(offset, &e.to_string()),
        };
        if read.data.is_empty() {
            return;
        }
        let outcome = replay_batches(&read.data, p.index, offset, state, stats);
        if let Some(reason) = outcome.stopped {
            return stop(outcome.next, &reason);
        }
        if outcome.next <= offset {
            // The log answered with nothing at or after `offset`: never read it again.
            return stop(offset, "the log made no progress");
        }
        offset = outcome.next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn java_hash_matches_kafka() {
        // Values from java.lang.String#hashCode.
        assert_eq!(java_hash(""), 0);
        assert_eq!(java_hash("a"), 97);
        assert_eq!(java_hash("my-group"), -1_906_497_762); // "my-group".hashCode()
        assert_eq!(partition_for("my-group", 50), 12);
        assert_eq!(partition_for("a", 50), 97 % 50);
    }

    fn commit(offset: i64) -> CommittedOffset {
        CommittedOffset {
            offset,
            leader_epoch: 3,
            metadata: Some("meta".into()),
            commit_timestamp: 1_700_000_000_000,
        }
    }

    #[test]
    fn key_and_value_round_trip() {
        let key = encode_key("g", "orders", 7);
        assert_eq!(
            decode_key(key),
            Ok(RecordKey::Offset {
                group: "g".into(),
                topic: "orders".into(),
                partition: 7
            })
        );
        let v = commit(42);
        assert_eq!(decode_value(encode_value(&v)), Ok(v));
        // Group metadata keys (version 2) name a group's state.
        assert_eq!(
            decode_key(encode_group_key("g")),
            Ok(RecordKey::Group("g".into()))
        );
        let mut unknown = BytesMut::new();
        unknown.put_i16(9);
        assert_eq!(
            decode_key(unknown.freeze()),
            Err(OffsetRecordError::UnknownKeyVersion(9))
        );
        // Truncated input is refused, not a panic.
        let full = encode_value(&commit(1));
        for cut in 0..full.len() {
            assert!(decode_value(full.slice(..cut)).is_err(), "cut {cut}");
        }
        let full = encode_key("group", "topic", 1);
        for cut in 0..full.len() {
            assert!(decode_key(full.slice(..cut)).is_err(), "cut {cut}");
        }
    }

    #[test]
    fn older_and_flexible_value_versions_decode() {
        // v1: offset, metadata, commit timestamp, expire timestamp.
        let mut v1 = BytesMut::new();
        v1.put_i16(1);
        v1.put_i64(5);
        put_str(&mut v1, "m");
        v1.put_i64(77);
        v1.put_i64(99);
        let d = decode_value(v1.freeze()).unwrap();
        assert_eq!((d.offset, d.leader_epoch, d.commit_timestamp), (5, -1, 77));
        // v4: compact metadata string and tagged fields.
        let mut v4 = BytesMut::new();
        v4.put_i16(4);
        v4.put_i64(6);
        v4.put_i32(2);
        v4.put_u8(3); // "ab": length + 1
        v4.put_slice(b"ab");
        v4.put_i64(88);
        v4.put_u8(0); // no tagged fields
        let d = decode_value(v4.freeze()).unwrap();
        assert_eq!(d.metadata.as_deref(), Some("ab"));
        assert_eq!((d.offset, d.leader_epoch, d.commit_timestamp), (6, 2, 88));
        // A compact length that claims far more than there is.
        let mut huge = BytesMut::new();
        huge.put_i16(4);
        huge.put_i64(6);
        huge.put_i32(2);
        huge.put_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
        assert_eq!(
            decode_value(huge.freeze()),
            Err(OffsetRecordError::Truncated("metadata"))
        );
        let mut negative = BytesMut::new();
        negative.put_i16(3);
        negative.put_i64(1);
        negative.put_i32(0);
        negative.put_i16(-7);
        assert_eq!(
            decode_value(negative.freeze()),
            Err(OffsetRecordError::BadLength("metadata"))
        );
    }

    fn at(mut batch: Vec<u8>, base: i64) -> Vec<u8> {
        sluice_protocol::batch::set_base_offset(&mut batch, base);
        batch
    }

    fn key(t: &str, p: i32) -> Option<Bytes> {
        Some(encode_key("g", t, p))
    }

    fn value(o: i64) -> Option<Bytes> {
        Some(encode_value(&commit(o)))
    }

    fn raw(bytes: &[u8]) -> Option<Bytes> {
        Some(Bytes::copy_from_slice(bytes))
    }

    fn replay(data: &[u8], from: i64) -> (OffsetCache, LoadStats, ChunkOutcome) {
        let mut state = Replayed::default();
        let mut stats = LoadStats::default();
        let outcome = replay_batches(data, 3, from, &mut state, &mut stats);
        (state.offsets, stats, outcome)
    }

    fn offset_of(cache: &OffsetCache, t: &str, p: i32) -> Option<i64> {
        cache.get("g")?.get(&(t.to_string(), p)).map(|c| c.offset)
    }

    #[test]
    fn garbage_records_are_skipped_and_the_rest_of_the_batch_loads() {
        let batch = encode_records(
            vec![
                (key("t", 0), value(10)),
                (None, value(1)),
                (raw(&[0, 9, 1]), value(1)),           // key version 9
                (raw(&[0, 1, 0, 50, b'g']), value(1)), // group length past the end
                (raw(&[0, 1, 0, 1, 0xff, 0, 1, b't']), value(1)), // group not UTF-8
                (key("t", 0), raw(&[0, 99, 1, 2, 3])), // value version 99: not a tombstone
                (key("t", 0), raw(&[0, 3, 0, 0])),     // truncated value
                (raw(&[0, 2, 0, 1, b'g']), raw(b"group metadata")), // a group state, garbled
                (key("t", 1), value(11)),
                (key("gone", 0), value(5)),
                (key("gone", 0), None), // tombstone
            ],
            0,
            RecordCompression::None,
        );
        let (cache, stats, outcome) = replay(&batch, 0);
        assert_eq!(
            outcome,
            ChunkOutcome {
                next: 11,
                stopped: None
            }
        );
        assert_eq!(
            offset_of(&cache, "t", 0),
            Some(10),
            "bad values delete nothing"
        );
        assert_eq!(offset_of(&cache, "t", 1), Some(11));
        assert_eq!(offset_of(&cache, "gone", 0), None);
        assert_eq!(stats.skipped_records, 7);
        assert_eq!(stats.records, 4);
        assert_eq!(stats.skipped_batches, 0);
    }

    #[test]
    fn damaged_and_foreign_batches_are_skipped_whole() {
        let good1 = at(
            encode_records(vec![(key("t", 0), value(10))], 0, RecordCompression::None),
            0,
        );
        let mut damaged = at(
            encode_records(
                vec![(key("t", 0), value(20)), (key("t", 1), value(21))],
                0,
                RecordCompression::None,
            ),
            1,
        );
        let n = damaged.len();
        damaged[n - 3] ^= 0x40; // inside the records: the CRC no longer matches
        let compressed = at(
            encode_records(vec![(key("t", 2), value(30))], 0, RecordCompression::Gzip),
            3,
        );
        let mut control = at(
            encode_records(vec![(key("t", 3), value(40))], 0, RecordCompression::None),
            4,
        );
        control[22] |= 0x20; // attributes bit 5: control batch
        sluice_protocol::batch::update_crc(&mut control).unwrap();
        let good2 = at(
            encode_records(vec![(key("t", 4), value(50))], 0, RecordCompression::None),
            5,
        );
        let data = [good1, damaged, compressed, control, good2].concat();

        let (cache, stats, outcome) = replay(&data, 0);
        assert_eq!(
            outcome,
            ChunkOutcome {
                next: 6,
                stopped: None
            }
        );
        assert_eq!(
            offset_of(&cache, "t", 0),
            Some(10),
            "the older commit stands"
        );
        assert_eq!(offset_of(&cache, "t", 1), None);
        assert_eq!(offset_of(&cache, "t", 2), None);
        assert_eq!(offset_of(&cache, "t", 3), None);
        assert_eq!(
            offset_of(&cache, "t", 4),
            Some(50),
            "commits after the damage load"
        );
        assert_eq!(stats.skipped_batches, 3);

        // A re-read from the middle ignores batches before `from`.
        let (cache, _, outcome) = replay(&data, 5);
        assert_eq!(outcome.next, 6);
        assert_eq!(offset_of(&cache, "t", 0), None);
        assert_eq!(offset_of(&cache, "t", 4), Some(50));
    }

    #[test]
    fn broken_framing_stops_after_the_good_prefix() {
        let good = at(
            encode_records(vec![(key("t", 0), value(10))], 0, RecordCompression::None),
            7,
        );
        let mut data = good.clone();
        data.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 8, 0, 0, 0, 3, 1, 2, 3]);
        let (cache, _, outcome) = replay(&data, 7);
        assert_eq!(outcome.next, 8);
        assert!(outcome.stopped.is_some());
        assert_eq!(offset_of(&cache, "t", 0), Some(10));
        // Nothing usable at all: no progress, which the caller treats as a stop.
        let (_, _, outcome) = replay(&[1, 2, 3], 7);
        assert_eq!(outcome.next, 7);
    }

    fn mutate(rng: &mut Rng, good: &[u8]) -> Vec<u8> {
        let mut b = good.to_vec();
        for _ in 0..(rng.next() % 4) {
            let i = (rng.next() as usize) % b.len();
            b[i] = rng.next() as u8;
        }
        let cut = (rng.next() as usize) % (b.len() + 1);
        b.truncate(cut);
        b
    }

    /// Random and mutated keys, values and whole chunks of log: the decoders and the loader
    /// answer, never panic, and the loader never moves backwards.
    use sluice_protocol::batch::testing::Rng;

    fn snapshot() -> GroupSnapshot {
        GroupSnapshot {
            group_id: "g".into(),
            protocol_type: "consumer".into(),
            generation_id: 7,
            protocol_name: Some("range".into()),
            leader: Some("m1".into()),
            current_state_timestamp_ms: 1_700_000_000_000,
            members: vec![
                MemberSnapshot {
                    member_id: "m1".into(),
                    group_instance_id: None,
                    client_id: "c1".into(),
                    client_host: "/127.0.0.1".into(),
                    rebalance_timeout_ms: 30_000,
                    session_timeout_ms: 10_000,
                    subscription: Bytes::from_static(b"sub"),
                    assignment: Bytes::from_static(b"assign-1"),
                },
                MemberSnapshot {
                    member_id: "m2".into(),
                    group_instance_id: Some("static-2".into()),
                    client_id: "c2".into(),
                    client_host: "/127.0.0.2".into(),
                    rebalance_timeout_ms: 45_000,
                    session_timeout_ms: 6_000,
                    subscription: Bytes::new(),
                    assignment: Bytes::from_static(b"assign-2"),
                },
            ],
        }
    }

    #[test]
    fn group_values_round_trip_and_damage_is_an_error() {
        let g = snapshot();
        let encoded = encode_group_value(&g);
        assert_eq!(decode_group_value("g", encoded.clone()), Ok(g.clone()));
        for cut in 0..encoded.len() {
            assert!(
                decode_group_value("g", encoded.slice(..cut)).is_err(),
                "cut {cut}"
            );
        }
        // A member count that lies is an error, not an allocation.
        let mut lying = BytesMut::new();
        lying.put_i16(3);
        put_str(&mut lying, "consumer");
        lying.put_i32(1);
        lying.put_i16(-1);
        lying.put_i16(-1);
        lying.put_i64(0);
        lying.put_i32(i32::MAX);
        assert_eq!(
            decode_group_value("g", lying.freeze()),
            Err(Truncated("member id"))
        );
        let empty = GroupSnapshot {
            protocol_name: None,
            leader: None,
            members: Vec::new(),
            ..g
        };
        assert_eq!(
            decode_group_value("g", encode_group_value(&empty)),
            Ok(empty)
        );
    }

    #[test]
    fn replay_keeps_each_groups_latest_state_and_tombstones_remove_it() {
        let g = snapshot();
        let newer = GroupSnapshot {
            generation_id: 8,
            ..g.clone()
        };
        let state_of = |s: &GroupSnapshot| Some(encode_group_value(s));
        let data = [
            at(
                encode_records(
                    vec![
                        (Some(encode_group_key("g")), state_of(&g)),
                        (key("t", 0), value(5)),
                        (Some(encode_group_key("gone")), state_of(&g)),
                    ],
                    0,
                    RecordCompression::None,
                ),
                0,
            ),
            at(
                encode_records(
                    vec![
                        (Some(encode_group_key("g")), state_of(&newer)),
                        (Some(encode_group_key("gone")), None),
                    ],
                    0,
                    RecordCompression::None,
                ),
                3,
            ),
        ]
        .concat();
        let mut state = Replayed::default();
        let mut stats = LoadStats::default();
        let outcome = replay_batches(&data, 0, 0, &mut state, &mut stats);
        assert_eq!(outcome.stopped, None);
        assert_eq!(state.groups.len(), 1);
        assert_eq!(state.groups["g"].generation_id, 8);
        assert_eq!(offset_of(&state.offsets, "t", 0), Some(5));
        assert_eq!(stats.records, 5);
    }

    #[test]
    fn random_and_mutated_offset_records_never_panic() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let good_key = encode_key("group", "topic", 3).to_vec();
        let good_value = encode_value(&commit(9)).to_vec();
        let good_group = encode_group_value(&snapshot()).to_vec();
        let good_chunk = [
            at(
                encode_records(
                    vec![(key("t", 0), value(10)), (key("t", 1), None)],
                    0,
                    RecordCompression::None,
                ),
                0,
            ),
            at(
                encode_records(vec![(key("t", 2), value(12))], 0, RecordCompression::None),
                2,
            ),
        ]
        .concat();
        for round in 0..20_000 {
            let random = |rng: &mut Rng| -> Vec<u8> {
                let len = (rng.next() % 80) as usize;
                (0..len).map(|_| rng.next() as u8).collect()
            };
            let (k, v) = if round % 2 == 0 {
                (random(&mut rng), random(&mut rng))
            } else {
                (mutate(&mut rng, &good_key), mutate(&mut rng, &good_value))
            };
            let _ = decode_key(Bytes::from(k));
            let _ = decode_group_value("g", Bytes::from(v.clone()));
            let _ = decode_group_value("g", Bytes::from(mutate(&mut rng, &good_group)));
            let _ = decode_value(Bytes::from(v));
            let mut chunk = mutate(&mut rng, &good_chunk);
            if round % 3 == 0 {
                // Keep the CRC right so the records themselves are exercised.
                let _ = sluice_protocol::batch::update_crc(&mut chunk);
            }
            let from = (rng.next() % 4) as i64;
            let (_, _, outcome) = replay(&chunk, from);
            assert!(outcome.next >= from);
        }
    }

    #[test]
    fn batch_holds_all_records_in_one_batch() {
        let b = encode_batch(
            (0..5)
                .map(|i| (encode_key("g", "t", i), Some(Bytes::from_static(b"v"))))
                .collect(),
            1,
        );
        let summary = sluice_protocol::batch::validate_produce_batches(&b).unwrap();
        assert_eq!(summary.batch_count, 1);
        assert_eq!(summary.record_count, 5);
        assert_eq!(summary.producer_id, -1);
    }
}
