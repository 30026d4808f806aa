//! JoinGroup (v0-9): Kafka's `handleJoinGroup`, `doNewMemberJoinGroup`,
//! `doCurrentMemberJoinGroup` and `updateStaticMemberAndRebalance`.

use bytes::Bytes;
use tracing::{debug, info};

use crate::coordinator::MemberIdGenerator;
use crate::group::{Group, PendingMember};
use crate::member::Member;
use crate::messages::{JoinRequest, Output, RequestId};
use crate::{GroupConfig, GroupCoordinator, GroupError, GroupState};

impl GroupCoordinator {
    /// Handles a JoinGroup. Returns the outputs that became ready: this request's answer when it
    /// is decided now (errors, `MemberIdRequired`, a follower or static rejoin that needs no
    /// rebalance), and — when this join ends the join phase — the answers of every parked join.
    /// Otherwise the request stays parked until a later call (often [`GroupCoordinator::tick`]).
    pub fn join_group(
        &mut self,
        request: RequestId,
        join: JoinRequest,
        now_ms: i64,
    ) -> Vec<Output> {
        let mut out = Vec::new();
        if let Err(error) = self.join_inner(request, &join, now_ms, &mut out) {
            debug!(group = %join.group_id, member = %join.member_id, %error, "join refused");
            out.push(Output::Join {
                request,
                result: Err(error),
            });
        }
        self.drop_if_removable(&join.group_id);
        out
    }

    fn join_inner(
        &mut self,
        request: RequestId,
        join: &JoinRequest,
        now_ms: i64,
        out: &mut Vec<Output>,
    ) -> Result<(), GroupError> {
        if join.group_id.is_empty() {
            return Err(GroupError::InvalidGroupId);
        }
        let config = &self.config;
        if join.session_timeout_ms < config.min_session_timeout_ms
            || join.session_timeout_ms > config.max_session_timeout_ms
        {
            return Err(GroupError::InvalidSessionTimeout);
        }
        let new_member = join.member_id.is_empty();
        if !self.groups.contains_key(&join.group_id) {
            // Only a member without an id may create a group.
            if !new_member {
                return Err(GroupError::UnknownMemberId);
            }
            self.groups
                .insert(join.group_id.clone(), Group::new(&join.group_id));
        }
        let Self {
            config,
            groups,
            member_ids,
            ..
        } = self;
        let Some(group) = groups.get_mut(&join.group_id) else {
            return Err(GroupError::UnknownServerError);
        };
        let result = if new_member {
            join_new_member(group, request, join, now_ms, config, member_ids, out)
        } else {
            join_current_member(group, request, join, now_ms, config, out)
        };
        if group.state == GroupState::PreparingRebalance {
            group.maybe_complete_join(now_ms, out);
        }
        result
    }
}

fn protocol_names(join: &JoinRequest) -> Vec<&str> {
    join.protocols.iter().map(|p| p.name.as_str()).collect()
}

/// Kafka's `doNewMemberJoinGroup`: a member without an id.
fn join_new_member(
    group: &mut Group,
    request: RequestId,
    join: &JoinRequest,
    now_ms: i64,
    config: &GroupConfig,
    member_ids: &mut MemberIdGenerator,
    out: &mut Vec<Output>,
) -> Result<(), GroupError> {
    if !group.supports_protocols(&join.protocol_type, &protocol_names(join)) {
        return Err(GroupError::InconsistentGroupProtocol);
    }
    let prefix = join.group_instance_id.as_deref().unwrap_or(&join.client_id);
    let member_id = member_ids.next(prefix);
    match join.group_instance_id.as_deref() {
        Some(instance) => match group.static_member_id(instance).map(str::to_owned) {
            Some(old_member_id) => {
                info!(
                    group = %group.group_id, instance, old = %old_member_id, new = %member_id,
                    state = %group.state, "static member rejoined with a new member id; replacing the old one"
                );
                replace_static_member_and_rebalance(
                    group,
                    &old_member_id,
                    member_id,
                    request,
                    join,
                    now_ms,
                    config,
                    out,
                )
            }
            None => {
                add_member_and_rebalance(group, member_id, request, join, now_ms, config, out);
                Ok(())
            }
        },
        None if join.require_known_member_id => {
            // KIP-394: reserve the id and make the client come back with it, so a client that
            // times out and retries does not leave a ghost member behind.
            debug!(group = %group.group_id, member = %member_id, "member id required");
            group.pending_members.push(PendingMember {
                member_id: member_id.clone(),
                deadline_ms: now_ms.saturating_add(i64::from(join.session_timeout_ms)),
            });
            Err(GroupError::MemberIdRequired { member_id })
        }
        None => {
            add_member_and_rebalance(group, member_id, request, join, now_ms, config, out);
            Ok(())
        }
    }
}

