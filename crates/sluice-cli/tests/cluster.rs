//! A cluster of real `sluice` processes on loopback: a Raft controller quorum, brokers that
//! register and heartbeat, partitions placed over them, fencing when one dies, and start-up
//! refusals. Driven by rdkafka clients and raw Kafka requests to each node.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::Duration;

use common::cluster::*;
use common::*;
use kafka_protocol::messages::describe_cluster_request::DescribeClusterRequest;
use kafka_protocol::messages::MetadataRequest;
use rdkafka::admin::{AdminClient, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// One node's Metadata: (controller id, live broker ids, (topic, partition) -> leader).
struct View {
    controller: i32,
    brokers: BTreeSet<i32>,
    leaders: BTreeMap<(String, i32), i32>,
    replicas: BTreeMap<(String, i32), Vec<i32>>,
}

fn view(b: &Broker) -> View {
    let mut c = RawConn::connect(b);
    let resp = c.call(12, &MetadataRequest::default().with_topics(None));
    let mut leaders = BTreeMap::new();
    let mut replicas = BTreeMap::new();
    for t in &resp.topics {
        let name = t.name.as_ref().expect("topic name").to_string();
        for p in &t.partitions {
            leaders.insert((name.clone(), p.partition_index), p.leader_id.0);
            replicas.insert(
                (name.clone(), p.partition_index),
                p.replica_nodes.iter().map(|r| r.0).collect(),
            );
        }
    }
    View {
        controller: resp.controller_id.0,
        brokers: resp.brokers.iter().map(|b| b.node_id.0).collect(),
        leaders,
        replicas,
    }
}

fn admin_for(bootstrap: &str) -> AdminClient<DefaultClientContext> {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap)
        .set("socket.timeout.ms", "10000")
        .set("broker.address.family", "v4");
    c.create().expect("admin client")
}

fn producer_for(bootstrap: &str) -> FutureProducer {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap)
        .set("broker.address.family", "v4")
        .set("message.timeout.ms", "30000")
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "5");
    c.create().expect("producer")
}

fn consumer_for(bootstrap: &str) -> BaseConsumer {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap)
        .set("broker.address.family", "v4")
        .set("group.id", format!("cluster-it-{}", std::process::id()))
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "100");
    c.create().expect("consumer")
}

fn create(bootstrap: &str, name: &str, partitions: i32) {
    let res = block_on(admin_for(bootstrap).create_topics(
        &[NewTopic::new(name, partitions, TopicReplication::Fixed(1))],
        &admin_opts(),
    ))
    .expect("CreateTopics");
    assert_eq!(res[0], Ok(name.to_string()), "create {name}");
}

/// Produces `per_partition` records to each partition; returns the values by partition.
fn produce_all(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    per_partition: usize,
) -> BTreeMap<i32, Vec<String>> {
    let p = producer_for(bootstrap);
    let mut sent = BTreeMap::new();
    block_on(async {
        for part in 0..partitions {
            for i in 0..per_partition {
                let v = format!("{topic}-{part}-{i}");
                p.send(
                    FutureRecord::<(), _>::to(topic).partition(part).payload(&v),
                    Duration::from_secs(30),
                )
                .await
                .unwrap_or_else(|(e, _)| panic!("produce to {topic}-{part}: {e}"));
                sent.entry(part).or_insert_with(Vec::new).push(v);
            }
        }
    });
    sent
}

/// Reads every partition from the beginning until `expected` values are seen in each.
fn read_all(bootstrap: &str, topic: &str, expected: &BTreeMap<i32, Vec<String>>) {
    let c = consumer_for(bootstrap);
    let mut tpl = TopicPartitionList::new();
    for part in expected.keys() {
        tpl.add_partition_offset(topic, *part, Offset::Beginning)
            .unwrap();
    }
    c.assign(&tpl).unwrap();
    let mut got: BTreeMap<i32, Vec<String>> = BTreeMap::new();
    let total: usize = expected.values().map(Vec::len).sum();
    wait_for(
        &format!("reading back {total} records of {topic}"),
        Duration::from_secs(60),
        Duration::from_millis(1),
        || {
            if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
                use rdkafka::Message;
                let v = String::from_utf8(m.payload().unwrap().to_vec()).unwrap();
                got.entry(m.partition()).or_default().push(v);
            }
            (got.values().map(Vec::len).sum::<usize>() >= total).then_some(())
        },
    );
    assert_eq!(&got, expected, "every acknowledged record, once, in order");
}

