//! The broker's shared state and the topic operations that change cluster metadata.

use std::fs::File;
use std::path::Path;
use std::sync::{Arc, Mutex};

use kafka_protocol::ResponseError;
use sluice_meta::{MetadataRecord, MetadataStore, TopicConfigs, TopicInfo, Uuid};
use thiserror::Error;

use crate::config::{BrokerConfig, Settings};
use crate::coordinator::offsets::OFFSETS_TOPIC;
use crate::coordinator::Coordinator;
use crate::error::ApiError;
use crate::fetch_session::FetchSessionCache;
use crate::replica_manager::ReplicaManager;

/// Written on clean shutdown, removed at start-up; its absence means logs need recovery.
const CLEAN_SHUTDOWN_MARKER: &str = ".clean-shutdown";
const LOCK_FILE: &str = ".lock";

#[derive(Debug, Error)]
pub enum StartError {
    #[error("data directory {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error("data directory {0} is in use by another sluice process")]
    Locked(String),
    #[error(transparent)]
    Metadata(#[from] sluice_meta::StoreError),
    #[error("opening partition logs: {0}")]
    Log(#[from] sluice_log::LogError),
}

pub struct Broker {
    pub config: BrokerConfig,
    /// The metadata log; a std mutex because its critical sections are short and synchronous.
    pub meta: Mutex<MetadataStore>,
    pub replicas: ReplicaManager,
    pub fetch_sessions: FetchSessionCache,
    pub groups: Arc<Coordinator>,
    /// The current block of producer ids: `(next, end)`.
    producer_ids: Mutex<(i64, i64)>,
    /// Flipped to true when shutdown starts: parked fetches answer at once.
    pub stopping: tokio::sync::watch::Sender<bool>,
    /// Held for the broker's lifetime: an advisory lock on `<data-dir>/.lock`.
    _lock: File,
}

fn dir_err(path: &Path) -> impl FnOnce(std::io::Error) -> StartError + '_ {
    move |source| StartError::DataDir {
        path: path.display().to_string(),
        source,
    }
}

impl Broker {
    /// Opens the data directory: lock, metadata replay, log recovery, broker registration.
    pub fn open(config: BrokerConfig) -> Result<Arc<Broker>, StartError> {
        Self::open_with_io(config, Arc::new(sluice_log::StdIo))
    }

    /// [`Broker::open`] with the partition logs on a chosen disk seam (fault injection in
    /// tests: a failing or stalling fsync).
    pub fn open_with_io(
        config: BrokerConfig,
        io: Arc<dyn sluice_log::Io>,
    ) -> Result<Arc<Broker>, StartError> {
        let dir = config.data_dir.clone();
        std::fs::create_dir_all(&dir).map_err(dir_err(&dir))?;
        let lock = File::create(dir.join(LOCK_FILE)).map_err(dir_err(&dir))?;
        if lock.try_lock().is_err() {
            return Err(StartError::Locked(dir.display().to_string()));
        }
        let marker = dir.join(CLEAN_SHUTDOWN_MARKER);
        let clean = marker.exists();
        if clean {
            std::fs::remove_file(&marker).map_err(dir_err(&dir))?;
            File::open(&dir)
                .and_then(|d| d.sync_all())
                .map_err(dir_err(&dir))?;
        }
        tracing::info!(data_dir = %dir.display(), clean_shutdown = clean, "opening data directory");

        let mut meta = MetadataStore::open(&dir, config.node_id)?;
        let registration = MetadataRecord::RegisterBroker {
            broker_id: config.node_id,
            host: config.advertised_host.clone(),
            port: config.advertised_port as i32,
            rack: None,
        };
        let registered = meta.state().brokers.get(&config.node_id);
        if registered.map(|b| (b.host.as_str(), b.port))
            != Some((
                config.advertised_host.as_str(),
                config.advertised_port as i32,
            ))
        {
            meta.append(registration)?;
        }

        let settings = effective_settings(&config, meta.state());
        let replicas = ReplicaManager::with_io(dir.clone(), config.durability, settings, io);
        let topics: Vec<TopicInfo> = meta.state().topics().cloned().collect();
        for topic in &topics {
            replicas.open_topic(topic, clean)?;
        }
        replicas.remove_orphans(|dir_name| {
            topics
                .iter()
                .any(|t| (0..t.partitions.len()).any(|i| format!("{}-{}", t.name, i) == dir_name))
        });
        tracing::info!(topics = topics.len(), "logs open");
        let offsets_partitions = topics
            .iter()
            .find(|t| t.name == OFFSETS_TOPIC)
            .map(|t| t.partitions.len());
        let groups = Coordinator::open(&replicas, config.groups.clone(), offsets_partitions);
        Ok(Arc::new(Broker {
            config,
            meta: Mutex::new(meta),
            replicas,
            fetch_sessions: FetchSessionCache::new(1000),
            groups: Arc::new(groups),
            producer_ids: Mutex::new((0, 0)),
            stopping: tokio::sync::watch::Sender::new(false),
            _lock: lock,
        }))
    }

