//! The leader's high watermark (Kafka's `maybeIncrementLeaderHW`, with KIP-966 part 1).
//!
//! HW = the least end among the leader's counted end and the followers that must hold a record
//! before it is committed: the *maximal* ISR (the committed ISR plus a follower being added), and
//! any follower outside it that is caught up and so about to join (otherwise a follower chasing a
//! leader whose HW runs ahead might never reach the HW it needs to join). It never moves back,
//! and it does not move at all while the committed ISR is smaller than the effective
//! `min.insync.replicas`: a record is only committed once that many replicas hold it.

use sluice_types::{BrokerId, Offset};

use crate::messages::Output;
use crate::replica::ReplicaState;

impl ReplicaState {
    /// `min.insync.replicas`, capped by the replica count (Kafka's `effectiveMinIsr`).
    pub fn effective_min_insync(&self) -> usize {
        self.config
            .min_insync_replicas
            .max(1)
            .min(self.replicas.len().max(1))
    }

    /// Leading with a committed ISR smaller than the effective `min.insync.replicas`: the high
    /// watermark is held and `acks=all` produces are refused.
    pub fn is_under_min_isr(&self) -> bool {
        self.is_leader() && self.isr.len() < self.effective_min_insync()
    }

    /// The committed ISR plus the follower an in-flight expansion adds: who must hold a record
    /// for it to be committed.
    pub fn maximal_isr(&self) -> Vec<BrokerId> {
        let mut isr = self.isr.clone();
        isr.extend(self.adding());
        isr
    }

    pub(crate) fn adding(&self) -> Option<BrokerId> {
        self.leader()?.pending.as_ref()?.adding
    }

