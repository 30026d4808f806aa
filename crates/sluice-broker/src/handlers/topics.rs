//! Topic administration: CreateTopics, DeleteTopics, CreatePartitions.

use std::sync::Arc;

use kafka_protocol::messages::create_partitions_request::CreatePartitionsRequest;
use kafka_protocol::messages::create_partitions_response::{
    CreatePartitionsResponse, CreatePartitionsTopicResult,
};
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreateTopicsRequest};
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicResult, CreateTopicsResponse,
};
use kafka_protocol::messages::delete_topics_request::DeleteTopicsRequest;
use kafka_protocol::messages::delete_topics_response::{
    DeletableTopicResult, DeleteTopicsResponse,
};
use kafka_protocol::ResponseError;
use sluice_meta::{TopicConfigs, Uuid};

use super::{str_bytes, topic_name};
use crate::broker::Broker;
use crate::error::ApiError;

/// Topic-level configs Kafka defines. Values are stored as given and applied as each feature
/// lands (retention, compaction, ...); names outside this list are refused with INVALID_CONFIG.
pub const TOPIC_CONFIGS: &[&str] = &[
    "cleanup.policy",
    "compression.type",
    "delete.retention.ms",
    "file.delete.delay.ms",
    "flush.messages",
    "flush.ms",
    "index.interval.bytes",
    "max.compaction.lag.ms",
    "max.message.bytes",
    "message.downconversion.enable",
    "message.timestamp.after.max.ms",
    "message.timestamp.before.max.ms",
    "message.timestamp.difference.max.ms",
    "message.timestamp.type",
    "min.cleanable.dirty.ratio",
    "min.compaction.lag.ms",
    "min.insync.replicas",
    "preallocate",
    "retention.bytes",
    "retention.ms",
    "segment.bytes",
    "segment.index.bytes",
    "segment.jitter.ms",
    "segment.ms",
    "unclean.leader.election.enable",
];

