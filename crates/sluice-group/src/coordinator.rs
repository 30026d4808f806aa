//! [`GroupCoordinator`]: every group this broker coordinates, their timers, and member-id
//! generation. The API families live in their own files (`join.rs`, `sync.rs`, ...).

use std::collections::BTreeMap;

use crate::group::Group;
use crate::messages::{GroupSnapshot, Output};
use crate::{GroupConfig, GroupError};

/// The classic-protocol group coordinator: a pure state machine.
///
/// Groups exist while they have members, reserved (pending) member ids, or committed offsets
/// (see [`GroupCoordinator::set_has_offsets`]); a group that becomes Empty with none of these is
/// dropped at once (Kafka drops it at its next offsets-cleanup pass).
#[derive(Debug)]
pub struct GroupCoordinator {
    pub(crate) config: GroupConfig,
    /// By group id; ordered so that `tick` and `list_groups` are deterministic.
    pub(crate) groups: BTreeMap<String, Group>,
    pub(crate) member_ids: MemberIdGenerator,
    /// Snapshots of groups removed while one was due, for [`GroupCoordinator::take_snapshots`].
    pub(crate) outbox: Vec<GroupSnapshot>,
}

impl GroupCoordinator {
    /// A coordinator with no groups. `member_id_seed` makes generated member ids unique across
    /// broker restarts: pass something that differs per process (e.g. start time in nanoseconds
    /// mixed with the broker id); tests pass a constant for reproducible ids.
    pub fn new(config: GroupConfig, member_id_seed: u64) -> Self {
        Self {
            config,
            groups: BTreeMap::new(),
            member_ids: MemberIdGenerator {
                seed: member_id_seed,
                counter: 0,
            },
            outbox: Vec::new(),
        }
    }

    /// The snapshots of every group whose generation completed since the last call (a Stable or
    /// Empty group), for the broker to write to the group's offsets partition, stamped
    /// `now_ms`. Call after every call that may change a group: a group's snapshots come out in
    /// the order its generations completed, and only its latest is kept meanwhile.
    pub fn take_snapshots(&mut self, now_ms: i64) -> Vec<GroupSnapshot> {
        for group in self.groups.values_mut().filter(|g| g.store_pending) {
            group.store_pending = false;
            self.outbox.push(group.snapshot(now_ms));
        }
        let mut taken = std::mem::take(&mut self.outbox);
        for s in &mut taken {
            s.current_state_timestamp_ms = now_ms;
        }
        taken
    }

    /// The broker stored `group`'s snapshot of `generation` (`Ok`), or could not (`Err`: what
    /// its parked syncs get). A snapshot taken while the leader's assignment waited for it
    /// releases the syncs of that generation; any other is only acknowledged.
    pub fn assignment_stored(
        &mut self,
        group: &str,
        generation: i32,
        result: Result<(), GroupError>,
        now_ms: i64,
    ) -> Vec<Output> {
        let mut out = Vec::new();
        let config = &self.config;
        if let Some(g) = self.groups.get_mut(group) {
            g.assignment_stored(generation, result, now_ms, config, &mut out);
        }
        out
    }

    /// Restores a group from its stored snapshot (this broker now coordinates it). Replaces what
    /// is known of the group, keeping whether it has offsets.
    pub fn load_group(&mut self, snapshot: &GroupSnapshot, now_ms: i64) {
        let mut group = Group::from_snapshot(snapshot, now_ms);
        if let Some(old) = self.groups.get_mut(&snapshot.group_id) {
            let mut out = Vec::new();
            old.unload(&mut out);
            group.has_offsets = old.has_offsets;
        }
        self.groups.insert(snapshot.group_id.clone(), group);
        self.drop_if_removable(&snapshot.group_id);
    }

    /// Drops every group `moved_away` says this broker no longer coordinates, answering their
    /// parked requests with `NotCoordinator` so clients look for the new coordinator. Snapshots
    /// not yet taken for them are dropped too: the new coordinator has the stored ones.
    pub fn unload_where(&mut self, moved_away: impl Fn(&str) -> bool) -> Vec<Output> {
        let mut out = Vec::new();
        let gone: Vec<String> = self
            .groups
            .keys()
            .filter(|g| moved_away(g))
            .cloned()
            .collect();
        for id in gone {
            if let Some(mut group) = self.groups.remove(&id) {
                group.unload(&mut out);
            }
        }
        self.outbox.retain(|s| !moved_away(&s.group_id));
        out
    }

    /// Removes a group that has nothing left to keep, queueing its last snapshot if one is due.
    fn retire(&mut self, group_id: &str) {
        if let Some(group) = self.groups.remove(group_id) {
            if group.store_pending {
                self.outbox.push(group.snapshot(0));
            }
        }
    }

    pub fn config(&self) -> &GroupConfig {
        &self.config
    }

    /// Fires every expiration due at `now_ms` (member sessions, reserved member ids, join-phase
    /// and initial-delay timers, pending-sync timeouts) and returns the answers to parked
    /// requests this produced. Cheap to call early: nothing happens before a deadline.
    pub fn tick(&mut self, now_ms: i64) -> Vec<Output> {
        let mut out = Vec::new();
        let config = &self.config;
        for group in self.groups.values_mut() {
            group.fire_timers(now_ms, config, &mut out);
        }
        let removable: Vec<String> = self
            .groups
            .iter()
            .filter(|(_, g)| g.is_removable())
            .map(|(id, _)| id.clone())
            .collect();
        for id in removable {
            self.retire(&id);
        }
        out
    }

    /// The earliest instant at which [`GroupCoordinator::tick`] has work, `None` if no timer is
    /// running. Call it after every request and tick; it may move earlier after any call.
    /// (A scan over all groups and members: fine for thousands of members.)
    pub fn next_deadline(&self) -> Option<i64> {
        self.groups.values().filter_map(Group::next_deadline).min()
    }

    /// Forgets every group (this broker stopped being the coordinator) and answers every parked
    /// request with `NotCoordinator`, so clients look for the new coordinator.
    pub fn unload_all(&mut self) -> Vec<Output> {
        let mut out = Vec::new();
        for group in self.groups.values_mut() {
            group.unload(&mut out);
        }
        self.groups.clear();
        out
    }

    /// Drops `group_id` if nothing is left to keep (called at the end of every handler).
    pub(crate) fn drop_if_removable(&mut self, group_id: &str) {
        if self.groups.get(group_id).is_some_and(Group::is_removable) {
            self.retire(group_id);
        }
    }
}

/// Makes member ids `"{prefix}-{uuid-shaped hex}"` as Kafka does (`{client_id}-{UUID}` for
/// dynamic members, `{group_instance_id}-{UUID}` for static ones) without a random source:
/// SplitMix64 over a per-process seed and a counter, a bijection, so ids never repeat within a
/// process and differ across processes whose seeds differ.
#[derive(Debug)]
pub(crate) struct MemberIdGenerator {
    seed: u64,
    counter: u64,
}

impl MemberIdGenerator {
    pub(crate) fn next(&mut self, prefix: &str) -> String {
        self.counter = self.counter.wrapping_add(1);
        let a = splitmix64(self.seed ^ self.counter.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let b = splitmix64(a);
        format!(
            "{prefix}-{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xffff,
            b >> 48,
            b & 0xffff_ffff_ffff
        )
    }
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
