//! The partitions this broker hosts, by topic name and index, and their directories on disk
//! (`<data-dir>/<topic>-<partition>/`). Which partitions those are, and whether each leads, is
//! decided by the metadata: the publisher hands the replica manager the local changes of each
//! new image ([`ReplicaManager::apply_local`], [`ReplicaManager::remove`]).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock, RwLock};

use sluice_log::{Io, Log, LogConfig, LogError, StdIo};
use sluice_meta::{ClusterState, LocalChanges, TopicInfo, Uuid};
use sluice_types::{BrokerId, Offset, TopicPartition};

use crate::config::BrokerSettings;
use crate::partition::{Partition, PartitionEnv};
use crate::replica_fetcher::ReplicaFetchers;
use crate::throttle::ReplicationThrottles;
use crate::topic_config::TopicSettings;

pub struct ReplicaManager {
    /// Who this broker is, how durable an acknowledgement is, and the clock: handed to every
    /// partition.
    env: PartitionEnv,
    /// High watermarks read from `replication-offset-checkpoint` at start-up: where each
    /// partition's HW starts until it leads or hears from its leader.
    checkpointed_hws: BTreeMap<TopicPartition, Offset>,
    data_dir: PathBuf,
    /// Broker settings (static + dynamic), typed: their log defaults are the base of every
    /// topic's settings. Replaced when dynamic broker configs change.
    settings: RwLock<Arc<BrokerSettings>>,
    partitions: RwLock<HashMap<(String, i32), Arc<Partition>>>,
    /// The disk seam every partition log goes through.
    io: Arc<dyn Io>,
    /// Where follower partitions are fetched from their leaders; unset (nothing is fetched)
    /// until the broker installs it.
    fetchers: OnceLock<Arc<ReplicaFetchers>>,
    /// The replication throttles, at the rates the settings say.
    throttles: Arc<ReplicationThrottles>,
}

impl ReplicaManager {
    pub fn new(env: PartitionEnv, data_dir: PathBuf, settings: BrokerSettings) -> Self {
        Self::with_io(env, data_dir, settings, Arc::new(StdIo))
    }

    /// [`ReplicaManager::new`] whose logs reach the disk through `io` (fault injection).
    pub fn with_io(
        env: PartitionEnv,
        data_dir: PathBuf,
        settings: BrokerSettings,
        io: Arc<dyn Io>,
    ) -> Self {
        let throttles = Arc::new(ReplicationThrottles::default());
        let (leader, follower) = settings.replication_throttle;
        throttles.set_rates(leader, follower);
        ReplicaManager {
            env,
            checkpointed_hws: sluice_log::high_watermark::read(&data_dir),
            io,
            data_dir,
            throttles,
            settings: RwLock::new(Arc::new(settings)),
            partitions: RwLock::default(),
            fetchers: OnceLock::new(),
        }
    }

    /// Installs the follower fetchers: from now on every partition this broker follows under a
    /// live leader is fetched from it. Once; later calls are ignored.
    pub fn set_fetchers(&self, fetchers: Arc<ReplicaFetchers>) {
        let _ = self.fetchers.set(fetchers);
    }

    pub fn fetchers(&self) -> Option<&Arc<ReplicaFetchers>> {
        self.fetchers.get()
    }

    /// The replication throttles (leader and follower side).
    pub fn throttles(&self) -> &Arc<ReplicationThrottles> {
        &self.throttles
    }

    /// The one log directory (`--data-dir`).
    pub fn data_dir(&self) -> &std::path::Path {
        &self.data_dir
    }

    pub fn partition_dir(&self, topic: &str, index: i32) -> PathBuf {
        self.data_dir.join(format!("{topic}-{index}"))
    }

    fn log_config(settings: &TopicSettings) -> LogConfig {
        LogConfig {
            segment_bytes: settings.segment_bytes,
            segment_ms: settings.segment_ms,
            index_interval_bytes: settings.index_interval_bytes,
            segment_index_bytes: settings.segment_index_bytes,
        }
    }

