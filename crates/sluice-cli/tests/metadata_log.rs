//! The metadata log on disk (issue 9; since the controller quorum, the Raft log): a torn last
//! entry is cut at start-up and the broker serves; damage before the last entry stops start-up
//! with an error naming the file and line, instead of a broker running on a guessed cluster
//! state.

mod common;

use std::io::Write;

use common::*;
use rdkafka::consumer::Consumer;

fn topic_exists(broker: &Broker, name: &str) -> bool {
    let c = consumer(broker, &[]);
    c.fetch_metadata(Some(name), std::time::Duration::from_secs(5))
        .map(|m| {
            m.topics()
                .iter()
                .any(|t| t.name() == name && t.error().is_none())
        })
        .unwrap_or(false)
}

#[test]
fn torn_tail_is_cut_and_middle_damage_refuses_to_start() {
    let mut broker = Broker::start();
    create_topic_sync(&broker, "kept", 2);
    broker.stop();
    let log = broker.data_dir().join("__cluster_metadata/raft/log");
    let good = std::fs::read(&log).unwrap();
    assert!(
        good[8] == b' ',
        "records are checksummed: {:?}",
        String::from_utf8_lossy(&good)
    );

    eprintln!("--- a torn last record (an append cut short by a crash) is dropped");
    std::fs::OpenOptions::new()
        .append(true)
        .open(&log)
        .unwrap()
        .write_all(b"0badc0de {\"log_id\":{\"leader_id\":{\"term\":1,\"node_i")
        .unwrap();
    broker.restart();
    assert!(topic_exists(&broker, "kept"));
    block_on(round_trip(&broker, "after-torn-tail"));
    broker.stop();
    let text = std::fs::read_to_string(broker.log_path()).unwrap();
    assert!(
        text.contains("cutting a torn last Raft log entry"),
        "{}",
        broker.log_tail()
    );

    eprintln!("--- a flipped byte in an earlier record stops start-up, naming file and line");
    let mut bytes = std::fs::read(&log).unwrap();
    let line2 = bytes.iter().position(|&b| b == b'\n').unwrap() + 1;
    bytes[line2 + 30] ^= 0x01;
    std::fs::write(&log, &bytes).unwrap();
    let (status, tail) = broker.start_expecting_failure();
    assert!(!status.success(), "must not start: {status}");
    assert!(
        tail.contains("raft/log") && tail.contains("line 2") && tail.contains("checksum"),
        "the error names the file, the line and why\n{tail}"
    );
    assert_eq!(
        std::fs::read(&log).unwrap(),
        bytes,
        "nothing was cut or rewritten"
    );
}