    /// Flushes and closes the logs and writes the clean-shutdown marker.
    pub fn shutdown(&self) {
        match self.replicas.close_all() {
            Ok(()) => {
                let marker = self.config.data_dir.join(CLEAN_SHUTDOWN_MARKER);
                let written = File::create(&marker)
                    .and_then(|f| f.sync_all())
                    .and_then(|()| File::open(&self.config.data_dir)?.sync_all());
                match written {
                    Ok(()) => tracing::info!("logs flushed, clean shutdown recorded"),
                    Err(e) => tracing::error!(error = %e, "could not write clean-shutdown marker"),
                }
            }
            Err(_) => tracing::error!("not every log closed cleanly; the next start recovers"),
        }
    }

    /// The broker settings in force: static ones with the dynamic configs laid over them.
    pub fn settings(&self) -> Settings {
        effective_settings(&self.config, self.meta.lock().expect("meta lock").state())
    }

    /// Replaces a topic's config overrides (validated by the caller) and applies them live.
    pub fn set_topic_configs(&self, name: &str, configs: TopicConfigs) -> Result<(), ApiError> {
        let mut meta = self.meta.lock().expect("meta lock");
        let topic_id = meta
            .state()
            .topic(name)
            .map(|t| t.topic_id)
            .ok_or(ResponseError::UnknownTopicOrPartition)?;
        meta.append(MetadataRecord::SetTopicConfigs { topic_id, configs })
            .map_err(ApiError::from_store)?;
        let topic = meta.state().topic(name).expect("exists").clone();
        drop(meta);
        self.replicas.apply_topic_configs(&topic);
        tracing::info!(topic = name, configs = ?topic.configs, "topic configs changed");
        Ok(())
    }

    /// Replaces the dynamic configs of this broker (`Some(id)`) or the cluster defaults
    /// (`None`) and applies them to every topic.
    pub fn set_broker_configs(
        &self,
        broker_id: Option<i32>,
        configs: TopicConfigs,
    ) -> Result<(), ApiError> {
        let mut meta = self.meta.lock().expect("meta lock");
        meta.append(MetadataRecord::SetBrokerConfigs { broker_id, configs })
            .map_err(ApiError::from_store)?;
        let settings = effective_settings(&self.config, meta.state());
        let topics: Vec<TopicInfo> = meta.state().topics().cloned().collect();
        drop(meta);
        self.replicas.set_broker_settings(settings, &topics);
        Ok(())
    }

    /// The dynamic configs recorded for `broker_id` (`None`: cluster defaults).
    pub fn dynamic_broker_configs(&self, broker_id: Option<i32>) -> TopicConfigs {
        self.meta
            .lock()
            .expect("meta lock")
            .state()
            .broker_configs
            .get(&broker_id)
            .cloned()
            .unwrap_or_default()
    }

    /// Hands out a never-used producer id, reserving a new block in the metadata log when the
    /// current one is spent.
    pub fn allocate_producer_id(&self) -> Result<i64, ApiError> {
        const BLOCK: i64 = 1000;
        let mut ids = self.producer_ids.lock().expect("producer id lock");
        if ids.0 >= ids.1 {
            let mut meta = self.meta.lock().expect("meta lock");
            let first_id = meta.state().next_producer_id;
            meta.append(MetadataRecord::AllocateProducerIds {
                broker_id: self.config.node_id,
                first_id,
                size: BLOCK,
            })
            .map_err(ApiError::from_store)?;
            *ids = (first_id, first_id + BLOCK);
        }
        let id = ids.0;
        ids.0 += 1;
        Ok(id)
    }

    /// Whether `id` was ever handed out by this cluster.
    pub fn is_issued_producer_id(&self, id: i64) -> bool {
        id >= 0
            && id
                < self
                    .meta
                    .lock()
                    .expect("meta lock")
                    .state()
                    .next_producer_id
    }

