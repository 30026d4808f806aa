//! Partition replication on a cluster of real `sluice` processes: followers fetch from the
//! leader and hold the same log, after the leader is killed a follower elected in its place
//! serves every acknowledged record, and the old leader comes back as a follower, cutting what
//! only it had (KIP-320 divergence).

mod common;

use std::path::Path;
use std::time::Duration;

use common::cluster::*;
use common::*;
use rdkafka::admin::{NewTopic, TopicReplication};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// (leader, replicas) of `topic`'s partition 0 as node `b` reports it; leader -1 while none.
fn partition_view(b: &Broker, topic: &str) -> Option<(i32, Vec<i32>)> {
    partition0(b, topic).map(|p| (p.leader, p.replicas))
}

/// The bytes of every segment of `<data-dir>/<topic>-0`, in offset order: a follower stores the
/// leader's batches as they are, so replicas holding the same records hold the same bytes.
fn segment_bytes(data_dir: &Path, topic: &str) -> Vec<u8> {
    let dir = data_dir.join(format!("{topic}-0"));
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut logs: Vec<_> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    logs.sort();
    logs.iter()
        .flat_map(|p| std::fs::read(p).unwrap_or_default())
        .collect()
}

fn acks_one_producer(bootstrap: &str) -> FutureProducer {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap)
        .set("broker.address.family", "v4")
        .set("message.timeout.ms", "30000")
        .set("acks", "1")
        .set("enable.idempotence", "false")
        .set("linger.ms", "5");
    c.create().expect("producer")
}

fn reader(bootstrap: &str) -> BaseConsumer {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap)
        .set("broker.address.family", "v4")
        .set("group.id", format!("replication-it-{}", std::process::id()))
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "100");
    c.create().expect("consumer")
}

