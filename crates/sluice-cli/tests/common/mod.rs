//! Shared harness for the black-box tests: start the real `sluice` binary on a free loopback port
//! with its own data directory, and drive it with real Kafka clients (rdkafka).
//!
//! Every wait is a poll on a condition with a deadline; nothing sleeps to "let things settle".
//! When an assertion fails while a [`Broker`] is alive, its `Drop` prints the tail of the broker's
//! log so the failure report carries the broker's side of the story.

#![allow(dead_code)] // Each test binary uses a different subset of the helpers.

pub mod children;
pub mod cluster;
pub mod group_load;
pub mod proxied;

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::future::Future;
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::describe_producers_request::{
    DescribeProducersRequest, TopicRequest,
};
use kafka_protocol::messages::describe_producers_response::ProducerState;
use kafka_protocol::messages::init_producer_id_request::InitProducerIdRequest;
use kafka_protocol::messages::init_producer_id_response::InitProducerIdResponse;
use kafka_protocol::messages::list_offsets_request::{
    ListOffsetsPartition, ListOffsetsRequest, ListOffsetsTopic,
};
use kafka_protocol::messages::produce_request::{
    PartitionProduceData, ProduceRequest, TopicProduceData,
};
use kafka_protocol::messages::produce_response::PartitionProduceResponse;
use kafka_protocol::messages::{BrokerId, ProducerId, TopicName, TransactionalId};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// How long the broker gets to start accepting connections.
pub const START_TIMEOUT: Duration = Duration::from_secs(45);
/// How long a graceful shutdown may take before the test calls it hung.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// Default bound for any client-side wait (admin results, deliveries, consumption).
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(15);

/// Polls `cond` every `every` until it returns `Some`, or panics with `what` after `timeout`.
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut cond: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = cond() {
            return v;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        std::thread::sleep(every);
    }
}

/// Runs a future to completion on a fresh current-thread runtime (for sync tests that need one
/// async rdkafka call).
pub fn block_on<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("build tokio runtime")
        .block_on(f)
}