    pub fn cluster_id(&self) -> String {
        self.meta
            .lock()
            .expect("meta lock")
            .cluster_id()
            .to_string()
    }

    /// Creates a topic (or only checks that it could be created, when `validate_only`).
    pub fn create_topic(
        &self,
        name: &str,
        num_partitions: i32,
        replication_factor: i16,
        assignment: Option<Vec<Vec<i32>>>,
        configs: TopicConfigs,
        validate_only: bool,
    ) -> Result<TopicInfo, ApiError> {
        validate_topic_name(name)?;
        let mut meta = self.meta.lock().expect("meta lock");
        if meta.state().topic(name).is_some() {
            return Err(ApiError::new(
                ResponseError::TopicAlreadyExists,
                format!("Topic '{name}' already exists."),
            ));
        }
        let brokers: Vec<i32> = meta.state().brokers.keys().copied().collect();
        let replicas = match assignment {
            Some(a) => {
                validate_assignment(&a, &brokers)?;
                a
            }
            None => {
                let partitions = if num_partitions == -1 {
                    self.config.num_partitions
                } else {
                    num_partitions
                };
                if partitions <= 0 {
                    return Err(ApiError::new(
                        ResponseError::InvalidPartitions,
                        format!("Number of partitions must be larger than 0 (got {partitions})."),
                    ));
                }
                let rf = if replication_factor == -1 {
                    self.config.default_replication_factor
                } else {
                    replication_factor
                };
                place_replicas(partitions, rf, &brokers)?
            }
        };
        let topic_id = Uuid::new_v4();
        let record = MetadataRecord::CreateTopic {
            name: name.to_string(),
            topic_id,
            replicas: replicas.clone(),
            configs: configs.clone(),
        };
        if validate_only {
            meta.state()
                .validate(&record)
                .map_err(|e| ApiError::new(ResponseError::InvalidRequest, e.to_string()))?;
            let mut preview = sluice_meta::ClusterState::default();
            for b in meta.state().brokers.values() {
                preview
                    .apply(&MetadataRecord::RegisterBroker {
                        broker_id: b.broker_id,
                        host: b.host.clone(),
                        port: b.port,
                        rack: b.rack.clone(),
                    })
                    .expect("brokers are valid");
            }
            preview.apply(&record).expect("validated");
            return Ok(preview.topic(name).expect("just applied").clone());
        }
        meta.append(record).map_err(ApiError::from_store)?;
        let topic = meta.state().topic(name).expect("just created").clone();
        drop(meta);
        self.replicas
            .open_topic(&topic, true)
            .map_err(ApiError::from_log)?;
        tracing::info!(
            topic = name,
            partitions = topic.partitions.len(),
            "created topic"
        );
        Ok(topic)
    }

    /// Deletes a topic and its data.
    pub fn delete_topic(&self, topic_id: Uuid) -> Result<String, ApiError> {
        let mut meta = self.meta.lock().expect("meta lock");
        let name = match meta.state().topic_by_id(&topic_id) {
            Some(t) if t.is_internal() => {
                return Err(ApiError::new(
                    ResponseError::InvalidTopicException,
                    format!("Internal topic '{}' cannot be deleted.", t.name),
                ))
            }
            Some(t) => t.name.clone(),
            None => return Err(ResponseError::UnknownTopicId.into()),
        };
        meta.append(MetadataRecord::DeleteTopic { topic_id })
            .map_err(ApiError::from_store)?;
        drop(meta);
        self.replicas.delete_topic(&name);
        self.fetch_sessions.forget_topic(&name);
        tracing::info!(topic = %name, "deleted topic");
        Ok(name)
    }

