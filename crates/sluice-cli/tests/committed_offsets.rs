//! Committed offsets against untrusted disk contents and topic deletion (issue 9).
//!
//! - `__consumer_offsets` damaged on disk (a bit flipped inside an old segment, a well-framed
//!   batch of garbage records appended to the active one): the broker starts, logs what it
//!   skipped, serves, and every commit not in the damaged batch is still fetched, at this
//!   start and the next.
//! - Deleting a topic drops its committed offsets; a topic created again under the same name
//!   does not inherit them.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use common::*;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};

fn group_consumer(broker: &Broker, group: &str) -> BaseConsumer {
    consumer(broker, &[("group.id", group)])
}

/// A simple (non-member) synchronous commit of one offset with `metadata`.
fn commit(c: &BaseConsumer, topic: &str, partition: i32, offset: i64, metadata: &str) {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(offset))
        .expect("add partition");
    tpl.find_partition(topic, partition)
        .expect("just added")
        .set_metadata(metadata);
    wait_for(
        &format!("commit {topic}-{partition}={offset}"),
        CLIENT_TIMEOUT,
        Duration::from_millis(100),
        || match c.commit(&tpl, CommitMode::Sync) {
            Ok(()) => Some(()),
            Err(e) => {
                eprintln!("commit failed, retrying: {e}");
                None
            }
        },
    );
}

/// Committed offsets of `group` for partitions `0..n` of `topic` (`None`: nothing committed).
fn committed(broker: &Broker, group: &str, topic: &str, n: i32) -> Vec<Option<i64>> {
    common::committed(broker, group, topic, n)
        .into_values()
        .map(|o| match o {
            Offset::Offset(o) => Some(o),
            _ => None,
        })
        .collect()
}

fn segment_files(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("partition dir")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    files.sort();
    files
}

/// The offset after the last batch of a segment file (walking the batch headers).
fn next_offset(segment: &[u8], base: i64) -> i64 {
    let mut pos = 0;
    let mut next = base;
    while pos + 61 <= segment.len() {
        let base_offset = i64::from_be_bytes(segment[pos..pos + 8].try_into().unwrap());
        let len = i32::from_be_bytes(segment[pos + 8..pos + 12].try_into().unwrap()) as usize;
        let delta = i32::from_be_bytes(segment[pos + 23..pos + 27].try_into().unwrap());
        next = base_offset + i64::from(delta) + 1;
        pos += 12 + len;
    }
    next
}

fn offset_key(group: &str, topic: &str, partition: i32) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(1);
    b.put_i16(group.len() as i16);
    b.put_slice(group.as_bytes());
    b.put_i16(topic.len() as i16);
    b.put_slice(topic.as_bytes());
    b.put_i32(partition);
    b.freeze()
}

fn offset_value(offset: i64) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(3);
    b.put_i64(offset);
    b.put_i32(-1);
    b.put_i16(0);
    b.put_i64(1_700_000_000_000);
    b.freeze()
}

