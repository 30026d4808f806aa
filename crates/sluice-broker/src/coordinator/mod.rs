//! The group coordinator's shell: the pure state machine from `sluice-group` driven by tokio,
//! plus committed-offset storage in `__consumer_offsets` ([`offsets`]).
//!
//! The machine sits behind a mutex. A JoinGroup or SyncGroup gets a [`RequestId`] and a oneshot
//! channel; the machine's [`Output`]s (from this call or any later one, timers included) are
//! routed to the parked requests' channels. A timer task calls `tick` at the machine's next
//! deadline, and on shutdown unloads every group so parked requests answer NOT_COORDINATOR
//! instead of holding the drain up.
//!
//! `__consumer_offsets` is created on the first FindCoordinator for a group (as Kafka does) and
//! loaded at start-up when it exists, before the broker serves anyone; so this coordinator is
//! never "loading" when a client asks.

pub mod offsets;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kafka_protocol::ResponseError;
use sluice_group::{
    GroupConfig, GroupCoordinator, GroupError, GroupState, JoinRequest, JoinResponse, Output,
    RequestId, SyncRequest, SyncResponse,
};
use sluice_meta::TopicConfigs;
use tokio::sync::{oneshot, Notify, OnceCell};

use crate::config::GroupSettings;
use crate::controller::{Controller, NewTopic};
use crate::error::ApiError;
use crate::image::MetadataImage;
use crate::replica_manager::ReplicaManager;
use offsets::{OffsetStore, OFFSETS_TOPIC};
use sluice_types::Clock;

pub struct Coordinator {
    /// Group sessions, rebalance delays and offset expiry run on this clock.
    clock: Arc<dyn Clock>,
    /// What creating and opening `__consumer_offsets` needs: the metadata image, the
    /// controller that creates the topic, the partitions that hold it.
    image: Arc<MetadataImage>,
    controller: Arc<Controller>,
    replicas: Arc<ReplicaManager>,
    pub settings: GroupSettings,
    offsets: OnceCell<Arc<OffsetStore>>,
    machine: Mutex<Machine>,
    /// Wakes the timer task when a call may have moved the machine's next deadline.
    timer: Notify,
}

/// The state machine and the parked requests waiting for its outputs.
struct Machine {
    groups: GroupCoordinator,
    parked: HashMap<RequestId, oneshot::Sender<Output>>,
    next_request: u64,
}

impl Machine {
    fn park(&mut self) -> (RequestId, oneshot::Receiver<Output>) {
        self.next_request += 1;
        let id = RequestId(self.next_request);
        let (tx, rx) = oneshot::channel();
        self.parked.insert(id, tx);
        (id, rx)
    }

    /// Hands each output to its parked request (a client that hung up is simply gone).
    fn route(&mut self, outputs: Vec<Output>) {
        for output in outputs {
            if let Some(tx) = self.parked.remove(&output.request()) {
                let _ = tx.send(output);
            }
        }
    }
}

impl crate::image::DeltaListener for Coordinator {
    /// A deleted topic's committed offsets go with it, so a topic created later under the same
    /// name starts without them. Runs on the controller's publishing thread (the blocking
    /// pool), so the deletion is answered only once they are gone; without a runtime (start-up)
    /// there is nothing loaded to forget, and start-up sweeps offsets of vanished topics anyway.
    fn on_delta(
        &self,
        delta: &sluice_meta::MetadataDelta,
        _image: &Arc<sluice_meta::ClusterState>,
    ) {
        if delta.deleted_topics.is_empty() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        for topic in &delta.deleted_topics {
            runtime.block_on(self.forget_topic(&topic.name));
        }
    }
}

impl Coordinator {
    /// The coordinator's clock: session deadlines and commit timestamps.
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Loads the committed offsets if `__consumer_offsets` exists. Blocking (start-up). Never
    /// fails: damage in the offsets log is skipped or stops that partition's load (logged), and
    /// if the topic's partitions are not all open the store is left unloaded, so
    /// FindCoordinator answers COORDINATOR_NOT_AVAILABLE instead of the broker not starting.
    pub fn open(
        image: Arc<MetadataImage>,
        controller: Arc<Controller>,
        replicas: Arc<ReplicaManager>,
        settings: GroupSettings,
        clock: Arc<dyn Clock>,
    ) -> Coordinator {
        let partitions = image
            .load()
            .topic(OFFSETS_TOPIC)
            .map(|t| t.partitions.len());
        let offsets = OnceCell::new();
        if let Some(n) = partitions {
            let parts: Option<Vec<_>> = (0..n as i32)
                .map(|i| replicas.get(OFFSETS_TOPIC, i))
                .collect();
            match parts {
                Some(parts) => {
                    let _ = offsets.set(Arc::new(OffsetStore::load(parts)));
                }
                None => tracing::error!(
                    partitions = n,
                    "__consumer_offsets is not fully open; committed offsets are not loaded"
                ),
            }
        }
        // Member ids must not repeat across restarts: seed with the start time.
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let mut groups = GroupCoordinator::new(
            GroupConfig {
                min_session_timeout_ms: settings.min_session_timeout_ms as i32,
                max_session_timeout_ms: settings.max_session_timeout_ms as i32,
                initial_rebalance_delay_ms: settings.initial_rebalance_delay_ms as i32,
                ..GroupConfig::default()
            },
            seed,
        );
        if let Some(store) = offsets.get() {
            for g in store.groups() {
                groups.set_has_offsets(&g, true);
            }
        }
        Coordinator {
            clock,
            image,
            controller,
            replicas,
            settings,
            offsets,
            machine: Mutex::new(Machine {
                groups,
                parked: HashMap::new(),
                next_request: 0,
            }),
            timer: Notify::new(),
        }
    }

