//! Idempotent producers, end to end (issue #4).
//!
//! The centrepiece is a fault-injecting TCP proxy between librdkafka and the broker: the broker
//! advertises the proxy's address, so every client connection goes through it. The proxy parses
//! the Kafka framing both ways, remembers the correlation ids of Produce requests, and drops every
//! Nth Produce *response* while cutting the connection. The client never learns that the broker
//! appended that batch and retries it (together with everything else it had in flight). With
//! idempotence the partition must still hold every value exactly once, in order, and each
//! delivery report must carry the record's one true offset. The same stream is also run across a
//! graceful broker restart and across kill -9 + restart.
//!
//! Raw requests (kafka-protocol) pin the error codes: duplicates, sequence gaps, fenced epochs,
//! unknown producers, more than one batch per partition, transactional ids, producer ids across
//! restarts, DescribeProducers. rdkafka drives the topic-config checks: `max.message.bytes`,
//! `message.timestamp.type=LogAppendTime`, `message.timestamp.{before,after}.max.ms`.

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use common::*;
use kafka_protocol::messages::describe_producers_request::{
    DescribeProducersRequest, TopicRequest,
};
use kafka_protocol::messages::TopicName;
use rdkafka::admin::{NewTopic, TopicReplication};
use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Message, Timestamp};
use rdkafka::producer::{
    BaseRecord, DeliveryResult, FutureProducer, FutureRecord, Producer, ProducerContext,
    ThreadedProducer,
};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

// Kafka error codes asserted on raw responses.
const NONE: i16 = 0;
const COORDINATOR_NOT_AVAILABLE: i16 = 15;
const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;
const INVALID_PRODUCER_EPOCH: i16 = 47;
const UNKNOWN_PRODUCER_ID: i16 = 59;
const INVALID_RECORD: i16 = 87;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

// ----------------------------------------------------------------------------------------------
// Fault-injecting proxy
// ----------------------------------------------------------------------------------------------

/// State shared by the proxy's connections and the test.
struct ProxyShared {
    /// The broker's port (set after the broker started, kept across restarts).
    upstream: AtomicU16,
    /// While true, every `drop_every`-th Produce response is dropped and its connection cut.
    faulty: AtomicBool,
    /// While true, every Produce response is dropped (and its connection cut).
    drop_all: AtomicBool,
    drop_every: u64,
    /// Produce responses seen from the broker (dropped or not), over all connections.
    produce_responses: AtomicU64,
    /// Produce responses dropped (each one also cut its connection).
    dropped: AtomicU64,
    /// Client connections accepted.
    accepted: AtomicU64,
    /// Client connections closed at once because the broker refused the upstream connection
    /// (it was down).
    refused: AtomicU64,
}

/// A TCP proxy on its own tokio runtime. Dropping it stops it and closes every connection.
struct FaultProxy {
    port: u16,
    shared: Arc<ProxyShared>,
    rt: Option<tokio::runtime::Runtime>,
}

impl FaultProxy {
    fn start(drop_every: u64) -> FaultProxy {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("fault-proxy")
            .enable_all()
            .build()
            .expect("proxy runtime");
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind proxy");
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(ProxyShared {
            upstream: AtomicU16::new(0),
            faulty: AtomicBool::new(false),
            drop_all: AtomicBool::new(false),
            drop_every,
            produce_responses: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        });
        let s = shared.clone();
        rt.spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                s.accepted.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(proxy_connection(client, s.clone()));
            }
        });
        FaultProxy {
            port,
            shared,
            rt: Some(rt),
        }
    }

    fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn set_upstream(&self, port: u16) {
        self.shared.upstream.store(port, Ordering::SeqCst);
    }

    fn set_faulty(&self, on: bool) {
        self.shared.faulty.store(on, Ordering::SeqCst);
    }

    fn set_drop_all(&self, on: bool) {
        self.shared.drop_all.store(on, Ordering::SeqCst);
    }

    fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::SeqCst)
    }

    fn produce_responses(&self) -> u64 {
        self.shared.produce_responses.load(Ordering::SeqCst)
    }

    fn refused(&self) -> u64 {
        self.shared.refused.load(Ordering::SeqCst)
    }

    fn accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    fn stats(&self) -> String {
        format!(
            "proxy: {} connections accepted, {} refused upstream, {} produce responses, {} dropped",
            self.accepted(),
            self.refused(),
            self.produce_responses(),
            self.dropped()
        )
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// Reads one size-prefixed frame (prefix included); `None` at EOF or on any error.
async fn read_frame(r: &mut tokio::net::tcp::OwnedReadHalf) -> Option<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let mut size = [0u8; 4];
    r.read_exact(&mut size).await.ok()?;
    let n = i32::from_be_bytes(size);
    if !(0..=256 * 1024 * 1024).contains(&n) {
        return None;
    }
    let mut frame = vec![0u8; 4 + n as usize];
    frame[..4].copy_from_slice(&size);
    r.read_exact(&mut frame[4..]).await.ok()?;
    Some(frame)
}

