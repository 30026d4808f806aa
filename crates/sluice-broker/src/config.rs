//! Broker configuration.
//!
//! Settings use Kafka's broker config names so operators can carry their `server.properties`
//! knowledge over. They come from defaults, then a TOML file (`--config`), then `--override
//! key=value` flags, in that order. Every key is checked against [`SETTINGS`]: an unknown key or
//! an invalid value fails start-up with a message naming both.
//!
//! Two layers:
//! - [`Settings`], the raw one: every setting by name as a string, with where its value came
//!   from (default, static, dynamic). DescribeConfigs reports it, and dynamic broker configs are
//!   laid over it ([`Settings::with_dynamic`]).
//! - [`BrokerSettings`], the typed one the broker runs on: one field (or one part of a field)
//!   per setting, built in one function, [`BrokerSettings::from_settings`], that reads every row
//!   of [`SETTINGS`]; a unit test fails when a row is added there and not read here. It is
//!   rebuilt from the raw layer whenever dynamic broker configs change.
//!
//! Adding a setting: a row in [`SETTINGS`], its validation in `kind`, and its field in
//! [`BrokerSettings`] read in [`BrokerSettings::from_settings`].

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use thiserror::Error;

use crate::topic_config::{ConfigSource, TopicConfigDef, TopicSettings};

#[derive(Debug, Error, PartialEq)]
pub enum ConfigError {
    #[error("unknown broker setting '{0}' (Sluice takes Kafka's broker config names; see `sluice serve --help`)")]
    Unknown(String),
    #[error("invalid value '{value}' for '{key}': {reason}")]
    Invalid {
        key: String,
        value: String,
        reason: String,
    },
    #[error("config file: {0}")]
    File(String),
    #[error("--override expects key=value, got '{0}'")]
    BadOverride(String),
}

/// When an acknowledged produce is durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// `acks=1`/`acks=all` are answered after the batch is fsynced (group commit), and consumers
    /// only see fsynced data. The default.
    Fsync,
    /// Answered after the write reaches the page cache (Kafka's own default behaviour).
    Relaxed,
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Bool,
    /// Inclusive bounds.
    Int(i64, i64),
    /// -1 (no limit), or within the inclusive bounds.
    IntOrUnbounded(i64, i64),
    /// Validated like the topic config it is the default for.
    Topic,
}

/// Every broker setting Sluice understands: name, type, default, meaning.
pub const SETTINGS: &[(&str, &str, &str)] = &[
    (
        "num.partitions",
        "1",
        "Partitions of an auto-created topic or a CreateTopics with -1.",
    ),
    (
        "default.replication.factor",
        "3",
        "Replication factor of topics created without one (auto-created, or CreateTopics with \
         -1). Left at this default it is capped at the live brokers, so a smaller cluster, down \
         to one node, still creates topics; set explicitly, a value above the live brokers is \
         refused (INVALID_REPLICATION_FACTOR), as in Kafka.",
    ),
    (
        "broker.heartbeat.interval.ms",
        "300",
        "How often a broker heartbeats to the active controller (Kafka: 2000; shorter here so a \
         dead broker is fenced in seconds).",
    ),
    (
        "broker.session.timeout.ms",
        "3000",
        "A broker whose heartbeats stop for this long is fenced: its partitions get another \
         leader, or none (Kafka: 9000).",
    ),
    (
        "auto.leader.rebalance.enable",
        "true",
        "The active controller moves leadership back to each partition's preferred (first) \
         replica when it is in sync and a broker's share of such partitions led elsewhere \
         passes leader.imbalance.per.broker.percentage.",
    ),
    (
        "leader.imbalance.check.interval.seconds",
        "300",
        "How often the active controller checks for leadership away from preferred replicas.",
    ),
    (
        "leader.imbalance.per.broker.percentage",
        "10",
        "The share of a broker's preferred partitions led elsewhere that triggers a rebalance.",
    ),
    (
        "replica.lag.time.max.ms",
        "30000",
        "An in-sync follower that has not caught up with the leader for this long leaves the ISR.",
    ),
    (
        "metadata.log.max.entries.between.snapshots",
        "2000",
        "Sluice's own: the metadata log is snapshotted after this many new entries and the \
         entries behind the snapshot are dropped (Kafka counts bytes instead: \
         metadata.log.max.record.bytes.between.snapshots).",
    ),
    (
        "auto.create.topics.enable",
        "true",
        "Create unknown topics named in Metadata requests.",
    ),
    (
        "message.max.bytes",
        "1048588",
        "Largest record batch a producer may send (bytes).",
    ),
    (
        "socket.request.max.bytes",
        "104857600",
        "Largest request frame accepted (bytes).",
    ),
    (
        "queued.max.request.bytes",
        "536870912",
        "Bytes of requests being read or handled, over all connections; a connection waits \
         before reading a body that does not fit. -1: unbounded (Kafka's default).",
    ),
    (
        "connection.max.inflight.bytes",
        "16777216",
        "Sluice's own: bytes of one connection's requests being handled and answers waiting to be \
         written; the connection stops reading while they are used up.",
    ),
    (
        "max.connections",
        "10000",
        "Connections the broker holds; past it a new connection is accepted and closed. Keep it \
         below the open-file limit.",
    ),
    (
        "max.connections.per.ip",
        "2147483647",
        "Connections one client address may hold; past it a new one is accepted and closed.",
    ),
    (
        "connections.max.idle.ms",
        "600000",
        "Close a connection with no request in flight that has received nothing for this long. \
         -1: never.",
    ),
    (
        "socket.request.read.timeout.ms",
        "30000",
        "Sluice's own: close a connection whose request frame is not complete this long after its \
         first byte arrived.",
    ),
    (
        "log.segment.bytes",
        "1073741824",
        "Roll the active segment at this size (bytes).",
    ),
    (
        "log.roll.hours",
        "168",
        "Roll the active segment after this age (hours).",
    ),
    (
        "log.roll.ms",
        "",
        "Roll age in ms; overrides log.roll.hours when set.",
    ),
    (
        "log.index.interval.bytes",
        "4096",
        "Bytes of log between two offset index entries.",
    ),
    (
        "log.index.size.max.bytes",
        "10485760",
        "Roll the segment when its index reaches this size.",
    ),
    (
        "fetch.max.bytes",
        "57671680",
        "Upper bound on the bytes a Fetch response carries.",
    ),
    (
        "replica.fetch.max.bytes",
        "1048576",
        "Bytes a follower asks its leader for, per partition (the first batch comes whole even \
         if larger).",
    ),
    (
        "replica.fetch.response.max.bytes",
        "10485760",
        "Bytes a follower asks its leader for in one Fetch, over all partitions.",
    ),
    (
        "replica.fetch.wait.max.ms",
        "500",
        "How long a follower's Fetch may wait at the leader for data.",
    ),
    (
        "replica.fetch.min.bytes",
        "1",
        "Bytes a follower's Fetch waits for at the leader before it is answered.",
    ),
    (
        "replica.fetch.backoff.ms",
        "1000",
        "How long a follower waits before fetching again after an error from its leader.",
    ),
    (
        "leader.replication.throttled.rate",
        "9223372036854775807",
        "Bytes/s a leader sends to the replicas a reassignment is adding (outside the ISR). \
         Dynamic, per broker or cluster-wide. The default is no limit.",
    ),
    (
        "follower.replication.throttled.rate",
        "9223372036854775807",
        "Bytes/s a follower fetches for the replicas a reassignment is adding to it (outside the \
         ISR). Dynamic, per broker or cluster-wide. The default is no limit.",
    ),
    (
        "log.retention.hours",
        "168",
        "Delete closed segments older than this (hours).",
    ),
    (
        "log.retention.minutes",
        "",
        "Retention in minutes; overrides log.retention.hours.",
    ),
    (
        "log.retention.ms",
        "",
        "Retention in ms; overrides the minutes and hours forms. -1: forever.",
    ),
    (
        "log.retention.bytes",
        "-1",
        "Delete the oldest closed segments beyond this size per partition. -1: no limit.",
    ),
    (
        "log.retention.check.interval.ms",
        "300000",
        "How often retention is enforced.",
    ),
    (
        "log.cleanup.policy",
        "delete",
        "Default cleanup.policy of topics: delete, compact or both.",
    ),
    (
        "log.cleaner.delete.retention.ms",
        "86400000",
        "How long tombstones survive compaction.",
    ),
    (
        "log.cleaner.min.compaction.lag.ms",
        "0",
        "Records younger than this are never compacted.",
    ),
    (
        "log.cleaner.max.compaction.lag.ms",
        "9223372036854775807",
        "Records older than this are compacted regardless of the dirty ratio.",
    ),
    (
        "log.cleaner.min.cleanable.ratio",
        "0.5",
        "Dirty ratio above which a log is compacted.",
    ),
    (
        "log.cleaner.backoff.ms",
        "15000",
        "Pause of the log cleaner when nothing needs cleaning.",
    ),
    (
        "log.segment.delete.delay.ms",
        "60000",
        "Kafka's delay before a deleted segment's files are removed. Not supported: Sluice removes them at once (readers keep their open file handles); only the default is accepted.",
    ),
    (
        "log.message.timestamp.type",
        "CreateTime",
        "Default message.timestamp.type: CreateTime or LogAppendTime.",
    ),
    (
        "log.message.timestamp.before.max.ms",
        "9223372036854775807",
        "Reject records timestamped further in the past than this.",
    ),
    (
        "log.message.timestamp.after.max.ms",
        "9223372036854775807",
        "Reject records timestamped further in the future than this.",
    ),
    (
        "min.insync.replicas",
        "2",
        "Default min.insync.replicas of topics: in-sync replicas (fsynced copies in fsync mode) an \
         acks=all write needs before it is acknowledged, capped at the partition's replica \
         count (so 1 on a single node). Kafka's default is 1.",
    ),
    (
        "compression.type",
        "producer",
        "Default compression.type of topics.",
    ),
    (
        "offsets.topic.num.partitions",
        "50",
        "Partitions of __consumer_offsets (fixed once created).",
    ),
    (
        "offsets.topic.segment.bytes",
        "104857600",
        "Segment size of __consumer_offsets.",
    ),
    (
        "offsets.topic.replication.factor",
        "3",
        "Replication factor of __consumer_offsets, capped at the live brokers when it is created \
         (on the first FindCoordinator).",
    ),
    (
        "offsets.commit.timeout.ms",
        "5000",
        "How long an offset commit (or a group's stored state) may wait to be replicated to the \
         in-sync replicas of its __consumer_offsets partition before the commit fails with \
         COORDINATOR_NOT_AVAILABLE.",
    ),
    (
        "offsets.retention.minutes",
        "10080",
        "Committed offsets of an empty group expire after this.",
    ),
    (
        "offsets.retention.check.interval.ms",
        "600000",
        "How often expired offsets are looked for.",
    ),
    (
        "group.initial.rebalance.delay.ms",
        "3000",
        "Wait for more members before the first rebalance of an empty group.",
    ),
    (
        "group.min.session.timeout.ms",
        "6000",
        "Smallest session timeout a consumer may ask for.",
    ),
    (
        "group.max.session.timeout.ms",
        "1800000",
        "Largest session timeout a consumer may ask for.",
    ),
    (
        "producer.id.expiration.ms",
        "86400000",
        "Idempotent-producer state of a producer silent this long is dropped when its partition is opened.",
    ),
];

