//! The broker's view of the cluster metadata: an immutable image ([`ClusterState`]) that
//! request handlers read without a lock (an atomic pointer load), and the publisher that
//! replaces it when records are committed.
//!
//! Publishing computes the [`MetadataDelta`] between the current image and the next one and
//! acts on it in this order: broker settings; partitions this broker now hosts are opened and
//! told whether they lead and under which epoch, and every partition which brokers are fenced
//! (they may not hold a HW or join an ISR); topic configs; then the new image is swapped
//! in; then partitions this broker no longer hosts are closed and their data removed. So a
//! client that sees a topic in Metadata finds its logs open, and a deleted topic vanishes from
//! Metadata before its files do.

use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use sluice_meta::{BrokerId, ClusterState, MetadataDelta};

use crate::config::{BrokerSettings, Settings};
use crate::error::ApiError;
use crate::fetch_session::FetchSessionCache;
use crate::replica_manager::ReplicaManager;

/// The current metadata image, published atomically.
pub struct MetadataImage {
    current: ArcSwap<ClusterState>,
}

impl MetadataImage {
    pub fn new(state: ClusterState) -> MetadataImage {
        MetadataImage {
            current: ArcSwap::from_pointee(state),
        }
    }

    /// The image as of now; later publishes do not change it.
    pub fn load(&self) -> Arc<ClusterState> {
        self.current.load_full()
    }
}

/// Static settings with the image's dynamic broker configs laid over them.
pub fn effective_settings(base: &Settings, node_id: BrokerId, state: &ClusterState) -> Settings {
    base.with_dynamic(
        state.broker_configs.get(&None),
        state.broker_configs.get(&Some(node_id)),
    )
}

/// Something besides the replica manager that reacts to metadata changes (the group
/// coordinator). Called after the new image is published, on the publishing thread (the
/// blocking pool), in commit order.
pub trait DeltaListener: Send + Sync {
    fn on_delta(&self, delta: &MetadataDelta, image: &Arc<ClusterState>);
}

/// Applies committed metadata to this broker.
pub struct MetadataPublisher {
    node_id: BrokerId,
    image: Arc<MetadataImage>,
    replicas: Arc<ReplicaManager>,
    fetch_sessions: Arc<FetchSessionCache>,
    /// The static broker settings; dynamic configs from the image are laid over them.
    static_settings: Settings,
    /// Publishes happen one at a time, in commit order.
    order: Mutex<()>,
    listeners: std::sync::RwLock<Vec<Arc<dyn DeltaListener>>>,
}

impl MetadataPublisher {
    pub fn new(
        node_id: BrokerId,
        image: Arc<MetadataImage>,
        replicas: Arc<ReplicaManager>,
        fetch_sessions: Arc<FetchSessionCache>,
        static_settings: Settings,
    ) -> MetadataPublisher {
        MetadataPublisher {
            node_id,
            image,
            replicas,
            fetch_sessions,
            static_settings,
            order: Mutex::new(()),
            listeners: std::sync::RwLock::default(),
        }
    }

    /// Adds a listener for every later publish.
    pub fn subscribe(&self, listener: Arc<dyn DeltaListener>) {
        self.listeners
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(listener);
    }

    /// Makes `next` the current image and brings the hosted partitions in line with it.
    /// `clean_shutdown` says whether logs opened now may skip recovery (only at start-up can
    /// it be false; partitions created later are new).
    pub fn publish(&self, next: ClusterState, clean_shutdown: bool) -> Result<(), ApiError> {
        let _order = self.order.lock().unwrap_or_else(|e| e.into_inner());
        let old = self.image.load();
        let delta = MetadataDelta::between(&old, &next, self.node_id);
        if delta.broker_configs_changed || old.last_offset < 0 {
            let settings = effective_settings(&self.static_settings, self.node_id, &next);
            self.replicas.set_broker_settings(
                BrokerSettings::from_settings(&settings),
                &next.topics().cloned().collect::<Vec<_>>(),
            );
        }
        let opened = self
            .replicas
            .apply_local(&delta.local, &next, clean_shutdown);
        if delta.brokers_changed || !delta.local.leaders.is_empty() {
            let fenced: Vec<BrokerId> = next
                .brokers
                .values()
                .filter(|b| b.fenced)
                .map(|b| b.broker_id)
                .collect();
            self.replicas.set_ineligible(&fenced);
        }
        for name in &delta.changed_topic_configs {
            if let Some(topic) = next.topic(name) {
                self.replicas.apply_topic_configs(topic);
            }
        }
        let next = Arc::new(next);
        self.image.current.store(next.clone());
        self.replicas.remove(&delta.local.removed);
        for topic in &delta.deleted_topics {
            self.fetch_sessions.forget_topic(&topic.name);
        }
        let listeners = self
            .listeners
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for l in listeners {
            l.on_delta(&delta, &next);
        }
        opened.map_err(ApiError::from_log)
    }
}