/// Kafka's `doCurrentMemberJoinGroup`: a member rejoining with its id.
fn join_current_member(
    group: &mut Group,
    request: RequestId,
    join: &JoinRequest,
    now_ms: i64,
    config: &GroupConfig,
    out: &mut Vec<Output>,
) -> Result<(), GroupError> {
    if !group.supports_protocols(&join.protocol_type, &protocol_names(join)) {
        return Err(GroupError::InconsistentGroupProtocol);
    }
    let member_id = join.member_id.as_str();
    if group.is_pending(member_id) {
        // Reserved ids are only handed to dynamic members.
        if join.group_instance_id.is_some() {
            return Err(GroupError::UnknownServerError);
        }
        add_member_and_rebalance(
            group,
            member_id.to_owned(),
            request,
            join,
            now_ms,
            config,
            out,
        );
        return Ok(());
    }
    if let Some(instance) = join.group_instance_id.as_deref() {
        match group.static_member_id(instance) {
            Some(current) if current != member_id => return Err(GroupError::FencedInstanceId),
            Some(_) => {}
            None => return Err(GroupError::UnknownMemberId),
        }
    }
    let Some(member) = group.member(member_id) else {
        return Err(GroupError::UnknownMemberId);
    };
    let unchanged = member.matches(&join.protocols);
    match group.state {
        GroupState::PreparingRebalance => {
            update_member_and_rebalance(
                group,
                request,
                join,
                "member rejoined",
                now_ms,
                config,
                out,
            );
        }
        GroupState::CompletingRebalance if unchanged => {
            // Same metadata: it probably missed the JoinGroup answer; repeat it.
            let is_leader = group.is_leader(member_id);
            out.push(Output::Join {
                request,
                result: Ok(group.join_response(member_id, is_leader)),
            });
        }
        GroupState::Stable if unchanged && !group.is_leader(member_id) => {
            // A follower with nothing new: let it SyncGroup again without a rebalance.
            out.push(Output::Join {
                request,
                result: Ok(group.join_response(member_id, false)),
            });
        }
        GroupState::CompletingRebalance | GroupState::Stable => {
            // Changed metadata, or the leader asking for a rebalance (e.g. topic metadata
            // changed in a way the member metadata does not show).
            update_member_and_rebalance(
                group,
                request,
                join,
                "member rejoined with new metadata, or the leader rejoined",
                now_ms,
                config,
                out,
            );
        }
        GroupState::Empty | GroupState::Dead => return Err(GroupError::UnknownMemberId),
    }
    Ok(())
}

/// Kafka's `addMemberAndRebalance`.
fn add_member_and_rebalance(
    group: &mut Group,
    member_id: String,
    request: RequestId,
    join: &JoinRequest,
    now_ms: i64,
    config: &GroupConfig,
    out: &mut Vec<Output>,
) {
    info!(
        group = %group.group_id, member = %member_id, client_id = %join.client_id,
        instance = ?join.group_instance_id, reason = ?join.reason, "adding member"
    );
    if group.state == GroupState::PreparingRebalance && group.generation_id == 0 {
        group.new_member_added = true;
    }
    group.add_member(Member {
        member_id,
        group_instance_id: join.group_instance_id.clone(),
        client_id: join.client_id.clone(),
        client_host: join.client_host.clone(),
        protocol_type: join.protocol_type.clone(),
        protocols: join.protocols.clone(),
        session_timeout_ms: join.session_timeout_ms,
        rebalance_timeout_ms: join.rebalance_timeout_ms,
        assignment: Bytes::new(),
        awaiting_join: Some(request),
        awaiting_sync: None,
        is_new: true,
        session_deadline_ms: now_ms.saturating_add(i64::from(config.new_member_join_timeout_ms)),
    });
    group.maybe_prepare_rebalance("new member joined", now_ms, config, out);
}

