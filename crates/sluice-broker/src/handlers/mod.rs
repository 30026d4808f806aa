//! One module per Kafka API family. Each handler takes the decoded request and returns the
//! response body (or `None` when Kafka sends no response: Produce with `acks=0`).

pub mod api_versions;
pub mod cluster;
pub mod configs;
pub mod delete_records;
pub mod elections;
pub mod fetch;
pub mod groups;
pub mod leader_epochs;
pub mod list_offsets;
pub mod log_dirs;
pub mod metadata;
pub mod produce;
pub mod producers;
pub mod reassignments;
pub mod topics;

use std::net::SocketAddr;
use std::sync::Arc;

use kafka_protocol::messages::{RequestKind, ResponseKind, TopicName};
use kafka_protocol::protocol::StrBytes;
use sluice_protocol::request::Request;

use crate::broker::Broker;

/// A handler's answer as the connection sees it.
pub enum Reply {
    /// Ready (or `None`: nothing to send). Boxed: responses are large, and a connection keeps
    /// up to `MAX_IN_FLIGHT` replies queued.
    Now(Option<Box<ResponseKind>>),
    /// Still waiting (a produce's durability); the connection keeps reading meanwhile and
    /// writes this answer in its turn.
    Later(std::pin::Pin<Box<dyn std::future::Future<Output = Option<ResponseKind>> + Send>>),
}

/// Starts a request for a connection: produces are appended now and answered later, so the
/// connection can read its next request while their fsync is pending (appends stay in request
/// order, answers are written in request order). Everything else runs to completion here.
pub async fn begin(broker: &Arc<Broker>, request: Request, peer: SocketAddr) -> Reply {
    match request.body {
        RequestKind::Produce(r) => {
            let pending = produce::start(&broker.replicas, &broker.clock, r).await;
            let (broker, version) = (broker.clone(), request.version);
            Reply::Later(Box::pin(async move {
                let mut resp = pending.finish().await?;
                produce::add_leader_hints(&mut resp, &broker.image.load(), version);
                Some(ResponseKind::Produce(resp))
            }))
        }
        body => Reply::Now(
            dispatch(broker, Request { body, ..request }, peer)
                .await
                .map(Box::new),
        ),
    }
}

pub use crate::blocking::off_reactor;

