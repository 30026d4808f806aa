//! The controller: the one place metadata decisions are made, and the client side every broker
//! uses to reach it.
//!
//! The active controller is the Raft leader of the metadata quorum. It decides each operation
//! against the fully applied state ([`decide`], pure), commits the records through Raft, and
//! answers with the log offset they were committed at. Any other node forwards the operation
//! to it over the controller listener ([`rpc`]) and, like the controller itself, answers its
//! client only once its own image has applied that offset: a client that created a topic finds
//! it in the next Metadata from the same broker.
//!
//! Decisions are serialized by one async mutex held from the linearizable read of the state to
//! the commit, so no two decisions see the same state. Liveness: brokers register (a new
//! incarnation, whose log offset is the broker epoch) and heartbeat to the active controller;
//! one silent for `broker.session.timeout.ms` is fenced and its leaderships move
//! ([`decide::fence`]); it is unfenced when it heartbeats again having applied the metadata up to
//! its registration ([`decide::unfence`]).

pub mod decide;
pub mod network;
pub mod placement;
pub mod rpc;
pub mod server;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use kafka_protocol::ResponseError;
use openraft::error::{ClientWriteError, RaftError};
use openraft::Raft;
use serde::{Deserialize, Serialize};
use sluice_meta::quorum::{Applied, ControllerNode, MetaBatch, MetaRaft, NodeId};
use sluice_meta::{BrokerId, ClusterState, MetadataRecord, TopicConfigs, TopicInfo, Uuid};
use sluice_types::ProducerId;
use tokio::sync::watch;

use crate::config::{check_setting, is_dynamic};
use crate::error::ApiError;
use decide::Decider;
use rpc::{
    BrokerHeartbeat, BrokerRegistration, ControllerOp, HeartbeatReply, OpOutcome, OpReply,
    Reassignment, RegisterReply, RpcClient, RpcEnvelope, RpcReply, RpcRequest, WireError,
};

/// Producer ids handed to a broker per allocation.
pub const PRODUCER_ID_BLOCK: i64 = 1000;

/// How long an admin operation may wait for an active controller and its commit.
const OP_TIMEOUT: Duration = Duration::from_secs(30);
/// A single RPC to a peer.
const RPC_TIMEOUT: Duration = Duration::from_secs(5);
/// Between attempts while there is no reachable active controller.
const RETRY_BACKOFF: Duration = Duration::from_millis(100);
/// Bound on the quorum round that confirms this controller before it answers a heartbeat.
const QUORUM_CHECK: Duration = Duration::from_secs(1);

/// Broker-wide defaults the controller applies to topics that do not say.
#[derive(Debug, Clone, Copy)]
pub struct TopicDefaults {
    pub num_partitions: i32,
    pub replication_factor: i16,
    /// Whether `default.replication.factor` was set; left at its default it is capped at the
    /// live brokers.
    pub replication_factor_explicit: bool,
}

/// A CreateTopics entry as the handler understood it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewTopic {
    pub name: String,
    /// -1: the broker default.
    pub num_partitions: i32,
    /// -1: the broker default.
    pub replication_factor: i16,
    pub assignment: Option<Vec<Vec<BrokerId>>>,
    pub configs: TopicConfigs,
}

impl NewTopic {
    /// `partitions` partitions with the default replication factor and no config overrides.
    pub fn new(name: impl Into<String>, partitions: i32) -> NewTopic {
        NewTopic {
            name: name.into(),
            num_partitions: partitions,
            replication_factor: -1,
            assignment: None,
            configs: TopicConfigs::new(),
        }
    }
}

/// Who this node is: its id and, once known, the cluster it belongs to.
pub struct Identity {
    pub node: NodeId,
    cluster_id: RwLock<Option<String>>,
}

impl Identity {
    pub fn new(node: NodeId, cluster_id: Option<String>) -> Identity {
        Identity {
            node,
            cluster_id: RwLock::new(cluster_id),
        }
    }

