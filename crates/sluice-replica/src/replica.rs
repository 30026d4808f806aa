//! [`ReplicaState`]: one partition replica, its role transitions, the reported local end, and the
//! timer entry points. The leader's rules live beside it: `hw.rs` (high watermark), `isr.rs`
//! (follower fetches, ISR shrink and expand), `produce.rs` (parked `acks=all` produces).

use std::collections::BTreeMap;

use sluice_types::{BrokerId, LeaderEpoch, Offset};

use crate::follower::FollowerProgress;
use crate::messages::{FollowerChange, IsrProposal, LeaderChange, Output, Role};
use crate::produce::ParkedProduce;
use crate::{ProduceError, ReplicaConfig, ReplicaError};

/// One partition replica on this broker: a pure state machine. See the crate docs for how to
/// drive it.
#[derive(Debug)]
pub struct ReplicaState {
    /// This broker. It is never a tracked follower, and never proposed out of an ISR it leads.
    pub(crate) local: BrokerId,
    pub(crate) config: ReplicaConfig,
    pub(crate) role: RoleState,
    /// Latest leader epoch applied (leading or following).
    pub(crate) leader_epoch: LeaderEpoch,
    /// Latest partition epoch applied; older leader/follower changes are refused. -1 before any.
    pub(crate) partition_epoch: i32,
    pub(crate) replicas: Vec<BrokerId>,
    /// The committed ISR: the controller's. Empty unless leading (as Kafka, a follower does not
    /// track it).
    pub(crate) isr: Vec<BrokerId>,
    /// The local end the high watermark counts, as the shell reports it.
    pub(crate) local_end: Offset,
    pub(crate) hw: Offset,
    /// Source of [`IsrProposal::id`]; never reused, so an answer to a dropped proposal never
    /// matches a newer one.
    pub(crate) last_proposal_id: u64,
    /// Brokers the metadata says may not join an ISR (fenced, or shutting down): outside the
    /// ISR they neither hold the HW nor get proposed into it, however recently they fetched
    /// (Kafka's `isReplicaIsrEligible`).
    pub(crate) ineligible: Vec<BrokerId>,
}

/// The role, with what only that role holds, so that leader state cannot outlive leadership.
#[derive(Debug)]
pub(crate) enum RoleState {
    Offline,
    Follower { leader: Option<BrokerId> },
    Leader(LeaderState),
}

/// What a leader tracks on top of the common state.
#[derive(Debug)]
pub(crate) struct LeaderState {
    /// Local log end when this leader epoch began: the least a follower must hold to join the ISR,
    /// so that a follower missing committed records of an earlier epoch never becomes eligible
    /// to lead.
    pub(crate) epoch_start: Offset,
    /// Every other broker in `replicas`, in or out of the ISR.
    pub(crate) followers: BTreeMap<BrokerId, FollowerProgress>,
    /// The ISR change sent to the controller and not yet answered.
    pub(crate) pending: Option<PendingIsr>,
    /// `acks=all` produces waiting for the high watermark, in arrival order.
    pub(crate) parked: Vec<ParkedProduce>,
}

/// An ISR change in flight (Kafka's `PendingExpandIsr` / `PendingShrinkIsr`).
#[derive(Debug)]
pub(crate) struct PendingIsr {
    pub(crate) proposal: IsrProposal,
    /// For an expansion, the follower being added. It already counts for the high watermark and
    /// for `acks=all` (the "maximal ISR"): assuming it is in makes both stricter, so it is safe
    /// whichever way the controller decides. A shrink is not assumed, as that would loosen them.
    pub(crate) adding: Option<BrokerId>,
}

impl ReplicaState {
    /// A replica that has not been told its role yet ([`Role::Offline`]).
    pub fn new(local: BrokerId, config: ReplicaConfig) -> Self {
        ReplicaState {
            local,
            config,
            role: RoleState::Offline,
            leader_epoch: LeaderEpoch::NONE,
            partition_epoch: -1,
            replicas: Vec::new(),
            isr: Vec::new(),
            local_end: Offset(0),
            hw: Offset(0),
            last_proposal_id: 0,
            ineligible: Vec::new(),
        }
    }

    /// The brokers that may not join an ISR now (the shell passes the fenced ones whenever the
    /// metadata changes). A leader may then advance its HW past one of them.
    pub fn set_ineligible(&mut self, brokers: Vec<BrokerId>, now_ms: i64) -> Vec<Output> {
        let mut out = Vec::new();
        if self.ineligible != brokers {
            self.ineligible = brokers;
            self.maybe_advance_hw(now_ms, &mut out);
        }
        out
    }

