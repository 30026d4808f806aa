//! Heartbeat (v0-4): Kafka's `handleHeartbeat`.

use crate::{GroupCoordinator, GroupError, GroupState};

impl GroupCoordinator {
    /// Handles a Heartbeat, answered at once. A valid heartbeat pushes the member's session
    /// deadline; during PreparingRebalance it still does, but answers `RebalanceInProgress` so
    /// the member rejoins. Unknown group or member → `UnknownMemberId`; another generation →
    /// `IllegalGeneration`; an instance id owned by another member id → `FencedInstanceId`.
    pub fn heartbeat(
        &mut self,
        group_id: &str,
        member_id: &str,
        group_instance_id: Option<&str>,
        generation_id: i32,
        now_ms: i64,
    ) -> Result<(), GroupError> {
        if group_id.is_empty() {
            return Err(GroupError::InvalidGroupId);
        }
        let Some(group) = self.groups.get_mut(group_id) else {
            return Err(GroupError::UnknownMemberId);
        };
        group.validate_current_member(member_id, group_instance_id)?;
        if generation_id != group.generation_id {
            return Err(GroupError::IllegalGeneration);
        }
        let state = group.state;
        let Some(member) = group.member_mut(member_id) else {
            return Err(GroupError::UnknownMemberId);
        };
        match state {
            GroupState::Empty | GroupState::Dead => Err(GroupError::UnknownMemberId),
            GroupState::CompletingRebalance | GroupState::Stable => {
                member.touch(now_ms);
                Ok(())
            }
            GroupState::PreparingRebalance => {
                member.touch(now_ms);
                Err(GroupError::RebalanceInProgress)
            }
        }
    }
}