/// The documentation line of a broker setting.
pub fn setting_doc(key: &str) -> Option<&'static str> {
    SETTINGS
        .iter()
        .find(|(k, _, _)| *k == key)
        .map(|(_, _, d)| *d)
}

/// Kafka's value type of a broker setting (DescribeConfigs `config_type`).
pub fn setting_type(key: &str) -> crate::topic_config::ConfigType {
    use crate::topic_config::ConfigType;
    match kind(key) {
        Some(Kind::Bool) => ConfigType::Boolean,
        Some(Kind::Int(_, max) | Kind::IntOrUnbounded(_, max)) if max <= i32::MAX as i64 => {
            ConfigType::Int
        }
        Some(Kind::Int(..) | Kind::IntOrUnbounded(..)) => ConfigType::Long,
        Some(Kind::Topic) => match crate::topic_config::topic_name_for_broker_key(key)
            .and_then(crate::topic_config::def)
        {
            Some(d) => d.ty,
            None => ConfigType::String,
        },
        None => ConfigType::String,
    }
}

fn kind(key: &str) -> Option<Kind> {
    Some(match key {
        "auto.create.topics.enable" => Kind::Bool,
        "num.partitions" => Kind::Int(1, 1_000_000),
        "broker.heartbeat.interval.ms" => Kind::Int(10, 60_000),
        "broker.session.timeout.ms" => Kind::Int(100, 600_000),
        "metadata.log.max.entries.between.snapshots" => Kind::Int(10, i32::MAX as i64),
        "replica.lag.time.max.ms" => Kind::Int(1, i64::MAX),
        "auto.leader.rebalance.enable" => Kind::Bool,
        "leader.imbalance.check.interval.seconds" => Kind::Int(1, i32::MAX as i64),
        "leader.imbalance.per.broker.percentage" => Kind::Int(0, 100),
        "default.replication.factor" => Kind::Int(1, i16::MAX as i64),
        "message.max.bytes" => Kind::Int(0, i32::MAX as i64),
        "socket.request.max.bytes" => Kind::Int(1024, i32::MAX as i64),
        "log.segment.bytes" => Kind::Int(14, i32::MAX as i64),
        "log.roll.hours" => Kind::Int(1, i32::MAX as i64),
        "log.roll.ms" => Kind::Int(1, i64::MAX),
        "log.index.interval.bytes" => Kind::Int(0, i32::MAX as i64),
        "log.index.size.max.bytes" => Kind::Int(4, i32::MAX as i64),
        "fetch.max.bytes" => Kind::Int(1024, i32::MAX as i64),
        "replica.fetch.max.bytes" => Kind::Int(1, i32::MAX as i64),
        "replica.fetch.response.max.bytes" => Kind::Int(1, i32::MAX as i64),
        "replica.fetch.wait.max.ms" => Kind::Int(0, i32::MAX as i64),
        "replica.fetch.min.bytes" => Kind::Int(1, i32::MAX as i64),
        "replica.fetch.backoff.ms" => Kind::Int(0, i32::MAX as i64),
        "leader.replication.throttled.rate" | "follower.replication.throttled.rate" => {
            Kind::Int(1, i64::MAX)
        }
        "queued.max.request.bytes" => Kind::IntOrUnbounded(1024, i64::MAX),
        "connection.max.inflight.bytes" => Kind::Int(1024, i32::MAX as i64),
        "max.connections" | "max.connections.per.ip" => Kind::Int(1, i32::MAX as i64),
        "connections.max.idle.ms" => Kind::IntOrUnbounded(1, i64::MAX),
        "socket.request.read.timeout.ms" => Kind::Int(1, i32::MAX as i64),
        "offsets.topic.num.partitions" => Kind::Int(1, 10_000),
        "log.retention.hours" | "log.retention.minutes" => Kind::Int(-1, i32::MAX as i64),
        "log.retention.ms" | "log.retention.bytes" => Kind::Int(-1, i64::MAX),
        "log.retention.check.interval.ms" | "log.cleaner.backoff.ms" => Kind::Int(1, i64::MAX),
        "log.cleaner.delete.retention.ms"
        | "log.cleaner.min.compaction.lag.ms"
        | "log.message.timestamp.before.max.ms"
        | "log.message.timestamp.after.max.ms" => Kind::Int(0, i64::MAX),
        "log.cleaner.max.compaction.lag.ms" => Kind::Int(1, i64::MAX),
        "min.insync.replicas" => Kind::Int(1, i32::MAX as i64),
        // Validated as file.delete.delay.ms is: only the default (Sluice needs no delay).
        "log.segment.delete.delay.ms"
        | "log.cleanup.policy"
        | "log.message.timestamp.type"
        | "compression.type"
        | "log.cleaner.min.cleanable.ratio" => Kind::Topic,
        "offsets.topic.segment.bytes" => Kind::Int(1024, i32::MAX as i64),
        "offsets.topic.replication.factor" => Kind::Int(1, i16::MAX as i64),
        "offsets.commit.timeout.ms" => Kind::Int(1, i32::MAX as i64),
        "offsets.retention.minutes" => Kind::Int(1, i32::MAX as i64),
        "offsets.retention.check.interval.ms" => Kind::Int(1, i64::MAX),
        "group.initial.rebalance.delay.ms" => Kind::Int(0, i32::MAX as i64),
        "group.min.session.timeout.ms" => Kind::Int(0, i32::MAX as i64),
        "group.max.session.timeout.ms" => Kind::Int(0, i32::MAX as i64),
        // A long, where Kafka has an int (at most ~24.8 days): state may be kept longer.
        "producer.id.expiration.ms" => Kind::Int(1, i64::MAX),
        _ => return None,
    })
}

