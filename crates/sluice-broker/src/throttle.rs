//! Replication throttles (Kafka's `leader.replication.throttled.rate` and
//! `follower.replication.throttled.rate`, KIP-73): bytes per second for the replication
//! traffic of replicas a reassignment is adding, so that copying a partition to a new broker
//! leaves room for clients.
//!
//! As in Kafka, a throttled replica is one outside the ISR; Sluice throttles the replicas a
//! reassignment adds (Kafka throttles those a topic's `*.replication.throttled.replicas` list,
//! which its reassignment tool sets to the moving replicas). In-sync replicas are never held
//! back: the high watermark, and so `acks=all`, waits on them. Each side checks its quota
//! before it moves a throttled partition's bytes and records them after: the leader leaves a
//! throttled partition out of a follower's answer, the follower leaves it out of its fetch,
//! while the quota is used up. A token bucket: the rate accrues up to one second's worth, and
//! a fetch may overdraw it by one answer, which the following ones pay back.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One direction's quota.
#[derive(Debug)]
pub struct ReplicationQuota {
    bucket: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    /// Bytes per second; `None`: unlimited.
    rate: Option<u64>,
    /// Bytes that may still go (negative: overdrawn).
    tokens: f64,
    at: Instant,
}

impl Default for ReplicationQuota {
    fn default() -> Self {
        ReplicationQuota::new(None)
    }
}

impl ReplicationQuota {
    pub fn new(rate: Option<u64>) -> ReplicationQuota {
        ReplicationQuota {
            bucket: Mutex::new(Bucket {
                rate,
                tokens: rate.map_or(0.0, |r| r as f64),
                at: Instant::now(),
            }),
        }
    }

    /// A new rate (dynamic broker configs changed); `None` lifts the throttle.
    pub fn set_rate(&self, rate: Option<u64>) {
        let mut b = self.bucket.lock().unwrap_or_else(|e| e.into_inner());
        if b.rate != rate {
            b.refill(Instant::now());
            b.rate = rate;
            if let Some(r) = rate {
                b.tokens = b.tokens.min(r as f64);
            }
        }
    }

    pub fn rate(&self) -> Option<u64> {
        self.bucket.lock().unwrap_or_else(|e| e.into_inner()).rate
    }

    /// Whether throttled replicas must wait.
    pub fn exceeded(&self) -> bool {
        self.exceeded_at(Instant::now())
    }

    fn exceeded_at(&self, now: Instant) -> bool {
        let mut b = self.bucket.lock().unwrap_or_else(|e| e.into_inner());
        if b.rate.is_none() {
            return false;
        }
        b.refill(now);
        b.tokens <= 0.0
    }

    /// Counts `bytes` of throttled replication traffic.
    pub fn record(&self, bytes: usize) {
        self.record_at(Instant::now(), bytes)
    }

    fn record_at(&self, now: Instant, bytes: usize) {
        let mut b = self.bucket.lock().unwrap_or_else(|e| e.into_inner());
        if b.rate.is_some() {
            b.refill(now);
            b.tokens -= bytes as f64;
        }
    }

    /// How long until throttled replicas may move bytes again (zero if they may now).
    pub fn delay(&self) -> Duration {
        let now = Instant::now();
        let mut b = self.bucket.lock().unwrap_or_else(|e| e.into_inner());
        let Some(rate) = b.rate.filter(|r| *r > 0) else {
            return Duration::ZERO;
        };
        b.refill(now);
        if b.tokens > 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64((-b.tokens + 1.0) / rate as f64).min(Duration::from_secs(1))
        }
    }
}

impl Bucket {
    fn refill(&mut self, now: Instant) {
        let Some(rate) = self.rate else { return };
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.at = self.at.max(now);
        // At most one second's worth accrues: an idle throttle does not bank a burst.
        self.tokens = (self.tokens + elapsed * rate as f64).min(rate as f64);
    }
}

/// The broker's two replication quotas.
#[derive(Debug, Default)]
pub struct ReplicationThrottles {
    /// Bytes this broker, as leader, sends to throttled followers.
    pub leader: ReplicationQuota,
    /// Bytes this broker, as a throttled follower, fetches.
    pub follower: ReplicationQuota,
}

impl ReplicationThrottles {
    /// Applies the rates in force (`leader.replication.throttled.rate`,
    /// `follower.replication.throttled.rate`; `None`: unlimited).
    pub fn set_rates(&self, leader: Option<u64>, follower: Option<u64>) {
        self.leader.set_rate(leader);
        self.follower.set_rate(follower);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unlimited_never_throttles() {
        let q = ReplicationQuota::default();
        q.record(usize::MAX / 2);
        assert!(!q.exceeded());
        assert_eq!(q.delay(), Duration::ZERO);
    }

    #[test]
    fn the_rate_is_kept_over_time() {
        let q = ReplicationQuota::new(Some(1000));
        let t0 = Instant::now();
        assert!(!q.exceeded_at(t0));
        // One answer may overdraw; then nothing moves until it is paid back.
        q.record_at(t0, 3000);
        assert!(q.exceeded_at(t0 + Duration::from_millis(500)));
        assert!(q.exceeded_at(t0 + Duration::from_millis(1900)));
        assert!(!q.exceeded_at(t0 + Duration::from_millis(2100)));
        // Over 10 s of steady 100-byte moves whenever allowed, about 1000 bytes/s go.
        let mut moved = 0;
        for ms in (2100..12_100).step_by(10) {
            let now = t0 + Duration::from_millis(ms);
            if !q.exceeded_at(now) {
                q.record_at(now, 100);
                moved += 100;
            }
        }
        assert!((9_000..=11_100).contains(&moved), "{moved} bytes in 10 s");
    }

    #[test]
    fn an_idle_throttle_banks_at_most_a_second() {
        let q = ReplicationQuota::new(Some(1000));
        let t0 = Instant::now();
        q.record_at(t0, 1000);
        let later = t0 + Duration::from_secs(60);
        assert!(!q.exceeded_at(later));
        q.record_at(later, 1001);
        assert!(q.exceeded_at(later));
    }

    #[test]
    fn lifting_the_rate_lets_everything_through() {
        let q = ReplicationQuota::new(Some(10));
        q.record(1_000_000);
        assert!(q.exceeded());
        assert!(q.delay() > Duration::ZERO);
        q.set_rate(None);
        assert!(!q.exceeded());
        assert_eq!(q.rate(), None);
    }
}
