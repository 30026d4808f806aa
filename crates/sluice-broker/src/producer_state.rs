//! Idempotent-producer state of one partition (Kafka's `ProducerStateManager`), pure: no I/O,
//! time passed in.
//!
//! Per producer id the table keeps the current epoch and the last five appended batches'
//! sequence ranges and offsets. A produce of an idempotent batch is first checked here:
//! - an exact duplicate of a cached batch answers with the original offsets and is not appended;
//! - a sequence gap is OUT_OF_ORDER_SEQUENCE_NUMBER;
//! - an older epoch is INVALID_PRODUCER_EPOCH; a newer epoch must restart at sequence 0;
//! - a producer id with no state here whose first sequence is not 0 is UNKNOWN_PRODUCER_ID
//!   (its state was lost, e.g. expired); Kafka's client then resets its sequences.
//!
//! The table is rebuilt after a restart from a snapshot plus the batches appended after it
//! ([`ProducerStateTable::observe`]), so retries across restarts are still de-duplicated.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

/// How many recent batches per producer are remembered for duplicate detection (Kafka: 5,
/// matching `max.in.flight.requests.per.connection` <= 5 for idempotent producers).
pub const BATCHES_PER_PRODUCER: usize = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchMeta {
    pub first_seq: i32,
    pub last_seq: i32,
    pub first_offset: i64,
    pub last_offset: i64,
    pub timestamp: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerEntry {
    pub epoch: i16,
    pub batches: VecDeque<BatchMeta>,
    /// Wall-clock time of the last append, for expiration.
    pub last_update_ms: i64,
}

impl ProducerEntry {
    pub fn last_seq(&self) -> Option<i32> {
        self.batches.back().map(|b| b.last_seq)
    }
}

/// The producer fields of an incoming batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IncomingBatch {
    pub producer_id: i64,
    pub epoch: i16,
    pub first_seq: i32,
    pub last_seq: i32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceError {
    OutOfOrder,
    InvalidEpoch,
    UnknownProducer,
}

/// What to do with an incoming idempotent batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Append it, then [`ProducerStateTable::record`] the result.
    Append,
    /// Already in the log at these offsets: answer with them, do not append.
    Duplicate { first_offset: i64, last_offset: i64 },
}

