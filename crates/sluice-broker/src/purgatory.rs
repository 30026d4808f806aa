//! Delayed operations, keyed by partition (Kafka's "purgatory").
//!
//! A long-polling Fetch registers one `Notify` with every partition it reads; when a partition's
//! high watermark advances it wakes and drops its registered waiters. The fetch then re-reads and
//! either answers or registers again until its deadline. Registration happens *before* the
//! re-check, and `Notify` keeps a permit, so an advance between check and wait is never missed.
//!
//! The lists hold weak references: the waiter lives as long as the fetch that owns it, and a
//! partition that is never written does not keep the waiters of fetches that ended elsewhere
//! (each registers in every partition it reads, so a strong count could not tell a live waiter
//! from one that only other lists still hold, and idle partitions' lists grew without bound).

use std::sync::{Arc, Mutex, Weak};

use tokio::sync::Notify;

#[derive(Default)]
pub struct Waiters {
    waiting: Mutex<Vec<Weak<Notify>>>,
}

impl Waiters {
    pub fn register(&self, waiter: &Arc<Notify>) {
        let mut waiting = self.waiting.lock().expect("waiter list lock");
        // Drop the waiters whose fetch already ended: the list stays as small as its live
        // waiters.
        waiting.retain(|w| w.strong_count() > 0);
        waiting.push(Arc::downgrade(waiter));
    }

    /// Wakes every registered waiter once and forgets them.
    pub fn wake_all(&self) {
        let woken = std::mem::take(&mut *self.waiting.lock().expect("waiter list lock"));
        for w in woken.iter().filter_map(Weak::upgrade) {
            w.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_wake_before_the_wait_is_not_lost() {
        let waiters = Waiters::default();
        let me = Arc::new(Notify::new());
        waiters.register(&me);
        waiters.wake_all();
        tokio::time::timeout(std::time::Duration::from_secs(5), me.notified())
            .await
            .expect("permit kept");
        // Woken waiters are dropped from the list.
        assert!(waiters.waiting.lock().unwrap().is_empty());
    }

    #[test]
    fn a_partition_never_written_forgets_the_waiters_of_ended_fetches() {
        let (idle, other_idle, busy) = (Waiters::default(), Waiters::default(), Waiters::default());
        for _ in 0..1000 {
            // A fetch over three partitions: answered by the busy one, then over.
            let fetch = Arc::new(Notify::new());
            for p in [&idle, &other_idle, &busy] {
                p.register(&fetch);
            }
            busy.wake_all();
        }
        // Only the last registration is left, and it goes with the next one.
        assert_eq!(idle.waiting.lock().unwrap().len(), 1);
        let live = Arc::new(Notify::new());
        idle.register(&live);
        assert_eq!(idle.waiting.lock().unwrap().len(), 1);
    }
}
