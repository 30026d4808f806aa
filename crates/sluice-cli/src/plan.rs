//! Where replicas should live: the pure planning behind `sluice cluster rebalance` and
//! `sluice cluster decommission`. Given every partition's replicas and the brokers that may hold
//! them, [`plan`] returns new replica lists that
//! - take every replica off the brokers being emptied (decommissioned, or gone);
//! - spread each topic's replicas evenly over the brokers (counts differ by at most one), then
//!   even out the totals where that keeps each topic even;
//! - put the replicas of one partition in different racks while there are racks to spare;
//! - spread preferred leaders (the first replica) evenly per topic, so that a preferred
//!   election afterwards balances leadership;
//! - move as little as they can: a replica moves only off an over-full broker, smallest
//!   partitions and non-leaders first, and a list is reordered only where leadership needs it.

use std::collections::{BTreeMap, BTreeSet};

/// One partition as it is now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub topic: String,
    pub partition: i32,
    pub replicas: Vec<i32>,
    /// Bytes on its leader: what a new replica copies.
    pub size: u64,
}

/// A partition's new replicas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Move {
    pub topic: String,
    pub partition: i32,
    pub from: Vec<i32>,
    pub to: Vec<i32>,
    /// Bytes copied to the brokers it adds.
    pub bytes: u64,
}

impl Move {
    /// Brokers the move adds.
    pub fn adding(&self) -> Vec<i32> {
        self.to
            .iter()
            .copied()
            .filter(|b| !self.from.contains(b))
            .collect()
    }
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("no broker may hold replicas")]
    NoBrokers,
    #[error(
        "{topic}-{partition} has {rf} replicas but only {brokers} brokers may hold them; \
         add brokers or lower its replication factor first"
    )]
    TooFewBrokers {
        topic: String,
        partition: i32,
        rf: usize,
        brokers: usize,
    },
}

/// The plan for `partitions` over `brokers` (id and rack): the partitions whose replicas change,
/// in the order given.
pub fn plan(
    partitions: &[Placement],
    brokers: &[(i32, Option<String>)],
) -> Result<Vec<Move>, PlanError> {
    if brokers.is_empty() {
        return Err(PlanError::NoBrokers);
    }
    let racks: BTreeMap<i32, Option<String>> = brokers.iter().cloned().collect();
    let ids: Vec<i32> = racks.keys().copied().collect();
    for p in partitions {
        if p.replicas.len() > ids.len() {
            return Err(PlanError::TooFewBrokers {
                topic: p.topic.clone(),
                partition: p.partition,
                rf: p.replicas.len(),
                brokers: ids.len(),
            });
        }
    }
    let mut lists: Vec<Vec<i32>> = partitions.iter().map(|p| p.replicas.clone()).collect();
    let mut total = Counts::new(&ids);
    for l in &lists {
        for b in l.iter().filter(|b| racks.contains_key(b)) {
            total.add(*b);
        }
    }
    let topics: BTreeSet<&str> = partitions.iter().map(|p| p.topic.as_str()).collect();
    for topic in &topics {
        let members: Vec<usize> = (0..partitions.len())
            .filter(|i| partitions[*i].topic == *topic)
            .collect();
        balance_topic(partitions, &members, &mut lists, &racks, &ids, &mut total);
    }
    balance_totals(partitions, &mut lists, &racks, &mut total);
    for topic in &topics {
        let members: Vec<usize> = (0..partitions.len())
            .filter(|i| partitions[*i].topic == *topic)
            .collect();
        spread_leaders(&members, &mut lists, &ids);
    }
    Ok(partitions
        .iter()
        .zip(lists)
        .filter(|(p, to)| p.replicas != *to)
        .map(|(p, to)| {
            let added = to.iter().filter(|b| !p.replicas.contains(b)).count() as u64;
            Move {
                topic: p.topic.clone(),
                partition: p.partition,
                from: p.replicas.clone(),
                to,
                bytes: p.size * added,
            }
        })
        .collect())
}

/// Replica counts per eligible broker.
#[derive(Debug, Clone)]
struct Counts(BTreeMap<i32, usize>);