/// Kafka's sequence arithmetic: after i32::MAX comes 0.
fn next_seq(seq: i32) -> i32 {
    if seq == i32::MAX {
        0
    } else {
        seq + 1
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerStateTable {
    producers: BTreeMap<i64, ProducerEntry>,
}

impl ProducerStateTable {
    pub fn check(&self, b: &IncomingBatch) -> Result<Verdict, SequenceError> {
        let Some(entry) = self.producers.get(&b.producer_id) else {
            return if b.first_seq == 0 {
                Ok(Verdict::Append)
            } else {
                Err(SequenceError::UnknownProducer)
            };
        };
        if b.epoch < entry.epoch {
            return Err(SequenceError::InvalidEpoch);
        }
        if b.epoch > entry.epoch {
            // A bumped epoch restarts the sequence.
            return if b.first_seq == 0 {
                Ok(Verdict::Append)
            } else {
                Err(SequenceError::OutOfOrder)
            };
        }
        if let Some(dup) = entry
            .batches
            .iter()
            .find(|m| m.first_seq == b.first_seq && m.last_seq == b.last_seq)
        {
            return Ok(Verdict::Duplicate {
                first_offset: dup.first_offset,
                last_offset: dup.last_offset,
            });
        }
        match entry.last_seq() {
            Some(last) if next_seq(last) == b.first_seq => Ok(Verdict::Append),
            // Every cached batch was evicted (cannot happen while batches are recorded, but a
            // snapshot might hold an entry without batches): only a fresh start is trustworthy.
            None if b.first_seq == 0 => Ok(Verdict::Append),
            _ => Err(SequenceError::OutOfOrder),
        }
    }

    /// Records an appended batch (after a successful append, or while rebuilding from the log).
    pub fn record(&mut self, b: &IncomingBatch, first_offset: i64, last_offset: i64, now_ms: i64) {
        let entry = self
            .producers
            .entry(b.producer_id)
            .or_insert_with(|| ProducerEntry {
                epoch: b.epoch,
                batches: VecDeque::new(),
                last_update_ms: now_ms,
            });
        if b.epoch != entry.epoch {
            entry.epoch = b.epoch;
            entry.batches.clear();
        }
        entry.batches.push_back(BatchMeta {
            first_seq: b.first_seq,
            last_seq: b.last_seq,
            first_offset,
            last_offset,
            timestamp: now_ms,
        });
        while entry.batches.len() > BATCHES_PER_PRODUCER {
            entry.batches.pop_front();
        }
        entry.last_update_ms = entry.last_update_ms.max(now_ms);
    }

    /// Replays a batch found in the log (recovery): same as `record`, but a batch the table
    /// already has (from a snapshot) is not recorded twice.
    pub fn observe(&mut self, b: &IncomingBatch, first_offset: i64, last_offset: i64, ts_ms: i64) {
        if let Some(e) = self.producers.get(&b.producer_id) {
            if e.batches.iter().any(|m| m.first_offset == first_offset) {
                return;
            }
        }
        self.record(b, first_offset, last_offset, ts_ms);
    }

    /// Drops producers silent for `expiration_ms` or longer (`producer.id.expiration.ms`).
    pub fn expire(&mut self, now_ms: i64, expiration_ms: i64) {
        self.producers
            .retain(|_, e| now_ms - e.last_update_ms < expiration_ms);
    }

    /// Forgets batches at or after `offset` (the log was truncated there).
    pub fn truncate_from(&mut self, offset: i64) {
        for e in self.producers.values_mut() {
            e.batches.retain(|m| m.last_offset < offset);
        }
        self.producers.retain(|_, e| !e.batches.is_empty());
    }

    /// The state of one producer id, if any.
    pub fn get(&self, producer_id: i64) -> Option<&ProducerEntry> {
        self.producers.get(&producer_id)
    }

    pub fn producers(&self) -> impl Iterator<Item = (&i64, &ProducerEntry)> {
        self.producers.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(pid: i64, epoch: i16, first: i32, last: i32) -> IncomingBatch {
        IncomingBatch {
            producer_id: pid,
            epoch,
            first_seq: first,
            last_seq: last,
        }
    }

    #[test]
    fn in_order_duplicates_and_gaps() {
        let mut t = ProducerStateTable::default();
        let b0 = batch(7, 0, 0, 9);
        assert_eq!(t.check(&b0), Ok(Verdict::Append));
        t.record(&b0, 100, 109, 1);
        // The same batch again (a retry whose response was lost): original offsets, no append.
        assert_eq!(
            t.check(&b0),
            Ok(Verdict::Duplicate {
                first_offset: 100,
                last_offset: 109
            })
        );
        let b1 = batch(7, 0, 10, 19);
        assert_eq!(t.check(&b1), Ok(Verdict::Append));
        t.record(&b1, 110, 119, 2);
        // A gap.
        assert_eq!(
            t.check(&batch(7, 0, 25, 30)),
            Err(SequenceError::OutOfOrder)
        );
        // A stale epoch.
        let mut t2 = t.clone();
        t2.record(&batch(7, 1, 0, 0), 120, 120, 3);
        assert_eq!(
            t2.check(&batch(7, 0, 20, 20)),
            Err(SequenceError::InvalidEpoch)
        );
        // A new epoch must start at 0.
        assert_eq!(t.check(&batch(7, 1, 5, 5)), Err(SequenceError::OutOfOrder));
        assert_eq!(t.check(&batch(7, 1, 0, 5)), Ok(Verdict::Append));
        // Unknown producer not at 0.
        assert_eq!(
            t.check(&batch(8, 0, 3, 4)),
            Err(SequenceError::UnknownProducer)
        );
    }

    #[test]
    fn only_five_batches_are_remembered() {
        let mut t = ProducerStateTable::default();
        for i in 0..7 {
            t.record(&batch(1, 0, i, i), i as i64, i as i64, 0);
        }
        // Batches 0 and 1 fell out of the cache: a retry of them is no longer recognised.
        assert_eq!(t.check(&batch(1, 0, 1, 1)), Err(SequenceError::OutOfOrder));
        assert_eq!(
            t.check(&batch(1, 0, 2, 2)),
            Ok(Verdict::Duplicate {
                first_offset: 2,
                last_offset: 2
            })
        );
    }

    #[test]
    fn sequence_wraps_and_state_rebuilds() {
        let mut t = ProducerStateTable::default();
        t.record(&batch(1, 0, i32::MAX - 1, i32::MAX), 0, 1, 0);
        assert_eq!(t.check(&batch(1, 0, 0, 3)), Ok(Verdict::Append));
        // Replaying a batch the snapshot already holds does not duplicate it.
        let before = t.clone();
        t.observe(&batch(1, 0, i32::MAX - 1, i32::MAX), 0, 1, 0);
        assert_eq!(t, before);
        t.truncate_from(0);
        assert_eq!(t.producers().count(), 0);
    }

    #[test]
    fn silent_producers_expire() {
        let mut t = ProducerStateTable::default();
        t.record(&batch(1, 0, 0, 0), 0, 0, 1_000);
        let day = 86_400_000;
        t.expire(1_000 + day - 1, day);
        assert_eq!(t.producers().count(), 1);
        t.expire(1_000 + day, day);
        assert_eq!(t.producers().count(), 0);
    }
}
