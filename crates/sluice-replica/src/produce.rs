//! `acks=all` produces (Kafka's min-ISR check in `appendRecordsToLeader` and `DelayedProduce` /
//! `checkEnoughReplicasReachOffset`).
//!
//! Before appending, the shell asks [`ReplicaState::check_min_insync`]; after appending it parks
//! the request until the high watermark reaches the end of its records. It is answered once, by
//! the first of: the HW reaching it (success, or `NotEnoughReplicasAfterAppend` if the maximal ISR
//! is below the effective `min.insync.replicas` at that moment), its deadline passing at a
//! [`ReplicaState::tick`], or this replica ceasing to lead.

use sluice_types::Offset;

use crate::messages::Output;
use crate::replica::{ReplicaState, RoleState};
use crate::{ProduceError, ReplicaError};

/// An `acks=all` produce waiting for the high watermark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ParkedProduce {
    /// The shell's name for the request; echoed in [`Output::ProduceDone`].
    pub(crate) id: u64,
    /// The end of the produced records: committed once the HW is at least this.
    pub(crate) required: Offset,
    pub(crate) deadline_ms: i64,
}

impl ReplicaState {
    /// May an `acks=all` produce be appended? Refused while leading an ISR smaller than the
    /// effective `min.insync.replicas` (nothing is written then), or when not leading.
    pub fn check_min_insync(&self) -> Result<(), ReplicaError> {
        if !self.is_leader() {
            return Err(ReplicaError::NotLeader);
        }
        let min_insync = self.effective_min_insync();
        if self.isr.len() < min_insync {
            return Err(ReplicaError::NotEnoughReplicas {
                isr: self.isr.len(),
                min_insync,
            });
        }
        Ok(())
    }

    /// Parks produce `id` (caller-chosen, unique among its parked requests) until the high
    /// watermark reaches `required` (the end offset of its records), or until `deadline_ms`.
    /// Answered in the returned outputs if that is already decided (HW there, or not leading).
    pub fn park(&mut self, id: u64, required: Offset, deadline_ms: i64) -> Vec<Output> {
        if self.hw >= required || !self.is_leader() {
            return vec![Output::ProduceDone {
                id,
                result: self.outcome_at_hw(),
            }];
        }
        if let RoleState::Leader(leader) = &mut self.role {
            leader.parked.push(ParkedProduce {
                id,
                required,
                deadline_ms,
            });
        }
        Vec::new()
    }

    /// The answer for a produce the HW has reached.
    fn outcome_at_hw(&self) -> Result<(), ProduceError> {
        if !self.is_leader() {
            Err(ProduceError::NotLeader)
        } else if self.maximal_isr().len() < self.effective_min_insync() {
            Err(ProduceError::NotEnoughReplicasAfterAppend)
        } else {
            Ok(())
        }
    }

    /// Answers the parked produces the HW has reached (called when it moves).
    pub(crate) fn complete_parked(&mut self, out: &mut Vec<Output>) {
        let result = self.outcome_at_hw();
        let hw = self.hw;
        self.answer_parked(|p| p.required <= hw, result, out);
    }

    pub(crate) fn expire_parked(&mut self, now_ms: i64, out: &mut Vec<Output>) {
        let result = Err(ProduceError::RequestTimedOut);
        self.answer_parked(|p| p.deadline_ms <= now_ms, result, out);
    }

    fn answer_parked(
        &mut self,
        done: impl Fn(&ParkedProduce) -> bool,
        result: Result<(), ProduceError>,
        out: &mut Vec<Output>,
    ) {
        let RoleState::Leader(leader) = &mut self.role else {
            return;
        };
        leader.parked.retain(|p| {
            if done(p) {
                out.push(Output::ProduceDone { id: p.id, result });
            }
            !done(p)
        });
    }
}

#[cfg(test)]
mod tests {
    use crate::testkit::*;
    use crate::*;

    #[test]
    fn parked_produce_succeeds_when_the_whole_isr_has_it() {
        let mut r = leader_of(&[1, 2, 3], &[1, 2, 3], 0);
        r.set_min_insync(2, T0);
        assert_eq!(r.check_min_insync(), Ok(()));
        r.on_local_end(Offset(10), T0);
        assert!(r.park(1, Offset(10), T0 + 30_000).is_empty());
        assert!(fetch(&mut r, 2, 10, T0).is_empty());
        assert_eq!(
            fetch(&mut r, 3, 8, T0),
            vec![Output::HighWatermark(Offset(8))]
        );
        assert_eq!(
            fetch(&mut r, 3, 10, T0),
            vec![Output::HighWatermark(Offset(10)), done(1, Ok(()))]
        );
        assert_eq!(r.parked_count(), 0);
    }

