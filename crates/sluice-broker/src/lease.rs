//! The leadership lease: how long this broker may still act as a partition leader without
//! having heard from the controller.
//!
//! The controller fences a broker whose heartbeats stop for `broker.session.timeout.ms` and
//! moves its leaderships elsewhere. A broker that was paused (SIGSTOP, a VM freeze, a long GC
//! in other systems) or cut off does not know that yet: its metadata image still says it leads,
//! at the old epoch. Until it catches up it would answer reads from a log that misses what the
//! new leader took (OFFSET_OUT_OF_RANGE, and a consumer resets its position) and take `acks=1`
//! writes that will be truncated. So leading needs a lease: each heartbeat the controller
//! answers (unfenced) extends it to the heartbeat's send time plus the session timeout, the
//! earliest instant the controller could fence this broker for silence, once the broker's
//! image has caught up with the metadata the controller answered from (a resumed broker is
//! unfenced by its first heartbeat, before it has learnt what moved away while it slept). Past it, the broker
//! answers NOT_LEADER_OR_FOLLOWER (clients refresh their metadata and retry) until a heartbeat
//! gets through again. Time is the monotonic clock, which keeps running while the process is
//! stopped, so a resumed broker finds its lease expired.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct LeadershipLease {
    /// The origin of `until_ms`.
    start: Instant,
    /// Milliseconds after `start` until which the lease holds; `i64::MAX`: always.
    until_ms: AtomicI64,
}

impl LeadershipLease {
    /// A lease that holds once the first heartbeat is answered.
    pub fn new() -> LeadershipLease {
        LeadershipLease {
            start: Instant::now(),
            until_ms: AtomicI64::new(0),
        }
    }

    /// A lease that always holds: partitions without a controller to heartbeat (tests of a
    /// lone partition).
    pub fn unbounded() -> LeadershipLease {
        LeadershipLease {
            start: Instant::now(),
            until_ms: AtomicI64::new(i64::MAX),
        }
    }

    /// The controller answered (unfenced) a heartbeat sent at `sent_at`: the lease holds until
    /// `sent_at + session`. Never shortens it.
    pub fn extend(&self, sent_at: Instant, session: Duration) {
        let until = sent_at.saturating_duration_since(self.start) + session;
        let until = i64::try_from(until.as_millis()).unwrap_or(i64::MAX);
        self.until_ms.fetch_max(until, Ordering::AcqRel);
    }

    /// Whether this broker may act as a leader now.
    pub fn holds(&self) -> bool {
        let now = i64::try_from(self.start.elapsed().as_millis()).unwrap_or(i64::MAX);
        now < self.until_ms.load(Ordering::Acquire)
    }
}

impl Default for LeadershipLease {
    fn default() -> Self {
        LeadershipLease::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_from_a_heartbeat_for_the_session_and_never_shrinks() {
        let lease = LeadershipLease::new();
        assert!(!lease.holds(), "no heartbeat answered yet");
        let sent = Instant::now();
        lease.extend(sent, Duration::from_secs(60));
        assert!(lease.holds());
        // An answer to an older heartbeat arriving late does not shorten it.
        lease.extend(lease.start, Duration::ZERO);
        assert!(lease.holds());
        // Sent longer ago than the session: already expired.
        let expired = LeadershipLease::new();
        expired.extend(expired.start, Duration::ZERO);
        assert!(!expired.holds());
        assert!(LeadershipLease::unbounded().holds());
    }
}