/// Validated settings by name, defaults filled in.
#[derive(Debug, Clone)]
pub struct Settings {
    values: BTreeMap<String, String>,
    /// Where each non-default value came from (static file/override or dynamic alter).
    sources: BTreeMap<String, ConfigSource>,
}

/// Checks one setting's value; returns it normalized (trimmed).
pub fn check_setting(key: &str, value: &str) -> Result<String, ConfigError> {
    let kind = kind(key).ok_or_else(|| ConfigError::Unknown(key.to_string()))?;
    let value = value.trim();
    let invalid = |reason: String| ConfigError::Invalid {
        key: key.to_string(),
        value: value.to_string(),
        reason,
    };
    match kind {
        Kind::Bool => {
            if value != "true" && value != "false" {
                return Err(invalid("expected true or false".into()));
            }
        }
        Kind::Topic => {
            let topic_name = crate::topic_config::topic_name_for_broker_key(key)
                .expect("every Topic-kind broker key has a topic config");
            if let Err(e) = crate::topic_config::validate(topic_name, value) {
                return Err(invalid(e.message.unwrap_or_default()));
            }
        }
        Kind::Int(min, max) => {
            let n: i64 = value
                .parse()
                .map_err(|_| invalid("expected an integer".into()))?;
            if n < min || n > max {
                return Err(invalid(format!("must be between {min} and {max}")));
            }
        }
        Kind::IntOrUnbounded(min, max) => {
            let n: i64 = value
                .parse()
                .map_err(|_| invalid("expected an integer".into()))?;
            if n != -1 && (n < min || n > max) {
                return Err(invalid(format!(
                    "must be -1 (no limit) or between {min} and {max}"
                )));
            }
        }
    }
    Ok(value.to_string())
}

/// Broker settings that can change at run time (IncrementalAlterConfigs on a BROKER resource):
/// the log-level defaults of topic configs, as Kafka's dynamic log configs, and the replication
/// throttle rates.
pub fn is_dynamic(key: &str) -> bool {
    crate::topic_config::topic_name_for_broker_key(key).is_some()
        || matches!(
            key,
            "leader.replication.throttled.rate" | "follower.replication.throttled.rate"
        )
}

impl Settings {
    /// Builds the settings from an optional TOML document and `key=value` overrides.
    pub fn load(toml_text: Option<&str>, overrides: &[String]) -> Result<Settings, ConfigError> {
        let mut values: BTreeMap<String, String> = SETTINGS
            .iter()
            .map(|(k, d, _)| (k.to_string(), d.to_string()))
            .collect();
        let mut sources = BTreeMap::new();
        let mut set = |key: String, value: String| -> Result<(), ConfigError> {
            let value = check_setting(&key, &value)?;
            values.insert(key.clone(), value);
            sources.insert(key, ConfigSource::StaticBroker);
            Ok(())
        };
        if let Some(text) = toml_text {
            let table: toml::Table = text
                .parse()
                .map_err(|e: toml::de::Error| ConfigError::File(e.message().to_string()))?;
            let mut flat = Vec::new();
            flatten("", &toml::Value::Table(table), &mut flat)?;
            for (k, v) in flat {
                set(k, v)?;
            }
        }
        for o in overrides {
            let (k, v) = o
                .split_once('=')
                .ok_or_else(|| ConfigError::BadOverride(o.clone()))?;
            set(k.trim().to_string(), v.to_string())?;
        }
        Ok(Settings { values, sources })
    }

    /// These settings with dynamic configs laid over them: the cluster-wide defaults, then this
    /// broker's own (Kafka's precedence). Values were validated when they were altered.
    pub fn with_dynamic(
        &self,
        cluster_default: Option<&BTreeMap<String, String>>,
        own: Option<&BTreeMap<String, String>>,
    ) -> Settings {
        let mut out = self.clone();
        for (layer, source) in [
            (cluster_default, ConfigSource::DynamicDefaultBroker),
            (own, ConfigSource::DynamicBroker),
        ] {
            for (k, v) in layer.into_iter().flatten() {
                if out.values.contains_key(k) {
                    out.values.insert(k.clone(), v.clone());
                    out.sources.insert(k.clone(), source);
                }
            }
        }
        out
    }

    /// Where a setting's value comes from; `Default` when nobody set it.
    pub fn source(&self, key: &str) -> ConfigSource {
        self.sources
            .get(key)
            .copied()
            .unwrap_or(ConfigSource::Default)
    }

    /// A setting's value ("" for unset optional ones).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(String::as_str)
    }

    /// Whether the operator set `key` (file, override or dynamically) rather than leaving the
    /// default.
    pub fn is_explicit(&self, key: &str) -> bool {
        self.sources.contains_key(key)
    }

    /// Every setting with its value, for DescribeConfigs of the broker.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.values.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

/// TOML allows both `"num.partitions" = 3` and the dotted-key form `num.partitions = 3` (a nested
/// table); both flatten to the Kafka name.
fn flatten(
    prefix: &str,
    value: &toml::Value,
    out: &mut Vec<(String, String)>,
) -> Result<(), ConfigError> {
    match value {
        toml::Value::Table(t) => {
            for (k, v) in t {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out)?;
            }
        }
        toml::Value::String(s) => out.push((prefix.to_string(), s.clone())),
        toml::Value::Integer(i) => out.push((prefix.to_string(), i.to_string())),
        toml::Value::Boolean(b) => out.push((prefix.to_string(), b.to_string())),
        other => {
            return Err(ConfigError::File(format!(
                "'{prefix}': unsupported value {other:?}"
            )))
        }
    }
    Ok(())
}

