//! The broker's shared state: the metadata image and the controller, the hosted partitions,
//! fetch sessions and the group coordinator; start-up and shutdown.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sluice_meta::quorum::{self, Applied, ControllerNode, NodeId};
use sluice_meta::{BrokerId, ClusterState, Uuid};
use sluice_types::{Clock, SystemClock};
use thiserror::Error;
use tokio::sync::watch;

use crate::blocking::off_reactor;
use crate::config::{BrokerConfig, BrokerSettings};
use crate::controller::network::Network;
use crate::controller::rpc::{BrokerHeartbeat, BrokerRegistration};
use crate::controller::{self, Controller, Identity, Liveness, TopicDefaults};
use crate::coordinator::Coordinator;
use crate::error::ApiError;
use crate::fetch_session::FetchSessionCache;
use crate::image::{effective_settings, MetadataImage, MetadataPublisher};
use crate::partition::{IsrChange, PartitionEnv};
use crate::producer_ids::ProducerIds;
use crate::replica_fetcher::ReplicaFetchers;
use crate::replica_manager::ReplicaManager;

/// Written on clean shutdown, removed at start-up; its absence means logs need recovery.
const CLEAN_SHUTDOWN_MARKER: &str = ".clean-shutdown";
const LOCK_FILE: &str = ".lock";
/// The metadata quorum's directory: `meta.properties`, the Raft log, vote and snapshot.
const METADATA_DIR: &str = "__cluster_metadata";

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
    #[error("metadata quorum: {0}")]
    Quorum(String),
    #[error("{0}")]
    Refused(String),
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
    /// Set when the broker cannot go on (its data directory belongs to another cluster).
    fatal: Arc<watch::Sender<Option<String>>>,
    lifecycle: Arc<Lifecycle>,
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
    /// Opens the data directory and joins the cluster: lock, the metadata quorum (Raft log,
    /// snapshot, vote), the controller listener, log recovery as the metadata is applied,
    /// registration with the active controller. Returns once this broker is registered,
    /// caught up with the metadata and unfenced, ready to serve clients.
    pub async fn open(config: BrokerConfig) -> Result<Arc<Broker>, StartError> {
        Self::open_with_io(config, Arc::new(sluice_log::StdIo)).await
    }

    /// [`Broker::open`] with the partition logs on a chosen disk seam (fault injection in
    /// tests: a failing or stalling fsync).
    pub async fn open_with_io(
        config: BrokerConfig,
        io: Arc<dyn sluice_log::Io>,
    ) -> Result<Arc<Broker>, StartError> {
        Self::open_with(config, io, Arc::new(SystemClock)).await
    }

    /// [`Broker::open_with_io`] on a chosen clock.
    pub async fn open_with(
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
        let raft_id = quorum::node_id(node_id);
        let meta_dir = dir.join(METADATA_DIR);
        let props = sluice_meta::properties::open(&meta_dir, node_id)?;
        let identity = Arc::new(Identity::new(raft_id, props.cluster_id.clone()));
        let own_addr = config.cluster.own_addr(config.node_id);
        let (log_store, state_machine) = {
            let meta_dir = meta_dir.clone();
            let own = ControllerNode::new(own_addr.clone());
            off_reactor(move || quorum::open_storage(&meta_dir, (raft_id, own)))
                .await
                .map_err(|e| StartError::Quorum(e.to_string()))?
        };
        let applied = state_machine.subscribe();
        let initial = applied.borrow().state.clone();
        // ISR changes leaders propose, on their way to the controller (once it exists, below).
        let (isr_tx, isr_rx) = tokio::sync::mpsc::unbounded_channel();
        let lease = Arc::new(crate::lease::LeadershipLease::new());
        let replicas = Arc::new(ReplicaManager::with_io(
            PartitionEnv {
                local: node_id,
                durability: config.durability,
                clock: clock.clone(),
                isr_changes: Some(isr_tx),
                replica_lag_time_max_ms: config.settings.replica_lag_time_max_ms,
                unsafe_ack_before_replication: config.unsafe_ack_before_replication,
                lease: lease.clone(),
            },
            dir.clone(),
            BrokerSettings::from_settings(&effective_settings(
                &config.raw_settings,
                node_id,
                &initial,
            )),
            io,
        ));
        let routes = Arc::new(config.cluster.peer_routes.clone());
        if !routes.is_empty() {
            tracing::warn!(routes = ?routes, "peer links are dialed through --peer-route (a test harness)");
        }
        let fetch_sessions = Arc::new(FetchSessionCache::new(1000));
        let image = Arc::new(MetadataImage::new(ClusterState::new()));
        replicas.set_fetchers(Arc::new(ReplicaFetchers::new(
            node_id,
            image.clone(),
            config.settings.replica_fetch.clone(),
            config.settings.producer_id_expiration_ms,
            routes.clone(),
            replicas.throttles().clone(),
            tokio::runtime::Handle::current(),
        )));
        let publisher = Arc::new(MetadataPublisher::new(
            node_id,
            image.clone(),
            replicas.clone(),
            fetch_sessions.clone(),
            config.raw_settings.clone(),
        ));
        let (fatal_tx, _) = watch::channel(None::<String>);
        let fatal_tx = Arc::new(fatal_tx);
        // Everything the state machine applies is published to this broker, in order. Logs
        // opened by this process were closed cleanly only if the marker said so.
        let (published_tx, published) = watch::channel(-1i64);
        tokio::spawn(follow_metadata(
            applied.clone(),
            publisher.clone(),
            published_tx,
            clean,
            FollowIdentity {
                identity: identity.clone(),
                meta_dir: meta_dir.clone(),
                node_id,
                directory_id: props.directory_id,
                fatal: fatal_tx.clone(),
            },
        ));

        let raft_config = openraft::Config {
            cluster_name: "sluice-metadata".into(),
            // openraft's followers refuse votes for a leader lease of election_timeout_max after
            // they last heard from the leader, so a candidate whose timer fires earlier loses
            // its first round: a narrow range keeps a dead controller's replacement within about
            // 2.5 s, inside the broker session that must expire anyway before its partitions
            // move. 800 ms is still five missed heartbeats on a loaded machine.
            heartbeat_interval: 150,
            election_timeout_min: 800,
            election_timeout_max: 1200,
            install_snapshot_timeout: 10_000,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(
                config.settings.metadata_snapshot_entries,
            ),
            // Entries kept behind a snapshot, so a briefly lagging node catches up from the log
            // rather than a whole snapshot.
            max_in_snapshot_log_to_keep: config.settings.metadata_snapshot_entries / 4,
            ..Default::default()
        }
        .validate()
        .map_err(|e| StartError::Quorum(e.to_string()))?;
        let raft = openraft::Raft::new(
            raft_id,
            Arc::new(raft_config),
            Network {
                identity: identity.clone(),
                routes: routes.clone(),
            },
            log_store,
            state_machine,
        )
        .await
        .map_err(|e| StartError::Quorum(e.to_string()))?;
        let voters: BTreeMap<NodeId, ControllerNode> = config
            .cluster
            .voters
            .iter()
            .map(|(id, addr)| (*id as NodeId, ControllerNode::new(addr.clone())))
            .collect();
        if config.cluster.voter && !raft.is_initialized().await.unwrap_or(true) {
            // Every voter proposes the same membership: safe, and no node has to go first.
            match raft.initialize(voters.clone()).await {
                Ok(()) => {
                    tracing::info!(voters = ?voters.keys().collect::<Vec<_>>(), "metadata quorum initialized")
                }
                Err(e) => tracing::info!(reason = %e, "metadata quorum already initialized"),
            }
        }

        let controller = Arc::new(Controller::new(
            node_id,
            identity.clone(),
            raft,
            applied,
            published.clone(),
            TopicDefaults {
                num_partitions: config.settings.num_partitions,
                replication_factor: config.settings.default_replication_factor,
                replication_factor_explicit: config
                    .raw_settings
                    .is_explicit("default.replication.factor"),
            },
            // Dialed through any --peer-route; the membership keeps the advertised addresses.
            voters
                .into_iter()
                .map(|(id, n)| (id, routes.resolve(&n.addr)))
                .collect(),
            Liveness {
                heartbeat_interval: config.settings.heartbeat_interval,
                session_timeout: config.settings.session_timeout,
                leader_rebalance: config.settings.leader_rebalance,
            },
        ));
        if let Some(addr) = config.cluster.controller_listen {
            let listener =
                tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|e| StartError::DataDir {
                        path: format!("controller listener {addr}"),
                        source: e,
                    })?;
            tracing::info!(controller_listen = %addr, "controller listener bound");
            tokio::spawn(controller::server::run(listener, controller.clone()));
        }
        tokio::spawn(controller.clone().run_liveness());

        // Register, then wait until this broker has applied its own registration and the
        // controller has unfenced it.
        let incarnation_id = Uuid::new_v4();
        let registration = BrokerRegistration {
            broker_id: node_id,
            incarnation_id,
            directory_id: props.directory_id,
            host: config.advertised_host.clone(),
            port: config.advertised_port as i32,
            rack: config.cluster.rack.clone(),
            controller_addr: Some(own_addr).filter(|a| !a.is_empty()),
            voter: config.cluster.voter,
            cluster_id: identity.cluster_id(),
        };
        let mut fatal_rx = fatal_tx.subscribe();
        let registered = tokio::select! {
            r = controller.register_self(registration.clone()) => r.map_err(|e| StartError::Refused(e.message.unwrap_or_else(|| format!("{:?}", e.code))))?,
            why = fatal_rx.wait_for(Option::is_some) => {
                let why = why.map(|w| w.clone().unwrap_or_default()).unwrap_or_default();
                return Err(StartError::Refused(why));
            }
        };
        let epoch = registered.broker_epoch;
        let lifecycle = Arc::new(Lifecycle {
            registration,
            epoch: std::sync::atomic::AtomicI64::new(epoch),
            stopping: std::sync::atomic::AtomicBool::new(false),
            lease,
        });
        tokio::spawn(heartbeat_loop(
            controller.clone(),
            lifecycle.clone(),
            published.clone(),
        ));
        tokio::spawn(forward_isr_changes(
            isr_rx,
            controller.clone(),
            lifecycle.clone(),
            image.clone(),
            replicas.clone(),
        ));
        tokio::spawn(tick_replicas(replicas.clone(), clock.clone()));
        let mut waited = image_waiter(&published);
        // Unfenced in the metadata, and a heartbeat answered so: the leadership lease holds.
        let unfenced = |s: &ClusterState| {
            s.brokers
                .get(&node_id)
                .is_some_and(|b| b.epoch == lifecycle.epoch() && !b.fenced)
                && lifecycle.lease.holds()
        };
        let mut logged = std::time::Instant::now();
        while !unfenced(&image.load()) {
            if let Some(why) = fatal_tx.borrow().clone() {
                return Err(StartError::Refused(why));
            }
            if logged.elapsed() > Duration::from_secs(5) {
                logged = std::time::Instant::now();
                tracing::info!(
                    broker_epoch = lifecycle.epoch(),
                    "waiting to be unfenced by the controller"
                );
            }
            let _ = tokio::time::timeout(Duration::from_millis(200), waited.changed()).await;
        }
        tracing::info!(node_id = %node_id, broker_epoch = lifecycle.epoch(), "broker registered and unfenced");

        let state = image.load();
        let keep = state.clone();
        let replicas_ = replicas.clone();
        off_reactor(move || {
            replicas_.remove_orphans(|dir_name| {
                keep.topics().any(|t| {
                    (0..t.partitions.len()).any(|i| format!("{}-{}", t.name, i) == dir_name)
                })
            })
        })
        .await;
        tracing::info!(topics = state.topics().count(), "logs open");

        let groups = Arc::new(Coordinator::new(
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
            fatal: fatal_tx,
            lifecycle,
            _lock: lock,
        }))
    }

    /// Tells the controller this broker is going away (it is fenced at once, so its
    /// leaderships move now rather than at the end of its session), then stops the quorum
    /// member. Bounded: a controller that does not answer is not waited for.
    pub async fn leave_cluster(&self) {
        self.lifecycle
            .stopping
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let hb = BrokerHeartbeat {
            broker_id: BrokerId(self.config.node_id),
            broker_epoch: self.lifecycle.epoch(),
            metadata_offset: self.image.load().last_offset,
            shutting_down: true,
        };
        let _ =
            tokio::time::timeout(Duration::from_secs(3), self.controller.send_heartbeat(hb)).await;
        let _ =
            tokio::time::timeout(Duration::from_secs(3), self.controller.raft().shutdown()).await;
        // No follower write may land after the logs close.
        if let Some(fetchers) = self.replicas.fetchers() {
            fetchers.shutdown().await;
        }
    }

    /// Resolves when the broker cannot go on (it belongs to another cluster): the reason.
    pub async fn fatal(&self) -> String {
        let mut rx = self.fatal.subscribe();
        let _ = rx.wait_for(Option::is_some).await;
        let why = rx.borrow().clone();
        why.unwrap_or_default()
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

/// This broker's registration as the heartbeat loop keeps it.
struct Lifecycle {
    registration: BrokerRegistration,
    epoch: AtomicI64,
    stopping: AtomicBool,
    /// Extended by every heartbeat the controller answers unfenced.
    lease: Arc<crate::lease::LeadershipLease>,
}

impl Lifecycle {
    fn epoch(&self) -> i64 {
        self.epoch.load(Ordering::SeqCst)
    }
}

/// Heartbeats to the active controller every `broker.heartbeat.interval.ms`, reporting how far
/// this broker has applied the metadata (it is unfenced once that reaches its registration).
/// A heartbeat refused for a stale epoch (this broker's session expired and it was replaced)
/// registers again.
async fn heartbeat_loop(
    controller: Arc<Controller>,
    lifecycle: Arc<Lifecycle>,
    published: watch::Receiver<i64>,
) {
    let interval = controller.liveness().heartbeat_interval;
    let session = controller.liveness().session_timeout;
    let mut fenced_logged = false;
    let mut first = true;
    loop {
        // The first heartbeat goes at once: it is what unfences a starting broker.
        if !std::mem::take(&mut first) {
            tokio::time::sleep(interval).await;
        }
        if lifecycle.stopping.load(Ordering::SeqCst) {
            return;
        }
        let hb = BrokerHeartbeat {
            broker_id: controller.node_id(),
            broker_epoch: lifecycle.epoch(),
            metadata_offset: *published.borrow(),
            shutting_down: false,
        };
        let sent_at = std::time::Instant::now();
        match controller.send_heartbeat(hb).await {
            Ok(reply) => {
                // The answer renews the lease only once this broker's image has caught up with
                // the metadata the controller answered from: a broker resumed from a pause is
                // unfenced as soon as it heartbeats, while its image may still say it leads
                // partitions that moved away (it would serve reads from a log that misses
                // what the new leader took).
                // The wait runs beside the loop, bounded by the session, so a slow image
                // neither delays the next heartbeat nor lets the lease lapse needlessly.
                if !reply.fenced {
                    let lease = lifecycle.lease.clone();
                    let (published, offset) = (published.clone(), reply.metadata_offset);
                    tokio::spawn(async move {
                        if caught_up(&published, offset, session).await {
                            if !lease.holds() {
                                tracing::info!("leadership lease renewed by the controller");
                            }
                            lease.extend(sent_at, session);
                        }
                    });
                }
                if reply.fenced && !fenced_logged {
                    tracing::info!("fenced by the controller; waiting to catch up");
                }
                fenced_logged = reply.fenced;
            }
            Err(e) if e.code == kafka_protocol::ResponseError::StaleBrokerEpoch => {
                tracing::warn!(reason = ?e.message, "registration is stale; registering again");
                let mut reg = lifecycle.registration.clone();
                reg.incarnation_id = Uuid::new_v4();
                match controller.register_self(reg).await {
                    Ok(r) => lifecycle.epoch.store(r.broker_epoch, Ordering::SeqCst),
                    Err(e) => tracing::error!(error = ?e, "registering again failed"),
                }
            }
            Err(e) => tracing::debug!(error = ?e, "heartbeat failed"),
        }
    }
}

/// Whether the published image reaches `offset` within `wait`.
async fn caught_up(published: &watch::Receiver<i64>, offset: i64, wait: Duration) -> bool {
    let mut rx = published.clone();
    let reached = tokio::time::timeout(wait, rx.wait_for(|p| *p >= offset))
        .await
        .is_ok_and(|r| r.is_ok());
    reached
}

/// Sends each ISR change a leader proposes to the controller (AlterPartition). Accepted changes
/// come back through the metadata image like every other; a refused one is dropped so the
/// leader may propose again.
async fn forward_isr_changes(
    mut changes: tokio::sync::mpsc::UnboundedReceiver<IsrChange>,
    controller: Arc<Controller>,
    lifecycle: Arc<Lifecycle>,
    image: Arc<MetadataImage>,
    replicas: Arc<ReplicaManager>,
) {
    while let Some(change) = changes.recv().await {
        let (controller, lifecycle, image, replicas) = (
            controller.clone(),
            lifecycle.clone(),
            image.clone(),
            replicas.clone(),
        );
        tokio::spawn(async move {
            let id = change.proposal.id;
            let result = controller
                .alter_partition(controller::rpc::AlterPartition {
                    broker_id: controller.node_id(),
                    broker_epoch: lifecycle.epoch(),
                    topic_id: change.topic_id,
                    partition: change.partition,
                    leader_epoch: change.proposal.leader_epoch,
                    partition_epoch: change.proposal.partition_epoch,
                    isr: change.proposal.isr.clone(),
                    isr_epochs: change.proposal.broker_epochs.clone(),
                })
                .await;
            if let Err(e) = result {
                tracing::info!(topic_id = %change.topic_id, partition = change.partition,
                    error = ?e.code, message = ?e.message, "ISR change not applied");
                let name = image
                    .load()
                    .topic_by_id(&change.topic_id)
                    .map(|t| t.name.clone());
                if let Some(p) = name.and_then(|n| replicas.get(&n, change.partition)) {
                    p.isr_change_rejected(id);
                }
            }
        });
    }
}

/// Lets time act on every hosted partition (ISR shrink after `replica.lag.time.max.ms`).
async fn tick_replicas(replicas: Arc<ReplicaManager>, clock: Arc<dyn Clock>) {
    let mut every = tokio::time::interval(Duration::from_millis(250));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let now = clock.now_ms();
        for p in replicas.all() {
            p.tick(now);
        }
    }
}

