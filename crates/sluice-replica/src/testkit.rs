//! Shared test helpers: broker 1 leading, times as plain numbers.

use sluice_types::{BrokerId, LeaderEpoch, Offset};

use crate::{IsrProposal, LeaderChange, Output, ProduceError, ReplicaConfig, ReplicaState};

/// Time at which the tests' leaders are elected.
pub(crate) const T0: i64 = 1_000_000;
/// `replica.lag.time.max.ms` in tests.
pub(crate) const LAG: i64 = 10_000;
pub(crate) const EPOCH: LeaderEpoch = LeaderEpoch(5);

pub(crate) fn ids(v: &[i32]) -> Vec<BrokerId> {
    v.iter().copied().map(BrokerId).collect()
}

/// Broker 1 leading `replicas` with `isr` at [`EPOCH`], empty log, at [`T0`].
pub(crate) fn leader_change(replicas: &[i32], isr: &[i32], partition_epoch: i32) -> LeaderChange {
    LeaderChange {
        epoch: EPOCH,
        partition_epoch,
        replicas: ids(replicas),
        isr: ids(isr),
        local_end: Offset(0),
        epoch_start: Offset(0),
        hw: Offset(0),
        now_ms: T0,
    }
}

pub(crate) fn leader_of(replicas: &[i32], isr: &[i32], partition_epoch: i32) -> ReplicaState {
    let mut r = ReplicaState::new(
        BrokerId(1),
        ReplicaConfig {
            replica_lag_time_max_ms: LAG,
            min_insync_replicas: 1,
        },
    );
    let out = r
        .become_leader(leader_change(replicas, isr, partition_epoch))
        .unwrap();
    assert!(out.is_empty(), "{out:?}");
    r
}

/// A fetch by `follower` at `offset`, while the leader's end is its current local end.
pub(crate) fn fetch(r: &mut ReplicaState, follower: i32, offset: i64, now_ms: i64) -> Vec<Output> {
    let end = r.local_end();
    r.on_follower_fetch(BrokerId(follower), -1, Offset(offset), end, now_ms)
        .unwrap()
}

/// The one ISR proposal among `out`, if any.
pub(crate) fn proposal(out: &[Output]) -> Option<IsrProposal> {
    let mut found = out.iter().filter_map(|o| match o {
        Output::ProposeIsr(p) => Some(p.clone()),
        _ => None,
    });
    let p = found.next();
    assert!(found.next().is_none(), "two proposals in {out:?}");
    p
}

pub(crate) fn done(id: u64, result: Result<(), ProduceError>) -> Output {
    Output::ProduceDone { id, result }
}
