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

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use kafka_protocol::ResponseError;

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

fn get_str(buf: &mut Bytes) -> Option<String> {
    if buf.remaining() < 2 {
        return None;
    }
    let len = buf.get_i16();
    if len < 0 {
        return Some(String::new());
    }
    let len = len as usize;
    if buf.remaining() < len {
        return None;
    }
    String::from_utf8(buf.split_to(len).to_vec()).ok()
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

/// An offset-commit key; `None` for other record kinds (group metadata, key version 2).
pub fn decode_key(mut key: Bytes) -> Option<(String, String, i32)> {
    if key.remaining() < 2 {
        return None;
    }
    match key.get_i16() {
        0 | 1 => {
            let group = get_str(&mut key)?;
            let topic = get_str(&mut key)?;
            (key.remaining() >= 4).then(|| (group, topic, key.get_i32()))
        }
        _ => None,
    }
}

pub fn decode_value(mut value: Bytes) -> Option<CommittedOffset> {
    if value.remaining() < 2 {
        return None;
    }
    let version = value.get_i16();
    if !(0..=4).contains(&version) || value.remaining() < 8 {
        return None;
    }
    let offset = value.get_i64();
    let leader_epoch = if version >= 3 {
        (value.remaining() >= 4).then(|| value.get_i32())?
    } else {
        -1
    };
    let metadata = get_str(&mut value)?;
    let commit_timestamp = (value.remaining() >= 8).then(|| value.get_i64())?;
    Some(CommittedOffset {
        offset,
        leader_epoch,
        metadata: Some(metadata),
        commit_timestamp,
    })
}

/// Builds one uncompressed batch of `(key, value)` records.
fn encode_batch(records: Vec<(Bytes, Option<Bytes>)>, now_ms: i64) -> Vec<u8> {
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
            key: Some(key),
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
            compression: Compression::None,
        },
    )
    .expect("encoding an uncompressed batch of valid records");
    buf.to_vec()
}

type GroupOffsets = BTreeMap<TopicPartition, CommittedOffset>;

pub struct OffsetStore {
    partitions: Vec<Arc<Partition>>,
    /// group -> committed offsets. Also serializes appends (see the module docs).
    cache: Mutex<HashMap<String, GroupOffsets>>,
}

impl OffsetStore {
    /// Replays every `__consumer_offsets` partition. Blocking; runs before the broker serves.
    pub fn load(partitions: Vec<Arc<Partition>>) -> Result<OffsetStore, sluice_log::LogError> {
        let mut cache: HashMap<String, GroupOffsets> = HashMap::new();
        let mut records = 0usize;
        for p in &partitions {
            let mut offset = p.log.log_start_offset();
            let end = p.log.log_end_offset();
            while offset < end {
                let read = p.log.read(offset, 1 << 20, end, true)?;
                if read.data.is_empty() {
                    break;
                }
                let mut buf = read.data.clone();
                while buf.has_remaining() {
                    let set = match RecordBatchDecoder::decode(&mut buf) {
                        Ok(s) => s,
                        Err(e) => {
                            tracing::warn!(partition = p.index, error = %e, "skipping undecodable batch in __consumer_offsets");
                            buf.clear();
                            break;
                        }
                    };
                    for r in set.records {
                        offset = offset.max(r.offset + 1);
                        let Some((group, topic, partition)) = r.key.and_then(decode_key) else {
                            continue;
                        };
                        records += 1;
                        match r.value.and_then(decode_value) {
                            Some(v) => {
                                cache
                                    .entry(group)
                                    .or_default()
                                    .insert((topic, partition), v);
                            }
                            None => {
                                if let Some(g) = cache.get_mut(&group) {
                                    g.remove(&(topic, partition));
                                    if g.is_empty() {
                                        cache.remove(&group);
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        tracing::info!(groups = cache.len(), records, "loaded committed offsets");
        Ok(OffsetStore {
            partitions,
            cache: Mutex::new(cache),
        })
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
        let end = {
            let mut cache = self.cache.lock().expect("offset cache lock");
            let info = match partition
                .append(&batch, now_ms, None)
                .map_err(ApiError::from_append)?
            {
                crate::partition::AppendOutcome::Appended(info) => info,
                crate::partition::AppendOutcome::Duplicate { .. } => {
                    unreachable!("non-idempotent batches are never duplicates")
                }
            };
            let entry = cache.entry(group.to_string()).or_default();
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
                cache.remove(group);
            }
            info.last_offset + 1
        };
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

    /// Drops the offsets of a deleted topic from every group.
    pub async fn forget_topic(&self, topic: &str, now_ms: i64) {
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
        for (group, tps) in affected {
            if let Err(e) = self.delete(&group, Some(tps), now_ms).await {
                tracing::warn!(group, topic, error = ?e.code, "could not drop offsets of a deleted topic");
            }
        }
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

    #[test]
    fn key_and_value_round_trip() {
        let key = encode_key("g", "orders", 7);
        assert_eq!(decode_key(key), Some(("g".into(), "orders".into(), 7)));
        let v = CommittedOffset {
            offset: 42,
            leader_epoch: 3,
            metadata: Some("meta".into()),
            commit_timestamp: 1_700_000_000_000,
        };
        assert_eq!(decode_value(encode_value(&v)), Some(v));
        // Group metadata keys (version 2) are not offset commits.
        let mut other = BytesMut::new();
        other.put_i16(2);
        put_str(&mut other, "g");
        assert_eq!(decode_key(other.freeze()), None);
        // Truncated input is refused, not a panic.
        let full = encode_value(&CommittedOffset {
            offset: 1,
            leader_epoch: 0,
            metadata: None,
            commit_timestamp: 0,
        });
        for cut in 0..full.len() {
            assert_eq!(decode_value(full.slice(..cut)), None);
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
