//! Topic-level configs: the one table of Kafka's topic config names with their types, their
//! broker-level synonyms (which supply the default), Kafka's own defaults and documentation.
//!
//! A topic's effective value is, in order: its own override (DYNAMIC_TOPIC_CONFIG), the broker
//! setting that Kafka names as its synonym when the operator set it (STATIC_BROKER_CONFIG), else
//! the default (DEFAULT_CONFIG). [`effective`] computes that by name, with its source, for
//! DescribeConfigs. The produce path, the logs and the background tasks use the typed
//! [`TopicSettings`]: the broker's typed log defaults (`BrokerSettings::log`, where the
//! synonyms are already resolved) with the topic's overrides applied ([`TopicSettings::resolve`]).
//! A test checks that both give the same values.

use kafka_protocol::ResponseError;

use crate::error::ApiError;

/// Kafka's config value types (the `ConfigType` of DescribeConfigs v3+).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigType {
    Boolean = 1,
    String = 2,
    Int = 3,
    Long = 5,
    Double = 6,
    List = 7,
}

/// Where a value comes from (DescribeConfigs `config_source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigSource {
    DynamicTopic = 1,
    DynamicBroker = 2,
    DynamicDefaultBroker = 3,
    StaticBroker = 4,
    Default = 5,
}

/// A broker setting that supplies a topic config's default; `scale` converts its unit
/// (hours and minutes to ms).
pub struct Synonym {
    pub broker_key: &'static str,
    pub scale: i64,
}

pub struct TopicConfigDef {
    pub name: &'static str,
    pub ty: ConfigType,
    pub default: &'static str,
    /// Highest precedence first.
    pub synonyms: &'static [Synonym],
    pub doc: &'static str,
}

const fn syn(broker_key: &'static str) -> Synonym {
    Synonym {
        broker_key,
        scale: 1,
    }
}

const MAX: &str = "9223372036854775807";

