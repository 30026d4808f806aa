//! Consumer groups (classic protocol) and committed offsets: FindCoordinator, JoinGroup,
//! SyncGroup, Heartbeat, LeaveGroup, OffsetCommit, OffsetFetch, DescribeGroups, ListGroups,
//! DeleteGroups, OffsetDelete. Decoding versions into the machine's types and back happens here;
//! the group semantics live in `sluice-group`, the offsets in `coordinator::offsets`.

use std::net::SocketAddr;

use bytes::{Buf, Bytes};
use kafka_protocol::messages::delete_groups_request::DeleteGroupsRequest;
use kafka_protocol::messages::delete_groups_response::{
    DeletableGroupResult, DeleteGroupsResponse,
};
use kafka_protocol::messages::describe_groups_request::DescribeGroupsRequest;
use kafka_protocol::messages::describe_groups_response::{
    DescribeGroupsResponse, DescribedGroup, DescribedGroupMember,
};
use kafka_protocol::messages::find_coordinator_request::FindCoordinatorRequest;
use kafka_protocol::messages::find_coordinator_response::{Coordinator, FindCoordinatorResponse};
use kafka_protocol::messages::heartbeat_request::HeartbeatRequest;
use kafka_protocol::messages::heartbeat_response::HeartbeatResponse;
use kafka_protocol::messages::join_group_request::JoinGroupRequest;
use kafka_protocol::messages::join_group_response::{JoinGroupResponse, JoinGroupResponseMember};
use kafka_protocol::messages::leave_group_request::LeaveGroupRequest;
use kafka_protocol::messages::leave_group_response::{LeaveGroupResponse, MemberResponse};
use kafka_protocol::messages::list_groups_request::ListGroupsRequest;
use kafka_protocol::messages::list_groups_response::{ListGroupsResponse, ListedGroup};
use kafka_protocol::messages::offset_commit_request::OffsetCommitRequest;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponse, OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_delete_request::OffsetDeleteRequest;
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponse, OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequest;
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponse, OffsetFetchResponseGroup, OffsetFetchResponsePartition,
    OffsetFetchResponsePartitions, OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{BrokerId, GroupId};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use sluice_group::{
    CommitKind, GroupError, GroupState, JoinRequest, LeaveMember, MemberAssignment, Protocol,
    SyncRequest,
};

use super::{str_bytes, topic_name};
use crate::coordinator::offsets::{CommittedOffset, OffsetStore};
use crate::coordinator::Coordinator as GroupCoordinator;
use crate::error::{group_error_code, ApiError};
use crate::image::MetadataImage;
use sluice_types::PartitionId;

/// Kafka's `offset.metadata.max.bytes`.
const OFFSET_METADATA_MAX_BYTES: usize = 4096;

fn group_id(s: &str) -> GroupId {
    GroupId(str_bytes(s))
}

fn opt(s: &Option<StrBytes>) -> Option<String> {
    s.as_ref().map(|v| v.as_str().to_string())
}

// ---------------------------------------------------------------- FindCoordinator

