//! Follower fetches and ISR changes (Kafka's `updateFollowerFetchState`, `maybeExpandIsr`,
//! `maybeShrinkIsr` and the AlterPartition answer handling).
//!
//! The leader proposes, the controller decides: a change is an [`IsrProposal`] output, and the
//! ISR used for `min.insync.replicas` stays the committed one until the controller's answer (or a
//! new [`crate::LeaderChange`]) arrives. One proposal is in flight at a time.
//!
//! - **Shrink** ([`ReplicaState::tick`]): ISR followers not caught up for longer than
//!   `replica.lag.time.max.ms`.
//! - **Expand** (on a fetch): a follower outside the ISR whose end has reached both the high
//!   watermark and the start of the current leader epoch.

use sluice_types::{BrokerId, Offset};

use crate::messages::{IsrProposal, Output};
use crate::replica::{PendingIsr, ReplicaState, RoleState};
use crate::ReplicaError;

impl ReplicaState {
    /// A follower fetched from `fetch_offset` (so it holds everything before it) while this
    /// leader's end was `leader_end_at_fetch` (the end the fetch can read up to; the shell picks
    /// it, normally the same counted end as [`ReplicaState::on_local_end`]). May propose adding
    /// the follower to the ISR and move the high watermark. A fetch with an older
    /// `broker_epoch` than the follower's last one comes from a previous incarnation of that
    /// broker and is refused (Kafka's `Replica.updateFetchStateOrThrow`, KIP-903); -1 (a
    /// request version without it) is never stale.
    pub fn on_follower_fetch(
        &mut self,
        follower: BrokerId,
        broker_epoch: i64,
        fetch_offset: Offset,
        leader_end_at_fetch: Offset,
        now_ms: i64,
    ) -> Result<Vec<Output>, ReplicaError> {
        let RoleState::Leader(leader) = &mut self.role else {
            return Err(ReplicaError::NotLeader);
        };
        let progress = leader
            .followers
            .get_mut(&follower)
            .ok_or(ReplicaError::UnknownReplica(follower))?;
        if broker_epoch != -1 && progress.broker_epoch > broker_epoch {
            return Err(ReplicaError::StaleBrokerEpoch {
                follower,
                received: broker_epoch,
                current: progress.broker_epoch,
            });
        }
        progress.broker_epoch = broker_epoch;
        progress.on_fetch(fetch_offset, leader_end_at_fetch, now_ms);
        let mut out = Vec::new();
        self.maybe_expand_isr(follower, &mut out);
        self.maybe_advance_hw(now_ms, &mut out);
        Ok(out)
    }

    fn maybe_expand_isr(&mut self, follower: BrokerId, out: &mut Vec<Output>) {
        let Some(leader) = self.leader() else { return };
        if leader.pending.is_some()
            || self.isr.contains(&follower)
            || self.ineligible.contains(&follower)
        {
            return;
        }
        let Some(f) = leader.followers.get(&follower) else {
            return;
        };
        // Reaching the HW is not enough: a follower missing records an earlier leader wrote
        // above it would lose them if elected, so it must also reach this epoch's start.
        if f.end >= self.hw && f.end >= leader.epoch_start {
            let mut isr = self.isr.clone();
            isr.push(follower);
            self.propose(isr, Some(follower), out);
        }
    }

    /// Proposes dropping ISR followers that have not been caught up for longer than the lag
    /// time (or that the leader has no progress for), unless a change is already in flight.
    pub(crate) fn maybe_shrink_isr(&mut self, now_ms: i64, out: &mut Vec<Output>) {
        let Some(leader) = self.leader() else { return };
        if leader.pending.is_some() {
            return;
        }
        let lag = self.config.replica_lag_time_max_ms;
        let in_sync = |id: &BrokerId| {
            *id == self.local
                || leader
                    .followers
                    .get(id)
                    .is_some_and(|f| f.is_caught_up(self.local_end, now_ms, lag))
        };
        if self.isr.iter().all(in_sync) {
            return;
        }
        let isr = self.isr.iter().copied().filter(in_sync).collect();
        self.propose(isr, None, out);
    }

