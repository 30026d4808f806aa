//! [`FollowerProgress`]: what the leader knows of one follower, learnt from its fetches (Kafka's
//! `Replica` / `ReplicaState`).
//!
//! "Caught up" is about time, not offsets alone: under a steady stream of small produces a
//! healthy follower's fetch offset is almost never equal to the leader's end. So the leader
//! remembers, per follower, the last instant the follower was known to hold everything the leader
//! had, and calls it caught up while that instant is less than `replica.lag.time.max.ms` old.

use sluice_types::Offset;

/// One follower's fetch progress, as the leader records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FollowerProgress {
    /// The follower's end: the offset of its latest fetch ([`Offset::NONE`] before the first
    /// fetch to this leader). In fsync mode the follower only fetches past what it has fsynced,
    /// so this counts durable copies.
    pub end: Offset,
    /// The leader's end when the previous fetch arrived (the highest seen): a fetch reaching it
    /// proves the follower was caught up at that previous fetch's time.
    pub last_fetch_leader_end: Offset,
    /// When the previous fetch arrived; `None` before any fetch to this leader epoch.
    pub last_fetch_ms: Option<i64>,
    /// The latest instant at which the follower held everything the leader had; `None` if
    /// never (since this replica became leader).
    pub last_caught_up_ms: Option<i64>,
    /// The broker epoch of the follower's latest fetch (-1: none given yet).
    pub broker_epoch: i64,
}

impl FollowerProgress {
    /// A follower this leader has heard nothing from. `in_isr` followers are given the benefit of
    /// the doubt (caught up "now"), so a new leader does not drop its whole ISR at once; others
    /// start never caught up, so they do not hold the high watermark back.
    pub(crate) fn new(in_isr: bool, now_ms: i64) -> Self {
        FollowerProgress {
            end: Offset::NONE,
            last_fetch_leader_end: Offset::NONE,
            last_fetch_ms: None,
            last_caught_up_ms: in_isr.then_some(now_ms),
            broker_epoch: -1,
        }
    }

    /// The same follower under a new leader epoch of the same leader: its end is still true, but
    /// the catch-up clock restarts as for a new leader (from the epoch's start offset).
    pub(crate) fn reset_for_new_epoch(&mut self, in_isr: bool, epoch_start: Offset, now_ms: i64) {
        self.last_fetch_leader_end = epoch_start;
        self.last_fetch_ms = in_isr.then_some(now_ms);
        self.last_caught_up_ms = in_isr.then_some(now_ms);
    }

    /// Forgets when the follower was last caught up (it left the ISR by the controller's
    /// decision): it is caught up again only by fetching up to the leader's end.
    pub(crate) fn forget_catch_up(&mut self) {
        self.last_fetch_ms = None;
        self.last_caught_up_ms = None;
    }

    /// Records a fetch at `fetch_offset`, received at `now_ms` while the leader's end was
    /// `leader_end`. Caught up now if the fetch reaches the leader's current end; caught up at the
    /// previous fetch if it reaches the end the leader had then.
    pub(crate) fn on_fetch(&mut self, fetch_offset: Offset, leader_end: Offset, now_ms: i64) {
        let caught_up_at = if fetch_offset >= leader_end {
            Some(now_ms)
        } else if fetch_offset >= self.last_fetch_leader_end {
            self.last_fetch_ms
        } else {
            None
        };
        self.last_caught_up_ms = self.last_caught_up_ms.max(caught_up_at);
        self.end = fetch_offset;
        self.last_fetch_leader_end = self.last_fetch_leader_end.max(leader_end);
        self.last_fetch_ms = Some(now_ms);
    }

    /// Whether the follower counts as in sync with a leader whose end is `leader_end`: it holds
    /// that end, or it held the leader's end no more than `max_lag_ms` ago.
    pub fn is_caught_up(&self, leader_end: Offset, now_ms: i64, max_lag_ms: i64) -> bool {
        self.end >= leader_end
            || self
                .last_caught_up_ms
                .is_some_and(|t| now_ms.saturating_sub(t) <= max_lag_ms)
    }

    /// The first instant at which [`FollowerProgress::is_caught_up`] turns false if nothing else
    /// happens (`None`: it already is, or it never will be for lack of a catch-up time).
    pub(crate) fn lag_deadline(&self, max_lag_ms: i64) -> Option<i64> {
        self.last_caught_up_ms
            .map(|t| t.saturating_add(max_lag_ms).saturating_add(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LAG: i64 = 10_000;

    #[test]
    fn fetch_reaching_the_leader_end_is_caught_up_now() {
        let mut f = FollowerProgress::new(false, 0);
        assert!(!f.is_caught_up(Offset(10), 0, LAG));
        f.on_fetch(Offset(10), Offset(10), 1_000);
        assert_eq!(f.last_caught_up_ms, Some(1_000));
        assert!(f.is_caught_up(Offset(20), 1_000 + LAG, LAG));
        assert!(!f.is_caught_up(Offset(20), 1_001 + LAG, LAG));
        // Holding the leader's end is caught up whatever the clock says.
        assert!(f.is_caught_up(Offset(10), 1_000_000, LAG));
    }

    #[test]
    fn fetch_reaching_the_previous_leader_end_is_caught_up_at_the_previous_fetch() {
        let mut f = FollowerProgress::new(false, 0);
        f.on_fetch(Offset(5), Offset(10), 1_000);
        assert_eq!(f.last_caught_up_ms, None);
        // Leader moved on to 15, but the follower now has the 10 the leader had at 1_000.
        f.on_fetch(Offset(10), Offset(15), 2_000);
        assert_eq!(f.last_caught_up_ms, Some(1_000));
        // Reaching neither end changes nothing.
        f.on_fetch(Offset(12), Offset(20), 3_000);
        assert_eq!(f.last_caught_up_ms, Some(1_000));
        assert_eq!(f.end, Offset(12));
        assert_eq!(f.lag_deadline(LAG), Some(1_001 + LAG));
    }

    #[test]
    fn new_epoch_restarts_the_clock_from_the_epoch_start() {
        let mut f = FollowerProgress::new(true, 0);
        f.on_fetch(Offset(8), Offset(8), 100);
        f.reset_for_new_epoch(false, Offset(8), 5_000);
        assert_eq!(f.end, Offset(8));
        assert_eq!(f.last_caught_up_ms, None);
        // No previous fetch in this epoch, so reaching the epoch start proves nothing yet.
        f.on_fetch(Offset(8), Offset(9), 6_000);
        assert_eq!(f.last_caught_up_ms, None);
        f.on_fetch(Offset(9), Offset(12), 7_000);
        assert_eq!(f.last_caught_up_ms, Some(6_000));
    }
}