    /// Runs `f` on the state machine and routes the outputs it returns.
    pub fn with_machine<T>(
        &self,
        f: impl FnOnce(&mut GroupCoordinator, i64) -> (T, Vec<Output>),
    ) -> T {
        let mut m = self.machine.lock().expect("group machine lock");
        let (value, outputs) = f(&mut m.groups, self.clock.now_ms());
        m.route(outputs);
        drop(m);
        self.timer.notify_one();
        value
    }

    /// Reads the state machine.
    pub fn read_machine<T>(&self, f: impl FnOnce(&GroupCoordinator) -> T) -> T {
        f(&self.machine.lock().expect("group machine lock").groups)
    }

    pub async fn join(&self, req: JoinRequest) -> Result<JoinResponse, GroupError> {
        let rx = {
            let mut m = self.machine.lock().expect("group machine lock");
            let (id, rx) = m.park();
            let outputs = m.groups.join_group(id, req, self.clock.now_ms());
            m.route(outputs);
            rx
        };
        self.timer.notify_one();
        match rx.await {
            Ok(Output::Join { result, .. }) => result,
            _ => Err(GroupError::CoordinatorNotAvailable),
        }
    }

    pub async fn sync(&self, req: SyncRequest) -> Result<SyncResponse, GroupError> {
        let rx = {
            let mut m = self.machine.lock().expect("group machine lock");
            let (id, rx) = m.park();
            let outputs = m.groups.sync_group(id, req, self.clock.now_ms());
            m.route(outputs);
            rx
        };
        self.timer.notify_one();
        match rx.await {
            Ok(Output::Sync { result, .. }) => result,
            _ => Err(GroupError::CoordinatorNotAvailable),
        }
    }

    /// Fires the machine's timers until shutdown, then unloads every group.
    pub async fn run_timers(self: Arc<Self>, mut stopping: tokio::sync::watch::Receiver<bool>) {
        self.forget_deleted_topics().await;
        let retention_every =
            Duration::from_millis(self.settings.offsets_retention_check_interval_ms);
        let mut next_retention = tokio::time::Instant::now() + retention_every;
        loop {
            let deadline = self.read_machine(|g| g.next_deadline());
            let wake = match deadline {
                Some(at) => {
                    let wait = (at - self.clock.now_ms()).max(0) as u64;
                    tokio::time::Instant::now() + Duration::from_millis(wait)
                }
                None => tokio::time::Instant::now() + Duration::from_secs(3600),
            }
            .min(next_retention);
            tokio::select! {
                _ = tokio::time::sleep_until(wake) => {}
                _ = self.timer.notified() => {}
                _ = stopping.wait_for(|s| *s) => break,
            }
            // Not `with_machine`: that wakes this very loop again, which would then spin.
            {
                let mut m = self.machine.lock().expect("group machine lock");
                let outputs = m.groups.tick(self.clock.now_ms());
                m.route(outputs);
            }
            if tokio::time::Instant::now() >= next_retention {
                next_retention = tokio::time::Instant::now() + retention_every;
                self.expire_offsets().await;
            }
        }
        let mut m = self.machine.lock().expect("group machine lock");
        let outputs = m.groups.unload_all();
        m.route(outputs);
    }

    /// `offsets.retention.minutes`: an empty group's offsets expire once its newest commit is
    /// older than the retention.
    async fn expire_offsets(&self) {
        let Some(store) = self.offsets_if_loaded() else {
            return;
        };
        let now = self.clock.now_ms();
        for group in store.groups_idle_since(now - self.settings.offsets_retention_ms) {
            let state = self.read_machine(|g| g.describe_group(&group).state);
            if !matches!(state, GroupState::Empty | GroupState::Dead) {
                continue;
            }
            match store.delete(&group, None, now).await {
                Ok(n) => {
                    tracing::info!(
                        group,
                        offsets = n,
                        "expired committed offsets of an empty group"
                    );
                    let mut m = self.machine.lock().expect("group machine lock");
                    m.groups.set_has_offsets(&group, false);
                }
                Err(e) => tracing::warn!(group, error = ?e.code, "could not expire offsets"),
            }
        }
    }

