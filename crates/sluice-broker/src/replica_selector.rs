//! KIP-392 (fetch from the closest replica): which replica a consumer that names its rack
//! should read from, as the leader decides it. Pure; the fetch handler gathers the inputs (the
//! leader's view of its followers, the ISR, the racks and liveness of brokers from the metadata
//! image) and sends the answer as `preferred_read_replica`.
//!
//! The rule is Kafka's `ReplicaManager.findPreferredReadReplica` with its
//! `RackAwareReplicaSelector`, which in Sluice is always on (there is no
//! `replica.selector.class`: Kafka's default selects the leader, i.e. turns KIP-392 off):
//! - a consumer with no rack, or in the leader's rack, reads from the leader;
//! - otherwise the candidates are the followers in the client's rack that are in the ISR, alive
//!   (registered and unfenced) and whose log end, as the leader last heard it, covers the fetch
//!   offset; the most caught up wins (largest log end, then the most recent catch-up, then the
//!   lowest broker id so the choice is stable);
//! - no candidate: the leader.

use sluice_types::{BrokerId, Offset};

/// One follower as the leader sees it (Kafka's `ReplicaView`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FollowerView {
    pub broker: BrokerId,
    /// Its rack, from its registration; `None`: no rack, or the broker is not registered.
    pub rack: Option<String>,
    /// Registered and unfenced.
    pub alive: bool,
    pub in_isr: bool,
    /// Its log end as its last fetch told the leader ([`Offset::NONE`] before any).
    pub log_end: Offset,
    /// When it last held everything the leader had (`None`: not since this leader began).
    pub last_caught_up_ms: Option<i64>,
}

/// The follower a consumer in `client_rack` fetching from `fetch_offset` should read from, or
/// `None` for the leader itself. `leader_rack` is the leader's own.
pub fn select_read_replica(
    client_rack: &str,
    leader_rack: Option<&str>,
    followers: &[FollowerView],
    fetch_offset: Offset,
) -> Option<BrokerId> {
    if client_rack.is_empty() || leader_rack == Some(client_rack) {
        return None;
    }
    followers
        .iter()
        .filter(|f| {
            f.in_isr
                && f.alive
                && f.rack.as_deref() == Some(client_rack)
                && f.log_end >= fetch_offset
        })
        .max_by(|a, b| {
            a.log_end
                .cmp(&b.log_end)
                .then(a.last_caught_up_ms.cmp(&b.last_caught_up_ms))
                // The lower id wins a tie: it compares greater here.
                .then(b.broker.cmp(&a.broker))
        })
        .map(|f| f.broker)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(id: i32, rack: &str, end: i64) -> FollowerView {
        FollowerView {
            broker: BrokerId(id),
            rack: Some(rack.to_string()),
            alive: true,
            in_isr: true,
            log_end: Offset(end),
            last_caught_up_ms: Some(1_000),
        }
    }

    #[test]
    fn no_rack_or_the_leaders_rack_reads_from_the_leader() {
        let f = [view(2, "r2", 10)];
        assert_eq!(select_read_replica("", Some("r1"), &f, Offset(5)), None);
        assert_eq!(select_read_replica("r1", Some("r1"), &f, Offset(5)), None);
        // The leader's rack is unknown but the client's has a follower.
        assert_eq!(
            select_read_replica("r2", None, &f, Offset(5)),
            Some(BrokerId(2))
        );
    }

    #[test]
    fn an_in_sync_live_follower_in_the_clients_rack_is_chosen() {
        let f = [view(2, "r2", 10), view(3, "r3", 10)];
        assert_eq!(
            select_read_replica("r3", Some("r1"), &f, Offset(10)),
            Some(BrokerId(3))
        );
        assert_eq!(
            select_read_replica("r2", Some("r1"), &f, Offset(0)),
            Some(BrokerId(2))
        );
        // Nobody in that rack.
        assert_eq!(select_read_replica("r9", Some("r1"), &f, Offset(0)), None);
    }

    #[test]
    fn out_of_sync_fenced_rackless_or_behind_followers_are_not() {
        let base = view(2, "r2", 10);
        let out_of_isr = FollowerView {
            in_isr: false,
            ..base.clone()
        };
        let fenced = FollowerView {
            alive: false,
            ..base.clone()
        };
        let rackless = FollowerView {
            rack: None,
            ..base.clone()
        };
        for f in [out_of_isr, fenced, rackless] {
            assert_eq!(select_read_replica("r2", Some("r1"), &[f], Offset(5)), None);
        }
        // Its log end does not reach the fetch offset (it would have nothing to serve).
        assert_eq!(
            select_read_replica("r2", Some("r1"), std::slice::from_ref(&base), Offset(11)),
            None
        );
        // Never heard from.
        let silent = FollowerView {
            log_end: Offset::NONE,
            last_caught_up_ms: None,
            ..base
        };
        assert_eq!(
            select_read_replica("r2", Some("r1"), &[silent], Offset(0)),
            None
        );
    }

    #[test]
    fn the_most_caught_up_follower_of_the_rack_wins() {
        let mut a = view(2, "r2", 10);
        let mut b = view(3, "r2", 12);
        assert_eq!(
            select_read_replica("r2", Some("r1"), &[a.clone(), b.clone()], Offset(5)),
            Some(BrokerId(3))
        );
        // Same end: the most recently caught up.
        b.log_end = Offset(10);
        a.last_caught_up_ms = Some(2_000);
        assert_eq!(
            select_read_replica("r2", Some("r1"), &[a.clone(), b.clone()], Offset(5)),
            Some(BrokerId(2))
        );
        // A full tie: the lower id, whatever the order.
        a.last_caught_up_ms = b.last_caught_up_ms;
        assert_eq!(
            select_read_replica("r2", Some("r1"), &[b.clone(), a.clone()], Offset(5)),
            Some(BrokerId(2))
        );
        assert_eq!(
            select_read_replica("r2", Some("r1"), &[a, b], Offset(5)),
            Some(BrokerId(2))
        );
    }
}
