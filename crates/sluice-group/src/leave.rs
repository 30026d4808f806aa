//! LeaveGroup (v0-5): Kafka's `handleLeaveGroup`.

use tracing::info;

use crate::messages::{LeaveMember, LeaveResult};
use crate::{GroupCoordinator, GroupError};

impl GroupCoordinator {
    /// Handles a LeaveGroup batch. Each member gets its own result: removed (`Ok`),
    /// `UnknownMemberId`, or `FencedInstanceId` (its instance id now belongs to another member
    /// id). An empty `member_id` with a `group_instance_id` removes whichever member owns that
    /// instance id (admin removal). A reserved (pending) id is simply released. Removals trigger
    /// a rebalance; the returned outputs answer parked requests affected by it.
    ///
    /// The `Err` is the request-level error: only `InvalidGroupId` (empty group id). An unknown
    /// group is not an error: each member gets `UnknownMemberId`.
    pub fn leave_group(
        &mut self,
        group_id: &str,
        members: &[LeaveMember],
        now_ms: i64,
    ) -> Result<LeaveResult, GroupError> {
        if group_id.is_empty() {
            return Err(GroupError::InvalidGroupId);
        }
        let mut outputs = Vec::new();
        let Some(group) = self.groups.get_mut(group_id) else {
            return Ok(LeaveResult {
                members: vec![Err(GroupError::UnknownMemberId); members.len()],
                outputs,
            });
        };
        let config = &self.config;
        let mut results = Vec::with_capacity(members.len());
        for leaving in members {
            let instance = leaving.group_instance_id.as_deref();
            let result = if leaving.member_id.is_empty() {
                match instance
                    .and_then(|i| group.static_member_id(i))
                    .map(str::to_owned)
                {
                    Some(current) => {
                        group.remove_member_and_update(
                            &current,
                            "static member removed by LeaveGroup",
                            now_ms,
                            config,
                            &mut outputs,
                        );
                        Ok(())
                    }
                    None => Err(GroupError::UnknownMemberId),
                }
            } else if group.is_pending(&leaving.member_id) {
                info!(group = %group_id, member = %leaving.member_id, "pending member left");
                group.remove_pending_member(&leaving.member_id, now_ms, &mut outputs);
                Ok(())
            } else {
                group
                    .validate_current_member(&leaving.member_id, instance)
                    .map(|()| {
                        group.remove_member_and_update(
                            &leaving.member_id,
                            "member left the group",
                            now_ms,
                            config,
                            &mut outputs,
                        )
                    })
            };
            results.push(result);
        }
        self.drop_if_removable(group_id);
        Ok(LeaveResult {
            members: results,
            outputs,
        })
    }
}