    fn propose(&mut self, isr: Vec<BrokerId>, adding: Option<BrokerId>, out: &mut Vec<Output>) {
        let RoleState::Leader(leader) = &mut self.role else {
            return;
        };
        self.last_proposal_id += 1;
        let broker_epochs = isr
            .iter()
            .map(|id| {
                let epoch = leader.followers.get(id).map_or(-1, |f| f.broker_epoch);
                (*id, epoch)
            })
            .collect();
        let proposal = IsrProposal {
            id: self.last_proposal_id,
            leader_epoch: self.leader_epoch,
            partition_epoch: self.partition_epoch,
            isr,
            broker_epochs,
        };
        leader.pending = Some(PendingIsr {
            proposal: proposal.clone(),
            adding,
        });
        out.push(Output::ProposeIsr(proposal));
    }

    /// The controller accepted proposal `id`: the ISR is now `isr` at `partition_epoch`. Ignored
    /// (returns nothing) if `id` is not the proposal in flight, or if this replica already knows
    /// a newer partition epoch; the change then waits for the next [`crate::LeaderChange`].
    pub fn isr_change_committed(
        &mut self,
        id: u64,
        isr: Vec<BrokerId>,
        partition_epoch: i32,
        now_ms: i64,
    ) -> Vec<Output> {
        let mut out = Vec::new();
        if !self.is_in_flight(id) || partition_epoch < self.partition_epoch {
            return out;
        }
        if let RoleState::Leader(leader) = &mut self.role {
            leader.pending = None;
        }
        self.isr = isr;
        self.partition_epoch = partition_epoch;
        self.maybe_advance_hw(now_ms, &mut out);
        out
    }

    /// The controller refused proposal `id` and says the ISR did not change (Kafka's
    /// `OPERATION_NOT_ATTEMPTED`, `INELIGIBLE_REPLICA`): back to the committed ISR, free to
    /// propose again. For answers that leave the outcome unknown (stale epochs, unknown topic)
    /// the shell does not call this; the change stays in flight until a new
    /// [`crate::LeaderChange`]. Ignored if `id` is not the proposal in flight.
    pub fn isr_change_rejected(&mut self, id: u64, now_ms: i64) -> Vec<Output> {
        let mut out = Vec::new();
        if !self.is_in_flight(id) {
            return out;
        }
        if let RoleState::Leader(leader) = &mut self.role {
            leader.pending = None;
        }
        self.maybe_advance_hw(now_ms, &mut out);
        out
    }

    fn is_in_flight(&self, id: u64) -> bool {
        self.pending_isr().is_some_and(|p| p.id == id)
    }
}

#[cfg(test)]
mod tests {
    use crate::testkit::*;
    use crate::*;

    #[test]
    fn shrink_after_the_lag_time_and_not_before() {
        let mut r = leader_of(&[1, 2, 3], &[1, 2, 3], 0);
        r.on_local_end(Offset(10), T0);
        fetch(&mut r, 2, 10, T0);
        fetch(&mut r, 3, 10, T0 + 1_000);
        r.on_local_end(Offset(20), T0 + 1_000);
        assert_eq!(r.next_deadline(T0 + 1_000), Some(T0 + LAG + 1));
        assert!(r.tick(T0 + LAG).is_empty());
        let p = proposal(&r.tick(T0 + LAG + 1)).unwrap();
        assert_eq!(p.isr, ids(&[1, 3]));
        assert_eq!(p.leader_epoch, EPOCH);
        assert_eq!(p.partition_epoch, 0);
        // Committed: follower 3 is next, a second later.
        r.isr_change_committed(p.id, ids(&[1, 3]), 1, T0 + LAG + 1);
        assert_eq!(r.partition_epoch(), 1);
        assert_eq!(r.next_deadline(T0 + LAG + 1), Some(T0 + 1_000 + LAG + 1));
        assert!(r.tick(T0 + 1_000 + LAG).is_empty());
        let p = proposal(&r.tick(T0 + 1_000 + LAG + 1)).unwrap();
        assert_eq!(p.isr, ids(&[1]));
    }

