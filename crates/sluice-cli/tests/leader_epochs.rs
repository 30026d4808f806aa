//! Leader epochs as clients see them (KIP-101, KIP-320): a new broker incarnation leads its
//! partitions under a new epoch; Metadata, ListOffsets and OffsetForLeaderEpoch report it from
//! the partition's epoch cache; a fetch naming an old epoch is fenced and one naming a future
//! epoch is told to wait; and a real client consuming across the epoch change carries on.

mod common;

use std::time::Duration;

use common::*;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use kafka_protocol::messages::{
    BrokerId, FetchRequest, ListOffsetsRequest, MetadataRequest, OffsetForLeaderEpochRequest,
    TopicName,
};
use kafka_protocol::ResponseError;
use rdkafka::consumer::Consumer;
use rdkafka::{Offset, TopicPartitionList};

const TOPIC: &str = "epochs";

fn leader_epoch(conn: &mut RawConn) -> i32 {
    let req = MetadataRequest::default().with_topics(Some(vec![
        MetadataRequestTopic::default().with_name(Some(TopicName(kstr(TOPIC))))
    ]));
    let resp = conn.call(12, &req);
    let p = &resp.topics[0].partitions[0];
    assert_eq!(p.error_code, 0, "metadata for {TOPIC}");
    p.leader_epoch
}

/// `(error, epoch, end offset)` of OffsetForLeaderEpoch for `epoch`, naming `current`.
fn end_of_epoch(conn: &mut RawConn, current: i32, epoch: i32) -> (i16, i32, i64) {
    let req = OffsetForLeaderEpochRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![OffsetForLeaderTopic::default()
            .with_topic(TopicName(kstr(TOPIC)))
            .with_partitions(vec![OffsetForLeaderPartition::default()
                .with_partition(0)
                .with_current_leader_epoch(current)
                .with_leader_epoch(epoch)])]);
    let resp = conn.call(4, &req);
    let p = &resp.topics[0].partitions[0];
    (p.error_code, p.leader_epoch, p.end_offset)
}

/// `(error, record bytes)` of a fetch from offset 0 naming `current`.
fn fetch(conn: &mut RawConn, current: i32) -> (i16, usize) {
    let req = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(0)
        .with_max_bytes(1 << 20)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(kstr(TOPIC)))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(0)
                .with_current_leader_epoch(current)
                .with_partition_max_bytes(1 << 20)])]);
    let resp = conn.call(12, &req);
    let p = &resp.responses[0].partitions[0];
    (p.error_code, p.records.as_ref().map_or(0, |r| r.len()))
}

/// `(offset, leader epoch)` ListOffsets reports for `timestamp`.
fn list_offset(conn: &mut RawConn, timestamp: i64, current: i32) -> (i16, i64, i32) {
    let req = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(TopicName(kstr(TOPIC)))
            .with_partitions(vec![ListOffsetsPartition::default()
                .with_partition_index(0)
                .with_current_leader_epoch(current)
                .with_timestamp(timestamp)])]);
    let resp = conn.call(7, &req);
    let p = &resp.topics[0].partitions[0];
    (p.error_code, p.offset, p.leader_epoch)
}