/// Group coordinator settings.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupSettings {
    /// `offsets.topic.num.partitions`.
    pub offsets_topic_partitions: i32,
    /// `offsets.topic.segment.bytes`.
    pub offsets_topic_segment_bytes: u64,
    /// `offsets.topic.replication.factor`.
    pub offsets_topic_replication_factor: i16,
    /// `offsets.commit.timeout.ms`.
    pub offsets_commit_timeout_ms: u64,
    /// `offsets.retention.minutes`, in ms.
    pub offsets_retention_ms: i64,
    /// `offsets.retention.check.interval.ms`.
    pub offsets_retention_check_interval_ms: u64,
    /// `group.initial.rebalance.delay.ms`.
    pub initial_rebalance_delay_ms: i64,
    /// `group.min.session.timeout.ms`.
    pub min_session_timeout_ms: i64,
    /// `group.max.session.timeout.ms`.
    pub max_session_timeout_ms: i64,
}

/// Bounds on what clients can make the network layer hold (see "Resource bounds" in
/// docs/ARCHITECTURE.md).
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkSettings {
    /// `queued.max.request.bytes`; `None`: unbounded.
    pub queued_max_request_bytes: Option<usize>,
    /// `connection.max.inflight.bytes`.
    pub connection_max_inflight_bytes: usize,
    /// `max.connections`.
    pub max_connections: usize,
    /// `max.connections.per.ip`.
    pub max_connections_per_ip: usize,
    /// `connections.max.idle.ms`; `None`: never.
    pub connections_max_idle: Option<Duration>,
    /// `socket.request.read.timeout.ms`.
    pub request_read_timeout: Duration,
}

/// Every broker setting, typed: what the broker runs on. Built only by
/// [`BrokerSettings::from_settings`].
#[derive(Debug, Clone, PartialEq)]
pub struct BrokerSettings {
    /// `num.partitions`.
    pub num_partitions: i32,
    /// `default.replication.factor`.
    pub default_replication_factor: i16,
    /// `auto.create.topics.enable`.
    pub auto_create_topics: bool,
    /// `socket.request.max.bytes`.
    pub socket_request_max_bytes: usize,
    /// `fetch.max.bytes`.
    pub fetch_max_bytes: usize,
    /// Connection and request-memory bounds.
    pub network: NetworkSettings,
    /// The log-level defaults of topic configs (`log.*`, `message.max.bytes`,
    /// `compression.type`, `min.insync.replicas`): the settings of a topic without overrides.
    /// The only settings that can change at run time: the current ones are the replica
    /// manager's ([`crate::replica_manager::ReplicaManager::broker_settings`]).
    pub log: TopicSettings,
    /// `log.retention.check.interval.ms`.
    pub log_retention_check_interval: Duration,
    /// `log.cleaner.backoff.ms`.
    pub log_cleaner_backoff: Duration,
    /// `offsets.*` and `group.*`.
    pub groups: GroupSettings,
    /// `producer.id.expiration.ms`.
    pub producer_id_expiration_ms: i64,
    /// `broker.heartbeat.interval.ms`.
    pub heartbeat_interval: Duration,
    /// `broker.session.timeout.ms`.
    pub session_timeout: Duration,
    /// `metadata.log.max.entries.between.snapshots`.
    pub metadata_snapshot_entries: u64,
    /// `replica.lag.time.max.ms`.
    pub replica_lag_time_max_ms: i64,
    /// `auto.leader.rebalance.enable`, `leader.imbalance.check.interval.seconds`,
    /// `leader.imbalance.per.broker.percentage`.
    pub leader_rebalance: Option<(Duration, u32)>,
    /// `replica.fetch.*`: how followers fetch from their leaders.
    pub replica_fetch: ReplicaFetchSettings,
    /// `leader.replication.throttled.rate` and `follower.replication.throttled.rate` in
    /// bytes/s; `None` (Kafka's `Long.MAX_VALUE`): no limit. Dynamic.
    pub replication_throttle: (Option<u64>, Option<u64>),
}

/// How a follower fetches from its leader (Kafka's `replica.fetch.*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaFetchSettings {
    /// `replica.fetch.max.bytes`: per partition.
    pub max_bytes: i32,
    /// `replica.fetch.response.max.bytes`: per request.
    pub response_max_bytes: i32,
    /// `replica.fetch.wait.max.ms`.
    pub wait_max: Duration,
    /// `replica.fetch.min.bytes`.
    pub min_bytes: i32,
    /// `replica.fetch.backoff.ms`.
    pub backoff: Duration,
}

impl BrokerSettings {
    /// The typed view of `settings` (static, or with dynamic configs laid over them).
    pub fn from_settings(settings: &Settings) -> BrokerSettings {
        Self::read(&mut Reader::new(settings))
    }

