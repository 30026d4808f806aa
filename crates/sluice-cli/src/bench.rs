//! `sluice bench produce|consume|e2e`: load generators with throughput and latency reports.
//!
//! - `produce`: N producer threads send fixed-size records as fast as allowed (or at `--rate`);
//!   latency is send -> delivery report (the broker's acknowledgement at the chosen `--acks`).
//! - `consume`: N consumer threads read the topic from the beginning by assignment; latency is
//!   the record's *age* when consumed (now - its CreateTime, millisecond resolution), which says
//!   how stale the data was, not how fast the broker is.
//! - `e2e`: producers and consumers at once; the first 8 bytes of each value carry the send time
//!   (ns since the run started, same process clock) and latency is send -> consumed.
//!
//! Throughput: produce and e2e count from the start of the run (client start-up included) to
//! the last acknowledgement / consumed record; consume counts from the first record received to
//! the last.
//!
//! Values are random upper-case letters (like Kafka's producer perf tool), so codecs see
//! realistic-ish compressible data. `bytes` counts values only; MB = 10^6 bytes.
//!
//! Sub-modules by role: `worker` holds the producer and consumer loops, `report` the histogram
//! and the output.

mod report;
mod worker;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::builder::PossibleValuesParser;
use clap::{Args, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use rdkafka::admin::{NewTopic, TopicReplication};
use rdkafka::consumer::Consumer;
use rdkafka::Offset;

use crate::client::{self, ConnArgs};
use report::{Latency, Report};

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Producer throughput and send -> acknowledgement latency.
    Produce(BenchArgs),
    /// Consumer throughput reading a topic from the beginning.
    Consume(BenchArgs),
    /// Producers and consumers together: send -> consume latency.
    E2e(BenchArgs),
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq, Debug)]
pub enum KeyDistribution {
    /// No key: librdkafka's sticky partitioner fills one batch at a time.
    None,
    /// A key drawn uniformly from `--keys` distinct keys.
    Random,
    /// Keys 0, 1, 2, ... wrapping at `--keys`.
    Sequential,
}

#[derive(Args, Clone)]
pub struct BenchArgs {
    #[command(flatten)]
    conn: ConnArgs,
    /// Topic to use (created with --partitions if missing).
    #[arg(long, default_value = "sluice-bench")]
    topic: String,
    /// Records to send (produce, e2e) or read (consume; default: everything in the topic).
    /// Default for produce/e2e: 100000 unless --duration is given.
    #[arg(long, conflicts_with = "duration")]
    messages: Option<u64>,
    /// Run for this many seconds instead of a fixed count.
    #[arg(long, value_name = "SECS")]
    duration: Option<f64>,
    /// Size of each record's value in bytes.
    #[arg(long, default_value_t = 1024)]
    record_size: usize,
    /// How records are keyed.
    #[arg(long, value_enum, default_value = "none")]
    key_distribution: KeyDistribution,
    /// Number of distinct keys for --key-distribution random|sequential.
    #[arg(long, default_value_t = 10_000)]
    keys: u64,
    /// Partitions of the topic if it has to be created.
    #[arg(long, default_value_t = 1)]
    partitions: i32,
    /// Producer acks.
    #[arg(long, default_value = "all", value_parser = PossibleValuesParser::new(["0", "1", "all", "-1"]))]
    acks: String,
    /// Producer compression codec.
    #[arg(short = 'z', long, default_value = "none",
          value_parser = PossibleValuesParser::new(["none", "gzip", "snappy", "lz4", "zstd"]))]
    compression: String,
    /// Producer linger.ms (default: librdkafka's, 5).
    #[arg(long)]
    linger_ms: Option<u32>,
    /// Producer batch.size in bytes (default: librdkafka's, 1000000).
    #[arg(long)]
    batch_size: Option<u32>,
    /// Target total send rate in records/s; 0 = as fast as possible.
    #[arg(long, default_value_t = 0.0, value_name = "MSGS_PER_SEC")]
    rate: f64,
    /// Producer threads, each with its own client.
    #[arg(long, default_value_t = 1)]
    producers: usize,
    /// Consumer threads, each with its own client; partitions are split between them.
    #[arg(long, default_value_t = 1)]
    consumers: usize,
    /// Any librdkafka setting for every client, `key=value`; repeatable.
    #[arg(short = 'X', long = "set", value_name = "KEY=VALUE", value_parser = client::key_value)]
    settings: Vec<(String, String)>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Mode {
    Produce,
    Consume,
    E2e,
}

