//! Consumer groups through the loss of their coordinator (issue 14), black-box: three real
//! `sluice` processes, three consumer processes in one group (`common::children`) on a
//! six-partition RF=3 topic, and a steady idempotent `acks=all` producer.
//!
//! - kill -9 of the broker that coordinates the group: another broker loads the group's offsets
//!   partition and coordinates it; the members keep their assignment (the group's state was
//!   stored when its generation completed) and keep consuming; nothing is skipped, committed
//!   offsets never go backwards and end at the high watermarks;
//! - the same through a rolling restart (SIGTERM, restart, one node at a time) of all three.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::children::{self, covering, ChildProc, ChildView, CHILD_COMMIT_EVERY};
use common::cluster::TestCluster;
use common::*;
use rdkafka::admin::{NewTopic, TopicReplication};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset};

/// A child consumer process's body when this binary runs as one (see `common::children`).
#[test]
fn child_consumer() {
    children::child_main();
}

const TOPIC: &str = "work";
const GROUP: &str = "workers";
const PARTS: i32 = 6;
/// Groups form at once and the children's short sessions are allowed.
const GROUP_SETTINGS: &[&str] = &[
    "group.initial.rebalance.delay.ms=0",
    "group.min.session.timeout.ms=1000",
];
/// The members' session timeout. librdkafka gives a membership up when no heartbeat succeeds
/// for this long, so it must outlast the failover: fencing the dead broker
/// (`broker.session.timeout.ms`, 3 s here), electing new leaders and loading the group. Kafka's
/// default is 45 s.
const SESSION_MS: u64 = 15_000;
/// Bound on every wait: three brokers, three consumers and a producer share two cores.
const WAIT: Duration = Duration::from_secs(90);

/// An idempotent `acks=all` producer on its own thread: `s{seq}` to partition `seq % PARTS`,
/// one at a time, until stopped. Returns what was acknowledged: value -> (partition, offset).
struct SteadyProducer {
    stop: Arc<AtomicBool>,
    sent: Arc<std::sync::atomic::AtomicU64>,
    thread: Option<JoinHandle<BTreeMap<String, (i32, i64)>>>,
}

impl SteadyProducer {
    fn start(bootstrap: &str) -> SteadyProducer {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("broker.address.family", "v4")
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "0")
            // Longer than any failover here: a send waits it out instead of failing.
            .set("message.timeout.ms", "60000")
            .set("topic.metadata.refresh.interval.ms", "1000")
            .create()
            .expect("producer");
        let (stopping, counting) = (stop.clone(), sent.clone());
        let thread = std::thread::spawn(move || {
            let mut acked = BTreeMap::new();
            let mut seq: u64 = 0;
            while !stopping.load(Ordering::Relaxed) {
                let value = format!("s{seq}");
                let partition = (seq % PARTS as u64) as i32;
                let r = block_on(
                    producer.send(
                        FutureRecord::<(), _>::to(TOPIC)
                            .partition(partition)
                            .payload(&value),
                        Duration::from_secs(0),
                    ),
                );
                match r {
                    Ok(d) => {
                        acked.insert(value, (d.partition, d.offset));
                    }
                    Err((e, _)) => panic!("{value} was not acknowledged: {e}"),
                }
                seq += 1;
                counting.store(seq, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(5));
            }
            acked
        });
        SteadyProducer {
            stop,
            sent,
            thread: Some(thread),
        }
    }

    /// How many records were acknowledged so far.
    fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    fn finish(mut self) -> BTreeMap<String, (i32, i64)> {
        self.stop.store(true, Ordering::Relaxed);
        let t = self.thread.take().expect("running");
        t.join().expect("the producer thread panicked")
    }
}

impl Drop for SteadyProducer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn create_topic(bootstrap: &str) {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap)
        .set("broker.address.family", "v4");
    let admin: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> =
        c.create().expect("admin");
    let r = block_on(admin.create_topics(
        &[NewTopic::new(TOPIC, PARTS, TopicReplication::Fixed(3))],
        &admin_opts(),
    ))
    .expect("create topic");
    assert!(r.iter().all(|r| r.is_ok()), "{r:?}");
}