    /// Moves the high watermark forward if the rule allows, answering the parked produces it
    /// reaches.
    pub(crate) fn maybe_advance_hw(&mut self, now_ms: i64, out: &mut Vec<Output>) {
        let Some(leader) = self.leader() else { return };
        if self.is_under_min_isr() {
            return;
        }
        let lag = self.config.replica_lag_time_max_ms;
        let adding = self.adding();
        let mut hw: Offset = self.local_end;
        for (id, f) in &leader.followers {
            let eligible = !self.ineligible.contains(id);
            if f.end < hw
                && (self.isr.contains(id)
                    || (eligible
                        && (adding == Some(*id) || f.is_caught_up(self.local_end, now_ms, lag))))
            {
                hw = f.end;
            }
        }
        if hw > self.hw {
            self.hw = hw;
            out.push(Output::HighWatermark(hw));
            self.complete_parked(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::testkit::*;
    use crate::*;

    #[test]
    fn one_replica_hw_follows_the_local_end_exactly() {
        let mut r = leader_of(&[1], &[1], 0);
        assert_eq!(r.high_watermark(), Offset(0));
        assert_eq!(r.check_min_insync(), Ok(()));
        for end in [1, 2, 5, 6, 100] {
            assert_eq!(
                r.on_local_end(Offset(end), T0),
                vec![Output::HighWatermark(Offset(end))]
            );
            assert_eq!(r.high_watermark(), Offset(end));
        }
        // Reporting the same end again is not a move.
        assert!(r.on_local_end(Offset(100), T0).is_empty());
        assert_eq!(r.next_deadline(T0), None);
    }

    #[test]
    fn one_replica_parked_produce_completes_when_the_end_passes_it() {
        let mut r = leader_of(&[1], &[1], 0);
        r.on_local_end(Offset(4), T0);
        assert!(r.park(1, Offset(8), T0 + 30_000).is_empty());
        assert!(r.park(2, Offset(6), T0 + 30_000).is_empty());
        assert_eq!(
            r.on_local_end(Offset(7), T0 + 1),
            vec![Output::HighWatermark(Offset(7)), done(2, Ok(()))]
        );
        assert_eq!(
            r.on_local_end(Offset(9), T0 + 2),
            vec![Output::HighWatermark(Offset(9)), done(1, Ok(()))]
        );
        // Already below the HW: answered at once (relaxed mode, where the HW moved on append).
        assert_eq!(r.park(3, Offset(9), T0 + 3), vec![done(3, Ok(()))]);
        assert_eq!(r.parked_count(), 0);
    }

    #[test]
    fn one_replica_accepts_whatever_min_insync_asks() {
        // Today's single-node broker ignores min.insync.replicas; the cap by replica count keeps it so.
        let mut r = leader_of(&[1], &[1], 0);
        r.set_min_insync(3, T0);
        assert_eq!(r.effective_min_insync(), 1);
        assert_eq!(r.check_min_insync(), Ok(()));
        assert_eq!(
            r.on_local_end(Offset(2), T0),
            vec![Output::HighWatermark(Offset(2))]
        );
    }

    #[test]
    fn a_follower_the_controller_takes_out_of_the_isr_stops_holding_the_hw() {
        let mut r = leader_of(&[1, 2, 3], &[1, 2, 3], 0);
        r.on_local_end(Offset(10), T0);
        fetch(&mut r, 2, 10, T0);
        assert_eq!(
            fetch(&mut r, 3, 10, T0),
            vec![Output::HighWatermark(Offset(10))]
        );
        // Follower 2 dies; the leader appends and 3 copies it, but 2's recent catch-up would
        // hold the HW for replica.lag.time.max.ms...
        r.on_local_end(Offset(12), T0 + 1);
        assert!(fetch(&mut r, 3, 12, T0 + 2).is_empty());
        // ... until the controller fences 2 and commits the ISR without it: the HW moves at once.
        let out = r
            .become_leader(LeaderChange {
                now_ms: T0 + 3,
                local_end: Offset(12),
                hw: Offset(10),
                ..leader_change(&[1, 2, 3], &[1, 3], 1)
            })
            .unwrap();
        assert_eq!(out, vec![Output::HighWatermark(Offset(12))]);
        // Back and at the HW, 2 is proposed for the ISR again and holds the HW meanwhile.
        r.on_local_end(Offset(14), T0 + 4);
        let out = fetch(&mut r, 2, 12, T0 + 5);
        assert!(
            proposal(&out).is_some_and(|p| p.isr.contains(&BrokerId(2))),
            "{out:?}"
        );
        let out = fetch(&mut r, 3, 14, T0 + 5);
        assert!(
            !out.iter().any(|o| matches!(o, Output::HighWatermark(_))),
            "{out:?}"
        );
    }

    #[test]
    fn a_fenced_follower_that_still_fetches_neither_holds_the_hw_nor_rejoins() {
        // 3 was fenced as it shut down (out of the ISR), and fetches once more before it exits.
        let mut r = leader_of(&[1, 2, 3], &[1, 2], 0);
        assert!(r.set_ineligible(ids(&[3]), T0).is_empty());
        r.on_local_end(Offset(10), T0);
        let out = fetch(&mut r, 3, 10, T0 + 1);
        assert!(
            proposal(&out).is_none(),
            "a fenced broker is not proposed: {out:?}"
        );
        // Its fresh catch-up does not hold the HW: 2 alone moves it.
        r.on_local_end(Offset(12), T0 + 2);
        assert_eq!(
            fetch(&mut r, 2, 12, T0 + 3),
            vec![Output::HighWatermark(Offset(12))]
        );
        // Unfenced again: it is proposed once it fetches up to the HW.
        assert!(r.set_ineligible(Vec::new(), T0 + 4).is_empty());
        let out = fetch(&mut r, 3, 12, T0 + 5);
        assert!(
            proposal(&out).is_some_and(|p| p.isr.contains(&BrokerId(3))),
            "{out:?}"
        );
    }

    #[test]
    fn hw_is_the_least_end_in_the_isr_and_never_moves_back() {
        let mut r = leader_of(&[1, 2, 3], &[1, 2, 3], 0);
        assert!(
            r.on_local_end(Offset(10), T0).is_empty(),
            "followers unknown yet"
        );
        assert!(fetch(&mut r, 2, 7, T0).is_empty());
        assert_eq!(
            fetch(&mut r, 3, 4, T0),
            vec![Output::HighWatermark(Offset(4))]
        );
        assert_eq!(
            fetch(&mut r, 3, 9, T0),
            vec![Output::HighWatermark(Offset(7))]
        );
        assert_eq!(
            fetch(&mut r, 2, 10, T0),
            vec![Output::HighWatermark(Offset(9))]
        );
        // A follower reporting less (it truncated) does not take the HW back.
        assert!(fetch(&mut r, 3, 5, T0).is_empty());
        assert_eq!(r.high_watermark(), Offset(9));
        // Neither does a sitting leader re-applying its role with a lower hw.
        let mut change = leader_change(&[1, 2, 3], &[1, 2, 3], 1);
        change.hw = Offset(0);
        change.local_end = Offset(10);
        r.become_leader(change).unwrap();
        assert_eq!(r.high_watermark(), Offset(9));
        assert_eq!(
            fetch(&mut r, 3, 10, T0),
            vec![Output::HighWatermark(Offset(10))]
        );
    }

    #[test]
    fn hw_is_held_while_the_isr_is_under_min_insync_and_moves_when_it_recovers() {
        let mut r = leader_of(&[1, 2, 3], &[1, 2], 0);
        r.set_min_insync(2, T0);
        r.on_local_end(Offset(10), T0);
        assert_eq!(
            fetch(&mut r, 2, 10, T0),
            vec![Output::HighWatermark(Offset(10))]
        );

        // Follower 2 stops fetching and is dropped: ISR [1] < 2.
        r.on_local_end(Offset(20), T0 + 1);
        let id = proposal(&r.tick(T0 + LAG + 1)).unwrap().id;
        assert!(r
            .isr_change_committed(id, ids(&[1]), 1, T0 + LAG + 1)
            .is_empty());
        assert!(r.is_under_min_isr());
        let now = T0 + LAG + 2;
        assert!(r.on_local_end(Offset(30), now).is_empty());
        assert_eq!(r.high_watermark(), Offset(10));
        // Follower 3 fetching everything is not enough while its expansion is pending.
        let p = proposal(&fetch(&mut r, 3, 30, now)).unwrap();
        assert_eq!(p.isr, ids(&[1, 3]));
        assert!(r.tick(now).is_empty());
        assert_eq!(r.high_watermark(), Offset(10));
        // Committed: two in sync again, and the HW catches up.
        assert_eq!(
            r.isr_change_committed(p.id, ids(&[1, 3]), 2, now),
            vec![Output::HighWatermark(Offset(30))]
        );
        assert_eq!(r.check_min_insync(), Ok(()));
    }

    #[test]
    fn lowering_min_insync_releases_a_held_hw() {
        let mut r = leader_of(&[1, 2, 3], &[1], 0);
        r.set_min_insync(2, T0);
        assert!(r.on_local_end(Offset(5), T0).is_empty());
        assert_eq!(
            r.set_min_insync(1, T0),
            vec![Output::HighWatermark(Offset(5))]
        );
    }

    #[test]
    fn pending_expansion_counts_for_the_hw_even_after_the_lag_time() {
        let mut r = leader_of(&[1, 2], &[1], 0);
        r.on_local_end(Offset(10), T0);
        assert_eq!(r.high_watermark(), Offset(10));
        let p = proposal(&fetch(&mut r, 2, 10, T0)).unwrap();
        assert_eq!(r.maximal_isr(), ids(&[1, 2]));
        assert_eq!(r.isr(), ids(&[1]));
        // Follower 2 stops fetching; long past its catch-up window it still holds the HW,
        // because the controller may be adding it.
        r.on_local_end(Offset(20), T0 + 1);
        assert!(r.tick(T0 + 10 * LAG).is_empty());
        assert_eq!(r.high_watermark(), Offset(10));
        // Rejected: back to ISR [1], and follower 2 no longer counts.
        assert_eq!(
            r.isr_change_rejected(p.id, T0 + 10 * LAG),
            vec![Output::HighWatermark(Offset(20))]
        );
    }

    #[test]
    fn pending_shrink_does_not_count_for_the_hw() {
        let mut r = leader_of(&[1, 2], &[1, 2], 0);
        r.on_local_end(Offset(10), T0);
        assert_eq!(
            fetch(&mut r, 2, 5, T0),
            vec![Output::HighWatermark(Offset(5))]
        );
        let p = proposal(&r.tick(T0 + LAG + 1)).unwrap();
        assert_eq!(p.isr, ids(&[1]));
        // Until the controller agrees, follower 2 still holds the HW.
        assert_eq!(r.maximal_isr(), ids(&[1, 2]));
        assert!(r.on_local_end(Offset(12), T0 + LAG + 2).is_empty());
        assert_eq!(r.high_watermark(), Offset(5));
        assert_eq!(
            r.isr_change_committed(p.id, ids(&[1]), 1, T0 + LAG + 2),
            vec![Output::HighWatermark(Offset(12))]
        );
    }

    #[test]
    fn caught_up_follower_outside_the_isr_holds_the_hw_until_it_lags() {
        let mut r = leader_of(&[1, 2], &[1], 0);
        r.on_local_end(Offset(10), T0);
        let p = proposal(&fetch(&mut r, 2, 10, T0)).unwrap();
        r.isr_change_rejected(p.id, T0);
        assert_eq!(r.maximal_isr(), ids(&[1]));
        // Not in the ISR, but caught up at T0: the HW waits for it (Kafka's
        // shouldWaitForReplicaToJoinIsr).
        assert!(r.on_local_end(Offset(15), T0 + 1).is_empty());
        assert_eq!(r.high_watermark(), Offset(10));
        assert_eq!(r.next_deadline(T0 + 1), Some(T0 + LAG + 1));
        assert!(r.tick(T0 + LAG).is_empty());
        assert_eq!(
            r.tick(T0 + LAG + 1),
            vec![Output::HighWatermark(Offset(15))]
        );
        assert_eq!(r.next_deadline(T0 + LAG + 1), None);
    }
}
