//! The workload: real Kafka clients (rdkafka) producing and consuming through the nodes'
//! proxies, every operation recorded in the [`History`].
//!
//! - Producers ([`ProducerSpec`]: idempotent or not, `acks=all` or `acks=1`) send unique values
//!   `{name}-{seq}` round-robin to the topic's partitions, a few in flight at once. The outcome is
//!   recorded by the delivery callback: `Ok` with the offset, `Failed` for an error that says
//!   the broker refused the record, `Unknown` for everything else (timeouts, transport errors,
//!   records purged at shutdown). A producer that hits a fatal error (an idempotent producer
//!   whose sequence state broke) is replaced by a new one.
//! - Assigned readers read every partition from offset 0; every 10 s (`RESTART_EVERY`) each is
//!   replaced by a new consumer (a new session) resuming at its position. Each start is
//!   recorded as a `Seek`, so a first read past the expected record shows as a skip.
//! - Group members subscribe to the topic and commit what they read about every
//!   [`COMMIT_EVERY`]; each rebalance starts a new session (their position may legitimately
//!   jump back to the committed offset).
//!
//! Every client runs on its own thread with blocking calls (librdkafka is synchronous at heart),
//! so none of this touches the tokio reactor that runs the proxies. Client timeouts are bounded,
//! so a dead or black-holed node turns into `Unknown` outcomes, not a stuck workload. Two
//! librdkafka calls wait without bound: a synchronous commit (run on its own thread, given up
//! after [`COMMIT_WAIT`]) and dropping a group consumer (each is closed by [`close_within`]). A client thread that still does not finish is left
//! behind by [`Workload::stop`], which says so.
//!
//! [`final_read`] reads every partition from offset 0 to its end offset after everything healed:
//! the checker's ground truth.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::{BorrowedMessage, DeliveryResult, Message};
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, ClientContext, Offset as KafkaOffset, TopicPartitionList};

use crate::checker::FinalLog;
use crate::history::{Acks, CommitOutcome, History, Offset, Op, Partition, ProduceOutcome};

/// Records one producer keeps in flight at most.
const IN_FLIGHT: i32 = 8;
/// How often a group member commits what it read.
pub const COMMIT_EVERY: Duration = Duration::from_millis(500);
/// How often an assigned reader is replaced by a new consumer resuming at its position.
const RESTART_EVERY: Duration = Duration::from_secs(10);
/// How long one consumer poll blocks.
const POLL: Duration = Duration::from_millis(100);
/// Bound on waiting for in-flight records at shutdown; the rest are purged (`Unknown`).
const FLUSH: Duration = Duration::from_secs(10);
/// Bound on closing a consumer (leaving its group); one that takes longer is leaked.
const CLOSE: Duration = Duration::from_secs(15);
/// How long a group member waits for a commit's answer before it gives up on it.
const COMMIT_WAIT: Duration = Duration::from_secs(30);
/// Bound on [`Workload::stop`] waiting for the client threads (flush and close within it).
const STOP: Duration = Duration::from_secs(60);

/// Why the workload could not run.
#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    #[error("creating a Kafka client: {0}")]
    Client(#[source] KafkaError),
    #[error("starting a client thread: {0}")]
    Thread(#[source] std::io::Error),
    #[error("final read: {0}")]
    FinalRead(String),
}

/// One producer of the workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProducerSpec {
    pub idempotent: bool,
    pub acks: Acks,
}

/// What clients the workload runs and where.
#[derive(Clone, Debug)]
pub struct WorkloadConfig {
    /// `bootstrap.servers`: the nodes' proxies.
    pub bootstrap: String,
    pub topic: String,
    pub partitions: i32,
    pub producers: Vec<ProducerSpec>,
    /// Pause between two sends of one producer (bounds the history's size).
    pub send_interval: Duration,
    pub assigned_readers: usize,
    pub groups: usize,
    pub members_per_group: usize,
}

impl WorkloadConfig {
    /// Every producer kind (idempotent `acks=all`, plain `acks=all`, plain `acks=1`), two
    /// assigned readers and one group of two members.
    pub fn standard(bootstrap: String, topic: String, partitions: i32) -> WorkloadConfig {
        let spec = |idempotent, acks| ProducerSpec { idempotent, acks };
        WorkloadConfig {
            bootstrap,
            topic,
            partitions,
            producers: vec![
                spec(true, Acks::All),
                spec(true, Acks::All),
                spec(false, Acks::All),
                spec(false, Acks::One),
            ],
            send_interval: Duration::from_millis(5),
            assigned_readers: 2,
            groups: 1,
            members_per_group: 2,
        }
    }
}