/// The high watermark of every partition, as a live node says.
fn high_watermarks(bootstrap: &str) -> BTreeMap<i32, i64> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("broker.address.family", "v4")
        .set("group.id", "hw-reader")
        .create()
        .expect("consumer");
    (0..PARTS)
        .map(|p| {
            let (_, high) = wait_for(
                &format!("the high watermark of partition {p}"),
                WAIT,
                Duration::from_millis(200),
                || c.fetch_watermarks(TOPIC, p, Duration::from_secs(5)).ok(),
            );
            (p, high)
        })
        .collect()
}

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

/// The group, running: three children holding disjoint shares of the six partitions, each
/// having committed what it read of them.
fn running_group(cluster: &TestCluster, dir: &std::path::Path) -> Vec<ChildProc> {
    let kids: Vec<ChildProc> = (0..3)
        .map(|i| {
            let name = format!("child{i}");
            ChildProc::spawn_with(&name, &cluster.bootstrap(), GROUP, TOPIC, dir, SESSION_MS)
        })
        .collect();
    let shares = wait_for(
        "three children with disjoint assignments covering the partitions",
        WAIT,
        Duration::from_millis(100),
        || covering(&kids.iter().map(|k| k.view()).collect::<Vec<_>>(), PARTS),
    );
    eprintln!("assignments: {shares:?}");
    wait_for(
        "every child to commit on each of its partitions",
        WAIT,
        Duration::from_millis(100),
        || {
            kids.iter()
                .all(|k| {
                    let v = k.view();
                    v.assigned.iter().all(|p| v.committed.contains_key(p))
                })
                .then_some(())
        },
    );
    kids
}

/// Waits until every child has read a record produced after `mark` (values `s{seq}`), saying
/// when the producer and each child got going again.
fn all_read_past(kids: &[ChildProc], producer: &SteadyProducer, mark: u64, what: &str) {
    let from = Instant::now();
    let mut produced_at = None;
    let mut read_at: Vec<Option<Duration>> = vec![None; kids.len()];
    wait_for(what, WAIT, Duration::from_millis(50), || {
        if produced_at.is_none() && producer.sent() > mark + PARTS as u64 {
            produced_at = Some(from.elapsed());
        }
        for (k, at) in kids.iter().zip(&mut read_at) {
            let past = k.view().recs.iter().any(|(_, _, v)| {
                v.strip_prefix('s')
                    .and_then(|s| s.parse::<u64>().ok())
                    .is_some_and(|s| s > mark)
            });
            if past && at.is_none() {
                *at = Some(from.elapsed());
            }
        }
        read_at.iter().all(Option::is_some).then_some(())
    });
    eprintln!(
        "a write to every partition acknowledged after {produced_at:?}; each child reading new \
         records after {read_at:?}"
    );
}

/// What [`finish`] counted.
struct Finished {
    /// Records read more than once by the time every acknowledged record was read, before the
    /// children stopped (each leaving triggers a rebalance of its own).
    duplicates_while_running: usize,
    duplicates: usize,
    rebalances: usize,
}

