//! Batches that lie about their records, decompression bombs, and writes to internal topics,
//! sent to the real binary. Each attack must be refused with Kafka's error code, the broker must
//! stay up, and every record acknowledged before the attack must still be readable by several
//! clients (and by time).
//!
//! The batches are hand-built (`sluice_protocol::batch::testing`), patched, and re-checksummed:
//! a CRC proves only that the bytes arrived as sent, not that they are true.

mod common;

use std::io::Write;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use kafka_protocol::messages::list_offsets_request::{
    ListOffsetsPartition, ListOffsetsRequest, ListOffsetsTopic,
};
use kafka_protocol::messages::produce_request::{
    PartitionProduceData, ProduceRequest, TopicProduceData,
};
use kafka_protocol::messages::produce_response::PartitionProduceResponse;
use kafka_protocol::messages::{BrokerId, TopicName};
use rdkafka::admin::{NewTopic, TopicReplication};
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::producer::FutureRecord;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use sluice_protocol::batch::testing::build_batch;
use sluice_protocol::batch::{update_crc, BATCH_HEADER_LEN};

const NONE: i16 = 0;
const INVALID_TOPIC_EXCEPTION: i16 = 17;
const INVALID_TIMESTAMP: i16 = 32;
const INVALID_RECORD: i16 = 87;
/// Produce v8+ carries KIP-467 record errors.
const PRODUCE_VERSION: i16 = 9;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn produce_raw(
    conn: &mut RawConn,
    topic: &str,
    partition: i32,
    records: Vec<u8>,
) -> PartitionProduceResponse {
    let req = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(kstr(topic)))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(Bytes::from(records)))])]);
    let resp = conn.call(PRODUCE_VERSION, &req);
    resp.responses[0].partition_responses[0].clone()
}

#[track_caller]
fn expect_code(r: &PartitionProduceResponse, code: i16, what: &str) {
    assert_eq!(
        r.error_code, code,
        "{what}: error code (message {:?})",
        r.error_message
    );
}

/// ListOffsets for one partition at `timestamp` (-1 latest, -2 earliest, else by time).
fn list_offset(conn: &mut RawConn, topic: &str, timestamp: i64) -> (i64, i64) {
    let req = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(TopicName(kstr(topic)))
            .with_partitions(vec![ListOffsetsPartition::default()
                .with_partition_index(0)
                .with_timestamp(timestamp)])]);
    let resp = conn.call(7, &req);
    let p = &resp.topics[0].partitions[0];
    assert_eq!(p.error_code, NONE, "ListOffsets {topic} at {timestamp}");
    (p.offset, p.timestamp)
}

/// Rewrites `lastOffsetDelta`/`recordsCount` and the CRC.
fn with_count(mut b: Vec<u8>, records_count: i32) -> Vec<u8> {
    b[23..27].copy_from_slice(&(records_count - 1).to_be_bytes());
    b[57..61].copy_from_slice(&records_count.to_be_bytes());
    update_crc(&mut b).unwrap();
    b
}

/// Replaces the records of a built batch by `records` (compressed with `codec` 1 gzip or
/// 4 zstd, or 0 for as-is), fixing length, attributes and CRC.
fn with_records(batch: &[u8], codec: i16, records: Vec<u8>) -> Vec<u8> {
    let mut out = batch[..BATCH_HEADER_LEN].to_vec();
    out.extend_from_slice(&records);
    let len = (out.len() - 12) as i32;
    out[8..12].copy_from_slice(&len.to_be_bytes());
    let attributes = i16::from_be_bytes([out[21], out[22]]) & !0x07 | codec;
    out[21..23].copy_from_slice(&attributes.to_be_bytes());
    update_crc(&mut out).unwrap();
    out
}

fn varint(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

/// `count` valid records of `value_len` zero bytes each, written straight into `sink`.
fn write_records(sink: &mut impl Write, count: i64, value_len: usize) {
    let value = vec![0u8; value_len];
    for i in 0..count {
        let mut rec = vec![0u8]; // attributes
        varint(&mut rec, 0); // timestamp delta
        varint(&mut rec, i); // offset delta
        varint(&mut rec, 1);
        rec.push(b'k');
        varint(&mut rec, value_len as i64);
        rec.extend_from_slice(&value);
        varint(&mut rec, 0); // headers
        let mut framed = Vec::new();
        varint(&mut framed, rec.len() as i64);
        framed.extend_from_slice(&rec);
        sink.write_all(&framed).unwrap();
    }
}

/// A batch of valid records that decompress to ~200 MiB (past the 128 MiB limit) from a few
/// hundred KiB: a decompression bomb whose records are all well formed.
fn bomb(codec: i16) -> Vec<u8> {
    let (count, value_len) = (6_400, 32 << 10);
    let compressed = match codec {
        1 => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
            write_records(&mut e, count, value_len);
            e.finish().unwrap()
        }
        4 => {
            let mut e = zstd::stream::write::Encoder::new(Vec::new(), 1).unwrap();
            write_records(&mut e, count, value_len);
            e.finish().unwrap()
        }
        _ => unreachable!(),
    };
    let header = build_batch(0, &[(Some(b"k"), Some(b"v"), now_ms())]);
    with_count(with_records(&header, codec, compressed), count as i32)
}

