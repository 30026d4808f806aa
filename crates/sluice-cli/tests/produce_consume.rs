//! Produce and fetch through librdkafka: every compression codec under every acks setting,
//! consumer start positions (beginning, end, offset, timestamp), watermarks, topic auto-creation
//! and fetch long polling.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

const PARTITIONS: i32 = 2;
const RECORDS: usize = 300;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// A varied, compressible batch: null and non-null keys, a null value (tombstone), binary bytes,
/// a large value, headers with duplicate keys and a null header value, explicit CreateTimes.
fn sample_records(base_ts: i64) -> Vec<Rec> {
    (0..RECORDS)
        .map(|i| {
            let key = if i % 7 == 3 {
                None
            } else {
                Some(format!("key-{i}").into_bytes())
            };
            let value = match i {
                _ if i % 50 == 11 => None,
                _ if i % 50 == 12 => Some((0..=255u8).cycle().take(1000 + i).collect()),
                _ if i == 77 => Some(vec![b'z'; 20_000]),
                _ => Some(format!("value-{i}-").repeat(1 + i % 5).into_bytes()),
            };
            let headers = match i % 4 {
                0 => Vec::new(),
                1 => vec![("h".to_string(), Some(format!("{i}").into_bytes()))],
                2 => vec![
                    ("dup".to_string(), Some(b"first".to_vec())),
                    ("dup".to_string(), Some(b"second".to_vec())),
                    ("bin".to_string(), Some(vec![0, 255, 1, 254])),
                ],
                _ => vec![("null-header".to_string(), None)],
            };
            Rec {
                key,
                value,
                headers,
                timestamp: Some(base_ts + i as i64),
            }
        })
        .collect()
}

/// Produces the sample batch with `codec` under each acks setting (one topic per setting) and
/// reads it all back.
async fn codec_round_trip(codec: &str) {
    let broker = Broker::start();
    let base_ts = now_ms() - 60_000;
    let recs = sample_records(base_ts);
    for acks in ["0", "1", "all"] {
        let topic = format!("codec-{codec}-acks-{acks}");
        eprintln!("--- {topic}");
        create_topic(&broker, &topic, PARTITIONS).await;
        let p = producer(
            &broker,
            &[
                ("acks", acks),
                ("compression.type", codec),
                ("enable.idempotence", "false"),
                ("linger.ms", "20"),
            ],
        );
        // Records alternate between partitions; each partition's share is produced in order.
        let mut expected: Vec<Vec<Rec>> = vec![Vec::new(); PARTITIONS as usize];
        let mut futures_by_part: Vec<Vec<(i32, i64)>> = Vec::new();
        for part in 0..PARTITIONS {
            let mine: Vec<Rec> = recs
                .iter()
                .enumerate()
                .filter(|(i, _)| *i as i32 % PARTITIONS == part)
                .map(|(_, r)| r.clone())
                .collect();
            expected[part as usize] = mine;
        }
        for part in 0..PARTITIONS {
            futures_by_part.push(produce(&p, &topic, Some(part), &expected[part as usize]).await);
        }
        if acks != "0" {
            for (part, offs) in futures_by_part.iter().enumerate() {
                let want: Vec<(i32, i64)> =
                    (0..offs.len() as i64).map(|o| (part as i32, o)).collect();
                assert_eq!(
                    offs, &want,
                    "{topic}: acknowledged offsets of partition {part}"
                );
            }
        }
        let c = consumer(&broker, &[]);
        for part in 0..PARTITIONS {
            let want = &expected[part as usize];
            // With acks=0 nothing was acknowledged; the bounded wait inside consume_n is the
            // "eventually complete" check.
            let got = consume_n(
                &c,
                &topic,
                part,
                Offset::Beginning,
                want.len(),
                CLIENT_TIMEOUT,
            );
            for (i, (g, w)) in got.iter().zip(want).enumerate() {
                assert_eq!(g.partition, part, "{topic}: partition of record {i}");
                assert_eq!(
                    g.offset, i as i64,
                    "{topic}-{part}: offsets must be contiguous from 0"
                );
                assert_eq!(g.key, w.key, "{topic}-{part}@{i}: key");
                assert_eq!(g.value, w.value, "{topic}-{part}@{i}: value");
                assert_eq!(g.headers, w.headers, "{topic}-{part}@{i}: headers");
                assert_eq!(g.timestamp, w.timestamp, "{topic}-{part}@{i}: CreateTime");
            }
            let (low, high) = c
                .fetch_watermarks(&topic, part, CLIENT_TIMEOUT)
                .expect("watermarks");
            assert_eq!(
                (low, high),
                (0, want.len() as i64),
                "{topic}-{part} watermarks"
            );
        }
        assert_no_more(&c, Duration::from_millis(300));
    }
}

#[tokio::test]
async fn codec_none_all_acks() {
    codec_round_trip("none").await;
}

#[tokio::test]
async fn codec_gzip_all_acks() {
    codec_round_trip("gzip").await;
}

#[tokio::test]
async fn codec_snappy_all_acks() {
    codec_round_trip("snappy").await;
}

