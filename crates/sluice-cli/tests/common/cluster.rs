//! A cluster of real `sluice` processes on free loopback ports, every node a voter and a broker
//! (combined mode), for the multi-node black-box tests.

use std::time::Duration;

use kafka_protocol::messages::MetadataRequest;
use rdkafka::admin::{NewTopic, TopicReplication};
use rdkafka::producer::FutureProducer;
use rdkafka::ClientConfig;

use super::{admin, admin_opts, block_on, free_port, override_args, wait_for, Broker, RawConn};

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
    let mut new = NewTopic::new(topic, 1, TopicReplication::Fixed(3));
    for (k, v) in configs {
        new = new.set(k, v);
    }
    let res = block_on(admin(cluster.node(1)).create_topics(&[new], &admin_opts()))
        .expect("CreateTopics");
    assert_eq!(res[0], Ok(topic.to_string()));
    wait_for(
        "a leader with the full ISR",
        Duration::from_secs(20),
        Duration::from_millis(100),
        || {
            leader_and_isr(cluster.node(1), topic)
                .filter(|(l, isr)| *l > 0 && isr.len() == 3)
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
