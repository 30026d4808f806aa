//! [`ReplicaConfig`]: the settings the replica rules read (Kafka's `replica.lag.time.max.ms` and
//! `min.insync.replicas`).

/// `Default` gives Kafka's defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaConfig {
    /// `replica.lag.time.max.ms`: an ISR follower that has not been caught up with the leader's
    /// end for longer than this is proposed for removal from the ISR. It also bounds how long a
    /// caught-up follower outside the ISR holds the high watermark back while it joins.
    pub replica_lag_time_max_ms: i64,
    /// `min.insync.replicas` (the topic's): below this many ISR members the high watermark is
    /// held and `acks=all` produces are refused. Capped by the replica count (Kafka's
    /// "effective min ISR"), so a topic asking for more copies than it has still works as the
    /// single-node broker does today. Values below 1 act as 1. Changed at run time with
    /// [`crate::ReplicaState::set_min_insync`].
    pub min_insync_replicas: usize,
}

impl Default for ReplicaConfig {
    fn default() -> Self {
        Self {
            replica_lag_time_max_ms: 30_000,
            min_insync_replicas: 1,
        }
    }
}