    pub fn local(&self) -> BrokerId {
        self.local
    }

    pub fn config(&self) -> &ReplicaConfig {
        &self.config
    }

    pub fn role(&self) -> Role {
        match &self.role {
            RoleState::Offline => Role::Offline,
            RoleState::Follower { leader } => Role::Follower { leader: *leader },
            RoleState::Leader(_) => Role::Leader,
        }
    }

    pub fn is_leader(&self) -> bool {
        matches!(self.role, RoleState::Leader(_))
    }

    pub fn leader_epoch(&self) -> LeaderEpoch {
        self.leader_epoch
    }

    pub fn partition_epoch(&self) -> i32 {
        self.partition_epoch
    }

    pub fn replicas(&self) -> &[BrokerId] {
        &self.replicas
    }

    /// The committed ISR (empty unless leading).
    pub fn isr(&self) -> &[BrokerId] {
        &self.isr
    }

    pub fn high_watermark(&self) -> Offset {
        self.hw
    }

    pub fn local_end(&self) -> Offset {
        self.local_end
    }

    /// The start offset of the current leader epoch, while leading.
    pub fn epoch_start(&self) -> Option<Offset> {
        self.leader().map(|l| l.epoch_start)
    }

    /// What this leader knows of `follower`.
    pub fn follower(&self, follower: BrokerId) -> Option<&FollowerProgress> {
        self.leader()?.followers.get(&follower)
    }

    /// The ISR change awaiting the controller's answer, if any (e.g. to send it again).
    pub fn pending_isr(&self) -> Option<&IsrProposal> {
        self.leader()?.pending.as_ref().map(|p| &p.proposal)
    }

    /// Produces parked and not yet answered.
    pub fn parked_count(&self) -> usize {
        self.leader().map_or(0, |l| l.parked.len())
    }

    pub(crate) fn leader(&self) -> Option<&LeaderState> {
        match &self.role {
            RoleState::Leader(l) => Some(l),
            _ => None,
        }
    }

    /// Becomes (or stays) the leader. A new leader epoch restarts every follower's catch-up
    /// clock; the same epoch only refreshes replicas and ISR (the controller committed a change,
    /// ours or its own), which also ends any ISR change in flight.
    pub fn become_leader(&mut self, change: LeaderChange) -> Result<Vec<Output>, ReplicaError> {
        self.check_partition_epoch(change.partition_epoch)?;
        let LeaderChange {
            epoch,
            partition_epoch,
            replicas,
            isr,
            local_end,
            epoch_start,
            hw,
            now_ms,
        } = change;
        let hw_before = self.hw;
        let in_isr = |b: &BrokerId| isr.contains(b);
        let mut leader = match std::mem::replace(&mut self.role, RoleState::Offline) {
            RoleState::Leader(mut l) => {
                // Followers the controller took out of the ISR (fenced, or shutting down) stop
                // counting as caught up, as Kafka's `isReplicaIsrEligible` has it: a broker that
                // cannot rejoin must not hold the HW back for `replica.lag.time.max.ms`. A live
                // one counts again once it fetches up to this leader's end.
                for (id, f) in &mut l.followers {
                    if self.isr.contains(id) && !in_isr(id) {
                        f.forget_catch_up();
                    }
                }
                l
            }
            _ => {
                self.hw = hw;
                LeaderState {
                    epoch_start,
                    followers: BTreeMap::new(),
                    pending: None,
                    parked: Vec::new(),
                }
            }
        };
        if epoch > self.leader_epoch {
            leader.epoch_start = epoch_start;
            for (id, f) in &mut leader.followers {
                f.reset_for_new_epoch(in_isr(id), epoch_start, now_ms);
            }
            self.leader_epoch = epoch;
        }
        leader
            .followers
            .retain(|id, _| replicas.contains(id) && *id != self.local);
        for id in replicas.iter().filter(|id| **id != self.local) {
            leader
                .followers
                .entry(*id)
                .or_insert_with(|| FollowerProgress::new(in_isr(id), now_ms));
        }
        leader.pending = None;
        self.partition_epoch = partition_epoch;
        self.replicas = replicas;
        self.isr = isr;
        self.local_end = local_end;
        self.role = RoleState::Leader(leader);
        let mut out = Vec::new();
        self.maybe_advance_hw(now_ms, &mut out);
        if out.is_empty() && self.hw != hw_before {
            out.push(Output::HighWatermark(self.hw));
        }
        Ok(out)
    }

