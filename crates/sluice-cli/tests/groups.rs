//! Consumer groups, black-box: real librdkafka consumers (some of them separate OS processes, so
//! one can be SIGKILLed) and raw kafka-protocol requests against the real `sluice` binary.
//!
//! What is proven here:
//! - three consumer processes split six partitions; after one is SIGKILLed the survivors take
//!   over its partitions within about a session timeout, nothing produced is lost (at-least-once),
//!   and the committed offsets end at the high watermarks;
//! - committed offsets survive a graceful restart and a kill -9, and a new member resumes exactly
//!   at them;
//! - a static member (KIP-345) that restarts with the same `group.instance.id` gets its partitions
//!   back without a rebalance;
//! - ListGroups / DescribeGroups / OffsetFetch (several groups) / DeleteGroups / OffsetDelete give
//!   the admin view Kafka gives;
//! - the group APIs answer Kafka's error codes for bad session timeouts, unknown members, missing
//!   member ids and stale generations.
//!
//! Child consumer processes (`common::children`): the test binary re-runs itself as one.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use common::children::{
    self, covering, fmt_parts, partition_list, ChildProc, CHILD_COMMIT_EVERY, CHILD_SESSION_MS,
};
use common::*;
use kafka_protocol::messages::consumer_protocol_subscription::ConsumerProtocolSubscription;
use kafka_protocol::messages::describe_groups_response::DescribedGroup;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_delete_request::{
    OffsetDeleteRequestPartition, OffsetDeleteRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::{
    OffsetFetchRequestGroup, OffsetFetchRequestTopics,
};
use kafka_protocol::messages::offset_fetch_response::OffsetFetchResponseGroup;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    DeleteGroupsRequest, DescribeGroupsRequest, FindCoordinatorRequest, GroupId, HeartbeatRequest,
    JoinGroupRequest, LeaveGroupRequest, ListGroupsRequest, OffsetCommitRequest,
    OffsetDeleteRequest, OffsetFetchRequest, SyncGroupRequest, TopicName,
};
use kafka_protocol::protocol::Encodable;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// Groups form at once and consumers may use short session timeouts, so the test runs in seconds.
const FAST_GROUPS: &[&str] = &[
    "group.initial.rebalance.delay.ms=0",
    "group.min.session.timeout.ms=1000",
];

// Kafka error codes used below.
const NONE: i16 = 0;
const ILLEGAL_GENERATION: i16 = 22;
const UNKNOWN_MEMBER_ID: i16 = 25;
const INVALID_SESSION_TIMEOUT: i16 = 26;
const NON_EMPTY_GROUP: i16 = 68;
const GROUP_ID_NOT_FOUND: i16 = 69;
const MEMBER_ID_REQUIRED: i16 = 79;
const FENCED_INSTANCE_ID: i16 = 82;
const GROUP_SUBSCRIBED_TO_TOPIC: i16 = 86;

// ----------------------------------------------------------------------------------------------
// Helpers: rdkafka group consumers
// ----------------------------------------------------------------------------------------------

/// Config of a subscribing consumer in `group`: manual commits, short session and poll
/// intervals (the poll interval is also the rebalance timeout librdkafka sends in JoinGroup).
fn group_config(broker: &Broker, group: &str) -> ClientConfig {
    let mut c = client_config(broker);
    c.set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "500")
        .set("max.poll.interval.ms", "10000")
        .set("fetch.wait.max.ms", "100");
    c
}

/// Remembers every rebalance callback and the resulting assignment, for in-process consumers.
#[derive(Default)]
struct RebalanceLog {
    /// `assign 0,1` / `revoke 0,1` / `error ...`, in callback order.
    events: Mutex<Vec<String>>,
    /// The assignment after the last callback.
    assigned: Mutex<BTreeSet<i32>>,
}

impl RebalanceLog {
    fn events(&self) -> Vec<String> {
        self.events.lock().unwrap().clone()
    }
    fn assigned(&self) -> BTreeSet<i32> {
        self.assigned.lock().unwrap().clone()
    }
}

impl ClientContext for RebalanceLog {}

impl ConsumerContext for RebalanceLog {
    fn post_rebalance(&self, _c: &BaseConsumer<Self>, r: &Rebalance<'_>) {
        let mut assigned = self.assigned.lock().unwrap();
        let event = match r {
            Rebalance::Assign(tpl) => {
                let parts = partition_list(tpl);
                assigned.extend(parts.iter().copied());
                format!("assign {}", fmt_parts(&parts))
            }
            Rebalance::Revoke(tpl) => {
                let parts = partition_list(tpl);
                assigned.retain(|p| !parts.contains(p));
                format!("revoke {}", fmt_parts(&parts))
            }
            Rebalance::Error(e) => format!("error {e}"),
        };
        self.events.lock().unwrap().push(event);
    }
}

type LoggedConsumer = BaseConsumer<RebalanceLog>;

fn logged_consumer(config: &ClientConfig) -> LoggedConsumer {
    config
        .create_with_context(RebalanceLog::default())
        .expect("create group consumer")
}

/// Polls every consumer once (short timeout), failing on consumer errors; returns the records.
fn poll_all(consumers: &[&LoggedConsumer]) -> Vec<Got> {
    let mut got = Vec::new();
    for c in consumers {
        match c.poll(Duration::from_millis(50)) {
            None | Some(Err(KafkaError::PartitionEOF(_))) => {}
            Some(Ok(m)) => got.push(to_got(&m)),
            Some(Err(e)) => panic!("consumer error: {e}"),
        }
    }
    got
}