fn vm_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/<pid>/status")
}

async fn create_with(broker: &Broker, name: &str, configs: &[(&str, &str)]) {
    let mut t = NewTopic::new(name, 1, TopicReplication::Fixed(1));
    for (k, v) in configs {
        t = t.set(k, v);
    }
    let res = admin(broker)
        .create_topics([&t], &admin_opts())
        .await
        .expect("create_topics");
    assert!(res[0].is_ok(), "create {name}: {:?}", res[0]);
}

/// Every kind of topic: plain, compacted, timestamp-bounded, LogAppendTime.
const TOPICS: &[(&str, &[(&str, &str)])] = &[
    ("plain", &[]),
    ("compacted", &[("cleanup.policy", "compact")]),
    ("bounded", &[("message.timestamp.before.max.ms", "3600000")]),
    ("appendtime", &[("message.timestamp.type", "LogAppendTime")]),
];

#[test]
fn lying_batches_are_refused_and_lose_nothing() {
    let broker = Broker::start();
    let good: Vec<Rec> = (0..5)
        .map(|i| Rec::kv(&format!("k{i}"), &format!("before-{i}")))
        .collect();
    block_on(async {
        for (name, configs) in TOPICS {
            create_with(&broker, name, configs).await;
            let p = producer(&broker, &[("acks", "all")]);
            let offs = produce(&p, name, Some(0), &good).await;
            assert_eq!(offs, (0..5).map(|i| (0, i)).collect::<Vec<_>>(), "{name}");
        }
    });

    let mut conn = RawConn::connect(&broker);
    let now = now_ms();
    for (name, _) in TOPICS {
        let one = build_batch(0, &[(Some(b"k"), Some(b"attack"), now)]);
        // recordsCount 2^31-1, lastOffsetDelta 2^31-2, one record: the 100-byte abort.
        let r = produce_raw(&mut conn, name, 0, with_count(one.clone(), i32::MAX));
        expect_code(&r, INVALID_RECORD, &format!("{name}: lying count"));
        assert!(
            r.error_message
                .as_deref()
                .is_some_and(|m| m.contains("claims")),
            "{name}: message {:?}",
            r.error_message
        );
        // Two claimed, one present.
        let r = produce_raw(&mut conn, name, 0, with_count(one.clone(), 2));
        expect_code(&r, INVALID_RECORD, &format!("{name}: count 2"));
        // A record length that runs past the batch; a key length of 2^30.
        let mut long = one[BATCH_HEADER_LEN..].to_vec();
        long[0] = 0x7e;
        let r = produce_raw(&mut conn, name, 0, with_records(&one, 0, long));
        expect_code(&r, INVALID_RECORD, &format!("{name}: record length"));
        assert_eq!(
            r.record_errors
                .iter()
                .map(|e| e.batch_index)
                .collect::<Vec<_>>(),
            vec![0],
            "{name}: the record at fault"
        );
        let mut key = one[BATCH_HEADER_LEN..].to_vec();
        key.splice(4..5, [0x80, 0x80, 0x80, 0x80, 0x08]);
        key[0] += 4;
        let r = produce_raw(&mut conn, name, 0, with_records(&one, 0, key));
        expect_code(&r, INVALID_RECORD, &format!("{name}: key length"));
        assert!(broker_answers(&mut conn));
        // The log end did not move: the next good batch lands at offset 5.
        let r = produce_raw(&mut conn, name, 0, one);
        expect_code(&r, NONE, &format!("{name}: good batch after the attacks"));
        assert_eq!(
            r.base_offset, 5,
            "{name}: log end unchanged by refused batches"
        );
        assert_eq!(list_offset(&mut conn, name, -1).0, 6, "{name}: latest");
    }

    // By time: the first record at or after an hour ago is offset 0 everywhere.
    for (name, _) in TOPICS {
        assert_eq!(
            list_offset(&mut conn, name, now - 3_600_000).0,
            0,
            "{name} by time"
        );
    }
    // Several clients read everything acknowledged, in order.
    for reader in 0..3 {
        let c = consumer(&broker, &[]);
        for (name, _) in TOPICS {
            let got = consume_n(&c, name, 0, Offset::Beginning, 6, CLIENT_TIMEOUT);
            let values: Vec<_> = got
                .iter()
                .map(|g| String::from_utf8(g.value.clone().unwrap()).unwrap())
                .collect();
            let mut expect: Vec<_> = (0..5).map(|i| format!("before-{i}")).collect();
            expect.push("attack".into());
            assert_eq!(values, expect, "reader {reader} of {name}");
        }
    }
    broker_still_serves(&broker, "rt-lying");
}

