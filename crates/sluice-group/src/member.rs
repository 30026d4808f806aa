//! One member of a classic group (Kafka's `MemberMetadata`).

use bytes::Bytes;

use crate::messages::{Protocol, RequestId};

/// A member: what it supports, what it was assigned, and which of its requests are parked.
#[derive(Debug, Clone)]
pub(crate) struct Member {
    pub(crate) member_id: String,
    /// Set for static members (KIP-345); the group maps it to the current `member_id`.
    pub(crate) group_instance_id: Option<String>,
    /// Shown by DescribeGroups; fixed when the member is created, as in Kafka.
    pub(crate) client_id: String,
    pub(crate) client_host: String,
    /// The protocol type the member joined with (the group's, except for the very first member
    /// who sets it).
    pub(crate) protocol_type: String,
    /// Supported protocols in preference order; the vote picks the first one every member has.
    pub(crate) protocols: Vec<Protocol>,
    pub(crate) session_timeout_ms: i32,
    /// How long the group waits for this member to rejoin in a join phase.
    pub(crate) rebalance_timeout_ms: i32,
    /// The leader's assignment for this member in the current generation.
    pub(crate) assignment: Bytes,
    /// Its parked JoinGroup, if any: "has rejoined in this join phase".
    pub(crate) awaiting_join: Option<RequestId>,
    /// Its parked SyncGroup, if any (a follower waiting for the leader).
    pub(crate) awaiting_sync: Option<RequestId>,
    /// Joined but not yet through a completed join phase: it cannot heartbeat, so it expires at
    /// `new_member_join_timeout_ms` even while its join is parked.
    pub(crate) is_new: bool,
    /// When the member is dropped unless it heartbeats (or is parked in a rebalance).
    pub(crate) session_deadline_ms: i64,
}

impl Member {
    /// Pushes the session deadline: a valid heartbeat, join, sync or commit.
    pub(crate) fn touch(&mut self, now_ms: i64) {
        self.session_deadline_ms = now_ms.saturating_add(i64::from(self.session_timeout_ms));
    }

    /// When the member's session can expire, or `None` while it cannot (a member parked in a
    /// join or sync satisfies its heartbeat, as in Kafka's `hasSatisfiedHeartbeat`).
    pub(crate) fn expiry_ms(&self) -> Option<i64> {
        if self.is_new || (self.awaiting_join.is_none() && self.awaiting_sync.is_none()) {
            Some(self.session_deadline_ms)
        } else {
            None
        }
    }

    pub(crate) fn supports(&self, protocol: &str) -> bool {
        self.protocols.iter().any(|p| p.name == protocol)
    }

    /// The member's metadata for `protocol` (empty if it does not support it).
    pub(crate) fn metadata(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|p| p.name == protocol)
            .map(|p| p.metadata.clone())
            .unwrap_or_default()
    }

    /// The member's most preferred protocol among `candidates`.
    pub(crate) fn vote<'a>(&'a self, candidates: &[&str]) -> Option<&'a str> {
        self.protocols
            .iter()
            .map(|p| p.name.as_str())
            .find(|name| candidates.contains(name))
    }

    /// Same protocols, same order, same metadata: a rejoin that changes nothing.
    pub(crate) fn matches(&self, protocols: &[Protocol]) -> bool {
        self.protocols == protocols
    }
}