async fn proxy_connection(client: tokio::net::TcpStream, shared: Arc<ProxyShared>) {
    use tokio::io::AsyncWriteExt;
    let port = shared.upstream.load(Ordering::SeqCst);
    let upstream = match tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
        Ok(u) => u,
        Err(_) => {
            shared.refused.fetch_add(1, Ordering::Relaxed);
            return; // dropping `client` closes it
        }
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let (mut cr, mut cw) = client.into_split();
    let (mut ur, mut uw) = upstream.into_split();
    let produce_ids: Arc<Mutex<HashSet<i32>>> = Arc::default();

    let ids = produce_ids.clone();
    let requests = async move {
        while let Some(frame) = read_frame(&mut cr).await {
            if frame.len() >= 12 {
                let api_key = i16::from_be_bytes([frame[4], frame[5]]);
                let correlation_id = i32::from_be_bytes(frame[8..12].try_into().unwrap());
                if api_key == 0 {
                    // Recorded before forwarding, so it is known when the response comes back.
                    ids.lock().unwrap().insert(correlation_id);
                }
            }
            if uw.write_all(&frame).await.is_err() {
                return;
            }
        }
    };
    let sh = shared.clone();
    let responses = async move {
        while let Some(frame) = read_frame(&mut ur).await {
            if frame.len() >= 8 {
                let correlation_id = i32::from_be_bytes(frame[4..8].try_into().unwrap());
                if produce_ids.lock().unwrap().remove(&correlation_id) {
                    let n = sh.produce_responses.fetch_add(1, Ordering::SeqCst) + 1;
                    if sh.drop_all.load(Ordering::SeqCst)
                        || (sh.faulty.load(Ordering::SeqCst) && n.is_multiple_of(sh.drop_every))
                    {
                        sh.dropped.fetch_add(1, Ordering::SeqCst);
                        return; // drop the response and cut both sides
                    }
                }
            }
            if cw.write_all(&frame).await.is_err() {
                return;
            }
        }
    };
    // Whichever direction ends first ends the connection: dropping all four halves closes both
    // sockets.
    tokio::select! {
        _ = requests => {}
        _ = responses => {}
    }
}

/// A broker that advertises the proxy, with the proxy pointed at it.
fn broker_behind(proxy: &FaultProxy, overrides: &[&str]) -> Broker {
    let mut args = vec!["--advertised-listener".to_string(), proxy.bootstrap()];
    for o in overrides {
        args.push("--override".to_string());
        args.push(o.to_string());
    }
    let b = Broker::start_with_args(args);
    proxy.set_upstream(b.port());
    b
}

// ----------------------------------------------------------------------------------------------
// A producer that records every delivery report
// ----------------------------------------------------------------------------------------------

/// Where a delivered record landed (partition, offset), or why it failed.
type Landed = Result<(i32, i64), String>;

#[derive(Default)]

struct Recorder {
    /// Per message index: `Ok((partition, offset))` or the error text.
    results: Mutex<Vec<Option<Landed>>>,
    delivered: AtomicUsize,
    failed: AtomicUsize,
    /// Messages reported more than once (must stay 0).
    double_reports: AtomicUsize,
}

impl ClientContext for Recorder {}

impl ProducerContext for Recorder {
    type DeliveryOpaque = Box<usize>;

    fn delivery(&self, r: &DeliveryResult<'_>, idx: Box<usize>) {
        let v = match r {
            Ok(m) => Ok((m.partition(), m.offset())),
            Err((e, _)) => {
                self.failed.fetch_add(1, Ordering::SeqCst);
                Err(e.to_string())
            }
        };
        let mut res = self.results.lock().unwrap();
        if res.len() <= *idx {
            res.resize(*idx + 1, None);
        }
        // No panics in a librdkafka callback: a second report is counted and asserted later.
        if res[*idx].is_some() {
            self.double_reports.fetch_add(1, Ordering::SeqCst);
        }
        res[*idx] = Some(v);
        drop(res);
        self.delivered.fetch_add(1, Ordering::SeqCst);
    }
}

fn idempotent_settings() -> Vec<(&'static str, &'static str)> {
    vec![
        ("enable.idempotence", "true"),
        ("acks", "all"),
        ("max.in.flight.requests.per.connection", "5"),
        ("linger.ms", "5"),
        ("batch.num.messages", "100"),
        ("message.timeout.ms", "60000"),
        ("retry.backoff.ms", "10"),
        ("retry.backoff.max.ms", "100"),
        ("reconnect.backoff.ms", "10"),
        ("reconnect.backoff.max.ms", "200"),
        ("socket.timeout.ms", "10000"),
        ("queue.buffering.max.messages", "100000"),
    ]
}

fn recording_producer(bootstrap: &str, settings: &[(&str, &str)]) -> ThreadedProducer<Recorder> {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap)
        .set("broker.address.family", "v4");
    for (k, v) in settings {
        c.set(*k, *v);
    }
    c.create_with_context(Recorder::default())
        .expect("create recording producer")
}

fn value(i: usize) -> String {
    format!("v{i:08}")
}

