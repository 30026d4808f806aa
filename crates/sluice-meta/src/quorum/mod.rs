//! The controller quorum's Raft plumbing (openraft 0.9, storage v2): the type configuration,
//! the durable log store and vote, and the state machine that applies committed
//! [`MetaBatch`]es to a [`ClusterState`](crate::ClusterState).
//!
//! Every node runs one Raft instance: voters (`--voters`) vote and may become the active
//! controller; broker-only nodes are learners that receive the same log. The state machine is
//! the only writer of the applied state; the broker follows it through a watch channel.

pub mod types;

pub use types::{node_id, ControllerNode, MetaBatch, MetaRaft, MetaResponse, NodeId};