    /// Grows a topic to `count` partitions.
    pub fn create_partitions(
        &self,
        name: &str,
        count: i32,
        assignment: Option<Vec<Vec<i32>>>,
        validate_only: bool,
    ) -> Result<(), ApiError> {
        let mut meta = self.meta.lock().expect("meta lock");
        let topic = meta
            .state()
            .topic(name)
            .cloned()
            .ok_or(ResponseError::UnknownTopicOrPartition)?;
        let current = topic.partitions.len() as i32;
        if count <= current {
            return Err(ApiError::new(
                ResponseError::InvalidPartitions,
                format!("Topic currently has {current} partitions, which is higher than or equal to the requested {count}."),
            ));
        }
        let brokers: Vec<i32> = meta.state().brokers.keys().copied().collect();
        let new = match assignment {
            Some(a) => {
                if a.len() as i32 != count - current {
                    return Err(ApiError::new(
                        ResponseError::InvalidReplicaAssignment,
                        format!("Increasing the number of partitions by {} but {} assignments provided.", count - current, a.len()),
                    ));
                }
                validate_assignment(&a, &brokers)?;
                a
            }
            None => {
                let rf = topic.partitions[0].replicas.len() as i16;
                place_replicas(count - current, rf, &brokers)?
            }
        };
        if validate_only {
            return Ok(());
        }
        meta.append(MetadataRecord::CreatePartitions {
            topic_id: topic.topic_id,
            replicas: new,
        })
        .map_err(ApiError::from_store)?;
        let topic = meta.state().topic(name).expect("exists").clone();
        drop(meta);
        self.replicas
            .open_topic(&topic, true)
            .map_err(ApiError::from_log)
    }
}

/// Static settings with the metadata's dynamic broker configs laid over them.
fn effective_settings(config: &BrokerConfig, state: &sluice_meta::ClusterState) -> Settings {
    config.settings.with_dynamic(
        state.broker_configs.get(&None),
        state.broker_configs.get(&Some(config.node_id)),
    )
}

/// Kafka's topic name rules: 1..=249 chars of `[a-zA-Z0-9._-]`, not `.` or `..`.
pub fn validate_topic_name(name: &str) -> Result<(), ApiError> {
    let invalid = |why: String| Err(ApiError::new(ResponseError::InvalidTopicException, why));
    if name.is_empty() {
        return invalid("Topic name is illegal, it can't be empty".into());
    }
    if name == "." || name == ".." {
        return invalid(format!("Topic name cannot be \"{name}\""));
    }
    if name.len() > 249 {
        return invalid(format!(
            "Topic name is illegal, it can't be longer than 249 characters, topic name: {name}"
        ));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    {
        return invalid(format!("Topic name \"{name}\" is illegal, it contains a character other than ASCII alphanumerics, '.', '_' and '-'"));
    }
    Ok(())
}

fn validate_assignment(assignment: &[Vec<i32>], brokers: &[i32]) -> Result<(), ApiError> {
    let bad = |why: String| Err(ApiError::new(ResponseError::InvalidReplicaAssignment, why));
    if assignment.is_empty() {
        return bad("Replica assignment is empty.".into());
    }
    for (p, replicas) in assignment.iter().enumerate() {
        if replicas.is_empty() {
            return bad(format!("Partition {p} has no replicas."));
        }
        if let Some(b) = replicas.iter().find(|b| !brokers.contains(b)) {
            return bad(format!("Partition {p} names unknown broker {b}."));
        }
        let mut sorted = replicas.clone();
        sorted.sort_unstable();
        sorted.dedup();
        if sorted.len() != replicas.len() {
            return bad(format!("Partition {p} lists a broker twice."));
        }
    }
    Ok(())
}

/// Round-robin placement: partition i's replicas start at broker i mod n.
fn place_replicas(partitions: i32, rf: i16, brokers: &[i32]) -> Result<Vec<Vec<i32>>, ApiError> {
    if rf <= 0 || rf as usize > brokers.len() {
        return Err(ApiError::new(
            ResponseError::InvalidReplicationFactor,
            format!(
                "Replication factor: {rf} larger than available brokers: {}.",
                brokers.len()
            ),
        ));
    }
    Ok((0..partitions as usize)
        .map(|p| {
            (0..rf as usize)
                .map(|r| brokers[(p + r) % brokers.len()])
                .collect()
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names() {
        assert!(validate_topic_name("orders.v1_x-2").is_ok());
        for bad in ["", ".", "..", "bad name!", "ü", &"x".repeat(250)] {
            assert_eq!(
                validate_topic_name(bad).unwrap_err().code,
                ResponseError::InvalidTopicException,
                "{bad}"
            );
        }
    }

    #[test]
    fn placement() {
        assert_eq!(place_replicas(3, 1, &[1]).unwrap(), vec![vec![1]; 3]);
        assert_eq!(
            place_replicas(2, 2, &[1, 2, 3]).unwrap(),
            vec![vec![1, 2], vec![2, 3]]
        );
        assert_eq!(
            place_replicas(1, 3, &[1]).unwrap_err().code,
            ResponseError::InvalidReplicationFactor
        );
        assert_eq!(
            place_replicas(1, 0, &[1]).unwrap_err().code,
            ResponseError::InvalidReplicationFactor
        );
    }
}