    #[test]
    fn a_fetch_from_an_older_incarnation_is_refused_and_proposals_carry_broker_epochs() {
        let mut r = leader_of(&[1, 2, 3], &[1, 3], 0);
        r.on_local_end(Offset(10), T0);
        fetch(&mut r, 3, 10, T0);
        assert_eq!(r.high_watermark(), Offset(10));
        // Broker 2 restarted (epoch 7): its fetch is recorded; the old incarnation's (epoch 5)
        // arriving late is refused and changes nothing.
        let out = r
            .on_follower_fetch(BrokerId(2), 7, Offset(0), Offset(10), T0)
            .unwrap();
        assert_eq!(proposal(&out), None);
        assert_eq!(
            r.on_follower_fetch(BrokerId(2), 5, Offset(10), Offset(10), T0),
            Err(ReplicaError::StaleBrokerEpoch {
                follower: BrokerId(2),
                received: 5,
                current: 7
            })
        );
        assert_eq!(r.follower(BrokerId(2)).unwrap().end, Offset(0));
        // Caught up under its own epoch, it is proposed with that epoch for the controller to
        // check; the leader and a follower that never sent one carry -1.
        let out = r
            .on_follower_fetch(BrokerId(2), 7, Offset(10), Offset(10), T0)
            .unwrap();
        let p = proposal(&out).unwrap();
        assert_eq!(p.isr, ids(&[1, 3, 2]));
        assert_eq!(
            p.broker_epochs,
            vec![(BrokerId(1), -1), (BrokerId(3), -1), (BrokerId(2), 7)]
        );
    }

    #[test]
    fn follower_holding_the_leader_end_is_never_dropped() {
        let mut r = leader_of(&[1, 2], &[1, 2], 0);
        r.on_local_end(Offset(10), T0);
        fetch(&mut r, 2, 10, T0);
        // Nothing new produced: the follower has it all, however long it has been.
        assert!(r.tick(T0 + 100 * LAG).is_empty());
        assert_eq!(r.next_deadline(T0 + 100 * LAG), None);
    }

    #[test]
    fn follower_that_fetches_but_never_reaches_the_end_is_dropped() {
        let mut r = leader_of(&[1, 2], &[1, 2], 0);
        let mut dropped_at = None;
        // Each fetch arrives 10 behind the leader, which moves 2 ahead per second.
        for step in 1..=100 {
            let now = T0 + step * 1_000;
            let end = Offset(10 + 2 * step);
            r.on_local_end(end, now);
            fetch(&mut r, 2, end.get() - 10, now);
            if let Some(p) = proposal(&r.tick(now)) {
                assert_eq!(p.isr, ids(&[1]));
                dropped_at = Some(now);
                break;
            }
        }
        // In the ISR at become-leader (T0), never caught up since.
        assert_eq!(dropped_at, Some(T0 + LAG + 1_000));
    }

    #[test]
    fn follower_reaching_the_previous_leader_end_stays_in_sync() {
        let mut r = leader_of(&[1, 2], &[1, 2], 0);
        // Each fetch holds what the leader had at the previous fetch, never the current end.
        for step in 1..=100 {
            let now = T0 + step * 1_000;
            r.on_local_end(Offset(step * 5), now);
            fetch(&mut r, 2, (step - 1) * 5, now);
            assert!(r.tick(now).is_empty(), "dropped at step {step}");
        }
        assert_eq!(r.isr(), ids(&[1, 2]));
        assert_eq!(r.high_watermark(), Offset(99 * 5));
    }

    #[test]
    fn follower_is_added_once_it_reaches_the_hw() {
        let mut r = leader_of(&[1, 2], &[1], 0);
        r.on_local_end(Offset(60), T0);
        assert_eq!(r.high_watermark(), Offset(60));
        assert!(fetch(&mut r, 2, 45, T0).is_empty());
        assert!(fetch(&mut r, 2, 59, T0).is_empty());
        let p = proposal(&fetch(&mut r, 2, 60, T0)).unwrap();
        assert_eq!(p.isr, ids(&[1, 2]));
    }