fn sluice(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .output()
        .expect("run sluice");
    assert!(
        out.status.success(),
        "sluice {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn three_nodes_spread_partitions_and_serve_clients_from_any_node() {
    let mut cluster = TestCluster::start(3);
    // Created through node 2 alone (forwarded to the active controller if it is elsewhere).
    create(&cluster.node(2).bootstrap(), "spread", 12);

    // Every node's Metadata agrees: three brokers, one controller, four leaders each.
    let views: Vec<View> = wait_for(
        "every node to see the topic",
        Duration::from_secs(20),
        Duration::from_millis(100),
        || {
            let v: Vec<View> = cluster.nodes.iter().map(view).collect();
            v.iter()
                .all(|v| v.leaders.keys().filter(|(t, _)| t == "spread").count() == 12)
                .then_some(v)
        },
    );
    for v in &views {
        assert_eq!(v.brokers, BTreeSet::from([1, 2, 3]));
        assert_eq!(v.controller, views[0].controller);
        assert!((1..=3).contains(&v.controller));
        assert_eq!(v.leaders, views[0].leaders);
    }
    for b in 1..=3 {
        let led = views[0].leaders.values().filter(|l| **l == b).count();
        assert_eq!(led, 4, "broker {b} leads its share: {:?}", views[0].leaders);
    }

    // Produce through node 3 alone, read back through node 1 alone.
    let sent = produce_all(&cluster.node(3).bootstrap(), "spread", 12, 5);
    read_all(&cluster.node(1).bootstrap(), "spread", &sent);

    // The admin view: DescribeCluster from any node, and `sluice cluster info`.
    let mut raw = RawConn::connect(cluster.node(3));
    let dc = raw.call(
        2,
        &DescribeClusterRequest::default()
            .with_endpoint_type(1)
            .with_include_fenced_brokers(true),
    );
    let ids: Vec<i32> = dc.brokers.iter().map(|b| b.broker_id.0).collect();
    assert_eq!(ids.len(), 3);
    assert!(dc.brokers.iter().all(|b| !b.is_fenced));
    let info: serde_json::Value = serde_json::from_str(&sluice(&[
        "cluster",
        "info",
        "-b",
        &cluster.node(2).bootstrap(),
        "--json",
    ]))
    .unwrap();
    assert_eq!(info["brokers"].as_array().unwrap().len(), 3, "{info}");
    assert_eq!(
        info["quorum"]["voters"].as_array().unwrap().len(),
        3,
        "{info}"
    );
    assert_eq!(info["controller_id"], views[0].controller, "{info}");
    // A replication factor the cluster cannot honour is refused, not faked.
    let res = block_on(admin_for(&cluster.bootstrap()).create_topics(
        &[NewTopic::new("rf4", 3, TopicReplication::Fixed(4))],
        &admin_opts(),
    ))
    .expect("CreateTopics");
    assert!(
        matches!(
            &res[0],
            Err((
                _,
                rdkafka::types::RDKafkaErrorCode::InvalidReplicationFactor
            ))
        ),
        "{res:?}"
    );
}

#[test]
fn a_produce_or_fetch_at_the_wrong_broker_names_the_leader() {
    use bytes::Bytes;
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::{ProduceRequest, TopicName};
    use kafka_protocol::protocol::StrBytes;

    let mut cluster = TestCluster::start(3);
    create(&cluster.bootstrap(), "route", 1);
    let leader = wait_for(
        "a leader",
        Duration::from_secs(20),
        Duration::from_millis(100),
        || {
            view(cluster.node(1))
                .leaders
                .get(&("route".to_string(), 0))
                .copied()
                .filter(|l| *l > 0)
        },
    );
    let other = (1..=3).find(|b| *b != leader).unwrap();
    wait_for(
        "the other node to know the topic",
        Duration::from_secs(20),
        Duration::from_millis(100),
        || {
            view(cluster.node(other))
                .leaders
                .contains_key(&("route".to_string(), 0))
                .then_some(())
        },
    );
    let batch = sluice_protocol::batch::testing::build_batch(
        0,
        &[(
            Some(b"k".as_slice()),
            Some(b"v".as_slice()),
            1_700_000_000_000,
        )],
    );
    let req = ProduceRequest::default()
        .with_acks(1)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_static_str("route")))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(Bytes::from(batch)))])]);
    let resp = RawConn::connect(cluster.node(other)).call(11, &req);
    let p = &resp.responses[0].partition_responses[0];
    assert_eq!(
        p.error_code,
        kafka_protocol::ResponseError::NotLeaderOrFollower.code(),
        "{resp:?}"
    );
    assert_eq!(p.current_leader.leader_id.0, leader, "{resp:?}");
    assert_eq!(resp.node_endpoints.len(), 1, "{resp:?}");
    assert_eq!(resp.node_endpoints[0].node_id.0, leader);
    assert_eq!(
        resp.node_endpoints[0].port,
        cluster.node(leader).port() as i32
    );

    // A Fetch there too: NOT_LEADER_OR_FOLLOWER with the leader and its endpoint (v16).
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchRequest, FetchTopic};
    let topic_id = {
        let mut c = RawConn::connect(cluster.node(other));
        let md = c.call(12, &MetadataRequest::default().with_topics(None));
        md.topics
            .iter()
            .find(|t| t.name.as_ref().is_some_and(|n| n.as_str() == "route"))
            .unwrap()
            .topic_id
    };
    let fetch = FetchRequest::default()
        .with_max_wait_ms(0)
        .with_max_bytes(1 << 20)
        .with_topics(vec![FetchTopic::default()
            .with_topic_id(topic_id)
            .with_partitions(vec![FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(0)
                .with_partition_max_bytes(1 << 20)])]);
    let resp = RawConn::connect(cluster.node(other)).call(16, &fetch);
    let p = &resp.responses[0].partitions[0];
    assert_eq!(
        p.error_code,
        kafka_protocol::ResponseError::NotLeaderOrFollower.code(),
        "{resp:?}"
    );
    assert_eq!(p.current_leader.leader_id.0, leader, "{resp:?}");
    assert_eq!(resp.node_endpoints.len(), 1, "{resp:?}");
    assert_eq!(resp.node_endpoints[0].node_id.0, leader);
}