fn high_watermarks(broker: &Broker, topic: &str, partitions: i32) -> BTreeMap<i32, i64> {
    let c = consumer(broker, &[]);
    (0..partitions)
        .map(|p| {
            let (_, high) = c
                .fetch_watermarks(topic, p, CLIENT_TIMEOUT)
                .expect("fetch watermarks");
            (p, high)
        })
        .collect()
}

/// Produces `per_partition` records to every partition, values `p{partition}-{seq}`, and returns
/// value -> (partition, offset) from the delivery reports.
fn produce_values(
    broker: &Broker,
    topic: &str,
    partitions: i32,
    seqs: std::ops::Range<usize>,
) -> BTreeMap<String, (i32, i64)> {
    let p = producer(broker, &[("acks", "all")]);
    let mut out = BTreeMap::new();
    for part in 0..partitions {
        let values: Vec<String> = seqs.clone().map(|s| format!("p{part}-{s}")).collect();
        let recs: Vec<Rec> = values.iter().map(|v| Rec::kv(v, v)).collect();
        let offs = block_on(produce(&p, topic, Some(part), &recs));
        for (v, (dp, off)) in values.into_iter().zip(offs) {
            assert_eq!(dp, part, "delivery partition of {v}");
            out.insert(v, (dp, off));
        }
    }
    out
}

// ----------------------------------------------------------------------------------------------
// Helpers: raw group requests
// ----------------------------------------------------------------------------------------------

fn gid(s: &str) -> GroupId {
    GroupId(kstr(s))
}

fn tname(s: &str) -> TopicName {
    TopicName(kstr(s))
}

/// A consumer-protocol subscription as JoinGroup metadata: i16 version, then the v0 body.
fn subscription_metadata(topic: &str) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(0);
    ConsumerProtocolSubscription::default()
        .with_topics(vec![kstr(topic)])
        .encode(&mut b, 0)
        .expect("encode subscription");
    b.freeze()
}

fn join_request(group: &str, member_id: &str, session_ms: i32, topic: &str) -> JoinGroupRequest {
    JoinGroupRequest::default()
        .with_group_id(gid(group))
        .with_session_timeout_ms(session_ms)
        .with_rebalance_timeout_ms(5000)
        .with_member_id(kstr(member_id))
        .with_protocol_type(kstr("consumer"))
        .with_protocols(vec![JoinGroupRequestProtocol::default()
            .with_name(kstr("range"))
            .with_metadata(subscription_metadata(topic))])
}

fn describe(conn: &mut RawConn, group: &str) -> DescribedGroup {
    let resp = conn.call(
        5,
        &DescribeGroupsRequest::default().with_groups(vec![gid(group)]),
    );
    assert_eq!(resp.groups.len(), 1, "DescribeGroups v5 answers one group");
    let g = resp.groups.into_iter().next().unwrap();
    assert_eq!(g.group_id.0.as_str(), group, "DescribeGroups group id");
    g
}

fn list_groups(conn: &mut RawConn, states: &[&str]) -> Vec<ListedGroup> {
    let resp = conn.call(
        4,
        &ListGroupsRequest::default().with_states_filter(states.iter().map(|s| kstr(s)).collect()),
    );
    assert_eq!(resp.error_code, NONE, "ListGroups v4 error code");
    resp.groups
}

fn listed<'a>(groups: &'a [ListedGroup], group: &str) -> Option<&'a ListedGroup> {
    groups.iter().find(|g| g.group_id.0.as_str() == group)
}

fn heartbeat(
    conn: &mut RawConn,
    group: &str,
    generation: i32,
    member_id: &str,
    instance: Option<&str>,
) -> i16 {
    conn.call(
        4,
        &HeartbeatRequest::default()
            .with_group_id(gid(group))
            .with_generation_id(generation)
            .with_member_id(kstr(member_id))
            .with_group_instance_id(instance.map(kstr)),
    )
    .error_code
}

/// OffsetCommit v8 of `offsets` for `topic`; returns the per-partition error codes.
fn offset_commit(
    conn: &mut RawConn,
    group: &str,
    generation: i32,
    member_id: &str,
    topic: &str,
    offsets: &[(i32, i64)],
) -> BTreeMap<i32, i16> {
    let req = OffsetCommitRequest::default()
        .with_group_id(gid(group))
        .with_generation_id_or_member_epoch(generation)
        .with_member_id(kstr(member_id))
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(tname(topic))
            .with_partitions(
                offsets
                    .iter()
                    .map(|&(p, o)| {
                        OffsetCommitRequestPartition::default()
                            .with_partition_index(p)
                            .with_committed_offset(o)
                            .with_committed_leader_epoch(-1)
                            .with_committed_metadata(Some(kstr("")))
                    })
                    .collect(),
            )]);
    let resp = conn.call(8, &req);
    assert_eq!(resp.topics.len(), 1, "OffsetCommit v8 topics");
    assert_eq!(resp.topics[0].name.0.as_str(), topic);
    resp.topics[0]
        .partitions
        .iter()
        .map(|p| (p.partition_index, p.error_code))
        .collect()
}