pub const TOPIC_CONFIGS: &[TopicConfigDef] = &[
    TopicConfigDef { name: "cleanup.policy", ty: ConfigType::List, default: "delete", synonyms: &[syn("log.cleanup.policy")], doc: "\"delete\" removes old segments by retention time or size; \"compact\" keeps the latest record per key; both may be given." },
    TopicConfigDef { name: "compression.type", ty: ConfigType::String, default: "producer", synonyms: &[syn("compression.type")], doc: "Final compression of the topic: batches that arrive in another codec are recompressed by the broker (uncompressed, gzip, snappy, lz4, zstd); \"producer\" keeps the producer's codec." },
    TopicConfigDef { name: "delete.retention.ms", ty: ConfigType::Long, default: "86400000", synonyms: &[syn("log.cleaner.delete.retention.ms")], doc: "How long tombstones are kept on compacted topics." },
    TopicConfigDef { name: "file.delete.delay.ms", ty: ConfigType::Long, default: "60000", synonyms: &[syn("log.segment.delete.delay.ms")], doc: "Kafka's wait before a deleted segment's files are removed. Not supported: Sluice removes them at once (readers keep their open handles, so nothing needs the delay); only the default is accepted." },
    TopicConfigDef { name: "flush.messages", ty: ConfigType::Long, default: MAX, synonyms: &[syn("log.flush.interval.messages")], doc: "Kafka's fsync interval in messages; Sluice's --durability decides instead." },
    TopicConfigDef { name: "flush.ms", ty: ConfigType::Long, default: MAX, synonyms: &[syn("log.flush.interval.ms")], doc: "Kafka's fsync interval in ms; Sluice's --durability decides instead." },
    TopicConfigDef { name: "index.interval.bytes", ty: ConfigType::Int, default: "4096", synonyms: &[syn("log.index.interval.bytes")], doc: "Bytes of log between two offset index entries." },
    TopicConfigDef { name: "max.compaction.lag.ms", ty: ConfigType::Long, default: MAX, synonyms: &[syn("log.cleaner.max.compaction.lag.ms")], doc: "Longest time a record stays uncompacted." },
    TopicConfigDef { name: "max.message.bytes", ty: ConfigType::Int, default: "1048588", synonyms: &[syn("message.max.bytes")], doc: "Largest record batch size allowed." },
    TopicConfigDef { name: "message.timestamp.after.max.ms", ty: ConfigType::Long, default: MAX, synonyms: &[syn("log.message.timestamp.after.max.ms")], doc: "Largest allowed distance of a CreateTime timestamp into the future." },
    TopicConfigDef { name: "message.timestamp.before.max.ms", ty: ConfigType::Long, default: MAX, synonyms: &[syn("log.message.timestamp.before.max.ms")], doc: "Largest allowed distance of a CreateTime timestamp into the past." },
    TopicConfigDef { name: "message.timestamp.type", ty: ConfigType::String, default: "CreateTime", synonyms: &[syn("log.message.timestamp.type")], doc: "CreateTime keeps the producer's timestamps; LogAppendTime stamps batches with the broker's time." },
    TopicConfigDef { name: "min.cleanable.dirty.ratio", ty: ConfigType::Double, default: "0.5", synonyms: &[syn("log.cleaner.min.cleanable.ratio")], doc: "Dirty share of the log above which it is compacted." },
    TopicConfigDef { name: "min.compaction.lag.ms", ty: ConfigType::Long, default: "0", synonyms: &[syn("log.cleaner.min.compaction.lag.ms")], doc: "Shortest time a record stays uncompacted." },
    TopicConfigDef { name: "min.insync.replicas", ty: ConfigType::Int, default: "2", synonyms: &[syn("min.insync.replicas")], doc: "In-sync replicas (fsynced copies in fsync mode) an acks=all produce needs: below it such produces are refused (NOT_ENOUGH_REPLICAS) and the high watermark is held. Capped at the partition's replica count. Kafka's default is 1." },
    TopicConfigDef { name: "preallocate", ty: ConfigType::Boolean, default: "false", synonyms: &[syn("log.preallocate")], doc: "Preallocate segment files. Not supported: segment files are never preallocated; only false is accepted." },
    TopicConfigDef { name: "retention.bytes", ty: ConfigType::Long, default: "-1", synonyms: &[syn("log.retention.bytes")], doc: "Largest size of a partition before old segments are deleted; -1 for no limit." },
    TopicConfigDef { name: "retention.ms", ty: ConfigType::Long, default: "604800000", synonyms: &[syn("log.retention.ms"), Synonym { broker_key: "log.retention.minutes", scale: 60_000 }, Synonym { broker_key: "log.retention.hours", scale: 3_600_000 }], doc: "Longest time a segment is kept before it is deleted; -1 for no limit." },
    TopicConfigDef { name: "segment.bytes", ty: ConfigType::Int, default: "1073741824", synonyms: &[syn("log.segment.bytes")], doc: "Segment file size." },
    TopicConfigDef { name: "segment.index.bytes", ty: ConfigType::Int, default: "10485760", synonyms: &[syn("log.index.size.max.bytes")], doc: "Offset index size of a segment." },
    TopicConfigDef { name: "segment.jitter.ms", ty: ConfigType::Long, default: "0", synonyms: &[syn("log.roll.jitter.ms")], doc: "Random jitter subtracted from segment.ms. Not supported yet: segments roll at segment.ms exactly; only 0 is accepted." },
    TopicConfigDef { name: "segment.ms", ty: ConfigType::Long, default: "604800000", synonyms: &[syn("log.roll.ms"), Synonym { broker_key: "log.roll.hours", scale: 3_600_000 }], doc: "Roll the active segment after this time even if not full." },
    TopicConfigDef { name: "unclean.leader.election.enable", ty: ConfigType::Boolean, default: "false", synonyms: &[syn("unclean.leader.election.enable")], doc: "When a partition's leader is fenced and no in-sync replica is alive, make a live out-of-sync replica leader (records only the ISR had are lost) instead of leaving the partition offline." },
];