    pub fn cluster_id(&self) -> Option<String> {
        self.cluster_id
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn set_cluster_id(&self, id: String) {
        *self.cluster_id.write().unwrap_or_else(|e| e.into_inner()) = Some(id);
    }
}

/// Heartbeat timing (`broker.heartbeat.interval.ms`, `broker.session.timeout.ms`) and the
/// auto leader rebalance (interval, imbalance percentage), if enabled.
#[derive(Debug, Clone, Copy)]
pub struct Liveness {
    pub heartbeat_interval: Duration,
    pub session_timeout: Duration,
    pub leader_rebalance: Option<(Duration, u32)>,
}

/// The active controller's view of which brokers are alive, reset at every new term (a new
/// controller gives every broker a full session to reach it, except the controller before it;
/// see [`Controller::run_liveness`]).
#[derive(Default)]
struct Sessions {
    term: Option<u64>,
    last_seen: HashMap<BrokerId, Instant>,
}

/// Why an attempt to reach the active controller did not produce an answer.
enum Attempt {
    /// No answer, nothing decided: try again (there is no leader yet, or it moved).
    Retry(String),
    /// A definite refusal.
    Failed(ApiError),
}

pub struct Controller {
    node_id: BrokerId,
    identity: Arc<Identity>,
    raft: Raft<MetaRaft>,
    /// The state as applied by the local state machine.
    applied: watch::Receiver<Applied>,
    /// The highest offset the local image has published.
    published: watch::Receiver<i64>,
    decider: Decider,
    /// Held from the linearizable read to the commit of each decision.
    decide_lock: tokio::sync::Mutex<()>,
    /// The configured voters' controller addresses, to find the quorum before Raft knows it.
    voters: BTreeMap<NodeId, String>,
    peers: Mutex<HashMap<String, Arc<RpcClient>>>,
    sessions: Mutex<Sessions>,
    /// The sender of the latest Raft AppendEntries this node received, and when: the quorum's
    /// leader as last heard from, which dates the last sign of life of a controller that died.
    leader_contact: Mutex<Option<(NodeId, Instant)>>,
    liveness: Liveness,
}

impl Controller {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        node_id: BrokerId,
        identity: Arc<Identity>,
        raft: Raft<MetaRaft>,
        applied: watch::Receiver<Applied>,
        published: watch::Receiver<i64>,
        defaults: TopicDefaults,
        voters: BTreeMap<NodeId, String>,
        liveness: Liveness,
    ) -> Controller {
        Controller {
            node_id,
            identity,
            raft,
            applied,
            published,
            decider: Decider { defaults },
            decide_lock: tokio::sync::Mutex::new(()),
            voters,
            peers: Mutex::default(),
            sessions: Mutex::default(),
            leader_contact: Mutex::default(),
            liveness,
        }
    }

    pub fn raft(&self) -> &Raft<MetaRaft> {
        &self.raft
    }

    pub fn identity(&self) -> &Arc<Identity> {
        &self.identity
    }

    pub fn liveness(&self) -> Liveness {
        self.liveness
    }

    /// The active controller as this node knows it.
    pub fn active_controller(&self) -> Option<NodeId> {
        self.raft.metrics().borrow().current_leader
    }

    fn is_active(&self) -> bool {
        self.active_controller() == Some(self.identity.node)
    }

    /// The controller address of voter `id`, from `--voters`: the active controller is always
    /// a voter, and `--voters` is what this process was told the quorum is (the membership a
    /// data directory remembers may be another cluster's).
    fn address_of(&self, id: NodeId) -> Option<String> {
        self.voters.get(&id).filter(|a| !a.is_empty()).cloned()
    }

    fn peer(&self, addr: &str) -> Arc<RpcClient> {
        self.peers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(addr.to_string())
            .or_insert_with(|| Arc::new(RpcClient::new(addr.to_string())))
            .clone()
    }

    /// Waits (bounded) until the local image has published `offset`.
    async fn wait_published(&self, offset: i64, deadline: Instant) {
        let mut rx = self.published.clone();
        let wait = rx.wait_for(|p| *p >= offset);
        let _ = tokio::time::timeout_at(deadline.into(), wait).await;
    }

    // ------------------------------------------------------------------ admin operations

    /// Creates topics (or only checks that they could be created). One result per topic, in
    /// order; the valid ones are written as one batch.
    pub async fn create_topics(
        &self,
        topics: Vec<NewTopic>,
        validate_only: bool,
    ) -> Vec<Result<TopicInfo, ApiError>> {
        let n = topics.len();
        match self
            .execute(ControllerOp::CreateTopics {
                topics,
                validate_only,
            })
            .await
        {
            Ok(OpOutcome::CreateTopics(r)) if r.len() == n => {
                r.into_iter().map(|r| r.map_err(Into::into)).collect()
            }
            Ok(other) => vec![Err(unexpected(other)); n],
            Err(e) => vec![Err(e); n],
        }
    }

    /// Deletes topics by id; internal topics are refused.
    pub async fn delete_topics(&self, ids: Vec<Uuid>) -> Vec<Result<String, ApiError>> {
        let n = ids.len();
        match self.execute(ControllerOp::DeleteTopics { ids }).await {
            Ok(OpOutcome::DeleteTopics(r)) if r.len() == n => {
                r.into_iter().map(|r| r.map_err(Into::into)).collect()
            }
            Ok(other) => vec![Err(unexpected(other)); n],
            Err(e) => vec![Err(e); n],
        }
    }

    /// Grows a topic to `count` partitions.
    pub async fn create_partitions(
        &self,
        name: String,
        count: i32,
        assignment: Option<Vec<Vec<BrokerId>>>,
        validate_only: bool,
    ) -> Result<(), ApiError> {
        self.unit(ControllerOp::CreatePartitions {
            name,
            count,
            assignment,
            validate_only,
        })
        .await
    }

