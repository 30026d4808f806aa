//! A cluster of real `sluice` processes on free loopback ports, every node a voter and a broker
//! (combined mode), for the multi-node black-box tests.

use std::time::Duration;

use kafka_protocol::messages::fetch_request::{FetchPartition, FetchRequest, FetchTopic};
use kafka_protocol::messages::fetch_response::PartitionData;
use kafka_protocol::messages::{BrokerId, MetadataRequest, TopicName};
use rdkafka::admin::{NewTopic, TopicReplication};
use rdkafka::producer::FutureProducer;
use rdkafka::ClientConfig;

use super::{
    admin, admin_opts, block_on, free_port, kstr, override_args, wait_for, Broker, RawConn,
};

/// A cluster's nodes, every one a voter (combined mode).
pub struct TestCluster {
    pub nodes: Vec<Broker>,
    /// The `--voters` every node was given.
    pub voters: String,
}

/// Settings that make fencing quick enough for tests (and still well above the heartbeat).
pub const FAST_LIVENESS: &[&str] = &[
    "broker.heartbeat.interval.ms=200",
    "broker.session.timeout.ms=3000",
];

pub fn node_args(controller_port: u16, voters: &str, overrides: &[&str]) -> Vec<String> {
    let mut args = vec![
        "--controller-listen".to_string(),
        format!("127.0.0.1:{controller_port}"),
        "--voters".to_string(),
        voters.to_string(),
    ];
    args.extend(override_args(overrides));
    args
}

impl TestCluster {
    pub fn start(n: u32) -> TestCluster {
        TestCluster::start_with(n, &[])
    }