    /// The broker settings in force (static with the dynamic broker configs laid over them).
    pub fn broker_settings(&self) -> Arc<BrokerSettings> {
        self.settings.read().expect("settings lock").clone()
    }

    pub fn topic_settings(&self, topic: &TopicInfo) -> Arc<TopicSettings> {
        Arc::new(TopicSettings::resolve(
            &topic.configs,
            &self.broker_settings().log,
        ))
    }

    /// Re-resolves the configs of `topic`'s partitions (its overrides changed).
    pub fn apply_topic_configs(&self, topic: &TopicInfo) {
        let settings = self.topic_settings(topic);
        for index in 0..topic.partitions.len() as i32 {
            if let Some(p) = self.get(&topic.name, index) {
                p.log.set_config(Self::log_config(&settings));
                p.set_settings(settings.clone());
            }
        }
    }

    /// New broker-level defaults (dynamic broker configs changed): every topic re-resolves.
    pub fn set_broker_settings(&self, settings: BrokerSettings, topics: &[TopicInfo]) {
        let (leader, follower) = settings.replication_throttle;
        self.throttles.set_rates(leader, follower);
        *self.settings.write().expect("settings lock") = Arc::new(settings);
        for t in topics {
            self.apply_topic_configs(t);
        }
    }

    pub fn get(&self, topic: &str, index: i32) -> Option<Arc<Partition>> {
        self.partitions
            .read()
            .expect("partition map lock")
            .get(&(topic.to_string(), index))
            .cloned()
    }