/// The running workload: one thread per client, until [`Workload::stop`].
pub struct Workload {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Workload {
    /// Starts every client thread. Client creation errors surface here; later errors become
    /// outcomes in the history.
    pub fn start(cfg: &WorkloadConfig, history: Arc<History>) -> Result<Workload, WorkloadError> {
        let mut workload = Workload {
            stop: Arc::new(AtomicBool::new(false)),
            threads: Vec::new(),
        };
        match workload.spawn_all(cfg, history) {
            Ok(()) => Ok(workload),
            Err(e) => {
                // Do not leave the clients that did start running.
                workload.stop();
                Err(e)
            }
        }
    }

    fn spawn_all(
        &mut self,
        cfg: &WorkloadConfig,
        history: Arc<History>,
    ) -> Result<(), WorkloadError> {
        let stop = &self.stop;
        let threads = &mut self.threads;
        for (i, spec) in cfg.producers.iter().enumerate() {
            let name = format!(
                "p{i}-{}-{}",
                if spec.idempotent { "idem" } else { "plain" },
                match spec.acks {
                    Acks::All => "all",
                    Acks::One => "one",
                }
            );
            let p = ProducerLoop {
                cfg: cfg.clone(),
                spec: *spec,
                name,
                history: history.clone(),
                stop: stop.clone(),
            };
            let producer = p.create()?;
            let name = p.name.clone();
            threads.push(spawn(&name, move || p.run(producer))?);
        }
        for i in 0..cfg.assigned_readers {
            let r = ReaderLoop {
                cfg: cfg.clone(),
                name: format!("assigned-{i}"),
                group: None,
                history: history.clone(),
                stop: stop.clone(),
            };
            let consumer = r.create(0, &HashMap::new())?;
            let name = r.name.clone();
            threads.push(spawn(&name, move || r.run(consumer))?);
        }
        for g in 0..cfg.groups {
            for m in 0..cfg.members_per_group {
                let r = ReaderLoop {
                    cfg: cfg.clone(),
                    name: format!("g{g}-member-{m}"),
                    group: Some(format!("chaos-g{g}")),
                    history: history.clone(),
                    stop: stop.clone(),
                };
                let consumer = r.create(0, &HashMap::new())?;
                let name = r.name.clone();
                threads.push(spawn(&name, move || r.run(consumer))?);
            }
        }
        Ok(())
    }

    /// Signals every client to stop and waits for them (producers flush within [`FLUSH`],
    /// consumers close within [`CLOSE`]), at most [`STOP`] in all: a thread still stuck in a
    /// client call then is left behind, named in an error, so the run can still reach a
    /// verdict. Blocking: call it off the reactor.
    pub fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        let deadline = Instant::now() + STOP;
        for t in self.threads {
            while !t.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if !t.is_finished() {
                let name = t.thread().name().unwrap_or("?").to_string();
                tracing::error!(thread = %name, "a workload client did not stop within {STOP:?}; left behind");
                continue;
            }
            if t.join().is_err() {
                tracing::error!("a workload thread panicked");
            }
        }
    }
}

/// A client thread named after its client (as the history names it).
fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>, WorkloadError> {
    std::thread::Builder::new()
        .name(format!("chaos-{name}"))
        .spawn(f)
        .map_err(WorkloadError::Thread)
}

/// Settings every client shares: bounded timeouts, quick reconnects, quiet logs.
fn base_config(bootstrap: &str, client_id: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap)
        .set("client.id", client_id)
        .set("socket.connection.setup.timeout.ms", "3000")
        .set("socket.timeout.ms", "5000")
        .set("reconnect.backoff.ms", "50")
        .set("reconnect.backoff.max.ms", "1000")
        .set("topic.metadata.refresh.interval.ms", "5000")
        .set_log_level(RDKafkaLogLevel::Error);
    c
}

fn payload(m: &BorrowedMessage<'_>) -> String {
    String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned()
}