    /// Replaces a topic's config overrides. Every entry is checked by the controller, whoever
    /// computed them.
    pub async fn set_topic_configs(
        &self,
        name: String,
        configs: TopicConfigs,
    ) -> Result<(), ApiError> {
        self.unit(ControllerOp::SetTopicConfigs { name, configs })
            .await
    }

    /// Replaces the dynamic configs of one broker (`Some(id)`) or the cluster defaults
    /// (`None`). Every entry must be a dynamic broker setting with a valid value.
    pub async fn set_broker_configs(
        &self,
        broker_id: Option<BrokerId>,
        configs: TopicConfigs,
    ) -> Result<(), ApiError> {
        self.unit(ControllerOp::SetBrokerConfigs { broker_id, configs })
            .await
    }

    /// Reserves the next block of producer ids for `broker_id`: `(first, end)`, end exclusive.
    /// Blocks come from the metadata log, so no id is handed out twice in the cluster.
    pub async fn allocate_producer_ids(
        &self,
        broker_id: BrokerId,
    ) -> Result<(ProducerId, ProducerId), ApiError> {
        match self
            .execute(ControllerOp::AllocateProducerIds { broker_id })
            .await?
        {
            OpOutcome::ProducerIds(r) => r.map_err(Into::into),
            other => Err(unexpected(other)),
        }
    }

    /// Commits a leader's ISR change (AlterPartition semantics: the proposer must be the
    /// current, unfenced leader at the current leader and partition epochs; new members must be
    /// live replicas).
    pub async fn alter_partition(&self, change: rpc::AlterPartition) -> Result<(), ApiError> {
        self.unit(ControllerOp::AlterPartition(change)).await
    }

    /// ElectLeaders: per partition, whether an election was made.
    pub async fn elect_leaders(
        &self,
        unclean: bool,
        partitions: Option<Vec<(String, i32)>>,
    ) -> Result<Vec<((String, i32), Result<(), ApiError>)>, ApiError> {
        match self
            .execute(ControllerOp::ElectLeaders {
                unclean,
                partitions,
            })
            .await?
        {
            OpOutcome::Elections(r) => Ok(r
                .into_iter()
                .map(|(tp, r)| (tp, r.map_err(Into::into)))
                .collect()),
            other => Err(unexpected(other)),
        }
    }

    /// AlterPartitionReassignments: per partition (target replicas, or `None` to cancel), in
    /// order, whether the change was accepted.
    pub async fn alter_reassignments(
        &self,
        reassignments: Vec<Reassignment>,
        allow_replication_factor_change: bool,
    ) -> Result<Vec<((String, i32), Result<(), ApiError>)>, ApiError> {
        match self
            .execute(ControllerOp::AlterReassignments {
                reassignments,
                allow_replication_factor_change,
            })
            .await?
        {
            OpOutcome::Reassignments(r) => Ok(r
                .into_iter()
                .map(|(tp, r)| (tp, r.map_err(Into::into)))
                .collect()),
            other => Err(unexpected(other)),
        }
    }

    /// Waits until this node's image holds everything the active controller had applied when
    /// asked: a read from the image that follows then sees every change the cluster had
    /// acknowledged before it (a read forwarded to the controller, as Kafka's are).
    /// Bounded by `timeout` (the request's) as well as the usual operation timeout.
    pub async fn read_barrier(&self, timeout: Duration) -> Result<(), ApiError> {
        let deadline = Instant::now() + timeout.min(OP_TIMEOUT);
        self.unit_by(ControllerOp::ReadBarrier, deadline).await
    }

    async fn unit(&self, op: ControllerOp) -> Result<(), ApiError> {
        self.unit_by(op, Instant::now() + OP_TIMEOUT).await
    }

    /// [`Controller::unit`] with a deadline of the caller's.
    async fn unit_by(&self, op: ControllerOp, deadline: Instant) -> Result<(), ApiError> {
        match self.execute_by(op, deadline).await? {
            OpOutcome::Unit(r) => r.map_err(Into::into),
            other => Err(unexpected(other)),
        }
    }

    /// Runs `op` on the active controller (here, or forwarded) and waits until this node's
    /// image has applied its records.
    async fn execute(&self, op: ControllerOp) -> Result<OpOutcome, ApiError> {
        self.execute_by(op, Instant::now() + OP_TIMEOUT).await
    }

    /// [`Controller::execute`] with a deadline of the caller's.
    async fn execute_by(&self, op: ControllerOp, deadline: Instant) -> Result<OpOutcome, ApiError> {
        let reply = match self.to_leader(RpcRequest::Forward(op), deadline).await? {
            RpcReply::Forward(reply) => reply,
            other => return Err(unexpected(other)),
        };
        if reply.offset < 0 {
            // The controller failed the operation as a whole.
            if let OpOutcome::Unit(Err(e)) = reply.outcome {
                return Err(e.into());
            }
        }
        self.wait_published(reply.offset, deadline).await;
        Ok(reply.outcome)
    }

