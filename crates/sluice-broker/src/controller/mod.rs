//! The controller: the one place metadata decisions are made. Placement of new partitions,
//! leader election and epochs, producer-id blocks and config validation happen here; the result
//! is a batch of [`MetadataRecord`]s, made durable in the metadata log and then applied and
//! published to the broker (through a [`MetadataListener`]). Request handlers ask the
//! controller; they never write records themselves.
//!
//! On a single node the controller is a local object over the local metadata log; with a
//! controller quorum the same interface is served by the active controller over Raft and an
//! RPC, and the handlers do not change.
//!
//! Every method that writes does so on the blocking pool (a metadata write ends with an
//! fdatasync). Writes are serialized by the store's mutex, which is never held on a reactor
//! thread; records are published in commit order while it is held.

pub mod placement;

use std::sync::{Arc, Mutex};

use kafka_protocol::ResponseError;
use sluice_meta::{
    BrokerId, ClusterState, MetadataRecord, MetadataStore, StoreError, TopicConfigs, TopicInfo,
    Uuid,
};
use sluice_types::{PartitionId, ProducerId};

use crate::blocking::off_reactor;
use crate::config::{check_setting, is_dynamic};
use crate::error::ApiError;
use crate::topic_config;
use placement::{place_replicas, validate_assignment, validate_topic_name};

/// Producer ids handed to a broker per allocation.
pub const PRODUCER_ID_BLOCK: i64 = 1000;

/// Told about every committed change, in commit order, with the state after it.
pub trait MetadataListener: Send + Sync {
    /// The records up to `state.last_offset` are durable; act on them. An error is reported to
    /// the caller whose change it was (the change itself stays committed).
    fn committed(&self, state: &ClusterState) -> Result<(), ApiError>;
}

/// Broker-wide defaults the controller applies to topics that do not say.
#[derive(Debug, Clone, Copy)]
pub struct TopicDefaults {
    pub num_partitions: i32,
    pub replication_factor: i16,
}

/// A CreateTopics entry as the handler understood it.
#[derive(Debug, Clone)]
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

/// How a starting broker announces itself.
#[derive(Debug, Clone)]
pub struct Registration {
    pub host: String,
    pub port: i32,
    pub rack: Option<String>,
}

pub struct Controller {
    inner: Arc<Inner>,
}

struct Inner {
    node_id: BrokerId,
    defaults: TopicDefaults,
    /// The metadata log; a std mutex, only ever locked on the blocking pool.
    store: Mutex<MetadataStore>,
    listener: Arc<dyn MetadataListener>,
}

