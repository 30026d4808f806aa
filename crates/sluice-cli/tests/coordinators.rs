//! Consumer groups through the loss of their coordinator (issue 14), black-box: three real
//! `sluice` processes, three consumer processes in one group (`common::children`) on a
//! six-partition RF=3 topic, and a steady idempotent `acks=all` producer.
//!
//! - kill -9 of the broker that coordinates the group: another broker loads the group's offsets
//!   partition and coordinates it; the members keep their assignment (the group's state was
//!   stored when its generation completed) and keep consuming; nothing is skipped, committed
//!   offsets never go backwards and end at the high watermarks;
//! - the same through a rolling restart (SIGTERM, restart, one node at a time) of all three,
//!   again with no member rebalanced (a generation's state is stored before its SyncGroup
//!   answers).

mod common;

use std::time::{Duration, Instant};

use common::children;
use common::cluster::TestCluster;
use common::group_load::{assert_not_rebalanced, memberships, GroupLoad, SteadyProducer, WAIT};
use common::*;

/// A child consumer process's body when this binary runs as one (see `common::children`).
#[test]
fn child_consumer() {
    children::child_main();
}

const TOPIC: &str = "work";
const GROUP: &str = "workers";
/// Six partitions at RF=3, three members. The session outlasts the failover: fencing the dead
/// broker (`broker.session.timeout.ms`, 3 s here), electing new leaders and loading the group.
/// Kafka's default is 45 s.
const LOAD: GroupLoad = GroupLoad {
    topic: TOPIC,
    group: GROUP,
    parts: 6,
    session_ms: 15_000,
};
/// Groups form at once and the children's short sessions are allowed.
const GROUP_SETTINGS: &[&str] = &[
    "group.initial.rebalance.delay.ms=0",
    "group.min.session.timeout.ms=1000",
];

/// Which node coordinates the group (and has loaded it), asked of node `via`.
fn coordinator(cluster: &mut TestCluster, via: i32) -> i32 {
    RawConn::connect(cluster.node(via)).wait_coordinator(GROUP)
}

const NOT_COORDINATOR: i16 = 16;
const COORDINATOR_NOT_AVAILABLE: i16 = 15;

/// OffsetFetch v8 of `group`'s offset of `TOPIC`-0 at `node`: (group error, offset).
fn fetch_offset(cluster: &mut TestCluster, node: i32, group: &str) -> (i16, i64) {
    use kafka_protocol::messages::offset_fetch_request::{
        OffsetFetchRequestGroup, OffsetFetchRequestTopics,
    };
    use kafka_protocol::messages::{GroupId, OffsetFetchRequest, TopicName};
    let resp = RawConn::connect(cluster.node(node)).call(
        8,
        &OffsetFetchRequest::default().with_groups(vec![OffsetFetchRequestGroup::default()
            .with_group_id(GroupId(kstr(group)))
            .with_topics(Some(vec![OffsetFetchRequestTopics::default()
                .with_name(TopicName(kstr(TOPIC)))
                .with_partition_indexes(vec![0])]))]),
    );
    let g = &resp.groups[0];
    let offset = g
        .topics
        .first()
        .and_then(|t| t.partitions.first())
        .map_or(-1, |p| p.committed_offset);
    (g.error_code, offset)
}

/// A standalone OffsetCommit v8 (no member, generation -1) of `offset` for `TOPIC`-0 at
/// `node`: the partition's error code.
fn commit_offset(cluster: &mut TestCluster, node: i32, group: &str, offset: i64) -> i16 {
    use kafka_protocol::messages::offset_commit_request::{
        OffsetCommitRequestPartition, OffsetCommitRequestTopic,
    };
    use kafka_protocol::messages::{GroupId, OffsetCommitRequest, TopicName};
    let resp = RawConn::connect(cluster.node(node)).call(
        8,
        &OffsetCommitRequest::default()
            .with_group_id(GroupId(kstr(group)))
            .with_generation_id_or_member_epoch(-1)
            .with_topics(vec![OffsetCommitRequestTopic::default()
                .with_name(TopicName(kstr(TOPIC)))
                .with_partitions(vec![OffsetCommitRequestPartition::default()
                    .with_partition_index(0)
                    .with_committed_offset(offset)])]),
    );
    resp.topics[0].partitions[0].error_code
}

#[test]
fn a_group_keeps_consuming_when_its_coordinator_is_killed() {
    let mut cluster = TestCluster::start_with(3, GROUP_SETTINGS);
    LOAD.create_topic(&cluster.bootstrap());
    let old = coordinator(&mut cluster, 1);
    eprintln!("--- node {old} coordinates group {GROUP}");
    // __consumer_offsets has three replicas per partition, and the other brokers send the
    // group's requests to its coordinator.
    let meta = RawConn::connect(cluster.node(1)).call(
        12,
        &kafka_protocol::messages::MetadataRequest::default().with_topics(None),
    );
    let offsets_topic = meta
        .topics
        .iter()
        .find(|t| {
            t.name
                .as_ref()
                .is_some_and(|n| n.as_str() == "__consumer_offsets")
        })
        .expect("__consumer_offsets in the metadata");
    assert_eq!(offsets_topic.partitions.len(), 50);
    assert!(offsets_topic.is_internal);
    assert!(
        offsets_topic
            .partitions
            .iter()
            .all(|p| p.replica_nodes.len() == 3),
        "{offsets_topic:?}"
    );
    for other in (1..=3).filter(|&n| n != old) {
        assert_eq!(
            fetch_offset(&mut cluster, other, GROUP).0,
            NOT_COORDINATOR,
            "node {other} does not coordinate {GROUP}"
        );
    }
    let producer = SteadyProducer::start(&cluster.bootstrap(), TOPIC, LOAD.parts);
    let dir = tempfile::Builder::new()
        .prefix("sluice-it-coordinator")
        .tempdir()
        .expect("children dir");
    let kids = LOAD.running_group(&cluster, dir.path());
    let before = memberships(&kids);

    eprintln!("--- kill -9 node {old}, the coordinator");
    let mark = producer.sent();
    cluster.node(old).kill9();
    let killed = Instant::now();
    let survivor = if old == 1 { 2 } else { 1 };
    let new = coordinator(&mut cluster, survivor);
    assert_ne!(new, old, "a killed broker cannot coordinate");
    eprintln!(
        "node {new} coordinates the group {:?} after the kill",
        killed.elapsed()
    );
    LOAD.all_read_past(
        &kids,
        &producer,
        mark,
        "every child to read records produced after the kill",
    );
    // The group's state was stored with its generation: the members kept their partitions,
    // with no rebalance.
    assert_not_rebalanced(&kids, &before, "the coordinator failover");

    eprintln!("--- node {old} returns; the run ends");
    cluster.node(old).restart();
    let f = LOAD.finish(&mut cluster, producer, kids, survivor);
    eprintln!(
        "{} records read twice while the group ran, {} in all (the children leave one by one at \
         the end); {} rebalance callbacks in all",
        f.duplicates_while_running, f.duplicates, f.rebalances
    );
    assert_eq!(
        f.duplicates_while_running, 0,
        "no member lost its partitions in the failover, so nothing was read twice"
    );
}