    pub fn start_with(n: u32, extra: &[&str]) -> TestCluster {
        let overrides: Vec<&str> = FAST_LIVENESS.iter().chain(extra).copied().collect();
        let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
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
                Broker::prepare_node(i as u32 + 1, *p, node_args(*c, &voters, &overrides))
            })
            .collect();
        // Every process first: none finishes starting before a quorum of them runs.
        for b in &mut nodes {
            b.spawn_process();
        }
        for b in &mut nodes {
            b.wait_accepting();
        }
        TestCluster { nodes, voters }
    }

    /// Starts one more node, broker only (`--roles broker`: it follows the metadata quorum
    /// without voting), with the next id; returns the id once it accepts connections.
    pub fn add_broker(&mut self, extra: &[&str]) -> i32 {
        let id = self.nodes.len() as u32 + 1;
        let overrides: Vec<&str> = FAST_LIVENESS.iter().chain(extra).copied().collect();
        let mut args = vec!["--roles".to_string(), "broker".to_string()];
        args.extend(node_args(free_port(), &self.voters, &overrides));
        let mut b = Broker::prepare_node(id, free_port(), args);
        b.spawn_process();
        b.wait_accepting();
        self.nodes.push(b);
        id as i32
    }

    pub fn node(&mut self, id: i32) -> &mut Broker {
        &mut self.nodes[id as usize - 1]
    }

    pub fn bootstrap(&self) -> String {
        self.nodes
            .iter()
            .map(|b| b.bootstrap())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The bootstrap string of some of the nodes.
    pub fn bootstrap_of(&self, ids: &[i32]) -> String {
        ids.iter()
            .map(|id| self.nodes[*id as usize - 1].bootstrap())
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn running(&mut self) -> Vec<i32> {
        self.nodes
            .iter_mut()
            .filter_map(|b| b.is_running().then_some(b.node_id() as i32))
            .collect()
    }
}

/// Partition 0 of a topic as one node's Metadata reports it.
pub struct Partition0 {
    /// -1 while it has none.
    pub leader: i32,
    pub replicas: Vec<i32>,
    /// Sorted.
    pub isr: Vec<i32>,
}

/// `topic`'s partition 0 as node `b` reports it (Metadata v12); `None` if it does not know it.
pub fn partition0(b: &Broker, topic: &str) -> Option<Partition0> {
    let mut c = RawConn::connect(b);
    let resp = c.call(12, &MetadataRequest::default().with_topics(None));
    let t = resp
        .topics
        .iter()
        .find(|t| t.name.as_ref().is_some_and(|n| n.as_str() == topic))?;
    let p = t.partitions.iter().find(|p| p.partition_index == 0)?;
    let mut isr: Vec<i32> = p.isr_nodes.iter().map(|r| r.0).collect();
    isr.sort();
    Some(Partition0 {
        leader: p.leader_id.0,
        replicas: p.replica_nodes.iter().map(|r| r.0).collect(),
        isr,
    })
}

/// The active controller as node `b` reports it (Metadata's controller id).
pub fn active_controller(b: &Broker) -> i32 {
    let mut c = RawConn::connect(b);
    c.call(12, &MetadataRequest::default().with_topics(None))
        .controller_id
        .0
}

/// (leader, sorted ISR) of `topic`'s partition 0 as node `b` reports it; leader -1 while none.
pub fn leader_and_isr(b: &Broker, topic: &str) -> Option<(i32, Vec<i32>)> {
    partition0(b, topic).map(|p| (p.leader, p.isr))
}

/// A one-partition topic with three replicas; waits for a leader with the full ISR and
/// returns it.
pub fn create_rf3(cluster: &mut TestCluster, topic: &str) -> i32 {
    create_rf3_with(cluster, topic, &[])
}

/// [`create_rf3`] with topic configs.
pub fn create_rf3_with(cluster: &mut TestCluster, topic: &str, configs: &[(&str, &str)]) -> i32 {
    create_and_wait(cluster, topic, TopicReplication::Fixed(3), configs, None)
}

/// A one-partition topic on `replicas` in that order, whose first replica leads at creation;
/// waits until it leads with every replica in sync and returns it.
pub fn create_assigned(
    cluster: &mut TestCluster,
    topic: &str,
    replicas: &[i32],
    configs: &[(&str, &str)],
) -> i32 {
    let first = replicas[0];
    create_and_wait(
        cluster,
        topic,
        TopicReplication::Variable(&[replicas]),
        configs,
        Some(first),
    )
}

/// Creates one partition of `topic` and waits for a leader (`leader`, if given) with a full ISR.
fn create_and_wait(
    cluster: &mut TestCluster,
    topic: &str,
    replication: TopicReplication<'_>,
    configs: &[(&str, &str)],
    leader: Option<i32>,
) -> i32 {
    let replicas = match replication {
        TopicReplication::Fixed(n) => n as usize,
        TopicReplication::Variable(a) => a[0].len(),
    };
    let mut new = NewTopic::new(topic, 1, replication);
    for (k, v) in configs {
        new = new.set(k, v);
    }
    let res = block_on(admin(cluster.node(1)).create_topics(&[new], &admin_opts()))
        .expect("CreateTopics");
    assert_eq!(res[0], Ok(topic.to_string()));
    wait_for(
        "a leader with the full ISR",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || {
            leader_and_isr(cluster.node(1), topic)
                .filter(|(l, isr)| {
                    *l > 0 && leader.is_none_or(|w| w == *l) && isr.len() == replicas
                })
                .map(|(l, _)| l)
        },
    )
}

/// An idempotent `acks=all` producer that refreshes its metadata every second.
pub fn acks_all_producer(bootstrap: &str) -> FutureProducer {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap)
        .set("broker.address.family", "v4")
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("message.timeout.ms", "60000")
        .set("topic.metadata.refresh.interval.ms", "1000")
        .set("linger.ms", "5");
    c.create().expect("producer")
}

/// A consumer Fetch (replica id -1, no session, no wait) of `topic`-0 from `offset` at
/// `version` over `conn`, naming `rack` (v11+ only: older versions have no field for it).
pub fn consumer_fetch(
    conn: &mut RawConn,
    version: i16,
    topic: &str,
    offset: i64,
    rack: &str,
) -> PartitionData {
    consumer_fetch_of(conn, version, topic, 0, offset, rack)
}

