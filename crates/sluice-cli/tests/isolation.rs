//! A partition leader cut off from the controller and from its followers while its clients
//! still reach it (issue 13): it can no longer acknowledge `acks=all` writes, the rest of the
//! cluster elects a new leader and keeps taking writes, and once the cut heals the old leader
//! drops what it appended but never committed, follows, and ends with exactly the committed log.
//!
//! Three real `sluice` processes with a proxy on every link between two nodes (the chaos
//! harness's `sluice_chaos::Cluster::start_multi`); `Cluster::isolate` cuts the leader's controller and
//! replication links both ways and leaves its client link alone.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::cluster::{read_partition0, wait_replicas_hold};
use common::proxied::{cluster_with_rf3_partition, proxy_runtime, seen_by};
use common::*;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;

const TOPIC: &str = "isolated-leader";
/// Bound on every wait: three brokers and the clients share two cores.
const WAIT: Duration = Duration::from_secs(90);

/// Sends `prefix-0..n` to partition 0 with acks=all, one at a time; each must be acknowledged.
fn send_all(
    rt: &tokio::runtime::Runtime,
    bootstrap: &str,
    prefix: &str,
    n: usize,
) -> Vec<(i64, String)> {
    let p: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .set("linger.ms", "0")
        .set("message.timeout.ms", "60000")
        .set("topic.metadata.refresh.interval.ms", "1000")
        .create()
        .expect("producer");
    (0..n)
        .map(|i| {
            let v = format!("{prefix}-{i}");
            let r = rt.block_on(p.send(
                FutureRecord::<(), _>::to(TOPIC).partition(0).payload(&v),
                Duration::from_secs(0),
            ));
            let offset = r.unwrap_or_else(|(e, _)| panic!("{v}: {e}")).offset;
            (offset, v)
        })
        .collect()
}

/// A raw acks=all produce straight to `addr` (no client library to re-route it): the answer.
fn produce_to(addr: SocketAddr, tag: &str) -> i16 {
    let mut conn = RawConn::connect_addr(addr);
    let r = produce_raw(&mut conn, TOPIC, 0, batch(-1, -1, -1, 3, 1, tag));
    r.error_code
}

#[test]
fn an_isolated_leader_acknowledges_nothing_and_truncates_what_it_never_committed() {
    // The proxies run on this runtime for the whole test.
    let rt = proxy_runtime();
    let (cluster, leader) = cluster_with_rf3_partition(&rt, TOPIC);
    let bootstrap_of = |ids: &[i32]| {
        ids.iter()
            .map(|&id| cluster.node(id).addr().to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    let others: Vec<i32> = (1..=3).filter(|&id| id != leader).collect();
    let mut committed = send_all(&rt, &cluster.bootstrap(), "before", 20);

    assert!(cluster.isolate(leader));
    // Straight to the isolated leader (its client link works): it may append, but it cannot
    // replicate, so it must not acknowledge.
    let leader_addr = cluster.node(leader).addr();
    let code = produce_to(leader_addr, "isolated-a");
    assert_ne!(
        code, 0,
        "the isolated leader acknowledged an acks=all write"
    );
    // The others fence it and elect a new leader from the ISR.
    let new_leader = wait_for("a new leader", WAIT, Duration::from_millis(200), || {
        let l = seen_by(&rt, &cluster, others[0], TOPIC)?;
        l.leaders.get(&0).copied().filter(|id| others.contains(id))
    });
    committed.extend(send_all(&rt, &bootstrap_of(&others), "after", 20));
    // The old leader still believes it leads (nothing reaches it), and still cannot acknowledge.
    let still = seen_by(&rt, &cluster, leader, TOPIC).expect("the isolated node answers Metadata");
    assert_eq!(still.leaders.get(&0), Some(&leader), "{still:?}");
    let code = produce_to(leader_addr, "isolated-b");
    assert_ne!(
        code, 0,
        "the deposed, isolated leader acknowledged an acks=all write"
    );

    let through_new = read_partition0(&bootstrap_of(&others), TOPIC, committed.len());
    assert_eq!(
        through_new, committed,
        "read through new leader {new_leader}"
    );

    // Healed: the old leader learns the new epoch, truncates, follows and rejoins the ISR.
    cluster.rejoin(leader);
    wait_for(
        "the old leader back in the ISR",
        WAIT,
        Duration::from_millis(200),
        || {
            let l = seen_by(&rt, &cluster, others[0], TOPIC)?;
            l.isr
                .get(&0)
                .filter(|isr| isr.contains(&leader))
                .map(|_| ())
        },
    );
    // Leadership goes back to it (a preferred election), so a read now comes from its log.
    let bootstrap = cluster.bootstrap();
    wait_for(
        "the old leader leading again",
        WAIT,
        Duration::from_millis(500),
        || {
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
                .args(["topic", "elect-leaders", "-b", &bootstrap, TOPIC])
                .output()
                .ok()?;
            if !out.status.success() {
                eprintln!("elect-leaders: {}", String::from_utf8_lossy(&out.stderr));
            }
            let l = seen_by(&rt, &cluster, leader, TOPIC)?;
            (l.leaders.get(&0) == Some(&leader)).then_some(())
        },
    );
    let through_old = read_partition0(&leader_addr.to_string(), TOPIC, committed.len());
    assert_eq!(
        through_old, committed,
        "the old leader holds exactly the committed log, none of its isolated appends"
    );
    // And each replica on its own (a follower serves its log below its HW): identical logs.
    let nodes: Vec<_> = (1..=3).map(|id| (id, cluster.node(id).addr())).collect();
    wait_replicas_hold(&nodes, TOPIC, &committed);
}
