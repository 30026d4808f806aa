//! The controller listener's wire protocol: Raft traffic between quorum members, broker
//! registration and heartbeats, and admin operations forwarded to the active controller.
//!
//! Every frame is a 4-byte big-endian length and a JSON body; a frame above [`MAX_FRAME`] is
//! refused before anything is allocated for it. A connection carries one request at a time;
//! the client opens one connection per peer and reconnects after any error. Every request
//! carries the sender's node id and, once it knows it, the cluster id: a node that belongs to
//! another cluster is refused ([`RpcReply::WrongCluster`]) before its request is looked at, so
//! a data directory from another cluster can neither vote nor register here.
//!
//! This protocol is internal to a cluster (all nodes run the same release); it is not Kafka's
//! KRaft protocol and clients never see it.

use std::time::Duration;

use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::{Deserialize, Serialize};
use sluice_meta::quorum::{MetaRaft, NodeId};
use sluice_meta::{BrokerId, TopicConfigs, TopicInfo, Uuid};
use sluice_types::ProducerId;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::NewTopic;
use crate::error::ApiError;

/// The largest frame either side accepts: a snapshot chunk or an AppendEntries batch is far
/// below it.
pub const MAX_FRAME: usize = 64 << 20;

#[derive(Debug, Serialize, Deserialize)]
pub struct RpcEnvelope {
    pub from: NodeId,
    pub cluster_id: Option<String>,
    pub request: RpcRequest,
}

#[derive(Debug, Serialize, Deserialize)]
pub enum RpcRequest {
    AppendEntries(AppendEntriesRequest<MetaRaft>),
    Vote(VoteRequest<NodeId>),
    InstallSnapshot(InstallSnapshotRequest<MetaRaft>),
    /// A broker announces a new incarnation (to the active controller).
    Register(BrokerRegistration),
    Heartbeat(BrokerHeartbeat),
    /// An admin operation a broker forwards to the active controller.
    Forward(ControllerOp),
    /// The quorum's state as the active controller sees it (DescribeQuorum).
    DescribeQuorum,
}

#[derive(Debug, Serialize, Deserialize)]
pub enum RpcReply {
    AppendEntries(Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>),
    Vote(Result<VoteResponse<NodeId>, RaftError<NodeId>>),
    InstallSnapshot(
        Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>,
    ),
    Register(Result<RegisterReply, WireError>),
    Heartbeat(Result<HeartbeatReply, WireError>),
    Forward(OpReply),
    Quorum(QuorumInfo),
    /// This node is not the active controller; `leader` is the one it knows of.
    NotController {
        leader: Option<NodeId>,
    },
    /// The sender belongs to another cluster.
    WrongCluster {
        ours: String,
    },
}