/// A Metadata round trip on the raw connection still answers.
fn broker_answers(conn: &mut RawConn) -> bool {
    let resp = conn.call(
        9,
        &kafka_protocol::messages::MetadataRequest::default().with_topics(Some(vec![])),
    );
    !resp.brokers.is_empty()
}

fn broker_still_serves(broker: &Broker, topic: &str) {
    block_on(round_trip(broker, topic));
}

#[test]
fn decompression_bombs_are_refused_without_inflating() {
    let broker = Broker::start();
    block_on(create_topic(&broker, "bombed", 1));
    let mut conn = RawConn::connect(&broker);
    let r = produce_raw(
        &mut conn,
        "bombed",
        0,
        build_batch(0, &[(Some(b"k"), Some(b"first"), now_ms())]),
    );
    expect_code(&r, NONE, "good batch");
    let baseline = vm_rss_kib(broker.pid());
    for (codec, name) in [(1, "gzip"), (4, "zstd")] {
        let b = bomb(codec);
        assert!(b.len() < 1 << 20, "{name} bomb is {} bytes", b.len());
        let r = produce_raw(&mut conn, "bombed", 0, b);
        expect_code(&r, INVALID_RECORD, &format!("{name} bomb"));
        assert!(
            r.error_message
                .as_deref()
                .is_some_and(|m| m.contains("decompress to more than")),
            "{name}: message {:?}",
            r.error_message
        );
    }
    // The bombs inflate to ~200 MiB each; the broker streamed them through a 64 KiB buffer.
    // Its RSS grows by far less than one bomb (the bound: 64 MiB over the baseline).
    let after = vm_rss_kib(broker.pid());
    assert!(
        after < baseline + 64 * 1024,
        "RSS grew from {baseline} KiB to {after} KiB"
    );
    let r = produce_raw(
        &mut conn,
        "bombed",
        0,
        build_batch(0, &[(Some(b"k"), Some(b"second"), now_ms())]),
    );
    expect_code(&r, NONE, "good batch after the bombs");
    assert_eq!(r.base_offset, 1);
    broker_still_serves(&broker, "rt-bombs");
}

#[test]
fn bad_records_are_named_per_record_kip_467() {
    let broker = Broker::start();
    block_on(create_with(
        &broker,
        "compacted",
        &[("cleanup.policy", "compact")],
    ));
    block_on(create_with(
        &broker,
        "bounded",
        &[("message.timestamp.before.max.ms", "3600000")],
    ));

    // rdkafka: 100 records in one batch, every tenth without a key. The ten keyless records
    // fail with INVALID_RECORD; the other ninety only shared their batch
    // (_INVALID_DIFFERENT_RECORD), which is how the client can tell them apart.
    let p = producer(
        &broker,
        &[
            ("acks", "all"),
            ("linger.ms", "2000"),
            ("batch.num.messages", "1000"),
        ],
    );
    let results = block_on(async {
        let futures: Vec<_> = (0..100)
            .map(|i| {
                let value = format!("v{i}");
                let key = format!("k{i}");
                let mut rec = FutureRecord::to("compacted").partition(0).payload(&value);
                if i % 10 != 0 {
                    rec = rec.key(&key);
                }
                p.send_result(rec).expect("enqueue")
            })
            .collect();
        let mut out = Vec::new();
        for f in futures {
            out.push(f.await.expect("delivery report"));
        }
        out
    });
    for (i, r) in results.iter().enumerate() {
        let code = r.as_ref().err().map(|(e, _)| e.rdkafka_error_code());
        let expect = if i % 10 == 0 {
            RDKafkaErrorCode::InvalidRecord
        } else {
            RDKafkaErrorCode::InvalidDifferentRecord
        };
        assert_eq!(code, Some(Some(expect)), "record {i}: {r:?}");
    }

    // The same on the wire: indexes of the bad records and a message for each.
    let mut conn = RawConn::connect(&broker);
    let now = now_ms();
    let records: Vec<sluice_protocol::batch::testing::TestRecord<'_>> = (0..20)
        .map(|i| {
            (
                if i % 7 == 3 { None } else { Some(&b"key"[..]) },
                Some(&b"value"[..]),
                now,
            )
        })
        .collect();
    let r = produce_raw(&mut conn, "compacted", 0, build_batch(0, &records));
    expect_code(&r, INVALID_RECORD, "keyless records");
    let indexes: Vec<i32> = r.record_errors.iter().map(|e| e.batch_index).collect();
    assert_eq!(indexes, vec![3, 10, 17]);
    for e in &r.record_errors {
        assert!(
            e.batch_index_error_message
                .as_deref()
                .is_some_and(|m| m.contains("without key")),
            "{e:?}"
        );
    }
    assert!(r
        .error_message
        .as_deref()
        .is_some_and(|m| m.contains("3 record errors")));

    // A timestamp out of bounds is named too, with INVALID_TIMESTAMP.
    let records = [
        (Some(&b"a"[..]), Some(&b"ok"[..]), now),
        (Some(&b"b"[..]), Some(&b"old"[..]), now - 7_200_000),
        (Some(&b"c"[..]), Some(&b"ok"[..]), now),
    ];
    let r = produce_raw(&mut conn, "bounded", 0, build_batch(0, &records));
    expect_code(&r, INVALID_TIMESTAMP, "old record");
    assert_eq!(
        r.record_errors
            .iter()
            .map(|e| e.batch_index)
            .collect::<Vec<_>>(),
        vec![1]
    );
    // Nothing of the refused batches was stored.
    assert_eq!(list_offset(&mut conn, "compacted", -1).0, 0);
    assert_eq!(list_offset(&mut conn, "bounded", -1).0, 0);
}