    /// One call to node `t`, taken for the active controller, by `deadline`; abandoned as soon as
    /// Raft names a new leader other than `t` (a controller that stopped answering, paused or
    /// cut off, must not hold this request, a heartbeat above all, once its successor is
    /// known). Only a change counts: `t` may come from a hint while this node's Raft still
    /// names the old leader.
    async fn call_controller(
        &self,
        t: NodeId,
        addr: &str,
        envelope: &RpcEnvelope,
        deadline: Instant,
    ) -> Result<RpcReply, String> {
        let timeout = RPC_TIMEOUT.min(deadline.saturating_duration_since(Instant::now()));
        let mut metrics = self.raft.metrics();
        let named_at_start = metrics.borrow_and_update().current_leader;
        let replaced = async {
            loop {
                if metrics.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
                let now = metrics.borrow_and_update().current_leader;
                if now.is_some() && now != named_at_start && now != Some(t) {
                    return;
                }
            }
        };
        let peer = self.peer(addr);
        tokio::select! {
            reply = peer.call(envelope, timeout) => reply.map_err(|e| e.to_string()),
            () = replaced => Err(format!("node {t} is no longer the controller")),
        }
    }

    /// Sends `request` to the active controller, wherever it is, until an answer or `deadline`.
    /// Before Raft knows a leader (a broker-only node not yet in the group, or an election),
    /// the configured voters are asked in turn; a voter that is not the controller names the
    /// one it knows.
    async fn to_leader(
        &self,
        request: RpcRequest,
        deadline: Instant,
    ) -> Result<RpcReply, ApiError> {
        let envelope = RpcEnvelope {
            from: self.identity.node,
            cluster_id: self.identity.cluster_id(),
            request,
        };
        let mut hint: Option<NodeId> = None;
        let mut round = 0usize;
        let mut last_problem;
        loop {
            // A leader this process cannot address (one remembered from another quorum than
            // `--voters` names) is no lead.
            let known = |id: &NodeId| *id == self.identity.node || self.voters.contains_key(id);
            let target = self
                .active_controller()
                .filter(known)
                .or(hint.take().filter(known))
                .or_else(|| {
                    // Round-robin over the voters.
                    let ids: Vec<&NodeId> = self.voters.keys().collect();
                    round += 1;
                    ids.get(round % ids.len().max(1)).map(|id| **id)
                });
            let attempt = match target {
                Some(t) if t == self.identity.node => self.serve_as_leader(&envelope).await,
                Some(t) => match self.address_of(t) {
                    Some(addr) => match self.call_controller(t, &addr, &envelope, deadline).await {
                        Ok(RpcReply::NotController { leader }) => {
                            hint = leader;
                            Err(Attempt::Retry(format!("node {t} is not the controller")))
                        }
                        Ok(RpcReply::WrongCluster { ours }) => Err(Attempt::Failed(ApiError::new(
                            ResponseError::InconsistentClusterId,
                            format!(
                                "this node's data directory belongs to cluster {}, but the \
                                     controller quorum is cluster {ours}",
                                envelope.cluster_id.as_deref().unwrap_or("?")
                            ),
                        ))),
                        Ok(reply) => Ok(reply),
                        Err(e) => Err(Attempt::Retry(e.to_string())),
                    },
                    None => Err(Attempt::Retry(format!("no address for node {t}"))),
                },
                None => Err(Attempt::Retry("no controller known".into())),
            };
            match attempt {
                Ok(reply) => return Ok(reply),
                Err(Attempt::Failed(e)) => return Err(e),
                Err(Attempt::Retry(why)) => last_problem = why,
            }
            if Instant::now() + RETRY_BACKOFF >= deadline {
                return Err(ApiError::new(
                    ResponseError::RequestTimedOut,
                    format!("no active controller answered in time: {last_problem}"),
                ));
            }
            tokio::time::sleep(RETRY_BACKOFF).await;
        }
    }

    // ------------------------------------------------------------------ the active controller

    /// Answers a request addressed to the active controller, from a peer or from this node.
    async fn serve_as_leader(&self, envelope: &RpcEnvelope) -> Result<RpcReply, Attempt> {
        match &envelope.request {
            RpcRequest::Forward(op) => {
                let (outcome, offset) = self
                    .decide_and_commit(|d, state| {
                        let (outcome, records) = d.decide(state, op.clone());
                        Ok((outcome, records))
                    })
                    .await?;
                Ok(RpcReply::Forward(OpReply { outcome, offset }))
            }
            RpcRequest::Register(reg) => match self.register_broker(reg).await {
                Ok(r) => Ok(RpcReply::Register(Ok(r))),
                Err(Attempt::Failed(e)) => Ok(RpcReply::Register(Err(e.into()))),
                Err(retry) => Err(retry),
            },
            RpcRequest::DescribeQuorum => Ok(RpcReply::Quorum(self.quorum_info())),
            RpcRequest::Heartbeat(hb) => match self.heartbeat(hb).await {
                Ok(r) => Ok(RpcReply::Heartbeat(Ok(r))),
                Err(Attempt::Failed(e)) => Ok(RpcReply::Heartbeat(Err(e.into()))),
                Err(retry) => Err(retry),
            },
            other => Err(Attempt::Failed(ApiError::new(
                ResponseError::InvalidRequest,
                format!("not a controller operation: {other:?}"),
            ))),
        }
    }

