//! Topic administration: CreateTopics, DeleteTopics, CreatePartitions.

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
use sluice_meta::BrokerId;
use sluice_meta::{TopicConfigs, Uuid};

use super::{str_bytes, topic_name};
use crate::controller::{Controller, NewTopic};
use crate::error::ApiError;
use crate::image::MetadataImage;
use crate::topic_config;

fn topic_configs(t: &CreatableTopic) -> Result<TopicConfigs, ApiError> {
    let mut configs = TopicConfigs::new();
    for c in &t.configs {
        let name = c.name.as_str();
        let Some(value) = c.value.as_ref() else {
            return Err(ApiError::new(
                ResponseError::InvalidConfig,
                format!("Null value not supported for topic config: {name}"),
            ));
        };
        topic_config::validate(name, value.as_str())?;
        configs.insert(name.to_string(), value.as_str().to_string());
    }
    Ok(configs)
}

/// What one CreateTopics entry asks for, checked for what only the request can tell.
fn new_topic(t: &CreatableTopic) -> Result<NewTopic, ApiError> {
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
                .map(|x| x.broker_ids.iter().map(|b| BrokerId(b.0)).collect())
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
    Ok(NewTopic {
        name: t.name.as_str().to_string(),
        num_partitions: t.num_partitions,
        replication_factor: t.replication_factor,
        assignment,
        configs: topic_configs(t)?,
    })
}

pub async fn create_topics(
    controller: &Controller,
    req: CreateTopicsRequest,
    version: i16,
) -> CreateTopicsResponse {
    // What the request itself gets wrong, per topic; the rest goes to the controller at once.
    let checked: Vec<Result<NewTopic, ApiError>> = req
        .topics
        .iter()
        .enumerate()
        .map(|(i, t)| {
            // A name listed twice in one request is an error for every copy (as Kafka does).
            let duplicate = req
                .topics
                .iter()
                .enumerate()
                .any(|(j, o)| j != i && o.name == t.name);
            if duplicate {
                Err(ApiError::new(
                    ResponseError::InvalidRequest,
                    "Create topics request from client contains a duplicate topic.",
                ))
            } else {
                new_topic(t)
            }
        })
        .collect();
    let valid: Vec<NewTopic> = checked.iter().flatten().cloned().collect();
    let mut decided = controller
        .create_topics(valid, req.validate_only)
        .await
        .into_iter();
    let mut results = Vec::with_capacity(req.topics.len());
    for (t, outcome) in req.topics.iter().zip(checked) {
        let outcome = outcome.and_then(|_| {
            decided
                .next()
                .expect("the controller answers every topic it was given")
        });
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

pub async fn delete_topics(
    image: &MetadataImage,
    controller: &Controller,
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
    let image = image.load();
    let resolved: Vec<Result<Uuid, ApiError>> = targets
        .iter()
        .map(|(name, id)| match name {
            Some(n) => image
                .topic(n)
                .map(|t| t.topic_id)
                .ok_or_else(|| ApiError::from(ResponseError::UnknownTopicOrPartition)),
            None => Ok(*id),
        })
        .collect();
    let ids: Vec<Uuid> = resolved.iter().flatten().copied().collect();
    let mut decided = controller.delete_topics(ids).await.into_iter();
    let mut responses = Vec::with_capacity(targets.len());
    for ((name, requested_id), resolved) in targets.into_iter().zip(resolved) {
        let outcome = resolved.and_then(|id| {
            decided
                .next()
                .expect("the controller answers every topic it was given")
                .map(|n| (n, id))
        });
        let result = DeletableTopicResult::default().with_name(name.as_deref().map(topic_name));
        responses.push(match outcome {
            Ok((deleted, id)) => result
                .with_name(Some(topic_name(&deleted)))
                .with_topic_id(if version >= 6 { id } else { Uuid::nil() }),
            Err(e) => {
                let mut r = result.with_error_code(e.code.code());
                if version >= 5 {
                    r = r.with_error_message(e.message.as_deref().map(str_bytes));
                }
                if version >= 6 {
                    r = r.with_topic_id(requested_id);
                }
                r
            }
        });
    }
    DeleteTopicsResponse::default().with_responses(responses)
}

pub async fn create_partitions(
    controller: &Controller,
    req: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let mut results = Vec::with_capacity(req.topics.len());
    for t in &req.topics {
        let assignment = t.assignments.as_ref().map(|a| {
            a.iter()
                .map(|x| x.broker_ids.iter().map(|b| BrokerId(b.0)).collect())
                .collect()
        });
        let result = CreatePartitionsTopicResult::default().with_name(t.name.clone());
        let outcome = controller
            .create_partitions(
                t.name.as_str().to_string(),
                t.count,
                assignment,
                req.validate_only,
            )
            .await;
        results.push(match outcome {
            Ok(()) => result,
            Err(e) => result
                .with_error_code(e.code.code())
                .with_error_message(e.message.as_deref().map(str_bytes)),
        });
    }
    CreatePartitionsResponse::default().with_results(results)
}