    /// Reads every row of [`SETTINGS`] (`every_setting_is_carried` checks that none is left
    /// out). A `-1` meaning "no limit" becomes `None` here, units become `Duration` or a name
    /// ending in `_ms`, and the alternative-unit forms Kafka has for one setting
    /// (`log.retention.{ms,minutes,hours}`, `log.roll.{ms,hours}`) become one field, the
    /// most precise form that is set winning as it does for a topic's synonyms.
    fn read(r: &mut Reader) -> BrokerSettings {
        // Accepted only at its default (Sluice removes a deleted segment's files at once).
        r.without_effect("log.segment.delete.delay.ms");
        let (compact, delete) = crate::topic_config::cleanup_policy(r.str("log.cleanup.policy"));
        let log = TopicSettings {
            compact,
            delete,
            retention_ms: match (
                r.opt_int("log.retention.ms"),
                r.opt_int("log.retention.minutes"),
                r.int("log.retention.hours"),
            ) {
                (Some(ms), _, _) => ms,
                (None, Some(minutes), _) => scale(minutes, 60_000),
                (None, None, hours) => scale(hours, 3_600_000),
            },
            retention_bytes: r.int("log.retention.bytes"),
            delete_retention_ms: r.int("log.cleaner.delete.retention.ms"),
            min_compaction_lag_ms: r.int("log.cleaner.min.compaction.lag.ms"),
            max_compaction_lag_ms: r.int("log.cleaner.max.compaction.lag.ms"),
            min_cleanable_dirty_ratio: r
                .str("log.cleaner.min.cleanable.ratio")
                .parse()
                .unwrap_or(0.5),
            max_message_bytes: r.int("message.max.bytes").max(0) as usize,
            log_append_time: r.str("log.message.timestamp.type") == "LogAppendTime",
            timestamp_before_max_ms: r.int("log.message.timestamp.before.max.ms"),
            timestamp_after_max_ms: r.int("log.message.timestamp.after.max.ms"),
            segment_bytes: r.int("log.segment.bytes").max(14) as u64,
            segment_ms: match r.opt_int("log.roll.ms") {
                Some(ms) => ms,
                None => scale(r.int("log.roll.hours"), 3_600_000),
            }
            .max(1) as u64,
            // As a topic's segment.index.bytes: room for at least one entry.
            segment_index_bytes: r.int("log.index.size.max.bytes").clamp(8, i32::MAX as i64) as u32,
            index_interval_bytes: r.int("log.index.interval.bytes").clamp(0, i32::MAX as i64)
                as u32,
            min_insync_replicas: r.int("min.insync.replicas").clamp(1, i32::MAX as i64) as i32,
            compression: crate::topic_config::compression(r.str("compression.type")),
        };
        BrokerSettings {
            num_partitions: r.int("num.partitions") as i32,
            default_replication_factor: r.int("default.replication.factor") as i16,
            auto_create_topics: r.bool("auto.create.topics.enable"),
            socket_request_max_bytes: r.int("socket.request.max.bytes") as usize,
            fetch_max_bytes: r.int("fetch.max.bytes") as usize,
            network: NetworkSettings {
                queued_max_request_bytes: r
                    .int_or_unbounded("queued.max.request.bytes")
                    .map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
                connection_max_inflight_bytes: r.int("connection.max.inflight.bytes") as usize,
                max_connections: r.int("max.connections") as usize,
                max_connections_per_ip: r.int("max.connections.per.ip") as usize,
                connections_max_idle: r
                    .int_or_unbounded("connections.max.idle.ms")
                    .map(|ms| Duration::from_millis(ms as u64)),
                request_read_timeout: r.millis("socket.request.read.timeout.ms"),
            },
            log,
            log_retention_check_interval: r.millis("log.retention.check.interval.ms"),
            log_cleaner_backoff: r.millis("log.cleaner.backoff.ms"),
            groups: GroupSettings {
                offsets_topic_partitions: r.int("offsets.topic.num.partitions") as i32,
                offsets_topic_segment_bytes: r.int("offsets.topic.segment.bytes") as u64,
                offsets_topic_replication_factor: r.int("offsets.topic.replication.factor") as i16,
                offsets_commit_timeout_ms: r.int("offsets.commit.timeout.ms") as u64,
                offsets_retention_ms: r.int("offsets.retention.minutes") * 60_000,
                offsets_retention_check_interval_ms: r.int("offsets.retention.check.interval.ms")
                    as u64,
                initial_rebalance_delay_ms: r.int("group.initial.rebalance.delay.ms"),
                min_session_timeout_ms: r.int("group.min.session.timeout.ms"),
                max_session_timeout_ms: r.int("group.max.session.timeout.ms"),
            },
            producer_id_expiration_ms: r.int("producer.id.expiration.ms"),
            heartbeat_interval: r.millis("broker.heartbeat.interval.ms"),
            session_timeout: r.millis("broker.session.timeout.ms"),
            metadata_snapshot_entries: r.int("metadata.log.max.entries.between.snapshots") as u64,
            replica_lag_time_max_ms: r.int("replica.lag.time.max.ms"),
            leader_rebalance: {
                let enabled = r.bool("auto.leader.rebalance.enable");
                let every =
                    Duration::from_secs(r.int("leader.imbalance.check.interval.seconds") as u64);
                let percent = r.int("leader.imbalance.per.broker.percentage") as u32;
                enabled.then_some((every, percent))
            },
            replica_fetch: ReplicaFetchSettings {
                max_bytes: r.int("replica.fetch.max.bytes").clamp(1, i32::MAX as i64) as i32,
                response_max_bytes: r
                    .int("replica.fetch.response.max.bytes")
                    .clamp(1, i32::MAX as i64) as i32,
                wait_max: r.millis("replica.fetch.wait.max.ms"),
                min_bytes: r.int("replica.fetch.min.bytes").clamp(1, i32::MAX as i64) as i32,
                backoff: r.millis("replica.fetch.backoff.ms"),
            },
            replication_throttle: (
                throttle_rate(r.int("leader.replication.throttled.rate")),
                throttle_rate(r.int("follower.replication.throttled.rate")),
            ),
        }
    }
}

/// A throttle rate setting: `i64::MAX` (the default) is no limit.
fn throttle_rate(n: i64) -> Option<u64> {
    (n != i64::MAX).then(|| n.max(1) as u64)
}

/// `n` in a unit `unit` ms long, in ms; -1 ("forever") stays -1.
fn scale(n: i64, unit: i64) -> i64 {
    if n >= 0 {
        n.saturating_mul(unit)
    } else {
        n
    }
}

/// Reads [`Settings`] by name for [`BrokerSettings::read`], noting every key it reads.
///
/// Static values were validated on load and dynamic ones when they were altered. A dynamic
/// value read back from the metadata log that no longer parses (written by another release)
/// reads as a topic override would: `i64::MAX`.
struct Reader<'a> {
    settings: &'a Settings,
    read: BTreeSet<&'static str>,
}

impl<'a> Reader<'a> {
    fn new(settings: &'a Settings) -> Reader<'a> {
        Reader {
            settings,
            read: BTreeSet::new(),
        }
    }

    /// The value of `key` ("" for an unset optional one). Panics for a key not in [`SETTINGS`]:
    /// every test that builds a broker would fail.
    fn str(&mut self, key: &'static str) -> &'a str {
        self.read.insert(key);
        let settings: &'a Settings = self.settings;
        &settings.values[key]
    }

    fn int(&mut self, key: &'static str) -> i64 {
        self.str(key).parse().unwrap_or(i64::MAX)
    }

    /// A setting whose default is unset (""): `None` while it is.
    fn opt_int(&mut self, key: &'static str) -> Option<i64> {
        let v = self.str(key);
        (!v.is_empty()).then(|| v.parse().unwrap_or(i64::MAX))
    }

    /// An `IntOrUnbounded` setting: `None` for -1.
    fn int_or_unbounded(&mut self, key: &'static str) -> Option<i64> {
        Some(self.int(key)).filter(|n| *n != -1)
    }

    fn bool(&mut self, key: &'static str) -> bool {
        self.str(key) == "true"
    }

    /// A setting in ms (never negative: validated).
    fn millis(&mut self, key: &'static str) -> Duration {
        Duration::from_millis(self.int(key).max(0) as u64)
    }

    /// A setting accepted but carried nowhere (its documentation says why).
    fn without_effect(&mut self, key: &'static str) {
        self.str(key);
    }
}

/// The runtime configuration of one broker.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    pub node_id: i32,
    /// Where the Kafka listener binds.
    pub listen: SocketAddr,
    /// What Metadata tells clients to connect to.
    pub advertised_host: String,
    pub advertised_port: u16,
    pub data_dir: PathBuf,
    pub durability: Durability,
    /// The broker settings as started (file and overrides), typed. The log defaults in it can
    /// change at run time (dynamic broker configs); everything else is fixed.
    pub settings: BrokerSettings,
    /// The same settings by Kafka name with their sources: the base dynamic broker configs are
    /// laid over (`image::effective_settings`) and DescribeConfigs reports.
    pub raw_settings: Settings,
    /// This node's place in the cluster.
    pub cluster: ClusterConfig,
    /// A planted fault for the chaos harness only (see `PartitionEnv`): false.
    pub unsafe_ack_before_replication: bool,
}

/// Where this node sits in the cluster: `--controller-listen`, `--voters`, `--roles`, `--rack`.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterConfig {
    /// Where the controller listener binds (Raft, registration, heartbeats, forwarding).
    /// `None`: a single node with no listener (a quorum of one needs no network).
    pub controller_listen: Option<SocketAddr>,
    /// The controller quorum: node id -> controller address.
    pub voters: BTreeMap<i32, String>,
    /// Whether this node votes (combined mode); false for `--roles broker`.
    pub voter: bool,
    /// `--rack`, for rack-aware placement.
    pub rack: Option<String>,
    /// `--peer-route` (tests): dial overrides for other nodes' addresses.
    pub peer_routes: crate::peer_routes::PeerRoutes,
}

