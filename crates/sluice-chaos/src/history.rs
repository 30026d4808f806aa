//! The [`History`]: an append-only, thread-safe log of everything the workload and the fault
//! schedule did, in the order the outcomes became known.
//!
//! Every [`Entry`] gets the next op id (0, 1, 2, ...) and its time since the history began, both
//! assigned under one lock, so op-id order is the order of completion (a produce is logged when
//! its acknowledgement or error arrives, a commit when the broker answered). The checker relies
//! on that order for "in ack order" and "within a session".
//!
//! A history is saved as JSON lines, one [`Entry`] per line, so a failing run can be kept and
//! checked again ([`History::write_jsonl`], [`History::read_jsonl`]).

use std::io::{self, BufRead, Write};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use serde::{Deserialize, Serialize};

/// A partition of the workload's topic.
pub type Partition = i32;
/// A position in a partition's log.
pub type Offset = i64;

/// One logged operation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Position in the history; unique and increasing.
    pub id: u64,
    /// Microseconds since the history began.
    pub at_us: u64,
    #[serde(flatten)]
    pub op: Op,
}

/// What a producer asked the broker to wait for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Acks {
    /// `acks=all`: every in-sync replica.
    All,
    /// `acks=1`: the leader only.
    One,
}

impl Acks {
    /// The value of the `acks` client setting.
    pub fn config_value(self) -> &'static str {
        match self {
            Acks::All => "all",
            Acks::One => "1",
        }
    }
}

/// How a produce ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "lowercase")]
pub enum ProduceOutcome {
    /// Acknowledged at this offset: must survive. librdkafka reports -1001
    /// (`RD_KAFKA_OFFSET_INVALID`) for a message it knows was written without knowing where:
    /// an idempotent retry refused as out of sequence after a later batch of the same producer
    /// succeeded, which proves the first attempt landed. Such a value must survive; its offset
    /// is not a claim.
    Ok { offset: Offset },
    /// A definite error: the broker refused it (it may still appear if an earlier attempt of
    /// the same send landed; the checker does not hold it against the broker).
    Failed { error: String },
    /// Timeout or transport error: it may or may not have been written.
    Unknown { error: String },
}

/// How an offset commit ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "lowercase")]
pub enum CommitOutcome {
    Ok,
    Failed { error: String },
    Unknown { error: String },
}

/// One operation and its outcome.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Op {
    /// One record sent by one producer; `value` is unique across the run.
    Produce {
        producer: String,
        idempotent: bool,
        acks: Acks,
        partition: Partition,
        value: String,
        #[serde(flatten)]
        outcome: ProduceOutcome,
    },
    /// One record seen by a reader. `session` changes whenever the reader's position may
    /// legitimately jump (a restart, a rebalance), so reads are only compared within one.
    Read {
        reader: String,
        session: u64,
        partition: Partition,
        offset: Offset,
        value: String,
    },
    /// A reader positioned itself: its next read of `partition` in `session` should be the
    /// first record at or after `offset` (an assigned reader starting from 0).
    Seek {
        reader: String,
        session: u64,
        partition: Partition,
        offset: Offset,
    },
    /// An offset commit by a group member.
    Commit {
        group: String,
        partition: Partition,
        offset: Offset,
        #[serde(flatten)]
        outcome: CommitOutcome,
    },
    /// The workload's topic was created with this many replicas. On a replicated topic an
    /// `acks=1` write is Kafka's "the leader has it": a leader failure before the followers
    /// copy it loses it, and the checker notes that instead of failing.
    Topic { replication_factor: i32 },
    /// A fault injected by the schedule.
    Fault { description: String },
    /// A fault undone (restart, resume, proxy healed).
    Heal { description: String },
}

/// The append-only log. Share it behind an `Arc`.
pub struct History {
    /// When op times are measured from.
    start: Instant,
    entries: Mutex<Vec<Entry>>,
}

impl Default for History {
    fn default() -> Self {
        History::new()
    }
}

impl History {
    pub fn new() -> History {
        History {
            start: Instant::now(),
            entries: Mutex::new(Vec::new()),
        }
    }

    /// A history of entries read back from a file (ids and times as saved).
    pub fn from_entries(entries: Vec<Entry>) -> History {
        History {
            start: Instant::now(),
            entries: Mutex::new(entries),
        }
    }

    /// Appends `op` and returns its id.
    pub fn record(&self, op: Op) -> u64 {
        let mut entries = self.lock();
        let id = entries.last().map_or(0, |e| e.id + 1);
        let at_us = u64::try_from(self.start.elapsed().as_micros()).unwrap_or(u64::MAX);
        entries.push(Entry { id, at_us, op });
        id
    }

    /// A copy of every entry so far, in id order.
    pub fn snapshot(&self) -> Vec<Entry> {
        self.lock().clone()
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// A writer that panicked mid-append left a complete vector behind (push is the only
    /// mutation), so a poisoned lock is still a consistent history.
    fn lock(&self) -> MutexGuard<'_, Vec<Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes one JSON object per line.
    pub fn write_jsonl(&self, mut out: impl Write) -> io::Result<()> {
        for e in self.lock().iter() {
            serde_json::to_writer(&mut out, e)?;
            out.write_all(b"\n")?;
        }
        out.flush()
    }

    /// Reads what [`History::write_jsonl`] wrote; blank lines are skipped.
    pub fn read_jsonl(input: impl BufRead) -> io::Result<History> {
        let mut entries = Vec::new();
        for (n, line) in input.lines().enumerate() {
            let line = line?;
            if line.trim().is_empty() {
                continue;
            }
            let e: Entry = serde_json::from_str(&line).map_err(|e| {
                io::Error::new(io::ErrorKind::InvalidData, format!("line {}: {e}", n + 1))
            })?;
            entries.push(e);
        }
        Ok(History::from_entries(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_increase_and_jsonl_round_trips() {
        let h = History::new();
        let a = h.record(Op::Produce {
            producer: "p0".into(),
            idempotent: true,
            acks: Acks::All,
            partition: 2,
            value: "p0-0".into(),
            outcome: ProduceOutcome::Ok { offset: 7 },
        });
        let b = h.record(Op::Commit {
            group: "g".into(),
            partition: 2,
            offset: 8,
            outcome: CommitOutcome::Unknown {
                error: "timed out".into(),
            },
        });
        let c = h.record(Op::Fault {
            description: "kill -9 node 1".into(),
        });
        assert_eq!((a, b, c), (0, 1, 2));

        let mut buf = Vec::new();
        h.write_jsonl(&mut buf).unwrap();
        let text = String::from_utf8(buf.clone()).unwrap();
        assert_eq!(text.lines().count(), 3);
        assert!(
            text.lines().next().unwrap().contains(r#""op":"produce""#),
            "{text}"
        );
        assert!(text.contains(r#""outcome":"ok","offset":7"#), "{text}");
        let back = History::read_jsonl(&buf[..]).unwrap();
        assert_eq!(back.snapshot(), h.snapshot());
    }

    #[test]
    fn concurrent_appends_get_distinct_ids() {
        let h = std::sync::Arc::new(History::new());
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let h = h.clone();
                std::thread::spawn(move || {
                    for i in 0..100 {
                        h.record(Op::Heal {
                            description: format!("{t}-{i}"),
                        });
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let ids: Vec<u64> = h.snapshot().iter().map(|e| e.id).collect();
        assert_eq!(ids, (0..400).collect::<Vec<_>>());
    }
}