impl Counts {
    fn new(ids: &[i32]) -> Counts {
        Counts(ids.iter().map(|b| (*b, 0)).collect())
    }
    fn add(&mut self, b: i32) {
        if let Some(n) = self.0.get_mut(&b) {
            *n += 1;
        }
    }
    fn remove(&mut self, b: i32) {
        if let Some(n) = self.0.get_mut(&b) {
            *n = n.saturating_sub(1);
        }
    }
    fn get(&self, b: i32) -> usize {
        self.0.get(&b).copied().unwrap_or(0)
    }
    /// The most and least loaded brokers (ties: lowest id).
    fn extremes(&self) -> (i32, i32) {
        let hi = self
            .0
            .iter()
            .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
            .map(|(b, _)| *b)
            .unwrap_or(-1);
        let lo = self
            .0
            .iter()
            .min_by(|a, b| a.1.cmp(b.1).then(a.0.cmp(b.0)))
            .map(|(b, _)| *b)
            .unwrap_or(-1);
        (hi, lo)
    }
    fn spread(&self) -> usize {
        let (hi, lo) = self.extremes();
        self.get(hi) - self.get(lo)
    }
}

/// Whether `to` may join `list` in place of `from` without putting two replicas in one rack
/// that were not already (or with no rack to spare).
fn rack_ok(
    list: &[i32],
    from: Option<i32>,
    to: i32,
    racks: &BTreeMap<i32, Option<String>>,
) -> bool {
    let rack = |b: i32| racks.get(&b).cloned().flatten();
    let Some(r) = rack(to) else { return true };
    !list
        .iter()
        .any(|b| Some(*b) != from && rack(*b).as_deref() == Some(r.as_str()))
}

/// The broker `slot` of `list` moves to: eligible, not in the list, least loaded in the topic
/// then overall, a rack the partition does not use if there is one, lowest id.
fn pick(
    list: &[i32],
    from: Option<i32>,
    ids: &[i32],
    racks: &BTreeMap<i32, Option<String>>,
    topic: &Counts,
    total: &Counts,
) -> Option<i32> {
    let candidates = ids.iter().copied().filter(|b| !list.contains(b));
    let best = |rack_aware: bool| {
        candidates
            .clone()
            .filter(|b| !rack_aware || rack_ok(list, from, *b, racks))
            .min_by_key(|b| (topic.get(*b), total.get(*b), *b))
    };
    best(true).or_else(|| best(false))
}

fn balance_topic(
    partitions: &[Placement],
    members: &[usize],
    lists: &mut [Vec<i32>],
    racks: &BTreeMap<i32, Option<String>>,
    ids: &[i32],
    total: &mut Counts,
) {
    let mut topic = Counts::new(ids);
    for i in members {
        for b in lists[*i].iter().filter(|b| racks.contains_key(b)) {
            topic.add(*b);
        }
    }
    // Replicas on brokers that may not hold any (decommissioned or gone) move first.
    for i in members {
        for slot in 0..lists[*i].len() {
            let b = lists[*i][slot];
            if racks.contains_key(&b) {
                continue;
            }
            if let Some(to) = pick(&lists[*i], Some(b), ids, racks, &topic, total) {
                lists[*i][slot] = to;
                topic.add(to);
                total.add(to);
            }
        }
    }
    // Then from the fullest broker to the emptiest until they differ by at most one.
    let mut moves_left = members.iter().map(|i| lists[*i].len()).sum::<usize>() * 2;
    while topic.spread() > 1 && moves_left > 0 {
        moves_left -= 1;
        let (hi, lo) = topic.extremes();
        let Some(i) = cheapest_with(partitions, members, lists, racks, hi, lo) else {
            break;
        };
        replace(&mut lists[i], hi, lo);
        topic.remove(hi);
        topic.add(lo);
        total.remove(hi);
        total.add(lo);
    }
}

/// The partition (of `members`) to move a replica from `hi` to `lo`: holds `hi`, not `lo`,
/// rack-safe; the smallest, a non-leader replica first.
fn cheapest_with(
    partitions: &[Placement],
    members: &[usize],
    lists: &[Vec<i32>],
    racks: &BTreeMap<i32, Option<String>>,
    hi: i32,
    lo: i32,
) -> Option<usize> {
    let fits = |i: &usize, rack_aware: bool| {
        let l = &lists[*i];
        l.contains(&hi) && !l.contains(&lo) && (!rack_aware || rack_ok(l, Some(hi), lo, racks))
    };
    let cost = |i: &usize| (lists[*i].first() == Some(&hi), partitions[*i].size, *i);
    members
        .iter()
        .copied()
        .filter(|i| fits(i, true))
        .min_by_key(cost)
        .or_else(|| {
            members
                .iter()
                .copied()
                .filter(|i| fits(i, false))
                .min_by_key(cost)
        })
}