/// A free loopback port for a broker to bind. Probed below the OS's ephemeral range (Linux's is
/// 32768-60999): a port the OS hands out for `bind(0)` is one it also gives the brokers'
/// outgoing connections, which took a probed port before its broker bound it often enough to
/// fail a cluster test with four brokers and a consumer group at work. Each test process walks
/// its own stretch of 20000-31999 (from its pid), and never probes a port twice.
pub fn free_port() -> u16 {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    let start = (std::process::id() % 100) * (SPAN / 100);
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let port = (LOW + (start + n) % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local_addr").port()
}

/// `serve` arguments for Kafka config overrides, each `"key=value"`.
pub fn override_args(overrides: &[&str]) -> Vec<String> {
    overrides
        .iter()
        .flat_map(|o| ["--override".to_string(), o.to_string()])
        .collect()
}

/// One `sluice serve` process plus the state that survives its restarts (port, data dir, log).
pub struct Broker {
    /// Kept across restarts: recovery must find the same files.
    data_dir: tempfile::TempDir,
    /// Holds the broker's stdout/stderr log, outside the data dir so it cannot confuse recovery.
    log_dir: tempfile::TempDir,
    /// Kept across restarts so clients' bootstrap string stays valid.
    port: u16,
    /// `--durability` and `--override` arguments, replayed on restart.
    extra_args: Vec<String>,
    /// `None` between a stop/kill and the next start.
    child: Option<Child>,
    /// How many times the process has been started (labels the log sections).
    starts: u32,
    /// `--node-id`.
    node_id: u32,
}

impl Broker {
    /// Starts a broker with default settings.
    pub fn start() -> Broker {
        Broker::start_with(&[])
    }

    /// Starts a broker with Kafka config overrides, each `"key=value"`.
    pub fn start_with(overrides: &[&str]) -> Broker {
        Broker::start_with_args(override_args(overrides))
    }

    /// Starts a broker with arbitrary extra `serve` arguments.
    pub fn start_with_args(extra_args: Vec<String>) -> Broker {
        let data_dir = tempfile::Builder::new()
            .prefix("sluice-it-data")
            .tempdir()
            .expect("create data dir");
        Broker::start_in(data_dir, extra_args)
    }

    /// Starts a broker on a data dir that already holds data (e.g. an unpacked fixture), with
    /// arbitrary extra `serve` arguments. The dir is removed when the broker is dropped.
    pub fn start_in(data_dir: tempfile::TempDir, extra_args: Vec<String>) -> Broker {
        let mut b = Broker {
            data_dir,
            log_dir: tempfile::Builder::new()
                .prefix("sluice-it-log")
                .tempdir()
                .expect("create log dir"),
            port: free_port(),
            extra_args,
            child: None,
            starts: 0,
            node_id: 1,
        };
        b.spawn();
        b
    }

    /// A node of a cluster, not started yet: its ports must be known to every node's
    /// `--voters` before any starts, and no node finishes starting before a quorum runs, so a
    /// cluster spawns every process first ([`Broker::spawn_process`]) and then waits for each
    /// ([`Broker::wait_accepting`]).
    pub fn prepare_node(node_id: u32, port: u16, extra_args: Vec<String>) -> Broker {
        Broker {
            data_dir: tempfile::Builder::new()
                .prefix("sluice-it-data")
                .tempdir()
                .expect("create data dir"),
            log_dir: tempfile::Builder::new()
                .prefix("sluice-it-log")
                .tempdir()
                .expect("create log dir"),
            port,
            extra_args,
            child: None,
            starts: 0,
            node_id,
        }
    }

    pub fn node_id(&self) -> u32 {
        self.node_id
    }

    /// Replaces the extra `serve` arguments used by the next start.
    pub fn set_extra_args(&mut self, extra_args: Vec<String>) {
        self.extra_args = extra_args;
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn data_dir(&self) -> &Path {
        self.data_dir.path()
    }

    pub fn log_path(&self) -> PathBuf {
        self.log_dir.path().join("broker.log")
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("broker is not running").id()
    }

    fn spawn(&mut self) {
        self.spawn_process();
        self.wait_accepting();
    }

    pub fn spawn_process(&mut self) {
        assert!(self.child.is_none(), "broker already running");
        self.starts += 1;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open broker log");
        writeln!(log, "===== sluice-it: start #{} =====", self.starts).expect("write log");
        let stderr = log.try_clone().expect("clone log handle");
        let child = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .arg("serve")
            .arg("--listen")
            .arg(self.bootstrap())
            .arg("--data-dir")
            .arg(self.data_dir.path())
            .arg("--node-id")
            .arg(self.node_id.to_string())
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(stderr))
            .spawn()
            .expect("spawn sluice binary");
        self.child = Some(child);
    }

    /// Waits until a TCP connect succeeds, failing fast if the process exits first.
    pub fn wait_accepting(&mut self) {
        let addr = self.addr();
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().expect("try_wait") {
                self.child = None;
                panic!(
                    "broker exited during startup with {status}\n{}",
                    self.log_tail()
                );
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "broker did not accept connections on {addr} within {START_TIMEOUT:?}\n{}",
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether a process was started and not stopped or killed since (no reaping).
    pub fn is_running_ref(&self) -> bool {
        self.child.is_some()
    }

    /// True while the process has not exited.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            None => false,
            Some(c) => c.try_wait().expect("try_wait").is_none(),
        }
    }

    /// Panics (with the log tail) unless the process is still alive.
    pub fn assert_running(&mut self, context: &str) {
        if let Some(c) = self.child.as_mut() {
            if let Some(status) = c.try_wait().expect("try_wait") {
                self.child = None;
                panic!("broker died ({status}) {context}\n{}", self.log_tail());
            }
        } else {
            panic!("broker is not running {context}");
        }
    }

    /// Graceful shutdown: SIGTERM, then wait (bounded) and require exit code 0.
    pub fn stop(&mut self) -> ExitStatus {
        let pid = self.pid();
        let ok = Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status()
            .expect("run kill -TERM");
        assert!(ok.success(), "kill -TERM {pid} failed");
        let child = self.child.as_mut().unwrap();
        let deadline = Instant::now() + STOP_TIMEOUT;
        let status = loop {
            if let Some(s) = child.try_wait().expect("try_wait") {
                break s;
            }
            if Instant::now() >= deadline {
                let tail = self.log_tail();
                panic!("broker did not exit within {STOP_TIMEOUT:?} of SIGTERM\n{tail}");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        self.child = None;
        assert!(
            status.success(),
            "graceful shutdown must exit with code 0, got {status}\n{}",
            self.log_tail()
        );
        status
    }

    /// SIGSTOP: the process freezes (heartbeats, fetches and all) until [`Broker::resume`].
    pub fn pause(&mut self) {
        self.signal("-STOP");
    }

    /// SIGCONT after [`Broker::pause`].
    pub fn resume(&mut self) {
        self.signal("-CONT");
    }

    fn signal(&mut self, sig: &str) {
        let pid = self.pid();
        let ok = Command::new("kill")
            .arg(sig)
            .arg(pid.to_string())
            .status()
            .expect("run kill");
        assert!(ok.success(), "kill {sig} {pid} failed");
    }

    /// SIGKILL: no chance to flush or clean up.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("broker is not running");
        child.kill().expect("SIGKILL broker");
        child.wait().expect("reap killed broker");
    }

    /// Starts the process again on the same port and data dir.
    pub fn restart(&mut self) {
        self.spawn();
    }

    /// Starts the process on the same data dir expecting it to refuse to start; returns its
    /// exit status and the log tail. Panics if it is still running after [`START_TIMEOUT`].
    pub fn start_expecting_failure(&mut self) -> (ExitStatus, String) {
        self.spawn_process();
        let child = self.child.as_mut().expect("just spawned");
        let deadline = Instant::now() + START_TIMEOUT;
        let status = loop {
            if let Some(s) = child.try_wait().expect("try_wait") {
                break s;
            }
            if Instant::now() >= deadline {
                panic!(
                    "broker kept running although it should have refused to start\n{}",
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        self.child = None;
        (status, self.log_tail())
    }

    /// The last 60 lines of the broker's output, for failure messages.
    pub fn log_tail(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = File::open(self.log_path()) {
            let len = f.metadata().map(|m| m.len()).unwrap_or(0);
            let _ = f.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)));
            let mut buf = Vec::new();
            let _ = f.read_to_end(&mut buf);
            s = String::from_utf8_lossy(&buf).into_owned();
        }
        // openraft's retry chatter about unreachable peers would push everything else out.
        let lines: Vec<&str> = s.lines().filter(|l| !l.contains(" openraft::")).collect();
        let tail = &lines[lines.len().saturating_sub(60)..];
        format!(
            "----- broker log tail ({}) -----\n{}\n----- end of broker log -----",
            self.log_path().display(),
            tail.join("\n")
        )
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.log_tail());
        }
        // SLUICE_TEST_KEEP_LOGS=DIR keeps the whole log of every broker a test started.
        if let Some(dir) = std::env::var_os("SLUICE_TEST_KEEP_LOGS") {
            let to = PathBuf::from(dir).join(format!("node-{}-{}.log", self.node_id, self.port));
            let _ = std::fs::copy(self.log_path(), &to);
            eprintln!("broker log kept in {}", to.display());
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

// ----------------------------------------------------------------------------------------------
// Clients
// ----------------------------------------------------------------------------------------------

/// Base client config: short timeouts so a broken broker fails a test instead of hanging it.
pub fn client_config(broker: &Broker) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", broker.bootstrap())
        .set("socket.timeout.ms", "10000")
        .set("broker.address.family", "v4");
    c
}

pub fn admin(broker: &Broker) -> AdminClient<DefaultClientContext> {
    client_config(broker).create().expect("create admin client")
}

pub fn admin_opts() -> AdminOptions {
    AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)))
}