    #[test]
    fn follower_is_added_only_once_it_reaches_the_epoch_start() {
        // HW 40 is held by ISR follower 3; this epoch began at 50.
        let mut r = ReplicaState::new(BrokerId(1), ReplicaConfig::default());
        let mut change = leader_change(&[1, 2, 3], &[1, 3], 0);
        change.local_end = Offset(50);
        change.epoch_start = Offset(50);
        change.hw = Offset(40);
        assert_eq!(
            r.become_leader(change).unwrap(),
            vec![Output::HighWatermark(Offset(40))]
        );
        assert!(
            fetch(&mut r, 2, 45, T0).is_empty(),
            "past the HW, before the epoch start"
        );
        let p = proposal(&fetch(&mut r, 2, 50, T0)).unwrap();
        assert_eq!(p.isr, ids(&[1, 3, 2]));
    }

    #[test]
    fn one_proposal_in_flight() {
        let mut r = leader_of(&[1, 2, 3], &[1, 2], 0);
        r.on_local_end(Offset(10), T0);
        fetch(&mut r, 2, 5, T0);
        let shrink = proposal(&r.tick(T0 + LAG + 1)).unwrap();
        // Follower 3 catches up meanwhile, follower 2 stays stuck: no second proposal.
        assert!(proposal(&fetch(&mut r, 3, 10, T0 + LAG + 1)).is_none());
        assert!(r.tick(T0 + 2 * LAG).is_empty());
        assert_eq!(r.pending_isr(), Some(&shrink));
        assert_eq!(r.next_deadline(T0 + 2 * LAG), None);
        // Once answered, the next fetch proposes the expansion.
        r.isr_change_committed(shrink.id, ids(&[1]), 1, T0 + 2 * LAG);
        let expand = proposal(&fetch(&mut r, 3, 10, T0 + 2 * LAG)).unwrap();
        assert_eq!(expand.isr, ids(&[1, 3]));
        assert_eq!(expand.partition_epoch, 1);
        assert!(expand.id > shrink.id);
    }

    #[test]
    fn rejected_proposal_returns_to_the_committed_isr_and_is_proposed_again() {
        let mut r = leader_of(&[1, 2], &[1, 2], 0);
        r.on_local_end(Offset(10), T0);
        let first = proposal(&r.tick(T0 + LAG + 1)).unwrap();
        // An answer naming another proposal is ignored.
        assert!(r.isr_change_rejected(first.id + 1, T0 + LAG + 1).is_empty());
        assert!(r.pending_isr().is_some());
        r.isr_change_rejected(first.id, T0 + LAG + 1);
        assert_eq!(r.pending_isr(), None);
        assert_eq!(r.isr(), ids(&[1, 2]));
        let second = proposal(&r.tick(T0 + LAG + 2)).unwrap();
        assert_eq!(second.isr, first.isr);
        assert_ne!(second.id, first.id);
        // The stale answer to the first cannot commit the second.
        assert!(r
            .isr_change_committed(first.id, ids(&[1]), 1, T0 + LAG + 2)
            .is_empty());
        assert_eq!(r.isr(), ids(&[1, 2]));
    }

    #[test]
    fn commit_with_an_older_partition_epoch_is_ignored() {
        let mut r = leader_of(&[1, 2], &[1, 2], 3);
        let p = proposal(&r.tick(T0 + LAG + 1)).unwrap();
        assert!(r
            .isr_change_committed(p.id, ids(&[1]), 2, T0 + LAG + 1)
            .is_empty());
        assert_eq!(r.isr(), ids(&[1, 2]));
        assert_eq!(r.pending_isr(), Some(&p));
        // The same partition epoch means "already so" and commits.
        r.isr_change_committed(p.id, ids(&[1]), 3, T0 + LAG + 1);
        assert_eq!(r.isr(), ids(&[1]));
        assert_eq!(r.pending_isr(), None);
    }

