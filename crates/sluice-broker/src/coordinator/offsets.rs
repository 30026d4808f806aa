//! Committed offsets, stored in the internal compacted topic `__consumer_offsets`.
//!
//! A group's commits live in partition `abs(javaHashCode(group)) % offsets.topic.num.partitions`,
//! as in Kafka, so tools that know Kafka's layout find them. Records use Kafka's schemas:
//!
//! ```text
//! key   (OffsetCommitKey v1):   version i16 = 1 | group string | topic string | partition i32
//! value (OffsetCommitValue v3): version i16 = 3 | offset i64 | leader_epoch i32 | metadata string | commit_timestamp i64
//! tombstone: the same key with a null value (offset deleted)
//! ```
//!
//! Commits are appended and made durable before they are acknowledged; the in-memory cache is
//! updated in append order under the same lock, so the cache always equals a replay of the log.
//! At start-up every partition is replayed into the cache before the broker serves anyone.
//!
//! # Loading untrusted bytes
//!
//! The partitions are read back from disk, so the loader ([`replay_batches`]) treats every byte
//! as untrusted: no panic, no allocation sized by a number it read, and always progress.
//! - A record that is well framed but not understood (no key, unknown key version, truncated
//!   fields, a value that does not decode) is skipped with a warning naming partition and
//!   offset. A bad value is *not* taken as a tombstone: that would delete a good older commit.
//!   Group-metadata keys (version 2, written by Kafka, never by Sluice) are skipped quietly.
//! - A batch that fails its CRC or does not decode is skipped whole with an error; loading goes
//!   on with the next batch (the log's framing still holds, and stopping would also hide every
//!   commit made after the damage, at this start and every later one). Its commits are lost;
//!   the group's older commits for those partitions, if any, are what it sees.
//! - Compressed and control batches are skipped with a warning: this coordinator writes
//!   neither, and decompression of untrusted bytes is unbounded.
//! - When the log itself cannot be read further (framing lost, I/O error), loading that
//!   partition stops there with an error and the broker serves what was loaded.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::records::{
    Compression as RecordCompression, Record, RecordBatchEncoder, RecordEncodeOptions,
    TimestampType,
};
use kafka_protocol::ResponseError;
use sluice_protocol::batch::{verify_crc, Batches, Compression};
use sluice_types::Offset;
use thiserror::Error;

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

/// An offset-commit key as `(group, topic, partition)`; `Ok(None)` for group-metadata keys
/// (version 2), which this coordinator does not use.
pub fn decode_key(mut key: Bytes) -> Result<Option<(String, String, i32)>, OffsetRecordError> {
    match get_i16(&mut key, "key version")? {
        0 | 1 => {
            let group = get_str(&mut key, "group id")?;
            let topic = get_str(&mut key, "topic")?;
            let partition = get_i32(&mut key, "partition")?;
            Ok(Some((group, topic, partition)))
        }
        2 => Ok(None),
        v => Err(OffsetRecordError::UnknownKeyVersion(v)),
    }
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

/// Applies the commits in `data` (whole v2 batches, as a log read returns them) to `cache`.
/// Batches ending before `from` were applied already and are ignored. Pure and total: any
/// bytes give an outcome, never a panic (see the module docs for what is skipped).
pub fn replay_batches(
    data: &[u8],
    partition: i32,
    from: i64,
    cache: &mut OffsetCache,
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
            apply_record(r, partition, cache, stats);
        }
    }
    ChunkOutcome {
        next,
        stopped: None,
    }
}

