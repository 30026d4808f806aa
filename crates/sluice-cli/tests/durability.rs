//! Data survives the broker process: graceful restart, SIGKILL in the middle of a produce stream,
//! and logs that span several segment files.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use rdkafka::client::ClientContext;
use rdkafka::consumer::Consumer;
use rdkafka::message::{DeliveryResult, Message};
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use rdkafka::Offset;

fn values(got: &[Got]) -> Vec<String> {
    got.iter()
        .map(|g| String::from_utf8(g.value.clone().expect("null value")).expect("utf8 value"))
        .collect()
}

#[tokio::test]
async fn graceful_restart_keeps_records_and_offsets() {
    let mut broker = Broker::start();
    let topic = "restart";
    create_topic(&broker, topic, 2).await;
    let first: Vec<Rec> = (0..100)
        .map(|i| Rec::kv(&format!("k{i}"), &format!("before-{i}")))
        .collect();
    {
        let p = producer(&broker, &[("acks", "all")]);
        for part in 0..2 {
            let offs = produce(&p, topic, Some(part), &first).await;
            assert_eq!(offs, (0..100).map(|o| (part, o)).collect::<Vec<_>>());
        }
    }

    eprintln!("--- SIGTERM: the broker exits with code 0");
    broker.stop();
    eprintln!("--- restart on the same data dir");
    broker.restart();

    let c = consumer(&broker, &[]);
    for part in 0..2 {
        assert_eq!(
            c.fetch_watermarks(topic, part, CLIENT_TIMEOUT).unwrap(),
            (0, 100),
            "watermarks of {topic}-{part} after restart"
        );
        let got = consume_n(&c, topic, part, Offset::Beginning, 100, CLIENT_TIMEOUT);
        assert_eq!(
            got.iter().map(|g| g.offset).collect::<Vec<_>>(),
            (0..100).collect::<Vec<_>>()
        );
        assert_eq!(
            values(&got),
            (0..100).map(|i| format!("before-{i}")).collect::<Vec<_>>()
        );
        assert_eq!(got[42].key.as_deref(), Some(&b"k42"[..]));
    }

    eprintln!("--- new records continue the offsets");
    let p = producer(&broker, &[("acks", "all")]);
    let second: Vec<Rec> = (0..10)
        .map(|i| Rec::kv(&format!("k{i}"), &format!("after-{i}")))
        .collect();
    let offs = produce(&p, topic, Some(1), &second).await;
    assert_eq!(offs, (100..110).map(|o| (1, o)).collect::<Vec<_>>());
    let c = consumer(&broker, &[]);
    let got = consume_n(&c, topic, 1, Offset::Offset(98), 12, CLIENT_TIMEOUT);
    assert_eq!(
        values(&got),
        ["before-98", "before-99"]
            .iter()
            .map(|s| s.to_string())
            .chain((0..10).map(|i| format!("after-{i}")))
            .collect::<Vec<_>>()
    );

    eprintln!("--- a second graceful cycle");
    broker.stop();
    broker.restart();
    let c = consumer(&broker, &[]);
    assert_eq!(
        c.fetch_watermarks(topic, 1, CLIENT_TIMEOUT).unwrap(),
        (0, 110)
    );
    assert_eq!(
        c.fetch_watermarks(topic, 0, CLIENT_TIMEOUT).unwrap(),
        (0, 100)
    );
}

/// Records every delivery report: the acknowledged (value, offset) pairs and the failures.
struct Recorder {
    acked: Mutex<Vec<(u64, i64)>>,
    acked_count: AtomicUsize,
    failed: AtomicUsize,
}

