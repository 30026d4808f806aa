//! Reading from the closest replica (KIP-392) and replica lag in `sluice topic describe`, on
//! three real processes in racks r1, r2, r3: the leader sends a consumer that names a rack to
//! the in-sync follower there, the follower serves it below its own high watermark, an rdkafka
//! consumer with `client.rack` reads every record from that follower, and `topic describe`
//! shows how far each replica is behind.

mod common;

use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::cluster::*;
use common::*;
use kafka_protocol::messages::fetch_response::PartitionData;
use kafka_protocol::ResponseError;
use rdkafka::admin::{NewTopic, TopicReplication};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::producer::FutureRecord;
use rdkafka::{ClientConfig, ClientContext, Message, Offset, Statistics, TopicPartitionList};

/// A cluster of `racks.len()` nodes, node `i + 1` in `racks[i]` with `per_node[i]` overrides
/// on top of [`FAST_LIVENESS`] and `extra`.
fn start_racked(racks: &[&str], extra: &[&str], per_node: &[&[&str]]) -> TestCluster {
    let ports: Vec<(u16, u16)> = racks.iter().map(|_| (free_port(), free_port())).collect();
    let voters = ports
        .iter()
        .enumerate()
        .map(|(i, (_, c))| format!("{}@127.0.0.1:{c}", i + 1))
        .collect::<Vec<_>>()
        .join(",");
    let mut nodes: Vec<Broker> = ports
        .iter()
        .enumerate()
        .map(|(i, (p, c))| {
            let overrides: Vec<&str> = FAST_LIVENESS
                .iter()
                .chain(extra)
                .chain(per_node.get(i).copied().unwrap_or_default())
                .copied()
                .collect();
            let mut args = node_args(*c, &voters, &overrides);
            args.extend(["--rack".to_string(), racks[i].to_string()]);
            Broker::prepare_node(i as u32 + 1, *p, args)
        })
        .collect();
    for b in &mut nodes {
        b.spawn_process();
    }
    for b in &mut nodes {
        b.wait_accepting();
    }
    TestCluster { nodes, voters }
}

/// A consumer Fetch of `topic`-0 sent to node `b` (see [`common::cluster::consumer_fetch`]).
fn consumer_fetch(b: &Broker, version: i16, topic: &str, offset: i64, rack: &str) -> PartitionData {
    common::cluster::consumer_fetch(&mut RawConn::connect(b), version, topic, offset, rack)
}

/// The offsets of the records in a fetched record set.
fn offsets(p: &PartitionData) -> Vec<i64> {
    let mut bytes = p.records.clone().unwrap_or_default();
    kafka_protocol::records::RecordBatchDecoder::decode_all(&mut bytes)
        .expect("decode fetched records")
        .into_iter()
        .flat_map(|set| set.records)
        .map(|r| r.offset)
        .collect()
}

fn error_of(p: &PartitionData) -> Option<ResponseError> {
    (p.error_code != 0).then(|| ResponseError::try_from_code(p.error_code).expect("known code"))
}

/// Records, from librdkafka's statistics, which broker partition 0 is being fetched from.
struct FetchedFrom(Arc<AtomicI32>);

impl ClientContext for FetchedFrom {
    fn stats(&self, s: Statistics) {
        for t in s.topics.values() {
            if let Some(p) = t.partitions.get(&0) {
                self.0.store(p.broker, Ordering::SeqCst);
            }
        }
    }
}

impl ConsumerContext for FetchedFrom {}