fn replace(list: &mut [i32], from: i32, to: i32) {
    if let Some(slot) = list.iter_mut().find(|b| **b == from) {
        *slot = to;
    }
}

/// Evens out replicas over all topics, moving only where the topic stays even.
fn balance_totals(
    partitions: &[Placement],
    lists: &mut [Vec<i32>],
    racks: &BTreeMap<i32, Option<String>>,
    total: &mut Counts,
) {
    let mut moves_left = lists.iter().map(Vec::len).sum::<usize>();
    while total.spread() > 1 && moves_left > 0 {
        moves_left -= 1;
        let (hi, lo) = total.extremes();
        // A topic where `hi` holds more than `lo`: moving one keeps it within one.
        let per_topic = |topic: &str, b: i32| {
            (0..partitions.len())
                .filter(|i| partitions[*i].topic == topic && lists[*i].contains(&b))
                .count()
        };
        let all: Vec<usize> = (0..partitions.len()).collect();
        let candidates: Vec<usize> = all
            .iter()
            .copied()
            .filter(|i| {
                let t = &partitions[*i].topic;
                per_topic(t, hi) > per_topic(t, lo)
            })
            .collect();
        let Some(i) = cheapest_with(partitions, &candidates, lists, racks, hi, lo) else {
            break;
        };
        replace(&mut lists[i], hi, lo);
        total.remove(hi);
        total.add(lo);
    }
}