/// A producer with the given extra settings (`acks`, `compression.type`, ...).
pub fn producer(broker: &Broker, settings: &[(&str, &str)]) -> FutureProducer {
    let mut c = client_config(broker);
    c.set("message.timeout.ms", "10000").set("linger.ms", "5");
    for (k, v) in settings {
        c.set(*k, *v);
    }
    c.create().expect("create producer")
}

/// A consumer driven by `assign()`: positions are explicit, nothing is committed. librdkafka
/// refuses `assign()` without a `group.id`, so each consumer gets a unique one it never joins.
pub fn consumer(broker: &Broker, settings: &[(&str, &str)]) -> BaseConsumer {
    static NEXT_GROUP: AtomicU64 = AtomicU64::new(0);
    let group = format!(
        "sluice-it-{}-{}",
        std::process::id(),
        NEXT_GROUP.fetch_add(1, Ordering::Relaxed)
    );
    let mut c = client_config(broker);
    c.set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("fetch.wait.max.ms", "100");
    for (k, v) in settings {
        c.set(*k, *v);
    }
    c.create().expect("create consumer")
}

/// Creates one topic and asserts the broker accepted it.
pub async fn create_topic(broker: &Broker, name: &str, partitions: i32) {
    let a = admin(broker);
    let res = a
        .create_topics(
            &[NewTopic::new(name, partitions, TopicReplication::Fixed(1))],
            &admin_opts(),
        )
        .await
        .expect("CreateTopics request");
    assert_eq!(res.len(), 1);
    assert_eq!(res[0], Ok(name.to_string()), "create topic {name}");
}