pub fn def(name: &str) -> Option<&'static TopicConfigDef> {
    TOPIC_CONFIGS.iter().find(|d| d.name == name)
}

/// The topic config a broker setting is the default for.
pub fn topic_name_for_broker_key(broker_key: &str) -> Option<&'static str> {
    TOPIC_CONFIGS
        .iter()
        .find(|d| d.synonyms.iter().any(|s| s.broker_key == broker_key))
        .map(|d| d.name)
}

/// Settings Sluice accepts only at the value that describes what it does, because any other
/// value would be accepted and silently ignored: `(name, the one accepted value, why)`.
const ONLY_DEFAULT: &[(&str, &str, &str)] = &[
    (
        "preallocate",
        "false",
        "Sluice does not preallocate segment files",
    ),
    (
        "segment.jitter.ms",
        "0",
        "Sluice does not jitter segment rolls yet; segments roll at segment.ms exactly",
    ),
    (
        "file.delete.delay.ms",
        "60000",
        "Sluice removes a deleted segment's files at once (readers keep their open handles)",
    ),
];

/// Checks a topic config value against its Kafka type and range, and refuses values Sluice
/// would accept without effect (see [`ONLY_DEFAULT`]).
pub fn validate(name: &str, value: &str) -> Result<(), ApiError> {
    validate_type(name, value)?;
    if let Some((_, accepted, why)) = ONLY_DEFAULT.iter().find(|(n, _, _)| *n == name) {
        let same = match value.trim().parse::<i64>() {
            Ok(v) => accepted.parse::<i64>() == Ok(v),
            Err(_) => value == *accepted,
        };
        if !same {
            return Err(ApiError::new(
                ResponseError::InvalidConfig,
                format!(
                    "Invalid value {value} for configuration {name}: not supported ({why}); \
                     only {accepted} is accepted"
                ),
            ));
        }
    }
    Ok(())
}

fn validate_type(name: &str, value: &str) -> Result<(), ApiError> {
    let Some(d) = def(name) else {
        return Err(ApiError::new(
            ResponseError::InvalidConfig,
            format!("Unknown topic config name: {name}"),
        ));
    };
    let invalid = |why: &str| {
        Err(ApiError::new(
            ResponseError::InvalidConfig,
            format!("Invalid value {value} for configuration {name}: {why}"),
        ))
    };
    let long = || value.trim().parse::<i64>();
    match name {
        "cleanup.policy" => {
            let ok = value
                .split(',')
                .map(str::trim)
                .all(|p| p == "delete" || p == "compact");
            if !ok || value.trim().is_empty() {
                return invalid("String must be one of: compact, delete");
            }
        }
        "compression.type" => {
            if !["uncompressed", "zstd", "lz4", "snappy", "gzip", "producer"].contains(&value) {
                return invalid(
                    "String must be one of: uncompressed, zstd, lz4, snappy, gzip, producer",
                );
            }
        }
        "message.timestamp.type" => {
            if value != "CreateTime" && value != "LogAppendTime" {
                return invalid("String must be one of: CreateTime, LogAppendTime");
            }
        }
        "min.cleanable.dirty.ratio" => match value.trim().parse::<f64>() {
            Ok(r) if (0.0..=1.0).contains(&r) => {}
            _ => return invalid("Value must be a number between 0 and 1"),
        },
        // -1 means "unlimited" for these two.
        "retention.ms" | "retention.bytes" => match long() {
            Ok(v) if v >= -1 => {}
            _ => return invalid("Value must be a long of at least -1"),
        },
        "segment.bytes" => match long() {
            Ok(v) if (14..=i32::MAX as i64).contains(&v) => {}
            _ => return invalid("Value must be an int of at least 14"),
        },
        "segment.ms" | "segment.index.bytes" | "max.message.bytes" | "min.insync.replicas" => {
            match long() {
                Ok(v) if v >= 1 => {}
                _ => return invalid("Value must be at least 1"),
            }
        }
        _ => match d.ty {
            ConfigType::Boolean if value != "true" && value != "false" => {
                return invalid("Expected value to be either true or false");
            }
            ConfigType::Int | ConfigType::Long => match long() {
                Ok(v) if v >= 0 && (d.ty == ConfigType::Long || v <= i32::MAX as i64) => {}
                _ => return invalid("Value must be a non-negative number"),
            },
            _ => {}
        },
    }
    Ok(())
}

