//! Delayed operations, keyed by partition (Kafka's "purgatory").
//!
//! A long-polling Fetch registers one `Notify` with every partition it reads; when a partition's
//! high watermark advances it wakes and drops its registered waiters. The fetch then re-reads and
//! either answers or registers again until its deadline. Registration happens *before* the
//! re-check, and `Notify` keeps a permit, so an advance between check and wait is never missed.

use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

#[derive(Default)]
pub struct Waiters {
    waiting: Mutex<Vec<Arc<Notify>>>,
}

impl Waiters {
    pub fn register(&self, waiter: &Arc<Notify>) {
        let mut waiting = self.waiting.lock().expect("waiter list lock");
        // Drop waiters whose fetch already ended (timed out without a wake): only this list
        // still holds them. Keeps an idle partition's list as small as its live waiters.
        waiting.retain(|w| Arc::strong_count(w) > 1);
        waiting.push(waiter.clone());
    }

    /// Wakes every registered waiter once and forgets them.
    pub fn wake_all(&self) {
        let woken = std::mem::take(&mut *self.waiting.lock().expect("waiter list lock"));
        for w in woken {
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
}