/// A group and, optionally, the one topic's partitions to ask for.
type GroupQuery<'a> = (&'a str, Option<(&'a str, Vec<i32>)>);

/// OffsetFetch v8 for several groups at once; `None` topics means "all the group has".
fn offset_fetch_groups(
    conn: &mut RawConn,
    groups: &[GroupQuery<'_>],
) -> Vec<OffsetFetchResponseGroup> {
    let req = OffsetFetchRequest::default().with_groups(
        groups
            .iter()
            .map(|(g, topics)| {
                OffsetFetchRequestGroup::default()
                    .with_group_id(gid(g))
                    .with_topics(topics.as_ref().map(|(t, parts)| {
                        vec![OffsetFetchRequestTopics::default()
                            .with_name(tname(t))
                            .with_partition_indexes(parts.clone())]
                    }))
            })
            .collect(),
    );
    let resp = conn.call(8, &req);
    assert_eq!(resp.error_code, NONE, "OffsetFetch v8 top-level error");
    assert_eq!(
        resp.groups.len(),
        groups.len(),
        "OffsetFetch v8 answers every group asked: {:?}",
        resp.groups
    );
    for (asked, got) in groups.iter().zip(&resp.groups) {
        assert_eq!(
            got.group_id.0.as_str(),
            asked.0,
            "OffsetFetch v8 group order"
        );
    }
    resp.groups
}

/// `(topic, partition) -> (committed offset, error)` of one OffsetFetch v8 group result.
fn fetched(g: &OffsetFetchResponseGroup) -> BTreeMap<(String, i32), (i64, i16)> {
    let mut out = BTreeMap::new();
    for t in &g.topics {
        for p in &t.partitions {
            out.insert(
                (t.name.0.to_string(), p.partition_index),
                (p.committed_offset, p.error_code),
            );
        }
    }
    out
}

fn delete_groups(conn: &mut RawConn, groups: &[&str]) -> BTreeMap<String, i16> {
    let resp = conn.call(
        2,
        &DeleteGroupsRequest::default().with_groups_names(groups.iter().map(|g| gid(g)).collect()),
    );
    resp.results
        .iter()
        .map(|r| (r.group_id.0.to_string(), r.error_code))
        .collect()
}

/// A child consumer process's body when this binary runs as one (see `common::children`).
#[test]
fn child_consumer() {
    children::child_main();
}

// ----------------------------------------------------------------------------------------------
// Tests
// ----------------------------------------------------------------------------------------------

#[test]
fn three_consumer_processes_share_six_partitions_and_survive_a_sigkill() {
    const PARTS: i32 = 6;
    let broker = Broker::start_with(FAST_GROUPS);
    let (topic, group) = ("orders", "order-workers");
    create_topic_sync(&broker, topic, PARTS);
    let mut produced = produce_values(&broker, topic, PARTS, 0..1000);

    let dir = tempfile::Builder::new()
        .prefix("sluice-it-children")
        .tempdir()
        .expect("children dir");
    let mut kids: Vec<ChildProc> = (0..3)
        .map(|i| {
            ChildProc::spawn(
                &format!("child{i}"),
                &broker.bootstrap(),
                group,
                topic,
                dir.path(),
            )
        })
        .collect();

    eprintln!("--- three processes share the six partitions");
    let shares = wait_for(
        "three children with disjoint assignments covering 6 partitions",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || covering(&kids.iter().map(|k| k.view()).collect::<Vec<_>>(), PARTS),
    );
    eprintln!("assignments: {shares:?}");

    let all_seen = |kids: &[ChildProc], want: &BTreeMap<String, (i32, i64)>| {
        let mut all: Vec<(i32, i64, String)> = Vec::new();
        for k in kids {
            all.extend(k.view().recs);
        }
        let seen: BTreeSet<&str> = all.iter().map(|r| r.2.as_str()).collect();
        want.keys()
            .all(|v| seen.contains(v.as_str()))
            .then_some(all)
    };
    wait_for(
        "the first 6000 records to be consumed",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || all_seen(&kids, &produced),
    );
    wait_for(
        "every child to commit the end of the first batch",
        CLIENT_TIMEOUT,
        Duration::from_millis(50),
        || {
            kids.iter()
                .all(|k| {
                    let v = k.view();
                    v.assigned.iter().all(|p| v.committed.get(p) == Some(&1000))
                })
                .then_some(())
        },
    );

    eprintln!("--- produce while they run; SIGKILL child0 in the middle of its share");
    produced.extend(produce_values(&broker, topic, PARTS, 1000..2000));
    let victim_parts = kids[0].view().assigned;
    wait_for(
        "child0 to be partway through the second batch",
        Duration::from_secs(20),
        Duration::from_millis(5),
        || {
            let v = kids[0].view();
            let n = v.recs.iter().filter(|r| r.1 >= 1000).count();
            (n >= CHILD_COMMIT_EVERY * 3 / 2).then_some(())
        },
    );
    eprintln!(
        "killing child0 (pid {}) holding {victim_parts:?}",
        kids[0].pid()
    );
    kids[0].kill9();
    let killed_at = Instant::now();
    // Survivors cannot own child0's partitions before its session expires, so whatever they read
    // of them after these marks was read as the new owners.
    let marks: Vec<usize> = kids[1..].iter().map(|k| k.view().recs.len()).collect();
    let victim = kids[0].view();
    let victim_last = &victim.recs;
    let victim_read_up_to: BTreeMap<i32, i64> = victim_parts
        .iter()
        .map(|p| {
            let last = victim_last.iter().filter(|r| r.0 == *p).map(|r| r.1).max();
            (*p, last.unwrap_or(-1))
        })
        .collect();
    let victim_committed: BTreeMap<i32, i64> = victim_parts
        .iter()
        .map(|p| (*p, victim.committed.get(p).copied().unwrap_or(0)))
        .collect();
    eprintln!(
        "child0 had processed up to {victim_read_up_to:?} and committed {victim_committed:?}"
    );
    produced.extend(produce_values(&broker, topic, PARTS, 2000..2100));

    eprintln!("--- the survivors take over child0's partitions");
    let bound = Duration::from_millis(CHILD_SESSION_MS) + Duration::from_secs(10);
    let shares = wait_for(
        "the two survivors' assignments to cover all 6 partitions",
        bound,
        Duration::from_millis(100),
        || covering(&[kids[1].view(), kids[2].view()], PARTS),
    );
    eprintln!(
        "survivors hold {shares:?} {:?} after the SIGKILL",
        killed_at.elapsed()
    );

    eprintln!("--- every produced record is consumed (at least once)");
    let consumed = wait_for(
        "the union of consumed values to contain every produced value",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || all_seen(&kids, &produced),
    );
    // Every record read is one that was produced, at the partition and offset it was written to.
    for (p, o, v) in &consumed {
        assert_eq!(
            produced.get(v),
            Some(&(*p, *o)),
            "consumed {v:?} at {p}/{o}, which does not match its delivery report"
        );
    }
    // Records written to child0's partitions after the kill can only have been read by others.
    let after_kill: BTreeSet<String> = victim_parts
        .iter()
        .flat_map(|p| (2000..2100).map(move |s| format!("p{p}-{s}")))
        .collect();
    let by_survivors: BTreeSet<String> = kids[1..]
        .iter()
        .flat_map(|k| k.view().recs)
        .map(|r| r.2)
        .collect();
    assert!(
        after_kill.is_subset(&by_survivors),
        "records produced to child0's partitions after its death were not all read by survivors"
    );
    // The new owners resumed from child0's last commit (at least the end of the first batch),
    // not from the beginning, and not past what child0 had processed (no gap). A commit can
    // succeed after child0 logged its last line, hence a range.
    for p in &victim_parts {
        let first = kids[1..]
            .iter()
            .zip(&marks)
            .flat_map(|(k, mark)| k.view().recs.split_off(*mark))
            .filter(|r| r.0 == *p)
            .map(|r| r.1)
            .min()
            .expect("survivors read the partition");
        let committed_at = victim_committed[p];
        assert!(
            committed_at >= 1000,
            "partition {p}: child0's last logged commit {committed_at} misses the first batch"
        );
        assert!(
            (committed_at..=victim_read_up_to[p] + 1).contains(&first),
            "partition {p}: a survivor started at offset {first}; child0 had committed \
             {committed_at} and processed up to {}",
            victim_read_up_to[p]
        );
        eprintln!("partition {p}: child0 committed {committed_at}, a survivor resumed at {first}");
    }
    eprintln!(
        "{} records produced, {} processed ({} duplicates, the price of at-least-once)",
        produced.len(),
        consumed.len(),
        consumed.len() - produced.len()
    );

    eprintln!("--- stop the survivors; committed offsets end at the high watermarks");
    for k in &mut kids[1..] {
        let status = k.stop();
        assert!(status.success(), "{} exited with {status}", k.name);
        let v = k.view();
        assert!(v.stopped, "{} did not log its final commit", k.name);
        if !v.errors.is_empty() {
            eprintln!("{} reported (tolerated) errors: {:?}", k.name, v.errors);
        }
    }
    let hw = high_watermarks(&broker, topic, PARTS);
    let got = committed(&broker, group, topic, PARTS);
    let want: BTreeMap<i32, Offset> = hw.iter().map(|(p, h)| (*p, Offset::Offset(*h))).collect();
    assert_eq!(got, want, "committed offsets vs high watermarks");
}

/// Commits at chosen offsets, restarts the broker (gracefully or with kill -9), and checks that
/// OffsetFetch and a new member both see exactly those offsets.
fn commits_survive_restart(kill9: bool) {
    let mut broker = Broker::start_with(FAST_GROUPS);
    let (topic, group) = ("ledger", "ledger-readers");
    create_topic_sync(&broker, topic, 2);
    produce_values(&broker, topic, 2, 0..200);
    // Different offsets per partition, so a mix-up between partitions shows.
    let commit_at: BTreeMap<i32, i64> = [(0, 100), (1, 150)].into();

    eprintln!("--- a member consumes past {commit_at:?} and commits exactly there");
    let c = logged_consumer(&group_config(&broker, group));
    c.subscribe(&[topic]).expect("subscribe");
    let mut max_seen: BTreeMap<i32, i64> = BTreeMap::new();
    wait_for(
        "the first member to read up to the commit points",
        Duration::from_secs(20),
        Duration::from_millis(1),
        || {
            for g in poll_all(&[&c]) {
                let m = max_seen.entry(g.partition).or_insert(-1);
                *m = (*m).max(g.offset);
            }
            commit_at
                .iter()
                .all(|(p, at)| max_seen.get(p).is_some_and(|m| *m >= at - 1))
                .then_some(())
        },
    );
    let mut tpl = TopicPartitionList::new();
    for (p, at) in &commit_at {
        tpl.add_partition_offset(topic, *p, Offset::Offset(*at))
            .unwrap();
    }
    c.commit(&tpl, CommitMode::Sync)
        .expect("synchronous commit");
    let want: BTreeMap<i32, Offset> = commit_at
        .iter()
        .map(|(p, o)| (*p, Offset::Offset(*o)))
        .collect();
    assert_eq!(committed(&broker, group, topic, 2), want, "before restart");
    drop(c);

    if kill9 {
        eprintln!("--- kill -9 and restart");
        broker.kill9();
    } else {
        eprintln!("--- graceful stop and restart");
        broker.stop();
    }
    broker.restart();
    assert_eq!(committed(&broker, group, topic, 2), want, "after restart");

    eprintln!("--- a new member resumes exactly at the committed offsets");
    let c = logged_consumer(&group_config(&broker, group));
    c.subscribe(&[topic]).expect("subscribe");
    let mut first: BTreeMap<i32, i64> = BTreeMap::new();
    wait_for(
        "the new member's first record on both partitions",
        Duration::from_secs(20),
        Duration::from_millis(1),
        || {
            for g in poll_all(&[&c]) {
                first.entry(g.partition).or_insert(g.offset);
            }
            (first.len() == 2).then_some(())
        },
    );
    assert_eq!(first, commit_at, "first offset read per partition");
    let mine = c
        .committed(CLIENT_TIMEOUT)
        .expect("committed() of the new member");
    let mine: BTreeMap<i32, Offset> = mine
        .elements()
        .iter()
        .map(|e| (e.partition(), e.offset()))
        .collect();
    assert_eq!(mine, want, "committed() of the new member");
    broker.assert_running("at the end");
}

#[test]
fn committed_offsets_survive_a_graceful_restart() {
    commits_survive_restart(false);
}

#[test]
fn committed_offsets_survive_kill9() {
    commits_survive_restart(true);
}

/// The generation of a stable group, found by asking which generation a member's heartbeat
/// accepts (DescribeGroups does not report it).
fn probe_generation(conn: &mut RawConn, group: &str, member: &str, instance: &str) -> i32 {
    for generation in 1..=50 {
        match heartbeat(conn, group, generation, member, Some(instance)) {
            NONE => return generation,
            ILLEGAL_GENERATION => {}
            e => panic!("heartbeat of {instance} at generation {generation}: error {e}"),
        }
    }
    panic!("no generation in 1..=50 accepted a heartbeat of {instance}");
}

fn member_id_of(g: &DescribedGroup, instance: &str) -> String {
    g.members
        .iter()
        .find(|m| m.group_instance_id.as_deref() == Some(instance))
        .unwrap_or_else(|| panic!("no member with instance id {instance} in {:?}", g.members))
        .member_id
        .to_string()
}

#[test]
fn a_restarted_static_member_gets_its_partitions_back_without_a_rebalance() {
    const PARTS: i32 = 4;
    let broker = Broker::start_with(FAST_GROUPS);
    let (topic, group) = ("static-t", "static-g");
    create_topic_sync(&broker, topic, PARTS);
    produce_values(&broker, topic, PARTS, 0..10);
    let static_consumer = |instance: &str| {
        let mut cfg = group_config(&broker, group);
        cfg.set("group.instance.id", instance);
        let c = logged_consumer(&cfg);
        c.subscribe(&[topic]).expect("subscribe");
        c
    };

    eprintln!("--- two static members share the partitions");
    let a = static_consumer("static-a");
    let b = static_consumer("static-b");
    let (a_parts, b_parts) = wait_for(
        "static-a and static-b to split 4 partitions",
        Duration::from_secs(30),
        Duration::from_millis(1),
        || {
            poll_all(&[&a, &b]);
            let (pa, pb) = (a.context().assigned(), b.context().assigned());
            let union: BTreeSet<i32> = pa.union(&pb).copied().collect();
            (!pa.is_empty() && !pb.is_empty() && pa.is_disjoint(&pb) && union.len() == 4)
                .then_some((pa, pb))
        },
    );
    let mut conn = RawConn::connect(&broker);
    let before = describe(&mut conn, group);
    assert_eq!(before.error_code, NONE);
    assert_eq!(before.group_state.as_str(), "Stable", "{before:?}");
    assert_eq!(before.members.len(), 2, "{before:?}");
    let a_old = member_id_of(&before, "static-a");
    let b_id = member_id_of(&before, "static-b");
    let generation = probe_generation(&mut conn, group, &b_id, "static-b");
    let b_events = b.context().events();
    eprintln!("generation {generation}; a {a_parts:?}, b {b_parts:?}; b saw {b_events:?}");

    eprintln!("--- static-a closes (no LeaveGroup) and comes back at once");
    drop(a);
    let still = describe(&mut conn, group);
    assert!(
        still
            .members
            .iter()
            .any(|m| m.group_instance_id.as_deref() == Some("static-a")),
        "a closed static member must stay in the group until its session expires: {still:?}"
    );
    let a2 = static_consumer("static-a");
    let a2_parts = wait_for(
        "the restarted static-a to get an assignment",
        Duration::from_secs(15),
        Duration::from_millis(1),
        || {
            poll_all(&[&a2, &b]);
            let p = a2.context().assigned();
            (!p.is_empty()).then_some(p)
        },
    );
    assert_eq!(a2_parts, a_parts, "static-a gets back its partitions");

    // An observation window, not a synchronisation: several heartbeat intervals in which a
    // rebalance, had one started, would reach static-b.
    let watch_until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < watch_until {
        poll_all(&[&a2, &b]);
    }
    assert_eq!(b.context().events(), b_events, "static-b saw a rebalance");
    assert_eq!(b.context().assigned(), b_parts, "static-b's assignment");
    assert_eq!(
        a2.context().events(),
        vec![format!("assign {}", fmt_parts(&a_parts))],
        "the restarted static-a's rebalance callbacks"
    );
    let after = describe(&mut conn, group);
    assert_eq!(after.group_state.as_str(), "Stable", "{after:?}");
    assert_eq!(after.members.len(), 2, "{after:?}");
    assert_eq!(
        member_id_of(&after, "static-b"),
        b_id,
        "static-b's member id"
    );
    let a_new = member_id_of(&after, "static-a");
    assert_ne!(
        a_new, a_old,
        "a rejoining static member gets a new member id"
    );
    assert_eq!(
        heartbeat(&mut conn, group, generation, &b_id, Some("static-b")),
        NONE,
        "generation {generation} must still be current"
    );
    assert_eq!(
        heartbeat(&mut conn, group, generation + 1, &b_id, Some("static-b")),
        ILLEGAL_GENERATION,
        "generation {} must not exist",
        generation + 1
    );
    assert_eq!(
        heartbeat(&mut conn, group, generation, &a_old, Some("static-a")),
        FENCED_INSTANCE_ID,
        "the replaced member id of static-a is fenced"
    );
}

#[test]
fn list_describe_fetch_and_delete_groups() {
    const PARTS: i32 = 3;
    let broker = Broker::start_with(FAST_GROUPS);
    let topic = "admin-view";
    create_topic_sync(&broker, topic, PARTS);
    produce_values(&broker, topic, PARTS, 0..10);

    eprintln!("--- group view-g consumes everything, commits and leaves");
    let c = logged_consumer(&group_config(&broker, "view-g"));
    c.subscribe(&[topic]).expect("subscribe");
    let mut n = 0;
    wait_for(
        "view-g to read 30 records",
        Duration::from_secs(20),
        Duration::from_millis(1),
        || {
            n += poll_all(&[&c]).len();
            (n >= 30).then_some(())
        },
    );
    c.commit_consumer_state(CommitMode::Sync)
        .expect("commit view-g");
    drop(c);
    // view-h only ever commits (generation -1): a "simple" group with no members.
    let h = consumer(&broker, &[("group.id", "view-h")]);
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 1, Offset::Offset(4))
        .unwrap();
    h.commit(&tpl, CommitMode::Sync).expect("commit view-h");

    let mut conn = RawConn::connect(&broker);
    let fc = conn.call(
        3,
        &FindCoordinatorRequest::default()
            .with_key(kstr("view-g"))
            .with_key_type(0),
    );
    assert_eq!(fc.error_code, NONE, "FindCoordinator v3: {fc:?}");
    assert_eq!(fc.node_id.0, 1, "coordinator node");
    assert_eq!(fc.port, broker.port() as i32, "coordinator port");

    eprintln!("--- ListGroups v4 and DescribeGroups v5 after the members left");
    let all = wait_for(
        "view-g listed as Empty after its member left",
        CLIENT_TIMEOUT,
        Duration::from_millis(100),
        || {
            let all = list_groups(&mut conn, &[]);
            listed(&all, "view-g")
                .is_some_and(|g| g.group_state.as_str() == "Empty")
                .then_some(all)
        },
    );
    let g = listed(&all, "view-g").unwrap();
    assert_eq!(g.protocol_type.as_str(), "consumer", "{g:?}");
    assert!(listed(&all, "view-h").is_some(), "view-h listed: {all:?}");
    let stable = list_groups(&mut conn, &["Stable"]);
    assert!(
        listed(&stable, "view-g").is_none(),
        "state filter: {stable:?}"
    );
    let d = describe(&mut conn, "view-g");
    assert_eq!(d.error_code, NONE, "{d:?}");
    assert_eq!(d.group_state.as_str(), "Empty", "{d:?}");
    assert_eq!(d.protocol_type.as_str(), "consumer", "{d:?}");
    assert!(d.members.is_empty(), "{d:?}");

    eprintln!("--- OffsetFetch v8 for three groups at once");
    let res = offset_fetch_groups(
        &mut conn,
        &[
            ("view-g", None),
            ("view-h", Some((topic, vec![0, 1, 2]))),
            ("never-was", None),
        ],
    );
    for g in &res {
        assert_eq!(g.error_code, NONE, "group error in {g:?}");
    }
    let want_g: BTreeMap<(String, i32), (i64, i16)> = (0..PARTS)
        .map(|p| ((topic.to_string(), p), (10, NONE)))
        .collect();
    assert_eq!(fetched(&res[0]), want_g, "view-g offsets (all topics)");
    let want_h: BTreeMap<(String, i32), (i64, i16)> = [
        ((topic.to_string(), 0), (-1, NONE)),
        ((topic.to_string(), 1), (4, NONE)),
        ((topic.to_string(), 2), (-1, NONE)),
    ]
    .into();
    assert_eq!(
        fetched(&res[1]),
        want_h,
        "view-h offsets (named partitions)"
    );
    assert!(
        fetched(&res[2]).values().all(|(o, _)| *o == -1),
        "an unknown group has no offsets: {:?}",
        res[2]
    );

    eprintln!("--- a group with a live member cannot be deleted, nor its topic's offsets");
    let busy = logged_consumer(&group_config(&broker, "view-busy"));
    busy.subscribe(&[topic]).expect("subscribe");
    wait_for(
        "view-busy to get its assignment",
        Duration::from_secs(20),
        Duration::from_millis(1),
        || {
            poll_all(&[&busy]);
            (busy.context().assigned().len() == PARTS as usize).then_some(())
        },
    );
    let d = describe(&mut conn, "view-busy");
    assert_eq!(d.group_state.as_str(), "Stable", "{d:?}");
    assert_eq!(d.protocol_type.as_str(), "consumer", "{d:?}");
    assert_eq!(d.members.len(), 1, "{d:?}");
    assert!(
        ["range", "roundrobin"].contains(&d.protocol_data.as_str()),
        "assignor name in protocol_data: {d:?}"
    );
    let stable = list_groups(&mut conn, &["Stable"]);
    assert!(listed(&stable, "view-busy").is_some(), "{stable:?}");
    assert_eq!(
        delete_groups(&mut conn, &["view-busy"]),
        [("view-busy".to_string(), NON_EMPTY_GROUP)].into(),
        "DeleteGroups of a group with a member"
    );
    let od = conn.call(
        0,
        &OffsetDeleteRequest::default()
            .with_group_id(gid("view-busy"))
            .with_topics(vec![OffsetDeleteRequestTopic::default()
                .with_name(tname(topic))
                .with_partitions(vec![
                    OffsetDeleteRequestPartition::default().with_partition_index(0)
                ])]),
    );
    assert_eq!(od.error_code, NONE, "OffsetDelete top-level: {od:?}");
    assert_eq!(
        od.topics[0].partitions[0].error_code, GROUP_SUBSCRIBED_TO_TOPIC,
        "OffsetDelete of a subscribed topic: {od:?}"
    );
    poll_all(&[&busy]);

    eprintln!("--- OffsetDelete on an empty group removes one partition's offset");
    let od = conn.call(
        0,
        &OffsetDeleteRequest::default()
            .with_group_id(gid("view-g"))
            .with_topics(vec![OffsetDeleteRequestTopic::default()
                .with_name(tname(topic))
                .with_partitions(vec![
                    OffsetDeleteRequestPartition::default().with_partition_index(0)
                ])]),
    );
    assert_eq!(od.error_code, NONE, "{od:?}");
    assert_eq!(od.topics[0].partitions[0].error_code, NONE, "{od:?}");
    let res = offset_fetch_groups(&mut conn, &[("view-g", Some((topic, vec![0, 1, 2])))]);
    let got = fetched(&res[0]);
    assert_eq!(
        got[&(topic.to_string(), 0)].0,
        -1,
        "deleted offset: {got:?}"
    );
    assert_eq!(got[&(topic.to_string(), 1)].0, 10, "kept offset: {got:?}");

    eprintln!("--- DeleteGroups removes empty groups");
    assert_eq!(
        delete_groups(&mut conn, &["view-g", "view-h"]),
        [("view-g".to_string(), NONE), ("view-h".to_string(), NONE)].into(),
        "DeleteGroups v2 of two empty groups"
    );
    let d = describe(&mut conn, "view-g");
    assert!(
        d.group_state.as_str() == "Dead" || d.error_code == GROUP_ID_NOT_FOUND,
        "a deleted group is Dead / not found: {d:?}"
    );
    assert!(
        d.members.is_empty() && d.protocol_type.is_empty(),
        "a deleted group has no members or protocol: {d:?}"
    );
    let all = list_groups(&mut conn, &[]);
    assert!(listed(&all, "view-g").is_none(), "{all:?}");
    assert!(listed(&all, "view-h").is_none(), "{all:?}");
    assert!(listed(&all, "view-busy").is_some(), "{all:?}");
    let res = offset_fetch_groups(&mut conn, &[("view-g", None), ("view-h", None)]);
    for g in &res {
        assert!(
            fetched(g).values().all(|(o, _)| *o == -1),
            "a deleted group keeps no offsets: {g:?}"
        );
    }
    assert_eq!(
        delete_groups(&mut conn, &["view-g"]),
        [("view-g".to_string(), GROUP_ID_NOT_FOUND)].into(),
        "deleting a deleted group"
    );
    drop(busy);
    broker_still_serves(&broker);
}

fn broker_still_serves(broker: &Broker) {
    block_on(round_trip(broker, "after-groups"));
}

#[test]
fn group_requests_get_kafkas_error_codes() {
    let mut broker = Broker::start_with(FAST_GROUPS);
    let topic = "err-t";
    create_topic_sync(&broker, topic, 1);
    let mut conn = RawConn::connect(&broker);
    let group = "err-g";
    conn.wait_coordinator(group);

    eprintln!("--- JoinGroup v5 with a session timeout below the minimum");
    let r = conn.call(5, &join_request(group, "", 1, topic));
    assert_eq!(r.error_code, INVALID_SESSION_TIMEOUT, "{r:?}");

    eprintln!("--- JoinGroup v5 without a member id: MEMBER_ID_REQUIRED with an id to use");
    let r = conn.call(5, &join_request(group, "", 6000, topic));
    assert_eq!(r.error_code, MEMBER_ID_REQUIRED, "{r:?}");
    let member = r.member_id.to_string();
    assert!(
        !member.is_empty(),
        "MEMBER_ID_REQUIRED must carry a member id: {r:?}"
    );

    eprintln!("--- rejoin with that id, become leader, sync");
    let r = conn.call(5, &join_request(group, &member, 6000, topic));
    assert_eq!(r.error_code, NONE, "{r:?}");
    assert_eq!(r.member_id.as_str(), member, "{r:?}");
    assert_eq!(r.leader.as_str(), member, "the only member leads: {r:?}");
    assert_eq!(r.members.len(), 1, "the leader sees the members: {r:?}");
    assert_eq!(r.protocol_name.as_deref(), Some("range"), "{r:?}");
    let generation = r.generation_id;
    assert!(generation >= 1, "{r:?}");
    let assignment = Bytes::from_static(b"opaque-assignment");
    let s = conn.call(
        3,
        &SyncGroupRequest::default()
            .with_group_id(gid(group))
            .with_generation_id(generation)
            .with_member_id(kstr(&member))
            .with_assignments(vec![SyncGroupRequestAssignment::default()
                .with_member_id(kstr(&member))
                .with_assignment(assignment.clone())]),
    );
    assert_eq!(s.error_code, NONE, "{s:?}");
    assert_eq!(
        s.assignment, assignment,
        "SyncGroup returns the leader's assignment"
    );

    eprintln!("--- Heartbeat: unknown member, stale generation, the real member");
    assert_eq!(
        heartbeat(&mut conn, group, generation, "ghost-member", None),
        UNKNOWN_MEMBER_ID,
        "heartbeat of an unknown member"
    );
    assert_eq!(
        heartbeat(&mut conn, group, generation + 1, &member, None),
        ILLEGAL_GENERATION,
        "heartbeat with a wrong generation"
    );
    assert_eq!(heartbeat(&mut conn, group, generation, &member, None), NONE);

    eprintln!("--- OffsetCommit v8 against the live group");
    assert_eq!(
        offset_commit(&mut conn, group, generation + 4, &member, topic, &[(0, 1)]),
        [(0, ILLEGAL_GENERATION)].into(),
        "commit with a wrong generation"
    );
    assert_eq!(
        offset_commit(
            &mut conn,
            group,
            generation,
            "ghost-member",
            topic,
            &[(0, 1)]
        ),
        [(0, UNKNOWN_MEMBER_ID)].into(),
        "commit from an unknown member"
    );
    assert_eq!(
        offset_commit(&mut conn, group, generation, &member, topic, &[(0, 1)]),
        [(0, NONE)].into(),
        "commit from the member"
    );

    eprintln!("--- LeaveGroup v3; the group is Empty");
    let l = conn.call(
        3,
        &LeaveGroupRequest::default()
            .with_group_id(gid(group))
            .with_members(vec![MemberIdentity::default().with_member_id(kstr(&member))]),
    );
    assert_eq!(l.error_code, NONE, "{l:?}");
    assert_eq!(l.members.len(), 1, "{l:?}");
    assert_eq!(l.members[0].error_code, NONE, "{l:?}");
    let d = describe(&mut conn, group);
    assert_eq!(d.group_state.as_str(), "Empty", "{d:?}");
    assert_eq!(
        heartbeat(&mut conn, group, generation, &member, None),
        UNKNOWN_MEMBER_ID,
        "heartbeat after leaving"
    );

    eprintln!("--- OffsetCommit v8 with generation 5: empty group vs no group");
    assert_eq!(
        offset_commit(&mut conn, group, 5, "ghost-member", topic, &[(0, 2)]),
        [(0, UNKNOWN_MEMBER_ID)].into(),
        "generation 5 on an Empty group (Kafka: the member is unknown)"
    );
    assert_eq!(
        offset_commit(&mut conn, "err-none", 5, "ghost-member", topic, &[(0, 2)]),
        [(0, ILLEGAL_GENERATION)].into(),
        "generation 5 on a group that does not exist (Kafka, OffsetCommit < v9)"
    );
    assert_eq!(
        offset_commit(&mut conn, group, -1, "", topic, &[(0, 3)]),
        [(0, NONE)].into(),
        "a simple commit (generation -1) on an Empty group"
    );
    let res = offset_fetch_groups(&mut conn, &[(group, None), ("err-none", None)]);
    assert_eq!(
        fetched(&res[0]),
        [((topic.to_string(), 0), (3, NONE))].into(),
        "only accepted commits count"
    );
    assert!(
        fetched(&res[1]).values().all(|(o, _)| *o == -1),
        "a refused commit creates nothing: {:?}",
        res[1]
    );
    broker.assert_running("at the end");
}