    /// Decides against the fully applied state and commits the records; returns the answer and
    /// the offset to wait for.
    async fn decide_and_commit<T>(
        &self,
        decide: impl FnOnce(&Decider, &ClusterState) -> Result<(T, Vec<MetadataRecord>), ApiError>,
    ) -> Result<(T, i64), Attempt> {
        let _decision = self.decide_lock.lock().await;
        let (state, applied_offset) = self.linearized_state().await?;
        let (answer, mut records) = decide(&self.decider, &state).map_err(Attempt::Failed)?;
        if records.is_empty() {
            return Ok((answer, applied_offset));
        }
        if state.cluster_id.is_none() {
            records.insert(0, self.form_cluster());
        }
        let offset = self.commit(records).await?;
        Ok((answer, offset))
    }

    /// The cluster's id, chosen once by the first active controller: this node's data directory
    /// id if it has one (a directory from a release before the quorum), else a new one.
    fn form_cluster(&self) -> MetadataRecord {
        let cluster_id = self
            .identity
            .cluster_id()
            .unwrap_or_else(|| Uuid::new_v4().simple().to_string());
        MetadataRecord::FormCluster { cluster_id }
    }

    /// The applied state once it includes everything committed before now, checked with a
    /// quorum round (this node is still the leader).
    async fn linearized_state(&self) -> Result<(Arc<ClusterState>, i64), Attempt> {
        match self.raft.ensure_linearizable().await {
            Ok(_) => {
                let applied = self.applied.borrow();
                Ok((
                    applied.state.clone(),
                    applied.last_applied.map_or(-1, |l| l.index as i64),
                ))
            }
            Err(RaftError::APIError(e)) => Err(Attempt::Retry(e.to_string())),
            Err(RaftError::Fatal(e)) => Err(Attempt::Failed(ApiError::new(
                ResponseError::KafkaStorageError,
                format!("the metadata quorum stopped: {e}"),
            ))),
        }
    }

    /// Commits `records` as one Raft entry; returns its offset once applied here.
    async fn commit(&self, records: Vec<MetadataRecord>) -> Result<i64, Attempt> {
        match self.raft.client_write(MetaBatch { records }).await {
            Ok(resp) => Ok(resp.data.index as i64),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => Err(Attempt::Retry(
                format!("leadership moved to {:?} before the commit", f.leader_id),
            )),
            Err(RaftError::APIError(e)) => Err(Attempt::Failed(ApiError::new(
                ResponseError::UnknownServerError,
                e.to_string(),
            ))),
            Err(RaftError::Fatal(e)) => Err(Attempt::Failed(ApiError::new(
                ResponseError::KafkaStorageError,
                format!("the metadata quorum stopped: {e}"),
            ))),
        }
    }

    fn seen(&self, broker: BrokerId) {
        let mut s = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        s.last_seen.insert(broker, Instant::now());
    }

    fn session_alive(&self, broker: BrokerId) -> bool {
        let s = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        s.last_seen
            .get(&broker)
            .is_some_and(|t| t.elapsed() < self.liveness.session_timeout)
    }

