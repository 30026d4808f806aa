//! The group-state side of OffsetCommit: who may commit (Kafka's `validateOffsetCommit` and
//! `doCommitOffsets`). The offsets themselves are stored by the broker.

use crate::messages::CommitKind;
use crate::{GroupCoordinator, GroupError, GroupState};

impl GroupCoordinator {
    /// Decides whether an OffsetCommit may be written. A commit naming a member (a generation
    /// of 0 or more, a member id or an instance id) must come from a current member of the
    /// current generation (`UnknownMemberId`, `FencedInstanceId`, `IllegalGeneration`), and not
    /// while the group awaits its leader's assignment (`RebalanceInProgress`); it counts as a
    /// heartbeat. A standalone commit (generation -1, no member) is allowed only while the group
    /// has no members (`UnknownMemberId` otherwise); to an unknown group, a commit with a real
    /// generation is `IllegalGeneration`.
    ///
    /// This does not create the group: after writing the offsets, call
    /// [`GroupCoordinator::set_has_offsets`]`(group, true)`.
    pub fn validate_offset_commit(
        &mut self,
        group_id: &str,
        member_id: &str,
        group_instance_id: Option<&str>,
        generation_id: i32,
        now_ms: i64,
    ) -> Result<CommitKind, GroupError> {
        let names_member =
            generation_id >= 0 || !member_id.is_empty() || group_instance_id.is_some();
        let Some(group) = self.groups.get_mut(group_id) else {
            return match (generation_id < 0, names_member) {
                (false, _) => Err(GroupError::IllegalGeneration),
                // Kafka creates the (Empty) group first, where no member can be found.
                (true, true) => Err(GroupError::UnknownMemberId),
                (true, false) => Ok(CommitKind::Standalone),
            };
        };
        if !names_member {
            return if group.state == GroupState::Empty {
                Ok(CommitKind::Standalone)
            } else {
                Err(GroupError::UnknownMemberId)
            };
        }
        group.validate_current_member(member_id, group_instance_id)?;
        if generation_id != group.generation_id {
            return Err(GroupError::IllegalGeneration);
        }
        match group.state {
            GroupState::CompletingRebalance => Err(GroupError::RebalanceInProgress),
            GroupState::Dead => Err(GroupError::CoordinatorNotAvailable),
            // During PreparingRebalance commits are still allowed: the heartbeat answer tells
            // the member to rejoin.
            GroupState::Empty | GroupState::Stable | GroupState::PreparingRebalance => {
                if let Some(member) = group.member_mut(member_id) {
                    member.touch(now_ms);
                }
                Ok(CommitKind::Member)
            }
        }
    }
}