    #[test]
    fn produce_is_refused_before_append_when_the_isr_is_too_small() {
        let mut r = leader_of(&[1, 2, 3], &[1, 2], 0);
        r.set_min_insync(3, T0);
        assert_eq!(
            r.check_min_insync(),
            Err(ReplicaError::NotEnoughReplicas {
                isr: 2,
                min_insync: 3
            })
        );
        r.set_min_insync(2, T0);
        assert_eq!(r.check_min_insync(), Ok(()));
    }

    #[test]
    fn isr_shrunk_below_min_insync_after_append_is_reported() {
        let mut r = leader_of(&[1, 2], &[1, 2], 0);
        r.set_min_insync(2, T0);
        r.on_local_end(Offset(10), T0);
        fetch(&mut r, 2, 10, T0);
        assert_eq!(r.high_watermark(), Offset(10));
        // Follower 2 replicated the records and then stalled; the ISR shrank before the
        // produce handler got to park the request.
        r.on_local_end(Offset(11), T0 + 1);
        let p = proposal(&r.tick(T0 + LAG + 1)).unwrap();
        r.isr_change_committed(p.id, ids(&[1]), 1, T0 + LAG + 1);
        assert_eq!(
            r.park(5, Offset(10), T0 + LAG + 30_000),
            vec![done(5, Err(ProduceError::NotEnoughReplicasAfterAppend))]
        );
        // Raising min.insync above the ISR has the same effect.
        let mut r = leader_of(&[1], &[1], 0);
        r.on_local_end(Offset(3), T0);
        let mut change = leader_change(&[1, 2], &[1], 1);
        change.local_end = Offset(3);
        r.become_leader(change).unwrap();
        r.set_min_insync(2, T0);
        assert_eq!(
            r.park(6, Offset(3), T0 + 1),
            vec![done(6, Err(ProduceError::NotEnoughReplicasAfterAppend))]
        );
    }

    #[test]
    fn parked_produce_times_out_at_its_deadline() {
        let mut r = leader_of(&[1, 2], &[1, 2], 0);
        r.on_local_end(Offset(10), T0);
        fetch(&mut r, 2, 4, T0);
        assert!(r.park(1, Offset(10), T0 + 500).is_empty());
        assert!(r.park(2, Offset(10), T0 + 900).is_empty());
        assert_eq!(r.next_deadline(T0), Some(T0 + 500));
        assert!(r.tick(T0 + 499).is_empty());
        assert_eq!(
            r.tick(T0 + 500),
            vec![done(1, Err(ProduceError::RequestTimedOut))]
        );
        assert_eq!(r.next_deadline(T0 + 500), Some(T0 + 900));
        // Reached before its deadline: success, not a timeout.
        assert_eq!(
            fetch(&mut r, 2, 10, T0 + 899),
            vec![Output::HighWatermark(Offset(10)), done(2, Ok(()))]
        );
        assert!(r.tick(T0 + 900).is_empty());
    }

    #[test]
    fn held_hw_times_produces_out() {
        let mut r = leader_of(&[1, 2, 3], &[1], 0);
        r.set_min_insync(2, T0);
        r.on_local_end(Offset(10), T0);
        assert!(r.park(1, Offset(10), T0 + 100).is_empty());
        assert_eq!(
            r.tick(T0 + 100),
            vec![done(1, Err(ProduceError::RequestTimedOut))]
        );
    }

    #[test]
    fn losing_leadership_answers_not_leader() {
        let mut r = leader_of(&[1, 2], &[1, 2], 0);
        r.on_local_end(Offset(10), T0);
        assert!(r.park(1, Offset(10), T0 + 500).is_empty());
        assert!(r.park(2, Offset(9), T0 + 500).is_empty());
        // Re-elected at a new epoch: still leading, still waiting.
        let mut change = leader_change(&[1, 2], &[1, 2], 1);
        change.epoch = EPOCH.next();
        change.local_end = Offset(10);
        r.become_leader(change).unwrap();
        assert_eq!(r.parked_count(), 2);
        let out = r
            .become_follower(FollowerChange {
                leader: Some(BrokerId(2)),
                epoch: EPOCH.next().next(),
                partition_epoch: 2,
                replicas: ids(&[1, 2]),
            })
            .unwrap();
        assert_eq!(
            out,
            vec![
                done(1, Err(ProduceError::NotLeader)),
                done(2, Err(ProduceError::NotLeader))
            ]
        );
        assert_eq!(
            r.park(3, Offset(1), T0),
            vec![done(3, Err(ProduceError::NotLeader))]
        );
    }
}