/// Sync wrapper around [`create_topic`].
pub fn create_topic_sync(broker: &Broker, name: &str, partitions: i32) {
    block_on(create_topic(broker, name, partitions));
}

/// One record as the tests write and read it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rec {
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    /// CreateTime in ms; `None` lets the producer stamp it.
    pub timestamp: Option<i64>,
}

impl Rec {
    pub fn kv(key: &str, value: &str) -> Rec {
        Rec {
            key: Some(key.as_bytes().to_vec()),
            value: Some(value.as_bytes().to_vec()),
            headers: Vec::new(),
            timestamp: None,
        }
    }
}

/// A record read back from the broker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Got {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    pub timestamp: Option<i64>,
}

fn owned_headers(h: &[(String, Option<Vec<u8>>)]) -> Option<OwnedHeaders> {
    if h.is_empty() {
        return None;
    }
    let mut out = OwnedHeaders::new_with_capacity(h.len());
    for (k, v) in h {
        out = out.insert(Header {
            key: k,
            value: v.as_deref(),
        });
    }
    Some(out)
}

/// Produces `recs` to `topic`/`partition` and returns each record's (partition, offset) in order.
/// Records are enqueued all at once and awaited afterwards, so they batch.
pub async fn produce(
    p: &FutureProducer,
    topic: &str,
    partition: Option<i32>,
    recs: &[Rec],
) -> Vec<(i32, i64)> {
    let mut futures = Vec::with_capacity(recs.len());
    for r in recs {
        let mut fr: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic);
        if let Some(k) = &r.key {
            fr = fr.key(k.as_slice());
        }
        if let Some(v) = &r.value {
            fr = fr.payload(v.as_slice());
        }
        if let Some(p) = partition {
            fr = fr.partition(p);
        }
        if let Some(ts) = r.timestamp {
            fr = fr.timestamp(ts);
        }
        if let Some(h) = owned_headers(&r.headers) {
            fr = fr.headers(h);
        }
        match p.send_result(fr) {
            Ok(f) => futures.push(f),
            Err((e, _)) => panic!("enqueue to {topic} failed: {e}"),
        }
    }
    let mut out = Vec::with_capacity(futures.len());
    for (i, f) in futures.into_iter().enumerate() {
        match f.await.expect("delivery future cancelled") {
            Ok(d) => out.push((d.partition, d.offset)),
            Err((e, _)) => panic!("delivery of record {i} to {topic} failed: {e}"),
        }
    }
    out
}