/// A receiver that wakes when the published offset moves.
fn image_waiter(published: &watch::Receiver<i64>) -> watch::Receiver<i64> {
    let mut rx = published.clone();
    rx.mark_changed();
    rx
}

/// What [`follow_metadata`] checks the cluster id with.
struct FollowIdentity {
    identity: Arc<Identity>,
    meta_dir: PathBuf,
    node_id: BrokerId,
    directory_id: Option<Uuid>,
    fatal: Arc<watch::Sender<Option<String>>>,
}

/// Publishes every state the metadata state machine applies to this broker's image, in order,
/// and records how far it got. The first time the state names the cluster, the data directory
/// adopts it (`meta.properties`); a directory of another cluster stops the broker.
async fn follow_metadata(
    mut applied: watch::Receiver<Applied>,
    publisher: Arc<MetadataPublisher>,
    published: watch::Sender<i64>,
    clean: bool,
    who: FollowIdentity,
) {
    applied.mark_changed();
    while applied.changed().await.is_ok() {
        let (state, offset) = {
            let a = applied.borrow_and_update();
            (
                a.state.clone(),
                a.last_applied.map_or(-1, |l| l.index as i64),
            )
        };
        if let Some(cluster) = &state.cluster_id {
            match who.identity.cluster_id() {
                Some(ours) if ours != *cluster => {
                    let why = format!(
                        "data directory {} belongs to cluster {ours}, but the controller quorum \
                         is cluster {cluster}; refusing to start",
                        who.meta_dir.display()
                    );
                    tracing::error!("{why}");
                    who.fatal.send_replace(Some(why));
                    return;
                }
                Some(_) => {}
                None => {
                    let props = sluice_meta::properties::NodeProperties {
                        node_id: who.node_id,
                        cluster_id: Some(cluster.clone()),
                        directory_id: who.directory_id,
                    };
                    let dir = who.meta_dir.clone();
                    match off_reactor(move || sluice_meta::properties::write(&dir, &props)).await {
                        Ok(()) => {
                            tracing::info!(cluster_id = %cluster, "joined cluster");
                            who.identity.set_cluster_id(cluster.clone());
                        }
                        Err(e) => tracing::error!(error = %e, "could not record the cluster id"),
                    }
                }
            }
        }
        let publisher = publisher.clone();
        let result = off_reactor(move || publisher.publish((*state).clone(), clean)).await;
        if let Err(e) = result {
            tracing::error!(error = ?e, "applying metadata to the local partitions failed");
        }
        published.send_replace(offset);
    }
}