impl ClusterConfig {
    /// Checks the flags against each other and fills in what they imply: with no `--voters` the
    /// node is a quorum of one; a voter listens where `--voters` says it does.
    pub fn new(
        node_id: i32,
        controller_listen: Option<SocketAddr>,
        voters: Option<&str>,
        roles: Option<&str>,
        rack: Option<String>,
    ) -> Result<ClusterConfig, ConfigError> {
        let invalid = |key: &str, value: &str, reason: String| ConfigError::Invalid {
            key: key.into(),
            value: value.into(),
            reason,
        };
        let voter = match roles.map(|r| {
            let mut parts: Vec<&str> = r.split(',').map(str::trim).collect();
            parts.sort_unstable();
            parts.dedup();
            parts
        }) {
            None => true,
            Some(p) if p == ["broker"] => false,
            Some(p) if p == ["broker", "controller"] => true,
            Some(_) => {
                return Err(invalid(
                    "roles",
                    roles.unwrap_or_default(),
                    "expected `broker` or `broker,controller` (controller-only nodes are not \
                     supported yet)"
                        .into(),
                ))
            }
        };
        let mut parsed = BTreeMap::new();
        if let Some(v) = voters {
            for entry in v.split(',').map(str::trim).filter(|e| !e.is_empty()) {
                let bad = |why: &str| invalid("voters", v, format!("`{entry}`: {why}"));
                let (id, addr) = entry
                    .split_once('@')
                    .ok_or_else(|| bad("expected ID@HOST:PORT"))?;
                let id: i32 = id.parse().map_err(|_| bad("the id is not a number"))?;
                if id < 0 {
                    return Err(bad("ids are >= 0"));
                }
                parse_host_port(addr).ok_or_else(|| bad("expected ID@HOST:PORT"))?;
                if parsed.insert(id, addr.to_string()).is_some() {
                    return Err(bad("the id appears twice"));
                }
            }
            if parsed.is_empty() {
                return Err(invalid("voters", v, "names no voter".into()));
            }
        }
        let listen_str = controller_listen.map(|a| a.to_string());
        if parsed.is_empty() {
            if !voter {
                return Err(invalid(
                    "roles",
                    "broker",
                    "a broker-only node needs --voters to find the controller quorum".into(),
                ));
            }
            parsed.insert(node_id, listen_str.clone().unwrap_or_default());
            return Ok(ClusterConfig {
                controller_listen,
                voters: parsed,
                voter,
                rack,
                peer_routes: Default::default(),
            });
        }
        let controller_listen = match (voter, parsed.get(&node_id)) {
            (true, None) => {
                return Err(invalid(
                    "voters",
                    voters.unwrap_or_default(),
                    format!(
                        "node {node_id} is not one of the voters; add {node_id}@HOST:PORT (its \
                         --controller-listen address) or start it with --roles broker"
                    ),
                ))
            }
            (true, Some(addr)) => {
                let bound: SocketAddr = addr.parse().map_err(|_| {
                    invalid(
                        "voters",
                        voters.unwrap_or_default(),
                        format!(
                            "node {node_id}'s controller address {addr} must be IP:PORT to bind it"
                        ),
                    )
                })?;
                if let Some(listen) = controller_listen {
                    if listen != bound {
                        return Err(invalid(
                            "controller-listen",
                            &listen.to_string(),
                            format!(
                                "--voters says node {node_id}'s controller listener is {addr}; \
                                 they must agree"
                            ),
                        ));
                    }
                }
                Some(bound)
            }
            (false, Some(_)) => {
                return Err(invalid(
                    "roles",
                    "broker",
                    format!("node {node_id} is in --voters, so it must be a controller too"),
                ))
            }
            (false, None) => Some(controller_listen.ok_or_else(|| {
                invalid(
                    "controller-listen",
                    "",
                    "a broker-only node needs its own --controller-listen address (the active \
                     controller sends it the metadata log there)"
                        .into(),
                )
            })?),
        };
        Ok(ClusterConfig {
            controller_listen,
            voters: parsed,
            voter,
            rack,
            peer_routes: Default::default(),
        })
    }

    /// One node, its own quorum, no controller listener.
    pub fn single(node_id: i32) -> ClusterConfig {
        ClusterConfig::new(node_id, None, None, None, None).expect("a single node is valid")
    }

    /// This node's controller address as the quorum knows it ("" for a lone node).
    pub fn own_addr(&self, node_id: i32) -> String {
        match self.voters.get(&node_id) {
            Some(a) => a.clone(),
            None => self
                .controller_listen
                .map(|a| a.to_string())
                .unwrap_or_default(),
        }
    }
}

impl BrokerConfig {
    pub fn new(
        node_id: i32,
        listen: SocketAddr,
        advertised: Option<&str>,
        data_dir: PathBuf,
        durability: Durability,
        settings: &Settings,
    ) -> Result<BrokerConfig, ConfigError> {
        let (advertised_host, advertised_port) = match advertised {
            Some(a) => parse_host_port(a).ok_or_else(|| ConfigError::Invalid {
                key: "advertised-listener".into(),
                value: a.into(),
                reason: "expected HOST:PORT".into(),
            })?,
            None => (listen.ip().to_string(), listen.port()),
        };
        if node_id < 0 {
            return Err(ConfigError::Invalid {
                key: "node-id".into(),
                value: node_id.to_string(),
                reason: "must be >= 0".into(),
            });
        }
        Ok(BrokerConfig {
            node_id,
            listen,
            advertised_host,
            advertised_port,
            data_dir,
            durability,
            settings: BrokerSettings::from_settings(settings),
            raw_settings: settings.clone(),
            cluster: ClusterConfig::single(node_id),
            unsafe_ack_before_replication: false,
        })
    }
}

/// Parses `host:port` (IPv6 hosts in brackets).
pub fn parse_host_port(s: &str) -> Option<(String, u16)> {
    let (host, port) = s.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return None;
    }
    Some((host.to_string(), port.parse().ok()?))
}