/// Sends one record and returns the delivery error, if any (for negative tests).
pub async fn produce_one_result(
    p: &FutureProducer,
    topic: &str,
    value: &str,
) -> Result<(i32, i64), KafkaError> {
    let fr: FutureRecord<'_, (), str> = FutureRecord::to(topic).payload(value);
    p.send(fr, Duration::from_secs(5))
        .await
        .map(|d| (d.partition, d.offset))
        .map_err(|(e, _)| e)
}

pub fn to_got<M: Message>(m: &M) -> Got {
    let headers = m
        .headers()
        .map(|hs| {
            hs.iter()
                .map(|h| (h.key.to_string(), h.value.map(|v| v.to_vec())))
                .collect()
        })
        .unwrap_or_default();
    Got {
        partition: m.partition(),
        offset: m.offset(),
        key: m.key().map(|k| k.to_vec()),
        value: m.payload().map(|v| v.to_vec()),
        headers,
        timestamp: m.timestamp().to_millis(),
    }
}

/// Assigns `topic`/`partition` at `start` and returns the first `n` records read, failing if
/// they do not all arrive within `timeout`. Consumer errors are failures, except end-of-partition.
pub fn consume_n(
    c: &BaseConsumer,
    topic: &str,
    partition: i32,
    start: Offset,
    n: usize,
    timeout: Duration,
) -> Vec<Got> {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, start)
        .expect("add partition");
    c.assign(&tpl).expect("assign");
    poll_n(c, n, timeout)
}

/// Polls an already-assigned consumer until `n` records arrived or `timeout` passed.
pub fn poll_n(c: &BaseConsumer, n: usize, timeout: Duration) -> Vec<Got> {
    let deadline = Instant::now() + timeout;
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let now = Instant::now();
        if now >= deadline {
            panic!(
                "consumed only {} of {} records within {timeout:?}; last: {:?}",
                out.len(),
                n,
                out.last().map(|g: &Got| g.offset)
            );
        }
        match c.poll(deadline - now) {
            None => {}
            Some(Ok(m)) => out.push(to_got(&m)),
            Some(Err(KafkaError::PartitionEOF(_))) => {}
            Some(Err(e)) => panic!("consumer error after {} records: {e}", out.len()),
        }
    }
    out
}

/// Polls for `quiet` and asserts no further record shows up (used after an exact read to catch
/// extra records, e.g. duplicates).
pub fn assert_no_more(c: &BaseConsumer, quiet: Duration) {
    let deadline = Instant::now() + quiet;
    loop {
        let now = Instant::now();
        if now >= deadline {
            return;
        }
        match c.poll(deadline - now) {
            None => {}
            Some(Ok(m)) => panic!("unexpected extra record: {:?}", to_got(&m)),
            Some(Err(KafkaError::PartitionEOF(_))) => {}
            Some(Err(e)) => panic!("consumer error: {e}"),
        }
    }
}

/// Reads a partition from offset 0 up to its current high watermark.
pub fn consume_all(c: &BaseConsumer, topic: &str, partition: i32, timeout: Duration) -> Vec<Got> {
    let (low, high) = c
        .fetch_watermarks(topic, partition, timeout)
        .expect("fetch watermarks");
    assert_eq!(low, 0, "log start offset of {topic}-{partition}");
    consume_n(
        c,
        topic,
        partition,
        Offset::Beginning,
        (high - low) as usize,
        timeout,
    )
}

/// Polls metadata until `cond` holds for the topic (or its absence), with a deadline.
pub fn wait_metadata<T>(
    c: &BaseConsumer,
    what: &str,
    mut cond: impl FnMut(&rdkafka::metadata::Metadata) -> Option<T>,
) -> T {
    wait_for(what, CLIENT_TIMEOUT, Duration::from_millis(100), || match c
        .fetch_metadata(None, Duration::from_secs(5))
    {
        Ok(md) => cond(&md),
        Err(_) => None,
    })
}

/// The admin-level error code of a topic result, for negative admin tests.
pub fn topic_error(r: &rdkafka::admin::TopicResult) -> Option<RDKafkaErrorCode> {
    match r {
        Ok(_) => None,
        Err((_, code)) => Some(*code),
    }
}

