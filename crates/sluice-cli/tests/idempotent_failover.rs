//! An idempotent producer whose answers are lost while its partition's leader dies (issue 14):
//! the retries it sends to the new leader are de-duplicated there, because a follower keeps the
//! producer state of what it replicates, so the log ends with every record exactly once, in
//! order, on every replica.
//!
//! Three real `sluice` processes behind the chaos harness's proxies (clients reach each node
//! through its proxy). The leader's proxy drops every answer for a while: the producer's
//! requests still arrive and are appended and replicated, but it hears nothing, times them out
//! and sends them again. Then the leader is killed -9 and the retries go to the new leader.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::cluster::{read_partition0, wait_replicas_hold};
use common::proxied::{cluster_with_rf3_partition, proxy_runtime};
use common::*;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use sluice_chaos::{Direction, Fault};

const TOPIC: &str = "idempotent-failover";
/// Records sent.
const N: usize = 1500;
/// Bound on every wait: three brokers and the clients share two cores.
const WAIT: Duration = Duration::from_secs(90);

#[test]
fn retries_of_lost_answers_to_a_killed_leader_are_deduplicated_by_the_next() {
    // The proxies run on this runtime for the whole test.
    let rt = proxy_runtime();
    let (mut cluster, leader) = cluster_with_rf3_partition(&rt, TOPIC);
    let others: Vec<i32> = (1..=3).filter(|&id| id != leader).collect();

    // Several batches in flight; a request unanswered for 2 s is sent again (same sequence
    // numbers); nothing times out for good.
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap())
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("request.timeout.ms", "2000")
        .set("retry.backoff.ms", "100")
        .set("message.timeout.ms", "120000")
        .set("topic.metadata.refresh.interval.ms", "1000")
        .create()
        .expect("producer");
    let acked = Arc::new(AtomicU64::new(0));
    let counting = acked.clone();
    let sender = std::thread::spawn(move || {
        let mut pending = std::collections::VecDeque::new();
        let mut offsets = Vec::with_capacity(N);
        for i in 0..N {
            let value = format!("v-{i}");
            let f = producer
                .send_result(
                    FutureRecord::<(), _>::to(TOPIC)
                        .partition(0)
                        .payload(&value),
                )
                .unwrap_or_else(|(e, _)| panic!("enqueue {value}: {e}"));
            pending.push_back((value, f));
            while pending.len() > 20 {
                let (value, f) = pending.pop_front().expect("pending");
                offsets.push(deliver(value, f));
                counting.fetch_add(1, Ordering::Relaxed);
            }
            std::thread::sleep(Duration::from_millis(3));
        }
        for (value, f) in pending {
            offsets.push(deliver(value, f));
            counting.fetch_add(1, Ordering::Relaxed);
        }
        offsets
    });

    wait_for(
        "the first acknowledgements",
        WAIT,
        Duration::from_millis(50),
        || (acked.load(Ordering::Relaxed) >= 200).then_some(()),
    );
    eprintln!("--- node {leader}'s proxy drops every answer");
    let proxy = cluster.node(leader).proxy();
    let dropped_before = proxy.stats().dropped(Direction::ServerToClient);
    proxy.set(Direction::ServerToClient, Fault::Drop);
    wait_for(
        "answers to be dropped",
        WAIT,
        Duration::from_millis(20),
        || {
            let dropped = proxy.stats().dropped(Direction::ServerToClient) - dropped_before;
            (dropped > 0).then_some(())
        },
    );
    // The fault lasts longer than a request timeout: requests are sent again (same sequence
    // numbers) and their answers dropped too.
    std::thread::sleep(Duration::from_secs(5));
    let during = acked.load(Ordering::Relaxed);
    eprintln!("--- kill -9 node {leader}, the leader ({during} acknowledged so far)");
    cluster
        .node_mut(leader)
        .kill9()
        .expect("kill -9 the leader");
    cluster.node(leader).proxy().heal();

    let log_offsets = sender.join().expect("the sender panicked");
    eprintln!("every record acknowledged; node {leader} returns");
    rt.block_on(cluster.node_mut(leader).restart())
        .expect("restart the old leader");

    let bootstrap_of_others = others
        .iter()
        .map(|&id| cluster.node(id).addr().to_string())
        .collect::<Vec<_>>()
        .join(",");
    let log = read_partition0(&bootstrap_of_others, TOPIC, N);
    let values: Vec<&str> = log.iter().map(|(_, v)| v.as_str()).collect();
    let expected: Vec<String> = (0..N).map(|i| format!("v-{i}")).collect();
    assert_eq!(
        values,
        expected.iter().map(String::as_str).collect::<Vec<_>>(),
        "the log holds every record exactly once, in the order sent"
    );
    let acked_at: Vec<i64> = log_offsets;
    let logged_at: Vec<i64> = log.iter().map(|(o, _)| *o).collect();
    assert_eq!(
        acked_at, logged_at,
        "each record was acknowledged at the offset the log holds it at"
    );
    let nodes: Vec<_> = (1..=3).map(|id| (id, cluster.node(id).addr())).collect();
    wait_replicas_hold(&nodes, TOPIC, &log);
}

/// Waits for one delivery; it must succeed. Its offset.
fn deliver(value: String, f: rdkafka::producer::DeliveryFuture) -> i64 {
    match block_on(f) {
        Ok(Ok(d)) => d.offset,
        Ok(Err((e, _))) => panic!("{value} was not acknowledged: {e}"),
        Err(_) => panic!("{value}: the delivery report was dropped"),
    }
}