#[test]
fn a_killed_broker_is_fenced_and_serves_its_partitions_again_after_restart() {
    let mut cluster = TestCluster::start(3);
    create(&cluster.bootstrap(), "fence", 6);
    let sent = produce_all(&cluster.bootstrap(), "fence", 6, 5);
    let controller = view(cluster.node(1)).controller;
    // A broker that is not the active controller.
    let victim = (1..=3).find(|b| *b != controller).unwrap();
    let watcher = (1..=3).find(|b| *b != victim).unwrap();
    cluster.node(victim).kill9();

    // Fenced within the session timeout (3 s here, plus scheduling noise): gone from the
    // brokers, its partitions without a leader.
    wait_for(
        "the killed broker to be fenced",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || {
            let v = view(cluster.node(watcher));
            let offline = v
                .leaders
                .iter()
                .filter(|((t, _), l)| t == "fence" && **l == -1)
                .count();
            (!v.brokers.contains(&victim) && offline == 2).then_some(())
        },
    );
    let info: serde_json::Value = serde_json::from_str(&sluice(&[
        "cluster",
        "info",
        "-b",
        &cluster.node(watcher).bootstrap(),
        "--json",
    ]))
    .unwrap();
    assert_eq!(info["partitions"]["offline"], 2, "{info}");
    let fenced: Vec<&serde_json::Value> = info["brokers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["fenced"] == true)
        .collect();
    assert_eq!(fenced.len(), 1, "{info}");
    assert_eq!(fenced[0]["id"], victim, "{info}");

    cluster.node(victim).restart();
    wait_for(
        "the restarted broker to lead its partitions again",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || {
            let v = view(cluster.node(watcher));
            let led = v
                .leaders
                .iter()
                .filter(|((t, _), l)| t == "fence" && **l == victim)
                .count();
            (v.brokers.contains(&victim) && led == 2).then_some(())
        },
    );
    read_all(&cluster.bootstrap(), "fence", &sent);
}

#[test]
fn killing_the_active_controller_loses_no_topic() {
    let mut cluster = TestCluster::start(3);
    let bootstrap = cluster.bootstrap();
    // One client for the whole loop. librdkafka sends admin requests to the controller named in
    // its cached Metadata and only learns of a new one when it refreshes: a short refresh
    // interval lets it find the new controller after the kill without restarting.
    let admin: AdminClient<DefaultClientContext> = {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &bootstrap)
            .set("socket.timeout.ms", "10000")
            .set("broker.address.family", "v4")
            .set("topic.metadata.refresh.interval.ms", "1000");
        c.create().expect("admin client")
    };
    let mut created = Vec::new();
    let mut killed = None;
    for i in 0..30 {
        if i == 10 {
            let controller = view(cluster.node(1)).controller;
            cluster.node(controller).kill9();
            killed = Some(controller);
        }
        let name = format!("loop-{i}");
        // Retried until it is answered: a retry of a create that did commit says it exists.
        wait_for(
            &format!("creating {name}"),
            Duration::from_secs(60),
            Duration::from_millis(200),
            || {
                let res = block_on(admin.create_topics(
                    &[NewTopic::new(&name, 1, TopicReplication::Fixed(1))],
                    &admin_opts(),
                ));
                match res {
                    Ok(r) => match &r[0] {
                        Ok(_) => Some(()),
                        Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => Some(()),
                        Err(e) => {
                            eprintln!("create {name}: {e:?}");
                            None
                        }
                    },
                    Err(e) => {
                        eprintln!("create {name}: {e}");
                        None
                    }
                }
            },
        );
        created.push(name);
    }
    let killed = killed.unwrap();
    let survivor = (1..=3).find(|b| *b != killed).unwrap();
    let new_controller = view(cluster.node(survivor)).controller;
    assert_ne!(new_controller, killed, "a new controller was elected");
    assert_ne!(new_controller, -1);

    cluster.node(killed).restart();
    let expected: BTreeSet<String> = created.into_iter().collect();
    wait_for(
        "all three nodes to agree on every topic",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || {
            let sets: Vec<BTreeSet<String>> = cluster
                .nodes
                .iter()
                .map(|b| {
                    view(b)
                        .leaders
                        .keys()
                        .map(|(t, _)| t.clone())
                        .filter(|t| t.starts_with("loop-"))
                        .collect()
                })
                .collect();
            sets.iter().all(|s| *s == expected).then_some(())
        },
    );
}

