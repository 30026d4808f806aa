//! One partition replica hosted by this broker: its log, its high watermark and the fetches
//! waiting for it to move.
//!
//! High watermark (HW): the offset below which consumers may read. On a single node it is the
//! log end offset under `--durability relaxed`, and the durable (fsynced) offset under `fsync`, so a
//! consumer never sees a record that a crash could take back.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use sluice_log::{AppendInfo, Log, LogError};
use uuid::Uuid;

use crate::config::Durability;
use crate::purgatory::Waiters;

pub struct Partition {
    pub topic: String,
    pub topic_id: Uuid,
    pub index: i32,
    pub log: Arc<Log>,
    durability: Durability,
    high_watermark: AtomicI64,
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
            waiters: Waiters::default(),
        }
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

    /// Appends validated batches (offsets are assigned in `batches`, in place). Runs inline: a
    /// write into the page cache, in request order.
    pub fn append(&self, batches: &mut [u8], now_ms: i64) -> Result<AppendInfo, LogError> {
        let info = self.log.append(batches, 0, now_ms)?;
        if self.durability == Durability::Relaxed {
            self.advance_high_watermark(info.last_offset + 1);
        }
        Ok(info)
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
}