    async fn register_broker(&self, reg: &BrokerRegistration) -> Result<RegisterReply, Attempt> {
        let id = node_id_of(reg.broker_id)?;
        // A broker-only node receives the metadata log as a Raft learner.
        if !reg.voter {
            if let Some(addr) = reg.controller_addr.clone().filter(|a| !a.is_empty()) {
                let known = self
                    .raft
                    .metrics()
                    .borrow()
                    .membership_config
                    .membership()
                    .get_node(&id)
                    .cloned();
                if known.as_ref().map(|n| &n.addr) != Some(&addr) {
                    self.raft
                        .add_learner(id, ControllerNode::new(addr.clone()), false)
                        .await
                        .map_err(|e| Attempt::Retry(format!("adding learner {id}: {e}")))?;
                    tracing::info!(node_id = id, controller_addr = %addr, "added a broker-only node to the metadata quorum as a learner");
                }
            }
        }
        // Another live process with this node id: a different data directory whose
        // registration is unfenced and heard from within its session. The same directory is a
        // restart (its lock guarantees the old process is gone): it replaces the registration.
        let duplicate = |state: &ClusterState| {
            state.brokers.get(&reg.broker_id).is_some_and(|b| {
                !b.fenced
                    && b.incarnation_id.is_some_and(|i| i != reg.incarnation_id)
                    && (b.directory_id.is_none() || b.directory_id != reg.directory_id)
                    && self.session_alive(reg.broker_id)
            })
        };
        let (cluster_id, epoch) = self
            .decide_and_commit(|_, state| {
                if duplicate(state) {
                    return Err(ApiError::new(
                        ResponseError::DuplicateBrokerRegistration,
                        format!(
                            "another process is registered as node {} and its session is \
                             alive; node ids must be unique",
                            reg.broker_id
                        ),
                    ));
                }
                if let (Some(ours), Some(theirs)) = (&state.cluster_id, &reg.cluster_id) {
                    if ours != theirs {
                        return Err(ApiError::new(
                            ResponseError::InconsistentClusterId,
                            format!(
                                "node {}'s data directory belongs to cluster {theirs}, not \
                                 {ours}",
                                reg.broker_id
                            ),
                        ));
                    }
                }
                // A new incarnation ends the previous one at once, as its session would have:
                // its leaderships move to other in-sync replicas (a restarted process has lost
                // what it held in memory, and in relaxed durability maybe its log tail), so it
                // rejoins as a follower and truncates whatever only it had.
                let mut records = match state.brokers.get(&reg.broker_id) {
                    Some(b) if !b.fenced => decide::fence(state, reg.broker_id),
                    _ => Vec::new(),
                };
                records.push(MetadataRecord::RegisterBroker {
                    broker_id: reg.broker_id,
                    host: reg.host.clone(),
                    port: reg.port,
                    rack: reg.rack.clone(),
                    incarnation_id: Some(reg.incarnation_id),
                    directory_id: reg.directory_id,
                    fenced: true,
                });
                Ok((state.cluster_id.clone(), records))
            })
            .await?;
        self.seen(reg.broker_id);
        let cluster_id = match cluster_id {
            Some(c) => c,
            None => self
                .applied
                .borrow()
                .state
                .cluster_id
                .clone()
                .unwrap_or_default(),
        };
        tracing::info!(node_id = %reg.broker_id, broker_epoch = epoch, host = %reg.host, port = reg.port, rack = ?reg.rack, "broker registered");
        Ok(RegisterReply {
            broker_epoch: epoch,
            cluster_id,
        })
    }

    async fn heartbeat(&self, hb: &BrokerHeartbeat) -> Result<HeartbeatReply, Attempt> {
        // Answered only after a quorum round confirms this node still leads: a controller that
        // was paused or cut off may have been replaced without knowing it, and its answer would
        // renew the broker's leadership lease (`lease.rs`) on a stale view.
        let (state, applied) =
            match tokio::time::timeout(QUORUM_CHECK, self.linearized_state()).await {
                Ok(r) => r?,
                Err(_) => {
                    return Err(Attempt::Retry(
                        "a quorum did not confirm this controller in time".to_string(),
                    ))
                }
            };
        let current = state.brokers.get(&hb.broker_id).cloned();
        let Some(info) = current.filter(|b| b.epoch == hb.broker_epoch) else {
            return Err(Attempt::Failed(ApiError::new(
                ResponseError::StaleBrokerEpoch,
                format!(
                    "broker {} epoch {} is not its current registration",
                    hb.broker_id, hb.broker_epoch
                ),
            )));
        };
        if !hb.shutting_down {
            self.seen(hb.broker_id);
        }
        let want_fence = hb.shutting_down && !info.fenced;
        let want_unfence = !hb.shutting_down && info.fenced && hb.metadata_offset >= info.epoch;
        if !want_fence && !want_unfence {
            return Ok(HeartbeatReply {
                fenced: info.fenced,
                metadata_offset: applied,
            });
        }
        let broker = hb.broker_id;
        let epoch = hb.broker_epoch;
        let (fenced, offset) = self
            .decide_and_commit(|_, state| {
                let Some(b) = state.brokers.get(&broker).filter(|b| b.epoch == epoch) else {
                    return Err(ResponseError::StaleBrokerEpoch.into());
                };
                Ok(match (want_fence, b.fenced) {
                    (true, false) => (true, decide::fence(state, broker)),
                    (false, true) => (false, decide::unfence(state, broker)),
                    (_, fenced) => (fenced, Vec::new()),
                })
            })
            .await?;
        if want_fence {
            tracing::info!(node_id = %broker, "broker fenced: it is shutting down");
        } else {
            tracing::info!(node_id = %broker, broker_epoch = epoch, "broker unfenced: caught up with the metadata");
        }
        Ok(HeartbeatReply {
            fenced,
            metadata_offset: offset.max(applied),
        })
    }

