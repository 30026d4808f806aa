//! DescribeGroups, ListGroups, DeleteGroups, and the broker telling us which groups have
//! committed offsets.

use bytes::Bytes;
use tracing::info;

use crate::group::Group;
use crate::messages::{GroupDescription, GroupOverview, MemberDescription};
use crate::{GroupCoordinator, GroupError, GroupState};

impl GroupCoordinator {
    /// DescribeGroups for one group. An unknown group is described as `Dead` with no members
    /// (Kafka answers so, without an error). Protocol, member metadata and assignments are only
    /// filled in while Stable, as in Kafka.
    pub fn describe_group(&self, group_id: &str) -> GroupDescription {
        let Some(group) = self.groups.get(group_id) else {
            return GroupDescription {
                group_id: group_id.to_owned(),
                state: GroupState::Dead,
                protocol_type: String::new(),
                protocol: String::new(),
                members: Vec::new(),
            };
        };
        let stable_protocol = match group.state {
            GroupState::Stable => group.protocol_name.clone(),
            _ => None,
        };
        let members = group
            .members
            .iter()
            .map(|m| MemberDescription {
                member_id: m.member_id.clone(),
                group_instance_id: m.group_instance_id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                metadata: stable_protocol
                    .as_deref()
                    .map(|p| m.metadata(p))
                    .unwrap_or_default(),
                assignment: if stable_protocol.is_some() {
                    m.assignment.clone()
                } else {
                    Bytes::new()
                },
            })
            .collect();
        GroupDescription {
            group_id: group.group_id.clone(),
            state: group.state,
            protocol_type: group.protocol_type.clone().unwrap_or_default(),
            protocol: stable_protocol.unwrap_or_default(),
            members,
        }
    }

    /// ListGroups: every group, or those whose state name matches one of `states_filter`
    /// (case-insensitive, as Kafka; empty filter = all), ordered by group id.
    pub fn list_groups<S: AsRef<str>>(&self, states_filter: &[S]) -> Vec<GroupOverview> {
        self.groups
            .values()
            .filter(|g| {
                states_filter.is_empty()
                    || states_filter
                        .iter()
                        .any(|s| s.as_ref().eq_ignore_ascii_case(g.state.as_str()))
            })
            .map(|g| GroupOverview {
                group_id: g.group_id.clone(),
                protocol_type: g.protocol_type.clone().unwrap_or_default(),
                state: g.state,
            })
            .collect()
    }

    /// DeleteGroups for one group: only a group without members can be deleted
    /// (`NonEmptyGroup`); unknown → `GroupIdNotFound`. On `Ok` the group is gone and the broker
    /// must delete its committed offsets (tombstones in `__consumer_offsets`).
    pub fn delete_group(&mut self, group_id: &str) -> Result<(), GroupError> {
        let Some(group) = self.groups.get(group_id) else {
            return Err(GroupError::GroupIdNotFound);
        };
        match group.state {
            GroupState::Empty | GroupState::Dead => {
                info!(group = group_id, "group deleted");
                self.groups.remove(group_id);
                Ok(())
            }
            GroupState::PreparingRebalance
            | GroupState::CompletingRebalance
            | GroupState::Stable => Err(GroupError::NonEmptyGroup),
        }
    }

    /// The broker's word on whether `group_id` has committed offsets. `true` creates the group
    /// (Empty, no protocol type) if unknown, so it is listed, described and deletable like in
    /// Kafka; `false` (offsets deleted or expired) drops it if it is Empty. Call with `true`
    /// after a successful commit and for every group found when loading `__consumer_offsets`.
    pub fn set_has_offsets(&mut self, group_id: &str, has_offsets: bool) {
        if has_offsets {
            self.groups
                .entry(group_id.to_owned())
                .or_insert_with(|| Group::new(group_id))
                .has_offsets = true;
        } else if let Some(group) = self.groups.get_mut(group_id) {
            group.has_offsets = false;
            self.drop_if_removable(group_id);
        }
    }

    /// Whether `group_id` currently exists here (has members, reserved ids or offsets).
    pub fn contains_group(&self, group_id: &str) -> bool {
        self.groups.contains_key(group_id)
    }
}
