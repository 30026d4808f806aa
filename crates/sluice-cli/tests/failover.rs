//! Leader failover with `acks=all` on a 3-node cluster of real processes: no acknowledged record
//! is lost when the leader is killed, `min.insync.replicas` refuses writes it cannot cover, a
//! SIGTERM hands leadership over before the broker stops, and a preferred election gives it back.

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::cluster::*;
use common::*;
use rdkafka::admin::{NewTopic, TopicReplication};
use rdkafka::producer::FutureRecord;

/// The values of `topic`-0 from the start (see [`read_partition0`]).
fn read_from_start(bootstrap: &str, topic: &str, at_least: usize) -> Vec<String> {
    read_partition0(bootstrap, topic, at_least)
        .into_iter()
        .map(|(_, v)| v)
        .collect()
}

#[test]
fn no_acknowledged_record_is_lost_when_the_leader_is_killed() {
    let mut cluster = TestCluster::start(3);
    let leader = create_rf3(&mut cluster, "acks-all");
    kill_the_leader_mid_stream(&mut cluster, "acks-all", leader);
}

#[test]
fn no_acknowledged_record_is_lost_when_the_leader_is_also_the_controller() {
    let mut cluster = TestCluster::start(3);
    let controller = active_controller(cluster.node(1));
    assert!((1..=3).contains(&controller));
    // The first replica of an assignment leads at creation.
    let others: Vec<i32> = (1..=3).filter(|id| *id != controller).collect();
    let assignment = [controller, others[0], others[1]];
    create_assigned(&mut cluster, "acks-all-ctl", &assignment, &[]);
    // Both the partition's leader and the active controller die at once.
    kill_the_leader_mid_stream(&mut cluster, "acks-all-ctl", controller);
}

