//! DescribeConfigs, IncrementalAlterConfigs and (legacy) AlterConfigs for TOPIC and BROKER
//! resources.
//!
//! Topic configs: the overrides live in the metadata log (`SetTopicConfigs`) and are applied to
//! the partitions at once. Broker configs: the log-level defaults (`log.retention.ms`,
//! `log.cleanup.policy`, `message.max.bytes`, ...) can be altered dynamically for this broker
//! (resource name = its id) or cluster-wide (resource name ""), like Kafka's dynamic log configs;
//! everything else is read-only at run time.

use kafka_protocol::messages::alter_configs_request::AlterConfigsRequest;
use kafka_protocol::messages::alter_configs_response::{
    AlterConfigsResourceResponse as LegacyResourceResponse, AlterConfigsResponse,
};
use kafka_protocol::messages::describe_configs_request::DescribeConfigsRequest;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResponse, DescribeConfigsResult,
    DescribeConfigsSynonym,
};
use kafka_protocol::messages::incremental_alter_configs_request::IncrementalAlterConfigsRequest;
use kafka_protocol::messages::incremental_alter_configs_response::{
    AlterConfigsResourceResponse, IncrementalAlterConfigsResponse,
};
use kafka_protocol::ResponseError;
use sluice_meta::BrokerId;
use sluice_meta::TopicConfigs;

use super::str_bytes;
use crate::config::{self, is_dynamic, Settings, SETTINGS};
use crate::controller::validate_broker_config;
use crate::controller::Controller;
use crate::error::ApiError;
use crate::image::{effective_settings, MetadataImage};
use crate::topic_config::{self, ConfigSource, TOPIC_CONFIGS};

/// What the config APIs touch: this broker's id, its static settings, the metadata image (topic
/// overrides, dynamic broker configs) and the controller that stores changes.
pub struct ConfigHandles<'a> {
    pub node_id: i32,
    pub static_settings: &'a Settings,
    pub image: &'a MetadataImage,
    pub controller: &'a Controller,
}

impl ConfigHandles<'_> {
    /// The broker settings in force, by name: static ones with the dynamic configs over them.
    fn raw_settings(&self) -> Settings {
        effective_settings(
            self.static_settings,
            BrokerId(self.node_id),
            &self.image.load(),
        )
    }
}

const TOPIC: i8 = 2;
const BROKER: i8 = 4;

/// Which broker-config layer a BROKER resource name addresses.
fn broker_target(broker: &ConfigHandles<'_>, name: &str) -> Result<Option<BrokerId>, ApiError> {
    if name.is_empty() {
        return Ok(None);
    }
    match name.parse::<i32>() {
        Ok(id) if id == broker.node_id => Ok(Some(BrokerId(id))),
        _ => Err(ApiError::new(
            ResponseError::InvalidRequest,
            format!(
                "Unexpected broker id, expected {} or empty string, but received {name}",
                broker.node_id
            ),
        )),
    }
}

/// One config as DescribeConfigs reports it.
struct Described<'a> {
    name: &'a str,
    value: &'a str,
    source: ConfigSource,
    read_only: bool,
    ty: topic_config::ConfigType,
    doc: &'a str,
    synonyms: Vec<DescribeConfigsSynonym>,
}

impl Described<'_> {
    /// Encodes the fields the request asked for and its version can carry.
    fn encode(self, req: &DescribeConfigsRequest, version: i16) -> DescribeConfigsResourceResult {
        let mut e = DescribeConfigsResourceResult::default()
            .with_name(str_bytes(self.name))
            .with_value(Some(str_bytes(self.value)))
            .with_read_only(self.read_only)
            .with_config_source(self.source as i8);
        if req.include_synonyms {
            e = e.with_synonyms(self.synonyms);
        }
        if version >= 3 {
            e = e.with_config_type(self.ty as i8);
            if req.include_documentation {
                e = e.with_documentation(Some(str_bytes(self.doc)));
            }
        }
        e
    }
}

fn synonym(name: &str, value: &str, source: ConfigSource) -> DescribeConfigsSynonym {
    DescribeConfigsSynonym::default()
        .with_name(str_bytes(name))
        .with_value(Some(str_bytes(value)))
        .with_source(source as i8)
}

