//! One classic group and its transitions (Kafka's `ClassicGroup` plus the rebalance logic of
//! `GroupCoordinator.scala`: `prepareRebalance`, `onCompleteJoin`, `removeMemberAndUpdateGroup`,
//! the delayed join/sync/heartbeat operations as deadlines).
//!
//! Invariants:
//! - `Empty` ⇔ no members (pending members, who only hold a reserved id, do not count).
//! - A member with `awaiting_join` is parked in PreparingRebalance (or is being answered);
//!   one with `awaiting_sync` is parked in CompletingRebalance.
//! - `join_timer` is set exactly in PreparingRebalance; `sync_deadline_ms` only in
//!   CompletingRebalance/Stable while some member of the generation has not sent SyncGroup.

use std::collections::HashMap;

use bytes::Bytes;
use tracing::{debug, info, warn};

use crate::member::Member;
use crate::messages::{
    GroupSnapshot, JoinMember, JoinResponse, MemberAssignment, MemberSnapshot, Output, Protocol,
    SyncResponse,
};
use crate::{GroupConfig, GroupError, GroupState};

/// When the current join phase ends unless every member rejoins first.
#[derive(Debug, Clone, Copy)]
pub(crate) struct JoinTimer {
    pub(crate) deadline_ms: i64,
    /// `Some` for the first join phase of an Empty group (KIP-134's `InitialDelayedJoin`): it
    /// never ends early, and on expiry extends itself while new members keep arriving.
    pub(crate) initial: Option<InitialDelay>,
}

/// Bookkeeping of Kafka's `InitialDelayedJoin`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct InitialDelay {
    /// This round's delay.
    pub(crate) delay_ms: i64,
    /// What is left of the rebalance timeout after this round.
    pub(crate) remaining_ms: i64,
}

/// A member id handed out with `MemberIdRequired`, waiting for the member to rejoin with it.
#[derive(Debug, Clone)]
pub(crate) struct PendingMember {
    pub(crate) member_id: String,
    pub(crate) deadline_ms: i64,
}

#[derive(Debug, Clone)]
pub(crate) struct Group {
    pub(crate) group_id: String,
    pub(crate) state: GroupState,
    /// +1 per completed join phase; members quote it in SyncGroup/Heartbeat/OffsetCommit.
    pub(crate) generation_id: i32,
    /// Set by the first member of an empty group; `None` for groups that only have offsets.
    pub(crate) protocol_type: Option<String>,
    /// Chosen at the end of each join phase; `None` while Empty.
    pub(crate) protocol_name: Option<String>,
    pub(crate) leader: Option<String>,
    /// In join order (Kafka's LinkedHashMap): the first member becomes leader when needed.
    pub(crate) members: Vec<Member>,
    /// KIP-394 reserved ids; they hold up the join phase like members that have not rejoined.
    pub(crate) pending_members: Vec<PendingMember>,
    /// Members of this generation that have not sent SyncGroup yet.
    pub(crate) pending_sync: Vec<String>,
    pub(crate) join_timer: Option<JoinTimer>,
    /// When members still in `pending_sync` are dropped (Kafka's `DelayedSync`).
    pub(crate) sync_deadline_ms: Option<i64>,
    /// A member joined during the initial delay: extend it once more.
    pub(crate) new_member_added: bool,
    /// Told by the broker: offsets exist, so an Empty group is kept (listed, describable).
    pub(crate) has_offsets: bool,
    /// A generation completed since the last snapshot was taken: the broker must store one.
    pub(crate) store_pending: bool,
    /// The leader's assignment of this generation is being stored: the syncs parked in
    /// CompletingRebalance are answered once the broker says it is (Kafka's `storeGroup`
    /// before it propagates the assignment), so no member works from an assignment that a
    /// coordinator failover could take back.
    pub(crate) storing: bool,
}