#[tokio::test]
async fn codec_lz4_all_acks() {
    codec_round_trip("lz4").await;
}

#[tokio::test]
async fn codec_zstd_all_acks() {
    codec_round_trip("zstd").await;
}

#[test]
fn consumer_start_positions_and_list_offsets() {
    let broker = Broker::start();
    let topic = "positions";
    create_topic_sync(&broker, topic, 1);
    // CreateTimes one second apart, well in the past so no clock skew matters.
    let base_ts = (now_ms() / 1000 - 3600) * 1000;
    let recs: Vec<Rec> = (0..20)
        .map(|i| Rec {
            timestamp: Some(base_ts + i * 1000),
            ..Rec::kv(&format!("k{i}"), &format!("v{i}"))
        })
        .collect();
    let p = producer(&broker, &[("acks", "all")]);
    let offs = block_on(produce(&p, topic, Some(0), &recs));
    assert_eq!(offs, (0..20).map(|o| (0, o)).collect::<Vec<_>>());

    eprintln!("--- ListOffsets: earliest 0, latest 20");
    let c = consumer(&broker, &[]);
    assert_eq!(
        c.fetch_watermarks(topic, 0, CLIENT_TIMEOUT).unwrap(),
        (0, 20)
    );

    eprintln!("--- from the beginning");
    let got = consume_n(&c, topic, 0, Offset::Beginning, 20, CLIENT_TIMEOUT);
    assert_eq!(
        got.iter().map(|g| g.offset).collect::<Vec<_>>(),
        (0..20).collect::<Vec<_>>()
    );
    assert_eq!(got[19].value.as_deref(), Some(&b"v19"[..]));

    eprintln!("--- from the end: only records produced afterwards");
    let end = consumer(&broker, &[]);
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::End).unwrap();
    end.assign(&tpl).unwrap();
    // "End" is resolved asynchronously and librdkafka exposes no fetch position before the
    // first message, so produce one new record at a time until the consumer sees one. Whatever
    // it sees first must be new (offset >= 20), and from there on it must see every record.
    let mut produced = 0i64;
    let first = wait_for(
        "consumer assigned at the end receives a newly produced record",
        CLIENT_TIMEOUT,
        Duration::from_millis(1),
        || {
            let i = 20 + produced;
            let r = Rec {
                timestamp: Some(base_ts + i * 1000),
                ..Rec::kv(&format!("k{i}"), &format!("v{i}"))
            };
            let offs = block_on(produce(&p, topic, Some(0), &[r]));
            assert_eq!(offs, vec![(0, i)]);
            produced += 1;
            match end.poll(Duration::from_millis(200)) {
                None => None,
                Some(Ok(m)) => Some(to_got(&m)),
                Some(Err(KafkaError::PartitionEOF(_))) => None,
                Some(Err(e)) => panic!("consumer at end: {e}"),
            }
        },
    );
    assert!(
        first.offset >= 20,
        "consumer assigned at the end saw an old record: {first:?}"
    );
    assert_eq!(first.value, Some(format!("v{}", first.offset).into_bytes()));
    // Top up so there are at least five new records, then read the rest in order.
    while produced < 5 {
        let i = 20 + produced;
        let r = Rec {
            timestamp: Some(base_ts + i * 1000),
            ..Rec::kv(&format!("k{i}"), &format!("v{i}"))
        };
        assert_eq!(block_on(produce(&p, topic, Some(0), &[r])), vec![(0, i)]);
        produced += 1;
    }
    let high = 20 + produced;
    let rest = poll_n(&end, (high - first.offset - 1) as usize, CLIENT_TIMEOUT);
    assert_eq!(
        rest.iter().map(|g| g.offset).collect::<Vec<_>>(),
        (first.offset + 1..high).collect::<Vec<_>>()
    );
    assert_eq!(
        c.fetch_watermarks(topic, 0, CLIENT_TIMEOUT).unwrap(),
        (0, high)
    );

    eprintln!("--- from an explicit offset");
    let at = consumer(&broker, &[]);
    let got = consume_n(
        &at,
        topic,
        0,
        Offset::Offset(7),
        (high - 7) as usize,
        CLIENT_TIMEOUT,
    );
    assert_eq!(
        got.iter().map(|g| g.offset).collect::<Vec<_>>(),
        (7..high).collect::<Vec<_>>()
    );
    assert_eq!(got[0].value.as_deref(), Some(&b"v7"[..]));

    eprintln!("--- from a timestamp (ListOffsets by time)");
    let lookup = |ts: i64| -> Offset {
        let mut q = TopicPartitionList::new();
        q.add_partition_offset(topic, 0, Offset::Offset(ts))
            .unwrap();
        let r = c
            .offsets_for_times(q, CLIENT_TIMEOUT)
            .expect("offsets_for_times");
        let e = r.find_partition(topic, 0).expect("partition in answer");
        assert!(
            e.error().is_ok(),
            "offsets_for_times({ts}): {:?}",
            e.error()
        );
        e.offset()
    };
    // Kafka answers at record granularity (the first record with timestamp >= target), even
    // inside a batch; all 20 records here went out in one batch. Compare all lookups at once so
    // a failure shows the whole picture.
    let last = high - 1;
    let cases = [
        ("exact timestamp", base_ts + 7000, Offset::Offset(7)),
        ("between records", base_ts + 7500, Offset::Offset(8)),
        ("before all", base_ts - 1_000_000, Offset::Offset(0)),
        ("last record", base_ts + last * 1000, Offset::Offset(last)),
        (
            "after all records",
            base_ts + (high + 10) * 1000,
            Offset::End,
        ),
    ];
    let got: Vec<(&str, Offset)> = cases.iter().map(|(l, ts, _)| (*l, lookup(*ts))).collect();
    let want: Vec<(&str, Offset)> = cases.iter().map(|(l, _, o)| (*l, *o)).collect();
    assert_eq!(got, want, "offsets_for_times (ListOffsets by timestamp)");
    let by_time = consumer(&broker, &[]);
    let got = consume_n(
        &by_time,
        topic,
        0,
        lookup(base_ts + 12_500),
        3,
        CLIENT_TIMEOUT,
    );
    assert_eq!(got[0].offset, 13);
    assert_eq!(got[0].timestamp, Some(base_ts + 13_000));
    assert_eq!(got[0].value.as_deref(), Some(&b"v13"[..]));
}

