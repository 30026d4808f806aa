//! Retention and DeleteRecords: moving the log start forward and deleting whole segments
//! below it.
//!
//! - [`Log::enforce_retention`]: Kafka's `retention.ms` / `retention.bytes`, whole closed
//!   segments only, oldest first (the active segment is never deleted).
//! - [`Log::delete_records_before`]: KIP-107; the log start may land inside a segment, so it is
//!   persisted in the `log-start-offset` checkpoint file and honoured on open.
//!
//! Deleting segments: they leave the segment map under the append lock (readers from then on
//! see the new log start), and are unlinked afterwards. A reader that snapshotted a handle
//! before keeps reading the unlinked file. The directory is not fsynced after an unlink: a
//! segment that comes back after a power loss is an older prefix of the log, which the next
//! retention run deletes again (the persisted log start still hides it from readers).
//!
//! Both move the first leader-epoch entry up to the new log start (Kafka's
//! `truncateFromStart`); the epoch checkpoint follows at the next flush, and open re-applies
//! the log start to it in case a crash came first.

use sluice_types::Offset;

use crate::checkpoint;
use crate::error::LogError;
use crate::log::{Log, State};
use crate::segment::Segment;

/// Kafka's topic-level retention configs that the log enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// `retention.ms`; -1 = keep forever. A closed segment goes once its largest record
    /// timestamp is older than `now - retention_ms`.
    pub retention_ms: i64,
    /// `retention.bytes`; -1 = unlimited. Oldest closed segments go while the log minus the
    /// oldest segment is still at least this big.
    pub retention_bytes: i64,
}

impl Default for RetentionPolicy {
    /// Kafka's defaults: 7 days, unlimited size.
    fn default() -> Self {
        RetentionPolicy {
            retention_ms: 7 * 24 * 60 * 60 * 1000,
            retention_bytes: -1,
        }
    }
}

/// What one [`Log::enforce_retention`] call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RetentionOutcome {
    pub segments_deleted: usize,
    pub bytes_deleted: u64,
    /// The log start after the call.
    pub log_start_offset: Offset,
}

/// One segment as retention sees it, oldest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SegmentSummary {
    pub size: u64,
    /// Largest record timestamp (`None`: empty segment).
    pub max_timestamp: Option<i64>,
}

/// How many of the oldest segments retention deletes. The last segment (the active one) is
/// never counted. By time, deletion stops at the first segment that has not expired; by size,
/// at the first whose removal would bring the log below `retention_bytes`. A segment goes if
/// either rule says so; both rules only ever pick a prefix, so the union is the longer prefix.
pub(crate) fn segments_to_delete(
    segments: &[SegmentSummary],
    policy: &RetentionPolicy,
    now_ms: i64,
) -> usize {
    let closed = &segments[..segments.len().saturating_sub(1)];
    let by_time = if policy.retention_ms < 0 {
        0
    } else {
        let horizon = now_ms.saturating_sub(policy.retention_ms);
        closed
            .iter()
            .take_while(|s| s.max_timestamp.unwrap_or(i64::MIN) < horizon)
            .count()
    };
    let by_size = if policy.retention_bytes < 0 {
        0
    } else {
        let total: u64 = segments.iter().map(|s| s.size).sum();
        let mut excess = i128::from(total) - i128::from(policy.retention_bytes);
        closed
            .iter()
            .take_while(|s| {
                let fits = excess - i128::from(s.size) >= 0;
                if fits {
                    excess -= i128::from(s.size);
                }
                fits
            })
            .count()
    };
    by_time.max(by_size)
}

impl Log {
    /// Deletes whole closed segments past retention (see [`RetentionPolicy`]) and advances the
    /// log start to the first remaining segment (or the DeleteRecords log start, if higher).
    /// Reads below the new log start are `OffsetOutOfRange`.
    pub fn enforce_retention(
        &self,
        policy: &RetentionPolicy,
        now_ms: i64,
    ) -> Result<RetentionOutcome, LogError> {
        self.check_online()?;
        let _maintenance = self.maintenance.lock().map_err(|_| LogError::Offline)?;
        let _flush = self.lock_flush()?;
        let mut st = self.lock_state()?;
        let summaries: Vec<SegmentSummary> = st
            .segments
            .values()
            .map(|s| SegmentSummary {
                size: s.size,
                max_timestamp: s.max_timestamp.map(|(ts, _)| ts),
            })
            .collect();
        let n = segments_to_delete(&summaries, policy, now_ms);
        let victims: Vec<i64> = st.segments.keys().take(n).copied().collect();
        let removed = take_segments(&mut st, &victims);
        st.epochs_follow_log_start();
        let log_start_offset = st.log_start();
        drop(st);
        let bytes_deleted = self.unlink(&removed)?;
        if !removed.is_empty() {
            tracing::info!(
                dir = %self.dir.display(),
                segments = removed.len(),
                bytes = bytes_deleted,
                log_start_offset,
                "retention deleted segments"
            );
        }
        Ok(RetentionOutcome {
            segments_deleted: removed.len(),
            bytes_deleted,
            log_start_offset: Offset(log_start_offset),
        })
    }