fn apply_record(r: Record, partition: i32, cache: &mut OffsetCache, stats: &mut LoadStats) {
    let key = match r.key.ok_or(OffsetRecordError::NoKey).and_then(decode_key) {
        Ok(Some(k)) => k,
        Ok(None) => return,
        Err(e) => return stats.warn_record(partition, r.offset, &e),
    };
    let (group, topic, tp_partition) = key;
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

pub struct OffsetStore {
    partitions: Vec<Arc<Partition>>,
    /// group -> committed offsets. Also serializes appends (see the module docs).
    /// Shared with the blocking task that appends (see [`OffsetStore::write`]).
    cache: Arc<Mutex<OffsetCache>>,
}

impl OffsetStore {
    /// Replays every `__consumer_offsets` partition. Blocking; runs before the broker serves.
    /// Never fails: damage is skipped or stops one partition's load, with an error logged.
    pub fn load(partitions: Vec<Arc<Partition>>) -> OffsetStore {
        let mut cache = OffsetCache::new();
        let mut total = LoadStats::default();
        for p in &partitions {
            let mut stats = LoadStats::default();
            load_partition(p, &mut cache, &mut stats);
            if stats.skipped_records > WARNINGS_PER_PARTITION {
                tracing::warn!(
                    topic = OFFSETS_TOPIC,
                    partition = p.index,
                    skipped_records = stats.skipped_records,
                    "skipped more records of __consumer_offsets than were logged one by one"
                );
            }
            total.records += stats.records;
            total.skipped_records += stats.skipped_records;
            total.skipped_batches += stats.skipped_batches;
        }
        tracing::info!(
            groups = cache.len(),
            records = total.records,
            skipped_records = total.skipped_records,
            skipped_batches = total.skipped_batches,
            "loaded committed offsets"
        );
        OffsetStore {
            partitions,
            cache: Arc::new(Mutex::new(cache)),
        }
    }

    fn partition(&self, group: &str) -> &Arc<Partition> {
        &self.partitions[partition_for(group, self.partitions.len())]
    }

    /// Appends `records` for `group`, applies them to the cache, and waits until durable.
    async fn write(
        &self,
        group: &str,
        records: Vec<(TopicPartition, Option<CommittedOffset>)>,
        now_ms: i64,
    ) -> Result<(), ApiError> {
        if records.is_empty() {
            return Ok(());
        }
        let partition = self.partition(group).clone();
        let batch = encode_batch(
            records
                .iter()
                .map(|((t, p), v)| (encode_key(group, t, *p), v.as_ref().map(encode_value)))
                .collect(),
            now_ms,
        );
        // The append can wait on the disk (a throttled pwrite): off the reactor. The cache lock
        // is held across it so the cache changes in log order.
        let (cache, appender, group_name) =
            (self.cache.clone(), partition.clone(), group.to_string());
        let end = crate::blocking::off_reactor(move || -> Result<Offset, ApiError> {
            let mut cache = cache.lock().expect("offset cache lock");
            let info = match appender
                .append(&batch, now_ms, None)
                .map_err(ApiError::from_append)?
            {
                crate::partition::AppendOutcome::Appended(info) => info,
                crate::partition::AppendOutcome::Duplicate { .. } => {
                    unreachable!("non-idempotent batches are never duplicates")
                }
            };
            let entry = cache.entry(group_name.clone()).or_default();
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
                cache.remove(&group_name);
            }
            Ok(info.last_offset.plus(1))
        })
        .await?;
        partition.make_durable(end).await.map_err(|e| {
            // Kafka answers a failed offsets write with a retriable coordinator error.
            tracing::error!(group, error = %e, "committing offsets failed");
            ApiError::from(ResponseError::CoordinatorNotAvailable)
        })
    }

    pub async fn commit(
        &self,
        group: &str,
        offsets: Vec<(TopicPartition, CommittedOffset)>,
        now_ms: i64,
    ) -> Result<(), ApiError> {
        self.write(
            group,
            offsets.into_iter().map(|(tp, v)| (tp, Some(v))).collect(),
            now_ms,
        )
        .await
    }

    /// Deletes the given offsets of `group` (all of them when `which` is None).
    pub async fn delete(
        &self,
        group: &str,
        which: Option<Vec<TopicPartition>>,
        now_ms: i64,
    ) -> Result<usize, ApiError> {
        let targets: Vec<TopicPartition> = {
            let cache = self.cache.lock().expect("offset cache lock");
            let Some(g) = cache.get(group) else {
                return Ok(0);
            };
            match which {
                None => g.keys().cloned().collect(),
                Some(w) => w.into_iter().filter(|tp| g.contains_key(tp)).collect(),
            }
        };
        let n = targets.len();
        self.write(
            group,
            targets.into_iter().map(|tp| (tp, None)).collect(),
            now_ms,
        )
        .await?;
        Ok(n)
    }

    pub fn get(&self, group: &str, tp: &TopicPartition) -> Option<CommittedOffset> {
        self.cache
            .lock()
            .expect("offset cache lock")
            .get(group)
            .and_then(|g| g.get(tp).cloned())
    }

    /// Every committed offset of `group`.
    pub fn all(&self, group: &str) -> Vec<(TopicPartition, CommittedOffset)> {
        self.cache
            .lock()
            .expect("offset cache lock")
            .get(group)
            .map(|g| g.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default()
    }

    pub fn has_offsets(&self, group: &str) -> bool {
        self.cache
            .lock()
            .expect("offset cache lock")
            .contains_key(group)
    }

    pub fn groups(&self) -> Vec<String> {
        self.cache
            .lock()
            .expect("offset cache lock")
            .keys()
            .cloned()
            .collect()
    }

    /// Groups whose newest commit is older than `cutoff_ms` (retention candidates).
    pub fn groups_idle_since(&self, cutoff_ms: i64) -> Vec<String> {
        self.cache
            .lock()
            .expect("offset cache lock")
            .iter()
            .filter(|(_, g)| g.values().all(|v| v.commit_timestamp < cutoff_ms))
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// Every topic some group has committed offsets for.
    pub fn topics(&self) -> std::collections::BTreeSet<String> {
        self.cache
            .lock()
            .expect("offset cache lock")
            .values()
            .flat_map(|g| g.keys().map(|(t, _)| t.clone()))
            .collect()
    }

    /// Drops the offsets of a deleted topic from every group (tombstones, made durable);
    /// returns the groups left without any offsets.
    pub async fn forget_topic(&self, topic: &str, now_ms: i64) -> Vec<String> {
        let affected: Vec<(String, Vec<TopicPartition>)> = {
            let cache = self.cache.lock().expect("offset cache lock");
            cache
                .iter()
                .filter_map(|(g, offs)| {
                    let tps: Vec<_> = offs.keys().filter(|(t, _)| t == topic).cloned().collect();
                    (!tps.is_empty()).then(|| (g.clone(), tps))
                })
                .collect()
        };
        let mut emptied = Vec::new();
        for (group, tps) in affected {
            match self.delete(&group, Some(tps), now_ms).await {
                Ok(_) if !self.has_offsets(&group) => emptied.push(group),
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(group, topic, error = ?e.code, "could not drop offsets of a deleted topic")
                }
            }
        }
        emptied
    }
}

/// Replays one partition from its log start to its end, or to the first point it cannot read.
fn load_partition(p: &Partition, cache: &mut OffsetCache, stats: &mut LoadStats) {
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
        let outcome = replay_batches(&read.data, p.index, offset, cache, stats);
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
        assert_eq!(decode_key(key), Ok(Some(("g".into(), "orders".into(), 7))));
        let v = commit(42);
        assert_eq!(decode_value(encode_value(&v)), Ok(v));
        // Group metadata keys (version 2) are not offset commits.
        let mut other = BytesMut::new();
        other.put_i16(2);
        put_str(&mut other, "g");
        assert_eq!(decode_key(other.freeze()), Ok(None));
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
        let mut cache = OffsetCache::new();
        let mut stats = LoadStats::default();
        let outcome = replay_batches(data, 3, from, &mut cache, &mut stats);
        (cache, stats, outcome)
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
                (raw(&[0, 2, 0, 1, b'g']), raw(b"group metadata")), // quietly not ours
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
        assert_eq!(stats.skipped_records, 6);
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

    #[test]
    fn random_and_mutated_offset_records_never_panic() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let good_key = encode_key("group", "topic", 3).to_vec();
        let good_value = encode_value(&commit(9)).to_vec();
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