impl Controller {
    pub fn new(
        node_id: BrokerId,
        defaults: TopicDefaults,
        store: MetadataStore,
        listener: Arc<dyn MetadataListener>,
    ) -> Controller {
        Controller {
            inner: Arc::new(Inner {
                node_id,
                defaults,
                store: Mutex::new(store),
                listener,
            }),
        }
    }

    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Inner, &mut MetadataStore) -> T + Send + 'static,
    ) -> T {
        let inner = self.inner.clone();
        off_reactor(move || {
            let mut store = inner.store.lock().unwrap_or_else(|e| e.into_inner());
            f(&inner, &mut store)
        })
        .await
    }

    /// Registers this node at start-up (blocking; before the broker serves): forms the cluster
    /// if its log does not say it was formed, records a new incarnation (whose log offset is the
    /// broker epoch), unfences it and elects it leader of every partition it may lead. A new
    /// incarnation always leads under a new leader epoch, so anything the previous process
    /// appended or answered under the old epoch is fenced.
    pub fn register(&self, registration: Registration) -> Result<i64, StoreError> {
        let inner = &self.inner;
        let mut store = inner.store.lock().unwrap_or_else(|e| e.into_inner());
        let node = inner.node_id;
        let mut records = Vec::new();
        if store.state().cluster_id.is_none() {
            records.push(MetadataRecord::FormCluster {
                cluster_id: store.cluster_id().to_string(),
            });
        }
        records.push(MetadataRecord::RegisterBroker {
            broker_id: node,
            host: registration.host,
            port: registration.port,
            rack: registration.rack,
            incarnation_id: Some(Uuid::new_v4()),
            fenced: true,
        });
        store.append_all(records)?;
        let epoch = store.state().brokers[&node].epoch;

        let mut records = vec![MetadataRecord::UnfenceBroker {
            broker_id: node,
            epoch,
        }];
        for topic in store.state().topics() {
            for (i, p) in topic.partitions.iter().enumerate() {
                let may_lead = p.isr.contains(&node) || p.elr.contains(&node);
                if may_lead && (p.leader == node || !p.has_leader()) {
                    records.push(MetadataRecord::PartitionChange {
                        topic_id: topic.topic_id,
                        partition: PartitionId(i as i32),
                        leader: Some(node),
                        isr: None,
                        elr: None,
                        replicas: None,
                    });
                }
            }
        }
        store.append_all(records)?;
        if let Err(e) = inner.listener.committed(store.state()) {
            tracing::error!(error = ?e, "applying the registration failed");
        }
        tracing::info!(node_id = %node, broker_epoch = epoch, "broker registered");
        Ok(epoch)
    }

    /// Creates topics (or only checks that they could be created). One result per topic, in
    /// order; the valid ones are written as one batch.
    pub async fn create_topics(
        &self,
        topics: Vec<NewTopic>,
        validate_only: bool,
    ) -> Vec<Result<TopicInfo, ApiError>> {
        self.run(move |inner, store| inner.create_topics(store, topics, validate_only))
            .await
    }

    /// Deletes topics by id; internal topics are refused.
    pub async fn delete_topics(&self, ids: Vec<Uuid>) -> Vec<Result<String, ApiError>> {
        self.run(move |inner, store| {
            let mut scratch = store.state().clone();
            let mut records = Vec::new();
            let mut results: Vec<Result<String, ApiError>> = ids
                .iter()
                .map(|id| {
                    let name = match scratch.topic_by_id(id) {
                        Some(t) if t.is_internal() => {
                            return Err(ApiError::new(
                                ResponseError::InvalidTopicException,
                                format!("Internal topic '{}' cannot be deleted.", t.name),
                            ))
                        }
                        Some(t) => t.name.clone(),
                        None => return Err(ResponseError::UnknownTopicId.into()),
                    };
                    let record = MetadataRecord::DeleteTopic { topic_id: *id };
                    scratch.apply(scratch.last_offset + 1, &record);
                    records.push(record);
                    Ok(name)
                })
                .collect();
            if let Err(e) = inner.commit(store, records) {
                for r in results.iter_mut().filter(|r| r.is_ok()) {
                    *r = Err(e.clone());
                }
            }
            for name in results.iter().flatten() {
                tracing::info!(topic = %name, "deleted topic");
            }
            results
        })
        .await
    }

    /// Grows a topic to `count` partitions.
    pub async fn create_partitions(
        &self,
        name: String,
        count: i32,
        assignment: Option<Vec<Vec<BrokerId>>>,
        validate_only: bool,
    ) -> Result<(), ApiError> {
        self.run(move |inner, store| {
            let record = inner.new_partitions(store.state(), &name, count, assignment)?;
            if validate_only {
                return Ok(());
            }
            inner.commit(store, vec![record])
        })
        .await
    }

    /// Replaces a topic's config overrides. Every entry is checked here, whoever computed them.
    pub async fn set_topic_configs(
        &self,
        name: String,
        configs: TopicConfigs,
    ) -> Result<(), ApiError> {
        self.run(move |inner, store| {
            let topic_id = store
                .state()
                .topic(&name)
                .map(|t| t.topic_id)
                .ok_or(ResponseError::UnknownTopicOrPartition)?;
            for (k, v) in &configs {
                topic_config::validate(k, v)?;
            }
            inner.commit(
                store,
                vec![MetadataRecord::SetTopicConfigs {
                    topic_id,
                    configs: configs.clone(),
                }],
            )?;
            tracing::info!(topic = %name, configs = ?configs, "topic configs changed");
            Ok(())
        })
        .await
    }

    /// Replaces the dynamic configs of one broker (`Some(id)`) or the cluster defaults
    /// (`None`). Every entry must be a dynamic broker setting with a valid value.
    pub async fn set_broker_configs(
        &self,
        broker_id: Option<BrokerId>,
        configs: TopicConfigs,
    ) -> Result<(), ApiError> {
        self.run(move |inner, store| {
            for (k, v) in &configs {
                validate_broker_config(k, v)?;
            }
            inner.commit(
                store,
                vec![MetadataRecord::SetBrokerConfigs { broker_id, configs }],
            )
        })
        .await
    }

    /// Reserves the next block of producer ids for `broker_id`: `(first, end)`, end exclusive.
    pub async fn allocate_producer_ids(
        &self,
        broker_id: BrokerId,
    ) -> Result<(ProducerId, ProducerId), ApiError> {
        self.run(move |inner, store| {
            let first_id = store.state().next_producer_id;
            inner.commit(
                store,
                vec![MetadataRecord::AllocateProducerIds {
                    broker_id,
                    first_id,
                    size: PRODUCER_ID_BLOCK,
                }],
            )?;
            Ok((first_id, ProducerId(first_id.get() + PRODUCER_ID_BLOCK)))
        })
        .await
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

impl Inner {
    /// Makes `records` durable and publishes the state after them.
    fn commit(
        &self,
        store: &mut MetadataStore,
        records: Vec<MetadataRecord>,
    ) -> Result<(), ApiError> {
        if records.is_empty() {
            return Ok(());
        }
        store.append_all(records).map_err(ApiError::from_store)?;
        self.listener.committed(store.state())
    }

    /// Brokers new replicas may be placed on: registered and not fenced, by id.
    fn placeable(state: &ClusterState) -> Vec<BrokerId> {
        state.live_brokers().map(|b| b.broker_id).collect()
    }

    fn create_topics(
        &self,
        store: &mut MetadataStore,
        topics: Vec<NewTopic>,
        validate_only: bool,
    ) -> Vec<Result<TopicInfo, ApiError>> {
        // Each topic is decided against the state the earlier ones of the batch leave.
        let mut scratch = store.state().clone();
        let mut records = Vec::new();
        let mut results: Vec<Result<TopicInfo, ApiError>> = topics
            .into_iter()
            .map(|t| {
                let record = self.new_topic(&scratch, t)?;
                let MetadataRecord::CreateTopic { name, .. } = &record else {
                    unreachable!("new_topic makes CreateTopic records")
                };
                let name = name.clone();
                scratch.apply(scratch.last_offset + 1, &record);
                records.push(record);
                Ok(scratch.topic(&name).expect("just applied").clone())
            })
            .collect();
        if validate_only {
            return results;
        }
        if let Err(e) = self.commit(store, records) {
            for r in results.iter_mut().filter(|r| r.is_ok()) {
                *r = Err(e.clone());
            }
        }
        for t in results.iter().flatten() {
            tracing::info!(topic = %t.name, partitions = t.partitions.len(), "created topic");
        }
        results
    }

    fn new_topic(&self, state: &ClusterState, t: NewTopic) -> Result<MetadataRecord, ApiError> {
        validate_topic_name(&t.name)?;
        if state.topic(&t.name).is_some() {
            return Err(ApiError::new(
                ResponseError::TopicAlreadyExists,
                format!("Topic '{}' already exists.", t.name),
            ));
        }
        for (k, v) in &t.configs {
            topic_config::validate(k, v)?;
        }
        let registered: Vec<BrokerId> = state.brokers.keys().copied().collect();
        let replicas = match t.assignment {
            Some(a) => {
                validate_assignment(&a, &registered)?;
                a
            }
            None => {
                let partitions = if t.num_partitions == -1 {
                    self.defaults.num_partitions
                } else {
                    t.num_partitions
                };
                if partitions <= 0 {
                    return Err(ApiError::new(
                        ResponseError::InvalidPartitions,
                        format!("Number of partitions must be larger than 0 (got {partitions})."),
                    ));
                }
                let rf = if t.replication_factor == -1 {
                    self.defaults.replication_factor
                } else {
                    t.replication_factor
                };
                let live = Self::placeable(state);
                place_replicas(partitions, rf, &live, random_start(live.len()))?
            }
        };
        Ok(MetadataRecord::CreateTopic {
            name: t.name,
            topic_id: Uuid::new_v4(),
            replicas,
            configs: t.configs,
        })
    }

    fn new_partitions(
        &self,
        state: &ClusterState,
        name: &str,
        count: i32,
        assignment: Option<Vec<Vec<BrokerId>>>,
    ) -> Result<MetadataRecord, ApiError> {
        let topic = state
            .topic(name)
            .ok_or(ResponseError::UnknownTopicOrPartition)?;
        let current = topic.partitions.len() as i32;
        if count <= current {
            return Err(ApiError::new(
                ResponseError::InvalidPartitions,
                format!("Topic currently has {current} partitions, which is higher than or equal to the requested {count}."),
            ));
        }
        let replicas = match assignment {
            Some(a) => {
                if a.len() as i32 != count - current {
                    return Err(ApiError::new(
                        ResponseError::InvalidReplicaAssignment,
                        format!("Increasing the number of partitions by {} but {} assignments provided.", count - current, a.len()),
                    ));
                }
                let registered: Vec<BrokerId> = state.brokers.keys().copied().collect();
                validate_assignment(&a, &registered)?;
                a
            }
            None => {
                let rf = topic.partitions[0].replicas.len() as i16;
                let live = Self::placeable(state);
                place_replicas(count - current, rf, &live, random_start(live.len()))?
            }
        };
        Ok(MetadataRecord::CreatePartitions {
            topic_id: topic.topic_id,
            replicas,
        })
    }
}

/// Where round-robin placement starts, at random, so that topics created one after another do
/// not all put their first leader on the same broker.
fn random_start(brokers: usize) -> usize {
    (Uuid::new_v4().as_u128() % brokers.max(1) as u128) as usize
}
