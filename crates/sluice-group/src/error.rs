//! [`GroupError`]: why the coordinator refused a request. The broker maps each variant to the
//! Kafka error code named in its doc.

/// A refusal by the group coordinator. Each variant is one Kafka error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GroupError {
    /// `UNKNOWN_MEMBER_ID` (25): the member id is not (or no longer) in the group; the client
    /// resets its member id and joins again.
    #[error("unknown member id")]
    UnknownMemberId,
    /// `ILLEGAL_GENERATION` (22): the request names a generation other than the current one.
    #[error("illegal generation")]
    IllegalGeneration,
    /// `REBALANCE_IN_PROGRESS` (27): the group is rebalancing; the member must rejoin.
    #[error("rebalance in progress")]
    RebalanceInProgress,
    /// `MEMBER_ID_REQUIRED` (79, KIP-394): the JoinGroup answer carries `member_id` in its
    /// `member_id` field; the client rejoins with it.
    #[error("member id required; rejoin with {member_id}")]
    MemberIdRequired { member_id: String },
    /// `INCONSISTENT_GROUP_PROTOCOL` (23): protocol type differs from the group's, or the member
    /// supports none of the protocols every other member supports.
    #[error("inconsistent group protocol")]
    InconsistentGroupProtocol,
    /// `INVALID_SESSION_TIMEOUT` (26): outside `[min, max]_session_timeout_ms`.
    #[error("invalid session timeout")]
    InvalidSessionTimeout,
    /// `FENCED_INSTANCE_ID` (82, KIP-345): another member id now owns this group instance id.
    #[error("static member fenced by a newer member id for the same group instance id")]
    FencedInstanceId,
    /// `GROUP_ID_NOT_FOUND` (69): DeleteGroups of a group that does not exist.
    #[error("group id not found")]
    GroupIdNotFound,
    /// `NON_EMPTY_GROUP` (68): DeleteGroups of a group that still has members.
    #[error("group is not empty")]
    NonEmptyGroup,
    /// `INVALID_GROUP_ID` (24): empty group id where Kafka requires one.
    #[error("invalid group id")]
    InvalidGroupId,
    /// `COORDINATOR_NOT_AVAILABLE` (15): reserved for the shell (e.g. while loading); the state
    /// machine never keeps Dead groups, so it does not produce this today.
    #[error("coordinator not available")]
    CoordinatorNotAvailable,
    /// `COORDINATOR_LOAD_IN_PROGRESS` (14): this broker now coordinates the group and is still
    /// loading its offsets partition; the client retries.
    #[error("coordinator load in progress")]
    CoordinatorLoadInProgress,
    /// `NOT_COORDINATOR` (16): parked requests answered by [`crate::GroupCoordinator::unload_all`].
    #[error("not coordinator")]
    NotCoordinator,
    /// `UNKNOWN_SERVER_ERROR` (-1): a request Kafka treats as an illegal state (a static member
    /// using a dynamic member's pending id).
    #[error("unknown server error")]
    UnknownServerError,
}
