//! Metadata: brokers, the controller, and topics with their partitions, leaders and replicas.
//! Unknown topics named in the request are created when `auto.create.topics.enable` and the
//! request allow it (v4+ carries `allow_auto_topic_creation`; older versions always allow).

use std::sync::Arc;

use kafka_protocol::messages::metadata_request::MetadataRequest;
use kafka_protocol::messages::metadata_response::{
    MetadataResponse, MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::BrokerId;
use kafka_protocol::ResponseError;
use sluice_meta::{TopicConfigs, TopicInfo, Uuid};

use super::{str_bytes, topic_name};
use crate::broker::Broker;

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
                        .with_leader_id(BrokerId(p.leader))
                        .with_leader_epoch(p.leader_epoch)
                        .with_replica_nodes(p.replicas.iter().map(|b| BrokerId(*b)).collect())
                        .with_isr_nodes(p.isr.iter().map(|b| BrokerId(*b)).collect())
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

pub fn handle(broker: &Arc<Broker>, req: MetadataRequest, version: i16) -> MetadataResponse {
    // v0 uses an empty list for "all topics"; v1+ uses null.
    let requested = match req.topics {
        Some(t) if !(version == 0 && t.is_empty()) => Some(t),
        _ => None,
    };
    let allow_create =
        broker.config.auto_create_topics && (version < 4 || req.allow_auto_topic_creation);

    let topics = match requested {
        None => {
            let meta = broker.meta.lock().expect("meta lock");
            meta.state().topics().map(topic_entry).collect()
        }
        Some(wanted) => wanted
            .iter()
            .map(|w| {
                let Some(name) = w.name.as_ref().map(|n| n.as_str()) else {
                    let meta = broker.meta.lock().expect("meta lock");
                    return match meta.state().topic_by_id(&w.topic_id) {
                        Some(t) => topic_entry(t),
                        None => error_entry(None, w.topic_id, ResponseError::UnknownTopicId),
                    };
                };
                if let Some(t) = broker.meta.lock().expect("meta lock").state().topic(name) {
                    return topic_entry(t);
                }
                if !allow_create {
                    return error_entry(
                        Some(name),
                        Uuid::nil(),
                        ResponseError::UnknownTopicOrPartition,
                    );
                }
                let created = broker.create_topic(name, -1, -1, None, TopicConfigs::new(), false);
                match created {
                    Ok(t) => topic_entry(&t),
                    // Lost a race with another creator: report what exists now.
                    Err(e) if e.code == ResponseError::TopicAlreadyExists => {
                        match broker.meta.lock().expect("meta lock").state().topic(name) {
                            Some(t) => topic_entry(t),
                            None => error_entry(
                                Some(name),
                                Uuid::nil(),
                                ResponseError::LeaderNotAvailable,
                            ),
                        }
                    }
                    Err(e) => error_entry(Some(name), Uuid::nil(), e.code),
                }
            })
            .collect(),
    };

    let meta = broker.meta.lock().expect("meta lock");
    let brokers = meta
        .state()
        .brokers
        .values()
        .map(|b| {
            MetadataResponseBroker::default()
                .with_node_id(BrokerId(b.broker_id))
                .with_host(str_bytes(&b.host))
                .with_port(b.port)
                .with_rack(b.rack.as_deref().map(str_bytes))
        })
        .collect();
    MetadataResponse::default()
        .with_brokers(brokers)
        .with_cluster_id(Some(str_bytes(meta.cluster_id())))
        // A single node is its own controller (KRaft combined mode).
        .with_controller_id(BrokerId(broker.config.node_id))
        .with_topics(topics)
}
