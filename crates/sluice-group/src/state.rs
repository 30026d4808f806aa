//! [`GroupState`]: the five states of a classic group.

use std::fmt;

/// The state of a classic group, named exactly as Kafka names it on the wire
/// (DescribeGroups, ListGroups).
///
/// ```text
///  Empty ──join──▶ PreparingRebalance ──all joined / timeout──▶ CompletingRebalance
///    ▲                  ▲   │ (no member left)                      │ leader's SyncGroup
///    └──────────────────┼───┘                                       ▼
///                       └──── member joins, leaves or expires ── Stable
/// ```
/// `Dead` is only reported for groups that do not exist; the coordinator drops a group instead of
/// keeping it Dead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl GroupState {
    /// Kafka's spelling, e.g. `"PreparingRebalance"`.
    pub fn as_str(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

impl fmt::Display for GroupState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