#[tokio::test]
async fn produce_to_unknown_topic_auto_creates_it() {
    let broker = Broker::start();
    let p = producer(&broker, &[("acks", "all")]);
    let r = produce_one_result(&p, "auto-created", "hello").await;
    assert_eq!(r.expect("produce to auto-created topic"), (0, 0));
    let c = consumer(&broker, &[]);
    wait_metadata(&c, "auto-created topic with 1 partition", |md| {
        let t = md.topics().iter().find(|t| t.name() == "auto-created")?;
        (t.error().is_none() && t.partitions().len() == 1 && t.partitions()[0].leader() == 1)
            .then_some(())
    });
    let got = consume_n(&c, "auto-created", 0, Offset::Beginning, 1, CLIENT_TIMEOUT);
    assert_eq!(got[0].value.as_deref(), Some(&b"hello"[..]));
}

#[tokio::test]
async fn auto_created_topics_use_num_partitions() {
    let broker = Broker::start_with(&["num.partitions=3"]);
    let p = producer(&broker, &[("acks", "all")]);
    produce_one_result(&p, "auto-three", "x")
        .await
        .expect("produce to auto-created topic");
    let c = consumer(&broker, &[]);
    wait_metadata(&c, "auto-three with 3 partitions", |md| {
        let t = md.topics().iter().find(|t| t.name() == "auto-three")?;
        (t.partitions().len() == 3).then_some(())
    });
}

#[tokio::test]
async fn auto_create_disabled_refuses_unknown_topic() {
    let broker = Broker::start_with(&["auto.create.topics.enable=false"]);
    let p = producer(
        &broker,
        &[
            ("acks", "all"),
            ("message.timeout.ms", "5000"),
            // librdkafka waits this long before believing a "does not exist" answer.
            ("topic.metadata.propagation.max.ms", "1000"),
        ],
    );
    let r = produce_one_result(&p, "not-there", "x").await;
    match r {
        Err(KafkaError::MessageProduction(RDKafkaErrorCode::UnknownTopicOrPartition))
        // librdkafka's local code for "the broker said UNKNOWN_TOPIC_OR_PARTITION".
        | Err(KafkaError::MessageProduction(RDKafkaErrorCode::UnknownTopic)) => {}
        other => panic!("expected UnknownTopicOrPartition, got {other:?}"),
    }
    let c = consumer(&broker, &[]);
    let md = c.fetch_metadata(None, CLIENT_TIMEOUT).expect("metadata");
    assert!(
        md.topics().iter().all(|t| t.name() != "not-there"),
        "topic was created despite auto.create.topics.enable=false"
    );
}

#[test]
fn fetch_long_poll_returns_new_record() {
    let broker = Broker::start();
    let topic = "long-poll";
    create_topic_sync(&broker, topic, 1);
    let c = consumer(&broker, &[("fetch.wait.max.ms", "2000")]);
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .unwrap();
    c.assign(&tpl).unwrap();
    assert!(
        c.poll(Duration::from_millis(300))
            .map(|r| r.is_err())
            .unwrap_or(true),
        "empty partition returned a record"
    );
    let bootstrap_producer = producer(&broker, &[("acks", "all")]);
    let producer_thread = std::thread::spawn(move || {
        block_on(produce(
            &bootstrap_producer,
            "long-poll",
            Some(0),
            &[Rec::kv("k", "late")],
        ))
    });
    let got = poll_n(&c, 1, CLIENT_TIMEOUT);
    assert_eq!(producer_thread.join().unwrap(), vec![(0, 0)]);
    assert_eq!(got[0].offset, 0);
    assert_eq!(got[0].value.as_deref(), Some(&b"late"[..]));
}