/// Checks a topic config value against its Kafka type and range.
pub fn validate_topic_config(name: &str, value: &str) -> Result<(), ApiError> {
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
        "preallocate" | "unclean.leader.election.enable" | "message.downconversion.enable" => {
            if value != "true" && value != "false" {
                return invalid("Expected value to be either true or false");
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
        _ => match long() {
            Ok(v) if v >= 0 => {}
            _ => return invalid("Value must be a non-negative number"),
        },
    }
    Ok(())
}

fn topic_configs(t: &CreatableTopic) -> Result<TopicConfigs, ApiError> {
    let mut configs = TopicConfigs::new();
    for c in &t.configs {
        let name = c.name.as_str();
        if !TOPIC_CONFIGS.contains(&name) {
            return Err(ApiError::new(
                ResponseError::InvalidConfig,
                format!("Unknown topic config name: {name}"),
            ));
        }
        let Some(value) = c.value.as_ref() else {
            return Err(ApiError::new(
                ResponseError::InvalidConfig,
                format!("Null value not supported for topic config: {name}"),
            ));
        };
        validate_topic_config(name, value.as_str())?;
        configs.insert(name.to_string(), value.as_str().to_string());
    }
    Ok(configs)
}

fn create_one(
    broker: &Broker,
    t: &CreatableTopic,
    validate_only: bool,
) -> Result<sluice_meta::TopicInfo, ApiError> {
    let assignment = if t.assignments.is_empty() {
        None
    } else {
        if t.num_partitions != -1 || t.replication_factor != -1 {
            return Err(ApiError::new(
                ResponseError::InvalidRequest,
                "Both numPartitions or replicationFactor and replicasAssignments were set. Both cannot be used at the same time.",
            ));
        }
        let mut a: Vec<_> = t.assignments.iter().collect();
        a.sort_by_key(|x| x.partition_index);
        if a.iter()
            .enumerate()
            .any(|(i, x)| x.partition_index != i as i32)
        {
            return Err(ApiError::new(
                ResponseError::InvalidReplicaAssignment,
                "Partitions should be a consecutive 0-based integer sequence.",
            ));
        }
        Some(
            a.iter()
                .map(|x| x.broker_ids.iter().map(|b| b.0).collect())
                .collect(),
        )
    };
    if assignment.is_none() && (t.num_partitions == 0 || t.num_partitions < -1) {
        return Err(ApiError::new(
            ResponseError::InvalidPartitions,
            format!(
                "Number of partitions was set to an invalid non-positive value: {}.",
                t.num_partitions
            ),
        ));
    }
    if assignment.is_none() && (t.replication_factor == 0 || t.replication_factor < -1) {
        return Err(ApiError::new(
            ResponseError::InvalidReplicationFactor,
            format!("Replication factor must be larger than 0, or -1 to use the default value (got {}).", t.replication_factor),
        ));
    }
    let configs = topic_configs(t)?;
    broker.create_topic(
        t.name.as_str(),
        t.num_partitions,
        t.replication_factor,
        assignment,
        configs,
        validate_only,
    )
}

pub fn create_topics(
    broker: &Arc<Broker>,
    req: CreateTopicsRequest,
    version: i16,
) -> CreateTopicsResponse {
    let mut results = Vec::with_capacity(req.topics.len());
    for (i, t) in req.topics.iter().enumerate() {
        // A name listed twice in one request is an error for every copy (as Kafka does).
        let duplicate = req
            .topics
            .iter()
            .enumerate()
            .any(|(j, o)| j != i && o.name == t.name);
        let outcome = if duplicate {
            Err(ApiError::new(
                ResponseError::InvalidRequest,
                "Create topics request from client contains a duplicate topic.",
            ))
        } else {
            create_one(broker, t, req.validate_only)
        };
        let result = CreatableTopicResult::default().with_name(t.name.clone());
        results.push(match outcome {
            Ok(info) => {
                let mut r = result;
                if version >= 5 {
                    r = r
                        .with_num_partitions(info.partitions.len() as i32)
                        .with_replication_factor(info.partitions[0].replicas.len() as i16);
                }
                if version >= 7 && !req.validate_only {
                    r = r.with_topic_id(info.topic_id);
                }
                r
            }
            Err(e) => result
                .with_error_code(e.code.code())
                .with_error_message(e.message.as_deref().map(str_bytes)),
        });
    }
    CreateTopicsResponse::default().with_topics(results)
}

pub fn delete_topics(
    broker: &Arc<Broker>,
    req: DeleteTopicsRequest,
    version: i16,
) -> DeleteTopicsResponse {
    // v0-5 name topics in `topic_names`; v6 in `topics`, by name or by id.
    let targets: Vec<(Option<String>, Uuid)> = if version >= 6 {
        req.topics
            .iter()
            .map(|t| (t.name.as_ref().map(|n| n.as_str().to_string()), t.topic_id))
            .collect()
    } else {
        req.topic_names
            .iter()
            .map(|n| (Some(n.as_str().to_string()), Uuid::nil()))
            .collect()
    };
    let responses = targets
        .into_iter()
        .map(|(name, id)| {
            let resolved = match &name {
                Some(n) => broker
                    .meta
                    .lock()
                    .expect("meta lock")
                    .state()
                    .topic(n)
                    .map(|t| t.topic_id)
                    .ok_or_else(|| ApiError::from(ResponseError::UnknownTopicOrPartition)),
                None => Ok(id),
            };
            let outcome = resolved.and_then(|id| broker.delete_topic(id).map(|n| (n, id)));
            let result = DeletableTopicResult::default().with_name(name.as_deref().map(topic_name));
            match outcome {
                Ok((deleted, id)) => result
                    .with_name(Some(topic_name(&deleted)))
                    .with_topic_id(if version >= 6 { id } else { Uuid::nil() }),
                Err(e) => {
                    let mut r = result.with_error_code(e.code.code());
                    if version >= 5 {
                        r = r.with_error_message(e.message.as_deref().map(str_bytes));
                    }
                    if version >= 6 {
                        r = r.with_topic_id(id);
                    }
                    r
                }
            }
        })
        .collect();
    DeleteTopicsResponse::default().with_responses(responses)
}

pub fn create_partitions(
    broker: &Arc<Broker>,
    req: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let results = req
        .topics
        .iter()
        .map(|t| {
            let assignment = t.assignments.as_ref().map(|a| {
                a.iter()
                    .map(|x| x.broker_ids.iter().map(|b| b.0).collect())
                    .collect()
            });
            let result = CreatePartitionsTopicResult::default().with_name(t.name.clone());
            match broker.create_partitions(t.name.as_str(), t.count, assignment, req.validate_only)
            {
                Ok(()) => result,
                Err(e) => result
                    .with_error_code(e.code.code())
                    .with_error_message(e.message.as_deref().map(str_bytes)),
            }
        })
        .collect();
    CreatePartitionsResponse::default().with_results(results)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_config_values() {
        for (k, v) in [
            ("cleanup.policy", "compact,delete"),
            ("cleanup.policy", "delete"),
            ("retention.ms", "-1"),
            ("segment.bytes", "1048576"),
            ("min.cleanable.dirty.ratio", "0.5"),
            ("message.timestamp.type", "LogAppendTime"),
            ("compression.type", "zstd"),
            ("delete.retention.ms", "0"),
        ] {
            assert!(validate_topic_config(k, v).is_ok(), "{k}={v}");
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
        ] {
            assert_eq!(
                validate_topic_config(k, v).unwrap_err().code,
                ResponseError::InvalidConfig,
                "{k}={v}"
            );
        }
    }
}