/// The effective value of topic config `d` given the topic's overrides and the broker settings
/// by name, and where it came from (what DescribeConfigs reports).
pub fn effective_topic_config(
    d: &TopicConfigDef,
    overrides: &sluice_meta::TopicConfigs,
    broker: &Settings,
) -> (String, ConfigSource) {
    if let Some(v) = overrides.get(d.name) {
        return (v.clone(), ConfigSource::DynamicTopic);
    }
    for s in d.synonyms {
        if broker.is_explicit(s.broker_key) {
            let v = broker.get(s.broker_key).unwrap_or_default();
            let v = match (s.scale, v.parse::<i64>()) {
                (1, _) => v.to_string(),
                (scale, Ok(n)) if n >= 0 => n.saturating_mul(scale).to_string(),
                (_, _) => v.to_string(),
            };
            return (v, broker.source(s.broker_key));
        }
    }
    (d.default.to_string(), ConfigSource::Default)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topic_config::{def, validate, TOPIC_CONFIGS};

    #[test]
    fn layering_and_validation() {
        let s = Settings::load(
            Some("num.partitions = 3\n\"log.segment.bytes\" = 4096\n[auto.create.topics]\nenable = false\n"),
            &["num.partitions=5".into()],
        )
        .unwrap();
        let c = BrokerConfig::new(
            1,
            "127.0.0.1:9092".parse().unwrap(),
            None,
            "d".into(),
            Durability::Fsync,
            &s,
        )
        .unwrap();
        assert_eq!(c.settings.num_partitions, 5);
        assert!(!c.settings.auto_create_topics);
        assert_eq!(c.settings.log.segment_bytes, 4096);
        assert_eq!(c.settings.log.segment_ms, 168 * 3_600_000);
        assert_eq!(
            (c.advertised_host.as_str(), c.advertised_port),
            ("127.0.0.1", 9092)
        );

        assert_eq!(
            Settings::load(None, &["no.such.thing=1".into()]).unwrap_err(),
            ConfigError::Unknown("no.such.thing".into())
        );
        assert!(matches!(
            Settings::load(None, &["num.partitions=zero".into()]),
            Err(ConfigError::Invalid { .. })
        ));
        assert!(matches!(
            Settings::load(None, &["num.partitions=0".into()]),
            Err(ConfigError::Invalid { .. })
        ));
        assert!(matches!(
            Settings::load(None, &["auto.create.topics.enable=yes".into()]),
            Err(ConfigError::Invalid { .. })
        ));
        assert!(matches!(
            Settings::load(None, &["oops".into()]),
            Err(ConfigError::BadOverride(_))
        ));
        assert!(matches!(
            Settings::load(Some("= broken"), &[]),
            Err(ConfigError::File(_))
        ));
    }

    #[test]
    fn network_bounds() {
        let config = |overrides: &[&str]| {
            let o: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
            let s = Settings::load(None, &o)?;
            BrokerConfig::new(
                1,
                "127.0.0.1:9092".parse().unwrap(),
                None,
                "d".into(),
                Durability::Fsync,
                &s,
            )
        };
        let n = config(&[]).unwrap().settings.network;
        assert_eq!(n.queued_max_request_bytes, Some(512 << 20));
        assert_eq!(n.connection_max_inflight_bytes, 16 << 20);
        assert_eq!(n.max_connections, 10_000);
        assert_eq!(n.max_connections_per_ip, i32::MAX as usize);
        assert_eq!(n.connections_max_idle, Some(Duration::from_secs(600)));
        assert_eq!(n.request_read_timeout, Duration::from_secs(30));

        let n = config(&[
            "queued.max.request.bytes=-1",
            "connections.max.idle.ms=-1",
            "max.connections=50",
            "max.connections.per.ip=5",
            "socket.request.read.timeout.ms=1000",
            "connection.max.inflight.bytes=4096",
        ])
        .unwrap()
        .settings
        .network;
        assert_eq!(n.queued_max_request_bytes, None);
        assert_eq!(n.connections_max_idle, None);
        assert_eq!((n.max_connections, n.max_connections_per_ip), (50, 5));
        assert_eq!(n.request_read_timeout, Duration::from_secs(1));
        assert_eq!(n.connection_max_inflight_bytes, 4096);

        for bad in [
            "queued.max.request.bytes=0",
            "queued.max.request.bytes=-2",
            "queued.max.request.bytes=100",
            "connections.max.idle.ms=0",
            "max.connections=0",
            "max.connections.per.ip=-1",
            "socket.request.read.timeout.ms=0",
            "connection.max.inflight.bytes=10",
            "connection.max.inflight.bytes=4294967296",
        ] {
            assert!(
                matches!(config(&[bad]), Err(ConfigError::Invalid { .. })),
                "{bad} must be refused"
            );
        }
        for key in [
            "queued.max.request.bytes",
            "connection.max.inflight.bytes",
            "max.connections",
            "max.connections.per.ip",
            "connections.max.idle.ms",
            "socket.request.read.timeout.ms",
        ] {
            assert!(setting_doc(key).is_some(), "{key} is documented");
        }
    }

    #[test]
    fn settings_sluice_cannot_honour_accept_only_their_default() {
        let load = |kv: &str| Settings::load(None, &[kv.to_string()]);
        assert!(load("log.segment.delete.delay.ms=60000").is_ok());
        match load("log.segment.delete.delay.ms=0") {
            Err(ConfigError::Invalid { reason, .. }) => {
                assert!(reason.contains("at once"), "{reason}")
            }
            other => panic!("must be refused: {other:?}"),
        }
        assert!(setting_doc("min.insync.replicas")
            .unwrap()
            .contains("capped at the partition's replica"));
    }

    #[test]
    fn every_setting_is_carried() {
        // The guard against a forgotten setting: a row added to SETTINGS that the typed
        // settings do not read fails here.
        let settings = Settings::load(None, &[]).unwrap();
        let mut r = Reader::new(&settings);
        BrokerSettings::read(&mut r);
        let all: BTreeSet<&str> = SETTINGS.iter().map(|(k, _, _)| *k).collect();
        let missing: Vec<&&str> = all.difference(&r.read).collect();
        assert!(
            missing.is_empty(),
            "settings BrokerSettings::read does not read: {missing:?}; give each a typed field \
             (or Reader::without_effect if Sluice only accepts its default)"
        );
        assert_eq!(r.read, all);
    }

    #[test]
    fn every_setting_is_validated_and_its_default_is_valid() {
        for (key, default, doc) in SETTINGS {
            assert!(kind(key).is_some(), "{key} has no kind");
            assert!(!doc.is_empty(), "{key} is documented");
            if !default.is_empty() {
                assert_eq!(
                    check_setting(key, default).as_deref(),
                    Ok(*default),
                    "{key}"
                );
            }
        }
    }

    #[test]
    fn typed_values_and_units() {
        let typed = |o: &[&str]| {
            let o: Vec<String> = o.iter().map(|s| s.to_string()).collect();
            BrokerSettings::from_settings(&Settings::load(None, &o).unwrap())
        };
        let d = typed(&[]);
        assert_eq!(d.log.retention_ms, 7 * 24 * 3_600_000);
        assert_eq!(d.log.retention_bytes, -1);
        assert_eq!(d.log.segment_ms, 7 * 24 * 3_600_000);
        assert!(d.log.delete && !d.log.compact && !d.log.log_append_time);
        assert_eq!(d.log.compression, None);
        assert_eq!(d.log_retention_check_interval, Duration::from_secs(300));
        assert_eq!(d.log_cleaner_backoff, Duration::from_secs(15));
        assert_eq!(d.producer_id_expiration_ms, 86_400_000);
        assert_eq!(d.groups.offsets_retention_ms, 10_080 * 60_000);
        assert_eq!(d.fetch_max_bytes, 57_671_680);

        // The most precise retention and roll forms that are set win; -1 stays "forever".
        assert_eq!(
            typed(&["log.retention.hours=1"]).log.retention_ms,
            3_600_000
        );
        let r = typed(&["log.retention.hours=1", "log.retention.minutes=2"]);
        assert_eq!(r.log.retention_ms, 120_000);
        let r = typed(&["log.retention.minutes=2", "log.retention.ms=5"]);
        assert_eq!(r.log.retention_ms, 5);
        assert_eq!(typed(&["log.retention.hours=-1"]).log.retention_ms, -1);
        assert_eq!(typed(&["log.retention.minutes=-1"]).log.retention_ms, -1);
        assert_eq!(typed(&["log.roll.hours=2"]).log.segment_ms, 7_200_000);
        let r = typed(&["log.roll.hours=2", "log.roll.ms=10"]);
        assert_eq!(r.log.segment_ms, 10);
        let r = typed(&["log.cleanup.policy=compact,delete", "compression.type=zstd"]);
        assert!(r.log.compact && r.log.delete);
        assert_eq!(
            r.log.compression,
            Some(sluice_protocol::batch::Compression::Zstd)
        );
        let r = typed(&[
            "log.retention.check.interval.ms=10",
            "log.cleaner.backoff.ms=20",
            "producer.id.expiration.ms=30",
        ]);
        assert_eq!(r.log_retention_check_interval, Duration::from_millis(10));
        assert_eq!(r.log_cleaner_backoff, Duration::from_millis(20));
        assert_eq!(r.producer_id_expiration_ms, 30);

        // Dynamic configs reach the typed view when it is rebuilt.
        let dynamic = BTreeMap::from([("log.retention.ms".to_string(), "7".to_string())]);
        let own = BTreeMap::from([("log.roll.ms".to_string(), "9".to_string())]);
        let raw = Settings::load(None, &[]).unwrap();
        let r = BrokerSettings::from_settings(&raw.with_dynamic(Some(&dynamic), Some(&own)));
        assert_eq!((r.log.retention_ms, r.log.segment_ms), (7, 9));
    }

    #[test]
    fn typed_log_defaults_agree_with_what_describe_configs_reports() {
        // DescribeConfigs computes a topic's values from the raw layer (by synonym name);
        // partitions run on the typed one. For a topic without overrides they must agree,
        // whatever broker settings are set.
        let cases: &[&[&str]] = &[
            &[],
            &["log.retention.hours=1"],
            &["log.retention.hours=-1"],
            &["log.retention.minutes=3", "log.retention.hours=1"],
            &["log.retention.minutes=-1"],
            &["log.retention.ms=-1", "log.retention.minutes=3"],
            &["log.retention.ms=9"],
            &["log.roll.hours=1"],
            &["log.roll.ms=1", "log.roll.hours=5"],
            &["log.cleanup.policy=compact"],
            &["log.cleanup.policy=compact,delete"],
            &["compression.type=lz4"],
            &["compression.type=uncompressed"],
            &["log.cleaner.delete.retention.ms=0"],
            &["log.cleaner.min.compaction.lag.ms=5"],
            &["log.cleaner.max.compaction.lag.ms=6"],
            &["log.cleaner.min.cleanable.ratio=0.9"],
            &["message.max.bytes=0"],
            &["message.max.bytes=100"],
            &["log.message.timestamp.type=LogAppendTime"],
            &["log.message.timestamp.before.max.ms=0"],
            &["log.message.timestamp.after.max.ms=1"],
            &["log.segment.bytes=14"],
            &["log.index.size.max.bytes=4"],
            &["log.index.size.max.bytes=100"],
            &["log.index.interval.bytes=0"],
            &["min.insync.replicas=2"],
            &["log.retention.bytes=1000"],
        ];
        let none = sluice_meta::TopicConfigs::new();
        for case in cases {
            let o: Vec<String> = case.iter().map(|s| s.to_string()).collect();
            let raw = Settings::load(None, &o).unwrap();
            let typed = BrokerSettings::from_settings(&raw).log;
            let described: sluice_meta::TopicConfigs = TOPIC_CONFIGS
                .iter()
                .map(|d| (d.name.to_string(), effective_topic_config(d, &none, &raw).0))
                .collect();
            let from_described = TopicSettings::resolve(&described, &typed_defaults());
            assert_eq!(typed, from_described, "{case:?}");
        }
    }

    /// The typed log defaults of a broker with every setting at its default.
    fn typed_defaults() -> TopicSettings {
        BrokerSettings::from_settings(&Settings::load(None, &[]).unwrap()).log
    }

    #[test]
    fn host_port() {
        assert_eq!(
            parse_host_port("example:19092"),
            Some(("example".into(), 19092))
        );
        assert_eq!(parse_host_port("[::1]:9092"), Some(("::1".into(), 9092)));
        assert_eq!(parse_host_port("nohost"), None);
        assert_eq!(parse_host_port(":1"), None);
    }

    #[test]
    fn precedence_topic_then_broker_then_default() {
        let broker = Settings::load(None, &["log.retention.hours=1".into()]).unwrap();
        let d = def("retention.ms").unwrap();
        let none = sluice_meta::TopicConfigs::new();
        assert_eq!(
            effective_topic_config(d, &none, &broker),
            ("3600000".to_string(), ConfigSource::StaticBroker)
        );
        let own = sluice_meta::TopicConfigs::from([("retention.ms".into(), "5".into())]);
        assert_eq!(
            effective_topic_config(d, &own, &broker),
            ("5".to_string(), ConfigSource::DynamicTopic)
        );
        let plain = Settings::load(None, &[]).unwrap();
        assert_eq!(
            effective_topic_config(d, &none, &plain),
            ("604800000".to_string(), ConfigSource::Default)
        );
        let defaults = BrokerSettings::from_settings(&plain).log;
        let s = TopicSettings::resolve(&own, &defaults);
        assert_eq!(s.retention_ms, 5);
        assert!(s.delete && !s.compact);
        assert_eq!(s.max_message_bytes, 1_048_588);
    }

    #[test]
    fn every_topic_config_is_applied() {
        // The guard against a topic config the typed settings forget: each one with an effect
        // must change them, each one without must not.
        let defaults = BrokerSettings::from_settings(&Settings::load(None, &[]).unwrap()).log;
        // A valid value other than the default; `None` for configs accepted without effect.
        let samples: &[(&str, Option<&str>)] = &[
            ("cleanup.policy", Some("compact")),
            ("compression.type", Some("gzip")),
            ("delete.retention.ms", Some("1")),
            ("file.delete.delay.ms", None),
            ("flush.messages", None),
            ("flush.ms", None),
            ("index.interval.bytes", Some("1")),
            ("max.compaction.lag.ms", Some("1")),
            ("max.message.bytes", Some("1")),
            ("message.timestamp.after.max.ms", Some("1")),
            ("message.timestamp.before.max.ms", Some("1")),
            ("message.timestamp.type", Some("LogAppendTime")),
            ("min.cleanable.dirty.ratio", Some("0.1")),
            ("min.compaction.lag.ms", Some("1")),
            ("min.insync.replicas", Some("3")),
            ("preallocate", None),
            ("retention.bytes", Some("1")),
            ("retention.ms", Some("1")),
            ("segment.bytes", Some("1000")),
            ("segment.index.bytes", Some("1000")),
            ("segment.jitter.ms", None),
            ("segment.ms", Some("1")),
            ("unclean.leader.election.enable", None),
        ];
        for d in TOPIC_CONFIGS {
            let Some((_, sample)) = samples.iter().find(|(n, _)| *n == d.name) else {
                panic!(
                    "{}: add a sample value here and apply it in TopicSettings::apply",
                    d.name
                );
            };
            let value = sample.unwrap_or(d.default);
            assert!(validate(d.name, value).is_ok(), "{}={value}", d.name);
            let one = sluice_meta::TopicConfigs::from([(d.name.to_string(), value.to_string())]);
            let s = TopicSettings::resolve(&one, &defaults);
            match sample {
                Some(_) => assert_ne!(s, defaults, "{}={value} is not applied", d.name),
                None => assert_eq!(s, defaults, "{}", d.name),
            }
        }
    }

    #[test]
    fn every_broker_synonym_that_sluice_knows_is_consistent() {
        // Synonyms Sluice's broker settings define must validate as their topic config.
        let broker = Settings::load(None, &[]).unwrap();
        for d in TOPIC_CONFIGS {
            for s in d.synonyms {
                if let Some(v) = broker.get(s.broker_key) {
                    if s.scale == 1 && !v.is_empty() {
                        assert!(validate(d.name, v).is_ok(), "{} = {v}", s.broker_key);
                    }
                }
            }
        }
    }
}