impl Recorder {
    fn record(&self, result: &DeliveryResult<'_>) {
        match result {
            Ok(m) => {
                let v: u64 = std::str::from_utf8(m.payload().expect("payload"))
                    .expect("utf8")
                    .parse()
                    .expect("sequential value");
                self.acked.lock().unwrap().push((v, m.offset()));
                self.acked_count.fetch_add(1, Ordering::SeqCst);
            }
            Err(_) => {
                self.failed.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
}

#[test]
fn kill9_during_produce_loses_no_acknowledged_record() {
    const TOTAL: u64 = 20_000;
    const KILL_AFTER_ACKS: usize = 4_000;
    let mut broker = Broker::start();
    let topic = "crash";
    create_topic_sync(&broker, topic, 1);

    let recorder = Arc::new(Recorder {
        acked: Mutex::new(Vec::new()),
        acked_count: AtomicUsize::new(0),
        failed: AtomicUsize::new(0),
    });
    let mut cfg = client_config(&broker);
    cfg.set("acks", "all")
        .set("enable.idempotence", "false")
        .set("retries", "0")
        .set("message.send.max.retries", "0")
        .set("message.timeout.ms", "5000")
        .set("linger.ms", "1")
        // Small batches, pipelined (no idempotence: up to 1M in flight), so the kill catches
        // requests in flight rather than landing between two quiet moments.
        .set("batch.num.messages", "100")
        .set("reconnect.backoff.ms", "50")
        .set("reconnect.backoff.max.ms", "200");
    let producer: ThreadedProducer<ArcRecorder> = cfg
        .create_with_context(ArcRecorder(recorder.clone()))
        .expect("create producer");

    // A steady stream: chunks of 200, lightly paced, so the kill lands mid-stream rather than
    // after the last ack. Pacing is not synchronisation; the kill waits on the ack count.
    let stream = std::thread::spawn(move || {
        let mut enqueue_failures = 0u64;
        for chunk in 0..(TOTAL / 200) {
            for i in chunk * 200..(chunk + 1) * 200 {
                let payload = i.to_string();
                let mut rec: BaseRecord<'_, (), str, ()> = BaseRecord::to("crash")
                    .payload(payload.as_str())
                    .partition(0);
                loop {
                    match producer.send(rec) {
                        Ok(()) => break,
                        Err((e, r)) => {
                            // Queue full: back off briefly and retry the enqueue (not a resend:
                            // the record never left the client).
                            if e.rdkafka_error_code()
                                == Some(rdkafka::types::RDKafkaErrorCode::QueueFull)
                            {
                                rec = r;
                                std::thread::sleep(Duration::from_millis(5));
                            } else {
                                enqueue_failures += 1;
                                break;
                            }
                        }
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let _ = producer.flush(Duration::from_secs(20));
        enqueue_failures
    });

    eprintln!("--- wait for {KILL_AFTER_ACKS} acknowledgements, then SIGKILL");
    wait_for(
        "enough acknowledged records before the kill",
        Duration::from_secs(20),
        Duration::from_millis(2),
        || (recorder.acked_count.load(Ordering::SeqCst) >= KILL_AFTER_ACKS).then_some(()),
    );
    broker.kill9();
    let acked_at_kill = recorder.acked_count.load(Ordering::SeqCst);
    eprintln!("--- killed with {acked_at_kill} of {TOTAL} acknowledged; restarting");
    broker.restart();

    let enqueue_failures = stream.join().expect("producer thread");
    let acked = recorder.acked.lock().unwrap().clone();
    let failed = recorder.failed.load(Ordering::SeqCst);
    eprintln!(
        "--- producer done: {} acked, {failed} failed, {enqueue_failures} not enqueued",
        acked.len()
    );
    assert!(
        acked_at_kill < TOTAL as usize,
        "the whole stream was acknowledged before the kill; the test did not crash mid-stream"
    );

    let c = consumer(&broker, &[]);
    let got = consume_all(&c, topic, 0, Duration::from_secs(30));
    assert_no_more(&c, Duration::from_millis(300));
    let mut by_offset: HashMap<i64, u64> = HashMap::new();
    let mut seen_values: HashMap<u64, i64> = HashMap::new();
    for (i, g) in got.iter().enumerate() {
        assert_eq!(
            g.offset, i as i64,
            "offsets in the recovered log must be contiguous"
        );
        let v: u64 = String::from_utf8(g.value.clone().expect("value"))
            .unwrap()
            .parse()
            .expect("sequential value");
        if let Some(prev) = seen_values.insert(v, g.offset) {
            panic!("value {v} stored twice, at offsets {prev} and {}", g.offset);
        }
        by_offset.insert(g.offset, v);
    }
    // Within one partition a single non-retrying producer's records keep their send order.
    for w in got.windows(2) {
        let a: u64 = String::from_utf8_lossy(w[0].value.as_deref().unwrap())
            .parse()
            .unwrap();
        let b: u64 = String::from_utf8_lossy(w[1].value.as_deref().unwrap())
            .parse()
            .unwrap();
        assert!(
            a < b,
            "values out of send order: {a} at {} before {b}",
            w[0].offset
        );
    }
    let mut lost = Vec::new();
    for (v, off) in &acked {
        match by_offset.get(off) {
            Some(stored) if stored == v => {}
            other => lost.push((*v, *off, other.copied())),
        }
    }
    assert!(
        lost.is_empty(),
        "{} acknowledged records lost or moved (value, acked offset, stored value): {:?}",
        lost.len(),
        &lost[..lost.len().min(20)]
    );
}

/// `ProducerContext` for a shared recorder, so the test keeps a handle after the producer moves
/// into its thread.
struct ArcRecorder(Arc<Recorder>);

impl ClientContext for ArcRecorder {}

impl ProducerContext for ArcRecorder {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        self.0.record(result)
    }
}

#[tokio::test]
async fn log_spans_several_segments() {
    let broker = Broker::start_with(&["log.segment.bytes=65536"]);
    let topic = "segments";
    create_topic(&broker, topic, 1).await;
    // ~1 MiB in 1 KiB values, each value distinct so a misplaced batch is detected.
    let recs: Vec<Rec> = (0..1024)
        .map(|i| Rec {
            key: Some(format!("k{i}").into_bytes()),
            value: Some(format!("{i:08}-").repeat(1024 / 9 + 1).into_bytes()[..1024].to_vec()),
            headers: Vec::new(),
            timestamp: None,
        })
        .collect();
    let p = producer(&broker, &[("acks", "all"), ("compression.type", "none")]);
    let offs = produce(&p, topic, Some(0), &recs).await;
    assert_eq!(offs, (0..1024).map(|o| (0, o)).collect::<Vec<_>>());

    let c = consumer(&broker, &[("fetch.message.max.bytes", "100000")]);
    let got = consume_n(&c, topic, 0, Offset::Beginning, 1024, CLIENT_TIMEOUT);
    for (i, (g, r)) in got.iter().zip(&recs).enumerate() {
        assert_eq!(g.offset, i as i64);
        assert_eq!(g.value, r.value, "value at offset {i}");
    }
    assert_no_more(&c, Duration::from_millis(300));

    eprintln!("--- read starting in the middle of a later segment");
    let mid = consumer(&broker, &[]);
    let got = consume_n(&mid, topic, 0, Offset::Offset(700), 324, CLIENT_TIMEOUT);
    assert_eq!(got[0].offset, 700);
    assert_eq!(got[0].value, recs[700].value);
    assert_eq!(got[323].value, recs[1023].value);

    let dir = broker.data_dir().join(format!("{topic}-0"));
    let logs: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".log"))
        .collect();
    assert!(
        logs.len() > 1,
        "1 MiB with log.segment.bytes=65536 should roll segments; found {logs:?} in {}",
        dir.display()
    );
}
