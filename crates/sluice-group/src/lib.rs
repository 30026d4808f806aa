//! The consumer-group coordinator of Sluice: Kafka's *classic* group protocol (JoinGroup,
//! SyncGroup, Heartbeat, LeaveGroup) and the group-state side of OffsetCommit, DescribeGroups,
//! ListGroups and DeleteGroups, as a pure state machine.
//!
//! # Layout
//! - [`coordinator`]: [`GroupCoordinator`], the one entry point: all groups, timers, member ids.
//! - [`join`], [`sync`], [`heartbeat`], [`leave`], [`offsets`], [`admin`]: one file per API
//!   family, each an `impl GroupCoordinator` block (Kafka's `GroupCoordinator.scala` handlers).
//! - `group`: one group's state and its transitions (prepare rebalance, complete the join phase,
//!   propagate assignments, expire timers) — Kafka's `ClassicGroup`.
//! - `member`: one member's metadata, protocol vote and session deadline.
//! - [`state`]: [`GroupState`], spelled as Kafka spells it.
//! - [`messages`]: the request, response and [`Output`] types the broker's shell speaks.
//! - [`config`]: [`GroupConfig`] (`group.*` broker settings).
//! - [`error`]: [`GroupError`], mapped to Kafka error codes by the broker.
//!
//! # Driving it
//! Nothing here does I/O or reads a clock: every call takes `now_ms`. Requests that Kafka answers
//! later (a JoinGroup waits for the join phase to end, a follower's SyncGroup waits for the
//! leader's assignment) are named by a caller-chosen [`RequestId`]; every call returns the
//! [`Output`]s that became ready, which may answer *other* parked requests. Every parked request
//! is answered exactly once, by some later call's outputs ([`GroupCoordinator::tick`] included).
//! The shell calls [`GroupCoordinator::tick`] when [`GroupCoordinator::next_deadline`] is reached.
//!
//! Committed offsets are stored by the broker (`__consumer_offsets`); this crate only validates
//! commits and is told whether a group has offsets ([`GroupCoordinator::set_has_offsets`]).
//!
//! # Persistence and failover
//! When a generation completes (the group becomes Stable, or Empty) the group's state is queued
//! as a [`GroupSnapshot`] for the broker to write ([`GroupCoordinator::take_snapshots`]). The
//! broker that next loads the group's offsets partition gives the snapshots back
//! ([`GroupCoordinator::load_group`]); the one that stops leading it drops its groups
//! ([`GroupCoordinator::unload_where`]), answering their parked requests `NotCoordinator`.

pub mod admin;
pub mod config;
pub mod coordinator;
pub mod error;
mod group;
pub mod heartbeat;
pub mod join;
pub mod leave;
mod member;
pub mod messages;
pub mod offsets;
pub mod state;
pub mod sync;

#[cfg(test)]
mod tests;

pub use config::GroupConfig;
pub use coordinator::GroupCoordinator;
pub use error::GroupError;
pub use messages::{
    CommitKind, GroupDescription, GroupOverview, GroupSnapshot, JoinMember, JoinRequest,
    JoinResponse, LeaveMember, LeaveResult, MemberAssignment, MemberDescription, MemberSnapshot,
    Output, Protocol, RequestId, SyncRequest, SyncResponse,
};
pub use state::GroupState;