#[test]
fn a_group_keeps_consuming_through_a_rolling_restart() {
    let mut cluster = TestCluster::start_with(3, GROUP_SETTINGS);
    LOAD.create_topic(&cluster.bootstrap());
    coordinator(&mut cluster, 1);
    let producer = SteadyProducer::start(&cluster.bootstrap(), TOPIC, LOAD.parts);
    let dir = tempfile::Builder::new()
        .prefix("sluice-it-rolling")
        .tempdir()
        .expect("children dir");
    let kids = LOAD.running_group(&cluster, dir.path());
    let before = memberships(&kids);
    for id in 1..=3 {
        let other = if id == 1 { 2 } else { 1 };
        let coordinating = coordinator(&mut cluster, other);
        eprintln!("--- SIGTERM node {id} (node {coordinating} coordinates the group)");
        let mark = producer.sent();
        let status = cluster.node(id).stop();
        assert!(status.success(), "node {id} exited with {status}");
        let new = coordinator(&mut cluster, other);
        assert_ne!(new, id, "a stopped broker cannot coordinate");
        LOAD.all_read_past(
            &kids,
            &producer,
            mark,
            &format!("every child to read on with node {id} down"),
        );
        cluster.node(id).restart();
        // Back in every ISR before the next node goes, or the next stop could leave a
        // partition without an in-sync replica.
        wait_for(
            &format!("node {id} back in the ISR of every partition"),
            WAIT,
            Duration::from_millis(200),
            || {
                let mut c = RawConn::connect(cluster.node(other));
                let resp = c.call(
                    12,
                    &kafka_protocol::messages::MetadataRequest::default().with_topics(None),
                );
                resp.topics
                    .iter()
                    .flat_map(|t| &t.partitions)
                    .all(|p| p.isr_nodes.iter().any(|b| b.0 == id))
                    .then_some(())
            },
        );
    }
    // Each coordinator handed over a group whose state was stored before its members were
    // answered: nobody was rebalanced, so nothing was read twice.
    assert_not_rebalanced(&kids, &before, "the rolling restart");
    let f = LOAD.finish(&mut cluster, producer, kids, 1);
    eprintln!(
        "{} records read twice while the group ran, {} in all; {} rebalance callbacks in all",
        f.duplicates_while_running, f.duplicates, f.rebalances
    );
    assert_eq!(f.duplicates_while_running, 0);
}

#[test]
fn a_commit_is_acknowledged_only_once_the_isr_has_it() {
    let mut cluster = TestCluster::start_with(3, GROUP_SETTINGS);
    LOAD.create_topic(&cluster.bootstrap());
    let group = "replicated-commits";
    let coordinator = RawConn::connect(cluster.node(1)).wait_coordinator(group);
    assert_eq!(commit_offset(&mut cluster, coordinator, group, 5), 0);
    assert_eq!(fetch_offset(&mut cluster, coordinator, group), (0, 5));

    eprintln!("--- the two other nodes die: the coordinator can no longer replicate a commit");
    let others: Vec<i32> = (1..=3).filter(|&n| n != coordinator).collect();
    for &n in &others {
        cluster.node(n).kill9();
    }
    // Without a quorum nothing fences the coordinator or shrinks the ISR: the commit waits for
    // the ISR until offsets.commit.timeout.ms and fails (COORDINATOR_NOT_AVAILABLE), or finds
    // the coordinator's leadership lease expired (NOT_COORDINATOR); OffsetFetch never shows it.
    let refused = commit_offset(&mut cluster, coordinator, group, 6);
    assert!(
        [COORDINATOR_NOT_AVAILABLE, NOT_COORDINATOR].contains(&refused),
        "a commit the ISR does not have was answered {refused}"
    );
    assert_eq!(fetch_offset(&mut cluster, coordinator, group), (0, 5));

    eprintln!("--- they return: commits are acknowledged again");
    for &n in &others {
        cluster.node(n).restart();
    }
    let at = wait_for(
        "a commit acknowledged after the nodes return",
        WAIT,
        Duration::from_millis(500),
        || {
            let c = RawConn::connect(cluster.node(1)).wait_coordinator(group);
            (commit_offset(&mut cluster, c, group, 7) == 0).then_some(c)
        },
    );
    assert_eq!(fetch_offset(&mut cluster, at, group), (0, 7));
}