#[test]
fn a_node_that_missed_many_changes_catches_up_from_a_snapshot() {
    // A snapshot every 10 entries, so the survivors drop the entries the dead node missed and
    // must send it a snapshot.
    let mut cluster =
        TestCluster::start_with(3, &["metadata.log.max.entries.between.snapshots=10"]);
    let controller = view(cluster.node(1)).controller;
    let victim = (1..=3).find(|b| *b != controller).unwrap();
    let survivors: Vec<String> = (1..=3)
        .filter(|b| *b != victim)
        .map(|b| cluster.node(b).bootstrap())
        .collect();
    cluster.node(victim).kill9();
    let bootstrap = survivors.join(",");
    let names: BTreeSet<String> = (0..40).map(|i| format!("snap-{i}")).collect();
    for name in &names {
        create(&bootstrap, name, 1);
    }
    let survivor_dir = cluster.node(controller).data_dir().to_path_buf();
    assert!(
        survivor_dir
            .join("__cluster_metadata/raft/snapshot.json")
            .exists(),
        "the active controller took a snapshot"
    );
    cluster.node(victim).restart();
    wait_for(
        "the restarted node to see every topic",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || {
            let seen: BTreeSet<String> = view(cluster.node(victim))
                .leaders
                .keys()
                .map(|(t, _)| t.clone())
                .filter(|t| t.starts_with("snap-"))
                .collect();
            (seen == names).then_some(())
        },
    );
}

