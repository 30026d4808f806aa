//! The two ways the replica says no: [`ReplicaError`] refuses a call at once, [`ProduceError`]
//! ends a parked `acks=all` produce. The broker maps each variant to the Kafka error code named
//! in its doc.

use sluice_types::BrokerId;

/// A call the replica refuses, answered at once.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplicaError {
    /// `NOT_LEADER_OR_FOLLOWER` (6): a leader-only call on a replica that does not lead.
    #[error("this replica is not the leader")]
    NotLeader,
    /// `NOT_LEADER_OR_FOLLOWER` (6): a follower fetch from a broker outside the replica set.
    #[error("broker {0} is not a follower of this partition")]
    UnknownReplica(BrokerId),
    /// `NOT_LEADER_OR_FOLLOWER` (6): a follower fetch carrying an older broker epoch than one
    /// this leader has already seen from that broker: a previous incarnation (KIP-903).
    #[error("broker {follower} fetched with broker epoch {received}, older than {current}")]
    StaleBrokerEpoch {
        follower: BrokerId,
        received: i64,
        current: i64,
    },
    /// `NOT_ENOUGH_REPLICAS` (19): an `acks=all` produce while the ISR is smaller than
    /// `min.insync.replicas`; nothing was appended.
    #[error("ISR has {isr} replicas, fewer than min.insync.replicas {min_insync}")]
    NotEnoughReplicas { isr: usize, min_insync: usize },
    /// A leader or follower change older than what this replica already applied (Kafka skips
    /// such a LeaderAndIsr / metadata delta); the state is unchanged.
    #[error("partition epoch {received} is older than the current {current}")]
    StalePartitionEpoch { current: i32, received: i32 },
}

/// How a parked `acks=all` produce ended, when it did not succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProduceError {
    /// `NOT_ENOUGH_REPLICAS_AFTER_APPEND` (20): the records reached the high watermark, but the
    /// ISR had shrunk below `min.insync.replicas` by then.
    #[error("written, but the ISR shrank below min.insync.replicas")]
    NotEnoughReplicasAfterAppend,
    /// `REQUEST_TIMED_OUT` (7): the deadline passed before the high watermark reached the records.
    #[error("timed out waiting for the ISR to replicate the records")]
    RequestTimedOut,
    /// `NOT_LEADER_OR_FOLLOWER` (6): this replica stopped leading before the records were
    /// committed; the client retries against the new leader.
    #[error("leadership moved before the records were committed")]
    NotLeader,
}