/// Sent by a starting broker to the active controller.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BrokerRegistration {
    pub broker_id: BrokerId,
    pub incarnation_id: Uuid,
    /// The data directory's id (`meta.properties`).
    pub directory_id: Option<Uuid>,
    pub host: String,
    pub port: i32,
    pub rack: Option<String>,
    /// Where this node's controller listener is (a broker-only node joins the Raft group as a
    /// learner there, to receive the metadata log).
    pub controller_addr: Option<String>,
    /// False for a broker-only node (`--roles broker`).
    pub voter: bool,
    /// The cluster id this node's data directory belongs to, if it has one.
    pub cluster_id: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegisterReply {
    pub broker_epoch: i64,
    pub cluster_id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BrokerHeartbeat {
    pub broker_id: BrokerId,
    pub broker_epoch: i64,
    /// The highest metadata offset this broker has applied: it is unfenced once this reaches
    /// its registration.
    pub metadata_offset: i64,
    /// The broker is shutting down: fence it now rather than at the end of its session.
    pub shutting_down: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HeartbeatReply {
    pub fenced: bool,
    /// The metadata offset the controller had applied when it answered: the broker may act on
    /// the answer (renew its leadership lease) once its own image has reached it.
    #[serde(default)]
    pub metadata_offset: i64,
}

/// The controller quorum as its leader sees it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QuorumInfo {
    pub leader: NodeId,
    /// The Raft term (Kafka's leader epoch of the metadata partition).
    pub term: u64,
    /// The offset after the last committed entry.
    pub high_watermark: i64,
    pub voters: Vec<ReplicaProgress>,
    /// Broker-only nodes (Raft learners).
    pub observers: Vec<ReplicaProgress>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReplicaProgress {
    pub id: NodeId,
    pub addr: String,
    /// The offset after the last entry the leader knows this node holds; -1 if unknown.
    pub log_end_offset: i64,
}

/// A Kafka error code and message, as it crosses the controller listener.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WireError {
    pub code: i16,
    pub message: Option<String>,
}

impl From<ApiError> for WireError {
    fn from(e: ApiError) -> WireError {
        WireError {
            code: e.code.code(),
            message: e.message,
        }
    }
}

impl From<WireError> for ApiError {
    fn from(e: WireError) -> ApiError {
        let code = kafka_protocol::ResponseError::try_from_code(e.code)
            .unwrap_or(kafka_protocol::ResponseError::UnknownServerError);
        ApiError {
            code,
            message: e.message,
        }
    }
}

pub type WireResult<T> = Result<T, WireError>;

/// The admin operations only the active controller decides.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ControllerOp {
    CreateTopics {
        topics: Vec<NewTopic>,
        validate_only: bool,
    },
    DeleteTopics {
        ids: Vec<Uuid>,
    },
    CreatePartitions {
        name: String,
        count: i32,
        assignment: Option<Vec<Vec<BrokerId>>>,
        validate_only: bool,
    },
    SetTopicConfigs {
        name: String,
        configs: TopicConfigs,
    },
    SetBrokerConfigs {
        broker_id: Option<BrokerId>,
        configs: TopicConfigs,
    },
    AllocateProducerIds {
        broker_id: BrokerId,
    },
    AlterPartition(AlterPartition),
    /// ElectLeaders: `partitions` by topic name and index, or every partition (`None`).
    ElectLeaders {
        unclean: bool,
        partitions: Option<Vec<(String, i32)>>,
    },
    /// AlterPartitionReassignments: per partition, the target replicas or `None` to cancel.
    AlterReassignments {
        reassignments: Vec<Reassignment>,
        allow_replication_factor_change: bool,
    },
    /// Changes nothing: answers with the controller's applied offset, for a broker to catch up
    /// to before it answers a read from its image as the controller would (Kafka forwards such
    /// reads, ListPartitionReassignments among them, to the controller).
    ReadBarrier,
}

/// One partition's reassignment: (topic, partition) and its target replicas, or `None` to
/// cancel the move under way.
pub type Reassignment = ((String, i32), Option<Vec<BrokerId>>);

/// A leader's ISR change (Kafka's AlterPartition), checked against the current partition.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AlterPartition {
    pub broker_id: BrokerId,
    pub broker_epoch: i64,
    pub topic_id: Uuid,
    pub partition: i32,
    pub leader_epoch: sluice_types::LeaderEpoch,
    pub partition_epoch: i32,
    pub isr: Vec<BrokerId>,
    /// The broker epoch the leader saw for each proposed member (KIP-903's
    /// `NewIsrWithEpochs`; -1 where it has none).
    #[serde(default)]
    pub isr_epochs: Vec<(BrokerId, i64)>,
}

/// What an operation answered, and the metadata offset its records were committed at (the
/// caller waits until its own image has applied that far before it answers its client).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OpReply {
    pub outcome: OpOutcome,
    pub offset: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum OpOutcome {
    CreateTopics(Vec<WireResult<TopicInfo>>),
    DeleteTopics(Vec<WireResult<String>>),
    Unit(WireResult<()>),
    ProducerIds(WireResult<(ProducerId, ProducerId)>),
    /// One result per partition named (or every partition that needed one).
    Elections(Vec<((String, i32), WireResult<()>)>),
    /// One result per partition named, in order.
    Reassignments(Vec<((String, i32), WireResult<()>)>),
}

