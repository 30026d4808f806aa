//! What the client commands share: the connection flags, the rdkafka base config, the
//! reachability check and JSON output.

use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::FromClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::metadata::Metadata;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientConfig;

/// How long any single request to the broker may take before the command gives up. Short on
/// purpose: a CLI against a dead address must fail in seconds, not retry for minutes.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// Flags every client command takes.
#[derive(Args, Clone)]
pub struct ConnArgs {
    /// Bootstrap broker(s), comma-separated.
    #[arg(
        short = 'b',
        long,
        default_value = "127.0.0.1:9092",
        value_name = "HOST:PORT"
    )]
    pub brokers: String,
    /// Print one JSON document instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// The rdkafka config every client starts from.
pub fn base_config(brokers: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers)
        .set(
            "client.id",
            concat!("sluice-cli/", env!("CARGO_PKG_VERSION")),
        )
        .set("socket.connection.setup.timeout.ms", "5000")
        .set("socket.timeout.ms", "10000");
    c
}

pub fn create<T: FromClientConfig>(config: &ClientConfig) -> anyhow::Result<T> {
    config.create().context("creating the Kafka client")
}

pub fn admin(brokers: &str) -> anyhow::Result<AdminClient<DefaultClientContext>> {
    create(&base_config(brokers))
}

pub fn admin_opts() -> AdminOptions {
    AdminOptions::new()
        .request_timeout(Some(TIMEOUT))
        .operation_timeout(Some(TIMEOUT))
}

/// A consumer that is never a group member: librdkafka wants a `group.id` for `assign()` and
/// for offset queries, so it gets one that nothing else uses, and it never commits.
pub fn lone_consumer(brokers: &str) -> anyhow::Result<BaseConsumer> {
    let mut c = base_config(brokers);
    c.set("group.id", format!("sluice-cli-{}", std::process::id()))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false");
    create(&c)
}

/// Fetches metadata (all topics, or one) and turns "nobody answered" into an error that names
/// the address, so every command fails the same clear way against a dead broker.
pub fn metadata(
    consumer: &BaseConsumer,
    brokers: &str,
    topic: Option<&str>,
) -> anyhow::Result<Metadata> {
    match consumer.fetch_metadata(topic, TIMEOUT) {
        Ok(md) => Ok(md),
        Err(e) => Err(unreachable(brokers, e)),
    }
}

/// The error for a failed first contact with the cluster.
pub fn unreachable(brokers: &str, e: KafkaError) -> anyhow::Error {
    match e.rdkafka_error_code() {
        Some(RDKafkaErrorCode::BrokerTransportFailure)
        | Some(RDKafkaErrorCode::AllBrokersDown)
        | Some(RDKafkaErrorCode::OperationTimedOut)
        | Some(RDKafkaErrorCode::RequestTimedOut) => anyhow::anyhow!(
            "cannot reach a broker at {brokers} within {}s ({e}); is `sluice serve` running \
             there?",
            TIMEOUT.as_secs()
        ),
        _ => anyhow::anyhow!("talking to {brokers}: {e}"),
    }
}

/// Metadata of one topic, or an "unknown topic" error.
pub fn topic_metadata(
    consumer: &BaseConsumer,
    brokers: &str,
    topic: &str,
) -> anyhow::Result<rdkafka::metadata::Metadata> {
    let md = metadata(consumer, brokers, Some(topic))?;
    let Some(t) = md.topics().iter().find(|t| t.name() == topic) else {
        bail!("unknown topic {topic:?}");
    };
    if let Some(err) = t.error() {
        let code = RDKafkaErrorCode::from(err);
        if code == RDKafkaErrorCode::UnknownTopicOrPartition {
            bail!("unknown topic {topic:?}");
        }
        bail!("topic {topic:?}: {code}");
    }
    Ok(md)
}

/// The partition ids of `topic` in `md`, sorted.
pub fn partition_ids(md: &Metadata, topic: &str) -> Vec<i32> {
    let mut ids: Vec<i32> = md
        .topics()
        .iter()
        .filter(|t| t.name() == topic)
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    ids.sort_unstable();
    ids
}

/// Prints a value as one JSON document on one line.
pub fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string(value)?);
    Ok(())
}

/// Parses `key=value`.
pub fn key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected key=value, got {s:?}")),
    }
}

/// Runs one rdkafka admin future to completion (the futures are driven by librdkafka's own
/// threads; a minimal current-thread runtime is enough to wait on them).
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a current-thread runtime builds")
        .block_on(f)
}
