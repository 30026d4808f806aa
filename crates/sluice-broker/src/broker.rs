//! The broker's shared state: the metadata image and the controller, the hosted partitions,
//! fetch sessions and the group coordinator; start-up and shutdown.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use sluice_meta::{BrokerId, ClusterState, MetadataStore};
use sluice_types::{Clock, SystemClock};
use thiserror::Error;

use crate::config::{BrokerConfig, BrokerSettings};
use crate::controller::{Controller, Registration, TopicDefaults};
use crate::coordinator::Coordinator;
use crate::error::ApiError;
use crate::fetch_session::FetchSessionCache;
use crate::image::{effective_settings, MetadataImage, MetadataPublisher};
use crate::partition::PartitionEnv;
use crate::producer_ids::ProducerIds;
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
    #[error("opening partition logs: {0:?}")]
    Partitions(ApiError),
}

pub struct Broker {
    pub config: BrokerConfig,
    /// Every timestamp the broker takes comes from here (tests can move time by hand).
    pub clock: Arc<dyn Clock>,
    /// The applied metadata, read lock-free by every handler.
    pub image: Arc<MetadataImage>,
    /// Where every metadata change is decided and written.
    pub controller: Arc<Controller>,
    pub replicas: Arc<ReplicaManager>,
    pub fetch_sessions: Arc<FetchSessionCache>,
    pub groups: Arc<Coordinator>,
    pub producer_ids: ProducerIds,
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
        Self::open_with(config, io, Arc::new(SystemClock))
    }

    /// [`Broker::open_with_io`] on a chosen clock.
    pub fn open_with(
        config: BrokerConfig,
        io: Arc<dyn sluice_log::Io>,
        clock: Arc<dyn Clock>,
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

        let node_id = BrokerId(config.node_id);
        let store = MetadataStore::open(&dir, node_id)?;
        let replayed = store.state().clone();
        let replicas = Arc::new(ReplicaManager::with_io(
            PartitionEnv {
                local: node_id,
                durability: config.durability,
                clock: clock.clone(),
            },
            dir.clone(),
            BrokerSettings::from_settings(&effective_settings(
                &config.raw_settings,
                node_id,
                &replayed,
            )),
            io,
        ));
        let fetch_sessions = Arc::new(FetchSessionCache::new(1000));
        let image = Arc::new(MetadataImage::new(ClusterState::new()));
        let publisher = Arc::new(MetadataPublisher::new(
            node_id,
            image.clone(),
            replicas.clone(),
            fetch_sessions.clone(),
            config.raw_settings.clone(),
        ));
        // The replayed metadata first: this opens (and if needed recovers) every local log.
        publisher
            .publish(replayed, clean)
            .map_err(StartError::Partitions)?;
        let state = image.load();
        replicas.remove_orphans(|dir_name| {
            state
                .topics()
                .any(|t| (0..t.partitions.len()).any(|i| format!("{}-{}", t.name, i) == dir_name))
        });
        tracing::info!(topics = state.topics().count(), "logs open");

        let controller = Arc::new(Controller::new(
            node_id,
            TopicDefaults {
                num_partitions: config.settings.num_partitions,
                replication_factor: config.settings.default_replication_factor,
            },
            store,
            publisher.clone(),
        ));
        controller.register(Registration {
            host: config.advertised_host.clone(),
            port: config.advertised_port as i32,
            rack: None,
        })?;

        let groups = Arc::new(Coordinator::open(
            image.clone(),
            controller.clone(),
            replicas.clone(),
            config.settings.groups.clone(),
            clock.clone(),
        ));
        publisher.subscribe(groups.clone());
        let producer_ids = ProducerIds::new(node_id, image.clone(), controller.clone());
        Ok(Arc::new(Broker {
            config,
            clock,
            image,
            controller,
            replicas,
            fetch_sessions,
            groups,
            producer_ids,
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
}