/// The end of a run: the producer stops, every acknowledged record is read, the children stop
/// (final commit); then nothing was skipped, every read matches its acknowledgement, no commit
/// went backwards, and the group's committed offsets are the high watermarks.
fn finish(
    cluster: &mut TestCluster,
    producer: SteadyProducer,
    mut kids: Vec<ChildProc>,
    via: i32,
) -> Finished {
    let acked = producer.finish();
    eprintln!("{} records acknowledged", acked.len());
    wait_for(
        "every acknowledged record to be read by some child",
        WAIT,
        Duration::from_millis(200),
        || {
            let seen: BTreeSet<String> = kids
                .iter()
                .flat_map(|k| k.view().recs)
                .map(|r| r.2)
                .collect();
            acked.keys().all(|v| seen.contains(v)).then_some(())
        },
    );
    let read_while_running: usize = kids.iter().map(|k| k.view().recs.len()).sum();
    let duplicates_while_running = read_while_running.saturating_sub(acked.len());
    for k in &mut kids {
        let status = k.stop();
        assert!(status.success(), "{} exited with {status}", k.name);
        assert!(k.view().stopped, "{} did not log its final commit", k.name);
    }
    let views: Vec<ChildView> = kids.iter().map(|k| k.view()).collect();
    let reads: Vec<(i32, i64, String)> = views.iter().flat_map(|v| v.recs.clone()).collect();
    for (p, o, v) in &reads {
        assert_eq!(
            acked.get(v),
            Some(&(*p, *o)),
            "read {v:?} at {p}/{o}, which is not where it was acknowledged"
        );
    }
    let hw = high_watermarks(&cluster.bootstrap_of(&[via]));
    for (p, end) in &hw {
        let read: BTreeSet<i64> = reads.iter().filter(|r| r.0 == *p).map(|r| r.1).collect();
        let skipped: Vec<i64> = (0..*end).filter(|o| !read.contains(o)).collect();
        assert!(
            skipped.is_empty(),
            "partition {p}: offsets below the high watermark {end} nobody read: {skipped:?}"
        );
    }
    for (k, v) in kids.iter().zip(&views) {
        assert!(
            v.commits_backwards.is_empty(),
            "{}: committed offsets went backwards: {:?}",
            k.name,
            v.commits_backwards
        );
    }
    let got = committed(cluster.node(via), GROUP, TOPIC, PARTS);
    let want: BTreeMap<i32, Offset> = hw.iter().map(|(p, h)| (*p, Offset::Offset(*h))).collect();
    assert_eq!(got, want, "committed offsets vs high watermarks");
    let duplicates = reads.len() - acked.len();
    let rebalances: usize = views.iter().map(|v| v.rebalances).sum();
    // Beyond each child's first assignment, a rebalance hands a partition over at its last
    // commit: what was read after it is read again, at most a commit interval per partition.
    let window = rebalances.saturating_sub(kids.len()) * PARTS as usize * CHILD_COMMIT_EVERY;
    assert!(
        duplicates <= window,
        "{duplicates} records read twice, more than {rebalances} rebalances explain"
    );
    Finished {
        duplicates_while_running,
        duplicates,
        rebalances,
    }
}

#[test]
fn a_group_keeps_consuming_when_its_coordinator_is_killed() {
    let mut cluster = TestCluster::start_with(3, GROUP_SETTINGS);
    create_topic(&cluster.bootstrap());
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
    let producer = SteadyProducer::start(&cluster.bootstrap());
    let dir = tempfile::Builder::new()
        .prefix("sluice-it-coordinator")
        .tempdir()
        .expect("children dir");
    let kids = running_group(&cluster, dir.path());
    let before: Vec<(BTreeSet<i32>, usize)> = kids
        .iter()
        .map(|k| {
            let v = k.view();
            (v.assigned, v.rebalances)
        })
        .collect();

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
    all_read_past(
        &kids,
        &producer,
        mark,
        "every child to read records produced after the kill",
    );
    // The group's state was stored with its generation: the members kept their partitions,
    // with no rebalance.
    for (k, (assigned, rebalances)) in kids.iter().zip(&before) {
        let v = k.view();
        assert_eq!(
            (&v.assigned, v.rebalances),
            (assigned, *rebalances),
            "{} was rebalanced by the coordinator failover: {:?}",
            k.name,
            v.tail
        );
    }

    eprintln!("--- node {old} returns; the run ends");
    cluster.node(old).restart();
    let f = finish(&mut cluster, producer, kids, survivor);
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
    create_topic(&cluster.bootstrap());
    coordinator(&mut cluster, 1);
    let producer = SteadyProducer::start(&cluster.bootstrap());
    let dir = tempfile::Builder::new()
        .prefix("sluice-it-rolling")
        .tempdir()
        .expect("children dir");
    let kids = running_group(&cluster, dir.path());
    for id in 1..=3 {
        let other = if id == 1 { 2 } else { 1 };
        let coordinating = coordinator(&mut cluster, other);
        eprintln!("--- SIGTERM node {id} (node {coordinating} coordinates the group)");
        let mark = producer.sent();
        let status = cluster.node(id).stop();
        assert!(status.success(), "node {id} exited with {status}");
        let new = coordinator(&mut cluster, other);
        assert_ne!(new, id, "a stopped broker cannot coordinate");
        all_read_past(
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
    let f = finish(&mut cluster, producer, kids, 1);
    eprintln!(
        "{} records read twice while the group ran, {} in all; {} rebalance callbacks in all",
        f.duplicates_while_running, f.duplicates, f.rebalances
    );
}

#[test]
fn a_commit_is_acknowledged_only_once_the_isr_has_it() {
    let mut cluster = TestCluster::start_with(3, GROUP_SETTINGS);
    create_topic(&cluster.bootstrap());
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
