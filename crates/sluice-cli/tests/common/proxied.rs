//! Three real `sluice` processes behind the chaos harness's proxies (every link between two
//! nodes and every client link goes through one), with one replicated partition to test on.

use std::time::Duration;

use rdkafka::admin::{AdminClient, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::ClientConfig;
use sluice_chaos::{metadata_leaders, Cluster, Leadership};

use super::{admin_opts, wait_for};

/// Bound on the waits here: three brokers and the clients share two cores.
const WAIT: Duration = Duration::from_secs(90);

/// A runtime for the proxies; it must live as long as the cluster.
pub fn proxy_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime for the proxies")
}

/// What node `id` itself says about `topic` (on its listen port, past every proxy).
pub fn seen_by(
    rt: &tokio::runtime::Runtime,
    cluster: &Cluster,
    id: i32,
    topic: &str,
) -> Option<Leadership> {
    let addr = cluster.node(id).listen_addr();
    rt.block_on(metadata_leaders(addr, Duration::from_secs(2), topic))
        .ok()
}

/// Three fsync nodes behind proxies, and `topic` created with one partition, three replicas and
/// `min.insync.replicas=2`, led by its preferred replica with all three in sync: that leader.
pub fn cluster_with_rf3_partition(rt: &tokio::runtime::Runtime, topic: &str) -> (Cluster, i32) {
    let cluster = rt
        .block_on(Cluster::start_multi(
            3,
            ["--durability", "fsync"].map(String::from).to_vec(),
        ))
        .expect("start the cluster");
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap())
        .create()
        .expect("admin");
    let created = rt
        .block_on(admin.create_topics(
            &[NewTopic::new(topic, 1, TopicReplication::Fixed(3)).set("min.insync.replicas", "2")],
            &admin_opts(),
        ))
        .expect("CreateTopics");
    assert_eq!(created[0], Ok(topic.to_string()));
    let leader = wait_for(
        "a leader with three in-sync replicas",
        WAIT,
        Duration::from_millis(200),
        || {
            let l = seen_by(rt, &cluster, 1, topic)?;
            let leader = *l.leaders.get(&0)?;
            (leader == l.replicas[&0][0] && l.isr[&0].len() == 3).then_some(leader)
        },
    );
    (cluster, leader)
}