/// Definite refusals: the broker answered that it did not take the record. Everything else
/// (timeouts, transport errors, purges, leadership changes mid-retry) may have been written.
fn produce_outcome(e: &KafkaError) -> ProduceOutcome {
    use RDKafkaErrorCode::*;
    let error = e.to_string();
    match e.rdkafka_error_code() {
        Some(
            MessageSizeTooLarge
            | InvalidMessageSize
            | UnknownPartition
            | UnknownTopic
            | InvalidMessage
            | InvalidRecord
            | TopicAuthorizationFailed
            | InvalidRequiredAcks
            | InvalidTopic,
        ) => ProduceOutcome::Failed { error },
        _ => ProduceOutcome::Unknown { error },
    }
}

/// Records each delivery report of one producer.
struct DeliveryRecorder {
    name: String,
    spec: ProducerSpec,
    history: Arc<History>,
}

impl ClientContext for DeliveryRecorder {}

impl ProducerContext for DeliveryRecorder {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        let (m, outcome) = match result {
            Ok(m) => (m, ProduceOutcome::Ok { offset: m.offset() }),
            Err((e, m)) => (m, produce_outcome(e)),
        };
        self.history.record(Op::Produce {
            producer: self.name.clone(),
            idempotent: self.spec.idempotent,
            acks: self.spec.acks,
            partition: m.partition(),
            value: payload(m),
            outcome,
        });
    }
}

struct ProducerLoop {
    cfg: WorkloadConfig,
    spec: ProducerSpec,
    name: String,
    history: Arc<History>,
    stop: Arc<AtomicBool>,
}

impl ProducerLoop {
    fn create(&self) -> Result<ThreadedProducer<DeliveryRecorder>, WorkloadError> {
        let mut c = base_config(&self.cfg.bootstrap, &self.name);
        c.set("acks", self.spec.acks.config_value())
            .set("enable.idempotence", self.spec.idempotent.to_string())
            .set("message.timeout.ms", "10000")
            .set("request.timeout.ms", "5000")
            .set("retry.backoff.ms", "100")
            .set("linger.ms", "2");
        c.create_with_context(DeliveryRecorder {
            name: self.name.clone(),
            spec: self.spec,
            history: self.history.clone(),
        })
        .map_err(WorkloadError::Client)
    }

    fn run(self, mut producer: ThreadedProducer<DeliveryRecorder>) {
        let mut seq: u64 = 0;
        while !self.stop.load(Ordering::Relaxed) {
            if let Some((code, reason)) = producer.client().fatal_error() {
                tracing::warn!(producer = %self.name, ?code, %reason, "fatal; new producer");
                // Dropping purges what is in flight: each becomes an `Unknown` outcome.
                drop(producer);
                producer = match self.create() {
                    Ok(p) => p,
                    Err(e) => {
                        tracing::error!(producer = %self.name, error = %e, "cannot recreate");
                        return;
                    }
                };
            }
            if producer.in_flight_count() >= IN_FLIGHT {
                std::thread::sleep(Duration::from_millis(1));
                continue;
            }
            let value = format!("{}-{seq}", self.name);
            let partition = (seq % self.cfg.partitions as u64) as Partition;
            let record = BaseRecord::to(&self.cfg.topic)
                .partition(partition)
                .key(&value)
                .payload(&value);
            match producer.send(record) {
                Ok(()) => seq += 1,
                Err((e, _)) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) => {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
                Err((e, _)) => {
                    // Refused before leaving the client: definitely not written.
                    self.history.record(Op::Produce {
                        producer: self.name.clone(),
                        idempotent: self.spec.idempotent,
                        acks: self.spec.acks,
                        partition,
                        value,
                        outcome: ProduceOutcome::Failed {
                            error: e.to_string(),
                        },
                    });
                    seq += 1;
                }
            }
            std::thread::sleep(self.cfg.send_interval);
        }
        if let Err(e) = producer.flush(FLUSH) {
            tracing::warn!(producer = %self.name, error = %e, "flush at stop; purging the rest");
        }
    }
}

/// Closes a reader's consumer within [`CLOSE`]; one still shared with a commit thread stuck
/// in librdkafka is leaked.
fn close_reader(consumer: Reader, who: &str) {
    match Arc::try_unwrap(consumer) {
        Ok(consumer) => close_within(consumer, CLOSE, who),
        Err(shared) => {
            tracing::warn!(
                client = who,
                "a commit thread still holds the consumer; leaked"
            );
            std::mem::forget(shared);
        }
    }
}