/// Records the member's new protocols and timeouts and parks its join. A join it had parked
/// already is superseded (its client gave up on it) and answered `RebalanceInProgress`.
fn update_member(
    group: &mut Group,
    member_id: &str,
    request: RequestId,
    join: &JoinRequest,
    out: &mut Vec<Output>,
) {
    let Some(member) = group.member_mut(member_id) else {
        return;
    };
    member.protocols = join.protocols.clone();
    member.session_timeout_ms = join.session_timeout_ms;
    member.rebalance_timeout_ms = join.rebalance_timeout_ms;
    if let Some(previous) = member.awaiting_join.replace(request) {
        if previous != request {
            out.push(Output::Join {
                request: previous,
                result: Err(GroupError::RebalanceInProgress),
            });
        }
    }
}

fn update_member_and_rebalance(
    group: &mut Group,
    request: RequestId,
    join: &JoinRequest,
    reason: &str,
    now_ms: i64,
    config: &GroupConfig,
    out: &mut Vec<Output>,
) {
    update_member(group, &join.member_id, request, join, out);
    group.maybe_prepare_rebalance(reason, now_ms, config, out);
}

/// Kafka's `updateStaticMemberAndRebalance` (KIP-345): a known group instance id joined without
/// a member id, i.e. the static member restarted. The new id replaces the old (which is fenced
/// from now on) and keeps its assignment; a Stable group whose protocol choice does not change
/// is not rebalanced.
#[allow(clippy::too_many_arguments)]
fn replace_static_member_and_rebalance(
    group: &mut Group,
    old_member_id: &str,
    new_member_id: String,
    request: RequestId,
    join: &JoinRequest,
    now_ms: i64,
    config: &GroupConfig,
    out: &mut Vec<Output>,
) -> Result<(), GroupError> {
    let previous_leader = group.leader.clone().unwrap_or_default();
    let Some(member) = group.member_mut(old_member_id) else {
        return Err(GroupError::UnknownServerError);
    };
    // Fence whatever the old incarnation still has parked.
    if let Some(previous) = member.awaiting_join.take() {
        out.push(Output::Join {
            request: previous,
            result: Err(GroupError::FencedInstanceId),
        });
    }
    if let Some(previous) = member.awaiting_sync.take() {
        out.push(Output::Sync {
            request: previous,
            result: Err(GroupError::FencedInstanceId),
        });
    }
    member.member_id = new_member_id.clone();
    if group.is_leader(old_member_id) {
        group.leader = Some(new_member_id.clone());
    }
    for id in &mut group.pending_sync {
        if id == old_member_id {
            *id = new_member_id.clone();
        }
    }
    update_member(group, &new_member_id, request, join, out);
    if let Some(member) = group.member_mut(&new_member_id) {
        member.touch(now_ms);
    }

    match group.state {
        GroupState::Stable => {
            if group.select_protocol() == group.protocol_name {
                info!(group = %group.group_id, member = %new_member_id, "static member replaced without a rebalance");
                let is_leader = group.is_leader(&new_member_id);
                let Some(member) = group.member_mut(&new_member_id) else {
                    return Err(GroupError::UnknownServerError);
                };
                member.awaiting_join = None;
                let response = if join.supports_skip_assignment {
                    // v9+: the leader gets the members but is told not to reassign.
                    let mut response = group.join_response(&new_member_id, is_leader);
                    response.skip_assignment = is_leader;
                    response
                } else {
                    // Older clients: name the previous leader id so a restarted leader does not
                    // compute an assignment a Stable group would never hand out.
                    let mut response = group.join_response(&new_member_id, false);
                    response.leader = previous_leader;
                    response
                };
                out.push(Output::Join {
                    request,
                    result: Ok(response),
                });
            } else {
                group.maybe_prepare_rebalance(
                    "static member rejoined with protocols that change the group's choice",
                    now_ms,
                    config,
                    out,
                );
            }
        }
        GroupState::CompletingRebalance => {
            // The leader may be assigning to the old member id: start over.
            group.prepare_rebalance(
                "static member replaced during CompletingRebalance",
                now_ms,
                config,
                out,
            );
        }
        GroupState::PreparingRebalance => {}
        GroupState::Empty | GroupState::Dead => {
            // Unreachable (a group with members is never Empty); do not leave the join parked.
            if let Some(member) = group.member_mut(&new_member_id) {
                member.awaiting_join = None;
            }
            return Err(GroupError::UnknownMemberId);
        }
    }
    Ok(())
}
