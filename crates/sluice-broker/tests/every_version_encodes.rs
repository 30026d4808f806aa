//! Every advertised version of every API gets a response that encodes.
//!
//! `kafka-protocol` refuses to encode a response that sets a field its version lacks, and the
//! connection then has to be closed: a client at that version could never talk to us. This test
//! drives a real in-process broker with a realistic request per API (topics that exist, records
//! that were produced, groups that were joined) and encodes each answer at each version of the
//! version table, so an advertised version cannot be left untested.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use sluice_broker::config::{BrokerConfig, Durability, Settings};
use sluice_broker::handlers::dispatch;
use sluice_broker::Broker;
use sluice_protocol::batch::testing::build_batch;
use sluice_protocol::request::Request;
use sluice_protocol::response::encode_response;
use sluice_protocol::versions::SUPPORTED;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn topic(v: &str) -> TopicName {
    TopicName(s(v))
}

/// A request of `api` at `version` that reaches the handler's interesting path.
fn sample(api: ApiKey, version: i16, topic_id: uuid::Uuid) -> RequestKind {
    let t = "t";
    let by_id = |v: i16| v >= 13;
    match api {
        ApiKey::ApiVersions => RequestKind::ApiVersions(ApiVersionsRequest::default()),
        ApiKey::Metadata => {
            RequestKind::Metadata(MetadataRequest::default().with_topics(Some(vec![
                metadata_request::MetadataRequestTopic::default().with_name(Some(topic(t))),
            ])))
        }
        ApiKey::CreateTopics => {
            RequestKind::CreateTopics(CreateTopicsRequest::default().with_topics(vec![
            create_topics_request::CreatableTopic::default()
                .with_name(topic(&format!("created-{version}")))
                .with_num_partitions(1)
                .with_replication_factor(1),
            create_topics_request::CreatableTopic::default()
                .with_name(topic(t))
                .with_num_partitions(1)
                .with_replication_factor(1),
        ]))
        }
        ApiKey::DeleteTopics => {
            let name = format!("created-{}", 2);
            if version >= 6 {
                RequestKind::DeleteTopics(
                    DeleteTopicsRequest::default()
                        .with_topics(vec![delete_topics_request::DeleteTopicState::default()
                            .with_name(Some(topic("missing")))]),
                )
            } else {
                RequestKind::DeleteTopics(
                    DeleteTopicsRequest::default()
                        .with_topic_names(vec![topic(&name), topic("missing")]),
                )
            }
        }
        ApiKey::CreatePartitions => {
            RequestKind::CreatePartitions(CreatePartitionsRequest::default().with_topics(vec![
                create_partitions_request::CreatePartitionsTopic::default()
                    .with_name(topic(t))
                    .with_count(1),
            ]))
        }
        ApiKey::Produce => {
            let batch = build_batch(
                0,
                &[(
                    Some(b"k".as_slice()),
                    Some(b"v".as_slice()),
                    1_700_000_000_000,
                )],
            );
            RequestKind::Produce(
                ProduceRequest::default()
                    .with_acks(1)
                    .with_timeout_ms(10_000)
                    .with_topic_data(vec![produce_request::TopicProduceData::default()
                        .with_name(topic(t))
                        .with_partition_data(vec![
                            produce_request::PartitionProduceData::default()
                                .with_index(0)
                                .with_records(Some(Bytes::from(batch))),
                            produce_request::PartitionProduceData::default().with_index(9),
                        ])]),
            )
        }
        ApiKey::Fetch => {
            let ft = if by_id(version) {
                fetch_request::FetchTopic::default().with_topic_id(topic_id)
            } else {
                fetch_request::FetchTopic::default().with_topic(topic(t))
            };
            RequestKind::Fetch(
                FetchRequest::default()
                    .with_max_bytes(1 << 20)
                    .with_topics(vec![ft.with_partitions(vec![
                        fetch_request::FetchPartition::default()
                            .with_partition(0)
                            .with_partition_max_bytes(1 << 20),
                        fetch_request::FetchPartition::default()
                            .with_partition(1)
                            .with_fetch_offset(1_000)
                            .with_partition_max_bytes(1 << 20),
                    ])]),
            )
        }
        ApiKey::ListOffsets => {
            RequestKind::ListOffsets(ListOffsetsRequest::default().with_topics(vec![
                list_offsets_request::ListOffsetsTopic::default()
                    .with_name(topic(t))
                    .with_partitions(vec![
                        list_offsets_request::ListOffsetsPartition::default()
                            .with_partition_index(0)
                            .with_timestamp(-1),
                        list_offsets_request::ListOffsetsPartition::default()
                            .with_partition_index(0)
                            .with_timestamp(0),
                    ]),
            ]))
        }
        ApiKey::FindCoordinator => {
            let r = FindCoordinatorRequest::default();
            RequestKind::FindCoordinator(if version >= 4 {
                r.with_coordinator_keys(vec![s("g"), s("h")])
            } else {
                r.with_key(s("g"))
            })
        }
        ApiKey::JoinGroup => RequestKind::JoinGroup(
            JoinGroupRequest::default()
                .with_group_id(GroupId(s(&format!("join-{version}"))))
                .with_session_timeout_ms(10_000)
                .with_rebalance_timeout_ms(10_000)
                .with_protocol_type(s("consumer"))
                .with_protocols(vec![join_group_request::JoinGroupRequestProtocol::default(
                )
                .with_name(s("range"))]),
        ),
        ApiKey::SyncGroup => RequestKind::SyncGroup(
            SyncGroupRequest::default()
                .with_group_id(GroupId(s("join-0")))
                .with_generation_id(1)
                .with_member_id(s("nobody")),
        ),
        ApiKey::Heartbeat => RequestKind::Heartbeat(
            HeartbeatRequest::default()
                .with_group_id(GroupId(s("join-0")))
                .with_member_id(s("nobody")),
        ),
        ApiKey::LeaveGroup => {
            let r = LeaveGroupRequest::default().with_group_id(GroupId(s("join-0")));
            RequestKind::LeaveGroup(if version >= 3 {
                r.with_members(vec![
                    leave_group_request::MemberIdentity::default().with_member_id(s("nobody"))
                ])
            } else {
                r.with_member_id(s("nobody"))
            })
        }
        ApiKey::OffsetCommit => RequestKind::OffsetCommit(
            OffsetCommitRequest::default()
                .with_group_id(GroupId(s("simple")))
                .with_generation_id_or_member_epoch(-1)
                .with_topics(vec![
                    offset_commit_request::OffsetCommitRequestTopic::default()
                        .with_name(topic(t))
                        .with_partitions(vec![
                            offset_commit_request::OffsetCommitRequestPartition::default()
                                .with_partition_index(0)
                                .with_committed_offset(1),
                        ]),
                ]),
        ),
        ApiKey::OffsetFetch => RequestKind::OffsetFetch(if version >= 8 {
            OffsetFetchRequest::default().with_groups(vec![
                offset_fetch_request::OffsetFetchRequestGroup::default()
                    .with_group_id(GroupId(s("simple"))),
                offset_fetch_request::OffsetFetchRequestGroup::default()
                    .with_group_id(GroupId(s("simple")))
                    .with_topics(Some(vec![
                        offset_fetch_request::OffsetFetchRequestTopics::default()
                            .with_name(topic(t))
                            .with_partition_indexes(vec![0, 1]),
                    ])),
            ])
        } else {
            OffsetFetchRequest::default()
                .with_group_id(GroupId(s("simple")))
                .with_topics(Some(vec![
                    offset_fetch_request::OffsetFetchRequestTopic::default()
                        .with_name(topic(t))
                        .with_partition_indexes(vec![0, 1]),
                ]))
        }),
        ApiKey::DescribeGroups => {
            RequestKind::DescribeGroups(DescribeGroupsRequest::default().with_groups(vec![
                GroupId(s("join-0")),
                GroupId(s("simple")),
                GroupId(s("none")),
            ]))
        }
        ApiKey::ListGroups => RequestKind::ListGroups(ListGroupsRequest::default()),
        ApiKey::DeleteGroups => RequestKind::DeleteGroups(
            DeleteGroupsRequest::default().with_groups_names(vec![GroupId(s("none"))]),
        ),
        ApiKey::OffsetDelete => RequestKind::OffsetDelete(
            OffsetDeleteRequest::default()
                .with_group_id(GroupId(s("simple")))
                .with_topics(vec![
                    offset_delete_request::OffsetDeleteRequestTopic::default()
                        .with_name(topic(t))
                        .with_partitions(vec![
                            offset_delete_request::OffsetDeleteRequestPartition::default()
                                .with_partition_index(1),
                        ]),
                ]),
        ),
        ApiKey::InitProducerId => RequestKind::InitProducerId(
            InitProducerIdRequest::default()
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1),
        ),
        ApiKey::DescribeProducers => {
            RequestKind::DescribeProducers(DescribeProducersRequest::default().with_topics(vec![
                describe_producers_request::TopicRequest::default()
                    .with_name(topic(t))
                    .with_partition_indexes(vec![0, 7]),
            ]))
        }
        ApiKey::DescribeConfigs => RequestKind::DescribeConfigs(
            DescribeConfigsRequest::default()
                .with_include_synonyms(true)
                .with_include_documentation(true)
                .with_resources(vec![
                    describe_configs_request::DescribeConfigsResource::default()
                        .with_resource_type(2)
                        .with_resource_name(s(t)),
                    describe_configs_request::DescribeConfigsResource::default()
                        .with_resource_type(4)
                        .with_resource_name(s("1")),
                    describe_configs_request::DescribeConfigsResource::default()
                        .with_resource_type(2)
                        .with_resource_name(s("missing")),
                ]),
        ),
        ApiKey::IncrementalAlterConfigs => RequestKind::IncrementalAlterConfigs(
            IncrementalAlterConfigsRequest::default().with_resources(vec![
                incremental_alter_configs_request::AlterConfigsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(s(t))
                    .with_configs(vec![
                        incremental_alter_configs_request::AlterableConfig::default()
                            .with_name(s("retention.ms"))
                            .with_value(Some(s("86400000"))),
                    ]),
            ]),
        ),
        ApiKey::AlterConfigs => {
            RequestKind::AlterConfigs(AlterConfigsRequest::default().with_resources(vec![
                alter_configs_request::AlterConfigsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(s(t))
                    .with_configs(vec![alter_configs_request::AlterableConfig::default()
                        .with_name(s("retention.ms"))
                        .with_value(Some(s("86400000")))]),
            ]))
        }
        ApiKey::DeleteRecords => {
            RequestKind::DeleteRecords(DeleteRecordsRequest::default().with_topics(vec![
                delete_records_request::DeleteRecordsTopic::default()
                    .with_name(topic(t))
                    .with_partitions(vec![
                        delete_records_request::DeleteRecordsPartition::default()
                            .with_partition_index(0)
                            .with_offset(0),
                    ]),
            ]))
        }
        ApiKey::OffsetForLeaderEpoch => RequestKind::OffsetForLeaderEpoch(
            OffsetForLeaderEpochRequest::default()
                .with_replica_id(BrokerId(-1))
                .with_topics(vec![
                    offset_for_leader_epoch_request::OffsetForLeaderTopic::default()
                        .with_topic(topic(t))
                        .with_partitions(vec![
                            offset_for_leader_epoch_request::OffsetForLeaderPartition::default()
                                .with_partition(0)
                                .with_current_leader_epoch(-1)
                                .with_leader_epoch(0),
                        ]),
                ]),
        ),
        ApiKey::ElectLeaders => RequestKind::ElectLeaders(
            ElectLeadersRequest::default()
                .with_election_type(if version >= 1 { 1 } else { 0 })
                .with_topic_partitions(Some(vec![elect_leaders_request::TopicPartitions::default(
                )
                .with_topic(topic(t))
                .with_partitions(vec![0])]))
                .with_timeout_ms(5000),
        ),
        // A move to the replicas it has, a cancel with nothing under way, an unknown topic:
        // answers with and without errors and messages.
        ApiKey::AlterPartitionReassignments => RequestKind::AlterPartitionReassignments(
            AlterPartitionReassignmentsRequest::default()
                .with_timeout_ms(5000)
                .with_allow_replication_factor_change(version == 0)
                .with_topics(vec![
                    alter_partition_reassignments_request::ReassignableTopic::default()
                        .with_name(topic(t))
                        .with_partitions(vec![
                            alter_partition_reassignments_request::ReassignablePartition::default()
                                .with_partition_index(0)
                                .with_replicas(Some(vec![BrokerId(1)])),
                            alter_partition_reassignments_request::ReassignablePartition::default()
                                .with_partition_index(1)
                                .with_replicas(None),
                        ]),
                    alter_partition_reassignments_request::ReassignableTopic::default()
                        .with_name(topic("missing"))
                        .with_partitions(vec![
                            alter_partition_reassignments_request::ReassignablePartition::default()
                                .with_partition_index(0)
                                .with_replicas(Some(vec![BrokerId(1)])),
                        ]),
                ]),
        ),
        ApiKey::ListPartitionReassignments => RequestKind::ListPartitionReassignments(
            ListPartitionReassignmentsRequest::default()
                .with_timeout_ms(5000)
                .with_topics(None),
        ),
        ApiKey::DescribeCluster => RequestKind::DescribeCluster(
            DescribeClusterRequest::default()
                .with_endpoint_type(1)
                .with_include_fenced_brokers(true),
        ),
        ApiKey::DescribeQuorum => {
            RequestKind::DescribeQuorum(DescribeQuorumRequest::default().with_topics(vec![
                describe_quorum_request::TopicData::default()
                    .with_topic_name(topic("__cluster_metadata"))
                    .with_partitions(vec![
                        describe_quorum_request::PartitionData::default().with_partition_index(0),
                    ]),
            ]))
        }
        ApiKey::DescribeLogDirs => RequestKind::DescribeLogDirs(
            // Every log dir (null topics) and one topic by name: both shapes of the answer.
            if version % 2 == 0 {
                DescribeLogDirsRequest::default().with_topics(None)
            } else {
                DescribeLogDirsRequest::default().with_topics(Some(vec![
                    describe_log_dirs_request::DescribableLogDirTopic::default()
                        .with_topic(topic(t))
                        .with_partitions(vec![0]),
                ]))
            },
        ),
        other => panic!("no sample request for {other:?}: add one with its handler"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_advertised_version_encodes() {
    let dir = tempfile::tempdir().unwrap();
    let settings = Settings::load(None, &["group.initial.rebalance.delay.ms=0".into()]).unwrap();
    let listen: SocketAddr = "127.0.0.1:9092".parse().unwrap();
    let config = BrokerConfig::new(
        1,
        listen,
        None,
        dir.path().to_path_buf(),
        Durability::Relaxed,
        &settings,
    )
    .unwrap();
    let broker: Arc<Broker> = Broker::open(config).await.unwrap();
    // The group coordinator's timers complete join phases (server::run starts them normally).
    tokio::spawn(
        broker
            .groups
            .clone()
            .run_timers(broker.stopping.subscribe()),
    );
    let t = broker
        .controller
        .create_topics(
            vec![sluice_broker::controller::NewTopic::new("t", 2)],
            false,
        )
        .await
        .remove(0)
        .unwrap();
    let peer: SocketAddr = "127.0.0.1:50000".parse().unwrap();

    for &(api, min, max) in SUPPORTED {
        for version in min..=max {
            let request = Request {
                api_key: api,
                version,
                header: RequestHeader::default().with_client_id(Some(s("test"))),
                body: sample(api, version, t.topic_id),
            };
            let response = tokio::time::timeout(
                std::time::Duration::from_secs(20),
                dispatch(&broker, request, peer),
            )
            .await
            .unwrap_or_else(|_| panic!("{api:?} v{version}: no answer within 20 s"));
            let Some(response) = response else {
                panic!("{api:?} v{version}: no response");
            };
            if let Err(e) = encode_response(api, version, 7, &response) {
                panic!("{api:?} v{version}: {e}\nresponse: {response:?}");
            }
        }
    }
}