    /// The active controller's duties on a timer: form the cluster, fence brokers whose session
    /// expired. Runs for the node's lifetime; does nothing while this node is not active.
    pub async fn run_liveness(self: Arc<Self>) {
        let tick = (self.liveness.session_timeout / 16)
            .clamp(Duration::from_millis(50), Duration::from_millis(250));
        let mut last_rebalance = Instant::now();
        loop {
            tokio::time::sleep(tick).await;
            let metrics = self.raft.metrics().borrow().clone();
            if metrics.current_leader != Some(self.identity.node) {
                self.sessions.lock().unwrap_or_else(|e| e.into_inner()).term = None;
                continue;
            }
            let state = self.applied.borrow().state.clone();
            let expired: Vec<BrokerId> = {
                let mut s = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
                if s.term != Some(metrics.current_term) {
                    // A new term: every broker gets a full session to find this controller,
                    // except the previous controller, whose session runs from its last
                    // AppendEntries here. It heartbeated to itself, so nothing else dates its
                    // last sign of life, and a controller that died must not keep its
                    // partitions leaderless for an election plus a whole new session. This
                    // node won the election only because a majority had not heard from it for
                    // an election timeout, so it is dead or cut off from the quorum; if it is
                    // alive it registers again, catches up and is unfenced.
                    s.term = Some(metrics.current_term);
                    let now = Instant::now();
                    s.last_seen = state.brokers.keys().map(|b| (*b, now)).collect();
                    // Taken, so a later term of this same node does not reuse it.
                    let contact = self
                        .leader_contact
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .take();
                    if let Some((old, heard)) = contact {
                        let old = i32::try_from(old).ok().map(BrokerId);
                        if let Some(seen) = old
                            .filter(|b| *b != self.node_id)
                            .and_then(|b| s.last_seen.get_mut(&b))
                        {
                            *seen = heard;
                        }
                    }
                    continue;
                }
                state
                    .live_brokers()
                    .map(|b| b.broker_id)
                    .filter(|b| {
                        s.last_seen
                            .get(b)
                            .is_none_or(|t| t.elapsed() >= self.liveness.session_timeout)
                    })
                    .collect()
            };
            if state.cluster_id.is_none() {
                let form = self.form_cluster();
                let _ = self
                    .decide_and_commit(|_, s| {
                        Ok((
                            (),
                            if s.cluster_id.is_none() {
                                vec![form]
                            } else {
                                Vec::new()
                            },
                        ))
                    })
                    .await;
            }
            if let Some((every, percent)) = self.liveness.leader_rebalance {
                if last_rebalance.elapsed() >= every {
                    last_rebalance = Instant::now();
                    let done = self
                        .decide_and_commit(|_, s| {
                            let records = decide::preferred_rebalance(s, percent);
                            Ok((records.len(), records))
                        })
                        .await;
                    if let Ok((moved, _)) = done {
                        if moved > 0 {
                            tracing::info!(
                                partitions = moved,
                                "leadership moved back to preferred replicas"
                            );
                        }
                    }
                }
            }
            for broker in expired {
                let done = self
                    .decide_and_commit(|_, s| {
                        let live = s.brokers.get(&broker).is_some_and(|b| !b.fenced);
                        Ok((
                            (),
                            if live {
                                decide::fence(s, broker)
                            } else {
                                Vec::new()
                            },
                        ))
                    })
                    .await;
                match done {
                    Ok(_) => tracing::warn!(
                        node_id = %broker,
                        session_timeout_ms = self.liveness.session_timeout.as_millis() as u64,
                        "broker fenced: no heartbeat within its session"
                    ),
                    Err(Attempt::Retry(why))
                    | Err(Attempt::Failed(ApiError {
                        message: Some(why), ..
                    })) => {
                        tracing::warn!(node_id = %broker, reason = %why, "could not fence broker")
                    }
                    Err(Attempt::Failed(e)) => {
                        tracing::warn!(node_id = %broker, error = ?e, "could not fence broker")
                    }
                }
            }
        }
    }