#[test]
fn a_consumer_in_a_followers_rack_reads_from_that_follower() {
    // The ISR must not shrink while a follower is paused below: long lag and session times
    // (a fenced broker leaves every ISR).
    let mut cluster = start_racked(
        &["r1", "r2", "r3"],
        &[
            "replica.lag.time.max.ms=300000",
            "broker.session.timeout.ms=300000",
        ],
        &[],
    );
    let topic = "near";
    let leader = create_assigned(&mut cluster, topic, &[1, 2, 3], &[]);
    let follower = if leader == 3 { 2 } else { 3 };
    let other = 6 - leader - follower;
    let rack = format!("r{follower}");
    tracing_like(&format!(
        "leader {leader}, follower {follower} in {rack}, other {other}"
    ));

    // --- committed records: acks=all, so every replica holds them
    let n = 200i64;
    let producer = acks_all_producer(&cluster.bootstrap());
    block_on(async {
        for i in 0..n {
            producer
                .send(
                    FutureRecord::<str, str>::to(topic).payload(&format!("v{i}")),
                    Duration::from_secs(30),
                )
                .await
                .expect("acks=all delivery");
        }
    });

    // --- the leader sends a consumer of the follower's rack there, without records
    let via_leader = consumer_fetch(cluster.node(leader), 12, topic, 0, &rack);
    assert_eq!(error_of(&via_leader), None);
    assert_eq!(*via_leader.preferred_read_replica, follower);
    assert!(
        offsets(&via_leader).is_empty(),
        "records with a preferred replica"
    );
    // The leader's own rack, an unknown rack, no rack, and Fetch before v11: read here.
    for (version, r) in [
        (12, format!("r{leader}")),
        (12, "elsewhere".to_string()),
        (12, String::new()),
        (10, rack.clone()),
    ] {
        let p = consumer_fetch(cluster.node(leader), version, topic, 0, &r);
        assert_eq!(error_of(&p), None, "v{version} rack {r:?}");
        assert_eq!(*p.preferred_read_replica, -1, "v{version} rack {r:?}");
        assert_eq!(offsets(&p).first(), Some(&0), "v{version} rack {r:?}");
    }

    // --- the follower serves consumers up to its HW, which it learns from the leader
    wait_for(
        "the follower's HW to reach the committed records",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || {
            (consumer_fetch(cluster.node(follower), 12, topic, 0, "").high_watermark == n)
                .then_some(())
        },
    );
    let mut next = 0;
    while next < n {
        let p = consumer_fetch(cluster.node(follower), 12, topic, next, &rack);
        assert_eq!(error_of(&p), None);
        assert_eq!(*p.preferred_read_replica, -1, "a follower never redirects");
        let got = offsets(&p);
        assert!(!got.is_empty(), "nothing at {next} below HW {n}");
        assert_eq!(got[0], next);
        next = *got.last().unwrap() + 1;
    }
    assert_eq!(next, n);
    // Before v11 a consumer may only read from the leader.
    let old = consumer_fetch(cluster.node(follower), 10, topic, 0, "");
    assert_eq!(error_of(&old), Some(ResponseError::NotLeaderOrFollower));

    // --- records the follower holds but are not committed are not served
    tracing_like("pause the other follower: the HW cannot pass what it lacks");
    cluster.node(other).pause();
    let m = 20i64;
    let acks1 = producer_of(&cluster.bootstrap_of(&[leader]), "1");
    block_on(async {
        for i in n..n + m {
            acks1
                .send(
                    FutureRecord::<str, str>::to(topic).payload(&format!("v{i}")),
                    Duration::from_secs(30),
                )
                .await
                .expect("acks=1 delivery");
        }
    });
    // The follower holds them once a fetch at their end is in range there.
    wait_for(
        "the follower to hold the uncommitted records",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || {
            error_of(&consumer_fetch(
                cluster.node(follower),
                12,
                topic,
                n + m,
                "",
            ))
            .is_none()
            .then_some(())
        },
    );
    let above = consumer_fetch(cluster.node(follower), 12, topic, n, "");
    assert_eq!(error_of(&above), None);
    assert_eq!(
        above.high_watermark, n,
        "the follower's HW passed an uncommitted record"
    );
    assert!(offsets(&above).is_empty(), "served a record above its HW");
    // Past its log end: out of range (the client goes back to the leader).
    let past = consumer_fetch(cluster.node(follower), 12, topic, n + m + 1, "");
    assert_eq!(error_of(&past), Some(ResponseError::OffsetOutOfRange));
    cluster.node(other).resume();
    wait_for(
        "the follower's HW to reach every record",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || {
            (consumer_fetch(cluster.node(follower), 12, topic, 0, "").high_watermark == n + m)
                .then_some(())
        },
    );

    // --- an rdkafka consumer with client.rack reads every record, from the follower
    let fetched_from = Arc::new(AtomicI32::new(-1));
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", cluster.bootstrap())
        .set("broker.address.family", "v4")
        .set("group.id", format!("follower-fetch-{}", std::process::id()))
        .set("enable.auto.commit", "false")
        .set("client.rack", &rack)
        .set("fetch.wait.max.ms", "100")
        .set("statistics.interval.ms", "200");
    let consumer: BaseConsumer<FetchedFrom> = c
        .create_with_context(FetchedFrom(fetched_from.clone()))
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .expect("tpl");
    consumer.assign(&tpl).expect("assign");
    let mut values = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while (values.len() as i64) < n + m {
        assert!(
            std::time::Instant::now() < deadline,
            "read {} of {} records",
            values.len(),
            n + m
        );
        if let Some(msg) = consumer.poll(Duration::from_millis(200)) {
            let msg = msg.expect("consume");
            assert_eq!(msg.offset(), values.len() as i64);
            values.push(String::from_utf8_lossy(msg.payload().unwrap_or_default()).into_owned());
        }
    }
    let expected: Vec<String> = (0..n + m).map(|i| format!("v{i}")).collect();
    assert_eq!(values, expected);
    // librdkafka says where it fetches partition 0 from.
    wait_for(
        "librdkafka to report fetching from the follower",
        Duration::from_secs(30),
        Duration::from_millis(50),
        || {
            consumer.poll(Duration::from_millis(50));
            (fetched_from.load(Ordering::SeqCst) == follower).then_some(())
        },
    );
}