    /// Drops every group's committed offsets for `topic` (deleted), durably, and marks the
    /// groups left without offsets. Failures are logged: the topic is gone either way, and
    /// start-up sweeps offsets of topics that no longer exist again.
    pub async fn forget_topic(&self, topic: &str) {
        let Some(store) = self.offsets_if_loaded() else {
            return;
        };
        let emptied = store.forget_topic(topic, self.clock.now_ms()).await;
        if !emptied.is_empty() {
            let mut m = self.machine.lock().expect("group machine lock");
            for group in &emptied {
                m.groups.set_has_offsets(group, false);
            }
        }
    }

    /// Forgets the offsets of topics that no longer exist: a crash between a topic's deletion
    /// and its offsets' tombstones leaves them behind.
    async fn forget_deleted_topics(&self) {
        let Some(store) = self.offsets_if_loaded() else {
            return;
        };
        let image = self.image.load();
        let gone: Vec<String> = store
            .topics()
            .into_iter()
            .filter(|t| image.topic(t).is_none())
            .collect();
        for topic in gone {
            tracing::info!(topic, "dropping committed offsets of a deleted topic");
            self.forget_topic(&topic).await;
        }
    }

    /// The offset store, creating `__consumer_offsets` on first use.
    pub async fn offsets(&self) -> Result<Arc<OffsetStore>, ApiError> {
        self.offsets
            .get_or_try_init(|| self.create_offsets_topic())
            .await
            .cloned()
    }

    /// Creates `__consumer_offsets` (through the controller) if it does not exist, then loads
    /// it.
    async fn create_offsets_topic(&self) -> Result<Arc<OffsetStore>, ApiError> {
        let settings = &self.settings;
        if self.image.load().topic(OFFSETS_TOPIC).is_none() {
            let configs = TopicConfigs::from([
                ("cleanup.policy".to_string(), "compact".to_string()),
                ("compression.type".to_string(), "producer".to_string()),
                (
                    "segment.bytes".to_string(),
                    settings.offsets_topic_segment_bytes.to_string(),
                ),
            ]);
            let created = self
                .controller
                .create_topics(
                    vec![NewTopic {
                        name: OFFSETS_TOPIC.to_string(),
                        num_partitions: settings.offsets_topic_partitions,
                        replication_factor: -1,
                        // Every offsets partition on the broker that creates the topic: the
                        // coordinator does not yet load and unload partitions as leadership
                        // moves (issue 14 spreads them), so one broker coordinates every group.
                        assignment: Some(vec![
                            vec![self.controller.node_id()];
                            settings.offsets_topic_partitions.max(1) as usize
                        ]),
                        configs,
                    }],
                    false,
                )
                .await;
            match created.into_iter().next() {
                // Created, or by someone else meanwhile.
                Some(Ok(_)) => {}
                Some(Err(e)) if e.code == ResponseError::TopicAlreadyExists => {}
                other => {
                    tracing::error!(error = ?other, "could not create __consumer_offsets");
                    return Err(ResponseError::CoordinatorNotAvailable.into());
                }
            }
        }
        let partitions = self
            .image
            .load()
            .topic(OFFSETS_TOPIC)
            .map_or(0, |t| t.partitions.len());
        // Another broker holds them: it is the coordinator (FindCoordinator says which).
        let parts = (0..partitions as i32)
            .map(|i| self.replicas.get(OFFSETS_TOPIC, i))
            .collect::<Option<Vec<_>>>()
            .ok_or(ResponseError::NotCoordinator)?;
        // Loading reads the offsets logs: off the reactor.
        let store = crate::blocking::off_reactor(move || OffsetStore::load(parts)).await;
        tracing::info!(partitions, "group coordinator ready");
        Ok(Arc::new(store))
    }

    /// The broker that coordinates `group`: the leader of its `__consumer_offsets` partition
    /// (creating the topic, here, on first use).
    pub async fn coordinator_for(&self, group: &str) -> Result<sluice_meta::BrokerInfo, ApiError> {
        if self.image.load().topic(OFFSETS_TOPIC).is_none() {
            self.offsets().await?;
        }
        let image = self.image.load();
        let topic = image
            .topic(OFFSETS_TOPIC)
            .ok_or(ResponseError::CoordinatorNotAvailable)?;
        let p = &topic.partitions[offsets::partition_for(group, topic.partitions.len())];
        if !p.has_leader() {
            return Err(ApiError::new(
                ResponseError::CoordinatorNotAvailable,
                format!("the offsets partition of group {group} has no leader"),
            ));
        }
        if p.leader == self.controller.node_id() {
            self.offsets().await?;
        }
        image
            .brokers
            .get(&p.leader)
            .filter(|b| !b.fenced)
            .cloned()
            .ok_or_else(|| ResponseError::CoordinatorNotAvailable.into())
    }

    /// The offset store if it exists, without creating it.
    pub fn offsets_if_loaded(&self) -> Option<Arc<OffsetStore>> {
        self.offsets.get().cloned()
    }
}
