//! What the shell tells the replica about leadership ([`LeaderChange`], [`FollowerChange`]) and
//! what the replica hands back ([`Output`]).

use sluice_types::{BrokerId, LeaderEpoch, Offset};

use crate::ProduceError;

/// This broker leads the partition, as decided by the controller (a partition-change record).
/// Applied again with the same leader epoch when only the replicas or ISR change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderChange {
    pub epoch: LeaderEpoch,
    /// Bumped by the controller on every change of leader, replicas or ISR; ISR proposals are
    /// checked against it.
    pub partition_epoch: i32,
    /// The assignment, this broker included.
    pub replicas: Vec<BrokerId>,
    /// The committed ISR, this broker included.
    pub isr: Vec<BrokerId>,
    /// The local end the HW counts (see [`crate::ReplicaState::on_local_end`]).
    pub local_end: Offset,
    /// The local log end offset at the start of this epoch (Kafka's leader-epoch start offset): a
    /// follower joins the ISR only once it holds everything before it. Ignored when the epoch is
    /// not new.
    pub epoch_start: Offset,
    /// The log's high watermark (checkpoint, or what this replica had as a follower). Used only
    /// when this replica was not already leading; a sitting leader keeps its own.
    pub hw: Offset,
    pub now_ms: i64,
}

/// Another broker (or none, while the controller has no leader) leads the partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FollowerChange {
    pub leader: Option<BrokerId>,
    pub epoch: LeaderEpoch,
    pub partition_epoch: i32,
    pub replicas: Vec<BrokerId>,
}

/// Which part this replica plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Not yet told, or stopped ([`crate::ReplicaState::stop`]).
    Offline,
    Leader,
    /// `leader` is `None` while the partition has no leader.
    Follower {
        leader: Option<BrokerId>,
    },
}

/// A proposed ISR, for the shell to send to the controller (AlterPartition). `id` names it in the
/// answer ([`crate::ReplicaState::isr_change_committed`], [`crate::ReplicaState::isr_change_rejected`]),
/// so a late answer to a proposal the replica has since dropped is recognized and ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsrProposal {
    pub id: u64,
    pub leader_epoch: LeaderEpoch,
    /// The partition epoch the proposal is based on; the controller refuses it if stale.
    pub partition_epoch: i32,
    pub isr: Vec<BrokerId>,
    /// Each proposed member's broker epoch as its latest fetch gave it (KIP-903; -1 for the
    /// leader itself and for a follower that sent none): the controller refuses a member whose
    /// registration has moved on, so a fetch from a dead incarnation cannot put a restarted
    /// (perhaps emptied) broker into the ISR.
    pub broker_epochs: Vec<(BrokerId, i64)>,
}

/// Something that became true during a call, for the shell to act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// The high watermark moved to this value: wake parked fetches, checkpoint it.
    HighWatermark(Offset),
    /// Send this ISR change to the controller. At most one is in flight.
    ProposeIsr(IsrProposal),
    /// Answer the `acks=all` produce parked under `id`.
    ProduceDone {
        id: u64,
        result: Result<(), ProduceError>,
    },
}