    /// Becomes (or stays) a follower: all leader state goes, and parked produces are answered
    /// [`ProduceError::NotLeader`]. The high watermark is kept.
    pub fn become_follower(&mut self, change: FollowerChange) -> Result<Vec<Output>, ReplicaError> {
        self.check_partition_epoch(change.partition_epoch)?;
        let out = self.drop_leadership();
        self.role = RoleState::Follower {
            leader: change.leader,
        };
        self.leader_epoch = change.epoch;
        self.partition_epoch = change.partition_epoch;
        self.replicas = change.replicas;
        Ok(out)
    }

    /// The replica closes (deleted, its log directory failed, the broker stops): parked
    /// produces are answered [`ProduceError::NotLeader`] and the role becomes
    /// [`Role::Offline`]. Epochs are kept, so stale changes are still refused.
    pub fn stop(&mut self) -> Vec<Output> {
        let out = self.drop_leadership();
        self.role = RoleState::Offline;
        out
    }

    fn drop_leadership(&mut self) -> Vec<Output> {
        let mut out = Vec::new();
        if let RoleState::Leader(leader) = std::mem::replace(&mut self.role, RoleState::Offline) {
            out.extend(leader.parked.into_iter().map(|p| Output::ProduceDone {
                id: p.id,
                result: Err(ProduceError::NotLeader),
            }));
        }
        self.isr.clear();
        out
    }

    fn check_partition_epoch(&self, received: i32) -> Result<(), ReplicaError> {
        if received < self.partition_epoch {
            return Err(ReplicaError::StalePartitionEpoch {
                current: self.partition_epoch,
                received,
            });
        }
        Ok(())
    }

    /// The local end the high watermark counts has moved. The shell decides what it is: the
    /// durable (fsynced) offset under `--durability fsync`, the log end under `relaxed`. A
    /// follower also reports it (after appends and truncation); its high watermark never
    /// passes it.
    pub fn on_local_end(&mut self, end: Offset, now_ms: i64) -> Vec<Output> {
        self.local_end = end;
        let mut out = Vec::new();
        match self.role {
            RoleState::Leader(_) => self.maybe_advance_hw(now_ms, &mut out),
            RoleState::Follower { .. } if self.hw > end => self.set_hw(end, &mut out),
            _ => {}
        }
        out
    }

    /// A follower learnt the leader's high watermark (from a fetch response): its own is that,
    /// capped by its local end. Unlike a leader's, it may move back (a new leader may start
    /// lower). Ignored unless following.
    pub fn on_leader_hw(&mut self, leader_hw: Offset) -> Vec<Output> {
        let mut out = Vec::new();
        if matches!(self.role, RoleState::Follower { .. }) {
            self.set_hw(leader_hw.min(self.local_end), &mut out);
        }
        out
    }

    fn set_hw(&mut self, hw: Offset, out: &mut Vec<Output>) {
        if hw != self.hw {
            self.hw = hw;
            out.push(Output::HighWatermark(hw));
        }
    }

    /// `min.insync.replicas` changed. Lowering it may release a held high watermark.
    pub fn set_min_insync(&mut self, n: usize, now_ms: i64) -> Vec<Output> {
        self.config.min_insync_replicas = n;
        let mut out = Vec::new();
        self.maybe_advance_hw(now_ms, &mut out);
        out
    }

    /// Runs what time makes due: answers parked produces whose deadline passed, proposes
    /// dropping ISR followers that lagged too long, and lets the high watermark past a follower
    /// outside the ISR that stopped being caught up. Cheap to call early.
    pub fn tick(&mut self, now_ms: i64) -> Vec<Output> {
        let mut out = Vec::new();
        if !self.is_leader() {
            return out;
        }
        self.maybe_advance_hw(now_ms, &mut out);
        self.expire_parked(now_ms, &mut out);
        self.maybe_shrink_isr(now_ms, &mut out);
        out
    }

    /// The earliest instant at which [`ReplicaState::tick`] has work (possibly already past),
    /// `None` if it has none. Ask again after every call.
    pub fn next_deadline(&self, now_ms: i64) -> Option<i64> {
        let leader = self.leader()?;
        let lag = self.config.replica_lag_time_max_ms;
        let parked = leader.parked.iter().map(|p| p.deadline_ms).min();
        let followers = leader.followers.iter().filter_map(|(id, f)| {
            if f.end >= self.local_end {
                return None;
            }
            if self.isr.contains(id) {
                // A shrink proposal, unless one is already in flight.
                if leader.pending.is_some() {
                    return None;
                }
                return Some(f.lag_deadline(lag).unwrap_or(now_ms));
            }
            // Outside the ISR: it holds the high watermark until it falls out of catch-up.
            f.lag_deadline(lag).filter(|t| *t > now_ms)
        });
        // An ISR member the leader has no progress for is due at once.
        let unknown = (leader.pending.is_none()
            && self
                .isr
                .iter()
                .any(|id| *id != self.local && !leader.followers.contains_key(id)))
        .then_some(now_ms);
        parked.into_iter().chain(followers).chain(unknown).min()
    }
}