/// A valid (CRC-correct) batch at `base` whose records are mostly garbage to the coordinator.
fn garbage_batch(base: i64, group: &str) -> Vec<u8> {
    let records: Vec<(Option<Bytes>, Option<Bytes>)> = vec![
        (
            Some(Bytes::from_static(&[0, 9, 1, 2])),
            Some(offset_value(1)),
        ), // key version 9
        (
            Some(Bytes::from_static(&[0, 1, 0, 60, b'g'])),
            Some(offset_value(1)),
        ), // truncated
        (None, Some(offset_value(1))), // no key
        (
            Some(offset_key(group, "t", 0)),
            Some(Bytes::from_static(&[0, 77, 0xde, 0xad])), // value version 77, not a tombstone
        ),
        (Some(offset_key(group, "t", 3)), Some(offset_value(43))), // a good one after them
    ];
    let records: Vec<Record> = records
        .into_iter()
        .enumerate()
        .map(|(i, (key, value))| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: base + i as i64,
            sequence: i as i32 - 1,
            timestamp: 1_700_000_000_000,
            key,
            value,
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .expect("encode garbage batch");
    buf.to_vec()
}

#[test]
fn damaged_offsets_on_disk_are_skipped_and_the_broker_serves() {
    let mut broker = Broker::start_with(&[
        "offsets.topic.num.partitions=1",
        "offsets.topic.segment.bytes=1024",
    ]);
    create_topic_sync(&broker, "t", 6);
    let group = "damaged-group";
    let c = group_consumer(&broker, group);
    eprintln!("--- commits: before, damaged, fillers (to roll segments), after");
    commit(&c, "t", 0, 10, "before");
    commit(&c, "t", 1, 21, "DAMAGE-ME-7f3a");
    for i in 0..20 {
        commit(&c, "t", 5, 100 + i, "filler");
    }
    commit(&c, "t", 2, 32, "after");
    assert_eq!(
        committed(&broker, group, "t", 6),
        vec![Some(10), Some(21), Some(32), None, None, Some(119)]
    );
    drop(c);
    broker.stop();

    eprintln!("--- damage the disk: a flipped byte in an old segment, garbage at the tail");
    let dir = broker.data_dir().join("__consumer_offsets-0");
    let files = segment_files(&dir);
    assert!(files.len() >= 2, "segments rolled: {files:?}");
    let marker = b"DAMAGE-ME-7f3a";
    let (damaged_file, at) = files
        .iter()
        .find_map(|f| {
            let bytes = std::fs::read(f).unwrap();
            bytes
                .windows(marker.len())
                .position(|w| w == marker)
                .map(|i| (f.clone(), i))
        })
        .expect("the marked commit is on disk");
    assert_ne!(
        &damaged_file,
        files.last().unwrap(),
        "the damage must sit below the active segment, where start-up trusts the bytes"
    );
    let mut bytes = std::fs::read(&damaged_file).unwrap();
    bytes[at] ^= 0x01; // the batch's CRC no longer matches
    std::fs::write(&damaged_file, &bytes).unwrap();

    let active = files.last().unwrap();
    let base: i64 = active
        .file_stem()
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let mut tail = std::fs::read(active).unwrap();
    let next = next_offset(&tail, base);
    tail.extend_from_slice(&garbage_batch(next, group));
    std::fs::write(active, &tail).unwrap();

    eprintln!("--- restart: the broker starts, skips, and serves");
    broker.restart();
    assert_eq!(
        committed(&broker, group, "t", 6),
        vec![Some(10), None, Some(32), Some(43), None, Some(119)],
        "every commit outside the damaged batch survives; garbage changes nothing"
    );
    let log = std::fs::read_to_string(broker.log_path()).unwrap();
    assert!(
        log.contains("skipping a damaged batch of __consumer_offsets"),
        "the damaged batch is reported\n{}",
        broker.log_tail()
    );
    assert!(
        log.contains("skipping a record of __consumer_offsets that is not understood"),
        "the garbage records are reported\n{}",
        broker.log_tail()
    );
    block_on(round_trip(&broker, "still-serving"));
    let c = group_consumer(&broker, group);
    commit(&c, "t", 1, 22, "recommitted");
    drop(c);

    eprintln!("--- a second restart still loads commits made after the damage");
    broker.stop();
    broker.restart();
    assert_eq!(
        committed(&broker, group, "t", 6),
        vec![Some(10), Some(22), Some(32), Some(43), None, Some(119)]
    );
    broker.assert_running("after loading damaged offsets twice");
}

#[test]
fn deleting_a_topic_drops_its_committed_offsets() {
    let mut broker = Broker::start();
    create_topic_sync(&broker, "doomed", 2);
    create_topic_sync(&broker, "kept", 1);
    let group = "deleter";
    let c = group_consumer(&broker, group);
    commit(&c, "doomed", 0, 5, "");
    commit(&c, "doomed", 1, 6, "");
    commit(&c, "kept", 0, 7, "");
    assert_eq!(
        committed(&broker, group, "doomed", 2),
        vec![Some(5), Some(6)]
    );

    eprintln!("--- delete the topic: its offsets go, the other topic's stay");
    let a = admin(&broker);
    let res = block_on(a.delete_topics(&["doomed"], &admin_opts())).expect("DeleteTopics");
    assert_eq!(res, vec![Ok("doomed".to_string())]);
    assert_eq!(committed(&broker, group, "doomed", 2), vec![None, None]);
    assert_eq!(committed(&broker, group, "kept", 1), vec![Some(7)]);

    eprintln!("--- a topic created again under the name starts without offsets");
    create_topic_sync(&broker, "doomed", 2);
    assert_eq!(committed(&broker, group, "doomed", 2), vec![None, None]);

    eprintln!("--- and the deletion is durable");
    broker.stop();
    broker.restart();
    assert_eq!(committed(&broker, group, "doomed", 2), vec![None, None]);
    assert_eq!(committed(&broker, group, "kept", 1), vec![Some(7)]);
    // The group still has offsets and can commit to the new topic.
    let c2 = group_consumer(&broker, group);
    commit(&c2, "doomed", 0, 1, "");
    assert_eq!(committed(&broker, group, "doomed", 2), vec![Some(1), None]);
    drop(c);
}