#[test]
fn a_lying_max_timestamp_is_corrected_for_time_lookups() {
    let broker = Broker::start();
    block_on(create_topic(&broker, "times", 1));
    let mut conn = RawConn::connect(&broker);
    let t = now_ms();
    let mut b = build_batch(
        0,
        &[
            (None, Some(b"a"), t),
            (None, Some(b"b"), t + 10),
            (None, Some(b"c"), t + 20),
        ],
    );
    // The header says the batch ends at t; its last record is at t + 20.
    b[35..43].copy_from_slice(&t.to_be_bytes());
    update_crc(&mut b).unwrap();
    let r = produce_raw(&mut conn, "times", 0, b);
    expect_code(&r, NONE, "batch with a lying max timestamp");
    assert_eq!(list_offset(&mut conn, "times", t + 15), (2, t + 20));
    // The stored batch carries the true max timestamp (what consumers see for LogAppendTime
    // and what retention uses).
    let c = consumer(&broker, &[]);
    let got = consume_n(&c, "times", 0, Offset::Beginning, 3, CLIENT_TIMEOUT);
    assert_eq!(got.len(), 3);
}

#[test]
fn clients_cannot_write_internal_topics() {
    let mut broker = Broker::start();
    block_on(create_topic(&broker, "data", 1));
    // A group commit creates __consumer_offsets.
    let c = consumer(
        &broker,
        &[("group.id", "g1"), ("enable.auto.commit", "false")],
    );
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("data", 0, Offset::Offset(42))
        .unwrap();
    wait_for(
        "commit creates __consumer_offsets",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || c.commit(&tpl, CommitMode::Sync).ok(),
    );
    drop(c);

    let mut conn = RawConn::connect(&broker);
    for partition in 0..3 {
        let garbage = build_batch(
            0,
            &[(
                Some(b"\xff\xff\x00garbage key"),
                Some(b"garbage value"),
                now_ms(),
            )],
        );
        let r = produce_raw(&mut conn, "__consumer_offsets", partition, garbage);
        expect_code(&r, INVALID_TOPIC_EXCEPTION, "produce to __consumer_offsets");
        assert!(r
            .error_message
            .as_deref()
            .is_some_and(|m| m.contains("internal topic")));
    }
    drop(conn);
    broker.stop();
    broker.restart();
    // The coordinator loads cleanly and still has the commit.
    let c = consumer(
        &broker,
        &[("group.id", "g1"), ("enable.auto.commit", "false")],
    );
    let mut want = TopicPartitionList::new();
    want.add_partition("data", 0);
    let committed = wait_for(
        "committed offsets after restart",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || {
            c.committed_offsets(want.clone(), Duration::from_secs(5))
                .ok()
        },
    );
    assert_eq!(
        committed.find_partition("data", 0).unwrap().offset(),
        Offset::Offset(42)
    );
    broker_still_serves(&broker, "rt-internal");
}
