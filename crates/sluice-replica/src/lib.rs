//! One partition replica's state, as a pure state machine: the leader's high watermark, its
//! view of each follower's progress, ISR change proposals, and the `acks=all` produces waiting
//! for the high watermark. The rules are Kafka's (`Partition.scala`, `Replica.scala`,
//! `DelayedProduce`, KIP-497's maximal ISR, KIP-966 part 1's min-ISR hold); the broker's
//! `Partition` is the shell around it.
//!
//! # Layout
//! - [`replica`]: [`ReplicaState`], the one entry point: role changes ([`LeaderChange`],
//!   [`FollowerChange`], [`ReplicaState::stop`]), the reported local end, timers.
//! - `hw`: the high-watermark rule (an `impl ReplicaState` block).
//! - `isr`: follower fetches, ISR shrink and expand, the controller's answers.
//! - `produce`: the min-ISR check before an `acks=all` append and the parked produces.
//! - [`follower`]: [`FollowerProgress`], the leader's record of one follower ("caught up").
//! - [`messages`]: [`LeaderChange`], [`FollowerChange`], [`Role`], [`IsrProposal`], [`Output`].
//! - [`config`]: [`ReplicaConfig`] (`replica.lag.time.max.ms`, `min.insync.replicas`).
//! - [`error`]: [`ReplicaError`] (a call refused) and [`ProduceError`] (a parked produce failed),
//!   mapped to Kafka error codes by the broker.
//!
//! # Driving it
//! Nothing here does I/O or reads a clock; calls that depend on time take `now_ms`. Every call
//! returns the [`Output`]s it caused: high-watermark moves, an ISR proposal for the controller,
//! answers to parked produces (each answered exactly once). The shell calls
//! [`ReplicaState::tick`] when [`ReplicaState::next_deadline`] is reached.
//!
//! The shell decides what "local end" means and reports it with
//! [`ReplicaState::on_local_end`]: the durable (fsynced) offset under `--durability fsync`, the
//! log end under `relaxed`. With one replica and `min.insync.replicas` 1 the high watermark is
//! exactly that number, which is the single-node broker's behaviour.
//!
//! # Where it differs from Kafka
//! - Answers from the controller name the proposal they answer ([`IsrProposal::id`]) instead of
//!   relying on object identity.
//! - "Caught up" is `follower end >= leader end` rather than `==`: in fsync mode the leader's
//!   counted end (durable) may trail what a follower has already fsynced.
//! - Broker liveness (fenced, shutting down, broker epoch) is not known here, so every replica
//!   counts as eligible to join the ISR; the controller still refuses ineligible ones.
//! - [`ReplicaState::tick`] also re-evaluates the high watermark, so a caught-up follower outside
//!   the ISR that goes quiet stops holding it back without waiting for the next append.

pub mod config;
pub mod error;
pub mod follower;
mod hw;
mod isr;
pub mod messages;
mod produce;
pub mod replica;

#[cfg(test)]
mod testkit;

pub use config::ReplicaConfig;
pub use error::{ProduceError, ReplicaError};
pub use follower::FollowerProgress;
pub use messages::{FollowerChange, IsrProposal, LeaderChange, Output, Role};
pub use replica::ReplicaState;
pub use sluice_types::{BrokerId, LeaderEpoch, Offset};