fn describe_topic(
    broker: &ConfigHandles<'_>,
    settings: &Settings,
    name: &str,
    keys: Option<&Vec<kafka_protocol::protocol::StrBytes>>,
    req: &DescribeConfigsRequest,
    version: i16,
) -> Result<Vec<DescribeConfigsResourceResult>, ApiError> {
    let overrides = broker
        .image
        .load()
        .topic(name)
        .map(|t| t.configs.clone())
        .ok_or(ResponseError::UnknownTopicOrPartition)?;
    Ok(TOPIC_CONFIGS
        .iter()
        .filter(|d| keys.is_none_or(|k| k.iter().any(|k| k.as_str() == d.name)))
        .map(|d| {
            let (value, source) = config::effective_topic_config(d, &overrides, settings);
            let mut synonyms = Vec::new();
            if let Some(v) = overrides.get(d.name) {
                synonyms.push(synonym(d.name, v, ConfigSource::DynamicTopic));
            }
            for s in d.synonyms {
                if settings.is_explicit(s.broker_key) {
                    let v = settings.get(s.broker_key).unwrap_or_default();
                    synonyms.push(synonym(s.broker_key, v, settings.source(s.broker_key)));
                }
            }
            synonyms.push(synonym(
                d.synonyms.first().map_or(d.name, |s| s.broker_key),
                d.default,
                ConfigSource::Default,
            ));
            Described {
                name: d.name,
                value: &value,
                source,
                read_only: false,
                ty: d.ty,
                doc: d.doc,
                synonyms,
            }
            .encode(req, version)
        })
        .collect())
}

fn describe_broker(
    settings: &Settings,
    keys: Option<&Vec<kafka_protocol::protocol::StrBytes>>,
    req: &DescribeConfigsRequest,
    version: i16,
) -> Vec<DescribeConfigsResourceResult> {
    SETTINGS
        .iter()
        .filter(|(k, _, _)| keys.is_none_or(|keys| keys.iter().any(|x| x.as_str() == *k)))
        .map(|(key, default, doc)| {
            let value = settings.get(key).unwrap_or_default();
            let source = settings.source(key);
            let mut synonyms = Vec::new();
            if source != ConfigSource::Default {
                synonyms.push(synonym(key, value, source));
            }
            synonyms.push(synonym(key, default, ConfigSource::Default));
            Described {
                name: key,
                value,
                source,
                read_only: !is_dynamic(key),
                ty: config::setting_type(key),
                doc,
                synonyms,
            }
            .encode(req, version)
        })
        .collect()
}

/// BROKER "": only the cluster-wide dynamic defaults, as Kafka reports them.
fn describe_cluster_defaults(
    broker: &ConfigHandles<'_>,
    keys: Option<&Vec<kafka_protocol::protocol::StrBytes>>,
    req: &DescribeConfigsRequest,
    version: i16,
) -> Vec<DescribeConfigsResourceResult> {
    dynamic_broker_configs(broker, None)
        .iter()
        .filter(|(k, _)| keys.is_none_or(|keys| keys.iter().any(|x| x.as_str() == k.as_str())))
        .map(|(key, value)| {
            let source = ConfigSource::DynamicDefaultBroker;
            Described {
                name: key,
                value,
                source,
                read_only: false,
                ty: config::setting_type(key),
                doc: config::setting_doc(key).unwrap_or_default(),
                synonyms: vec![synonym(key, value, source)],
            }
            .encode(req, version)
        })
        .collect()
}

pub fn describe_configs(
    broker: &ConfigHandles<'_>,
    req: DescribeConfigsRequest,
    version: i16,
) -> DescribeConfigsResponse {
    let settings = broker.raw_settings();
    let results = req
        .resources
        .iter()
        .map(|r| {
            let name = r.resource_name.as_str();
            let keys = r.configuration_keys.as_ref();
            let outcome = match r.resource_type {
                TOPIC => describe_topic(broker, &settings, name, keys, &req, version),
                BROKER => broker_target(broker, name).map(|target| match target {
                    Some(_) => describe_broker(&settings, keys, &req, version),
                    None => describe_cluster_defaults(broker, keys, &req, version),
                }),
                other => Err(ApiError::new(
                    ResponseError::InvalidRequest,
                    format!("Unsupported resource type {other}"),
                )),
            };
            let result = DescribeConfigsResult::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name.clone());
            match outcome {
                Ok(configs) => result.with_configs(configs),
                Err(e) => result
                    .with_error_code(e.code.code())
                    .with_error_message(e.message.as_deref().map(str_bytes)),
            }
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}

/// One requested change to a config map.
enum Op {
    Set(String),
    Delete,
    Append(String),
    Subtract(String),
}

/// Applies `ops` to `current`, validating every resulting value with `validate`.
fn apply_ops(
    mut current: TopicConfigs,
    ops: Vec<(String, Op)>,
    is_list: impl Fn(&str) -> bool,
    validate: impl Fn(&str, &str) -> Result<(), ApiError>,
    default_of: impl Fn(&str) -> Option<String>,
) -> Result<TopicConfigs, ApiError> {
    let mut seen = std::collections::BTreeSet::new();
    for (name, op) in ops {
        if !seen.insert(name.clone()) {
            return Err(ApiError::new(
                ResponseError::InvalidRequest,
                format!("Error due to duplicate config keys: {name}"),
            ));
        }
        match op {
            Op::Set(v) => {
                validate(&name, &v)?;
                current.insert(name, v);
            }
            Op::Delete => {
                current.remove(&name);
            }
            Op::Append(v) | Op::Subtract(v) if !is_list(&name) => {
                let _ = v;
                return Err(ApiError::new(
                    ResponseError::InvalidConfig,
                    format!("Config value append or subtract is not allowed for config key {name}, which is not a list"),
                ));
            }
            Op::Append(v) => {
                let base = current
                    .get(&name)
                    .cloned()
                    .or_else(|| default_of(&name))
                    .unwrap_or_default();
                let mut items: Vec<String> = base
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect();
                for x in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    if !items.iter().any(|i| i == x) {
                        items.push(x.to_string());
                    }
                }
                let joined = items.join(",");
                validate(&name, &joined)?;
                current.insert(name, joined);
            }
            Op::Subtract(v) => {
                let base = current
                    .get(&name)
                    .cloned()
                    .or_else(|| default_of(&name))
                    .unwrap_or_default();
                let remove: Vec<&str> = v.split(',').map(str::trim).collect();
                let joined = base
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty() && !remove.contains(s))
                    .collect::<Vec<_>>()
                    .join(",");
                validate(&name, &joined)?;
                current.insert(name, joined);
            }
        }
    }
    Ok(current)
}

