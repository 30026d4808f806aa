//! The producer and consumer loops, one client per thread.

use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use hdrhistogram::Histogram;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use super::report::new_histogram;
use super::{BenchArgs, KeyDistribution, Mode, Shared};
use crate::client;

/// xorshift64*: fast, good enough to make payloads and keys that are not all alike.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// Delivery reports arrive on the producer thread (from `poll`/`flush`); the opaque is the send
/// time in ns since the run started.
struct Deliveries<'a> {
    shared: &'a Shared,
    base: Instant,
    /// Only this thread touches it; the Mutex satisfies the context's Sync bound, uncontended.
    hist: Mutex<Histogram<u64>>,
}

impl ClientContext for Deliveries<'_> {}

impl ProducerContext for Deliveries<'_> {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, sent_ns: usize) {
        let now = self.base.elapsed().as_nanos() as u64;
        match result {
            Ok(_) => {
                self.shared.delivered.fetch_add(1, Ordering::Relaxed);
                self.shared.mark_last(now);
                let us = now.saturating_sub(sent_ns as u64) / 1000;
                self.hist
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .saturating_record(us.max(1));
            }
            Err((e, _)) => {
                self.shared.failed.fetch_add(1, Ordering::Relaxed);
                self.shared.note_error(e.to_string());
            }
        }
    }
}

fn apply_settings(c: &mut ClientConfig, args: &BenchArgs) {
    for (k, v) in &args.settings {
        c.set(k, v);
    }
}

/// One producer thread: sends `quota` records (or until told to stop), paced to its share of
/// `--rate`, then waits for every delivery report.
pub fn produce(
    args: &BenchArgs,
    mode: Mode,
    id: usize,
    quota: Option<u64>,
    shared: &Shared,
    base: Instant,
) -> anyhow::Result<Histogram<u64>> {
    let mut c = client::base_config(&args.conn.brokers);
    c.set("acks", &args.acks)
        .set("compression.type", &args.compression)
        .set("message.timeout.ms", "60000");
    if let Some(l) = args.linger_ms {
        c.set("linger.ms", l.to_string());
    }
    if let Some(b) = args.batch_size {
        c.set("batch.size", b.to_string());
    }
    apply_settings(&mut c, args);
    let ctx = Deliveries {
        shared,
        base,
        hist: Mutex::new(new_histogram()),
    };
    let producer: BaseProducer<Deliveries<'_>> =
        c.create_with_context(ctx).context("creating a producer")?;

    // Values are slices of one random buffer at shifting offsets; e2e copies into a scratch
    // value to stamp the send time.
    let size = args.record_size;
    let mut rng = Rng::new(id as u64 + 1);
    let pool: Vec<u8> = (0..size + 4096)
        .map(|_| b'A' + (rng.next() % 26) as u8)
        .collect();
    let mut scratch = vec![0u8; size];
    let mut key = Vec::with_capacity(24);
    let per_thread_rate = args.rate / args.producers as f64;
    let started = Instant::now();
    let mut i: u64 = 0;
    loop {
        if quota.is_some_and(|q| i >= q) || shared.stop_producers.load(Ordering::Relaxed) {
            break;
        }
        if per_thread_rate > 0.0 {
            let due = started + Duration::from_secs_f64(i as f64 / per_thread_rate);
            let now = Instant::now();
            if due > now {
                // Serve delivery reports while waiting for the next send slot.
                producer.poll(due - now);
            }
        }
        key.clear();
        let k = match args.key_distribution {
            KeyDistribution::None => None,
            KeyDistribution::Random => Some(rng.next() % args.keys.max(1)),
            KeyDistribution::Sequential => Some(i % args.keys.max(1)),
        };
        if let Some(k) = k {
            use std::io::Write;
            let _ = write!(key, "key-{k}");
        }
        let off = (i as usize * 61) % 4096;
        let sent_ns = base.elapsed().as_nanos() as u64;
        let value: &[u8] = if mode == Mode::E2e {
            scratch.copy_from_slice(&pool[off..off + size]);
            scratch[..8].copy_from_slice(&sent_ns.to_be_bytes());
            &scratch
        } else {
            &pool[off..off + size]
        };
        let mut record: BaseRecord<'_, [u8], [u8], usize> =
            BaseRecord::with_opaque_to(&args.topic, sent_ns as usize).payload(value);
        if k.is_some() {
            record = record.key(&key[..]);
        }
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    producer.poll(Duration::from_millis(1));
                }
                Err((e, _)) => {
                    shared.stop_producers.store(true, Ordering::Relaxed);
                    return Err(anyhow::anyhow!("send failed: {e}"));
                }
            }
        }
        shared.sent.fetch_add(1, Ordering::Relaxed);
        i += 1;
        producer.poll(Duration::ZERO);
    }
    producer
        .flush(Duration::from_secs(120))
        .context("waiting for the last deliveries")?;
    let hist = producer
        .context()
        .hist
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    Ok(hist)
}

/// One consumer thread: reads its partitions from `starts` until `target` records were consumed
/// by all consumers together, or until told to stop.
pub fn consume(
    args: &BenchArgs,
    mode: Mode,
    starts: Vec<(i32, Offset)>,
    target: Option<u64>,
    shared: &Shared,
    base: Instant,
) -> anyhow::Result<Histogram<u64>> {
    let mut c = client::base_config(&args.conn.brokers);
    c.set("group.id", format!("sluice-bench-{}", std::process::id()))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false");
    apply_settings(&mut c, args);
    let consumer: BaseConsumer = c.create().context("creating a consumer")?;
    let mut tpl = TopicPartitionList::new();
    for (p, off) in &starts {
        tpl.add_partition_offset(&args.topic, *p, *off)?;
    }
    consumer.assign(&tpl).context("assign")?;
    let mut hist = new_histogram();
    // The stop condition for e2e comes from the progress loop (it knows how many were
    // acknowledged); consume stops itself at the target.
    let own_target = if mode == Mode::Consume { target } else { None };
    while !shared.stop_consumers.load(Ordering::Relaxed) {
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Ok(m)) => {
                let now_ns = base.elapsed().as_nanos() as u64;
                let payload = m.payload().unwrap_or_default();
                let us = match mode {
                    Mode::E2e if payload.len() >= 8 => {
                        let mut b = [0u8; 8];
                        b.copy_from_slice(&payload[..8]);
                        now_ns.saturating_sub(u64::from_be_bytes(b)) / 1000
                    }
                    _ => {
                        let now_ms = SystemTime::now()
                            .duration_since(UNIX_EPOCH)
                            .map_or(0, |d| d.as_millis() as i64);
                        let ts = m.timestamp().to_millis().unwrap_or(now_ms);
                        (now_ms - ts).max(0) as u64 * 1000
                    }
                };
                hist.saturating_record(us.max(1));
                shared
                    .consumed_bytes
                    .fetch_add(payload.len() as u64, Ordering::Relaxed);
                shared.mark_first(now_ns);
                shared.mark_last(now_ns);
                let n = shared.consumed.fetch_add(1, Ordering::Relaxed) + 1;
                if own_target.is_some_and(|t| n >= t) {
                    shared.stop_consumers.store(true, Ordering::Relaxed);
                }
            }
            Some(Err(e)) => {
                shared.note_error(format!("consumer: {e}"));
            }
        }
    }
    Ok(hist)
}