/// Counters the workers update and the progress loop reads.
pub struct Shared {
    /// Records handed to librdkafka.
    pub sent: AtomicU64,
    /// Records acknowledged by the broker.
    pub delivered: AtomicU64,
    /// Records whose delivery failed.
    pub failed: AtomicU64,
    /// Records consumed.
    pub consumed: AtomicU64,
    /// Value bytes consumed.
    pub consumed_bytes: AtomicU64,
    /// Nanoseconds since the run's start at which the last record was consumed/acknowledged.
    pub last_ns: AtomicU64,
    /// Nanoseconds since the run's start at which the first record was consumed (`u64::MAX`
    /// until then); `consume` measures from here, leaving out client start-up.
    pub first_ns: AtomicU64,
    /// Set when the consumers should stop.
    pub stop_consumers: AtomicBool,
    /// Set when the producers should stop (duration elapsed, or a fatal error).
    pub stop_producers: AtomicBool,
    /// The first delivery or consumer error, for the report.
    pub first_error: Mutex<Option<String>>,
}

impl Default for Shared {
    fn default() -> Shared {
        Shared {
            sent: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            consumed: AtomicU64::new(0),
            consumed_bytes: AtomicU64::new(0),
            last_ns: AtomicU64::new(0),
            first_ns: AtomicU64::new(u64::MAX),
            stop_consumers: AtomicBool::new(false),
            stop_producers: AtomicBool::new(false),
            first_error: Mutex::new(None),
        }
    }
}

impl Shared {
    pub fn note_error(&self, e: String) {
        let mut first = self.first_error.lock().unwrap_or_else(|p| p.into_inner());
        first.get_or_insert(e);
    }

    pub fn mark_last(&self, ns: u64) {
        self.last_ns.fetch_max(ns, Ordering::Relaxed);
    }

    pub fn mark_first(&self, ns: u64) {
        self.first_ns.fetch_min(ns, Ordering::Relaxed);
    }
}