/// A topic's effective configs, typed.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicSettings {
    pub compact: bool,
    pub delete: bool,
    pub retention_ms: i64,
    pub retention_bytes: i64,
    pub delete_retention_ms: i64,
    pub min_compaction_lag_ms: i64,
    pub max_compaction_lag_ms: i64,
    pub min_cleanable_dirty_ratio: f64,
    pub max_message_bytes: usize,
    pub log_append_time: bool,
    pub timestamp_before_max_ms: i64,
    pub timestamp_after_max_ms: i64,
    pub segment_bytes: u64,
    pub segment_ms: u64,
    pub segment_index_bytes: u32,
    pub index_interval_bytes: u32,
    pub min_insync_replicas: i32,
    /// `compression.type`: the codec every stored batch gets (the broker recompresses batches
    /// that arrive in another one); `None` for `producer`, which keeps the producer's codec.
    pub compression: Option<sluice_protocol::batch::Compression>,
}

impl TopicSettings {
    /// A topic's settings: the broker's log defaults (`BrokerSettings::log`) with the topic's
    /// overrides applied.
    pub fn resolve(
        overrides: &sluice_meta::TopicConfigs,
        defaults: &TopicSettings,
    ) -> TopicSettings {
        let mut s = defaults.clone();
        for (name, value) in overrides {
            s.apply(name, value);
        }
        s
    }

    /// Applies one topic config value (validated when it was set; one that no longer parses,
    /// written by another release, reads as `i64::MAX`). `every_topic_config_is_applied`
    /// checks that every config in [`TOPIC_CONFIGS`] is either applied here or accepted
    /// without effect.
    fn apply(&mut self, name: &str, value: &str) {
        let long = || value.trim().parse::<i64>().unwrap_or(i64::MAX);
        match name {
            "cleanup.policy" => (self.compact, self.delete) = cleanup_policy(value),
            "compression.type" => self.compression = compression(value),
            "retention.ms" => self.retention_ms = long(),
            "retention.bytes" => self.retention_bytes = long(),
            "delete.retention.ms" => self.delete_retention_ms = long(),
            "min.compaction.lag.ms" => self.min_compaction_lag_ms = long(),
            "max.compaction.lag.ms" => self.max_compaction_lag_ms = long(),
            "min.cleanable.dirty.ratio" => {
                self.min_cleanable_dirty_ratio = value.parse().unwrap_or(0.5)
            }
            "max.message.bytes" => self.max_message_bytes = long().max(0) as usize,
            "message.timestamp.type" => self.log_append_time = value == "LogAppendTime",
            "message.timestamp.before.max.ms" => self.timestamp_before_max_ms = long(),
            "message.timestamp.after.max.ms" => self.timestamp_after_max_ms = long(),
            "segment.bytes" => self.segment_bytes = long().max(14) as u64,
            "segment.ms" => self.segment_ms = long().max(1) as u64,
            "segment.index.bytes" => {
                self.segment_index_bytes = long().clamp(8, i32::MAX as i64) as u32
            }
            "index.interval.bytes" => {
                self.index_interval_bytes = long().clamp(0, i32::MAX as i64) as u32
            }
            "min.insync.replicas" => {
                self.min_insync_replicas = long().clamp(1, i32::MAX as i64) as i32
            }
            // Accepted without effect: only their default is accepted (ONLY_DEFAULT), Sluice's
            // --durability decides fsyncs, or they wait for replication (their docs say so).
            "file.delete.delay.ms"
            | "preallocate"
            | "segment.jitter.ms"
            | "flush.messages"
            | "flush.ms"
            | "unclean.leader.election.enable" => {}
            _ => {}
        }
    }
}

