//! Group coordinator settings (Kafka's `group.*` broker configs).

/// Limits and delays of the classic group protocol. `Default` gives Kafka's defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupConfig {
    /// `group.min.session.timeout.ms`: a JoinGroup asking for less is refused with
    /// `InvalidSessionTimeout`, so members cannot make the coordinator spin on tiny timeouts.
    pub min_session_timeout_ms: i32,
    /// `group.max.session.timeout.ms`: upper bound, so a dead member is noticed eventually.
    pub max_session_timeout_ms: i32,
    /// `group.initial.rebalance.delay.ms` (KIP-134): the first join phase of an Empty group waits
    /// this long, and again for each new member arriving meanwhile (bounded by the rebalance
    /// timeout), so a fleet of consumers starting together causes one rebalance, not N.
    pub initial_rebalance_delay_ms: i32,
    /// Kafka's `NewMemberJoinTimeoutMs`: a brand-new member whose JoinGroup is parked is dropped
    /// after this long, since it cannot heartbeat and a retrying client would otherwise leave
    /// defunct members behind.
    pub new_member_join_timeout_ms: i32,
}

impl Default for GroupConfig {
    fn default() -> Self {
        Self {
            min_session_timeout_ms: 6_000,
            max_session_timeout_ms: 1_800_000,
            initial_rebalance_delay_ms: 3_000,
            new_member_join_timeout_ms: 300_000,
        }
    }
}