pub fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    let (mode, args) = match cmd {
        BenchCommand::Produce(a) => (Mode::Produce, a),
        BenchCommand::Consume(a) => (Mode::Consume, a),
        BenchCommand::E2e(a) => (Mode::E2e, a),
    };
    if args.producers == 0 || args.consumers == 0 {
        bail!("--producers and --consumers must be at least 1");
    }
    if mode == Mode::E2e && args.record_size < 8 {
        bail!("e2e needs --record-size >= 8 (the send time travels in the value)");
    }
    if args.rate < 0.0 {
        bail!("--rate must be >= 0");
    }
    let brokers = &args.conn.brokers;
    let probe = client::lone_consumer(brokers)?;
    client::metadata(&probe, brokers, None)?;
    if mode != Mode::Consume {
        ensure_topic(&args)?;
    }
    let md = client::topic_metadata(&probe, brokers, &args.topic)?;
    let partitions = client::partition_ids(&md, &args.topic);
    if partitions.is_empty() {
        bail!("topic {:?} has no partitions", args.topic);
    }

    // Where consumers start: the beginning (consume) or the current end (e2e, so only this run's
    // records are read), fixed now so producers starting right after cannot race it.
    let mut starts = Vec::new();
    let mut available = 0u64;
    for &p in &partitions {
        let (low, high) = probe
            .fetch_watermarks(&args.topic, p, client::TIMEOUT)
            .with_context(|| format!("offsets of {}-{p}", args.topic))?;
        available += (high - low).max(0) as u64;
        starts.push((
            p,
            match mode {
                Mode::E2e => Offset::Offset(high),
                _ => Offset::Beginning,
            },
        ));
    }
    drop(probe);

    let duration = args.duration.map(Duration::from_secs_f64);
    let target = match (mode, args.messages, duration) {
        (_, Some(n), _) => Some(n),
        (_, None, Some(_)) => None,
        (Mode::Consume, None, None) => {
            if available == 0 {
                bail!(
                    "topic {:?} is empty; fill it first with `sluice bench produce`",
                    args.topic
                );
            }
            Some(available)
        }
        (_, None, None) => Some(100_000),
    };
    if mode == Mode::Consume && target.is_some_and(|t| t > available) {
        bail!(
            "topic {:?} holds {available} records, fewer than --messages {}",
            args.topic,
            target.unwrap_or_default()
        );
    }

    let shared = Shared::default();
    let base = Instant::now();
    let progress = progress_bar(&args, target);
    let mut producer_hists = Vec::new();
    let mut consumer_hists = Vec::new();
    let mut worker_errors = Vec::new();
    let mut producers_done_at: Option<Instant> = None;
    std::thread::scope(|s| {
        let mut consumers = Vec::new();
        if mode != Mode::Produce {
            let n = args.consumers.min(starts.len());
            for i in 0..n {
                let mine: Vec<(i32, Offset)> = starts.iter().skip(i).step_by(n).copied().collect();
                let (args, shared) = (&args, &shared);
                consumers
                    .push(s.spawn(move || worker::consume(args, mode, mine, target, shared, base)));
            }
        }
        let mut producers = Vec::new();
        if mode != Mode::Consume {
            for i in 0..args.producers {
                // Split the count so the total is exact.
                let quota = target.map(|t| {
                    let n = args.producers as u64;
                    t / n + u64::from((i as u64) < t % n)
                });
                let (args, shared) = (&args, &shared);
                producers
                    .push(s.spawn(move || worker::produce(args, mode, i, quota, shared, base)));
            }
        }

        // The progress loop: also decides when the time is up and when consumers may stop.
        loop {
            std::thread::sleep(Duration::from_millis(100));
            let pos = match mode {
                Mode::Produce => shared.delivered.load(Ordering::Relaxed),
                _ => shared.consumed.load(Ordering::Relaxed),
            };
            progress.set_position(pos);
            let elapsed = base.elapsed().as_secs_f64().max(1e-9);
            progress.set_message(format!("{:.0} msg/s", pos as f64 / elapsed));
            if duration.is_some_and(|d| base.elapsed() >= d) {
                shared.stop_producers.store(true, Ordering::Relaxed);
                if mode == Mode::Consume {
                    shared.stop_consumers.store(true, Ordering::Relaxed);
                }
            }
            let producers_done = producers.iter().all(|h| h.is_finished());
            if producers_done && producers_done_at.is_none() {
                producers_done_at = Some(Instant::now());
            }
            if mode == Mode::E2e && producers_done {
                // Everything acknowledged has been read, or the stragglers had their chance.
                let consumed = shared.consumed.load(Ordering::Relaxed);
                let delivered = shared.delivered.load(Ordering::Relaxed);
                let waited = producers_done_at.map_or(Duration::ZERO, |t| t.elapsed());
                if consumed >= delivered || waited > Duration::from_secs(30) {
                    shared.stop_consumers.store(true, Ordering::Relaxed);
                }
            }
            if producers_done && consumers.iter().all(|h| h.is_finished()) {
                break;
            }
        }
        for h in producers {
            match h.join() {
                Ok(Ok(hist)) => producer_hists.push(hist),
                Ok(Err(e)) => worker_errors.push(e),
                Err(_) => worker_errors.push(anyhow::anyhow!("a producer thread panicked")),
            }
        }
        for h in consumers {
            match h.join() {
                Ok(Ok(hist)) => consumer_hists.push(hist),
                Ok(Err(e)) => worker_errors.push(e),
                Err(_) => worker_errors.push(anyhow::anyhow!("a consumer thread panicked")),
            }
        }
    });
    progress.finish_and_clear();
    if let Some(e) = worker_errors.into_iter().next() {
        return Err(e);
    }

    // produce/e2e: from the start (client creation included) to the last acknowledgement or
    // consumed record; consume: from the first record received to the last, like
    // kafka-consumer-perf-test's fetch time, so connecting and the first ListOffsets don't count.
    let last = shared.last_ns.load(Ordering::Relaxed);
    let first = match mode {
        Mode::Consume => shared.first_ns.load(Ordering::Relaxed).min(last),
        _ => 0,
    };
    let seconds = ((last - first) as f64 / 1e9).max(1e-9);
    let (messages, bytes, hists) = match mode {
        Mode::Produce => {
            let n = shared.delivered.load(Ordering::Relaxed);
            (n, n * args.record_size as u64, producer_hists)
        }
        _ => (
            shared.consumed.load(Ordering::Relaxed),
            shared.consumed_bytes.load(Ordering::Relaxed),
            consumer_hists,
        ),
    };
    let latency = Latency::merge(&hists)?;
    let failed = shared.failed.load(Ordering::Relaxed);
    let missing = match mode {
        Mode::E2e => shared
            .delivered
            .load(Ordering::Relaxed)
            .saturating_sub(messages),
        _ => 0,
    };
    let report = Report {
        mode: match mode {
            Mode::Produce => "produce",
            Mode::Consume => "consume",
            Mode::E2e => "e2e",
        },
        topic: args.topic.clone(),
        partitions: partitions.len(),
        record_size: args.record_size,
        acks: args.acks.clone(),
        compression: args.compression.clone(),
        producers: if mode == Mode::Consume {
            0
        } else {
            args.producers
        },
        // At most one consumer per partition is started.
        consumers: if mode == Mode::Produce {
            0
        } else {
            args.consumers.min(partitions.len())
        },
        target_rate: args.rate,
        messages,
        bytes,
        failed,
        missing,
        seconds,
        msgs_per_sec: messages as f64 / seconds,
        mb_per_sec: bytes as f64 / 1e6 / seconds,
        latency_kind: match mode {
            Mode::Produce => "send to acknowledgement",
            Mode::Consume => "record age at consume time (now - CreateTime, ms resolution)",
            Mode::E2e => "send to consume",
        },
        latency_ms: latency,
    };
    report.print(args.conn.json)?;
    if failed > 0 || missing > 0 {
        let first = shared
            .first_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .unwrap_or_else(|| "no error reported".into());
        bail!("{failed} deliveries failed, {missing} acknowledged records not consumed; first error: {first}");
    }
    Ok(())
}