/// A round trip that proves the broker still serves real clients.
pub async fn round_trip(broker: &Broker, topic: &str) {
    create_topic(broker, topic, 1).await;
    let p = producer(broker, &[("acks", "all")]);
    let recs: Vec<Rec> = (0..10)
        .map(|i| Rec::kv(&format!("k{i}"), &format!("v{i}")))
        .collect();
    let offs = produce(&p, topic, Some(0), &recs).await;
    assert_eq!(
        offs,
        (0..10).map(|i| (0, i)).collect::<Vec<_>>(),
        "offsets of a fresh partition"
    );
    let c = consumer(broker, &[]);
    let got = consume_n(&c, topic, 0, Offset::Beginning, 10, CLIENT_TIMEOUT);
    let values: Vec<_> = got.iter().map(|g| g.value.clone().unwrap()).collect();
    let expect: Vec<_> = recs.iter().map(|r| r.value.clone().unwrap()).collect();
    assert_eq!(values, expect);
}

/// Committed offsets of `group` for `topic`'s partitions, via OffsetFetch from a consumer that
/// never joins. Retries while the coordinator is (re)loading, with a deadline.
pub fn committed(
    broker: &Broker,
    group: &str,
    topic: &str,
    partitions: i32,
) -> BTreeMap<i32, Offset> {
    let c = consumer(broker, &[("group.id", group)]);
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    wait_for(
        &format!("OffsetFetch of group {group}"),
        CLIENT_TIMEOUT,
        Duration::from_millis(100),
        || match c.committed_offsets(tpl.clone(), Duration::from_secs(5)) {
            Ok(res) => Some(
                res.elements()
                    .iter()
                    .map(|e| (e.partition(), e.offset()))
                    .collect(),
            ),
            Err(e) => {
                eprintln!("committed_offsets({group}) failed, retrying: {e}");
                None
            }
        },
    )
}

// ----------------------------------------------------------------------------------------------
// Raw protocol requests (for APIs rdkafka does not expose, and for exact error codes)
// ----------------------------------------------------------------------------------------------

/// One TCP connection that speaks well-formed Kafka requests encoded with kafka-protocol, one at a
/// time: send a request, read its response, check the correlation id and that the body decodes
/// with nothing left over.
pub struct RawConn {
    /// Blocking socket with a read timeout, so a silent broker fails the test.
    stream: TcpStream,
    /// Incremented per request, so a response to the wrong request is caught.
    next_correlation_id: i32,
}

impl RawConn {
    /// Waits (bounded) until `group` has a coordinator that has loaded its offsets partition:
    /// FindCoordinator asked here (creating `__consumer_offsets` on first use) names it, and
    /// OffsetFetch v8 of the group there no longer answers COORDINATOR_LOAD_IN_PROGRESS or
    /// NOT_COORDINATOR. Returns the coordinator's node id.
    pub fn wait_coordinator(&mut self, group: &str) -> i32 {
        use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestGroup;
        use kafka_protocol::messages::{FindCoordinatorRequest, GroupId, OffsetFetchRequest};
        use kafka_protocol::protocol::StrBytes;
        wait_for(
            &format!("a loaded coordinator of group {group}"),
            START_TIMEOUT,
            Duration::from_millis(100),
            || {
                let fc = self.call(
                    3,
                    &FindCoordinatorRequest::default()
                        .with_key(StrBytes::from_string(group.to_string()))
                        .with_key_type(0),
                );
                if fc.error_code != 0 {
                    return None;
                }
                let at: SocketAddr = format!("{}:{}", fc.host.as_str(), fc.port).parse().ok()?;
                let mut coordinator = RawConn::try_connect(at)?;
                let fetched = coordinator.call(
                    8,
                    &OffsetFetchRequest::default().with_groups(vec![
                        OffsetFetchRequestGroup::default()
                            .with_group_id(GroupId(StrBytes::from_string(group.to_string())))
                            .with_topics(Some(Vec::new())),
                    ]),
                );
                (fetched.groups.first()?.error_code == 0).then_some(fc.node_id.0)
            },
        )
    }

    pub fn connect(broker: &Broker) -> RawConn {
        RawConn::connect_addr(broker.addr())
    }

