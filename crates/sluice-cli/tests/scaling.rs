//! Scaling out (issue 15), black-box: real `sluice` processes, a consumer group of three
//! consumer processes (`common::group_load`) and a steady idempotent `acks=all` producer, while
//! the `sluice` CLI moves partitions with AlterPartitionReassignments.
//!
//! - A fourth broker joins a three-node cluster; `sluice cluster rebalance` gives it its share
//!   of replicas and leaders; then `sluice cluster decommission` empties a broker, which is
//!   stopped. The producer and the group see no error; every acknowledged record is read, and
//!   every replica holds exactly the acknowledged records, in order.
//! - A reassignment to a new broker under a low throttle, cancelled half-way: the partition
//!   keeps its original replicas and every record, and the new broker drops its copy.

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use common::children;
use common::cluster::{replica_records_of, TestCluster};
use common::group_load::{GroupLoad, SteadyProducer, WAIT};
use common::*;
use kafka_protocol::messages::{
    DescribeLogDirsRequest, ListPartitionReassignmentsRequest, MetadataRequest,
};

/// A child consumer process's body when this binary runs as one (see `common::children`).
#[test]
fn child_consumer() {
    children::child_main();
}

const TOPIC: &str = "orders";
const LOAD: GroupLoad = GroupLoad {
    topic: TOPIC,
    group: "order-readers",
    parts: 12,
    // Outlasts leadership moves and a broker's controlled shutdown.
    session_ms: 20_000,
};
/// A second topic, twelve partitions at RF=3 of 1 KiB records, filled before the moves so
/// that they copy megabytes while the producer and the group run.
const BALLAST: &str = "ballast";
const BALLAST_PER_PARTITION: usize = 1500;
/// The rebalance's throttle, bytes/s: the copy to the new broker takes several seconds.
const THROTTLE: &str = "2000000";
const GROUP_SETTINGS: &[&str] = &[
    "group.initial.rebalance.delay.ms=0",
    "group.min.session.timeout.ms=1000",
];

/// Fills [`BALLAST`]: value -> (partition, offset) of every record acknowledged.
fn fill_ballast(bootstrap: &str) -> BTreeMap<String, (i32, i64)> {
    let load = GroupLoad {
        topic: BALLAST,
        ..LOAD
    };
    load.create_topic(bootstrap);
    let producer = common::cluster::acks_all_producer(bootstrap);
    let pad = "b".repeat(1000);
    let mut acked = BTreeMap::new();
    for p in 0..LOAD.parts {
        let recs: Vec<Rec> = (0..BALLAST_PER_PARTITION)
            .map(|i| Rec::kv("", &format!("{p}-{i:05}-{pad}")))
            .collect();
        let at = block_on(produce(&producer, BALLAST, Some(p), &recs));
        for (r, (partition, offset)) in recs.iter().zip(at) {
            let v = String::from_utf8(r.value.clone().expect("a value")).expect("utf-8");
            acked.insert(v, (partition, offset));
        }
    }
    acked
}

