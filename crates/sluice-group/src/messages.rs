//! The types the broker's shell exchanges with the coordinator: requests as they come off the
//! wire (already decoded, versions folded in), responses, and [`Output`]s for parked requests.

use bytes::Bytes;

use crate::{GroupError, GroupState};

/// Caller-chosen name of a request the coordinator may answer later (JoinGroup, SyncGroup).
/// The coordinator never interprets it; it must be unique among the caller's parked requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub u64);

/// One protocol a member supports (for consumers: an assignor name and its subscription bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Protocol {
    pub name: String,
    pub metadata: Bytes,
}

/// A JoinGroup request (v0-9), decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinRequest {
    pub group_id: String,
    /// Empty for a member joining for the first time.
    pub member_id: String,
    /// KIP-345 static membership (v5+); `None` for dynamic members.
    pub group_instance_id: Option<String>,
    /// E.g. `"consumer"`; must equal the group's unless the group is Empty.
    pub protocol_type: String,
    /// In the member's order of preference.
    pub protocols: Vec<Protocol>,
    pub session_timeout_ms: i32,
    /// v1+; for v0 pass `session_timeout_ms` (as Kafka does).
    pub rebalance_timeout_ms: i32,
    /// From the request header; prefixes generated member ids and is shown by DescribeGroups.
    pub client_id: String,
    /// The client's address as the broker sees it (Kafka shows `/1.2.3.4`).
    pub client_host: String,
    /// True for request version >= 4 (KIP-394): a new dynamic member first gets
    /// `MemberIdRequired` and must rejoin with the id.
    pub require_known_member_id: bool,
    /// True for request version >= 9 (KIP-814): a restarted static leader may be told to skip the
    /// assignment (`JoinResponse::skip_assignment`).
    pub supports_skip_assignment: bool,
    /// v8+ free-text reason; only logged.
    pub reason: Option<String>,
}

/// A successful JoinGroup answer. On error the shell answers with generation -1, empty
/// protocol/leader/members and the request's own member id (or, for
/// [`GroupError::MemberIdRequired`], the id it carries).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinResponse {
    pub generation_id: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    /// Member id of the leader (may name a different member than the one asking).
    pub leader: String,
    /// v9+: the (static, restarted) leader must not compute a new assignment.
    pub skip_assignment: bool,
    /// The member's own id (new for members that joined with an empty id).
    pub member_id: String,
    /// Non-empty only for the leader: every member with its metadata for the chosen protocol.
    pub members: Vec<JoinMember>,
}

/// One member as the leader sees it in its JoinGroup answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub metadata: Bytes,
}

/// A SyncGroup request (v0-5), decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncRequest {
    pub group_id: String,
    pub generation_id: i32,
    pub member_id: String,
    pub group_instance_id: Option<String>,
    /// v5+; when given, must equal the group's.
    pub protocol_type: Option<String>,
    /// v5+; when given, must equal the group's chosen protocol.
    pub protocol_name: Option<String>,
    /// Only the leader sends assignments; followers send none.
    pub assignments: Vec<MemberAssignment>,
}

/// One entry of the leader's SyncGroup assignment list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberAssignment {
    pub member_id: String,
    pub assignment: Bytes,
}

/// A successful SyncGroup answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncResponse {
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    /// This member's assignment; empty if the leader gave it none.
    pub assignment: Bytes,
}

/// What a group's record in `__consumer_offsets` holds (Kafka's `GroupMetadataValue`): taken
/// when a generation completes (the group became Stable, or Empty), and given back to
/// [`crate::GroupCoordinator::load_group`] by the coordinator that loads the partition next, so
/// a stable group's members keep their ids, generation and assignment across a failover.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSnapshot {
    pub group_id: String,
    /// Empty for a group that never had members.
    pub protocol_type: String,
    pub generation_id: i32,
    /// `None` while Empty.
    pub protocol_name: Option<String>,
    pub leader: Option<String>,
    /// When the snapshot was taken.
    pub current_state_timestamp_ms: i64,
    pub members: Vec<MemberSnapshot>,
}

/// One member of a [`GroupSnapshot`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberSnapshot {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
    /// Its metadata for the group's protocol.
    pub subscription: Bytes,
    pub assignment: Bytes,
}

/// The answer to a parked (or immediately answered) JoinGroup or SyncGroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    Join {
        request: RequestId,
        result: Result<JoinResponse, GroupError>,
    },
    Sync {
        request: RequestId,
        result: Result<SyncResponse, GroupError>,
    },
}

impl Output {
    /// The request this output answers.
    pub fn request(&self) -> RequestId {
        match self {
            Output::Join { request, .. } | Output::Sync { request, .. } => *request,
        }
    }
}

/// One member of a LeaveGroup request (v0-2 carry one with only `member_id`; v3+ a batch,
/// where an empty `member_id` with a `group_instance_id` removes that static member).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaveMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
}

/// The answer to LeaveGroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaveResult {
    /// One result per requested member, in request order. For v0-2 the shell uses the single
    /// member's error as the top-level error.
    pub members: Vec<Result<(), GroupError>>,
    /// Parked requests answered because of the leave (the leaver's own parked join/sync gets
    /// `UnknownMemberId`; others may complete the join phase or get `RebalanceInProgress`).
    pub outputs: Vec<Output>,
}

/// What kind of offset commit was validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitKind {
    /// Generation -1, no member: a client managing its own partitions (`assign()`), allowed
    /// only while the group has no members. The broker should call
    /// [`crate::GroupCoordinator::set_has_offsets`] once the offsets are written.
    Standalone,
    /// A current member of the current generation; counted as a heartbeat.
    Member,
}

/// DescribeGroups answer for one group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    pub group_id: String,
    pub state: GroupState,
    /// `""` when the group has none (e.g. only offsets, or unknown).
    pub protocol_type: String,
    /// The chosen protocol; `""` unless the group is Stable (as Kafka).
    pub protocol: String,
    pub members: Vec<MemberDescription>,
}

/// One member in DescribeGroups. `metadata` and `assignment` are empty unless the group is
/// Stable (as Kafka).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberDescription {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub metadata: Bytes,
    pub assignment: Bytes,
}

/// ListGroups entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupOverview {
    pub group_id: String,
    /// `""` when the group has none.
    pub protocol_type: String,
    pub state: GroupState,
}