/// Creates the bench topic with `--partitions` if it does not exist.
fn ensure_topic(args: &BenchArgs) -> anyhow::Result<()> {
    let brokers = &args.conn.brokers;
    let probe = client::lone_consumer(brokers)?;
    let md = client::metadata(&probe, brokers, None)?;
    if let Some(t) = md.topics().iter().find(|t| t.name() == args.topic) {
        if t.partitions().len() as i32 != args.partitions {
            eprintln!(
                "note: topic {:?} exists with {} partitions; using it as is",
                args.topic,
                t.partitions().len()
            );
        }
        return Ok(());
    }
    let admin = client::admin(brokers)?;
    let nt = NewTopic::new(&args.topic, args.partitions, TopicReplication::Fixed(-1));
    let res = client::block_on(admin.create_topics(&[nt], &client::admin_opts()))
        .context("CreateTopics")?;
    for r in res {
        if let Err((name, code)) = r {
            if code != rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists {
                bail!("cannot create topic {name:?}: {code}");
            }
        }
    }
    // Wait until the topic shows up in metadata with a leader for every partition.
    let deadline = Instant::now() + client::TIMEOUT;
    loop {
        let md = client::metadata(&probe, brokers, Some(&args.topic))?;
        let ready = md.topics().iter().any(|t| {
            t.name() == args.topic
                && t.error().is_none()
                && !t.partitions().is_empty()
                && t.partitions().iter().all(|p| p.leader() >= 0)
        });
        if ready {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("topic {:?} did not become ready", args.topic);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn progress_bar(args: &BenchArgs, target: Option<u64>) -> ProgressBar {
    if args.conn.json || !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        return ProgressBar::hidden();
    }
    match target {
        Some(n) => {
            let pb = ProgressBar::new(n);
            if let Ok(style) = ProgressStyle::with_template(
                "{elapsed_precise} [{bar:40}] {human_pos}/{human_len} {msg}",
            ) {
                pb.set_style(style.progress_chars("=> "));
            }
            pb
        }
        None => {
            let pb = ProgressBar::new_spinner();
            if let Ok(style) =
                ProgressStyle::with_template("{spinner} {elapsed_precise} {human_pos} {msg}")
            {
                pb.set_style(style);
            }
            pb
        }
    }
}
