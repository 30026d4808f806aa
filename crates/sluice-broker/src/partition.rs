//! One partition replica hosted by this broker: its log, its high watermark, its topic's
//! effective configs, its idempotent-producer state, and the fetches waiting for it to move.
//!
//! High watermark (HW): the offset below which consumers may read. On a single node it is the
//! log end offset under `--durability relaxed`, and the durable (fsynced) offset under `fsync`, so a
//! consumer never sees a record that a crash could take back.
//!
//! Producer state is checked and updated under one mutex around the append, so the sequence
//! check and the write are atomic. It is snapshotted to `producer-state.json` in the partition
//! directory at clean shutdown and after each rebuild; on open the snapshot is loaded and the
//! batches after its offset are replayed ([`Partition::load_producer_state`]).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use serde::{Deserialize, Serialize};
use sluice_log::{AppendInfo, Log, LogError};
use sluice_protocol::batch::Batches;
use sluice_types::LeaderEpoch;
use uuid::Uuid;

use crate::config::Durability;
use crate::producer_state::{IncomingBatch, ProducerStateTable, SequenceError, Verdict};
use crate::purgatory::Waiters;
use crate::topic_config::TopicSettings;

const PRODUCER_SNAPSHOT: &str = "producer-state.json";

#[derive(Debug)]
pub enum AppendError {
    /// This broker does not lead the partition (any more).
    NotLeader,
    Log(LogError),
    Sequence(SequenceError),
}

/// What an append did.
#[derive(Debug, Clone, Copy)]
pub enum AppendOutcome {
    Appended(AppendInfo),
    /// An idempotent retry of a batch already in the log, at these offsets; nothing written.
    Duplicate {
        base_offset: i64,
    },
}

#[derive(Serialize, Deserialize)]
struct ProducerSnapshot {
    /// The log end offset the snapshot covers: batches from here on are replayed.
    offset: i64,
    table: ProducerStateTable,
}

pub struct Partition {
    pub topic: String,
    pub topic_id: Uuid,
    pub index: i32,
    pub log: Arc<Log>,
    durability: Durability,
    high_watermark: AtomicI64,
    /// Whether this broker leads the partition, and the leader epoch of the latest image:
    /// appends are stamped with it and fetchers are checked against it.
    is_leader: AtomicBool,
    leader_epoch: AtomicI32,
    /// The topic's effective configs; replaced when they are altered.
    settings: RwLock<Arc<TopicSettings>>,
    producers: Mutex<ProducerStateTable>,
    /// Fetches parked until the HW moves.
    pub waiters: Waiters,
}

impl Partition {
    pub fn new(
        topic: String,
        topic_id: Uuid,
        index: i32,
        log: Log,
        durability: Durability,
        settings: Arc<TopicSettings>,
    ) -> Partition {
        // Everything found on disk at open time is either fsynced already or was recovered.
        let hw = match durability {
            Durability::Fsync => log.durable_offset(),
            Durability::Relaxed => log.log_end_offset(),
        };
        Partition {
            topic,
            topic_id,
            index,
            log: Arc::new(log),
            durability,
            high_watermark: AtomicI64::new(hw),
            is_leader: AtomicBool::new(false),
            leader_epoch: AtomicI32::new(0),
            settings: RwLock::new(settings),
            producers: Mutex::new(ProducerStateTable::default()),
            waiters: Waiters::default(),
        }
    }

    pub fn settings(&self) -> Arc<TopicSettings> {
        self.settings.read().expect("settings lock").clone()
    }

    pub fn set_settings(&self, settings: Arc<TopicSettings>) {
        *self.settings.write().expect("settings lock") = settings;
    }

    /// Applies the leadership the metadata image gives this broker.
    pub fn set_leadership(&self, leads: bool, epoch: LeaderEpoch) {
        // The epoch first: whoever sees `is_leader` sees at least this epoch.
        self.leader_epoch.store(epoch.get(), Ordering::Release);
        self.is_leader.store(leads, Ordering::Release);
        self.waiters.wake_all();
    }

    pub fn is_leader(&self) -> bool {
        self.is_leader.load(Ordering::Acquire)
    }

    pub fn leader_epoch(&self) -> LeaderEpoch {
        LeaderEpoch(self.leader_epoch.load(Ordering::Acquire))
    }

    pub fn high_watermark(&self) -> i64 {
        self.high_watermark.load(Ordering::Acquire)
    }

    fn advance_high_watermark(&self, to: i64) {
        let prev = self.high_watermark.fetch_max(to, Ordering::AcqRel);
        if to > prev {
            self.waiters.wake_all();
        }
    }