/// Reorders replica lists so each broker is the first replica (preferred leader) of an even
/// share of the topic's partitions. Brokers over their share hand a partition to one of its
/// other replicas under its share, directly or through one intermediate broker, until the
/// counts differ by at most one; only those lists are reordered.
fn spread_leaders(members: &[usize], lists: &mut [Vec<i32>], ids: &[i32]) {
    if members.is_empty() || ids.is_empty() {
        return;
    }
    let mut leads = Counts::new(ids);
    for i in members {
        leads.add(lists[*i][0]);
    }
    let to_front = |list: &mut Vec<i32>, b: i32| {
        if let Some(pos) = list.iter().position(|x| *x == b) {
            let b = list.remove(pos);
            list.insert(0, b);
        }
    };
    for _ in 0..members.len() * 2 {
        if leads.spread() <= 1 {
            return;
        }
        let (hi, lo) = leads.extremes();
        let led_by = |b: i32, lists: &[Vec<i32>]| -> Vec<usize> {
            members
                .iter()
                .copied()
                .filter(|i| lists[*i][0] == b)
                .collect()
        };
        // Directly: a partition `hi` leads that `lo` holds.
        if let Some(i) = led_by(hi, lists)
            .into_iter()
            .find(|i| lists[*i].contains(&lo))
        {
            to_front(&mut lists[i], lo);
            leads.remove(hi);
            leads.add(lo);
            continue;
        }
        // Through `x`: `hi` hands one to `x`, which hands one to `lo`.
        let chain = led_by(hi, lists).into_iter().find_map(|i| {
            lists[i][1..].iter().find_map(|x| {
                led_by(*x, lists)
                    .into_iter()
                    .find(|j| lists[*j].contains(&lo))
                    .map(|j| (i, *x, j))
            })
        });
        let Some((i, x, j)) = chain else { return };
        to_front(&mut lists[i], x);
        to_front(&mut lists[j], lo);
        leads.remove(hi);
        leads.add(lo);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(name: &str, lists: &[&[i32]], size: u64) -> Vec<Placement> {
        lists
            .iter()
            .enumerate()
            .map(|(i, r)| Placement {
                topic: name.into(),
                partition: i as i32,
                replicas: r.to_vec(),
                size,
            })
            .collect()
    }

    fn brokers(ids: &[i32]) -> Vec<(i32, Option<String>)> {
        ids.iter().map(|b| (*b, None)).collect()
    }

    /// The layout after applying `moves`.
    fn after(parts: &[Placement], moves: &[Move]) -> Vec<Vec<i32>> {
        parts
            .iter()
            .map(|p| {
                moves
                    .iter()
                    .find(|m| m.topic == p.topic && m.partition == p.partition)
                    .map_or(p.replicas.clone(), |m| m.to.clone())
            })
            .collect()
    }

    fn counts(lists: &[Vec<i32>], leaders_only: bool) -> BTreeMap<i32, usize> {
        let mut c = BTreeMap::new();
        for l in lists {
            let take = if leaders_only { 1 } else { l.len() };
            for b in &l[..take] {
                *c.entry(*b).or_default() += 1;
            }
        }
        c
    }

    /// Twelve partitions at RF 3 round-robin over brokers 1-3.
    fn twelve_on_three() -> Vec<Placement> {
        let lists: Vec<Vec<i32>> = (0..12)
            .map(|p| (0..3).map(|r| (p + r) % 3 + 1).collect())
            .collect();
        let refs: Vec<&[i32]> = lists.iter().map(Vec::as_slice).collect();
        topic("orders", &refs, 1000)
    }

    #[test]
    fn a_new_broker_gets_its_share_of_replicas_and_leaders() {
        let parts = twelve_on_three();
        let moves = plan(&parts, &brokers(&[1, 2, 3, 4])).unwrap();
        let lists = after(&parts, &moves);
        let replicas = counts(&lists, false);
        assert_eq!(replicas.values().copied().collect::<Vec<_>>(), vec![9; 4]);
        let leaders = counts(&lists, true);
        assert_eq!(leaders.values().copied().collect::<Vec<_>>(), vec![3; 4]);
        // Nine replicas were copied to broker 4, nothing else was copied.
        let copied: Vec<i32> = moves.iter().flat_map(Move::adding).collect();
        assert_eq!(copied, vec![4; 9]);
        assert_eq!(moves.iter().map(|m| m.bytes).sum::<u64>(), 9000);
        for l in &lists {
            let mut s = l.clone();
            s.sort_unstable();
            s.dedup();
            assert_eq!(s.len(), 3, "no broker twice in {l:?}");
        }
        // Balanced already: nothing to do.
        let again: Vec<Placement> = parts
            .iter()
            .zip(&lists)
            .map(|(p, l)| Placement {
                replicas: l.clone(),
                ..p.clone()
            })
            .collect();
        assert!(plan(&again, &brokers(&[1, 2, 3, 4])).unwrap().is_empty());
    }

    #[test]
    fn decommission_empties_a_broker_evenly() {
        let parts = twelve_on_three();
        let four = plan(&parts, &brokers(&[1, 2, 3, 4])).unwrap();
        let on_four: Vec<Placement> = parts
            .iter()
            .zip(after(&parts, &four))
            .map(|(p, l)| Placement {
                replicas: l,
                ..p.clone()
            })
            .collect();
        // Take broker 2 out.
        let moves = plan(&on_four, &brokers(&[1, 3, 4])).unwrap();
        let lists = after(&on_four, &moves);
        assert!(lists.iter().all(|l| !l.contains(&2)));
        assert_eq!(
            counts(&lists, false).values().copied().collect::<Vec<_>>(),
            vec![12; 3]
        );
        assert_eq!(
            counts(&lists, true).values().copied().collect::<Vec<_>>(),
            vec![4; 3]
        );
        // Too few brokers left for RF 3.
        assert!(matches!(
            plan(&on_four, &brokers(&[1, 3])),
            Err(PlanError::TooFewBrokers { rf: 3, .. })
        ));
    }

    #[test]
    fn racks_are_kept_apart() {
        // Two racks; partitions on [1 (a), 2 (b)]; a new broker 3 in rack a.
        let parts = topic("t", &[&[1, 2], &[2, 1], &[1, 2], &[2, 1]], 10);
        let b = vec![
            (1, Some("a".to_string())),
            (2, Some("b".to_string())),
            (3, Some("a".to_string())),
            (4, Some("b".to_string())),
        ];
        let moves = plan(&parts, &b).unwrap();
        let lists = after(&parts, &moves);
        let rack = |x: i32| if x % 2 == 1 { "a" } else { "b" };
        for l in &lists {
            assert_ne!(
                rack(l[0]),
                rack(l[1]),
                "{l:?} has both replicas in one rack"
            );
        }
        assert_eq!(
            counts(&lists, false).values().copied().collect::<Vec<_>>(),
            vec![2; 4]
        );
    }

    #[test]
    fn totals_even_out_across_single_partition_topics() {
        // Four one-partition topics, all on broker 1: each topic alone is even (one replica),
        // the brokers are not.
        let mut parts = Vec::new();
        for name in ["a", "b", "c", "d"] {
            parts.extend(topic(name, &[&[1]], 5));
        }
        let moves = plan(&parts, &brokers(&[1, 2])).unwrap();
        let lists = after(&parts, &moves);
        assert_eq!(
            counts(&lists, false).values().copied().collect::<Vec<_>>(),
            vec![2, 2]
        );
    }
}