    /// A connection to `addr`, `None` if nothing accepts there now.
    pub fn try_connect(addr: SocketAddr) -> Option<RawConn> {
        TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .ok()
            .map(|_| RawConn::connect_addr(addr))
    }

    pub fn connect_addr(addr: SocketAddr) -> RawConn {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .expect("raw connect to broker");
        stream
            .set_read_timeout(Some(CLIENT_TIMEOUT))
            .expect("set_read_timeout");
        stream
            .set_write_timeout(Some(Duration::from_secs(5)))
            .expect("set_write_timeout");
        stream.set_nodelay(true).expect("set_nodelay");
        RawConn {
            stream,
            next_correlation_id: 1,
        }
    }

    /// Sends `req` as `version` and returns the decoded response. Panics on any framing or
    /// decoding problem; error codes inside the response are the caller's business.
    pub fn call<R: kafka_protocol::protocol::Request>(
        &mut self,
        version: i16,
        req: &R,
    ) -> R::Response {
        use bytes::{Buf, BytesMut};
        use kafka_protocol::messages::{RequestHeader, ResponseHeader};
        use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};

        let what = format!("api {} v{version}", R::KEY);
        let correlation_id = self.next_correlation_id;
        self.next_correlation_id += 1;
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(StrBytes::from_static_str("sluice-it-raw")));
        let mut buf = BytesMut::new();
        header
            .encode(&mut buf, R::header_version(version))
            .unwrap_or_else(|e| panic!("{what}: encode request header: {e}"));
        req.encode(&mut buf, version)
            .unwrap_or_else(|e| panic!("{what}: encode request body: {e}"));
        let mut frame = (buf.len() as i32).to_be_bytes().to_vec();
        frame.extend_from_slice(&buf);
        self.stream
            .write_all(&frame)
            .unwrap_or_else(|e| panic!("{what}: write request: {e}"));

        let mut size = [0u8; 4];
        self.stream
            .read_exact(&mut size)
            .unwrap_or_else(|e| panic!("{what}: read response size: {e}"));
        let size = i32::from_be_bytes(size);
        assert!(
            (4..=64 * 1024 * 1024).contains(&size),
            "{what}: implausible response size {size}"
        );
        let mut body = vec![0u8; size as usize];
        self.stream
            .read_exact(&mut body)
            .unwrap_or_else(|e| panic!("{what}: read response body: {e}"));
        let mut body = bytes::Bytes::from(body);
        let rh = ResponseHeader::decode(&mut body, R::Response::header_version(version))
            .unwrap_or_else(|e| panic!("{what}: decode response header: {e}"));
        assert_eq!(rh.correlation_id, correlation_id, "{what}: correlation id");
        let resp = R::Response::decode(&mut body, version)
            .unwrap_or_else(|e| panic!("{what}: decode response body: {e}"));
        assert_eq!(
            body.remaining(),
            0,
            "{what}: trailing bytes after the response"
        );
        resp
    }
}

/// A kafka-protocol string from a Rust string.
pub fn kstr(s: &str) -> kafka_protocol::protocol::StrBytes {
    kafka_protocol::protocol::StrBytes::from_string(s.to_string())
}

// ----------------------------------------------------------------------------------------------
// The broker process as the OS sees it (Linux /proc), for resource-bound tests
// ----------------------------------------------------------------------------------------------

/// Resident set size of a process in bytes (`VmRSS` of `/proc/<pid>/status`).
pub fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS in /proc/<pid>/status");
    kb * 1024
}

/// CPU time a process has used, user plus system, in clock ticks.
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read stat");
    // The command name (field 2) may hold spaces; fields after its closing parenthesis are
    // plain. utime and stime are fields 14 and 15, i.e. 12th and 13th after the name.
    let rest = &stat[stat.rfind(')').expect("comm in stat") + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime")
}

/// Sockets a process holds open (its listener included).
pub fn open_sockets(pid: u32) -> usize {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return 0;
    };
    fds.filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter(|target| target.to_string_lossy().starts_with("socket:"))
        .count()
}