    /// DeleteRecords (KIP-107): raises the log start to `offset` (the caller checks it is at
    /// most the high watermark) and deletes the closed segments entirely below it. The log
    /// start may land inside a segment; it is persisted (`log-start-offset`) before it takes
    /// effect, so it survives a restart. A lower `offset` than the current log start changes
    /// nothing. Returns the log start after the call.
    pub fn delete_records_before(&self, offset: Offset) -> Result<Offset, LogError> {
        let offset = offset.get();
        self.check_online()?;
        let _maintenance = self.maintenance.lock().map_err(|_| LogError::Offline)?;
        let _flush = self.lock_flush()?;
        {
            let st = self.lock_state()?;
            let (log_start, log_end) = (st.log_start(), st.log_end());
            if offset < 0 || offset > log_end {
                return Err(LogError::OffsetOutOfRange {
                    offset: Offset(offset),
                    log_start: Offset(log_start),
                    log_end: Offset(log_end),
                });
            }
            if offset <= log_start {
                return Ok(Offset(log_start));
            }
        }
        // Durable first: once readers see the new start it must not move back on restart.
        // Truncation (the only other writer of this file) is excluded by the flush lock.
        checkpoint::write_named(&*self.io, &self.dir, checkpoint::LOG_START_NAME, offset)
            .map_err(|e| self.fail(e))?;
        let mut st = self.lock_state()?;
        st.explicit_log_start = offset;
        let bases: Vec<i64> = st.segments.keys().copied().collect();
        // A segment is entirely below `offset` when the next one starts at or before it.
        let victims: Vec<i64> = bases
            .windows(2)
            .take_while(|w| w[1] <= offset)
            .map(|w| w[0])
            .collect();
        let removed = take_segments(&mut st, &victims);
        st.epochs_follow_log_start();
        let log_start = st.log_start();
        drop(st);
        self.unlink(&removed)?;
        tracing::info!(dir = %self.dir.display(), log_start, deleted_segments = removed.len(), "log start raised by DeleteRecords");
        Ok(Offset(log_start))
    }

    /// Unlinks segments already taken out of the map; returns their bytes. The caller holds
    /// the flush lock, so truncation cannot create a file of the same name in between.
    fn unlink(&self, removed: &[Segment]) -> Result<u64, LogError> {
        let mut bytes = 0;
        for seg in removed {
            bytes += seg.size;
            Segment::remove_files(&*self.io, &self.dir, seg.base_offset)?;
        }
        Ok(bytes)
    }
}

/// Removes `bases` (never the active segment) from the map.
fn take_segments(st: &mut State, bases: &[i64]) -> Vec<Segment> {
    let active = st.active().base_offset;
    let removed: Vec<Segment> = bases
        .iter()
        .filter(|&&b| b != active)
        .filter_map(|b| st.segments.remove(b))
        .collect();
    if !removed.is_empty() {
        st.recompute_max_timestamp();
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(size: u64, ts: i64) -> SegmentSummary {
        SegmentSummary {
            size,
            max_timestamp: Some(ts),
        }
    }

    #[test]
    fn time_rule_stops_at_the_first_unexpired_segment() {
        let segs = [seg(10, 100), seg(10, 500), seg(10, 200), seg(10, 50)];
        let p = |ms| RetentionPolicy {
            retention_ms: ms,
            retention_bytes: -1,
        };
        assert_eq!(segments_to_delete(&segs, &p(-1), 1000), 0);
        assert_eq!(segments_to_delete(&segs, &p(800), 1000), 1); // horizon 200: 100 < 200
        assert_eq!(segments_to_delete(&segs, &p(400), 1000), 3); // horizon 600
                                                                 // The active segment is never deleted, however old.
        assert_eq!(segments_to_delete(&segs, &p(0), 10_000), 3);
    }

    #[test]
    fn size_rule_keeps_at_least_retention_bytes() {
        let segs = [seg(100, 0), seg(100, 0), seg(100, 0), seg(30, 0)];
        let p = |bytes| RetentionPolicy {
            retention_ms: -1,
            retention_bytes: bytes,
        };
        assert_eq!(segments_to_delete(&segs, &p(-1), 0), 0);
        assert_eq!(segments_to_delete(&segs, &p(330), 0), 0);
        assert_eq!(segments_to_delete(&segs, &p(230), 0), 1);
        assert_eq!(segments_to_delete(&segs, &p(229), 0), 1);
        assert_eq!(segments_to_delete(&segs, &p(130), 0), 2);
        assert_eq!(segments_to_delete(&segs, &p(0), 0), 3);
        assert_eq!(segments_to_delete(&[seg(5, 0)], &p(0), 0), 0);
        assert_eq!(segments_to_delete(&[], &p(0), 0), 0);
    }
}
