//! Background log maintenance: retention (every `log.retention.check.interval.ms`) and
//! compaction (every `log.cleaner.backoff.ms`) over every hosted partition, each according to
//! its topic's effective configs.
//!
//! The log does the work (`enforce_retention`, `clean`); this task only schedules it, on the
//! blocking pool, one partition at a time, so produce and fetch keep their cores. Compaction only
//! runs when the log says a pass is due (dirty ratio or max lag), so idle logs cost nothing.

use std::sync::Arc;
use std::time::Duration;

use sluice_log::{CleanOptions, RetentionPolicy};

use crate::broker::Broker;
use crate::partition::Partition;

/// One retention pass over a partition (blocking).
fn retain(p: &Partition, now: i64) {
    let s = p.settings();
    if !s.delete {
        return;
    }
    let policy = RetentionPolicy {
        retention_ms: s.retention_ms,
        retention_bytes: s.retention_bytes,
    };
    match p.log.enforce_retention(&policy, now) {
        Ok(o) if o.segments_deleted > 0 => tracing::info!(
            topic = %p.topic, partition = p.index, segments = o.segments_deleted,
            bytes = o.bytes_deleted, log_start_offset = o.log_start_offset.get(),
            "retention deleted segments"
        ),
        Ok(_) => {}
        Err(e) => {
            tracing::error!(topic = %p.topic, partition = p.index, error = %e, "retention failed")
        }
    }
}

/// One compaction pass over a partition if one is due (blocking).
fn compact(p: &Partition, now: i64) {
    let s = p.settings();
    if !s.compact {
        return;
    }
    let opts = CleanOptions {
        now_ms: now,
        delete_retention_ms: s.delete_retention_ms,
        min_compaction_lag_ms: s.min_compaction_lag_ms,
        max_compaction_lag_ms: s.max_compaction_lag_ms,
        min_cleanable_dirty_ratio: s.min_cleanable_dirty_ratio,
        force: false,
    };
    if !p.log.cleaning_status().should_clean(&opts) {
        return;
    }
    match p.log.clean(&opts) {
        Ok(o) if o.cleaned => tracing::info!(
            topic = %p.topic, partition = p.index, records_removed = o.records_removed,
            tombstones_removed = o.tombstones_removed, bytes_before = o.bytes_before,
            bytes_after = o.bytes_after, "compacted"
        ),
        Ok(_) => {}
        Err(e) => {
            tracing::error!(topic = %p.topic, partition = p.index, error = %e, "compaction failed")
        }
    }
}

/// How often every hosted partition's high watermark is written to
/// `replication-offset-checkpoint` (Kafka's `replica.high.watermark.checkpoint.interval.ms`
/// default). Also written at clean shutdown.
const HW_CHECKPOINT_INTERVAL: Duration = Duration::from_millis(5_000);

pub async fn run(broker: Arc<Broker>) {
    let mut stopping = broker.stopping.subscribe();
    // Not dynamic: the settings the broker started with.
    let retention_every = broker.config.settings.log_retention_check_interval;
    let cleaner_every = broker.config.settings.log_cleaner_backoff;
    let start = tokio::time::Instant::now();
    let mut next_retention = start + retention_every;
    let mut next_clean = start + cleaner_every;
    let mut next_hw_checkpoint = start + HW_CHECKPOINT_INTERVAL;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(next_retention.min(next_clean).min(next_hw_checkpoint)) => {}
            _ = stopping.wait_for(|s| *s) => return,
        }
        let now = tokio::time::Instant::now();
        if now >= next_hw_checkpoint {
            next_hw_checkpoint = now + HW_CHECKPOINT_INTERVAL;
            let replicas = broker.replicas.clone();
            if let Err(e) =
                tokio::task::spawn_blocking(move || replicas.checkpoint_high_watermarks()).await
            {
                tracing::error!(error = %e, "high-watermark checkpoint task failed");
            }
        }
        if now < next_retention && now < next_clean {
            continue;
        }
        let do_retention = now >= next_retention;
        let do_clean = now >= next_clean;
        if do_retention {
            next_retention = now + retention_every;
        }
        if do_clean {
            next_clean = now + cleaner_every;
        }
        for p in broker.replicas.all() {
            if *stopping.borrow() {
                return;
            }
            let now = broker.clock.now_ms();
            let work = tokio::task::spawn_blocking(move || {
                if do_retention {
                    retain(&p, now);
                }
                if do_clean {
                    compact(&p, now);
                }
            });
            if let Err(e) = work.await {
                tracing::error!(error = %e, "log maintenance task failed");
            }
        }
    }
}
