//! The failover-time measurement for docs/benchmarks.md (not a test: it measures and prints,
//! asserting nothing about speed). Ten trials on a 3-node cluster of real processes with the
//! default liveness settings: kill -9 the leader of an RF=3 partition, then time until an
//! `acks=all` write succeeds at the new leader. Prints every trial, the median and the worst.
//!
//! `cargo bench -p sluice-cli --bench failover_time`

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Duration;

use common::cluster::*;
use common::*;
use rdkafka::producer::FutureRecord;

fn main() {
    const TOPIC: &str = "failover-time";
    const TRIALS: usize = 10;
    // The default liveness settings (the harness's fast ones are overridden back): the
    // figure users get.
    let mut cluster = TestCluster::start_with(
        3,
        &[
            "broker.heartbeat.interval.ms=300",
            "broker.session.timeout.ms=3000",
        ],
    );
    create_rf3(&mut cluster, TOPIC);
    let mut times = Vec::new();
    for trial in 0..TRIALS {
        let (leader, _) = wait_for(
            "a leader with the full ISR",
            Duration::from_secs(60),
            Duration::from_millis(100),
            || {
                let any = (1..=3).find(|id| cluster.nodes[*id as usize - 1].is_running_ref())?;
                leader_and_isr(cluster.node(any), TOPIC).filter(|(l, isr)| *l > 0 && isr.len() == 3)
            },
        );
        let survivors: Vec<i32> = (1..=3).filter(|id| *id != leader).collect();
        let bootstrap = cluster.bootstrap_of(&survivors);
        let producer = acks_all_producer(&bootstrap);
        // Warm the client up against the current leader first.
        block_on(
            producer.send(
                FutureRecord::<(), _>::to(TOPIC)
                    .partition(0)
                    .payload("warm"),
                Duration::from_secs(30),
            ),
        )
        .unwrap_or_else(|(e, _)| panic!("warm-up: {e}"));
        let start = std::time::Instant::now();
        cluster.node(leader).kill9();
        block_on(
            producer.send(
                FutureRecord::<(), _>::to(TOPIC)
                    .partition(0)
                    .payload(&format!("t-{trial}")),
                Duration::from_secs(60),
            ),
        )
        .unwrap_or_else(|(e, _)| panic!("trial {trial}: {e}"));
        let took = start.elapsed();
        eprintln!("trial {trial}: leader {leader} killed; acks=all write at the new leader after {took:?}");
        times.push(took);
        cluster.node(leader).restart();
    }
    times.sort();
    eprintln!(
        "failover (kill -9 of the leader to the first acks=all success), {TRIALS} trials: median {:?}, worst {:?}",
        times[TRIALS / 2],
        times[TRIALS - 1]
    );
}