/// [`consumer_fetch`] of partition `partition`.
pub fn consumer_fetch_of(
    conn: &mut RawConn,
    version: i16,
    topic: &str,
    partition: i32,
    offset: i64,
    rack: &str,
) -> PartitionData {
    let req = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(0)
        .with_min_bytes(0)
        .with_max_bytes(8 << 20)
        .with_session_id(0)
        .with_session_epoch(-1)
        .with_rack_id(kstr(if version >= 11 { rack } else { "" }))
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(kstr(topic)))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(partition)
                .with_fetch_offset(offset)
                .with_partition_max_bytes(8 << 20)
                .with_current_leader_epoch(-1)
                .with_last_fetched_epoch(-1)
                .with_log_start_offset(-1)])]);
    let mut resp = conn.call(version, &req);
    assert_eq!(resp.error_code, 0, "fetch v{version} error");
    resp.responses.remove(0).partitions.remove(0)
}

/// Every record of `topic`-0 that node `addr` itself holds below its high watermark, as
/// (offset, value): consumer Fetches (v12, no rack) sent to that node, which a follower answers
/// from its own log since KIP-392. `None` if the node does not serve the partition (an error).
pub fn replica_records(addr: std::net::SocketAddr, topic: &str) -> Option<Vec<(i64, String)>> {
    replica_records_of(addr, topic, 0)
}

/// [`replica_records`] of partition `partition`.
pub fn replica_records_of(
    addr: std::net::SocketAddr,
    topic: &str,
    partition: i32,
) -> Option<Vec<(i64, String)>> {
    let mut conn = RawConn::connect_addr(addr);
    let mut out = Vec::new();
    let mut offset = 0i64;
    loop {
        let p = consumer_fetch_of(&mut conn, 12, topic, partition, offset, "");
        if p.error_code != 0 {
            return None;
        }
        let mut bytes = p.records.clone().unwrap_or_default();
        let batches = kafka_protocol::records::RecordBatchDecoder::decode_all(&mut bytes)
            .expect("decode fetched records");
        for r in batches.into_iter().flat_map(|set| set.records) {
            if r.offset >= offset {
                let v = r.value.map(|v| String::from_utf8_lossy(&v).into_owned());
                out.push((r.offset, v.unwrap_or_default()));
                offset = r.offset + 1;
            }
        }
        if offset >= p.high_watermark {
            return Some(out);
        }
    }
}

/// Waits until every node in `nodes` (id, address) holds exactly `expected` (offset, value) in
/// `topic`-0: the same log on every replica.
pub fn wait_replicas_hold(
    nodes: &[(i32, std::net::SocketAddr)],
    topic: &str,
    expected: &[(i64, String)],
) {
    for &(id, addr) in nodes {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let held = replica_records(addr, topic);
            if held.as_deref() == Some(expected) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "node {id}'s replica of {topic}-0 is not the committed log: {held:?}, expected \
                 {expected:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// Every record of `topic`-0 from the start, as (offset, value), read through `bootstrap` (from
/// the partition's leader) until `at_least` arrived, then on until nothing more comes for half a
/// second, so duplicates cannot hide past what was asked for.
pub fn read_partition0(bootstrap: &str, topic: &str, at_least: usize) -> Vec<(i64, String)> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::{Message, Offset, TopicPartitionList};
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("broker.address.family", "v4")
        .set("group.id", format!("read-it-{}", std::process::id()))
        .set("enable.auto.commit", "false")
        .set("topic.metadata.refresh.interval.ms", "1000")
        .set("fetch.wait.max.ms", "100")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .unwrap();
    c.assign(&tpl).unwrap();
    let record = |m: &rdkafka::message::BorrowedMessage<'_>| {
        let v = String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned();
        (m.offset(), v)
    };
    let mut got = Vec::new();
    wait_for(
        &format!("{at_least} records of {topic}"),
        Duration::from_secs(60),
        Duration::from_millis(1),
        || {
            if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
                got.push(record(&m));
            }
            (got.len() >= at_least).then_some(())
        },
    );
    while let Some(Ok(m)) = c.poll(Duration::from_millis(500)) {
        got.push(record(&m));
    }
    got
}