/// Routes a decoded request to its handler. Only APIs in the version table reach this point.
pub async fn dispatch(
    broker: &Arc<Broker>,
    request: Request,
    peer: SocketAddr,
) -> Option<ResponseKind> {
    let version = request.version;
    let client_id = request
        .header
        .client_id
        .as_ref()
        .map_or(String::new(), |c| c.as_str().to_string());
    match request.body {
        RequestKind::ApiVersions(_) => Some(ResponseKind::ApiVersions(api_versions::handle(None))),
        // Metadata reads the image; what it auto-creates, and the topic changes below, are
        // written by the controller on the blocking pool.
        RequestKind::Metadata(r) => Some(ResponseKind::Metadata(
            metadata::handle(
                &broker.image,
                &broker.controller,
                broker.config.settings.auto_create_topics,
                broker
                    .controller
                    .active_controller()
                    .map_or(-1, |c| c as i32),
                r,
                version,
            )
            .await,
        )),
        RequestKind::CreateTopics(r) => Some(ResponseKind::CreateTopics(
            topics::create_topics(&broker.controller, r, version).await,
        )),
        RequestKind::DeleteTopics(r) => Some(ResponseKind::DeleteTopics(
            topics::delete_topics(&broker.image, &broker.controller, r, version).await,
        )),
        RequestKind::CreatePartitions(r) => Some(ResponseKind::CreatePartitions(
            topics::create_partitions(&broker.controller, r).await,
        )),
        // Index lookups read files; by-time lookups decompress batches.
        RequestKind::ListOffsets(r) => Some(ResponseKind::ListOffsets({
            let replicas = broker.replicas.clone();
            off_reactor(move || list_offsets::handle(&replicas, r, version)).await
        })),
        RequestKind::Produce(r) => {
            let mut resp = produce::handle(&broker.replicas, &broker.clock, r).await?;
            produce::add_leader_hints(&mut resp, &broker.image.load(), version);
            Some(ResponseKind::Produce(resp))
        }
        RequestKind::Fetch(r) => Some(ResponseKind::Fetch(
            fetch::handle(
                &broker.replicas,
                &broker.image,
                &broker.fetch_sessions,
                broker.config.settings.fetch_max_bytes,
                broker.stopping.subscribe(),
                r,
                version,
            )
            .await,
        )),
        RequestKind::FindCoordinator(r) => Some(ResponseKind::FindCoordinator(
            groups::find_coordinator(&broker.groups, r, version).await,
        )),
        RequestKind::JoinGroup(r) => Some(ResponseKind::JoinGroup(
            groups::join_group(&broker.groups, r, version, &client_id, peer).await,
        )),
        RequestKind::SyncGroup(r) => Some(ResponseKind::SyncGroup(
            groups::sync_group(&broker.groups, r, version).await,
        )),
        RequestKind::Heartbeat(r) => Some(ResponseKind::Heartbeat(groups::heartbeat(
            &broker.groups,
            r,
        ))),
        RequestKind::LeaveGroup(r) => Some(ResponseKind::LeaveGroup(groups::leave_group(
            &broker.groups,
            r,
            version,
        ))),
        RequestKind::OffsetCommit(r) => Some(ResponseKind::OffsetCommit(
            groups::offset_commit(&broker.groups, &broker.image, r, version).await,
        )),
        RequestKind::OffsetFetch(r) => Some(ResponseKind::OffsetFetch(
            groups::offset_fetch(&broker.groups, r, version).await,
        )),
        RequestKind::DescribeGroups(r) => Some(ResponseKind::DescribeGroups(
            groups::describe_groups(&broker.groups, r),
        )),
        RequestKind::ListGroups(r) => Some(ResponseKind::ListGroups(groups::list_groups(
            &broker.groups,
            r,
            version,
        ))),
        RequestKind::DeleteGroups(r) => Some(ResponseKind::DeleteGroups(
            groups::delete_groups(&broker.groups, r).await,
        )),
        RequestKind::OffsetDelete(r) => Some(ResponseKind::OffsetDelete(
            groups::offset_delete(&broker.groups, r).await,
        )),
        // May ask the controller for a new producer-id block.
        RequestKind::InitProducerId(r) => Some(ResponseKind::InitProducerId(
            producers::init_producer_id(&broker.producer_ids, r).await,
        )),
        RequestKind::DescribeProducers(r) => Some(ResponseKind::DescribeProducers(
            producers::describe_producers(&broker.replicas, r),
        )),
        // Reads the image; changes are written by the controller on the blocking pool.
        RequestKind::DescribeConfigs(r) => Some(ResponseKind::DescribeConfigs(
            configs::describe_configs(&config_handles(broker), r, version),
        )),
        RequestKind::IncrementalAlterConfigs(r) => Some(ResponseKind::IncrementalAlterConfigs(
            configs::incremental_alter_configs(&config_handles(broker), r).await,
        )),
        RequestKind::AlterConfigs(r) => Some(ResponseKind::AlterConfigs(
            configs::alter_configs(&config_handles(broker), r).await,
        )),
        // Reads the epoch cache, held in memory.
        RequestKind::OffsetForLeaderEpoch(r) => Some(ResponseKind::OffsetForLeaderEpoch(
            leader_epochs::handle(&broker.replicas, r),
        )),
        // Sizes and lags of the hosted logs, from memory.
        RequestKind::DescribeLogDirs(r) => Some(ResponseKind::DescribeLogDirs(log_dirs::handle(
            &broker.replicas,
            r,
        ))),
        RequestKind::DeleteRecords(r) => Some(ResponseKind::DeleteRecords(
            delete_records::handle(&broker.replicas, r).await,
        )),
        // Decided by the active controller.
        RequestKind::ElectLeaders(r) => Some(ResponseKind::ElectLeaders(
            elections::handle(&broker.controller, r, version).await,
        )),
        RequestKind::AlterPartitionReassignments(r) => {
            Some(ResponseKind::AlterPartitionReassignments(
                reassignments::alter(&broker.controller, r, version).await,
            ))
        }
        RequestKind::ListPartitionReassignments(r) => {
            Some(ResponseKind::ListPartitionReassignments(
                reassignments::list(&broker.controller, &broker.image, r).await,
            ))
        }
        RequestKind::DescribeCluster(r) => Some(ResponseKind::DescribeCluster(
            cluster::describe_cluster(&broker.image, &broker.controller, r, version),
        )),
        // Asks the active controller (over the controller listener) for its view.
        RequestKind::DescribeQuorum(r) => Some(ResponseKind::DescribeQuorum(
            cluster::describe_quorum(&broker.controller, r, version).await,
        )),
        other => {
            // The version table and this match disagree: a bug, not the client's fault.
            tracing::error!(request = ?std::mem::discriminant(&other), "no handler for an advertised API");
            None
        }
    }
}

fn config_handles(broker: &Broker) -> configs::ConfigHandles<'_> {
    configs::ConfigHandles {
        node_id: broker.config.node_id,
        static_settings: &broker.config.raw_settings,
        image: &broker.image,
        controller: &broker.controller,
    }
}

pub(crate) fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

pub(crate) fn topic_name(s: &str) -> TopicName {
    TopicName(str_bytes(s))
}