/// Closes `consumer` (leaving its group) within `within`. Dropping a group consumer waits for
/// librdkafka's close without bound, so one that has not closed in time is leaked instead, with
/// a warning: its threads keep running until the process exits.
pub fn close_within<C: ConsumerContext>(consumer: BaseConsumer<C>, within: Duration, who: &str) {
    if let Err(e) = consumer.close_queue() {
        // Dropping does not wait for a close that could not start.
        tracing::warn!(client = who, error = %e, "closing the consumer");
        return;
    }
    let deadline = Instant::now() + within;
    while !consumer.closed() && Instant::now() < deadline {
        consumer.poll(POLL);
    }
    if consumer.closed() {
        drop(consumer);
    } else {
        tracing::warn!(
            client = who,
            "the consumer did not close within {within:?}; leaked"
        );
        std::mem::forget(consumer);
    }
}

/// Counts a reader's rebalances: each one starts a new read session.
struct SessionCounter {
    session: AtomicU64,
}

impl ClientContext for SessionCounter {}

impl ConsumerContext for SessionCounter {
    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let s = self.session.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::debug!(session = s, ?rebalance, "rebalance");
    }
}

type Reader = Arc<BaseConsumer<SessionCounter>>;

/// A group member's commit in flight (at most one): a synchronous commit on its own thread,
/// because librdkafka waits for its answer without bound (and reports an asynchronous manual
/// commit only to a configured `offset_commit_cb`, which rust-rdkafka does not set).
struct CommitInFlight {
    offsets: Vec<(Partition, Offset)>,
    since: Instant,
    answer: mpsc::Receiver<KafkaResult<()>>,
}

impl CommitInFlight {
    fn start(
        consumer: &Reader,
        topic: &str,
        offsets: &HashMap<Partition, Offset>,
    ) -> Option<CommitInFlight> {
        let mut offsets: Vec<(Partition, Offset)> = offsets.iter().map(|(&p, &o)| (p, o)).collect();
        offsets.sort();
        let mut tpl = TopicPartitionList::new();
        for &(p, o) in &offsets {
            if let Err(e) = tpl.add_partition_offset(topic, p, KafkaOffset::Offset(o)) {
                tracing::error!(error = %e, "building a commit");
                return None;
            }
        }
        let (tx, answer) = mpsc::channel();
        let consumer = consumer.clone();
        let spawned = std::thread::Builder::new()
            .name("chaos-commit".into())
            .spawn(move || {
                let result = consumer.commit(&tpl, CommitMode::Sync);
                // Let go of the consumer before answering, so that once the answer is in the
                // reader holds it alone and can close it.
                drop(consumer);
                let _ = tx.send(result);
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "starting a commit thread");
            return None;
        }
        Some(CommitInFlight {
            offsets,
            since: Instant::now(),
            answer,
        })
    }

    /// The answer if it came (`None` while it has not); after [`COMMIT_WAIT`] the commit is
    /// given up on, unrecorded (as good as an unknown outcome), its thread left behind.
    fn answer(&self, who: &str) -> Option<Option<KafkaResult<()>>> {
        match self.answer.try_recv() {
            Ok(result) => Some(Some(result)),
            Err(mpsc::TryRecvError::Disconnected) => Some(None),
            Err(mpsc::TryRecvError::Empty) if self.since.elapsed() >= COMMIT_WAIT => {
                tracing::warn!(
                    reader = who,
                    "no commit answer within {COMMIT_WAIT:?}; given up"
                );
                Some(None)
            }
            Err(mpsc::TryRecvError::Empty) => None,
        }
    }
}

struct ReaderLoop {
    cfg: WorkloadConfig,
    name: String,
    /// `Some` for a group member, which subscribes and commits; `None` for an assigned reader.
    group: Option<String>,
    history: Arc<History>,
    stop: Arc<AtomicBool>,
}