    #[test]
    fn leader_change_in_the_same_epoch_ends_the_proposal_and_keeps_progress() {
        let mut r = leader_of(&[1, 2, 3], &[1, 2, 3], 0);
        r.on_local_end(Offset(10), T0);
        fetch(&mut r, 2, 10, T0);
        let p = proposal(&r.tick(T0 + LAG + 1)).unwrap();
        assert_eq!(p.isr, ids(&[1, 2]));
        // The controller's record of our change arrives before its AlterPartition answer.
        let mut change = leader_change(&[1, 2, 3], &[1, 2], 1);
        change.local_end = Offset(10);
        // 3, out of the ISR, no longer holds the HW back.
        assert_eq!(
            r.become_leader(change).unwrap(),
            vec![Output::HighWatermark(Offset(10))]
        );
        assert_eq!(r.pending_isr(), None);
        assert_eq!(r.isr(), ids(&[1, 2]));
        assert_eq!(r.follower(BrokerId(2)).unwrap().end, Offset(10));
        // ... and the late answer is ignored.
        assert!(r
            .isr_change_committed(p.id, ids(&[1, 2]), 1, T0 + LAG + 1)
            .is_empty());
    }

    #[test]
    fn new_leader_epoch_restarts_follower_clocks() {
        let mut r = leader_of(&[1, 2, 3], &[1, 2], 0);
        r.on_local_end(Offset(10), T0);
        fetch(&mut r, 2, 10, T0);
        let p = proposal(&fetch(&mut r, 3, 10, T0)).unwrap();
        assert_eq!(p.isr, ids(&[1, 2, 3]));
        // Re-elected at a new epoch, same ISR [1, 2].
        let later = T0 + 5 * LAG;
        let mut change = leader_change(&[1, 2, 3], &[1, 2], 1);
        change.epoch = EPOCH.next();
        change.local_end = Offset(10);
        change.epoch_start = Offset(10);
        change.now_ms = later;
        r.become_leader(change).unwrap();
        assert_eq!(r.leader_epoch(), EPOCH.next());
        assert_eq!(r.epoch_start(), Some(Offset(10)));
        // ISR follower 2: caught up "now"; follower 3: never, though its end is kept.
        assert_eq!(
            r.follower(BrokerId(2)).unwrap().last_caught_up_ms,
            Some(later)
        );
        assert_eq!(r.follower(BrokerId(3)).unwrap().last_caught_up_ms, None);
        assert_eq!(r.follower(BrokerId(3)).unwrap().end, Offset(10));
        assert_eq!(r.pending_isr(), None);
    }

    #[test]
    fn replica_set_changes_add_and_remove_followers() {
        let mut r = leader_of(&[1, 2], &[1, 2], 0);
        let mut change = leader_change(&[1, 3], &[1], 1);
        change.local_end = Offset(0);
        r.become_leader(change).unwrap();
        assert_eq!(r.follower(BrokerId(2)), None);
        assert_eq!(
            r.on_follower_fetch(BrokerId(2), -1, Offset(0), Offset(0), T0),
            Err(ReplicaError::UnknownReplica(BrokerId(2)))
        );
        assert_eq!(
            r.on_follower_fetch(BrokerId(1), -1, Offset(0), Offset(0), T0),
            Err(ReplicaError::UnknownReplica(BrokerId(1)))
        );
        assert!(r.follower(BrokerId(3)).is_some());
    }

    #[test]
    fn isr_member_without_progress_is_dropped_at_once() {
        // The controller lists 4 in the ISR but not in the replicas: nothing can vouch for it.
        let mut r = leader_of(&[1, 2], &[1, 2, 4], 0);
        r.on_local_end(Offset(1), T0);
        assert_eq!(r.next_deadline(T0), Some(T0));
        let p = proposal(&r.tick(T0)).unwrap();
        assert_eq!(p.isr, ids(&[1, 2]));
    }
}