pub async fn find_coordinator(
    groups: &GroupCoordinator,
    req: FindCoordinatorRequest,
    version: i16,
) -> FindCoordinatorResponse {
    let keys: Vec<String> = if version >= 4 {
        req.coordinator_keys
            .iter()
            .map(|k| k.as_str().to_string())
            .collect()
    } else {
        vec![req.key.as_str().to_string()]
    };
    let mut coordinators = Vec::with_capacity(keys.len());
    for key in keys {
        let outcome = match req.key_type {
            0 => groups.coordinator_for(&key).await,
            1 => Err(ApiError::new(
                ResponseError::CoordinatorNotAvailable,
                "transactions are not supported yet",
            )),
            other => Err(ApiError::new(
                ResponseError::InvalidRequest,
                format!("unknown coordinator key type {other}"),
            )),
        };
        let c = Coordinator::default().with_key(str_bytes(&key));
        coordinators.push(match outcome {
            Ok(b) => c
                .with_node_id(BrokerId(b.broker_id.get()))
                .with_host(str_bytes(&b.host))
                .with_port(b.port),
            Err(e) => c
                .with_node_id(BrokerId(-1))
                .with_port(-1)
                .with_error_code(e.code.code())
                .with_error_message(e.message.as_deref().map(str_bytes)),
        });
    }
    if version >= 4 {
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    let c = coordinators.pop().expect("one key");
    let mut resp = FindCoordinatorResponse::default()
        .with_error_code(c.error_code)
        .with_node_id(c.node_id)
        .with_host(c.host)
        .with_port(c.port);
    if version >= 1 {
        resp = resp.with_error_message(c.error_message);
    }
    resp
}

// ---------------------------------------------------------------- JoinGroup / SyncGroup

pub async fn join_group(
    groups: &GroupCoordinator,
    req: JoinGroupRequest,
    version: i16,
    client_id: &str,
    peer: SocketAddr,
) -> JoinGroupResponse {
    let member_id = req.member_id.as_str().to_string();
    let protocol_name_for_errors = if version >= 7 {
        None
    } else {
        Some(str_bytes(""))
    };
    let failed = |code: ResponseError, member_id: &str| {
        JoinGroupResponse::default()
            .with_error_code(code.code())
            .with_generation_id(-1)
            .with_protocol_name(protocol_name_for_errors.clone())
            .with_member_id(str_bytes(member_id))
    };
    if req.group_id.is_empty() {
        return failed(ResponseError::InvalidGroupId, &member_id);
    }
    let join = JoinRequest {
        group_id: req.group_id.as_str().to_string(),
        member_id: member_id.clone(),
        group_instance_id: opt(&req.group_instance_id),
        protocol_type: req.protocol_type.as_str().to_string(),
        protocols: req
            .protocols
            .iter()
            .map(|p| Protocol {
                name: p.name.as_str().to_string(),
                metadata: p.metadata.clone(),
            })
            .collect(),
        session_timeout_ms: req.session_timeout_ms,
        rebalance_timeout_ms: if version >= 1 {
            req.rebalance_timeout_ms
        } else {
            req.session_timeout_ms
        },
        client_id: client_id.to_string(),
        client_host: format!("/{}", peer.ip()),
        require_known_member_id: version >= 4,
        supports_skip_assignment: version >= 9,
        reason: opt(&req.reason),
    };
    match groups.join(join).await {
        Ok(r) => {
            let mut resp = JoinGroupResponse::default()
                .with_generation_id(r.generation_id)
                .with_leader(str_bytes(&r.leader))
                .with_member_id(str_bytes(&r.member_id))
                .with_members(
                    r.members
                        .into_iter()
                        .map(|m| {
                            let mut jm = JoinGroupResponseMember::default()
                                .with_member_id(str_bytes(&m.member_id))
                                .with_metadata(m.metadata);
                            if version >= 5 {
                                jm = jm.with_group_instance_id(
                                    m.group_instance_id.as_deref().map(str_bytes),
                                );
                            }
                            jm
                        })
                        .collect(),
                );
            resp = resp.with_protocol_name(match (&r.protocol_name, version >= 7) {
                (Some(n), _) => Some(str_bytes(n)),
                (None, true) => None,
                (None, false) => Some(str_bytes("")),
            });
            if version >= 7 {
                resp = resp.with_protocol_type(r.protocol_type.as_deref().map(str_bytes));
            }
            if version >= 9 {
                resp = resp.with_skip_assignment(r.skip_assignment);
            }
            resp
        }
        Err(GroupError::MemberIdRequired { member_id }) => {
            failed(ResponseError::MemberIdRequired, &member_id)
        }
        Err(e) => failed(group_error_code(&e), &member_id),
    }
}

pub async fn sync_group(
    groups: &GroupCoordinator,
    req: SyncGroupRequest,
    version: i16,
) -> SyncGroupResponse {
    let sync = SyncRequest {
        group_id: req.group_id.as_str().to_string(),
        generation_id: req.generation_id,
        member_id: req.member_id.as_str().to_string(),
        group_instance_id: opt(&req.group_instance_id),
        protocol_type: if version >= 5 {
            opt(&req.protocol_type)
        } else {
            None
        },
        protocol_name: if version >= 5 {
            opt(&req.protocol_name)
        } else {
            None
        },
        assignments: req
            .assignments
            .iter()
            .map(|a| MemberAssignment {
                member_id: a.member_id.as_str().to_string(),
                assignment: a.assignment.clone(),
            })
            .collect(),
    };
    if sync.group_id.is_empty() {
        return SyncGroupResponse::default().with_error_code(ResponseError::InvalidGroupId.code());
    }
    match groups.sync(sync).await {
        Ok(r) => {
            let mut resp = SyncGroupResponse::default().with_assignment(r.assignment);
            if version >= 5 {
                resp = resp
                    .with_protocol_type(r.protocol_type.as_deref().map(str_bytes))
                    .with_protocol_name(r.protocol_name.as_deref().map(str_bytes));
            }
            resp
        }
        Err(e) => SyncGroupResponse::default()
            .with_error_code(group_error_code(&e).code())
            .with_assignment(Bytes::new()),
    }
}

use kafka_protocol::messages::sync_group_request::SyncGroupRequest;
use kafka_protocol::messages::sync_group_response::SyncGroupResponse;

// ---------------------------------------------------------------- Heartbeat / LeaveGroup

pub fn heartbeat(groups: &GroupCoordinator, req: HeartbeatRequest) -> HeartbeatResponse {
    let group = req.group_id.as_str().to_string();
    let member = req.member_id.as_str().to_string();
    let instance = opt(&req.group_instance_id);
    let result = groups
        .with_group(&group, |g, now| {
            (
                g.heartbeat(&group, &member, instance.as_deref(), req.generation_id, now),
                Vec::new(),
            )
        })
        .and_then(|(_, r)| r);
    HeartbeatResponse::default().with_error_code(match result {
        Ok(()) => 0,
        Err(e) => group_error_code(&e).code(),
    })
}

pub fn leave_group(
    groups: &GroupCoordinator,
    req: LeaveGroupRequest,
    version: i16,
) -> LeaveGroupResponse {
    let group = req.group_id.as_str().to_string();
    let members: Vec<LeaveMember> = if version >= 3 {
        req.members
            .iter()
            .map(|m| LeaveMember {
                member_id: m.member_id.as_str().to_string(),
                group_instance_id: opt(&m.group_instance_id),
            })
            .collect()
    } else {
        vec![LeaveMember {
            member_id: req.member_id.as_str().to_string(),
            group_instance_id: None,
        }]
    };
    let result = groups
        .with_group(&group, |g, now| {
            match g.leave_group(&group, &members, now) {
                Ok(r) => {
                    let outputs = r.outputs.clone();
                    (Ok(r), outputs)
                }
                Err(e) => (Err(e), Vec::new()),
            }
        })
        .and_then(|(_, r)| r);
    let result = match result {
        Ok(r) => r,
        Err(e) => {
            return LeaveGroupResponse::default().with_error_code(group_error_code(&e).code())
        }
    };
    let codes: Vec<i16> = result
        .members
        .iter()
        .map(|r| r.as_ref().err().map_or(0, |e| group_error_code(e).code()))
        .collect();
    if version < 3 {
        return LeaveGroupResponse::default().with_error_code(codes[0]);
    }
    LeaveGroupResponse::default().with_members(
        members
            .iter()
            .zip(codes)
            .map(|(m, code)| {
                MemberResponse::default()
                    .with_member_id(str_bytes(&m.member_id))
                    .with_group_instance_id(m.group_instance_id.as_deref().map(str_bytes))
                    .with_error_code(code)
            })
            .collect(),
    )
}

// ---------------------------------------------------------------- OffsetCommit / OffsetFetch

pub async fn offset_commit(
    groups: &GroupCoordinator,
    image: &MetadataImage,
    req: OffsetCommitRequest,
    version: i16,
) -> OffsetCommitResponse {
    let group = req.group_id.as_str().to_string();
    let member = req.member_id.as_str().to_string();
    let instance = if version >= 7 {
        opt(&req.group_instance_id)
    } else {
        None
    };
    let generation = req.generation_id_or_member_epoch;
    // The group's offsets partition, if this broker coordinates it and the commit is valid.
    let store: Result<i32, ResponseError> = if group.is_empty() {
        Err(ResponseError::InvalidGroupId)
    } else {
        groups
            .with_group(&group, |g, now| {
                (
                    g.validate_offset_commit(&group, &member, instance.as_deref(), generation, now),
                    Vec::new(),
                )
            })
            .and_then(|(index, valid)| valid.map(|_: CommitKind| index))
            .map_err(|e| group_error_code(&e))
    };
    let now = groups.now_ms();
    // Kafka checks the metadata, not the local partitions: the topic's partitions may live on
    // other brokers.
    let image = image.load();
    // Per-partition checks first; only valid partitions are written.
    let mut codes: Vec<Vec<i16>> = Vec::new();
    let mut writes = Vec::new();
    for t in &req.topics {
        let mut topic_codes = Vec::new();
        for p in &t.partitions {
            let code = match &store {
                Err(code) => code.code(),
                Ok(_)
                    if image
                        .topic(t.name.as_str())
                        .and_then(|t| t.partition(PartitionId(p.partition_index)))
                        .is_none() =>
                {
                    ResponseError::UnknownTopicOrPartition.code()
                }
                Ok(_)
                    if p.committed_metadata.as_ref().map_or(0, |m| m.len())
                        > OFFSET_METADATA_MAX_BYTES =>
                {
                    ResponseError::OffsetMetadataTooLarge.code()
                }
                Ok(_) => {
                    writes.push((
                        (t.name.as_str().to_string(), p.partition_index),
                        CommittedOffset {
                            offset: p.committed_offset,
                            leader_epoch: if version >= 6 {
                                p.committed_leader_epoch
                            } else {
                                -1
                            },
                            metadata: opt(&p.committed_metadata),
                            commit_timestamp: now,
                        },
                    ));
                    0
                }
            };
            topic_codes.push(code);
        }
        codes.push(topic_codes);
    }
    if let Ok(index) = store {
        if !writes.is_empty() {
            let outcome = groups.store.commit(index, &group, writes, now).await;
            match outcome {
                Ok(()) => {
                    let _ = groups
                        .with_group(&group, |g, _| (g.set_has_offsets(&group, true), Vec::new()));
                }
                Err(e) => {
                    for c in codes.iter_mut().flatten() {
                        if *c == 0 {
                            *c = e.code.code();
                        }
                    }
                }
            }
        }
    }
    OffsetCommitResponse::default().with_topics(
        req.topics
            .iter()
            .zip(codes)
            .map(|(t, topic_codes)| {
                OffsetCommitResponseTopic::default()
                    .with_name(t.name.clone())
                    .with_partitions(
                        t.partitions
                            .iter()
                            .zip(topic_codes)
                            .map(|(p, code)| {
                                OffsetCommitResponsePartition::default()
                                    .with_partition_index(p.partition_index)
                                    .with_error_code(code)
                            })
                            .collect(),
                    )
            })
            .collect(),
    )
}

/// `(topic, [(partition, committed offset if any)])`.
type TopicOffsets = (String, Vec<(i32, Option<CommittedOffset>)>);

/// Committed offsets of `group` for the requested partitions (all committed ones when `None`),
/// in request order.
fn fetch_offsets(
    store: &OffsetStore,
    index: i32,
    group: &str,
    topics: Option<Vec<(String, Vec<i32>)>>,
) -> Vec<TopicOffsets> {
    match topics {
        Some(topics) => topics
            .into_iter()
            .map(|(t, parts)| {
                let found = parts
                    .into_iter()
                    .map(|p| (p, store.get(index, group, &(t.clone(), p))))
                    .collect();
                (t, found)
            })
            .collect(),
        None => {
            let mut out: Vec<TopicOffsets> = Vec::new();
            for ((t, p), v) in store.all(index, group) {
                match out.last_mut() {
                    Some((last, parts)) if *last == t => parts.push((p, Some(v))),
                    _ => out.push((t, vec![(p, Some(v))])),
                }
            }
            out
        }
    }
}

pub async fn offset_fetch(
    groups: &GroupCoordinator,
    req: OffsetFetchRequest,
    version: i16,
) -> OffsetFetchResponse {
    let store = &groups.store;
    if version >= 8 {
        let groups = req
            .groups
            .iter()
            .map(|g| {
                let index = match groups.owner(g.group_id.as_str()) {
                    Ok(index) => index,
                    Err(e) => {
                        return OffsetFetchResponseGroup::default()
                            .with_group_id(g.group_id.clone())
                            .with_error_code(group_error_code(&e).code())
                    }
                };
                let wanted = g.topics.as_ref().map(|ts| {
                    ts.iter()
                        .map(|t| (t.name.as_str().to_string(), t.partition_indexes.clone()))
                        .collect()
                });
                let topics = fetch_offsets(store, index, g.group_id.as_str(), wanted)
                    .into_iter()
                    .map(|(t, parts)| {
                        OffsetFetchResponseTopics::default()
                            .with_name(topic_name(&t))
                            .with_partitions(
                                parts
                                    .into_iter()
                                    .map(|(p, v)| {
                                        let (offset, epoch, meta) = committed_fields(v);
                                        OffsetFetchResponsePartitions::default()
                                            .with_partition_index(p)
                                            .with_committed_offset(offset)
                                            .with_committed_leader_epoch(epoch)
                                            .with_metadata(Some(str_bytes(&meta)))
                                    })
                                    .collect(),
                            )
                    })
                    .collect();
                OffsetFetchResponseGroup::default()
                    .with_group_id(g.group_id.clone())
                    .with_topics(topics)
            })
            .collect();
        return OffsetFetchResponse::default().with_groups(groups);
    }
    let index = match groups.owner(req.group_id.as_str()) {
        Ok(index) => index,
        Err(e) => {
            let code = group_error_code(&e).code();
            // v0 and v1 carry errors per partition only; v2+ at the top too.
            let topics = req
                .topics
                .iter()
                .flatten()
                .map(|t| {
                    OffsetFetchResponseTopic::default()
                        .with_name(t.name.clone())
                        .with_partitions(
                            t.partition_indexes
                                .iter()
                                .map(|p| {
                                    OffsetFetchResponsePartition::default()
                                        .with_partition_index(*p)
                                        .with_committed_offset(-1)
                                        .with_metadata(Some(str_bytes("")))
                                        .with_error_code(code)
                                })
                                .collect(),
                        )
                })
                .collect();
            let resp = OffsetFetchResponse::default().with_topics(topics);
            return if version >= 2 {
                resp.with_error_code(code)
            } else {
                resp
            };
        }
    };
    let wanted = req.topics.as_ref().map(|ts| {
        ts.iter()
            .map(|t| (t.name.as_str().to_string(), t.partition_indexes.clone()))
            .collect()
    });
    let topics = fetch_offsets(store, index, req.group_id.as_str(), wanted)
        .into_iter()
        .map(|(t, parts)| {
            OffsetFetchResponseTopic::default()
                .with_name(topic_name(&t))
                .with_partitions(
                    parts
                        .into_iter()
                        .map(|(p, v)| {
                            let (offset, epoch, meta) = committed_fields(v);
                            let mut part = OffsetFetchResponsePartition::default()
                                .with_partition_index(p)
                                .with_committed_offset(offset)
                                .with_metadata(Some(str_bytes(&meta)));
                            if version >= 5 {
                                part = part.with_committed_leader_epoch(epoch);
                            }
                            part
                        })
                        .collect(),
                )
        })
        .collect();
    OffsetFetchResponse::default().with_topics(topics)
}

fn committed_fields(v: Option<CommittedOffset>) -> (i64, i32, String) {
    match v {
        Some(v) => (v.offset, v.leader_epoch, v.metadata.unwrap_or_default()),
        None => (-1, -1, String::new()),
    }
}

// ---------------------------------------------------------------- Describe / List / Delete

pub fn describe_groups(
    groups: &GroupCoordinator,
    req: DescribeGroupsRequest,
) -> DescribeGroupsResponse {
    let groups = req
        .groups
        .iter()
        .map(|gid| {
            let d = match groups.with_group(gid.as_str(), |g, _| {
                (g.describe_group(gid.as_str()), Vec::new())
            }) {
                Ok((_, d)) => d,
                Err(e) => {
                    return DescribedGroup::default()
                        .with_group_id(gid.clone())
                        .with_error_code(group_error_code(&e).code())
                        .with_group_state(str_bytes(""))
                        .with_protocol_type(str_bytes(""))
                        .with_protocol_data(str_bytes(""))
                }
            };
            DescribedGroup::default()
                .with_group_id(gid.clone())
                .with_group_state(str_bytes(d.state.as_str()))
                .with_protocol_type(str_bytes(&d.protocol_type))
                .with_protocol_data(str_bytes(&d.protocol))
                .with_members(
                    d.members
                        .into_iter()
                        .map(|m| {
                            DescribedGroupMember::default()
                                .with_member_id(str_bytes(&m.member_id))
                                .with_group_instance_id(
                                    m.group_instance_id.as_deref().map(str_bytes),
                                )
                                .with_client_id(str_bytes(&m.client_id))
                                .with_client_host(str_bytes(&m.client_host))
                                .with_member_metadata(m.metadata)
                                .with_member_assignment(m.assignment)
                        })
                        .collect(),
                )
        })
        .collect();
    DescribeGroupsResponse::default().with_groups(groups)
}

pub fn list_groups(
    groups: &GroupCoordinator,
    req: ListGroupsRequest,
    version: i16,
) -> ListGroupsResponse {
    let states: Vec<String> = req
        .states_filter
        .iter()
        .map(|s| s.as_str().to_ascii_lowercase())
        .collect();
    let classic_wanted = req.types_filter.is_empty()
        || req
            .types_filter
            .iter()
            .any(|t| t.as_str().eq_ignore_ascii_case("classic"));
    let loading = groups.loading();
    let groups = if classic_wanted {
        groups.read_machine(|g| g.list_groups::<&str>(&[]))
    } else {
        Vec::new()
    };
    // Groups of partitions still loading are not listed yet: say so (Kafka does too).
    let code = if loading {
        ResponseError::CoordinatorLoadInProgress.code()
    } else {
        0
    };
    ListGroupsResponse::default()
        .with_error_code(code)
        .with_groups(
            groups
                .into_iter()
                .filter(|o| {
                    states.is_empty() || states.contains(&o.state.as_str().to_ascii_lowercase())
                })
                .map(|o| {
                    let mut l = ListedGroup::default()
                        .with_group_id(group_id(&o.group_id))
                        .with_protocol_type(str_bytes(&o.protocol_type));
                    if version >= 4 {
                        l = l.with_group_state(str_bytes(o.state.as_str()));
                    }
                    if version >= 5 {
                        l = l.with_group_type(str_bytes("classic"));
                    }
                    l
                })
                .collect(),
        )
}

pub async fn delete_groups(
    groups: &GroupCoordinator,
    req: DeleteGroupsRequest,
) -> DeleteGroupsResponse {
    let mut results = Vec::with_capacity(req.groups_names.len());
    for gid in &req.groups_names {
        let group = gid.as_str().to_string();
        let deleted = groups
            .with_group(&group, |g, _| (g.delete_group(&group), Vec::new()))
            .and_then(|(index, deleted)| deleted.map(|()| index));
        let code = match deleted {
            Ok(index) => {
                let now = groups.now_ms();
                let offsets = groups.store.delete(index, &group, None, now).await;
                let state = groups.store.store_group(index, &group, None, now).await;
                match offsets.and(state) {
                    Ok(_) => 0,
                    Err(e) => e.code.code(),
                }
            }
            Err(e) => group_error_code(&e).code(),
        };
        results.push(
            DeletableGroupResult::default()
                .with_group_id(gid.clone())
                .with_error_code(code),
        );
    }
    DeleteGroupsResponse::default().with_results(results)
}

/// Topics a consumer-protocol member subscribes to, from its JoinGroup metadata
/// (ConsumerProtocolSubscription: version i16, topics [string], ...). `None` if unparsable.
fn subscribed_topics(mut metadata: Bytes) -> Option<Vec<String>> {
    if metadata.remaining() < 6 {
        return None;
    }
    let _version = metadata.get_i16();
    let n = metadata.get_i32();
    let mut topics = Vec::new();
    for _ in 0..n.max(0) {
        if metadata.remaining() < 2 {
            return None;
        }
        let len = metadata.get_i16();
        if len < 0 || metadata.remaining() < len as usize {
            return None;
        }
        topics.push(String::from_utf8_lossy(&metadata.split_to(len as usize)).into_owned());
    }
    Some(topics)
}

pub async fn offset_delete(
    groups: &GroupCoordinator,
    req: OffsetDeleteRequest,
) -> OffsetDeleteResponse {
    let group = req.group_id.as_str().to_string();
    let (index, d) = match groups.with_group(&group, |g, _| (g.describe_group(&group), Vec::new()))
    {
        Ok(found) => found,
        Err(e) => {
            return OffsetDeleteResponse::default().with_error_code(group_error_code(&e).code())
        }
    };
    let store = &groups.store;
    let known = store.has_offsets(index, &group) || d.state != GroupState::Dead;
    if !known {
        return OffsetDeleteResponse::default()
            .with_error_code(ResponseError::GroupIdNotFound.code());
    }
    // Topics that live members still consume may not lose their offsets.
    let subscribed: Vec<String> = if d.state == GroupState::Empty || d.state == GroupState::Dead {
        Vec::new()
    } else if d.protocol_type == "consumer" {
        d.members
            .iter()
            .filter_map(|m| subscribed_topics(m.metadata.clone()))
            .flatten()
            .collect()
    } else {
        return OffsetDeleteResponse::default()
            .with_error_code(ResponseError::NonEmptyGroup.code());
    };
    let now = groups.now_ms();
    let mut topics = Vec::new();
    for t in &req.topics {
        let name = t.name.as_str().to_string();
        let mut parts = Vec::new();
        for p in &t.partitions {
            let code = if subscribed.contains(&name) {
                ResponseError::GroupSubscribedToTopic.code()
            } else {
                match store
                    .delete(
                        index,
                        &group,
                        Some(vec![(name.clone(), p.partition_index)]),
                        now,
                    )
                    .await
                {
                    Ok(_) => 0,
                    Err(e) => e.code.code(),
                }
            };
            parts.push(
                OffsetDeleteResponsePartition::default()
                    .with_partition_index(p.partition_index)
                    .with_error_code(code),
            );
        }
        topics.push(
            OffsetDeleteResponseTopic::default()
                .with_name(t.name.clone())
                .with_partitions(parts),
        );
    }
    let still = store.has_offsets(index, &group);
    let _ = groups.with_group(&group, |g, _| {
        (g.set_has_offsets(&group, still), Vec::new())
    });
    OffsetDeleteResponse::default().with_topics(topics)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BufMut;

    #[test]
    fn consumer_subscription_topics() {
        let mut b = bytes::BytesMut::new();
        b.put_i16(1);
        b.put_i32(2);
        for t in ["orders", "payments"] {
            b.put_i16(t.len() as i16);
            b.put_slice(t.as_bytes());
        }
        b.put_i32(-1); // user data (ignored)
        assert_eq!(
            subscribed_topics(b.freeze()),
            Some(vec!["orders".to_string(), "payments".to_string()])
        );
        assert_eq!(
            subscribed_topics(Bytes::from_static(&[0, 1, 0, 0, 0, 9, 0])),
            None
        );
    }
}