    /// Answers one request that arrived on the controller listener.
    pub async fn handle_rpc(&self, envelope: RpcEnvelope) -> RpcReply {
        if let (Some(theirs), Some(ours)) = (&envelope.cluster_id, self.identity.cluster_id()) {
            if *theirs != ours {
                tracing::warn!(from = envelope.from, their_cluster = %theirs, "refused a request from a node of another cluster");
                return RpcReply::WrongCluster { ours };
            }
        }
        match envelope.request {
            RpcRequest::AppendEntries(r) => {
                *self
                    .leader_contact
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()) = Some((envelope.from, Instant::now()));
                RpcReply::AppendEntries(self.raft.append_entries(r).await)
            }
            RpcRequest::Vote(r) => RpcReply::Vote(self.raft.vote(r).await),
            RpcRequest::InstallSnapshot(r) => {
                RpcReply::InstallSnapshot(self.raft.install_snapshot(r).await)
            }
            _ if !self.is_active() => RpcReply::NotController {
                leader: self.active_controller(),
            },
            _ => match self.serve_as_leader(&envelope).await {
                Ok(reply) => reply,
                Err(Attempt::Retry(_)) => RpcReply::NotController {
                    leader: self.active_controller(),
                },
                Err(Attempt::Failed(e)) => match envelope.request {
                    RpcRequest::Register(_) => RpcReply::Register(Err(e.into())),
                    RpcRequest::Heartbeat(_) => RpcReply::Heartbeat(Err(e.into())),
                    _ => RpcReply::Forward(OpReply {
                        outcome: OpOutcome::Unit(Err(e.into())),
                        offset: -1,
                    }),
                },
            },
        }
    }

    // ------------------------------------------------------------------ this broker's lifecycle

    /// Registers this node with the active controller, waiting for a quorum as long as it takes
    /// (nodes may start in any order). Refusals that a retry cannot fix (another cluster, a
    /// duplicate node id) are returned.
    pub async fn register_self(&self, reg: BrokerRegistration) -> Result<RegisterReply, ApiError> {
        let started = Instant::now();
        let mut logged = Instant::now();
        loop {
            let deadline = Instant::now() + RPC_TIMEOUT;
            match self
                .to_leader(RpcRequest::Register(reg.clone()), deadline)
                .await
            {
                Ok(RpcReply::Register(Ok(r))) => return Ok(r),
                Ok(RpcReply::Register(Err(e))) => return Err(e.into()),
                Ok(other) => return Err(unexpected(other)),
                Err(e) if e.code == ResponseError::InconsistentClusterId => return Err(e),
                Err(e) => {
                    if logged.elapsed() >= Duration::from_secs(5) {
                        logged = Instant::now();
                        tracing::info!(waited_s = started.elapsed().as_secs(), reason = ?e.message, "waiting for the controller quorum");
                    }
                }
            }
        }
    }

    /// One heartbeat to the active controller. Given up after a quarter of the session (at
    /// least two heartbeat intervals): the next one then asks whichever controller is active by
    /// then, so a controller that stopped answering (paused, cut off) is replaced before this
    /// broker's leadership lease runs out, instead of holding the heartbeats for the session.
    pub async fn send_heartbeat(&self, hb: BrokerHeartbeat) -> Result<HeartbeatReply, ApiError> {
        let attempt = (self.liveness.session_timeout / 4)
            .max(self.liveness.heartbeat_interval * 2)
            .min(RPC_TIMEOUT);
        let deadline = Instant::now() + attempt;
        match self.to_leader(RpcRequest::Heartbeat(hb), deadline).await? {
            RpcReply::Heartbeat(r) => r.map_err(Into::into),
            other => Err(unexpected(other)),
        }
    }

    /// The quorum as the active controller sees it (asked of it, wherever it is).
    pub async fn describe_quorum(&self) -> Result<rpc::QuorumInfo, ApiError> {
        let deadline = Instant::now() + RPC_TIMEOUT;
        match self.to_leader(RpcRequest::DescribeQuorum, deadline).await? {
            RpcReply::Quorum(q) => Ok(q),
            other => Err(unexpected(other)),
        }
    }

    /// This node's view of the quorum; complete only on the leader (which tracks every
    /// member's replication progress).
    fn quorum_info(&self) -> rpc::QuorumInfo {
        let m = self.raft.metrics().borrow().clone();
        let progress = |id: NodeId, addr: &str| {
            let matched = if id == m.id {
                m.last_log_index
            } else {
                m.replication
                    .as_ref()
                    .and_then(|r| r.get(&id).cloned().flatten())
                    .map(|l| l.index)
            };
            rpc::ReplicaProgress {
                id,
                addr: addr.to_string(),
                log_end_offset: matched.map_or(-1, |i| i as i64 + 1),
            }
        };
        let membership = m.membership_config.membership();
        let voter_ids: Vec<NodeId> = membership.voter_ids().collect();
        let mut voters = Vec::new();
        let mut observers = Vec::new();
        for (id, node) in membership.nodes() {
            if voter_ids.contains(id) {
                voters.push(progress(*id, &node.addr));
            } else {
                observers.push(progress(*id, &node.addr));
            }
        }
        rpc::QuorumInfo {
            leader: m.current_leader.unwrap_or(m.id),
            term: m.current_term,
            high_watermark: m.last_applied.map_or(0, |l| l.index as i64 + 1),
            voters,
            observers,
        }
    }

    /// The broker id of this node.
    pub fn node_id(&self) -> BrokerId {
        self.node_id
    }
}

fn node_id_of(b: BrokerId) -> Result<NodeId, Attempt> {
    u64::try_from(b.0).map_err(|_| {
        Attempt::Failed(ApiError::new(
            ResponseError::InvalidRequest,
            format!("invalid node id {b}"),
        ))
    })
}

fn unexpected(what: impl std::fmt::Debug) -> ApiError {
    ApiError::new(
        ResponseError::UnknownServerError,
        format!("unexpected controller answer: {what:?}"),
    )
}

impl From<WireError> for Attempt {
    fn from(e: WireError) -> Attempt {
        Attempt::Failed(e.into())
    }
}

/// A dynamic broker config entry: the key must be updatable at run time, the value valid.
pub fn validate_broker_config(key: &str, value: &str) -> Result<(), ApiError> {
    if !is_dynamic(key) {
        return Err(ApiError::new(
            ResponseError::InvalidRequest,
            format!("Cannot update these configs dynamically: {key}"),
        ));
    }
    check_setting(key, value)
        .map(|_| ())
        .map_err(|e| ApiError::new(ResponseError::InvalidConfig, e.to_string()))
}
