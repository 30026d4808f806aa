//! `sluice produce TOPIC`: one record per line of stdin.

use std::io::BufRead;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::builder::PossibleValuesParser;
use clap::Args;
use rdkafka::client::ClientContext;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;

use crate::client::{self, ConnArgs};

#[derive(Args)]
pub struct ProduceArgs {
    #[command(flatten)]
    conn: ConnArgs,
    topic: String,
    /// Split each line into key and value at the first SEP (a line without SEP has no key).
    #[arg(short = 'k', long, value_name = "SEP")]
    key_separator: Option<String>,
    /// A header added to every record, `key=value`; repeatable.
    #[arg(short = 'H', long = "header", value_name = "KEY=VALUE", value_parser = client::key_value)]
    headers: Vec<(String, String)>,
    /// Partition to write to (default: by key hash, or sticky for records without a key).
    #[arg(short, long)]
    partition: Option<i32>,
    /// Acknowledgements to wait for.
    #[arg(long, default_value = "all", value_parser = PossibleValuesParser::new(["0", "1", "all", "-1"]))]
    acks: String,
    /// Compression codec.
    #[arg(short = 'z', long, default_value = "none",
          value_parser = PossibleValuesParser::new(["none", "gzip", "snappy", "lz4", "zstd"]))]
    compression: String,
}

/// Counts delivery reports; librdkafka calls `delivery` from `poll`/`flush` on this thread.
#[derive(Default)]
struct Deliveries {
    delivered: AtomicU64,
    failed: AtomicU64,
    /// The first failure, for the error message.
    first_error: Mutex<Option<String>>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => {
                self.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Err((e, _)) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                let mut first = self.first_error.lock().unwrap_or_else(|p| p.into_inner());
                first.get_or_insert_with(|| e.to_string());
            }
        }
    }
}

pub fn run(a: ProduceArgs) -> anyhow::Result<()> {
    let brokers = &a.conn.brokers;
    // Fail fast on a dead address or a missing topic, before reading any input.
    let check = client::lone_consumer(brokers)?;
    let md = client::topic_metadata(&check, brokers, &a.topic)?;
    if let Some(p) = a.partition {
        let n = client::partition_ids(&md, &a.topic).len();
        if !client::partition_ids(&md, &a.topic).contains(&p) {
            bail!(
                "topic {:?} has {n} partitions; there is no partition {p}",
                a.topic
            );
        }
    }
    drop(check);

    let mut config = client::base_config(brokers);
    config
        .set("acks", &a.acks)
        .set("compression.type", &a.compression)
        .set("message.timeout.ms", "30000")
        .set("linger.ms", "5");
    let producer: BaseProducer<Deliveries> = config
        .create_with_context(Deliveries::default())
        .context("creating the producer")?;

    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    let mut line = Vec::new();
    let mut sent = 0u64;
    loop {
        line.clear();
        if input
            .read_until(b'\n', &mut line)
            .context("reading stdin")?
            == 0
        {
            break;
        }
        if line.last() == Some(&b'\n') {
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
        }
        let (key, value) = split_key(&line, a.key_separator.as_deref().map(str::as_bytes));
        let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(&a.topic).payload(value);
        if let Some(k) = key {
            record = record.key(k);
        }
        if let Some(p) = a.partition {
            record = record.partition(p);
        }
        if !a.headers.is_empty() {
            let mut h = OwnedHeaders::new_with_capacity(a.headers.len());
            for (k, v) in &a.headers {
                h = h.insert(Header {
                    key: k,
                    value: Some(v.as_bytes()),
                });
            }
            record = record.headers(h);
        }
        // A full local queue is back-pressure, not an error: serve delivery reports and retry.
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    producer.poll(Duration::from_millis(50));
                }
                Err((e, _)) => bail!("cannot send record {}: {e}", sent + 1),
            }
        }
        sent += 1;
        producer.poll(Duration::ZERO);
    }
    let flushed = producer.flush(Duration::from_secs(60));
    let ctx = producer.context();
    let delivered = ctx.delivered.load(Ordering::Relaxed);
    let failed = ctx.failed.load(Ordering::Relaxed);
    if a.conn.json {
        client::print_json(&serde_json::json!({
            "topic": a.topic, "sent": sent, "delivered": delivered, "failed": failed,
        }))?;
    }
    if let Err(e) = flushed {
        bail!(
            "{} of {sent} records were not delivered within 60s: {e}",
            sent - delivered
        );
    }
    if failed > 0 {
        let first = ctx
            .first_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .unwrap_or_default();
        bail!("{failed} of {sent} records failed; first error: {first}");
    }
    Ok(())
}

/// Splits a line at the first `sep` into (key, value); without `sep`, or when the line does not
/// contain it, the whole line is the value.
fn split_key<'a>(line: &'a [u8], sep: Option<&[u8]>) -> (Option<&'a [u8]>, &'a [u8]) {
    let Some(sep) = sep.filter(|s| !s.is_empty()) else {
        return (None, line);
    };
    match line.windows(sep.len()).position(|w| w == sep) {
        Some(i) => (Some(&line[..i]), &line[i + sep.len()..]),
        None => (None, line),
    }
}

#[cfg(test)]
mod tests {
    use super::split_key;

    #[test]
    fn splits_at_the_first_separator() {
        assert_eq!(
            split_key(b"k:v:w", Some(b":")),
            (Some(&b"k"[..]), &b"v:w"[..])
        );
        assert_eq!(split_key(b"kv", Some(b"::")), (None, &b"kv"[..]));
        assert_eq!(
            split_key(b"k::v", Some(b"::")),
            (Some(&b"k"[..]), &b"v"[..])
        );
        assert_eq!(split_key(b":v", Some(b":")), (Some(&b""[..]), &b"v"[..]));
        assert_eq!(split_key(b"k:v", None), (None, &b"k:v"[..]));
    }
}