#[test]
fn a_full_cluster_restart_keeps_topics_configs_offsets_and_records() {
    let mut cluster = TestCluster::start(3);
    let bootstrap = cluster.bootstrap();
    create(&bootstrap, "keep", 6);
    sluice(&[
        "topic",
        "alter-config",
        "-b",
        &bootstrap,
        "keep",
        "-c",
        "retention.ms=123456789",
    ]);
    let sent = produce_all(&bootstrap, "keep", 6, 4);
    // A committed offset.
    let group = format!("keep-group-{}", std::process::id());
    {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &bootstrap)
            .set("broker.address.family", "v4")
            .set("group.id", &group)
            .set("enable.auto.commit", "false");
        let c: BaseConsumer = c.create().unwrap();
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset("keep", 0, Offset::Offset(3))
            .unwrap();
        wait_for(
            "the commit",
            Duration::from_secs(30),
            Duration::from_millis(200),
            || c.commit(&tpl, rdkafka::consumer::CommitMode::Sync).ok(),
        );
    }
    let before = view(cluster.node(1));

    for b in &mut cluster.nodes {
        b.stop();
    }
    for b in &mut cluster.nodes {
        b.spawn_process();
    }
    for b in &mut cluster.nodes {
        b.wait_accepting();
    }

    let after = wait_for(
        "every partition led again",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || {
            let v = view(cluster.node(2));
            v.leaders.values().all(|l| *l >= 0).then_some(v)
        },
    );
    assert_eq!(
        before.leaders.keys().collect::<Vec<_>>(),
        after.leaders.keys().collect::<Vec<_>>(),
        "same topics and partitions"
    );
    assert_eq!(before.replicas, after.replicas, "same assignments");
    // Where leadership lands after the restart depends on who was last in sync when the nodes
    // went down one by one (until the preferred-leader check moves it back); a partition of a
    // topic created with every node up is led by its preferred replica.
    let keep = |v: &View| -> Vec<i32> {
        v.leaders
            .iter()
            .filter(|((t, _), _)| t == "keep")
            .map(|(_, l)| *l)
            .collect()
    };
    assert_eq!(
        keep(&before),
        keep(&after),
        "same leaders of the user topic"
    );
    let described = sluice(&["topic", "describe", "-b", &bootstrap, "keep", "--json"]);
    assert!(described.contains("123456789"), "{described}");
    read_all(&bootstrap, "keep", &sent);
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &bootstrap)
        .set("broker.address.family", "v4")
        .set("group.id", &group);
    let c: BaseConsumer = c.create().unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition("keep", 0);
    let committed = wait_for(
        "the committed offset",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || {
            c.committed_offsets(tpl.clone(), Duration::from_secs(5))
                .ok()
        },
    );
    assert_eq!(
        committed.find_partition("keep", 0).unwrap().offset(),
        Offset::Offset(3)
    );
    assert_eq!(cluster.running(), vec![1, 2, 3]);
}

#[test]
fn start_up_refusals_are_clear() {
    // --voters that does not name this node as a controller.
    let (p, c) = (free_port(), free_port());
    let mut b = Broker::prepare_node(
        4,
        p,
        node_args(c, &format!("1@127.0.0.1:{}", free_port()), &[]),
    );
    let (status, log) = b.start_expecting_failure();
    assert!(!status.success());
    assert!(log.contains("node 4 is not one of the voters"), "{log}");

    // --controller-listen disagreeing with this node's entry in --voters.
    let other = free_port();
    let mut b = Broker::prepare_node(1, p, node_args(c, &format!("1@127.0.0.1:{other}"), &[]));
    let (status, log) = b.start_expecting_failure();
    assert!(!status.success());
    assert!(log.contains("they must agree"), "{log}");

    let mut cluster = TestCluster::start(3);

    // A duplicate node id: a second broker-only node 4 while the first is alive.
    let learner = |voters: &str| {
        let mut args = vec![
            "--roles".to_string(),
            "broker".to_string(),
            "--controller-listen".to_string(),
            format!("127.0.0.1:{}", free_port()),
            "--voters".to_string(),
            voters.to_string(),
        ];
        args.extend(override_args(FAST_LIVENESS));
        Broker::prepare_node(4, free_port(), args)
    };
    let mut first = learner(&cluster.voters);
    first.spawn_process();
    first.wait_accepting();
    wait_for(
        "broker 4 in the cluster",
        Duration::from_secs(20),
        Duration::from_millis(100),
        || view(cluster.node(1)).brokers.contains(&4).then_some(()),
    );
    let mut second = learner(&cluster.voters);
    let (status, log) = second.start_expecting_failure();
    assert!(!status.success());
    assert!(log.contains("node ids must be unique"), "{log}");
    first.assert_running("after a duplicate tried to register");

    // A data directory of another cluster: node 4's directory joins a second cluster.
    let voters_before = cluster.voters.clone();
    first.stop();
    let mut other = TestCluster::start(1);
    let _ = voters_before;
    let mut args = vec![
        "--roles".to_string(),
        "broker".to_string(),
        "--controller-listen".to_string(),
        format!("127.0.0.1:{}", free_port()),
        "--voters".to_string(),
        other.voters.clone(),
    ];
    args.extend(override_args(FAST_LIVENESS));
    first.set_extra_args(args);
    let (status, log) = first.start_expecting_failure();
    assert!(!status.success());
    assert!(log.contains("belongs to cluster"), "{log}");
    assert_eq!(other.running(), vec![1]);
}
