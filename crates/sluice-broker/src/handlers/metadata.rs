//! Metadata: brokers, the controller, and topics with their partitions, leaders and replicas.
//! Unknown topics named in the request are created when `auto.create.topics.enable` and the
//! request allow it (v4+ carries `allow_auto_topic_creation`; older versions always allow).

use kafka_protocol::messages::metadata_request::MetadataRequest;
use kafka_protocol::messages::metadata_response::{
    MetadataResponse, MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::BrokerId;
use kafka_protocol::ResponseError;
use sluice_meta::{ClusterState, TopicConfigs, TopicInfo, Uuid};

use super::{str_bytes, topic_name};
use crate::controller::{Controller, NewTopic};
use crate::image::MetadataImage;

fn topic_entry(t: &TopicInfo) -> MetadataResponseTopic {
    MetadataResponseTopic::default()
        .with_name(Some(topic_name(&t.name)))
        .with_topic_id(t.topic_id)
        .with_is_internal(t.is_internal())
        .with_partitions(
            t.partitions
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    MetadataResponsePartition::default()
                        .with_partition_index(i as i32)
                        .with_error_code(if p.has_leader() {
                            0
                        } else {
                            ResponseError::LeaderNotAvailable.code()
                        })
                        .with_leader_id(BrokerId(p.leader.get()))
                        .with_leader_epoch(p.leader_epoch.get())
                        .with_replica_nodes(p.replicas.iter().map(|b| BrokerId(b.get())).collect())
                        .with_isr_nodes(p.isr.iter().map(|b| BrokerId(b.get())).collect())
                })
                .collect(),
        )
}

fn error_entry(name: Option<&str>, id: Uuid, error: ResponseError) -> MetadataResponseTopic {
    MetadataResponseTopic::default()
        .with_name(name.map(topic_name))
        .with_topic_id(id)
        .with_error_code(error.code())
}

/// Metadata reads the image; `auto_create` is `auto.create.topics.enable`, `controller_id` the
/// node reported as the controller.
pub async fn handle(
    image: &MetadataImage,
    controller: &Controller,
    auto_create: bool,
    controller_id: i32,
    req: MetadataRequest,
    version: i16,
) -> MetadataResponse {
    // v0 uses an empty list for "all topics"; v1+ uses null.
    let requested = match req.topics {
        Some(t) if !(version == 0 && t.is_empty()) => Some(t),
        _ => None,
    };
    let allow_create = auto_create && (version < 4 || req.allow_auto_topic_creation);

    let handle = image;
    let mut image = handle.load();
    // Topics whose auto-creation was refused, with why.
    let mut refused = std::collections::HashMap::new();
    if let (Some(wanted), true) = (&requested, allow_create) {
        let missing: Vec<NewTopic> = wanted
            .iter()
            .filter_map(|w| w.name.as_ref().map(|n| n.as_str()))
            .filter(|n| image.topic(n).is_none())
            .map(|name| NewTopic {
                name: name.to_string(),
                num_partitions: -1,
                replication_factor: -1,
                assignment: None,
                configs: TopicConfigs::new(),
            })
            .collect();
        if !missing.is_empty() {
            let names: Vec<String> = missing.iter().map(|t| t.name.clone()).collect();
            let created = controller.create_topics(missing, false).await;
            for (name, result) in names.into_iter().zip(created) {
                match result {
                    // Lost a race with another creator: what exists is reported below.
                    Err(e) if e.code != ResponseError::TopicAlreadyExists => {
                        refused.insert(name, e.code);
                    }
                    _ => {}
                }
            }
            image = handle.load();
        }
    }

    let topics = match requested {
        None => image.topics().map(topic_entry).collect(),
        Some(wanted) => wanted
            .iter()
            .map(|w| match w.name.as_ref().map(|n| n.as_str()) {
                None => match image.topic_by_id(&w.topic_id) {
                    Some(t) => topic_entry(t),
                    None => error_entry(None, w.topic_id, ResponseError::UnknownTopicId),
                },
                Some(name) => match image.topic(name) {
                    Some(t) => topic_entry(t),
                    // Auto-creation was refused (a bad name...), or it raced with a delete.
                    None if allow_create => error_entry(
                        Some(name),
                        Uuid::nil(),
                        refused
                            .get(name)
                            .copied()
                            .unwrap_or(ResponseError::LeaderNotAvailable),
                    ),
                    None => error_entry(
                        Some(name),
                        Uuid::nil(),
                        ResponseError::UnknownTopicOrPartition,
                    ),
                },
            })
            .collect(),
    };
    response(controller_id, &image, topics)
}

fn response(
    controller_id: i32,
    image: &ClusterState,
    topics: Vec<MetadataResponseTopic>,
) -> MetadataResponse {
    let brokers = image
        .live_brokers()
        .map(|b| {
            MetadataResponseBroker::default()
                .with_node_id(BrokerId(b.broker_id.get()))
                .with_host(str_bytes(&b.host))
                .with_port(b.port)
                .with_rack(b.rack.as_deref().map(str_bytes))
        })
        .collect();
    MetadataResponse::default()
        .with_brokers(brokers)
        .with_cluster_id(image.cluster_id.as_deref().map(str_bytes))
        // The active controller (combined mode: also a broker); -1 during an election.
        .with_controller_id(BrokerId(controller_id))
        .with_topics(topics)
}