// ----------------------------------------------------------------------------------------------
// Idempotent producers over raw requests (exact sequences, epochs and error codes)
// ----------------------------------------------------------------------------------------------

/// Produce version used for raw requests (flexible, topic names, one batch per partition).
pub const PRODUCE_VERSION: i16 = 9;

pub fn init_producer_id(
    conn: &mut RawConn,
    version: i16,
    producer_id: i64,
    epoch: i16,
    transactional_id: Option<&str>,
) -> InitProducerIdResponse {
    let req = InitProducerIdRequest::default()
        .with_transactional_id(transactional_id.map(|t| TransactionalId(kstr(t))))
        .with_transaction_timeout_ms(60_000)
        .with_producer_id(ProducerId(producer_id))
        .with_producer_epoch(epoch);
    conn.call(version, &req)
}

/// One record batch (`count` records) from `producer_id`/`epoch` starting at `base_seq`
/// (`producer_id` -1: a plain batch without producer).
pub fn batch(
    producer_id: i64,
    epoch: i16,
    base_seq: i32,
    count: usize,
    ts: i64,
    tag: &str,
) -> Bytes {
    let records: Vec<Record> = (0..count)
        .map(|i| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id,
            producer_epoch: epoch,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // The encoder splits batches where `offset - sequence` changes: keep it constant.
            sequence: base_seq.wrapping_add(i as i32),
            timestamp: ts,
            key: None,
            value: Some(Bytes::from(format!("{tag}-{i}"))),
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
    .expect("encode record batch");
    buf.freeze()
}

pub fn produce_raw(
    conn: &mut RawConn,
    topic: &str,
    partition: i32,
    records: Bytes,
) -> PartitionProduceResponse {
    produce_raw_acks(conn, topic, partition, -1, records)
}

/// [`produce_raw`] with the given `acks`.
pub fn produce_raw_acks(
    conn: &mut RawConn,
    topic: &str,
    partition: i32,
    acks: i16,
    records: Bytes,
) -> PartitionProduceResponse {
    let req = ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(kstr(topic)))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(records))])]);
    let resp = conn.call(PRODUCE_VERSION, &req);
    assert_eq!(resp.responses.len(), 1);
    assert_eq!(resp.responses[0].partition_responses.len(), 1);
    resp.responses[0].partition_responses[0].clone()
}

/// The partition's log end offset (ListOffsets, latest).
pub fn log_end(conn: &mut RawConn, topic: &str, partition: i32) -> i64 {
    let req = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(TopicName(kstr(topic)))
            .with_partitions(vec![ListOffsetsPartition::default()
                .with_partition_index(partition)
                .with_timestamp(-1)])]);
    // v4+: ListOffsets v1-v3 responses currently fail to encode (leader_epoch set; see report).
    let resp = conn.call(4, &req);
    let p = &resp.topics[0].partitions[0];
    assert_eq!(p.error_code, 0, "ListOffsets {topic}-{partition}");
    p.offset
}

pub fn describe_producers(conn: &mut RawConn, topic: &str, partition: i32) -> Vec<ProducerState> {
    let req = DescribeProducersRequest::default().with_topics(vec![TopicRequest::default()
        .with_name(TopicName(kstr(topic)))
        .with_partition_indexes(vec![partition])]);
    let resp = conn.call(0, &req);
    assert_eq!(resp.topics.len(), 1);
    assert_eq!(resp.topics[0].partitions.len(), 1);
    let p = &resp.topics[0].partitions[0];
    assert_eq!(p.partition_index, partition);
    assert_eq!(p.error_code, 0, "DescribeProducers {topic}-{partition}");
    p.active_producers.clone()
}

/// Asserts a produce answer: `code`, and for success the base offset.
#[track_caller]
pub fn expect_produce(
    r: &PartitionProduceResponse,
    code: i16,
    base_offset: Option<i64>,
    what: &str,
) {
    assert_eq!(
        r.error_code, code,
        "{what}: error code (message {:?})",
        r.error_message
    );
    if let Some(b) = base_offset {
        assert_eq!(r.base_offset, b, "{what}: base offset");
    }
}