    /// Appends validated batches straight from the caller's bytes (the log patches the
    /// assigned offset into what it writes). Runs inline: a write into the page cache, in request
    /// order. Idempotent batches (`producer` given) are checked against the producer state
    /// first; a duplicate is not written again.
    pub fn append(
        &self,
        batches: &[u8],
        now_ms: i64,
        producer: Option<IncomingBatch>,
    ) -> Result<AppendOutcome, AppendError> {
        let mut producers = self.producers.lock().expect("producer state lock");
        if !self.is_leader() {
            return Err(AppendError::NotLeader);
        }
        if let Some(b) = &producer {
            if let Verdict::Duplicate { first_offset, .. } =
                producers.check(b).map_err(AppendError::Sequence)?
            {
                return Ok(AppendOutcome::Duplicate {
                    base_offset: first_offset,
                });
            }
        }
        let info = self
            .log
            .append_from(batches, self.leader_epoch().get(), now_ms)
            .map_err(AppendError::Log)?;
        if let Some(b) = &producer {
            producers.record(b, info.base_offset, info.last_offset, now_ms);
        }
        drop(producers);
        if self.durability == Durability::Relaxed {
            self.advance_high_watermark(info.last_offset + 1);
        }
        Ok(AppendOutcome::Appended(info))
    }

    /// Resolves once everything below `end_offset` is as durable as the configured mode
    /// promises, advancing the HW. Concurrent callers share fsyncs (group commit in the log).
    pub async fn make_durable(self: &Arc<Self>, end_offset: i64) -> Result<(), LogError> {
        if self.durability == Durability::Relaxed {
            return Ok(());
        }
        let me = self.clone();
        let durable = tokio::task::spawn_blocking(move || {
            me.log.flush(end_offset)?;
            Ok::<_, LogError>(me.log.durable_offset())
        })
        .await
        .map_err(|e| LogError::Io(std::io::Error::other(e.to_string())))??;
        self.advance_high_watermark(durable);
        Ok(())
    }

    /// Active producers, for DescribeProducers.
    pub fn producer_state(&self) -> ProducerStateTable {
        self.producers.lock().expect("producer state lock").clone()
    }

    fn snapshot_path(&self) -> PathBuf {
        self.log.dir().join(PRODUCER_SNAPSHOT)
    }

    /// Rebuilds the producer state: the snapshot, then every idempotent batch after it; drops
    /// producers silent for `expiration_ms`. Blocking (start-up).
    pub fn load_producer_state(&self, now_ms: i64, expiration_ms: i64) -> Result<(), LogError> {
        let start = self.log.log_start_offset();
        let end = self.log.log_end_offset();
        let (mut table, mut offset) = match std::fs::read(self.snapshot_path())
            .ok()
            .and_then(|b| serde_json::from_slice::<ProducerSnapshot>(&b).ok())
        {
            // A snapshot beyond the log end describes data that is gone (truncated).
            Some(s) if s.offset <= end && s.offset >= start => (s.table, s.offset),
            _ => (ProducerStateTable::default(), start),
        };
        let replay_from = offset;
        while offset < end {
            let read = self.log.read(offset, 1 << 20, end, true)?;
            if read.data.is_empty() {
                break;
            }
            for item in Batches::new(&read.data) {
                let Ok((h, _)) = item else { break };
                offset = h.last_offset() + 1;
                if h.producer_id >= 0 && !h.is_control() {
                    table.observe(
                        &IncomingBatch {
                            producer_id: h.producer_id,
                            epoch: h.producer_epoch,
                            first_seq: h.base_sequence,
                            last_seq: h.last_sequence(),
                        },
                        h.base_offset,
                        h.last_offset(),
                        h.max_timestamp,
                    );
                }
            }
        }
        table.expire(now_ms, expiration_ms);
        *self.producers.lock().expect("producer state lock") = table;
        if end > replay_from {
            tracing::debug!(topic = %self.topic, partition = self.index, from = replay_from, to = end,
                "producer state rebuilt from the log");
            self.snapshot_producer_state();
        }
        Ok(())
    }

    /// Writes the producer-state snapshot (temp file, fsync, rename). Best effort: a missing or
    /// stale snapshot only costs a longer replay at the next start.
    pub fn snapshot_producer_state(&self) {
        let snapshot = {
            let table = self.producers.lock().expect("producer state lock");
            ProducerSnapshot {
                offset: self.log.log_end_offset(),
                table: table.clone(),
            }
        };
        let path = self.snapshot_path();
        let tmp = path.with_extension("json.tmp");
        let result = serde_json::to_vec(&snapshot)
            .map_err(std::io::Error::other)
            .and_then(|bytes| {
                use std::io::Write;
                let mut f = std::fs::File::create(&tmp)?;
                f.write_all(&bytes)?;
                f.sync_all()?;
                std::fs::rename(&tmp, &path)
            });
        if let Err(e) = result {
            tracing::warn!(topic = %self.topic, partition = self.index, error = %e, "could not write producer-state snapshot");
        }
    }
}