/// `cleanup.policy` (or the broker's `log.cleanup.policy`): `(compact, delete)`.
pub(crate) fn cleanup_policy(value: &str) -> (bool, bool) {
    (value.contains("compact"), value.contains("delete"))
}

/// `compression.type`: the codec stored batches get; `None` for `producer`.
pub(crate) fn compression(value: &str) -> Option<sluice_protocol::batch::Compression> {
    use sluice_protocol::batch::Compression as C;
    match value {
        "uncompressed" => Some(C::None),
        "gzip" => Some(C::Gzip),
        "snappy" => Some(C::Snappy),
        "lz4" => Some(C::Lz4),
        "zstd" => Some(C::Zstd),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_validated() {
        for (k, v) in [
            ("cleanup.policy", "compact,delete"),
            ("cleanup.policy", "delete"),
            ("retention.ms", "-1"),
            ("segment.bytes", "1048576"),
            ("min.cleanable.dirty.ratio", "0.5"),
            ("message.timestamp.type", "LogAppendTime"),
            ("compression.type", "zstd"),
            ("delete.retention.ms", "0"),
            ("preallocate", "false"),
            ("segment.jitter.ms", "0"),
            ("file.delete.delay.ms", "60000"),
            ("min.insync.replicas", "2"),
            ("unclean.leader.election.enable", "true"),
        ] {
            assert!(validate(k, v).is_ok(), "{k}={v}");
        }
        for (k, v) in [
            ("cleanup.policy", "sometimes"),
            ("retention.ms", "-2"),
            ("segment.bytes", "10"),
            ("segment.bytes", "big"),
            ("min.cleanable.dirty.ratio", "2"),
            ("message.timestamp.type", "Now"),
            ("preallocate", "yes"),
            ("delete.retention.ms", "-5"),
            ("no.such.config", "1"),
            ("preallocate", "true"),
            ("segment.jitter.ms", "1000"),
            ("file.delete.delay.ms", "0"),
            ("unclean.leader.election.enable", "maybe"),
            ("min.insync.replicas", "0"),
        ] {
            assert_eq!(
                validate(k, v).unwrap_err().code,
                ResponseError::InvalidConfig,
                "{k}={v}"
            );
        }
    }

    #[test]
    fn settings_without_effect_are_refused_and_say_why() {
        let e = validate("preallocate", "true").unwrap_err();
        let msg = e.message.unwrap();
        assert!(
            msg.contains("not supported") && msg.contains("only false"),
            "{msg}"
        );
        // The type error comes first for a value that is not even a boolean.
        let msg = validate("preallocate", "yes").unwrap_err().message.unwrap();
        assert!(msg.contains("either true or false"), "{msg}");
        // Every refused setting's default is accepted, and its documentation tells.
        for (name, accepted, _) in ONLY_DEFAULT {
            let d = def(name).unwrap();
            assert_eq!(d.default, *accepted, "{name}");
            assert!(validate(name, accepted).is_ok(), "{name}");
            assert!(d.doc.contains("Not supported"), "{name}: {}", d.doc);
        }
        // Replication settings say what they do.
        assert!(def("min.insync.replicas")
            .unwrap()
            .doc
            .contains("NOT_ENOUGH_REPLICAS"));
        assert!(def("unclean.leader.election.enable")
            .unwrap()
            .doc
            .contains("are lost"));
    }
}
