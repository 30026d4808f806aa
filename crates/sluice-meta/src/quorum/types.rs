//! The openraft type configuration of the metadata quorum.

use std::io::Cursor;

use serde::{Deserialize, Serialize};

use crate::record::MetadataRecord;
use crate::BrokerId;

/// A Raft node id: the node's `--node-id` (a [`BrokerId`] is the same number).
pub type NodeId = u64;

/// The Raft node id of a broker id (node ids are non-negative; checked at start-up).
pub fn node_id(broker: BrokerId) -> NodeId {
    broker.0 as NodeId
}

/// What the active controller proposes: records decided together, applied in order and
/// atomically, every one at the entry's log index (the broker epoch of a `RegisterBroker`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MetaBatch {
    pub records: Vec<MetadataRecord>,
}

/// What applying a batch answers the proposer: the log index it was applied at.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetaResponse {
    pub index: u64,
}

/// A member of the Raft group and where its controller listener is.
pub type ControllerNode = openraft::BasicNode;

openraft::declare_raft_types!(
    /// The metadata quorum's Raft types.
    pub MetaRaft:
        D = MetaBatch,
        R = MetaResponse,
        NodeId = NodeId,
        Node = ControllerNode,
        Entry = openraft::Entry<MetaRaft>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);