#[cfg(test)]
mod tests {
    use crate::testkit::*;
    use crate::*;

    #[test]
    fn starts_offline_with_nothing_to_do() {
        let r = ReplicaState::new(BrokerId(1), ReplicaConfig::default());
        assert_eq!(r.role(), Role::Offline);
        assert_eq!(r.leader_epoch(), LeaderEpoch::NONE);
        assert_eq!(r.next_deadline(0), None);
        assert!(r.isr().is_empty());
    }

    #[test]
    fn become_follower_clears_leader_state() {
        let mut r = leader_of(&[1, 2, 3], &[1, 2, 3], 2);
        fetch(&mut r, 2, 10, T0);
        r.on_local_end(Offset(10), T0);
        assert!(r.park(7, Offset(10), T0 + 10 * LAG).is_empty());
        r.tick(T0 + LAG + 1); // proposes dropping 3
        assert!(r.pending_isr().is_some());

        let out = r
            .become_follower(FollowerChange {
                leader: Some(BrokerId(2)),
                epoch: LeaderEpoch(6),
                partition_epoch: 2,
                replicas: ids(&[1, 2, 3]),
            })
            .unwrap();
        assert_eq!(out, vec![done(7, Err(ProduceError::NotLeader))]);
        assert_eq!(
            r.role(),
            Role::Follower {
                leader: Some(BrokerId(2))
            }
        );
        assert_eq!(r.leader_epoch(), LeaderEpoch(6));
        assert!(r.isr().is_empty());
        assert_eq!(r.pending_isr(), None);
        assert_eq!(r.follower(BrokerId(2)), None);
        assert_eq!(r.parked_count(), 0);
        assert_eq!(r.next_deadline(T0), None);
        assert_eq!(
            r.on_follower_fetch(BrokerId(2), -1, Offset(10), Offset(10), T0),
            Err(ReplicaError::NotLeader)
        );
        assert_eq!(r.check_min_insync(), Err(ReplicaError::NotLeader));
        // A late controller answer to the old proposal is ignored.
        assert!(r.isr_change_committed(1, ids(&[1, 2]), 3, T0).is_empty());
        assert!(r.isr().is_empty());
    }

    #[test]
    fn follower_hw_follows_the_leader_capped_by_the_local_end() {
        let mut r = ReplicaState::new(BrokerId(1), ReplicaConfig::default());
        r.become_follower(FollowerChange {
            leader: Some(BrokerId(2)),
            epoch: LeaderEpoch(0),
            partition_epoch: 0,
            replicas: ids(&[1, 2]),
        })
        .unwrap();
        r.on_local_end(Offset(5), T0);
        assert_eq!(
            r.on_leader_hw(Offset(8)),
            vec![Output::HighWatermark(Offset(5))]
        );
        r.on_local_end(Offset(9), T0);
        assert_eq!(
            r.on_leader_hw(Offset(8)),
            vec![Output::HighWatermark(Offset(8))]
        );
        // Truncation below the high watermark takes it down with it.
        assert_eq!(
            r.on_local_end(Offset(6), T0),
            vec![Output::HighWatermark(Offset(6))]
        );
    }

    #[test]
    fn stale_partition_epoch_is_refused_and_changes_nothing() {
        let mut r = leader_of(&[1, 2], &[1, 2], 4);
        let err = r
            .become_follower(FollowerChange {
                leader: Some(BrokerId(2)),
                epoch: LeaderEpoch(9),
                partition_epoch: 3,
                replicas: ids(&[1, 2]),
            })
            .unwrap_err();
        assert_eq!(
            err,
            ReplicaError::StalePartitionEpoch {
                current: 4,
                received: 3
            }
        );
        assert!(r.is_leader());
        assert_eq!(r.leader_epoch(), EPOCH);
    }

    #[test]
    fn stop_answers_parked_produces_and_goes_offline() {
        let mut r = leader_of(&[1, 2], &[1, 2], 0);
        r.on_local_end(Offset(3), T0);
        assert!(r.park(1, Offset(3), T0 + 100).is_empty());
        assert_eq!(r.stop(), vec![done(1, Err(ProduceError::NotLeader))]);
        assert_eq!(r.role(), Role::Offline);
        assert_eq!(
            r.park(2, Offset(3), T0 + 100),
            vec![done(2, Err(ProduceError::NotLeader))]
        );
    }
}