#[test]
fn a_broker_without_a_replica_does_not_serve_consumers() {
    let mut cluster = start_racked(&["r1", "r2", "r3"], &[], &[]);
    let new = NewTopic::new("pair", 1, TopicReplication::Variable(&[&[1, 2]]));
    let res = block_on(admin(cluster.node(1)).create_topics(&[new], &admin_opts()))
        .expect("CreateTopics");
    assert_eq!(res[0], Ok("pair".to_string()));
    wait_for(
        "a leader with both replicas in sync",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || leader_and_isr(cluster.node(3), "pair").filter(|(l, isr)| *l > 0 && isr.len() == 2),
    );
    let p = consumer_fetch(cluster.node(3), 12, "pair", 0, "r3");
    assert_eq!(error_of(&p), Some(ResponseError::NotLeaderOrFollower));
}

#[test]
fn topic_describe_shows_each_replicas_lag() {
    // Node 3 fetches one batch per request and waits for a minimum it never reaches, so each
    // of its fetches takes the whole 20 s wait: it stays behind, deterministically, while the
    // leader drops it from the ISR after 2 s and the HW moves on with node 2.
    let slow: &[&str] = &[
        "replica.fetch.max.bytes=1",
        "replica.fetch.min.bytes=100000000",
        "replica.fetch.wait.max.ms=20000",
    ];
    let mut cluster = start_racked(
        &["r1", "r2", "r3"],
        &["replica.lag.time.max.ms=2000"],
        &[&[], &[], slow],
    );
    let topic = "lagging";
    let leader = create_assigned(&mut cluster, topic, &[1, 2, 3], &[]);
    assert_ne!(leader, 3, "the slow node must follow");

    let producer = producer_of(&cluster.bootstrap_of(&[leader]), "1");
    block_on(async {
        for i in 0..10 {
            producer
                .send(
                    FutureRecord::<str, str>::to(topic).payload(&format!("v{i}")),
                    Duration::from_secs(30),
                )
                .await
                .expect("acks=1 delivery");
        }
    });

    let bootstrap = cluster.node(1).bootstrap();
    let seen = wait_for(
        "describe to show node 3 out of the ISR and behind",
        Duration::from_secs(120),
        Duration::from_millis(500),
        || {
            let d = describe_json(&bootstrap, topic);
            let p = &d["partitions"][0];
            let lag_of = |r: i64| {
                p["lag"]
                    .as_array()?
                    .iter()
                    .find(|l| l["replica"] == r)
                    .and_then(|l| l["lag"].as_i64())
            };
            let isr: Vec<i64> = p["isr"]
                .as_array()?
                .iter()
                .filter_map(|v| v.as_i64())
                .collect();
            (!isr.contains(&3)
                && lag_of(1) == Some(0)
                && lag_of(2) == Some(0)
                && lag_of(3).is_some_and(|l| l > 0))
            .then_some(lag_of(3)?)
        },
    );
    assert!(seen <= 10, "lag {seen} above the records produced");

    // The table shows the same, replica by replica.
    let out = sluice(&["topic", "describe", topic, "-b", &bootstrap]);
    assert!(out.contains("LAG"), "{out}");
    assert!(out.contains("1:0 2:0 3:"), "{out}");

    // A broker that does not answer: its replica's lag is unknown, the rest still shows. The
    // paused follower is not the active controller: pausing that would also stop the leader's
    // lease renewals until a new controller is elected.
    let controller = active_controller(cluster.node(1));
    let paused = if controller == 2 { 3 } else { 2 };
    cluster.node(paused).pause();
    let d = describe_json(&bootstrap, topic);
    cluster.node(paused).resume();
    let lags = d["partitions"][0]["lag"].as_array().expect("lag").clone();
    let silent = lags
        .iter()
        .find(|l| l["replica"] == paused)
        .expect("paused replica");
    assert!(silent["lag"].is_null(), "{d}");
    let one = lags.iter().find(|l| l["replica"] == 1).expect("replica 1");
    assert_eq!(one["lag"], 0, "{d}");
}

fn producer_of(bootstrap: &str, acks: &str) -> rdkafka::producer::FutureProducer {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap)
        .set("broker.address.family", "v4")
        .set("message.timeout.ms", "30000")
        .set("acks", acks)
        .set("enable.idempotence", "false")
        .set("linger.ms", "0");
    c.create().expect("producer")
}

/// Runs the CLI and returns its stdout; panics on failure.
fn sluice(args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .output()
        .expect("run sluice");
    assert!(
        out.status.success(),
        "sluice {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

fn describe_json(bootstrap: &str, topic: &str) -> serde_json::Value {
    serde_json::from_str(&sluice(&[
        "topic", "describe", topic, "-b", bootstrap, "--json",
    ]))
    .expect("describe --json")
}

/// Test phases on stderr, shown with the output of a failing test.
fn tracing_like(phase: &str) {
    eprintln!("--- {phase}");
}