impl Group {
    pub(crate) fn new(group_id: &str) -> Self {
        Self {
            group_id: group_id.to_owned(),
            state: GroupState::Empty,
            generation_id: 0,
            protocol_type: None,
            protocol_name: None,
            leader: None,
            members: Vec::new(),
            pending_members: Vec::new(),
            pending_sync: Vec::new(),
            join_timer: None,
            sync_deadline_ms: None,
            new_member_added: false,
            has_offsets: false,
            store_pending: false,
            storing: false,
        }
    }

    /// What `__consumer_offsets` keeps of this group (see [`GroupSnapshot`]).
    pub(crate) fn snapshot(&self, now_ms: i64) -> GroupSnapshot {
        let protocol = self.protocol_name.as_deref().unwrap_or_default();
        GroupSnapshot {
            group_id: self.group_id.clone(),
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            generation_id: self.generation_id,
            protocol_name: self.protocol_name.clone(),
            leader: self.leader.clone(),
            current_state_timestamp_ms: now_ms,
            members: self
                .members
                .iter()
                .map(|m| MemberSnapshot {
                    member_id: m.member_id.clone(),
                    group_instance_id: m.group_instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    session_timeout_ms: m.session_timeout_ms,
                    subscription: m.metadata(protocol),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        }
    }

    /// A group as a stored snapshot left it (Kafka's `GroupMetadataManager.loadGroup`): Empty
    /// without members, else Stable with every member's session starting now, so members that
    /// heartbeat keep their assignment and the ones that are gone expire.
    pub(crate) fn from_snapshot(s: &GroupSnapshot, now_ms: i64) -> Self {
        let mut group = Group::new(&s.group_id);
        group.generation_id = s.generation_id;
        group.protocol_type = (!s.protocol_type.is_empty()).then(|| s.protocol_type.clone());
        let protocol = match (&s.protocol_name, s.members.is_empty()) {
            (Some(p), false) => p.clone(),
            _ => return group,
        };
        group.protocol_name = Some(protocol.clone());
        group.leader = s.leader.clone();
        group.state = GroupState::Stable;
        for m in &s.members {
            let mut member = Member {
                member_id: m.member_id.clone(),
                group_instance_id: m.group_instance_id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                protocol_type: s.protocol_type.clone(),
                protocols: vec![Protocol {
                    name: protocol.clone(),
                    metadata: m.subscription.clone(),
                }],
                session_timeout_ms: m.session_timeout_ms,
                rebalance_timeout_ms: m.rebalance_timeout_ms,
                assignment: m.assignment.clone(),
                awaiting_join: None,
                awaiting_sync: None,
                is_new: false,
                session_deadline_ms: 0,
            };
            member.touch(now_ms);
            group.members.push(member);
        }
        if group.leader.as_deref().is_none_or(|l| !group.has_member(l)) {
            group.leader = group.members.first().map(|m| m.member_id.clone());
        }
        group
    }

    pub(crate) fn member(&self, member_id: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.member_id == member_id)
    }

    pub(crate) fn member_mut(&mut self, member_id: &str) -> Option<&mut Member> {
        self.members.iter_mut().find(|m| m.member_id == member_id)
    }

    pub(crate) fn has_member(&self, member_id: &str) -> bool {
        self.member(member_id).is_some()
    }

    pub(crate) fn is_leader(&self, member_id: &str) -> bool {
        self.leader.as_deref() == Some(member_id)
    }

    pub(crate) fn is_pending(&self, member_id: &str) -> bool {
        self.pending_members
            .iter()
            .any(|p| p.member_id == member_id)
    }

    /// The member id currently owning a group instance id.
    pub(crate) fn static_member_id(&self, group_instance_id: &str) -> Option<&str> {
        self.members
            .iter()
            .find(|m| m.group_instance_id.as_deref() == Some(group_instance_id))
            .map(|m| m.member_id.as_str())
    }

    /// Nothing left to keep: no members, no reserved ids, no offsets.
    pub(crate) fn is_removable(&self) -> bool {
        self.state == GroupState::Empty
            && self.members.is_empty()
            && self.pending_members.is_empty()
            && !self.has_offsets
    }

    /// Kafka's `validateCurrentMember`: with an instance id, it must map to `member_id`
    /// (`FencedInstanceId` if it maps to another); without, the member must exist.
    pub(crate) fn validate_current_member(
        &self,
        member_id: &str,
        group_instance_id: Option<&str>,
    ) -> Result<(), GroupError> {
        match group_instance_id {
            Some(instance) => match self.static_member_id(instance) {
                Some(current) if current != member_id => Err(GroupError::FencedInstanceId),
                Some(_) => Ok(()),
                None => Err(GroupError::UnknownMemberId),
            },
            None if self.has_member(member_id) => Ok(()),
            None => Err(GroupError::UnknownMemberId),
        }
    }

    /// Kafka's `supportsProtocols`: an Empty group takes any non-empty type and protocol list;
    /// otherwise the type must match and one of the protocols be supported by every member.
    pub(crate) fn supports_protocols(&self, protocol_type: &str, protocols: &[&str]) -> bool {
        if self.state == GroupState::Empty {
            return !protocol_type.is_empty() && !protocols.is_empty();
        }
        self.protocol_type.as_deref() == Some(protocol_type)
            && protocols
                .iter()
                .any(|p| self.members.iter().all(|m| m.supports(p)))
    }

    /// The longest rebalance timeout of the members: how long a join phase may last.
    pub(crate) fn rebalance_timeout_ms(&self) -> i64 {
        self.members
            .iter()
            .map(|m| i64::from(m.rebalance_timeout_ms.max(0)))
            .max()
            .unwrap_or(0)
    }

    fn all_members_joined(&self) -> bool {
        self.pending_members.is_empty() && self.members.iter().all(|m| m.awaiting_join.is_some())
    }

    /// Picks the protocol supported by every member that most members prefer; ties go to the
    /// protocol that got its first vote earliest in member order (Kafka leaves ties arbitrary).
    pub(crate) fn select_protocol(&self) -> Option<String> {
        let first = self.members.first()?;
        let candidates: Vec<&str> = first
            .protocols
            .iter()
            .map(|p| p.name.as_str())
            .filter(|name| self.members.iter().all(|m| m.supports(name)))
            .collect();
        let mut votes: Vec<(&str, usize)> = Vec::new();
        for vote in self.members.iter().filter_map(|m| m.vote(&candidates)) {
            match votes.iter_mut().find(|(name, _)| *name == vote) {
                Some((_, count)) => *count += 1,
                None => votes.push((vote, 1)),
            }
        }
        let mut best: Option<(&str, usize)> = None;
        for (name, count) in votes {
            if best.is_none_or(|(_, c)| count > c) {
                best = Some((name, count));
            }
        }
        best.map(|(name, _)| name.to_owned())
    }

    /// Every member with its metadata for the chosen protocol: the leader's JoinGroup answer.
    fn member_metadata(&self) -> Vec<JoinMember> {
        let protocol = self.protocol_name.as_deref().unwrap_or_default();
        self.members
            .iter()
            .map(|m| JoinMember {
                member_id: m.member_id.clone(),
                group_instance_id: m.group_instance_id.clone(),
                metadata: m.metadata(protocol),
            })
            .collect()
    }

    /// A JoinGroup answer for the current generation.
    pub(crate) fn join_response(&self, member_id: &str, with_members: bool) -> JoinResponse {
        JoinResponse {
            generation_id: self.generation_id,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol_name.clone(),
            leader: self.leader.clone().unwrap_or_default(),
            skip_assignment: false,
            member_id: member_id.to_owned(),
            members: if with_members {
                self.member_metadata()
            } else {
                Vec::new()
            },
        }
    }

    pub(crate) fn sync_response(&self, assignment: Bytes) -> SyncResponse {
        SyncResponse {
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol_name.clone(),
            assignment,
        }
    }

    /// Adds a member (Kafka's `ClassicGroup.add`): the first member sets the protocol type and
    /// becomes leader until a join phase says otherwise.
    pub(crate) fn add_member(&mut self, member: Member) {
        if self.members.is_empty() {
            self.protocol_type = Some(member.protocol_type.clone());
        }
        if self.leader.is_none() {
            self.leader = Some(member.member_id.clone());
        }
        self.pending_members
            .retain(|p| p.member_id != member.member_id);
        self.members.push(member);
    }

    /// Removes a member; its parked join/sync, if any, is answered `UnknownMemberId` (the client
    /// will rejoin if it is still alive).
    pub(crate) fn remove_member(&mut self, member_id: &str, out: &mut Vec<Output>) {
        let Some(index) = self.members.iter().position(|m| m.member_id == member_id) else {
            return;
        };
        let member = self.members.remove(index);
        if let Some(request) = member.awaiting_join {
            out.push(Output::Join {
                request,
                result: Err(GroupError::UnknownMemberId),
            });
        }
        if let Some(request) = member.awaiting_sync {
            out.push(Output::Sync {
                request,
                result: Err(GroupError::UnknownMemberId),
            });
        }
        if self.is_leader(member_id) {
            self.leader = self.members.first().map(|m| m.member_id.clone());
        }
        self.pending_sync.retain(|id| id != member_id);
    }

    /// Kafka's `removeMemberAndUpdateGroup`: remove, then rebalance (Stable/CompletingRebalance)
    /// or see whether the join phase can now end (PreparingRebalance).
    pub(crate) fn remove_member_and_update(
        &mut self,
        member_id: &str,
        reason: &str,
        now_ms: i64,
        config: &GroupConfig,
        out: &mut Vec<Output>,
    ) {
        info!(group = %self.group_id, member = member_id, reason, "removing member");
        self.remove_member(member_id, out);
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                self.prepare_rebalance(reason, now_ms, config, out)
            }
            GroupState::PreparingRebalance => self.maybe_complete_join(now_ms, out),
            GroupState::Empty | GroupState::Dead => {}
        }
    }

    /// Drops a reserved id (LeaveGroup or expiry); it may have been the last one holding up the
    /// join phase.
    pub(crate) fn remove_pending_member(
        &mut self,
        member_id: &str,
        now_ms: i64,
        out: &mut Vec<Output>,
    ) {
        self.pending_members.retain(|p| p.member_id != member_id);
        if self.state == GroupState::PreparingRebalance {
            self.maybe_complete_join(now_ms, out);
        }
    }

    /// Kafka's `maybePrepareRebalance`: only from Empty, Stable or CompletingRebalance.
    pub(crate) fn maybe_prepare_rebalance(
        &mut self,
        reason: &str,
        now_ms: i64,
        config: &GroupConfig,
        out: &mut Vec<Output>,
    ) {
        if matches!(
            self.state,
            GroupState::Empty | GroupState::Stable | GroupState::CompletingRebalance
        ) {
            self.prepare_rebalance(reason, now_ms, config, out);
        }
    }

    /// Kafka's `prepareRebalance`: cancel parked syncs, start the join phase timer (the initial
    /// delay when coming from Empty), and end the phase at once if everyone has already rejoined.
    pub(crate) fn prepare_rebalance(
        &mut self,
        reason: &str,
        now_ms: i64,
        config: &GroupConfig,
        out: &mut Vec<Output>,
    ) {
        if self.state == GroupState::CompletingRebalance {
            self.reset_and_propagate_assignment_error(GroupError::RebalanceInProgress, now_ms, out);
        }
        self.storing = false;
        self.sync_deadline_ms = None;
        self.pending_sync.clear();
        let rebalance_timeout = self.rebalance_timeout_ms();
        let from_empty = self.state == GroupState::Empty;
        self.join_timer = Some(if from_empty {
            let delay = i64::from(config.initial_rebalance_delay_ms.max(0));
            JoinTimer {
                deadline_ms: now_ms.saturating_add(delay),
                initial: Some(InitialDelay {
                    delay_ms: delay,
                    remaining_ms: (rebalance_timeout - delay).max(0),
                }),
            }
        } else {
            JoinTimer {
                deadline_ms: now_ms.saturating_add(rebalance_timeout),
                initial: None,
            }
        });
        info!(
            group = %self.group_id,
            from = %self.state,
            generation = self.generation_id,
            reason,
            "preparing to rebalance"
        );
        self.state = GroupState::PreparingRebalance;
        if !from_empty {
            self.maybe_complete_join(now_ms, out);
        }
    }

    /// Ends the join phase if every member (and reserved id) has rejoined — except during the
    /// initial delay, which always runs its course.
    pub(crate) fn maybe_complete_join(&mut self, now_ms: i64, out: &mut Vec<Output>) {
        let initial = self.join_timer.is_some_and(|t| t.initial.is_some());
        if self.state == GroupState::PreparingRebalance && !initial && self.all_members_joined() {
            self.complete_join(now_ms, out);
        }
    }

    /// Kafka's `onCompleteJoin`: drop dynamic members that did not rejoin, elect the leader,
    /// start the next generation and answer every parked join.
    fn complete_join(&mut self, now_ms: i64, out: &mut Vec<Output>) {
        self.join_timer = None;
        self.new_member_added = false;
        // Static members are kept: KIP-345 lets them miss a join phase until their session ends.
        let not_rejoined: Vec<String> = self
            .members
            .iter()
            .filter(|m| m.awaiting_join.is_none() && m.group_instance_id.is_none())
            .map(|m| m.member_id.clone())
            .collect();
        for member_id in &not_rejoined {
            info!(group = %self.group_id, member = %member_id, "member did not rejoin in time; removing it");
            self.remove_member(member_id, out);
        }

        if !self.members.is_empty() && self.members.iter().all(|m| m.awaiting_join.is_none()) {
            // Only static members that have not rejoined are left: wait another rebalance
            // timeout, until they rejoin or their sessions end.
            warn!(group = %self.group_id, "no member rejoined; extending the join phase");
            self.join_timer = Some(JoinTimer {
                deadline_ms: now_ms.saturating_add(self.rebalance_timeout_ms().max(1)),
                initial: None,
            });
            return;
        }
        let leader_rejoined = self
            .leader
            .as_deref()
            .and_then(|l| self.member(l))
            .is_some_and(|m| m.awaiting_join.is_some());
        if !leader_rejoined {
            self.leader = self
                .members
                .iter()
                .find(|m| m.awaiting_join.is_some())
                .map(|m| m.member_id.clone());
        }

        self.generation_id = self.generation_id.wrapping_add(1);
        self.pending_sync.clear();
        if self.members.is_empty() {
            self.protocol_name = None;
            self.leader = None;
            self.state = GroupState::Empty;
            self.store_pending = true;
            info!(group = %self.group_id, generation = self.generation_id, "group is now empty");
            return;
        }
        self.protocol_name = self.select_protocol();
        self.state = GroupState::CompletingRebalance;
        info!(
            group = %self.group_id,
            generation = self.generation_id,
            protocol = ?self.protocol_name,
            leader = ?self.leader,
            members = self.members.len(),
            "join phase complete; awaiting the leader's assignment"
        );
        let leader_members = self.member_metadata();
        let template = self.join_response("", false);
        let leader = self.leader.clone();
        for member in &mut self.members {
            member.is_new = false;
            member.touch(now_ms);
            self.pending_sync.push(member.member_id.clone());
            if let Some(request) = member.awaiting_join.take() {
                let is_leader = leader.as_deref() == Some(member.member_id.as_str());
                let response = JoinResponse {
                    member_id: member.member_id.clone(),
                    members: if is_leader {
                        leader_members.clone()
                    } else {
                        Vec::new()
                    },
                    ..template.clone()
                };
                out.push(Output::Join {
                    request,
                    result: Ok(response),
                });
            }
        }
        self.sync_deadline_ms = Some(now_ms.saturating_add(self.rebalance_timeout_ms()));
    }

    /// The leader's assignment arrived: each member gets its own (members it left out get an
    /// empty one), and the group's state with it is queued for storing. The parked syncs wait
    /// for [`Group::assignment_stored`].
    pub(crate) fn complete_sync(&mut self, assignments: Vec<MemberAssignment>) {
        let mut by_member: HashMap<String, Bytes> = HashMap::with_capacity(assignments.len());
        for a in assignments {
            by_member.insert(a.member_id, a.assignment);
        }
        let missing = self
            .members
            .iter()
            .filter(|m| !by_member.contains_key(&m.member_id))
            .count();
        if missing > 0 {
            warn!(group = %self.group_id, missing, "leader left members without assignment");
        }
        for member in &mut self.members {
            member.assignment = by_member.remove(&member.member_id).unwrap_or_default();
        }
        self.storing = true;
        self.store_pending = true;
    }

    /// The broker stored (or failed to store) generation `generation`'s assignment. Stored: the
    /// parked syncs get their assignments and the group is Stable. Failed: they get `error`
    /// and the group rebalances (Kafka's `doSyncGroup` callback). Ignored unless the group
    /// still waits for that store.
    pub(crate) fn assignment_stored(
        &mut self,
        generation: i32,
        result: Result<(), GroupError>,
        now_ms: i64,
        config: &GroupConfig,
        out: &mut Vec<Output>,
    ) {
        if !self.storing
            || self.state != GroupState::CompletingRebalance
            || self.generation_id != generation
        {
            return;
        }
        self.storing = false;
        if let Err(error) = result {
            warn!(group = %self.group_id, generation, %error, "storing the assignment failed");
            self.reset_and_propagate_assignment_error(error, now_ms, out);
            self.maybe_prepare_rebalance("storing the assignment failed", now_ms, config, out);
            return;
        }
        let template = self.sync_response(Bytes::new());
        for member in &mut self.members {
            if let Some(request) = member.awaiting_sync.take() {
                member.touch(now_ms);
                out.push(Output::Sync {
                    request,
                    result: Ok(SyncResponse {
                        assignment: member.assignment.clone(),
                        ..template.clone()
                    }),
                });
            }
        }
        self.state = GroupState::Stable;
        info!(group = %self.group_id, generation = self.generation_id, "group is stable");
    }

    /// Clears assignments and answers every parked sync with `error`.
    fn reset_and_propagate_assignment_error(
        &mut self,
        error: GroupError,
        now_ms: i64,
        out: &mut Vec<Output>,
    ) {
        for member in &mut self.members {
            member.assignment = Bytes::new();
            if let Some(request) = member.awaiting_sync.take() {
                member.touch(now_ms);
                out.push(Output::Sync {
                    request,
                    result: Err(error.clone()),
                });
            }
        }
    }

    /// A member has sent SyncGroup for this generation.
    pub(crate) fn mark_synced(&mut self, member_id: &str) {
        self.pending_sync.retain(|id| id != member_id);
        if self.pending_sync.is_empty() {
            self.sync_deadline_ms = None;
        }
    }

    /// The earliest instant at which [`Group::fire_timers`] has something to do.
    pub(crate) fn next_deadline(&self) -> Option<i64> {
        let members = self.members.iter().filter_map(|m| m.expiry_ms());
        let pending = self.pending_members.iter().map(|p| p.deadline_ms);
        let join = self.join_timer.map(|t| t.deadline_ms);
        members
            .chain(pending)
            .chain(join)
            .chain(self.sync_deadline_ms)
            .min()
    }

    /// Fires every timer due at `now_ms`: reserved ids, member sessions, the join phase, the
    /// sync deadline. Loops because one expiry can make another timer due (a zero timeout).
    pub(crate) fn fire_timers(&mut self, now_ms: i64, config: &GroupConfig, out: &mut Vec<Output>) {
        // Each round removes a member or ends/extends a phase, so this terminates quickly; the
        // bound only guards against a logic error turning into a hang.
        for _ in 0..1_000 {
            if self.next_deadline().is_none_or(|d| d > now_ms) {
                return;
            }
            if let Some(pending) = self
                .pending_members
                .iter()
                .find(|p| p.deadline_ms <= now_ms)
                .map(|p| p.member_id.clone())
            {
                info!(group = %self.group_id, member = %pending, "pending member expired");
                self.remove_pending_member(&pending, now_ms, out);
                continue;
            }
            if let Some(expired) = self
                .members
                .iter()
                .find(|m| m.expiry_ms().is_some_and(|d| d <= now_ms))
                .map(|m| m.member_id.clone())
            {
                self.remove_member_and_update(&expired, "session timeout", now_ms, config, out);
                continue;
            }
            if let Some(timer) = self.join_timer.filter(|t| t.deadline_ms <= now_ms) {
                self.on_join_timer(timer, now_ms, config, out);
                continue;
            }
            if self.sync_deadline_ms.is_some_and(|d| d <= now_ms) {
                self.on_sync_expired(now_ms, config, out);
                continue;
            }
        }
        warn!(group = %self.group_id, "timer loop did not settle");
    }

    /// Kafka's `DelayedJoin`/`InitialDelayedJoin` expiry.
    fn on_join_timer(
        &mut self,
        timer: JoinTimer,
        now_ms: i64,
        config: &GroupConfig,
        out: &mut Vec<Output>,
    ) {
        if let Some(initial) = timer.initial {
            if self.new_member_added && initial.remaining_ms != 0 {
                self.new_member_added = false;
                let delay =
                    i64::from(config.initial_rebalance_delay_ms.max(0)).min(initial.remaining_ms);
                let remaining = (initial.remaining_ms - initial.delay_ms).max(0);
                debug!(group = %self.group_id, delay, remaining, "new members joined; extending the initial delay");
                self.join_timer = Some(JoinTimer {
                    deadline_ms: now_ms.saturating_add(delay),
                    initial: Some(InitialDelay {
                        delay_ms: delay,
                        remaining_ms: remaining,
                    }),
                });
                return;
            }
        }
        self.complete_join(now_ms, out);
    }

    /// Kafka's `DelayedSync` expiry: members that never sent SyncGroup are dropped.
    fn on_sync_expired(&mut self, now_ms: i64, config: &GroupConfig, out: &mut Vec<Output>) {
        self.sync_deadline_ms = None;
        if !matches!(
            self.state,
            GroupState::CompletingRebalance | GroupState::Stable
        ) || self.pending_sync.is_empty()
        {
            return;
        }
        let laggards = std::mem::take(&mut self.pending_sync);
        info!(group = %self.group_id, members = ?laggards, "members did not sync in time; removing them");
        for member_id in &laggards {
            self.remove_member(member_id, out);
        }
        self.prepare_rebalance("pending sync expired", now_ms, config, out);
    }

    /// Answers every parked request with `NotCoordinator` (the group moved away).
    pub(crate) fn unload(&mut self, out: &mut Vec<Output>) {
        for member in &mut self.members {
            if let Some(request) = member.awaiting_join.take() {
                out.push(Output::Join {
                    request,
                    result: Err(GroupError::NotCoordinator),
                });
            }
            if let Some(request) = member.awaiting_sync.take() {
                out.push(Output::Sync {
                    request,
                    result: Err(GroupError::NotCoordinator),
                });
            }
        }
    }
}