/// The dynamic configs recorded for `broker_id` (`None`: cluster defaults).
fn dynamic_broker_configs(broker: &ConfigHandles<'_>, broker_id: Option<BrokerId>) -> TopicConfigs {
    broker
        .image
        .load()
        .broker_configs
        .get(&broker_id)
        .cloned()
        .unwrap_or_default()
}

/// The whole new config set of one resource, as an alter request computes it.
enum NewConfigs {
    Topic(String, TopicConfigs),
    Broker(Option<BrokerId>, TopicConfigs),
}

/// Computes the new configs of one resource from the request's operations (or reports why they
/// could not be read) and, unless `validate_only`, has the controller store them.
async fn alter_resource(
    broker: &ConfigHandles<'_>,
    resource_type: i8,
    name: &str,
    ops: Result<Vec<(String, Op)>, ApiError>,
    replace_all: bool,
    validate_only: bool,
) -> Result<(), ApiError> {
    let new = plan_alter(broker, resource_type, name, ops?, replace_all)?;
    if validate_only {
        return Ok(());
    }
    match new {
        NewConfigs::Topic(name, configs) => {
            broker.controller.set_topic_configs(name, configs).await
        }
        NewConfigs::Broker(target, configs) => {
            broker.controller.set_broker_configs(target, configs).await
        }
    }
}

fn plan_alter(
    broker: &ConfigHandles<'_>,
    resource_type: i8,
    name: &str,
    ops: Vec<(String, Op)>,
    replace_all: bool,
) -> Result<NewConfigs, ApiError> {
    match resource_type {
        TOPIC => {
            let current = broker
                .image
                .load()
                .topic(name)
                .map(|t| t.configs.clone())
                .ok_or(ResponseError::UnknownTopicOrPartition)?;
            let start = if replace_all {
                TopicConfigs::new()
            } else {
                current
            };
            let settings = broker.raw_settings();
            let new = apply_ops(
                start,
                ops,
                |n| topic_config::def(n).is_some_and(|d| d.ty == topic_config::ConfigType::List),
                topic_config::validate,
                |n| {
                    topic_config::def(n).map(|d| {
                        config::effective_topic_config(d, &TopicConfigs::new(), &settings).0
                    })
                },
            )?;
            Ok(NewConfigs::Topic(name.to_string(), new))
        }
        BROKER => {
            let target = broker_target(broker, name)?;
            let start = if replace_all {
                TopicConfigs::new()
            } else {
                dynamic_broker_configs(broker, target)
            };
            let settings = broker.raw_settings();
            let new = apply_ops(
                start,
                ops,
                |k| k == "log.cleanup.policy",
                validate_broker_config,
                |k| settings.get(k).map(String::from),
            )?;
            Ok(NewConfigs::Broker(target, new))
        }
        other => Err(ApiError::new(
            ResponseError::InvalidRequest,
            format!("Unsupported resource type {other}"),
        )),
    }
}

/// The error code and message of an alter outcome (0 and none on success).
fn error_fields(
    outcome: Result<(), ApiError>,
) -> (i16, Option<kafka_protocol::protocol::StrBytes>) {
    match outcome {
        Ok(()) => (0, None),
        Err(e) => (e.code.code(), e.message.as_deref().map(str_bytes)),
    }
}