#[test]
fn followers_copy_the_leader_and_a_new_leader_serves_every_acknowledged_record() {
    const TOPIC: &str = "replicated";
    const RECORDS: usize = 300;
    let mut cluster = TestCluster::start(3);

    eprintln!("--- create an RF=3 topic");
    let res = block_on(admin(cluster.node(1)).create_topics(
        &[NewTopic::new(TOPIC, 1, TopicReplication::Fixed(3))],
        &admin_opts(),
    ))
    .expect("CreateTopics");
    assert_eq!(res[0], Ok(TOPIC.to_string()));
    let (leader, replicas) = wait_for(
        "a leader for the partition",
        Duration::from_secs(20),
        Duration::from_millis(100),
        || partition_view(cluster.node(1), TOPIC).filter(|(l, _)| *l > 0),
    );
    let mut sorted = replicas.clone();
    sorted.sort();
    assert_eq!(sorted, vec![1, 2, 3], "three replicas");

    eprintln!("--- produce {RECORDS} records with acks=1 through the leader {leader}");
    let producer = acks_one_producer(&cluster.node(leader).bootstrap());
    let mut sent = Vec::new();
    block_on(async {
        for i in 0..RECORDS {
            let v = format!("{TOPIC}-{i}");
            producer
                .send(
                    FutureRecord::<(), _>::to(TOPIC).partition(0).payload(&v),
                    Duration::from_secs(30),
                )
                .await
                .unwrap_or_else(|(e, _)| panic!("produce {i}: {e}"));
            sent.push(v);
        }
    });
    drop(producer);

    eprintln!("--- every replica's log holds the leader's bytes");
    let leader_bytes = segment_bytes(cluster.node(leader).data_dir(), TOPIC);
    assert!(!leader_bytes.is_empty());
    // The HW (what ListOffsets LATEST reports) passes the records only once every ISR
    // follower has fetched them.
    let mut c = RawConn::connect(cluster.node(leader));
    wait_for(
        "the leader's high watermark to pass every record",
        Duration::from_secs(30),
        Duration::from_millis(50),
        || (log_end(&mut c, TOPIC, 0) == RECORDS as i64).then_some(()),
    );
    drop(c);
    for id in 1..=3 {
        let dir = cluster.node(id).data_dir().to_path_buf();
        wait_for(
            &format!("node {id} to hold the leader's log"),
            Duration::from_secs(30),
            Duration::from_millis(50),
            || (segment_bytes(&dir, TOPIC) == leader_bytes).then_some(()),
        );
    }

    eprintln!("--- kill -9 the leader {leader}; a follower takes over");
    cluster.node(leader).kill9();
    let survivors: Vec<i32> = (1..=3).filter(|id| *id != leader).collect();
    let watcher = survivors[0];
    let new_leader = wait_for(
        "a new leader among the survivors",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || {
            partition_view(cluster.node(watcher), TOPIC)
                .map(|(l, _)| l)
                .filter(|l| survivors.contains(l))
        },
    );
    eprintln!("--- consume everything acknowledged from the new leader {new_leader}");
    let c = reader(&cluster.bootstrap_of(&survivors));
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(TOPIC, 0, Offset::Beginning)
        .unwrap();
    c.assign(&tpl).unwrap();
    let mut got: Vec<String> = Vec::new();
    wait_for(
        "every acknowledged record from the new leader",
        Duration::from_secs(60),
        Duration::from_millis(1),
        || {
            if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
                use rdkafka::Message;
                got.push(String::from_utf8(m.payload().unwrap().to_vec()).unwrap());
            }
            (got.len() >= RECORDS).then_some(())
        },
    );
    assert_eq!(got, sent, "every acknowledged record, once, in order");

    eprintln!("--- the new leader accepts writes and the other survivor follows it");
    let producer = acks_one_producer(&cluster.bootstrap_of(&survivors));
    block_on(async {
        producer
            .send(
                FutureRecord::<(), _>::to(TOPIC)
                    .partition(0)
                    .payload("after"),
                Duration::from_secs(30),
            )
            .await
            .unwrap_or_else(|(e, _)| panic!("produce after failover: {e}"));
    });
    let new_bytes = segment_bytes(cluster.node(new_leader).data_dir(), TOPIC);
    let other = *survivors.iter().find(|id| **id != new_leader).unwrap();
    let other_dir = cluster.node(other).data_dir().to_path_buf();
    wait_for(
        "the other survivor to hold the new leader's log",
        Duration::from_secs(30),
        Duration::from_millis(50),
        || (segment_bytes(&other_dir, TOPIC) == new_bytes).then_some(()),
    );

    eprintln!("--- the old leader {leader} restarts and follows the new leader");
    cluster.node(leader).restart();
    let old_dir = cluster.node(leader).data_dir().to_path_buf();
    wait_for(
        "the restarted old leader to hold the new leader's log",
        Duration::from_secs(30),
        Duration::from_millis(50),
        || (segment_bytes(&old_dir, TOPIC) == new_bytes).then_some(()),
    );
    let (now_leading, _) = partition_view(cluster.node(leader), TOPIC).unwrap();
    assert_eq!(now_leading, new_leader, "leadership did not move back");
}