#[test]
fn leader_epochs_fence_old_readers_and_end_where_the_next_begins() {
    let mut broker = Broker::start();
    create_topic_sync(&broker, TOPIC, 1);
    let first = {
        let mut conn = RawConn::connect(&broker);
        leader_epoch(&mut conn)
    };
    let produce_n = |broker: &Broker, from: usize, n: usize| {
        let recs: Vec<Rec> = (from..from + n)
            .map(|i| Rec::kv(&format!("k{i}"), &format!("v{i}")))
            .collect();
        let p = producer(broker, &[]);
        block_on(produce(&p, TOPIC, Some(0), &recs));
    };
    produce_n(&broker, 0, 3);

    // A consumer reads the first epoch's records, then keeps its assignment across a restart.
    let consumer = consumer(&broker, &[("group.id", "epochs")]);
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(TOPIC, 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    assert_eq!(poll_n(&consumer, 3, Duration::from_secs(30)).len(), 3);

    tracing_phase("--- restart: a new incarnation leads under a new epoch");
    broker.stop();
    // A clean shutdown checkpoints every partition's high watermark (Kafka's format).
    let checkpoint =
        std::fs::read_to_string(broker.data_dir().join("replication-offset-checkpoint")).unwrap();
    assert!(
        checkpoint.lines().any(|l| l == format!("{TOPIC} 0 3")),
        "high watermark of {TOPIC}-0 in the checkpoint:\n{checkpoint}"
    );
    broker.restart();
    let mut conn = RawConn::connect(&broker);
    let second = leader_epoch(&mut conn);
    assert!(
        second > first,
        "a restart must lead under a new epoch ({first} -> {second})"
    );
    produce_n(&broker, 3, 2);

    // The consumer that read under the old epoch goes on without a gap or a repeat.
    let rest = poll_through_restart(&consumer, 2, Duration::from_secs(60));
    let offsets: Vec<i64> = rest.iter().map(|g| g.offset).collect();
    assert_eq!(offsets, [3, 4]);
    assert_no_more(&consumer, Duration::from_secs(1));

    // OffsetForLeaderEpoch: the first epoch ends where the second began; the latest at the end.
    assert_eq!(end_of_epoch(&mut conn, second, first), (0, first, 3));
    assert_eq!(end_of_epoch(&mut conn, second, second), (0, second, 5));
    // An epoch above every known one is undefined (Kafka's UNDEFINED_EPOCH_OFFSET).
    assert_eq!(end_of_epoch(&mut conn, -1, second + 5), (0, -1, -1));
    assert_eq!(
        end_of_epoch(&mut conn, first, first).0,
        ResponseError::FencedLeaderEpoch.code()
    );
    assert_eq!(
        end_of_epoch(&mut conn, second + 1, second).0,
        ResponseError::UnknownLeaderEpoch.code()
    );

    // Fetch checks the epoch the reader names.
    let (error, bytes) = fetch(&mut conn, second);
    assert_eq!((error, bytes > 0), (0, true));
    assert_eq!(fetch(&mut conn, -1).0, 0, "no epoch named: no check");
    assert_eq!(
        fetch(&mut conn, first).0,
        ResponseError::FencedLeaderEpoch.code()
    );
    assert_eq!(
        fetch(&mut conn, second + 1).0,
        ResponseError::UnknownLeaderEpoch.code()
    );

    // ListOffsets: the latest offset under the current epoch, the earliest under the epoch
    // that wrote it; and the same fencing.
    assert_eq!(list_offset(&mut conn, -1, second), (0, 5, second));
    assert_eq!(list_offset(&mut conn, -2, -1), (0, 0, first));
    assert_eq!(
        list_offset(&mut conn, -1, first).0,
        ResponseError::FencedLeaderEpoch.code()
    );

    tracing_phase("--- kill -9: recovery keeps the epochs");
    broker.kill9();
    broker.restart();
    let mut conn = RawConn::connect(&broker);
    let third = leader_epoch(&mut conn);
    assert!(third > second);
    assert_eq!(end_of_epoch(&mut conn, third, first), (0, first, 3));
    assert_eq!(end_of_epoch(&mut conn, third, second), (0, second, 5));
    assert_eq!(end_of_epoch(&mut conn, third, third), (0, third, 5));
}

/// Polls `n` records, letting the connection errors of the restart pass (librdkafka reports them
/// and reconnects); any other error fails the test.
fn poll_through_restart(
    c: &rdkafka::consumer::BaseConsumer,
    n: usize,
    timeout: Duration,
) -> Vec<Got> {
    use rdkafka::error::KafkaError;
    use rdkafka::types::RDKafkaErrorCode as Code;
    let deadline = std::time::Instant::now() + timeout;
    let mut out = Vec::new();
    while out.len() < n {
        let now = std::time::Instant::now();
        assert!(now < deadline, "only {} of {n} records", out.len());
        match c.poll(deadline - now) {
            None | Some(Err(KafkaError::PartitionEOF(_))) => {}
            Some(Ok(m)) => out.push(to_got(&m)),
            Some(Err(KafkaError::MessageConsumption(
                Code::AllBrokersDown | Code::BrokerTransportFailure,
            ))) => {}
            Some(Err(e)) => panic!("consumer error after {} records: {e}", out.len()),
        }
    }
    out
}

fn tracing_phase(what: &str) {
    eprintln!("{what}");
}