/// Runs the `sluice` CLI to completion; its stdout, or a failure with both streams.
fn sluice(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .output()
        .expect("run sluice");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(
        out.status.success(),
        "sluice {args:?} failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    eprintln!("$ sluice {}\n{stdout}", args.join(" "));
    stdout
}

/// Every partition of `topic` as node `via` reports it: index -> (leader, replicas, ISR).
fn partitions(b: &Broker, topic: &str) -> BTreeMap<i32, (i32, Vec<i32>, Vec<i32>)> {
    let resp = RawConn::connect(b).call(12, &MetadataRequest::default().with_topics(None));
    resp.topics
        .iter()
        .filter(|t| t.name.as_ref().is_some_and(|n| n.as_str() == topic))
        .flat_map(|t| &t.partitions)
        .map(|p| {
            let ids = |v: &[kafka_protocol::messages::BrokerId]| v.iter().map(|b| b.0).collect();
            (
                p.partition_index,
                (p.leader_id.0, ids(&p.replica_nodes), ids(&p.isr_nodes)),
            )
        })
        .collect()
}

/// How many replicas and leaderships of `topic` each broker has.
fn shares(b: &Broker, topic: &str) -> (BTreeMap<i32, usize>, BTreeMap<i32, usize>) {
    let mut replicas = BTreeMap::new();
    let mut leaders = BTreeMap::new();
    for (leader, reps, _) in partitions(b, topic).values() {
        *leaders.entry(*leader).or_default() += 1;
        for r in reps {
            *replicas.entry(*r).or_default() += 1;
        }
    }
    (replicas, leaders)
}

/// Waits until `id` is registered and unfenced (DescribeCluster through node `via`).
fn wait_unfenced(cluster: &mut TestCluster, via: i32, id: i32) {
    use kafka_protocol::messages::DescribeClusterRequest;
    wait_for(
        &format!("broker {id} registered and unfenced"),
        WAIT,
        Duration::from_millis(200),
        || {
            let resp = RawConn::connect(cluster.node(via)).call(
                2,
                &DescribeClusterRequest::default()
                    .with_endpoint_type(1)
                    .with_include_fenced_brokers(true),
            );
            resp.brokers
                .iter()
                .any(|b| b.broker_id.0 == id && !b.is_fenced)
                .then_some(())
        },
    );
}

/// Every replica of every partition of `topic` holds exactly `acked` of that partition (value at
/// the offset it was acknowledged at, every offset once, in order), and the ISR is full.
fn every_replica_holds(
    cluster: &mut TestCluster,
    via: i32,
    topic: &str,
    acked: &BTreeMap<String, (i32, i64)>,
) {
    let mut want: BTreeMap<i32, Vec<(i64, String)>> = BTreeMap::new();
    for (v, (p, o)) in acked {
        want.entry(*p).or_default().push((*o, v.clone()));
    }
    for list in want.values_mut() {
        list.sort();
    }
    let layout = wait_for(
        "every partition with its full ISR",
        WAIT,
        Duration::from_millis(200),
        || {
            let l = partitions(cluster.node(via), topic);
            l.values()
                .all(|(_, r, isr)| isr.len() == r.len())
                .then_some(l)
        },
    );
    for (p, (_, replicas, _)) in &layout {
        let expected = want.get(p).cloned().unwrap_or_default();
        for r in replicas {
            let addr = cluster.node(*r).addr();
            let held = wait_for(
                &format!("node {r}'s copy of {topic}-{p} to reach the acknowledged records"),
                WAIT,
                Duration::from_millis(200),
                || replica_records_of(addr, topic, *p).filter(|h| h.len() >= expected.len()),
            );
            assert_eq!(
                held, expected,
                "node {r}'s copy of {topic}-{p} is not exactly the acknowledged records"
            );
        }
    }
    eprintln!(
        "every replica of the {} partitions of {topic} holds exactly the {} acknowledged records",
        layout.len(),
        acked.len()
    );
}

#[test]
fn brokers_join_and_leave_under_load_and_nothing_is_lost() {
    let mut cluster = TestCluster::start_with(3, GROUP_SETTINGS);
    LOAD.create_topic(&cluster.bootstrap());
    let producer = SteadyProducer::start(&cluster.bootstrap(), TOPIC, LOAD.parts);
    let dir = tempfile::Builder::new()
        .prefix("sluice-it-scaling")
        .tempdir()
        .expect("children dir");
    let kids = LOAD.running_group(&cluster, dir.path());
    let ballast = fill_ballast(&cluster.bootstrap());
    wait_for(
        "some records acknowledged",
        WAIT,
        Duration::from_millis(100),
        || (producer.sent() > 200).then_some(()),
    );

    eprintln!("--- a fourth broker joins; sluice cluster rebalance");
    let four = cluster.add_broker(GROUP_SETTINGS);
    wait_unfenced(&mut cluster, 1, four);
    let (before, _) = shares(cluster.node(1), TOPIC);
    assert_eq!(before.get(&four), None, "a new broker holds nothing yet");
    let bootstrap = cluster.bootstrap_of(&[1, 2]);
    let sent = producer.sent();
    let out = sluice(&[
        "cluster",
        "rebalance",
        "-b",
        &bootstrap,
        "--throttle",
        THROTTLE,
        "--timeout",
        "180",
    ]);
    assert!(out.contains("Done:"), "{out}");
    eprintln!(
        "{} records acknowledged while the partitions moved",
        producer.sent() - sent
    );
    assert!(
        producer.sent() > sent,
        "the producer made progress during the move"
    );
    let (replicas, leaders) = shares(cluster.node(1), TOPIC);
    assert_eq!(
        replicas,
        BTreeMap::from([(1, 9), (2, 9), (3, 9), (4, 9)]),
        "36 replicas of {TOPIC}, nine each"
    );
    assert_eq!(
        leaders,
        BTreeMap::from([(1, 3), (2, 3), (3, 3), (4, 3)]),
        "twelve leaderships, three each"
    );
    let (replicas, leaders) = shares(cluster.node(1), BALLAST);
    assert_eq!(replicas.get(&four), Some(&9), "{BALLAST}: {replicas:?}");
    assert_eq!(leaders.get(&four), Some(&3), "{BALLAST}: {leaders:?}");
    let (offsets, _) = shares(cluster.node(1), "__consumer_offsets");
    assert!(
        offsets.values().all(|n| (37..=38).contains(n)) && offsets.len() == 4,
        "__consumer_offsets' 150 replicas spread over four brokers: {offsets:?}"
    );
    // A second run finds nothing to do.
    let again = sluice(&["cluster", "rebalance", "-b", &bootstrap, "--dry-run"]);
    assert!(again.contains("Nothing to move"), "{again}");
    // New partitions of a replicated topic are placed over all the live brokers.
    let grown = block_on(admin(cluster.node(1)).create_partitions(
        &[rdkafka::admin::NewPartitions::new(BALLAST, 16)],
        &admin_opts(),
    ))
    .expect("CreatePartitions");
    assert_eq!(grown[0], Ok(BALLAST.to_string()));
    let layout = wait_for(
        "the four new partitions of the ballast topic",
        WAIT,
        Duration::from_millis(100),
        || Some(partitions(cluster.node(1), BALLAST)).filter(|l| l.len() == 16),
    );
    let mut new_replicas: BTreeMap<i32, usize> = BTreeMap::new();
    for (_, (_, replicas, _)) in layout.range(12..) {
        for r in replicas {
            *new_replicas.entry(*r).or_default() += 1;
        }
    }
    assert_eq!(
        new_replicas,
        BTreeMap::from([(1, 3), (2, 3), (3, 3), (4, 3)]),
        "twelve new replicas, three on each live broker"
    );
    let mark = producer.sent();
    LOAD.all_read_past(
        &kids,
        &producer,
        mark,
        "every child to read records produced after the rebalance",
    );

    eprintln!("--- sluice cluster decommission 3, then stop it");
    let sent = producer.sent();
    let out = sluice(&[
        "cluster",
        "decommission",
        "3",
        "-b",
        &bootstrap,
        "--timeout",
        "180",
    ]);
    assert!(out.contains("Broker 3 holds no replica now"), "{out}");
    assert!(
        producer.sent() > sent,
        "the producer made progress during the move"
    );
    for topic in [TOPIC, BALLAST, "__consumer_offsets"] {
        let (replicas, leaders) = shares(cluster.node(1), topic);
        assert_eq!(replicas.get(&3), None, "{topic}: {replicas:?}");
        assert_eq!(leaders.get(&3), None, "{topic}: {leaders:?}");
    }
    let (replicas, _) = shares(cluster.node(1), TOPIC);
    assert_eq!(replicas, BTreeMap::from([(1, 12), (2, 12), (4, 12)]));
    let status = cluster.node(3).stop();
    assert!(status.success(), "node 3 exited with {status}");
    let mark = producer.sent();
    LOAD.all_read_past(
        &kids,
        &producer,
        mark,
        "every child to read records produced after the decommission",
    );

    let f = LOAD.finish(&mut cluster, producer, kids, 1);
    eprintln!(
        "{} records read twice while the group ran, {} in all; {} rebalance callbacks in all",
        f.duplicates_while_running, f.duplicates, f.rebalances
    );
    every_replica_holds(&mut cluster, 1, TOPIC, &f.acked);
    every_replica_holds(&mut cluster, 1, BALLAST, &ballast);
}

/// `topic`-0's size on node `b` (DescribeLogDirs), `None` if it holds no copy.
fn size_on(b: &Broker, topic: &str) -> Option<i64> {
    let resp = RawConn::connect(b).call(3, &DescribeLogDirsRequest::default().with_topics(None));
    resp.results
        .iter()
        .flat_map(|d| &d.topics)
        .filter(|t| t.name.as_str() == topic)
        .flat_map(|t| &t.partitions)
        .find(|p| p.partition_index == 0)
        .map(|p| p.partition_size)
}

#[test]
fn a_cancelled_move_leaves_the_partition_as_it_was() {
    let topic = "slow";
    let mut cluster = TestCluster::start_with(4, &[]);
    let leader = common::cluster::create_assigned(&mut cluster, topic, &[1, 2, 3], &[]);
    assert_eq!(leader, 1);
    // 2 MiB of acknowledged records.
    let producer = common::cluster::acks_all_producer(&cluster.bootstrap());
    let payload = "x".repeat(1000);
    let recs: Vec<Rec> = (0..2048)
        .map(|i| Rec::kv("", &format!("{i:05}-{payload}")))
        .collect();
    let at = block_on(produce(&producer, topic, Some(0), &recs));
    let acked: Vec<(i64, String)> = at
        .iter()
        .zip(&recs)
        .map(|((_, o), r)| (*o, String::from_utf8(r.value.clone().unwrap()).unwrap()))
        .collect();
    let total = size_on(cluster.node(1), topic).expect("the leader's copy");

    eprintln!("--- move {topic}-0 to [4, 2, 3] at 16 KiB/s, then cancel it half-way");
    let bootstrap = cluster.bootstrap_of(&[1]);
    sluice(&[
        "topic",
        "reassign",
        topic,
        "--partition",
        "0",
        "--replicas",
        "4,2,3",
        "--throttle",
        "16384",
        "--no-wait",
        "-b",
        &bootstrap,
    ]);
    let ongoing = RawConn::connect(cluster.node(2)).call(
        0,
        &ListPartitionReassignmentsRequest::default().with_topics(None),
    );
    let p = &ongoing.topics[0].partitions[0];
    let ids = |v: &[kafka_protocol::messages::BrokerId]| v.iter().map(|b| b.0).collect::<Vec<_>>();
    assert_eq!(
        (
            ids(&p.replicas),
            ids(&p.adding_replicas),
            ids(&p.removing_replicas)
        ),
        (vec![4, 2, 3, 1], vec![4], vec![1]),
        "ListPartitionReassignments"
    );
    let described = sluice(&["topic", "describe", topic, "-b", &bootstrap]);
    assert!(
        described.contains("MOVING") && described.contains("+4 -1"),
        "topic describe shows the move: {described}"
    );
    // The throttle lets the first answer through, then holds the rest back.
    let copied = wait_for(
        "broker 4 to hold part of the partition",
        WAIT,
        Duration::from_millis(100),
        || size_on(cluster.node(4), topic).filter(|n| *n > 0),
    );
    std::thread::sleep(Duration::from_secs(2));
    let held = size_on(cluster.node(4), topic).unwrap_or(0);
    assert!(
        held < total,
        "the throttled copy is not complete: {held} of {total} bytes after 2 s (first {copied})"
    );
    let out = sluice(&[
        "topic",
        "reassign",
        topic,
        "--partition",
        "0",
        "--cancel",
        "-b",
        &bootstrap,
    ]);
    assert!(out.contains("Cancelled"), "{out}");
    let (l, mut replicas, mut isr) = partitions(cluster.node(1), topic)[&0].clone();
    replicas.sort();
    isr.sort();
    assert_eq!(
        (l, replicas, isr),
        (1, vec![1, 2, 3], vec![1, 2, 3]),
        "the original replicas, all in sync, the same leader"
    );
    wait_for(
        "broker 4 to drop its partial copy",
        WAIT,
        Duration::from_millis(200),
        || size_on(cluster.node(4), topic).is_none().then_some(()),
    );
    let none = RawConn::connect(cluster.node(3)).call(
        0,
        &ListPartitionReassignmentsRequest::default().with_topics(None),
    );
    assert!(none.topics.is_empty(), "nothing under way: {none:?}");
    let described = sluice(&["topic", "describe", topic, "-b", &bootstrap]);
    assert!(!described.contains("MOVING"), "no move left: {described}");
    for r in [1, 2, 3] {
        let addr = cluster.node(r).addr();
        assert_eq!(
            replica_records_of(addr, topic, 0).as_ref(),
            Some(&acked),
            "node {r} holds every acknowledged record"
        );
    }
    // The cancel removed the throttle: a move now completes.
    let out = sluice(&[
        "topic",
        "reassign",
        topic,
        "--partition",
        "0",
        "--replicas",
        "4,2,3",
        "--timeout",
        "120",
        "-b",
        &bootstrap,
    ]);
    assert!(out.contains("Done:"), "{out}");
    let (l, replicas, _) = partitions(cluster.node(1), topic)[&0].clone();
    assert_eq!((l, replicas), (4, vec![4, 2, 3]));
    assert_eq!(
        replica_records_of(cluster.node(4).addr(), topic, 0).as_ref(),
        Some(&acked)
    );
}