#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    #[error("connecting to {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("talking to {addr}: {source}")]
    Io {
        addr: String,
        source: std::io::Error,
    },
    #[error("{addr} did not answer within {timeout:?}")]
    Timeout { addr: String, timeout: Duration },
    #[error("bad frame from {addr}: {reason}")]
    Protocol { addr: String, reason: String },
}

/// Writes one frame.
pub async fn write_frame<W: AsyncWriteExt + Unpin, T: Serialize>(
    w: &mut W,
    value: &T,
) -> std::io::Result<()> {
    let body = serde_json::to_vec(value).map_err(std::io::Error::other)?;
    if body.len() > MAX_FRAME {
        return Err(std::io::Error::other(format!(
            "frame of {} bytes is above the {MAX_FRAME}-byte limit",
            body.len()
        )));
    }
    let mut buf = Vec::with_capacity(4 + body.len());
    buf.extend_from_slice(&(body.len() as u32).to_be_bytes());
    buf.extend_from_slice(&body);
    w.write_all(&buf).await?;
    w.flush().await
}

/// Reads one frame; `Ok(None)` at a clean end of stream. The body is read only as its bytes
/// arrive: the length is checked against [`MAX_FRAME`] first.
pub async fn read_frame<R: AsyncReadExt + Unpin, T: for<'de> Deserialize<'de>>(
    r: &mut R,
) -> std::io::Result<Option<T>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("frame of {len} bytes is above the {MAX_FRAME}-byte limit"),
        ));
    }
    let mut body = Vec::new();
    (&mut *r).take(len as u64).read_to_end(&mut body).await?;
    if body.len() != len {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    serde_json::from_slice(&body)
        .map(Some)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// One peer's connection: a request at a time, reconnecting after any failure.
pub struct RpcClient {
    addr: String,
    conn: tokio::sync::Mutex<Option<TcpStream>>,
}

impl RpcClient {
    pub fn new(addr: String) -> RpcClient {
        RpcClient {
            addr,
            conn: tokio::sync::Mutex::new(None),
        }
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Sends `envelope` and waits for the reply, at most `timeout` in all, the wait for an
    /// earlier call on this connection included (a peer that stopped answering must not hold
    /// later callers beyond their own timeouts). On any failure the connection is dropped (a
    /// late reply must never be read as the next request's).
    pub async fn call(
        &self,
        envelope: &RpcEnvelope,
        timeout: Duration,
    ) -> Result<RpcReply, RpcError> {
        tokio::time::timeout(timeout, async {
            let mut slot = self.conn.lock().await;
            // Taken out while in use: if this call fails or its future is dropped at the
            // timeout, the stream goes with it and the next call connects afresh.
            let mut stream = match slot.take() {
                Some(stream) => stream,
                None => {
                    let stream = TcpStream::connect(&self.addr).await.map_err(|source| {
                        RpcError::Connect {
                            addr: self.addr.clone(),
                            source,
                        }
                    })?;
                    let _ = stream.set_nodelay(true);
                    stream
                }
            };
            let io = |source| RpcError::Io {
                addr: self.addr.clone(),
                source,
            };
            write_frame(&mut stream, envelope).await.map_err(io)?;
            match read_frame::<_, RpcReply>(&mut stream).await.map_err(io)? {
                Some(reply) => {
                    *slot = Some(stream);
                    Ok(reply)
                }
                None => Err(RpcError::Io {
                    addr: self.addr.clone(),
                    source: std::io::ErrorKind::UnexpectedEof.into(),
                }),
            }
        })
        .await
        .unwrap_or_else(|_| {
            Err(RpcError::Timeout {
                addr: self.addr.clone(),
                timeout,
            })
        })
    }
}