    /// Opens the partitions this broker now hosts and tells each whether it leads and under
    /// which epoch. Keeps going past a partition that fails to open (its disk is bad: it stays
    /// offline, and requests for it get errors) and returns the first failure.
    pub fn apply_local(
        &self,
        changes: &LocalChanges,
        image: &ClusterState,
        clean_shutdown: bool,
    ) -> Result<(), LogError> {
        let mut first_err = None;
        let local = changes
            .leaders
            .iter()
            .map(|c| (c, true))
            .chain(changes.followers.iter().map(|c| (c, false)));
        for (change, leads) in local {
            let Some(topic) = image.topic_by_id(&change.topic_id) else {
                continue;
            };
            let partition = match self.open_partition(topic, &change.tp, clean_shutdown) {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!(partition = %change.tp, error = %e, "could not open partition");
                    first_err.get_or_insert(e);
                    continue;
                }
            };
            partition.set_leadership(leads, &change.info, self.env.clock.now_ms());
            if let Some(fetchers) = self.fetchers.get() {
                let info = &change.info;
                if leads || !info.has_leader() {
                    fetchers.unfollow(&change.tp);
                } else {
                    let addr = image
                        .brokers
                        .get(&info.leader)
                        .map(|b| format!("{}:{}", b.host, b.port));
                    fetchers.follow(
                        &change.tp,
                        partition.clone(),
                        info.leader,
                        addr,
                        info.leader_epoch,
                    );
                }
            }
            tracing::debug!(partition = %change.tp, leads, leader_epoch = %change.info.leader_epoch,
                "partition leadership applied");
        }
        first_err.map_or(Ok(()), Err)
    }

    /// The open partition `tp`, opening (creating or recovering) its log if needed.
    fn open_partition(
        &self,
        topic: &TopicInfo,
        tp: &TopicPartition,
        clean_shutdown: bool,
    ) -> Result<Arc<Partition>, LogError> {
        let index = tp.partition.get();
        if let Some(p) = self.get(&tp.topic, index) {
            return Ok(p);
        }
        let dir = self.partition_dir(&tp.topic, index);
        let settings = self.topic_settings(topic);
        let log = Log::open_with_io(
            &dir,
            Self::log_config(&settings),
            clean_shutdown,
            self.io.clone(),
        )?;
        tracing::debug!(partition = %tp, log_end_offset = log.log_end_offset().get(), "opened partition log");
        let non_empty = log.log_end_offset() > log.log_start_offset();
        let partition = Arc::new(Partition::new(
            &self.env,
            tp,
            topic.topic_id,
            log,
            settings,
            self.checkpointed_hws.get(tp).copied(),
        ));
        if non_empty {
            let expiration_ms = self.broker_settings().producer_id_expiration_ms;
            partition.load_producer_state(self.env.clock.now_ms(), expiration_ms)?;
        }
        self.partitions
            .write()
            .expect("partition map lock")
            .insert((tp.topic.clone(), index), partition.clone());
        Ok(partition)
    }

    /// Tells every hosted partition which brokers are fenced now (see
    /// [`Partition::set_ineligible`]).
    pub fn set_ineligible(&self, fenced: &[BrokerId]) {
        for p in self.all() {
            p.set_ineligible(fenced);
        }
    }

    /// Closes and removes the given partitions, deleting their data from disk.
    pub fn remove(&self, gone: &[(TopicPartition, Uuid)]) {
        if gone.is_empty() {
            return;
        }
        if let Some(fetchers) = self.fetchers.get() {
            for (tp, _) in gone {
                fetchers.unfollow(tp);
            }
        }
        let removed: Vec<Arc<Partition>> = {
            let mut map = self.partitions.write().expect("partition map lock");
            gone.iter()
                .filter_map(|(tp, id)| {
                    let key = (tp.topic.clone(), tp.partition.get());
                    match map.get(&key) {
                        Some(p) if p.topic_id == *id => map.remove(&key),
                        _ => None,
                    }
                })
                .collect()
        };
        for p in removed {
            p.stop();
            let dir = p.log.dir().to_path_buf();
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(dir = %dir.display(), error = %e, "could not remove deleted partition");
                }
            }
        }
    }

    /// Removes partition directories that belong to no known partition (left by a crash between
    /// a topic deletion's metadata record and its directory removal).
    pub fn remove_orphans(&self, known: impl Fn(&str) -> bool) {
        let Ok(entries) = std::fs::read_dir(&self.data_dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            let Some((topic, index)) = name.rsplit_once('-') else {
                continue;
            };
            if index.parse::<i32>().is_err() || !entry.path().is_dir() || known(&name) {
                continue;
            }
            tracing::info!(topic, dir = %entry.path().display(), "removing orphaned partition directory");
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }

    pub fn all(&self) -> Vec<Arc<Partition>> {
        self.partitions
            .read()
            .expect("partition map lock")
            .values()
            .cloned()
            .collect()
    }

    /// Writes every hosted partition's high watermark to `replication-offset-checkpoint`.
    /// Blocking (an fsync). Failures are logged: the file is only a starting point.
    pub fn checkpoint_high_watermarks(&self) {
        let hws: BTreeMap<TopicPartition, Offset> = self
            .all()
            .iter()
            .map(|p| {
                (
                    TopicPartition::new(p.topic.clone(), p.index),
                    p.high_watermark(),
                )
            })
            .collect();
        if let Err(e) = sluice_log::high_watermark::write(&*self.io, &self.data_dir, &hws) {
            tracing::warn!(error = %e, "could not write the high-watermark checkpoint");
        }
    }

    /// Flushes and closes every log (clean shutdown).
    pub fn close_all(&self) -> Result<(), LogError> {
        let mut first_err = None;
        for p in self.all() {
            p.snapshot_producer_state();
            if let Err(e) = p.log.close() {
                tracing::error!(topic = %p.topic, partition = p.index, error = %e, "closing log failed");
                first_err.get_or_insert(e);
            }
        }
        // After the logs closed: every HW is final and every log is durable up to it.
        self.checkpoint_high_watermarks();
        first_err.map_or(Ok(()), Err)
    }
}