impl ReaderLoop {
    /// A consumer in `session`: a group member subscribes (and starts wherever the group
    /// committed); an assigned reader is assigned every partition at `from` (0 where absent),
    /// recorded as a `Seek` each.
    fn create(
        &self,
        session: u64,
        from: &HashMap<Partition, Offset>,
    ) -> Result<Reader, WorkloadError> {
        let mut c = base_config(&self.cfg.bootstrap, &self.name);
        // An assigned reader needs a group id for librdkafka's sake; it never commits.
        let group = self
            .group
            .clone()
            .unwrap_or_else(|| format!("chaos-{}-{}", self.name, std::process::id()));
        c.set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", "10000")
            // Also the rebalance timeout: how long a coordinator waits for members to rejoin.
            .set("max.poll.interval.ms", "20000")
            .set("heartbeat.interval.ms", "1000")
            .set("fetch.wait.max.ms", "100");
        let consumer: BaseConsumer<SessionCounter> = c
            .create_with_context(SessionCounter {
                session: AtomicU64::new(session),
            })
            .map_err(WorkloadError::Client)?;
        let subscribed = if self.group.is_some() {
            consumer.subscribe(&[&self.cfg.topic])
        } else {
            let mut tpl = TopicPartitionList::new();
            for p in 0..self.cfg.partitions {
                let offset = from.get(&p).copied().unwrap_or(0);
                tpl.add_partition_offset(&self.cfg.topic, p, KafkaOffset::Offset(offset))
                    .map_err(WorkloadError::Client)?;
                self.history.record(Op::Seek {
                    reader: self.name.clone(),
                    session,
                    partition: p,
                    offset,
                });
            }
            consumer.assign(&tpl)
        };
        subscribed.map_err(WorkloadError::Client)?;
        Ok(Arc::new(consumer))
    }

    fn run(self, mut consumer: Reader) {
        // The session the positions below belong to; per partition the next offset to commit
        // (a group member's, one past the last read) or to resume from (an assigned reader's).
        let mut session = 0;
        let mut to_commit: HashMap<Partition, Offset> = HashMap::new();
        let mut next: HashMap<Partition, Offset> = HashMap::new();
        let mut last_commit = Instant::now();
        let mut in_flight: Option<CommitInFlight> = None;
        let mut started = Instant::now();
        while !self.stop.load(Ordering::Relaxed) {
            if self.group.is_none() && started.elapsed() >= RESTART_EVERY {
                // A new consumer resuming where this one stopped: its first read of each
                // partition must be exactly the next record.
                close_reader(consumer, &self.name);
                session += 1;
                consumer = match self.create(session, &next) {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::error!(reader = %self.name, error = %e, "cannot restart");
                        return;
                    }
                };
                started = Instant::now();
            }
            let polled = consumer.poll(POLL);
            // Rebalances happen only inside `poll`, on this thread: after one, positions of
            // the old session (possibly of revoked partitions) must not be committed.
            let now = consumer.context().session.load(Ordering::Relaxed);
            if now != session {
                session = now;
                to_commit.clear();
            }
            match polled {
                Some(Ok(m)) => {
                    self.history.record(Op::Read {
                        reader: self.name.clone(),
                        session,
                        partition: m.partition(),
                        offset: m.offset(),
                        value: payload(&m),
                    });
                    to_commit.insert(m.partition(), m.offset() + 1);
                    next.insert(m.partition(), m.offset() + 1);
                }
                Some(Err(e)) => tracing::debug!(reader = %self.name, error = %e, "poll"),
                None => {}
            }
            if let Some(c) = &in_flight {
                if let Some(answer) = c.answer(&self.name) {
                    if let Some(result) = answer {
                        self.record_commit(&c.offsets, &result);
                    }
                    in_flight = None;
                }
            }
            if self.group.is_some()
                && in_flight.is_none()
                && last_commit.elapsed() >= COMMIT_EVERY
                && !to_commit.is_empty()
            {
                in_flight = CommitInFlight::start(&consumer, &self.cfg.topic, &to_commit);
                to_commit.clear();
                last_commit = Instant::now();
            }
        }
        // The last commit's answer, if it comes in time; otherwise it stays unrecorded.
        if let Some(c) = in_flight {
            if let Ok(result) = c.answer.recv_timeout(CLOSE) {
                self.record_commit(&c.offsets, &result);
            }
        }
        close_reader(consumer, &self.name);
    }

    /// One commit's outcome, per partition, when its answer came.
    fn record_commit(&self, offsets: &[(Partition, Offset)], result: &KafkaResult<()>) {
        let Some(group) = &self.group else {
            return;
        };
        for &(partition, offset) in offsets {
            let outcome = match result {
                Ok(()) => CommitOutcome::Ok,
                Err(e) => commit_outcome(e),
            };
            self.history.record(Op::Commit {
                group: group.clone(),
                partition,
                offset,
                outcome,
            });
        }
    }
}

