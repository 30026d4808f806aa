//! Incremental fetch sessions (KIP-227).
//!
//! A consumer that fetches the same partitions over and over can open a session (epoch 0); later
//! requests (epoch 1, 2, ...) then carry only the partitions whose fetch position changed, and
//! responses only the partitions with news (records, an error, or a moved HW / log start).
//! A session is taken out of the cache while a request uses it, so two requests racing on one
//! session cannot interleave; the loser sees FETCH_SESSION_ID_NOT_FOUND and starts over.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use kafka_protocol::ResponseError;
use uuid::Uuid;

/// One partition tracked by a session, with what the client was last told about it.
#[derive(Debug, Clone)]
pub struct SessionPartition {
    pub topic: String,
    pub topic_id: Uuid,
    pub partition: i32,
    pub fetch_offset: i64,
    pub max_bytes: i32,
    /// The leader epoch the fetcher believes current (KIP-320); -1: it does not say.
    pub current_leader_epoch: i32,
    /// The epoch of the last batch the fetcher holds (KIP-320, v12+; followers send it so the
    /// leader can detect a diverging log); -1: it does not say.
    pub last_fetched_epoch: i32,
    /// High watermark and log start offset in the last response that included the partition;
    /// -1 until then, so the first response always includes it.
    pub last_high_watermark: i64,
    pub last_log_start_offset: i64,
}

#[derive(Debug)]
pub struct FetchSession {
    /// The epoch the next request must carry.
    pub next_epoch: i32,
    pub partitions: Vec<SessionPartition>,
    last_used: Instant,
}

impl FetchSession {
    pub fn new(partitions: Vec<SessionPartition>) -> FetchSession {
        FetchSession {
            next_epoch: 1,
            partitions,
            last_used: Instant::now(),
        }
    }

    /// Adds or updates a partition from a request.
    pub fn upsert(&mut self, p: SessionPartition) {
        match self
            .partitions
            .iter_mut()
            .find(|x| x.topic == p.topic && x.partition == p.partition)
        {
            Some(existing) => {
                existing.fetch_offset = p.fetch_offset;
                existing.max_bytes = p.max_bytes;
                existing.current_leader_epoch = p.current_leader_epoch;
                existing.last_fetched_epoch = p.last_fetched_epoch;
            }
            None => self.partitions.push(p),
        }
    }

    pub fn forget(&mut self, topic: &str, partition: i32) {
        self.partitions
            .retain(|x| !(x.topic == topic && x.partition == partition));
    }
}

/// Kafka's epoch arithmetic: after i32::MAX comes 1 (0 means "new session").
pub fn next_epoch(epoch: i32) -> i32 {
    if epoch == i32::MAX {
        1
    } else {
        epoch + 1
    }
}

pub struct FetchSessionCache {
    /// `max.incremental.fetch.session.cache.slots`.
    capacity: usize,
    inner: Mutex<Inner>,
}

struct Inner {
    sessions: HashMap<i32, FetchSession>,
    next_id: i32,
}

impl FetchSessionCache {
    pub fn new(capacity: usize) -> FetchSessionCache {
        // Start ids at a time-derived value so ids from a previous process are not reused at once.
        let seed = (std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(1)
            % (i32::MAX as u128 / 2)) as i32;
        FetchSessionCache {
            capacity,
            inner: Mutex::new(Inner {
                sessions: HashMap::new(),
                next_id: seed.max(1),
            }),
        }
    }

    /// Stores a new session and returns its id (evicting the least recently used one when full).
    pub fn create(&self, session: FetchSession) -> i32 {
        let mut inner = self.inner.lock().expect("session cache lock");
        if inner.sessions.len() >= self.capacity {
            if let Some(oldest) = inner
                .sessions
                .iter()
                .min_by_key(|(_, s)| s.last_used)
                .map(|(id, _)| *id)
            {
                inner.sessions.remove(&oldest);
            }
        }
        let id = loop {
            let id = inner.next_id;
            inner.next_id = if id == i32::MAX { 1 } else { id + 1 };
            if !inner.sessions.contains_key(&id) {
                break id;
            }
        };
        inner.sessions.insert(id, session);
        id
    }

    /// Takes session `id` out of the cache for a request carrying `epoch`.
    pub fn take(&self, id: i32, epoch: i32) -> Result<FetchSession, ResponseError> {
        let mut inner = self.inner.lock().expect("session cache lock");
        match inner.sessions.get(&id) {
            None => Err(ResponseError::FetchSessionIdNotFound),
            Some(s) if s.next_epoch != epoch => Err(ResponseError::InvalidFetchSessionEpoch),
            Some(_) => Ok(inner.sessions.remove(&id).expect("present")),
        }
    }

    /// Returns a session after its request was answered.
    pub fn put_back(&self, id: i32, mut session: FetchSession) {
        session.last_used = Instant::now();
        self.inner
            .lock()
            .expect("session cache lock")
            .sessions
            .insert(id, session);
    }

    pub fn remove(&self, id: i32) {
        self.inner
            .lock()
            .expect("session cache lock")
            .sessions
            .remove(&id);
    }

    /// Drops a deleted topic's partitions from every session.
    pub fn forget_topic(&self, topic: &str) {
        for s in self
            .inner
            .lock()
            .expect("session cache lock")
            .sessions
            .values_mut()
        {
            s.partitions.retain(|p| p.topic != topic);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(topic: &str, partition: i32, offset: i64) -> SessionPartition {
        SessionPartition {
            topic: topic.into(),
            topic_id: Uuid::nil(),
            partition,
            fetch_offset: offset,
            max_bytes: 1024,
            current_leader_epoch: -1,
            last_fetched_epoch: -1,
            last_high_watermark: -1,
            last_log_start_offset: -1,
        }
    }

    #[test]
    fn session_epochs() {
        let cache = FetchSessionCache::new(2);
        let id = cache.create(FetchSession::new(vec![part("a", 0, 0)]));
        assert_eq!(
            cache.take(id, 2).unwrap_err(),
            ResponseError::InvalidFetchSessionEpoch
        );
        let mut s = cache.take(id, 1).unwrap();
        // Taken: a racing request does not find it.
        assert_eq!(
            cache.take(id, 1).unwrap_err(),
            ResponseError::FetchSessionIdNotFound
        );
        s.upsert(part("a", 0, 10));
        s.upsert(part("a", 1, 0));
        s.forget("a", 0);
        assert_eq!(s.partitions.len(), 1);
        s.next_epoch = next_epoch(1);
        cache.put_back(id, s);
        assert!(cache.take(id, 2).is_ok());
        assert_eq!(next_epoch(i32::MAX), 1);
    }

    #[test]
    fn full_cache_evicts_least_recently_used() {
        let cache = FetchSessionCache::new(2);
        let a = cache.create(FetchSession::new(vec![]));
        let b = cache.create(FetchSession::new(vec![]));
        let s = cache.take(a, 1).unwrap();
        cache.put_back(a, s);
        let c = cache.create(FetchSession::new(vec![]));
        assert!(cache.take(b, 1).is_err());
        assert!(cache.take(a, 1).is_ok());
        assert!(cache.take(c, 1).is_ok());
    }
}