pub async fn incremental_alter_configs(
    broker: &ConfigHandles<'_>,
    req: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let mut responses = Vec::with_capacity(req.resources.len());
    for r in &req.resources {
        responses.push({
            let ops: Result<Vec<(String, Op)>, ApiError> = r
                .configs
                .iter()
                .map(|c| {
                    let value = c.value.as_ref().map(|v| v.as_str().to_string());
                    let op = match (c.config_operation, value) {
                        (0, Some(v)) => Op::Set(v),
                        (1, _) => Op::Delete,
                        (2, Some(v)) => Op::Append(v),
                        (3, Some(v)) => Op::Subtract(v),
                        (0 | 2 | 3, None) => {
                            return Err(ApiError::new(
                                ResponseError::InvalidRequest,
                                format!("Null value not supported for : {}", c.name.as_str()),
                            ))
                        }
                        (other, _) => {
                            return Err(ApiError::new(
                                ResponseError::InvalidRequest,
                                format!("Unknown config operation {other}"),
                            ))
                        }
                    };
                    Ok((c.name.as_str().to_string(), op))
                })
                .collect();
            let outcome = alter_resource(
                broker,
                r.resource_type,
                r.resource_name.as_str(),
                ops,
                false,
                req.validate_only,
            )
            .await;
            let (code, message) = error_fields(outcome);
            AlterConfigsResourceResponse::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name.clone())
                .with_error_code(code)
                .with_error_message(message)
        });
    }
    IncrementalAlterConfigsResponse::default().with_responses(responses)
}

/// Legacy AlterConfigs: the given configs REPLACE the resource's whole override set.
pub async fn alter_configs(
    broker: &ConfigHandles<'_>,
    req: AlterConfigsRequest,
) -> AlterConfigsResponse {
    let mut responses = Vec::with_capacity(req.resources.len());
    for r in &req.resources {
        responses.push({
            let ops: Result<Vec<(String, Op)>, ApiError> = r
                .configs
                .iter()
                .map(|c| match &c.value {
                    Some(v) => Ok((c.name.as_str().to_string(), Op::Set(v.as_str().to_string()))),
                    None => Err(ApiError::new(
                        ResponseError::InvalidRequest,
                        format!("Null value not supported for : {}", c.name.as_str()),
                    )),
                })
                .collect();
            let outcome = alter_resource(
                broker,
                r.resource_type,
                r.resource_name.as_str(),
                ops,
                true,
                req.validate_only,
            )
            .await;
            let (code, message) = error_fields(outcome);
            LegacyResourceResponse::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name.clone())
                .with_error_code(code)
                .with_error_message(message)
        });
    }
    AlterConfigsResponse::default().with_responses(responses)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(_: &str, _: &str) -> Result<(), ApiError> {
        Ok(())
    }

    #[test]
    fn incremental_operations() {
        let start = TopicConfigs::from([("retention.ms".into(), "1".into())]);
        let out = apply_ops(
            start.clone(),
            vec![
                ("retention.ms".into(), Op::Delete),
                ("cleanup.policy".into(), Op::Append("compact".into())),
                ("segment.ms".into(), Op::Set("5".into())),
            ],
            |n| n == "cleanup.policy",
            ok,
            |_| Some("delete".into()),
        )
        .unwrap();
        assert_eq!(out.get("retention.ms"), None);
        assert_eq!(out["cleanup.policy"], "delete,compact");
        assert_eq!(out["segment.ms"], "5");

        let out = apply_ops(
            out,
            vec![("cleanup.policy".into(), Op::Subtract("delete".into()))],
            |n| n == "cleanup.policy",
            ok,
            |_| None,
        )
        .unwrap();
        assert_eq!(out["cleanup.policy"], "compact");

        assert!(apply_ops(
            start.clone(),
            vec![("retention.ms".into(), Op::Append("5".into()))],
            |n| n == "cleanup.policy",
            ok,
            |_| None,
        )
        .is_err());
        assert!(apply_ops(
            start,
            vec![
                ("segment.ms".into(), Op::Set("1".into())),
                ("segment.ms".into(), Op::Delete)
            ],
            |_| false,
            ok,
            |_| None,
        )
        .is_err());
    }

    #[test]
    fn only_log_defaults_are_dynamic() {
        assert!(validate_broker_config("log.retention.ms", "1000").is_ok());
        assert_eq!(
            validate_broker_config("num.partitions", "3")
                .unwrap_err()
                .code,
            ResponseError::InvalidRequest
        );
        assert_eq!(
            validate_broker_config("log.retention.ms", "soon")
                .unwrap_err()
                .code,
            ResponseError::InvalidConfig
        );
    }
}