/// A commit the coordinator answered with a refusal failed; anything else may have applied.
fn commit_outcome(e: &KafkaError) -> CommitOutcome {
    use RDKafkaErrorCode::*;
    let error = e.to_string();
    match e.rdkafka_error_code() {
        Some(
            IllegalGeneration
            | UnknownMemberId
            | RebalanceInProgress
            | FencedInstanceId
            | NotCoordinator
            | CoordinatorNotAvailable
            | CoordinatorLoadInProgress
            | OffsetMetadataTooLarge
            | InvalidCommitOffsetSize
            | GroupAuthorizationFailed
            | NoOffset
            | InvalidGroupId
            | UnknownPartition
            | UnknownTopicOrPartition,
        ) => CommitOutcome::Failed { error },
        _ => CommitOutcome::Unknown { error },
    }
}

/// Reads every partition of `topic` from offset 0 up to its end offset as of the start of the
/// read, within `timeout` overall. Blocking.
pub fn final_read(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    timeout: Duration,
) -> Result<FinalLog, WorkloadError> {
    let deadline = Instant::now() + timeout;
    let mut c = base_config(bootstrap, "chaos-final-read");
    c.set(
        "group.id",
        format!("chaos-final-read-{}", std::process::id()),
    )
    .set("enable.auto.commit", "false")
    .set("enable.auto.offset.store", "false")
    .set("auto.offset.reset", "earliest")
    .set("fetch.wait.max.ms", "100");
    let consumer: BaseConsumer = c.create().map_err(WorkloadError::Client)?;
    let log = read_to_end(&consumer, topic, partitions, timeout, deadline);
    close_within(consumer, CLOSE, "chaos-final-read");
    log
}

/// [`final_read`] with its consumer.
fn read_to_end(
    consumer: &BaseConsumer,
    topic: &str,
    partitions: i32,
    timeout: Duration,
    deadline: Instant,
) -> Result<FinalLog, WorkloadError> {
    let left = || deadline.saturating_duration_since(Instant::now());
    let mut end: HashMap<Partition, Offset> = HashMap::new();
    for p in 0..partitions {
        loop {
            let attempt = Duration::from_secs(5).min(left());
            match consumer.fetch_watermarks(topic, p, attempt) {
                Ok((_, high)) => {
                    end.insert(p, high);
                    break;
                }
                Err(e) if left().is_zero() => {
                    return Err(WorkloadError::FinalRead(format!(
                        "end offset of partition {p}: {e}"
                    )))
                }
                Err(e) => {
                    tracing::info!(partition = p, error = %e, "end offset; retrying");
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        }
    }

    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, KafkaOffset::Beginning)
            .map_err(WorkloadError::Client)?;
    }
    consumer.assign(&tpl).map_err(WorkloadError::Client)?;
    let mut log: FinalLog = (0..partitions).map(|p| (p, Vec::new())).collect();
    // Partitions whose next offset to see is still below the end offset.
    let mut next: HashMap<Partition, Offset> = (0..partitions).map(|p| (p, 0)).collect();
    let unfinished = |next: &HashMap<Partition, Offset>| -> Vec<Partition> {
        let mut v: Vec<Partition> = next
            .iter()
            .filter(|(p, n)| **n < end[*p])
            .map(|(p, _)| *p)
            .collect();
        v.sort();
        v
    };
    while !unfinished(&next).is_empty() {
        if left().is_zero() {
            let detail: Vec<String> = unfinished(&next)
                .iter()
                .map(|p| format!("partition {p} at {} of {}", next[p], end[p]))
                .collect();
            return Err(WorkloadError::FinalRead(format!(
                "incomplete after {timeout:?}: {}",
                detail.join(", ")
            )));
        }
        match consumer.poll(POLL) {
            Some(Ok(m)) => {
                let p = m.partition();
                if m.offset() < end[&p] {
                    log.entry(p).or_default().push((m.offset(), payload(&m)));
                }
                next.insert(p, m.offset() + 1);
            }
            Some(Err(e)) => tracing::debug!(error = %e, "final read poll"),
            None => {}
        }
    }
    Ok(log)
}