/// An idempotent acks=all producer streams unique values to partition 0 of `topic` (RF 3)
/// while `leader` is killed -9 part-way: every acknowledged value is there exactly once, in
/// order; the old leader rejoins the ISR and holds the same records; a preferred election
/// answers.
fn kill_the_leader_mid_stream(cluster: &mut TestCluster, topic: &str, leader: i32) {
    const RECORDS: usize = 400;
    let topic_name = topic.to_string();
    let bootstrap = cluster.bootstrap();

    // A producer sends in the background; the leader dies part-way through.
    let acked: Arc<Mutex<Vec<(i64, String)>>> = Arc::default();
    let sender = {
        let acked = acked.clone();
        let bootstrap = bootstrap.clone();
        let topic = topic_name.clone();
        std::thread::spawn(move || {
            let p = acks_all_producer(&bootstrap);
            block_on(async {
                let mut pending = Vec::new();
                for i in 0..RECORDS {
                    let v = format!("v-{i}");
                    let f =
                        p.send_result(FutureRecord::<(), _>::to(&topic).partition(0).payload(&v));
                    let f = f.expect("queue");
                    pending.push((v, f));
                    if i % 20 == 19 {
                        tokio::time::sleep(Duration::from_millis(30)).await;
                    }
                }
                for (v, f) in pending {
                    if let Ok(Ok(d)) = f.await {
                        acked.lock().unwrap().push((d.offset, v));
                    }
                }
            });
        })
    };
    wait_for(
        "some writes acknowledged before the kill",
        Duration::from_secs(60),
        Duration::from_millis(20),
        || {
            let mut c = RawConn::connect(cluster.node(leader));
            (log_end(&mut c, topic, 0) >= 100).then_some(())
        },
    );
    cluster.node(leader).kill9();
    sender.join().unwrap();
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 100, "only {} acknowledged", acked.len());

    let survivors: Vec<i32> = (1..=3).filter(|id| *id != leader).collect();
    let got = read_from_start(&cluster.bootstrap_of(&survivors), topic, acked.len());
    let unique: BTreeSet<&String> = got.iter().collect();
    assert_eq!(unique.len(), got.len(), "no record twice: {got:?}");
    for (offset, v) in &acked {
        assert_eq!(
            got.get(*offset as usize),
            Some(v),
            "acknowledged {v} at offset {offset} is there"
        );
    }

    // The old leader comes back as a follower and ends with the same log.
    cluster.node(leader).restart();
    let expected = got.clone();
    let (new_leader, _) = wait_for(
        "the old leader back in the ISR",
        Duration::from_secs(60),
        Duration::from_millis(200),
        || leader_and_isr(cluster.node(survivors[0]), topic).filter(|(_, isr)| isr.len() == 3),
    );
    assert_ne!(new_leader, leader);
    let only_old = read_from_start(&cluster.node(leader).bootstrap(), topic, expected.len());
    // Read through the cluster (the leader), which now includes the old leader's replica in
    // the ISR: the same records.
    assert_eq!(only_old, expected);
    // And each replica on its own (a follower serves its log below its HW): identical logs.
    let committed: Vec<(i64, String)> = expected
        .iter()
        .enumerate()
        .map(|(i, v)| (i as i64, v.clone()))
        .collect();
    let nodes: Vec<_> = (1..=3).map(|id| (id, cluster.node(id).addr())).collect();
    wait_replicas_hold(&nodes, topic, &committed);

    // A preferred election hands leadership back to the first replica once it is in sync.
    let preferred = leader_and_isr(cluster.node(1), topic).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args([
            "topic",
            "elect-leaders",
            "-b",
            &cluster.bootstrap(),
            topic,
            "--json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let result = v["elections"][0]["result"].as_str().unwrap().to_string();
    assert!(
        result == "elected" || result == "ElectionNotNeeded",
        "{v} (before: {preferred:?})"
    );
}

#[test]
fn acks_all_needs_min_insync_replicas() {
    use kafka_protocol::ResponseError;
    const TOPIC: &str = "min-isr";
    let mut cluster = TestCluster::start(3);
    // Every replica must hold an acks=all write. (Killing two of three nodes would also stop
    // the controller quorum, so nothing could record the smaller ISR.)
    let leader = create_rf3_with(&mut cluster, TOPIC, &[("min.insync.replicas", "3")]);
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    cluster.node(follower).kill9();
    // Fenced, the follower leaves the ISR: two in-sync replicas, three needed.
    wait_for(
        "the ISR to shrink",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || {
            leader_and_isr(cluster.node(leader), TOPIC)
                .filter(|(l, isr)| *l == leader && isr.len() == 2)
        },
    );
    let mut conn = RawConn::connect(cluster.node(leader));
    let all = produce_raw_acks(
        &mut conn,
        TOPIC,
        0,
        -1,
        batch(-1, 0, 0, 1, 1_700_000_000_000, "all"),
    );
    assert_eq!(
        all.error_code,
        ResponseError::NotEnoughReplicas.code(),
        "{all:?}"
    );
    let one = produce_raw_acks(
        &mut conn,
        TOPIC,
        0,
        1,
        batch(-1, 0, 0, 1, 1_700_000_000_000, "one"),
    );
    assert_eq!(one.error_code, 0, "acks=1 needs only the leader: {one:?}");
}

#[test]
fn with_two_of_three_replicas_down_acks_all_is_refused_and_nothing_is_lost() {
    use kafka_protocol::ResponseError;
    const TOPIC: &str = "two-down";
    // Voters 1-3 and a broker-only node 4; the partition lives on 1, 2 and 4, so killing 2 and 4
    // takes two of its three replicas but leaves a controller quorum (1 and 3) to record it.
    let mut cluster = TestCluster::start(3);
    let four = cluster.add_broker(&[]);
    create_assigned(
        &mut cluster,
        TOPIC,
        &[1, 2, four],
        &[("min.insync.replicas", "2")],
    );
    let producer = acks_all_producer(&cluster.bootstrap());
    let send = |from: usize, to: usize| -> Vec<String> {
        (from..to)
            .map(|i| {
                let v = format!("v-{i}");
                block_on(producer.send(
                    FutureRecord::<(), _>::to(TOPIC).partition(0).payload(&v),
                    Duration::from_secs(30),
                ))
                .unwrap_or_else(|(e, _)| panic!("{v}: {e}"));
                v
            })
            .collect()
    };
    let mut acked = send(0, 30);

    cluster.node(2).kill9();
    cluster.node(four).kill9();
    wait_for(
        "the ISR to shrink to the leader alone",
        Duration::from_secs(60),
        Duration::from_millis(100),
        || leader_and_isr(cluster.node(1), TOPIC).filter(|(l, isr)| *l == 1 && isr == &[1]),
    );
    // Refused at once, never a false success, however often it is tried.
    let mut conn = RawConn::connect(cluster.node(1));
    for attempt in 0..3 {
        let r = produce_raw(
            &mut conn,
            TOPIC,
            0,
            batch(-1, 0, 0, 2, 1_700_000_000_000, "refused"),
        );
        assert_eq!(
            r.error_code,
            ResponseError::NotEnoughReplicas.code(),
            "attempt {attempt}: {r:?}"
        );
    }

    // They return, catch up and rejoin; writes resume and nothing is lost or doubled.
    cluster.node(2).restart();
    cluster.node(four).restart();
    wait_for(
        "the full ISR again",
        Duration::from_secs(90),
        Duration::from_millis(200),
        || leader_and_isr(cluster.node(1), TOPIC).filter(|(_, isr)| isr.len() == 3),
    );
    acked.extend(send(30, 60));
    let got = read_from_start(&cluster.bootstrap(), TOPIC, acked.len());
    assert_eq!(got, acked);
}

#[test]
fn sigterm_hands_leadership_over_before_the_broker_stops() {
    const TOPIC: &str = "handover";
    let mut cluster = TestCluster::start(3);
    let leader = create_rf3(&mut cluster, TOPIC);
    let watcher = (1..=3).find(|id| *id != leader).unwrap();
    cluster.node(leader).stop();
    // No session to wait out: the partition has another leader as soon as the broker is gone.
    let (now, isr) = leader_and_isr(cluster.node(watcher), TOPIC).unwrap();
    assert!(now > 0 && now != leader, "leader {now}, ISR {isr:?}");
    assert!(!isr.contains(&leader), "{isr:?}");
}

#[test]
fn a_paused_follower_leaves_the_isr_and_rejoins_once_caught_up() {
    const TOPIC: &str = "lagging";
    // The leader drops a follower after 2 s without catching up, well before its session
    // (8 s) would fence it: the shrink is the leader's, through AlterPartition.
    let mut cluster = TestCluster::start_with(
        3,
        &[
            "replica.lag.time.max.ms=2000",
            "broker.session.timeout.ms=8000",
        ],
    );
    let leader = create_rf3(&mut cluster, TOPIC);
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    let others = cluster.bootstrap_of(&[leader]);
    let producer = acks_all_producer(&others);
    let send = |i: usize| {
        block_on(
            producer.send(
                FutureRecord::<(), _>::to(TOPIC)
                    .partition(0)
                    .payload(&format!("x-{i}")),
                Duration::from_secs(30),
            ),
        )
        .unwrap_or_else(|(e, _)| panic!("produce {i}: {e}"));
    };
    send(0);
    cluster.node(follower).pause();
    // Writes keep coming; the paused follower falls behind and is dropped.
    let mut i = 1;
    wait_for(
        "the ISR to shrink without the paused follower",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || {
            send(i);
            i += 1;
            leader_and_isr(cluster.node(leader), TOPIC)
                .filter(|(_, isr)| isr.len() == 2 && !isr.contains(&follower))
        },
    );
    // acks=all still succeeds with two in sync (min.insync.replicas is 2).
    send(i);
    cluster.node(follower).resume();
    wait_for(
        "the follower back in the ISR",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || leader_and_isr(cluster.node(leader), TOPIC).filter(|(_, isr)| isr.len() == 3),
    );
    let got = read_from_start(&others, TOPIC, i + 1);
    assert_eq!(got.len(), i + 1, "{got:?}");
}

#[test]
fn a_rolling_restart_under_load_loses_and_duplicates_nothing() {
    const TOPIC: &str = "rolling";
    const RECORDS: usize = 600;
    let mut cluster = TestCluster::start(3);
    create_rf3(&mut cluster, TOPIC);
    let bootstrap = cluster.bootstrap();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sender = {
        let (bootstrap, done) = (bootstrap.clone(), done.clone());
        std::thread::spawn(move || {
            let p = acks_all_producer(&bootstrap);
            let mut acked = Vec::new();
            block_on(async {
                for i in 0..RECORDS {
                    let v = format!("r-{i}");
                    let d = p
                        .send(
                            FutureRecord::<(), _>::to(TOPIC).partition(0).payload(&v),
                            Duration::from_secs(60),
                        )
                        .await
                        .unwrap_or_else(|(e, _)| panic!("produce {i}: {e}"));
                    acked.push((d.offset, v));
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            });
            done.store(true, std::sync::atomic::Ordering::SeqCst);
            acked
        })
    };
    // SIGTERM and restart each node in turn while the producer runs.
    for id in 1..=3 {
        cluster.node(id).stop();
        cluster.node(id).restart();
        wait_for(
            &format!("node {id} back in the ISR"),
            Duration::from_secs(60),
            Duration::from_millis(200),
            || leader_and_isr(cluster.node(id), TOPIC).filter(|(_, isr)| isr.len() == 3),
        );
    }
    let acked = sender
        .join()
        .expect("the producer finished without an error");
    assert!(done.load(std::sync::atomic::Ordering::SeqCst));
    let got = read_from_start(&bootstrap, TOPIC, RECORDS);
    let expected: Vec<String> = acked.iter().map(|(_, v)| v.clone()).collect();
    assert_eq!(got, expected, "every record once, in order");
}

#[test]
fn a_follower_with_a_wiped_log_rebuilds_before_it_may_lead() {
    const TOPIC: &str = "wiped";
    let mut cluster = TestCluster::start(3);
    // Node 1 is the preferred leader; it starts as leader.
    let res = block_on(admin(cluster.node(2)).create_topics(
        &[NewTopic::new(
            TOPIC,
            1,
            TopicReplication::Variable(&[&[1, 2, 3]]),
        )],
        &admin_opts(),
    ))
    .expect("CreateTopics");
    assert_eq!(res[0], Ok(TOPIC.to_string()));
    wait_for(
        "node 1 leading with the full ISR",
        Duration::from_secs(20),
        Duration::from_millis(100),
        || leader_and_isr(cluster.node(2), TOPIC).filter(|(l, isr)| *l == 1 && isr.len() == 3),
    );
    let p = acks_all_producer(&cluster.bootstrap());
    let mut sent = Vec::new();
    block_on(async {
        for i in 0..300 {
            let v = format!("w-{i}");
            p.send(
                FutureRecord::<(), _>::to(TOPIC).partition(0).payload(&v),
                Duration::from_secs(30),
            )
            .await
            .unwrap_or_else(|(e, _)| panic!("produce {i}: {e}"));
            sent.push(v);
        }
    });
    // Node 1 dies and loses its copy of the partition.
    cluster.node(1).kill9();
    let dir = cluster.node(1).data_dir().join(format!("{TOPIC}-0"));
    std::fs::remove_dir_all(&dir).expect("wipe the partition's log");
    cluster.node(1).restart();
    // Until it has caught up it is out of the ISR, so nobody may elect it.
    wait_for(
        "node 1 back in the ISR",
        Duration::from_secs(60),
        Duration::from_millis(50),
        || {
            let (leader, isr) = leader_and_isr(cluster.node(2), TOPIC)?;
            assert!(
                leader != 1 || isr.contains(&1),
                "node 1 leads without being in sync: ISR {isr:?}"
            );
            isr.contains(&1).then_some(())
        },
    );
    // Give it back its leadership: it serves every record.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["topic", "elect-leaders", "-b", &cluster.bootstrap(), TOPIC])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for(
        "node 1 leading again",
        Duration::from_secs(20),
        Duration::from_millis(100),
        || leader_and_isr(cluster.node(2), TOPIC).filter(|(l, _)| *l == 1),
    );
    let got = read_from_start(&cluster.node(1).bootstrap(), TOPIC, sent.len());
    assert_eq!(got, sent);
}