/// Enqueues message `i` (value `value(i)`) to partition `i % partitions`.
fn enqueue(p: &ThreadedProducer<Recorder>, topic: &str, partitions: usize, i: usize) {
    let v = value(i);
    let rec = BaseRecord::<(), str, Box<usize>>::with_opaque_to(topic, Box::new(i))
        .payload(v.as_str())
        .partition((i % partitions) as i32);
    if let Err((e, _)) = p.send(rec) {
        panic!("enqueue of message {i} failed: {e}");
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Disruption {
    None,
    GracefulRestart,
    Kill9Restart,
}

/// Streams `n` values through the faulty proxy, disrupting the broker halfway if asked, then
/// checks delivery reports and the partitions' contents.
fn idempotent_stream(partitions: usize, n: usize, disruption: Disruption) {
    let proxy = FaultProxy::start(7);
    let mut broker = broker_behind(&proxy, &[]);
    let topic = format!("idem-{partitions}-{disruption:?}").to_lowercase();
    create_topic_sync(&broker, &topic, partitions as i32);
    proxy.set_faulty(true);

    let p = recording_producer(&proxy.bootstrap(), &idempotent_settings());
    let started = Instant::now();
    // Enqueue in chunks, keeping at most WINDOW undelivered, so requests are in flight the whole
    // time (including when the broker goes away).
    const CHUNK: usize = 250;
    const WINDOW: usize = 2000;
    let mut enqueued = 0;
    while enqueued < n {
        if enqueued == n / 2 && disruption != Disruption::None {
            // Lose the response to at least one appended batch right before the outage, so the
            // client must retry it against the restarted broker, which must recognise it from
            // its snapshot (graceful) or from the log (kill -9).
            let half = (enqueued + 500).min(n);
            let dropped_before = proxy.dropped();
            proxy.set_drop_all(true);
            for i in enqueued..half {
                enqueue(&p, &topic, partitions, i);
            }
            enqueued = half;
            wait_for(
                "a produce response lost right before the outage",
                Duration::from_secs(20),
                Duration::from_millis(1),
                || (proxy.dropped() > dropped_before).then_some(()),
            );
            let refused_before = proxy.refused();
            match disruption {
                Disruption::GracefulRestart => {
                    broker.stop();
                }
                Disruption::Kill9Restart => broker.kill9(),
                Disruption::None => unreachable!(),
            }
            // Keep producing into the outage, until the client has demonstrably tried (and
            // failed) to reach the broker.
            proxy.set_drop_all(false);
            for i in enqueued..(enqueued + 500).min(n) {
                enqueue(&p, &topic, partitions, i);
            }
            enqueued = (enqueued + 500).min(n);
            wait_for(
                "the producer to hit the broker outage",
                Duration::from_secs(20),
                Duration::from_millis(10),
                || (proxy.refused() > refused_before).then_some(()),
            );
            eprintln!(
                "outage: {} of {n} delivered; {}",
                p.context().delivered.load(Ordering::SeqCst),
                proxy.stats()
            );
            broker.restart();
            continue;
        }
        let end = (enqueued + CHUNK).min(n);
        for i in enqueued..end {
            enqueue(&p, &topic, partitions, i);
        }
        enqueued = end;
        let ctx = p.context().clone();
        wait_for(
            "the producer to keep up",
            Duration::from_secs(60),
            Duration::from_millis(2),
            || (ctx.delivered.load(Ordering::SeqCst) + WINDOW >= enqueued).then_some(()),
        );
        assert_eq!(
            ctx.failed.load(Ordering::SeqCst),
            0,
            "delivery failures: {:?}\n{}",
            ctx.results
                .lock()
                .unwrap()
                .iter()
                .flatten()
                .filter(|r| r.is_err())
                .take(5)
                .collect::<Vec<_>>(),
            proxy.stats()
        );
    }
    p.flush(Duration::from_secs(90)).expect("flush producer");
    let ctx = p.context().clone();
    wait_for(
        "every delivery report",
        Duration::from_secs(30),
        Duration::from_millis(5),
        || (ctx.delivered.load(Ordering::SeqCst) == n).then_some(()),
    );
    let elapsed = started.elapsed();
    eprintln!("{topic}: {n} delivered in {elapsed:?}; {}", proxy.stats());
    drop(p);

    // Delivery reports: each message Ok, at the next offset of its partition.
    assert_eq!(
        ctx.double_reports.load(Ordering::SeqCst),
        0,
        "messages with two delivery reports"
    );
    let results = ctx.results.lock().unwrap().clone();
    let mut next = vec![0i64; partitions];
    for (i, r) in results.iter().enumerate() {
        let part = i % partitions;
        match r {
            Some(Ok((rp, off))) => {
                assert_eq!(
                    *rp as usize, part,
                    "message {i} delivered to a wrong partition"
                );
                assert_eq!(
                    *off,
                    next[part],
                    "message {i} ({}) delivery report offset on partition {part}",
                    value(i)
                );
                next[part] += 1;
            }
            Some(Err(e)) => panic!("message {i} failed: {e}\n{}", proxy.stats()),
            None => panic!("message {i} has no delivery report"),
        }
    }

    assert!(
        proxy.dropped() > 0,
        "the proxy never dropped a produce response: {}",
        proxy.stats()
    );
    if disruption == Disruption::None {
        // Every 7th produce response is dropped; a stream of this size needs dozens of requests.
        assert!(
            proxy.dropped() >= 5,
            "too few faults injected: {}",
            proxy.stats()
        );
    }

    // Read everything back (through the proxy, faults off).
    proxy.set_faulty(false);
    let c = consumer(
        &broker,
        &[
            ("bootstrap.servers", proxy.bootstrap().as_str()),
            ("check.crcs", "true"),
        ],
    );
    for part in 0..partitions {
        let got = consume_all(&c, &topic, part as i32, Duration::from_secs(30));
        let values: Vec<String> = got
            .iter()
            .map(|g| String::from_utf8(g.value.clone().unwrap()).unwrap())
            .collect();
        let expect: Vec<String> = (0..n)
            .filter(|i| i % partitions == part)
            .map(value)
            .collect();
        if values != expect {
            let mut seen = HashSet::new();
            let dups: Vec<&String> = values
                .iter()
                .filter(|v| !seen.insert(*v))
                .take(10)
                .collect();
            let have: HashSet<&String> = values.iter().collect();
            let missing: Vec<&String> = expect
                .iter()
                .filter(|v| !have.contains(v))
                .take(10)
                .collect();
            let first_diff = values
                .iter()
                .zip(&expect)
                .position(|(a, b)| a != b)
                .unwrap_or(values.len().min(expect.len()));
            panic!(
                "{topic}-{part}: {} records, expected {}; first difference at offset {first_diff}; \
                 duplicates (first 10): {dups:?}; missing (first 10): {missing:?}\n{}",
                values.len(),
                expect.len(),
                proxy.stats()
            );
        }
    }

    // One producer wrote each partition.
    let mut raw = RawConn::connect(&broker);
    for part in 0..partitions {
        let producers = describe_producers(&mut raw, &topic, part as i32);
        assert_eq!(
            producers.len(),
            1,
            "{topic}-{part} producers: {producers:?}"
        );
        // The client never had to bump its epoch (no sequence error, no timeout), so the last
        // sequence is the partition's record count - 1.
        let count = (0..n).filter(|i| i % partitions == part).count() as i32;
        assert_eq!(
            (producers[0].producer_epoch, producers[0].last_sequence),
            (0, count - 1),
            "{topic}-{part} producer state: {:?}",
            producers[0]
        );
        eprintln!("{topic}-{part}: {:?}", producers[0]);
    }
    broker.assert_running("after the idempotent stream");
}

#[test]
fn idempotent_stream_through_faulty_proxy_single_partition() {
    idempotent_stream(1, 20_000, Disruption::None);
}

#[test]
fn idempotent_stream_through_faulty_proxy_three_partitions() {
    idempotent_stream(3, 20_000, Disruption::None);
}

#[test]
fn idempotent_stream_survives_graceful_restart() {
    idempotent_stream(1, 20_000, Disruption::GracefulRestart);
}

#[test]
fn idempotent_stream_survives_kill9_restart() {
    idempotent_stream(1, 20_000, Disruption::Kill9Restart);
}

#[test]
fn idempotent_stream_survives_kill9_restart_three_partitions() {
    idempotent_stream(3, 12_000, Disruption::Kill9Restart);
}

/// Sanity check of the proxy itself: without idempotence the same faults do duplicate records.
#[test]
fn proxy_faults_duplicate_records_without_idempotence() {
    let proxy = FaultProxy::start(7);
    let broker = broker_behind(&proxy, &[]);
    let topic = "not-idempotent";
    create_topic_sync(&broker, topic, 1);
    proxy.set_faulty(true);
    let mut settings = idempotent_settings();
    settings[0] = ("enable.idempotence", "false");
    let p = recording_producer(&proxy.bootstrap(), &settings);
    let n = 3000;
    for i in 0..n {
        enqueue(&p, topic, 1, i);
    }
    p.flush(Duration::from_secs(60)).expect("flush");
    let ctx = p.context().clone();
    wait_for(
        "every delivery report",
        Duration::from_secs(30),
        Duration::from_millis(5),
        || (ctx.delivered.load(Ordering::SeqCst) == n).then_some(()),
    );
    assert_eq!(ctx.failed.load(Ordering::SeqCst), 0, "{}", proxy.stats());
    drop(p);
    assert!(proxy.dropped() > 0, "{}", proxy.stats());
    proxy.set_faulty(false);
    let c = consumer(
        &broker,
        &[("bootstrap.servers", proxy.bootstrap().as_str())],
    );
    let got = consume_all(&c, topic, 0, Duration::from_secs(30));
    let distinct: HashSet<_> = got.iter().map(|g| g.value.clone()).collect();
    assert_eq!(distinct.len(), n, "every value arrived");
    assert!(
        got.len() > n,
        "expected duplicates without idempotence, got exactly {} records; {}",
        got.len(),
        proxy.stats()
    );
    eprintln!(
        "without idempotence: {} records for {n} values; {}",
        got.len(),
        proxy.stats()
    );
}

#[test]
fn idempotence_error_codes_and_producer_ids_across_restarts() {
    let mut broker = Broker::start();
    let topic = "raw-idem";
    create_topic_sync(&broker, topic, 1);
    let mut c = RawConn::connect(&broker);
    let now = now_ms();

    // InitProducerId v4: a fresh id at epoch 0.
    let init = init_producer_id(&mut c, 4, -1, -1, None);
    assert_eq!(init.error_code, NONE, "InitProducerId");
    let pid = init.producer_id.0;
    assert!(pid >= 0, "producer id {pid}");
    assert_eq!(init.producer_epoch, 0);
    let mut issued = vec![pid];

    // Sequences 0..9: appended at 0.
    let b0 = batch(pid, 0, 0, 10, now, "a");
    expect_produce(
        &produce_raw(&mut c, topic, 0, b0.clone()),
        NONE,
        Some(0),
        "seq 0..9",
    );
    assert_eq!(log_end(&mut c, topic, 0), 10);

    // The same batch again (a retry): the original offset, nothing appended.
    expect_produce(
        &produce_raw(&mut c, topic, 0, b0.clone()),
        NONE,
        Some(0),
        "duplicate 0..9",
    );
    assert_eq!(
        log_end(&mut c, topic, 0),
        10,
        "a duplicate must not be appended"
    );

    // A gap (next expected is 10).
    let gap = produce_raw(&mut c, topic, 0, batch(pid, 0, 20, 5, now, "gap"));
    expect_produce(&gap, OUT_OF_ORDER_SEQUENCE_NUMBER, None, "seq 20 after 9");
    assert_eq!(log_end(&mut c, topic, 0), 10);

    // In order again: appended.
    let b1 = batch(pid, 0, 10, 10, now, "b");
    expect_produce(
        &produce_raw(&mut c, topic, 0, b1.clone()),
        NONE,
        Some(10),
        "seq 10..19",
    );
    // An older batch still within the last five is still a duplicate.
    expect_produce(
        &produce_raw(&mut c, topic, 0, b0.clone()),
        NONE,
        Some(0),
        "late retry of 0..9",
    );
    assert_eq!(log_end(&mut c, topic, 0), 20);

    // Re-init with id and epoch: same id, epoch bumped.
    let re = init_producer_id(&mut c, 4, pid, 0, None);
    assert_eq!(re.error_code, NONE, "re-init");
    assert_eq!(re.producer_id.0, pid, "re-init keeps the producer id");
    assert_eq!(re.producer_epoch, 1, "re-init bumps the epoch");

    // New epoch restarts at 0 and fences the old one.
    let e1 = batch(pid, 1, 0, 10, now, "c");
    expect_produce(
        &produce_raw(&mut c, topic, 0, e1.clone()),
        NONE,
        Some(20),
        "epoch 1 seq 0..9",
    );
    let old = produce_raw(&mut c, topic, 0, batch(pid, 0, 20, 5, now, "old"));
    expect_produce(&old, INVALID_PRODUCER_EPOCH, None, "epoch 0 after epoch 1");
    assert_eq!(log_end(&mut c, topic, 0), 30);

    // An issued id this partition never saw, starting at sequence 5.
    let fresh = init_producer_id(&mut c, 4, -1, -1, None);
    assert_eq!(fresh.error_code, NONE);
    let pid2 = fresh.producer_id.0;
    assert!(pid2 > pid, "producer ids grow: {pid} then {pid2}");
    issued.push(pid2);
    let unknown = produce_raw(&mut c, topic, 0, batch(pid2, 0, 5, 3, now, "u"));
    expect_produce(
        &unknown,
        UNKNOWN_PRODUCER_ID,
        None,
        "unknown producer at seq 5",
    );
    assert_eq!(log_end(&mut c, topic, 0), 30);

    // Two batches in one partition's records (plain and idempotent).
    let mut two = BytesMut::new();
    two.extend_from_slice(&batch(-1, -1, -1, 2, now, "p1"));
    two.extend_from_slice(&batch(-1, -1, -1, 2, now, "p2"));
    let r = produce_raw(&mut c, topic, 0, two.freeze());
    expect_produce(&r, INVALID_RECORD, None, "two plain batches");
    let mut two = BytesMut::new();
    two.extend_from_slice(&batch(pid2, 0, 0, 2, now, "i1"));
    two.extend_from_slice(&batch(pid2, 0, 2, 2, now, "i2"));
    let r = produce_raw(&mut c, topic, 0, two.freeze());
    expect_produce(&r, INVALID_RECORD, None, "two idempotent batches");
    assert_eq!(log_end(&mut c, topic, 0), 30);
    // Nothing of pid2 was recorded by the refused request: it still starts at 0.
    let p2 = batch(pid2, 0, 0, 4, now, "d");
    expect_produce(
        &produce_raw(&mut c, topic, 0, p2.clone()),
        NONE,
        Some(30),
        "pid2 seq 0..3",
    );

    // A transactional id: no transaction coordinator.
    for v in [0, 1, 2, 3, 4, 5] {
        let t = init_producer_id(&mut c, v, -1, -1, Some("txn-1"));
        assert_eq!(
            t.error_code, COORDINATOR_NOT_AVAILABLE,
            "InitProducerId v{v} with a transactional id"
        );
    }
    // Every version hands out ids.
    for v in [0, 1, 2, 3, 5] {
        let r = init_producer_id(&mut c, v, -1, -1, None);
        assert_eq!(r.error_code, NONE, "InitProducerId v{v}");
        assert!(
            r.producer_id.0 > *issued.last().unwrap(),
            "v{v}: {:?}",
            r.producer_id
        );
        assert_eq!(r.producer_epoch, 0);
        issued.push(r.producer_id.0);
    }

    // DescribeProducers: both producers with their epochs and last sequences.
    let mut producers = describe_producers(&mut c, topic, 0);
    producers.sort_by_key(|p| p.producer_id.0);
    let summary: Vec<(i64, i32, i32)> = producers
        .iter()
        .map(|p| (p.producer_id.0, p.producer_epoch, p.last_sequence))
        .collect();
    assert_eq!(
        summary,
        vec![(pid, 1, 9), (pid2, 0, 3)],
        "DescribeProducers"
    );
    for p in &producers {
        assert!(p.last_timestamp > 0, "last timestamp of {p:?}");
    }

    // Graceful restart: ids are never reused; duplicates of the last batches are still known.
    let end_before = log_end(&mut c, topic, 0);
    drop(c);
    broker.stop();
    broker.restart();
    let mut c = RawConn::connect(&broker);
    let after = init_producer_id(&mut c, 4, -1, -1, None);
    assert_eq!(after.error_code, NONE);
    let max_before = *issued.iter().max().unwrap();
    assert!(
        after.producer_id.0 > max_before,
        "after a graceful restart the broker issued {} but {max_before} was issued before",
        after.producer_id.0
    );
    issued.push(after.producer_id.0);
    expect_produce(
        &produce_raw(&mut c, topic, 0, e1.clone()),
        NONE,
        Some(20),
        "retry of epoch 1 seq 0..9 after restart",
    );
    expect_produce(
        &produce_raw(&mut c, topic, 0, p2.clone()),
        NONE,
        Some(30),
        "retry of pid2 seq 0..3 after restart",
    );
    assert_eq!(
        log_end(&mut c, topic, 0),
        end_before,
        "duplicates after restart appended"
    );
    let old = produce_raw(&mut c, topic, 0, batch(pid, 0, 20, 5, now, "old"));
    expect_produce(&old, INVALID_PRODUCER_EPOCH, None, "epoch 0 after restart");
    let gap = produce_raw(&mut c, topic, 0, batch(pid, 1, 15, 5, now, "gap"));
    expect_produce(
        &gap,
        OUT_OF_ORDER_SEQUENCE_NUMBER,
        None,
        "gap after restart",
    );
    // Continue pid's stream after the restart.
    let e1b = batch(pid, 1, 10, 5, now, "e");
    expect_produce(
        &produce_raw(&mut c, topic, 0, e1b.clone()),
        NONE,
        Some(end_before),
        "epoch 1 seq 10..14 after restart",
    );
    let end_before = end_before + 5;
    // Re-init of an id issued before the restart still bumps its epoch.
    let re = init_producer_id(&mut c, 4, pid, 1, None);
    assert_eq!(
        (re.error_code, re.producer_id.0, re.producer_epoch),
        (NONE, pid, 2),
        "re-init after restart"
    );
    let mut producers = describe_producers(&mut c, topic, 0);
    producers.sort_by_key(|p| p.producer_id.0);
    let summary: Vec<(i64, i32, i32)> = producers
        .iter()
        .map(|p| (p.producer_id.0, p.producer_epoch, p.last_sequence))
        .collect();
    assert_eq!(
        summary,
        vec![(pid, 1, 14), (pid2, 0, 3)],
        "DescribeProducers after a graceful restart"
    );

    // kill -9: same guarantees, rebuilt from the log.
    drop(c);
    broker.kill9();
    broker.restart();
    let mut c = RawConn::connect(&broker);
    let after = init_producer_id(&mut c, 4, -1, -1, None);
    assert_eq!(after.error_code, NONE);
    let max_before = *issued.iter().max().unwrap();
    assert!(
        after.producer_id.0 > max_before,
        "after kill -9 the broker issued {} but {max_before} was issued before",
        after.producer_id.0
    );
    expect_produce(
        &produce_raw(&mut c, topic, 0, e1b.clone()),
        NONE,
        Some(end_before - 5),
        "retry of epoch 1 seq 10..14 after kill -9",
    );
    expect_produce(
        &produce_raw(&mut c, topic, 0, p2.clone()),
        NONE,
        Some(30),
        "retry of pid2 seq 0..3 after kill -9",
    );
    assert_eq!(
        log_end(&mut c, topic, 0),
        end_before,
        "duplicates after kill -9 appended"
    );
    let unknown = produce_raw(
        &mut c,
        topic,
        0,
        batch(after.producer_id.0, 0, 1, 1, now, "u2"),
    );
    expect_produce(
        &unknown,
        UNKNOWN_PRODUCER_ID,
        None,
        "new id at seq 1 after kill -9",
    );
    let mut producers = describe_producers(&mut c, topic, 0);
    producers.sort_by_key(|p| p.producer_id.0);
    let summary: Vec<(i64, i32, i32)> = producers
        .iter()
        .map(|p| (p.producer_id.0, p.producer_epoch, p.last_sequence))
        .collect();
    assert_eq!(
        summary,
        vec![(pid, 1, 14), (pid2, 0, 3)],
        "DescribeProducers after kill -9"
    );
    broker.assert_running("after the raw idempotence checks");
}

/// DescribeProducers after a plain (no faults) librdkafka idempotent stream.
#[test]
fn describe_producers_after_idempotent_stream() {
    let broker = Broker::start();
    let topic = "described";
    create_topic_sync(&broker, topic, 1);
    let p = recording_producer(&broker.bootstrap(), &idempotent_settings());
    let n = 1000;
    for i in 0..n {
        enqueue(&p, topic, 1, i);
    }
    p.flush(Duration::from_secs(30)).expect("flush");
    let ctx = p.context().clone();
    wait_for(
        "deliveries",
        CLIENT_TIMEOUT,
        Duration::from_millis(5),
        || (ctx.delivered.load(Ordering::SeqCst) == n).then_some(()),
    );
    assert_eq!(ctx.failed.load(Ordering::SeqCst), 0);
    let before = now_ms();
    drop(p);
    let mut c = RawConn::connect(&broker);
    let producers = describe_producers(&mut c, topic, 0);
    assert_eq!(producers.len(), 1, "{producers:?}");
    let ps = &producers[0];
    assert!(ps.producer_id.0 >= 0, "{ps:?}");
    assert_eq!(ps.producer_epoch, 0, "{ps:?}");
    assert_eq!(ps.last_sequence, n as i32 - 1, "{ps:?}");
    assert!(
        ps.last_timestamp > 0 && ps.last_timestamp <= before + 1000,
        "last timestamp {ps:?}"
    );
    // Unknown partitions are an error per partition.
    let req = DescribeProducersRequest::default().with_topics(vec![TopicRequest::default()
        .with_name(TopicName(kstr(topic)))
        .with_partition_indexes(vec![7])]);
    let resp = c.call(0, &req);
    assert_eq!(
        resp.topics[0].partitions[0].error_code, 3,
        "unknown partition"
    );
}

// ----------------------------------------------------------------------------------------------
// Topic configs: max.message.bytes, LogAppendTime, timestamp bounds
// ----------------------------------------------------------------------------------------------

fn create_topic_with(broker: &Broker, name: &str, configs: &[(&str, &str)]) {
    let a = admin(broker);
    let mut t = NewTopic::new(name, 1, TopicReplication::Fixed(1));
    for (k, v) in configs {
        t = t.set(k, v);
    }
    let res = block_on(a.create_topics(&[t], &admin_opts())).expect("CreateTopics");
    assert_eq!(
        res[0],
        Ok(name.to_string()),
        "create {name} with {configs:?}"
    );
}

/// Sends one record with an explicit timestamp and returns its delivery.
fn send_one(
    p: &FutureProducer,
    topic: &str,
    value: &[u8],
    ts: Option<i64>,
) -> Result<(i64, Timestamp), KafkaError> {
    let mut fr: FutureRecord<'_, (), [u8]> = FutureRecord::to(topic).payload(value).partition(0);
    if let Some(ts) = ts {
        fr = fr.timestamp(ts);
    }
    block_on(p.send(fr, Duration::from_secs(5)))
        .map(|d| (d.offset, d.timestamp))
        .map_err(|(e, _)| e)
}

fn expect_code(r: Result<(i64, Timestamp), KafkaError>, code: RDKafkaErrorCode, what: &str) {
    match r {
        Err(KafkaError::MessageProduction(c)) if c == code => {}
        other => panic!("{what}: expected {code:?}, got {other:?}"),
    }
}

#[test]
fn message_too_large_topic_and_broker_limits() {
    let broker = Broker::start();
    create_topic_with(&broker, "small-msgs", &[("max.message.bytes", "10000")]);
    // The client's own limit is far above the topic's, so the broker is the one refusing.
    let p = producer(
        &broker,
        &[
            ("acks", "all"),
            ("message.max.bytes", "5000000"),
            ("linger.ms", "0"),
        ],
    );
    let big = vec![b'x'; 20_000];
    expect_code(
        send_one(&p, "small-msgs", &big, None),
        RDKafkaErrorCode::MessageSizeTooLarge,
        "20 KB record on a topic with max.message.bytes=10000",
    );
    let ok = send_one(&p, "small-msgs", &vec![b'y'; 5_000], None).expect("5 KB record");
    assert_eq!(ok.0, 0, "the refused record took no offset");
    let ok = send_one(&p, "small-msgs", b"tiny", None).expect("tiny record");
    assert_eq!(ok.0, 1);

    // Idempotent producer: the refusal is per message; later records still go through.
    let ip = producer(
        &broker,
        &[
            ("enable.idempotence", "true"),
            ("message.max.bytes", "5000000"),
            ("linger.ms", "0"),
        ],
    );
    expect_code(
        send_one(&ip, "small-msgs", &big, None),
        RDKafkaErrorCode::MessageSizeTooLarge,
        "20 KB record from an idempotent producer",
    );
    drop(ip);

    // A topic without its own limit inherits the broker's message.max.bytes.
    let b2 = Broker::start_with(&["message.max.bytes=10000"]);
    create_topic_sync(&b2, "inherits", 1);
    let p2 = producer(
        &b2,
        &[
            ("acks", "all"),
            ("message.max.bytes", "5000000"),
            ("linger.ms", "0"),
        ],
    );
    expect_code(
        send_one(&p2, "inherits", &big, None),
        RDKafkaErrorCode::MessageSizeTooLarge,
        "20 KB record with broker message.max.bytes=10000",
    );
    send_one(&p2, "inherits", &vec![b'z'; 5_000], None)
        .expect("5 KB record under the broker limit");
    // A topic-level override above the broker limit wins.
    create_topic_with(&b2, "bigger", &[("max.message.bytes", "100000")]);
    send_one(&p2, "bigger", &big, None).expect("20 KB record on a topic allowing 100000");
}

#[test]
fn log_append_time_topic_stamps_batches() {
    let broker = Broker::start();
    let topic = "lat";
    create_topic_with(
        &broker,
        topic,
        &[("message.timestamp.type", "LogAppendTime")],
    );
    let old = 978_307_200_000; // 2001-01-01
    let before = now_ms();
    let p = producer(&broker, &[("acks", "all"), ("linger.ms", "20")]);
    // A batch of several records, all stamped 2001.
    let futures: Vec<_> = (0..10)
        .map(|i| {
            let v = format!("lat-{i}");
            let fr: FutureRecord<'_, (), str> = FutureRecord::to(topic)
                .payload(v.as_str())
                .partition(0)
                .timestamp(old);
            p.send_result(fr).map_err(|(e, _)| e).expect("enqueue")
        })
        .collect();
    for (i, f) in futures.into_iter().enumerate() {
        let d = block_on(f)
            .expect("cancelled")
            .unwrap_or_else(|(e, _)| panic!("record {i}: {e}"));
        assert_eq!(d.offset, i as i64);
        // librdkafka takes the produce response's log_append_time_ms as the record's time.
        match d.timestamp {
            Timestamp::LogAppendTime(t) => assert!(
                t >= before - 1000 && t <= now_ms() + 1000,
                "delivery {i}: log append time {t} not near now ({before})"
            ),
            other => panic!("delivery {i}: timestamp {other:?}, expected LogAppendTime"),
        }
    }
    // Raw produce: the response carries log_append_time_ms.
    let mut c = RawConn::connect(&broker);
    let r = produce_raw(&mut c, topic, 0, batch(-1, -1, -1, 3, old, "raw"));
    expect_produce(&r, NONE, Some(10), "raw produce to a LogAppendTime topic");
    let after = now_ms();
    assert!(
        r.log_append_time_ms >= before - 1000 && r.log_append_time_ms <= after + 1000,
        "log_append_time_ms {} not within [{before}, {after}]",
        r.log_append_time_ms
    );
    // A CreateTime topic answers -1.
    create_topic_sync(&broker, "ct", 1);
    let r = produce_raw(&mut c, "ct", 0, batch(-1, -1, -1, 1, old, "ct"));
    expect_produce(&r, NONE, Some(0), "raw produce to a CreateTime topic");
    assert_eq!(
        r.log_append_time_ms, -1,
        "CreateTime topic log_append_time_ms"
    );

    // Consumers see LogAppendTime stamps near now; check.crcs proves the CRC was recomputed.
    let cons = consumer(&broker, &[("check.crcs", "true")]);
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .unwrap();
    cons.assign(&tpl).unwrap();
    let got = poll_typed(&cons, 13, Duration::from_secs(15));
    let after = now_ms();
    for (off, ts, v) in &got {
        match ts {
            Timestamp::LogAppendTime(t) => assert!(
                *t >= before - 1000 && *t <= after + 1000,
                "offset {off} ({v}): log append time {t} not within [{before}, {after}]"
            ),
            other => panic!("offset {off} ({v}): timestamp {other:?}, expected LogAppendTime"),
        }
    }
    // The same consumer on the CreateTime topic keeps the producer's time.
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("ct", 0, Offset::Beginning)
        .unwrap();
    cons.assign(&tpl).unwrap();
    let got = poll_typed(&cons, 1, Duration::from_secs(15));
    assert_eq!(got[0].1, Timestamp::CreateTime(old));
}

/// Polls `n` records, keeping offset, timestamp (with its type) and value.
fn poll_typed(c: &BaseConsumer, n: usize, timeout: Duration) -> Vec<(i64, Timestamp, String)> {
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    while out.len() < n {
        let now = Instant::now();
        assert!(
            now < deadline,
            "consumed only {} of {n}: {out:?}",
            out.len()
        );
        match c.poll(deadline - now) {
            None => {}
            Some(Ok(m)) => out.push((
                m.offset(),
                m.timestamp(),
                String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned(),
            )),
            Some(Err(KafkaError::PartitionEOF(_))) => {}
            Some(Err(e)) => panic!("consumer error after {} records: {e}", out.len()),
        }
    }
    out
}

#[test]
fn timestamp_bounds_are_enforced() {
    let broker = Broker::start();
    create_topic_with(
        &broker,
        "past",
        &[("message.timestamp.before.max.ms", "3600000")],
    );
    create_topic_with(
        &broker,
        "future",
        &[("message.timestamp.after.max.ms", "3600000")],
    );
    let p = producer(&broker, &[("acks", "all"), ("linger.ms", "0")]);
    let hour = 3_600_000;
    expect_code(
        send_one(&p, "past", b"2h ago", Some(now_ms() - 2 * hour)),
        RDKafkaErrorCode::InvalidTimestamp,
        "record 2 hours old on before.max.ms=1h",
    );
    assert_eq!(
        send_one(&p, "past", b"now", Some(now_ms())).expect("now").0,
        0
    );
    send_one(&p, "past", b"30 min ago", Some(now_ms() - hour / 2)).expect("30 minutes old");
    send_one(&p, "past", b"2h ahead", Some(now_ms() + 2 * hour)).expect("future unbounded");
    expect_code(
        send_one(&p, "future", b"2h ahead", Some(now_ms() + 2 * hour)),
        RDKafkaErrorCode::InvalidTimestamp,
        "record 2 hours ahead on after.max.ms=1h",
    );
    assert_eq!(
        send_one(&p, "future", b"now", Some(now_ms()))
            .expect("now")
            .0,
        0
    );
    send_one(&p, "future", b"2001", Some(978_307_200_000)).expect("past unbounded");

    // Raw: the exact code, and nothing appended.
    let mut c = RawConn::connect(&broker);
    let r = produce_raw(
        &mut c,
        "past",
        0,
        batch(-1, -1, -1, 2, now_ms() - 2 * hour, "old"),
    );
    expect_produce(&r, 32, None, "raw produce 2 hours old");
    let end = log_end(&mut c, "past", 0);
    assert_eq!(end, 3, "refused batches take no offsets");
}