fn signal(b: &Broker, sig: &str) {
    let status = std::process::Command::new("kill")
        .arg(sig)
        .arg(b.pid().to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill {sig}");
}

fn produce(bootstrap: &str, values: &[String]) {
    let producer = acks_one_producer(bootstrap);
    block_on(async {
        for v in values {
            producer
                .send(
                    FutureRecord::<(), _>::to("diverge").partition(0).payload(v),
                    Duration::from_secs(30),
                )
                .await
                .unwrap_or_else(|(e, _)| panic!("produce {v}: {e}"));
        }
    });
}

#[test]
fn a_returning_leader_truncates_what_only_it_had() {
    const TOPIC: &str = "diverge";
    // Sessions long enough that followers paused for a moment are not fenced (the last
    // override wins over the fast default).
    let mut cluster = TestCluster::start_with(3, &["broker.session.timeout.ms=8000"]);
    let res = block_on(admin(cluster.node(1)).create_topics(
        &[NewTopic::new(TOPIC, 1, TopicReplication::Fixed(3))],
        &admin_opts(),
    ))
    .expect("CreateTopics");
    assert_eq!(res[0], Ok(TOPIC.to_string()));
    let (leader, _) = wait_for(
        "a leader for the partition",
        Duration::from_secs(20),
        Duration::from_millis(100),
        || partition_view(cluster.node(1), TOPIC).filter(|(l, _)| *l > 0),
    );
    let followers: Vec<i32> = (1..=3).filter(|id| *id != leader).collect();

    eprintln!("--- replicated records on every node");
    let shared: Vec<String> = (0..50).map(|i| format!("shared-{i}")).collect();
    produce(&cluster.node(leader).bootstrap(), &shared);
    let leader_bytes = segment_bytes(cluster.node(leader).data_dir(), TOPIC);
    for id in &followers {
        let dir = cluster.node(*id).data_dir().to_path_buf();
        wait_for(
            &format!("node {id} to hold the leader's log"),
            Duration::from_secs(30),
            Duration::from_millis(50),
            || (segment_bytes(&dir, TOPIC) == leader_bytes).then_some(()),
        );
    }

    eprintln!("--- followers paused: records acknowledged (acks=1) by the leader {leader} alone");
    for id in &followers {
        signal(cluster.node(*id), "-STOP");
    }
    let only_leader: Vec<String> = (0..100).map(|i| format!("only-leader-{i}")).collect();
    produce(&cluster.node(leader).bootstrap(), &only_leader);
    assert!(segment_bytes(cluster.node(leader).data_dir(), TOPIC).len() > leader_bytes.len());
    cluster.node(leader).kill9();
    for id in &followers {
        signal(cluster.node(*id), "-CONT");
    }

    eprintln!("--- a follower is elected; it never had the leader's last records");
    let watcher = followers[0];
    let new_leader = wait_for(
        "a new leader among the followers",
        Duration::from_secs(60),
        Duration::from_millis(100),
        || {
            partition_view(cluster.node(watcher), TOPIC)
                .map(|(l, _)| l)
                .filter(|l| followers.contains(l))
        },
    );
    let after: Vec<String> = (0..10).map(|i| format!("after-{i}")).collect();
    produce(&cluster.bootstrap_of(&followers), &after);
    let new_bytes = segment_bytes(cluster.node(new_leader).data_dir(), TOPIC);

    eprintln!("--- the old leader returns, finds its log diverges, and copies the new leader's");
    cluster.node(leader).restart();
    let old_dir = cluster.node(leader).data_dir().to_path_buf();
    wait_for(
        "the old leader to hold exactly the new leader's log",
        Duration::from_secs(30),
        Duration::from_millis(50),
        || (segment_bytes(&old_dir, TOPIC) == new_bytes).then_some(()),
    );
    // Through the diverging epoch of a Fetch answer, not the out-of-range fallback.
    let log = std::fs::read_to_string(cluster.node(leader).log_path()).unwrap();
    assert!(
        log.contains("log diverges from the leader's; truncating"),
        "the old leader truncated on a diverging epoch"
    );
    // The new leader's log: the shared records, then what the paused followers' pending fetch
    // had already carried off before the old leader died (a fetch parked at the leader is
    // answered by the first append, and the answer waits in the paused follower's socket: Kafka
    // behaves the same), then the records written after the failover.
    let c = reader(&cluster.bootstrap_of(&followers));
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(TOPIC, 0, Offset::Beginning)
        .unwrap();
    c.assign(&tpl).unwrap();
    let mut got: Vec<String> = Vec::new();
    wait_for(
        "the new leader's records",
        Duration::from_secs(60),
        Duration::from_millis(1),
        || {
            if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
                use rdkafka::Message;
                got.push(String::from_utf8(m.payload().unwrap().to_vec()).unwrap());
            }
            got.last().is_some_and(|v| v == "after-9").then_some(())
        },
    );
    assert_eq!(&got[..shared.len()], &shared[..]);
    assert_eq!(&got[got.len() - after.len()..], &after[..]);
    let carried = &got[shared.len()..got.len() - after.len()];
    assert_eq!(carried, &only_leader[..carried.len()], "a prefix, in order");
    assert!(
        carried.len() < only_leader.len(),
        "scenario: the paused followers cannot have fetched every record, so the old leader \
         had a suffix to cut"
    );
}
