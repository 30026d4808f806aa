//! SyncGroup (v0-5): Kafka's `handleSyncGroup` / `doSyncGroup`.

use tracing::info;

use crate::messages::{Output, RequestId, SyncRequest};
use crate::{GroupCoordinator, GroupError, GroupState};

impl GroupCoordinator {
    /// Handles a SyncGroup. In CompletingRebalance a request is parked until the leader's
    /// assignment has arrived and been stored ([`GroupCoordinator::assignment_stored`]); then
    /// every parked sync is answered and the group is Stable. In Stable the member's current assignment is returned at once. Returns the
    /// outputs that became ready, this request's answer among them when decided now.
    pub fn sync_group(
        &mut self,
        request: RequestId,
        sync: SyncRequest,
        now_ms: i64,
    ) -> Vec<Output> {
        let mut out = Vec::new();
        if let Err(error) = self.sync_inner(request, sync, now_ms, &mut out) {
            out.push(Output::Sync {
                request,
                result: Err(error),
            });
        }
        out
    }

    fn sync_inner(
        &mut self,
        request: RequestId,
        sync: SyncRequest,
        now_ms: i64,
        out: &mut Vec<Output>,
    ) -> Result<(), GroupError> {
        if sync.group_id.is_empty() {
            return Err(GroupError::InvalidGroupId);
        }
        let Some(group) = self.groups.get_mut(&sync.group_id) else {
            return Err(GroupError::UnknownMemberId);
        };
        group.validate_current_member(&sync.member_id, sync.group_instance_id.as_deref())?;
        if sync.generation_id != group.generation_id {
            return Err(GroupError::IllegalGeneration);
        }
        if sync
            .protocol_type
            .as_ref()
            .is_some_and(|t| group.protocol_type.as_ref() != Some(t))
            || sync
                .protocol_name
                .as_ref()
                .is_some_and(|n| group.protocol_name.as_ref() != Some(n))
        {
            return Err(GroupError::InconsistentGroupProtocol);
        }
        match group.state {
            GroupState::Empty | GroupState::Dead => Err(GroupError::UnknownMemberId),
            GroupState::PreparingRebalance => Err(GroupError::RebalanceInProgress),
            GroupState::CompletingRebalance => {
                let Some(member) = group.member_mut(&sync.member_id) else {
                    return Err(GroupError::UnknownMemberId);
                };
                if let Some(previous) = member.awaiting_sync.replace(request) {
                    if previous != request {
                        // The client gave up on its earlier SyncGroup and sent another.
                        out.push(Output::Sync {
                            request: previous,
                            result: Err(GroupError::RebalanceInProgress),
                        });
                    }
                }
                group.mark_synced(&sync.member_id);
                if group.is_leader(&sync.member_id) {
                    info!(
                        group = %group.group_id,
                        generation = group.generation_id,
                        leader = %sync.member_id,
                        assignments = sync.assignments.len(),
                        "assignment received from the leader"
                    );
                    group.complete_sync(sync.assignments);
                }
                Ok(())
            }
            GroupState::Stable => {
                group.mark_synced(&sync.member_id);
                let Some(member) = group.member_mut(&sync.member_id) else {
                    return Err(GroupError::UnknownMemberId);
                };
                member.touch(now_ms);
                let assignment = member.assignment.clone();
                out.push(Output::Sync {
                    request,
                    result: Ok(group.sync_response(assignment)),
                });
                Ok(())
            }
        }
    }
}
