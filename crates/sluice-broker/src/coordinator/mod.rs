//! The group coordinator's shell: the pure state machine from `sluice-group` driven by tokio,
//! plus committed-offset and group storage in `__consumer_offsets` ([`offsets`]).
//!
//! The machine sits behind a mutex. A JoinGroup or SyncGroup gets a [`RequestId`] and a oneshot
//! channel; the machine's [`Output`]s (from this call or any later one, timers included) are
//! routed to the parked requests' channels. A timer task calls `tick` at the machine's next
//! deadline, and on shutdown unloads every group so parked requests answer NOT_COORDINATOR
//! instead of holding the drain up.
//!
//! # Which broker coordinates a group
//! As in Kafka, the leader of the group's `__consumer_offsets` partition. This shell follows the
//! metadata ([`DeltaListener`](crate::image::DeltaListener)): becoming leader of an offsets
//! partition (or leading it under a new epoch) starts a load — the partition is replayed, its
//! committed offsets installed in the [`OffsetStore`] and its groups restored into the machine
//! from their stored snapshots — and while it runs the partition's groups are answered
//! COORDINATOR_LOAD_IN_PROGRESS. Losing the leadership unloads them: their parked requests are
//! answered NOT_COORDINATOR and the shard goes. A group whose partition is neither is answered
//! NOT_COORDINATOR. Ownership is checked under the machine's lock, in the same critical section
//! as the request it guards, so no request touches a group that moved away.
//!
//! When a generation completes the machine queues the group's snapshot; a writer task stores
//! snapshots, in order, in the group's partition (committed to the ISR like a commit).
//!
//! `__consumer_offsets` is created on the first FindCoordinator for a group (as Kafka does), with
//! `offsets.topic.replication.factor` replicas capped at the live brokers.

pub mod offsets;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kafka_protocol::ResponseError;
use sluice_group::{
    GroupConfig, GroupCoordinator, GroupError, GroupSnapshot, GroupState, JoinRequest,
    JoinResponse, Output, RequestId, SyncRequest, SyncResponse,
};
use sluice_meta::TopicConfigs;
use sluice_types::LeaderEpoch;
use tokio::sync::{mpsc, oneshot, Notify};

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
    /// What creating and loading `__consumer_offsets` needs: the metadata image, the
    /// controller that creates the topic, the partitions that hold it.
    image: Arc<MetadataImage>,
    controller: Arc<Controller>,
    replicas: Arc<ReplicaManager>,
    pub settings: GroupSettings,
    /// The committed offsets of the offsets partitions this broker leads and has loaded.
    pub store: OffsetStore,
    machine: Mutex<Machine>,
    /// Wakes the timer task when a call may have moved the machine's next deadline.
    timer: Notify,
    /// Group snapshots to store, in the order their generations completed.
    snapshots: mpsc::UnboundedSender<GroupSnapshot>,
    snapshots_rx: Mutex<Option<mpsc::UnboundedReceiver<GroupSnapshot>>>,
    /// Names the loads, so a load overtaken by a later leadership change is dropped.
    next_load: AtomicU64,
    /// Where loads run: the runtime the coordinator was created on (metadata is published from
    /// the blocking pool).
    runtime: tokio::runtime::Handle,
    /// This coordinator, for the loads it spawns; set by [`Coordinator::run_timers`], before
    /// which leaderships are not followed (it then looks at them all).
    this: Mutex<Option<std::sync::Weak<Coordinator>>>,
}

/// Whether this broker coordinates the groups of one offsets partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owned {
    /// Leader under `epoch`; load `id` is replaying the partition.
    Loading { epoch: LeaderEpoch, id: u64 },
    /// Leader under `epoch`, loaded: this broker coordinates the partition's groups.
    Loaded { epoch: LeaderEpoch },
}

impl Owned {
    fn epoch(self) -> LeaderEpoch {
        match self {
            Owned::Loading { epoch, .. } | Owned::Loaded { epoch } => epoch,
        }
    }
}

/// The state machine, the parked requests waiting for its outputs, and the offsets partitions
/// it coordinates.
struct Machine {
    groups: GroupCoordinator,
    parked: HashMap<RequestId, oneshot::Sender<Output>>,
    next_request: u64,
    owned: HashMap<i32, Owned>,
    /// Partitions of `__consumer_offsets` (0 until it exists); fixed once created.
    partitions: usize,
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

    /// The offsets partition of `group`, if this broker coordinates it now.
    fn owner(&self, group: &str) -> Result<i32, GroupError> {
        if self.partitions == 0 {
            return Err(GroupError::NotCoordinator);
        }
        let index = offsets::partition_for(group, self.partitions) as i32;
        match self.owned.get(&index) {
            Some(Owned::Loaded { .. }) => Ok(index),
            Some(Owned::Loading { .. }) => Err(GroupError::CoordinatorLoadInProgress),
            None => Err(GroupError::NotCoordinator),
        }
    }
}

impl crate::image::DeltaListener for Coordinator {
    /// Follows the leadership of the offsets partitions (load or unload their groups), and
    /// drops a deleted topic's committed offsets, so a topic created later under the same name
    /// starts without them. Runs on the controller's publishing thread (the blocking pool), so
    /// the deletion is answered only once they are gone; without a runtime (start-up) there is
    /// nothing loaded to forget.
    fn on_delta(
        &self,
        delta: &sluice_meta::MetadataDelta,
        _image: &Arc<sluice_meta::ClusterState>,
    ) {
        for lp in &delta.local.leaders {
            if lp.tp.topic == OFFSETS_TOPIC {
                self.lead(lp.tp.partition.get(), lp.info.leader_epoch);
            }
        }
        for lp in &delta.local.followers {
            if lp.tp.topic == OFFSETS_TOPIC {
                self.resign(lp.tp.partition.get(), "another broker leads it");
            }
        }
        for (tp, _) in &delta.local.removed {
            if tp.topic == OFFSETS_TOPIC {
                self.resign(tp.partition.get(), "its replica left this broker");
            }
        }
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

    /// A coordinator of no group yet: [`Coordinator::run_timers`] loads the offsets partitions
    /// this broker leads, and the metadata it is subscribed to moves them. Needs a runtime.
    pub fn new(
        image: Arc<MetadataImage>,
        controller: Arc<Controller>,
        replicas: Arc<ReplicaManager>,
        settings: GroupSettings,
        clock: Arc<dyn Clock>,
    ) -> Coordinator {
        // Member ids must not repeat across restarts: seed with the start time.
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let groups = GroupCoordinator::new(
            GroupConfig {
                min_session_timeout_ms: settings.min_session_timeout_ms as i32,
                max_session_timeout_ms: settings.max_session_timeout_ms as i32,
                initial_rebalance_delay_ms: settings.initial_rebalance_delay_ms as i32,
                ..GroupConfig::default()
            },
            seed,
        );
        let (snapshots, snapshots_rx) = mpsc::unbounded_channel();
        Coordinator {
            clock,
            image,
            controller,
            replicas,
            store: OffsetStore::new(Duration::from_millis(settings.offsets_commit_timeout_ms)),
            settings,
            machine: Mutex::new(Machine {
                groups,
                parked: HashMap::new(),
                next_request: 0,
                owned: HashMap::new(),
                partitions: 0,
            }),
            timer: Notify::new(),
            snapshots,
            snapshots_rx: Mutex::new(Some(snapshots_rx)),
            next_load: AtomicU64::new(0),
            runtime: tokio::runtime::Handle::current(),
            this: Mutex::new(None),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Machine> {
        self.machine.lock().expect("group machine lock")
    }

    /// Routes `outputs` and queues the snapshots the call made due (with the lock held, so
    /// snapshots are queued in the order generations completed).
    fn settle(&self, m: &mut Machine, outputs: Vec<Output>) {
        m.route(outputs);
        for snapshot in m.groups.take_snapshots(self.clock.now_ms()) {
            let _ = self.snapshots.send(snapshot);
        }
    }

    /// Runs `f` on the state machine for `group` if this broker coordinates it, and routes the
    /// outputs it returns; NOT_COORDINATOR or COORDINATOR_LOAD_IN_PROGRESS otherwise. Returns
    /// the group's offsets partition with `f`'s value.
    pub fn with_group<T>(
        &self,
        group: &str,
        f: impl FnOnce(&mut GroupCoordinator, i64) -> (T, Vec<Output>),
    ) -> Result<(i32, T), GroupError> {
        let mut m = self.lock();
        let index = m.owner(group)?;
        let (value, outputs) = f(&mut m.groups, self.clock.now_ms());
        self.settle(&mut m, outputs);
        drop(m);
        self.timer.notify_one();
        Ok((index, value))
    }

    /// Whether this broker coordinates `group` now: its offsets partition, or why not.
    pub fn owner(&self, group: &str) -> Result<i32, GroupError> {
        self.lock().owner(group)
    }

    /// Reads the state machine.
    pub fn read_machine<T>(&self, f: impl FnOnce(&GroupCoordinator) -> T) -> T {
        f(&self.lock().groups)
    }

    /// Whether some offsets partition this broker leads is still loading (ListGroups says so).
    pub fn loading(&self) -> bool {
        self.lock()
            .owned
            .values()
            .any(|o| matches!(o, Owned::Loading { .. }))
    }

    /// Parks a JoinGroup or SyncGroup in the machine (if this broker coordinates the group)
    /// and waits for its answer.
    async fn parked(
        &self,
        group: &str,
        call: impl FnOnce(&mut GroupCoordinator, RequestId, i64) -> Vec<Output>,
    ) -> Result<Output, GroupError> {
        let rx = {
            let mut m = self.lock();
            m.owner(group)?;
            let (id, rx) = m.park();
            let outputs = call(&mut m.groups, id, self.clock.now_ms());
            self.settle(&mut m, outputs);
            rx
        };
        self.timer.notify_one();
        // A dropped sender: the group was unloaded without answering (never expected).
        rx.await.map_err(|_| GroupError::NotCoordinator)
    }

    pub async fn join(&self, req: JoinRequest) -> Result<JoinResponse, GroupError> {
        let group = req.group_id.clone();
        match self
            .parked(&group, |g, id, now| g.join_group(id, req, now))
            .await?
        {
            Output::Join { result, .. } => result,
            Output::Sync { .. } => Err(GroupError::CoordinatorNotAvailable),
        }
    }

    pub async fn sync(&self, req: SyncRequest) -> Result<SyncResponse, GroupError> {
        let group = req.group_id.clone();
        match self
            .parked(&group, |g, id, now| g.sync_group(id, req, now))
            .await?
        {
            Output::Sync { result, .. } => result,
            Output::Join { .. } => Err(GroupError::CoordinatorNotAvailable),
        }
    }

    /// This broker leads offsets partition `index` under `epoch`: load its groups, unless
    /// they are loaded (or loading) under that epoch already.
    fn lead(&self, index: i32, epoch: LeaderEpoch) {
        let Some(me) = self.myself() else {
            return;
        };
        let id = self.next_load.fetch_add(1, Ordering::Relaxed) + 1;
        {
            let mut m = self.lock();
            if m.partitions == 0 {
                m.partitions = self
                    .image
                    .load()
                    .topic(OFFSETS_TOPIC)
                    .map_or(0, |t| t.partitions.len());
            }
            if m.owned.get(&index).is_some_and(|o| o.epoch() == epoch) {
                return;
            }
            if m.owned.contains_key(&index) {
                // Led again under a new epoch without this broker seeing the leadership move in
                // between: what was loaded may be stale; load again.
                self.unload(&mut m, index);
            }
            m.owned.insert(index, Owned::Loading { epoch, id });
        }
        tracing::debug!(topic = OFFSETS_TOPIC, partition = index, leader_epoch = %epoch,
            "leading an offsets partition: loading its groups");
        self.runtime
            .spawn(async move { me.load(index, epoch, id).await });
    }

    /// An `Arc` of this coordinator (the broker holds it in one); `None` while shutting down.
    fn myself(&self) -> Option<Arc<Coordinator>> {
        self.this
            .lock()
            .expect("self lock")
            .as_ref()
            .and_then(std::sync::Weak::upgrade)
    }

    /// Replays offsets partition `index` and, if load `id` is still the current one, installs
    /// its offsets and restores its groups.
    async fn load(&self, index: i32, epoch: LeaderEpoch, id: u64) {
        let Some(partition) = self.replicas.get(OFFSETS_TOPIC, index) else {
            tracing::error!(
                topic = OFFSETS_TOPIC,
                partition = index,
                "leading an offsets partition that is not open here; its groups stay unavailable"
            );
            let mut m = self.lock();
            if m.owned.get(&index) == Some(&Owned::Loading { epoch, id }) {
                m.owned.remove(&index);
            }
            return;
        };
        let replaying = partition.clone();
        let replayed = crate::blocking::off_reactor(move || OffsetStore::replay(&replaying)).await;
        let vanished: Vec<String> = {
            let image = self.image.load();
            replayed
                .offsets
                .values()
                .flat_map(|g| g.keys().map(|(t, _)| t.clone()))
                .filter(|t| image.topic(t).is_none())
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect()
        };
        {
            let mut m = self.lock();
            if m.owned.get(&index) != Some(&Owned::Loading { epoch, id }) {
                tracing::info!(
                    topic = OFFSETS_TOPIC,
                    partition = index,
                    "a load overtaken by a leadership change is dropped"
                );
                return;
            }
            let now = self.clock.now_ms();
            for group in replayed.offsets.keys() {
                m.groups.set_has_offsets(group, true);
            }
            for snapshot in replayed.groups.values() {
                tracing::info!(group = %snapshot.group_id, generation = snapshot.generation_id,
                    members = snapshot.members.len(), "restoring a group from its stored state");
                m.groups.load_group(snapshot, now);
            }
            let groups = replayed.groups.len();
            self.store.install(index, partition, replayed.offsets);
            m.owned.insert(index, Owned::Loaded { epoch });
            tracing::debug!(topic = OFFSETS_TOPIC, partition = index, leader_epoch = %epoch,
                groups, "coordinating the groups of an offsets partition");
        }
        self.timer.notify_one();
        // A crash between a topic's deletion and its offsets' tombstones leaves them behind.
        for topic in vanished {
            tracing::info!(topic, "dropping committed offsets of a deleted topic");
            self.forget_topic(&topic).await;
        }
    }

    /// This broker no longer leads offsets partition `index`: drop its groups (their parked
    /// requests are answered NOT_COORDINATOR) and its offsets.
    fn resign(&self, index: i32, why: &str) {
        let mut m = self.lock();
        if m.owned.contains_key(&index) {
            tracing::info!(
                topic = OFFSETS_TOPIC,
                partition = index,
                reason = why,
                "no longer coordinating the groups of an offsets partition"
            );
            self.unload(&mut m, index);
        }
    }

    fn unload(&self, m: &mut Machine, index: i32) {
        m.owned.remove(&index);
        let partitions = m.partitions.max(1);
        let outputs = m
            .groups
            .unload_where(|g| offsets::partition_for(g, partitions) as i32 == index);
        m.route(outputs);
        self.store.uninstall(index);
    }

    /// Starts following the offsets partitions: loads the ones this broker leads now (later
    /// changes come through the metadata), and stores group snapshots.
    fn start(self: &Arc<Self>) {
        *self.this.lock().expect("self lock") = Some(Arc::downgrade(self));
        let image = self.image.load();
        let Some(topic) = image.topic(OFFSETS_TOPIC) else {
            return;
        };
        self.lock().partitions = topic.partitions.len();
        let me = self.controller.node_id();
        for (i, p) in topic.partitions.iter().enumerate() {
            if p.leader == me && self.replicas.get(OFFSETS_TOPIC, i as i32).is_some() {
                self.lead(i as i32, p.leader_epoch);
            }
        }
    }

    /// Stores group snapshots and tells the machine how each went: a generation's SyncGroup
    /// answers wait for its snapshot (Kafka's `storeGroup` before the assignment propagates),
    /// so a coordinator failover never takes back an assignment a member already works from.
    /// One lane per offsets partition stores its groups' snapshots one at a time, in the order
    /// they were queued (a group's generations land in order); a store waiting on one
    /// partition's replication does not hold up the groups of another.
    async fn store_snapshots(self: Arc<Self>, mut rx: mpsc::UnboundedReceiver<GroupSnapshot>) {
        let mut lanes: HashMap<i32, mpsc::UnboundedSender<GroupSnapshot>> = HashMap::new();
        while let Some(snapshot) = rx.recv().await {
            let partitions = self.lock().partitions;
            if partitions == 0 {
                self.stored(&snapshot, Err(GroupError::NotCoordinator));
                continue;
            }
            let index = offsets::partition_for(&snapshot.group_id, partitions) as i32;
            let lane = lanes.entry(index).or_insert_with(|| {
                let (tx, rx) = mpsc::unbounded_channel();
                tokio::spawn(self.clone().store_lane(rx));
                tx
            });
            if let Err(mpsc::error::SendError(snapshot)) = lane.send(snapshot) {
                // The lane's task ended (the runtime is shutting down).
                self.stored(&snapshot, Err(GroupError::CoordinatorNotAvailable));
            }
        }
    }

    /// Stores one offsets partition's group snapshots, in order.
    async fn store_lane(self: Arc<Self>, mut rx: mpsc::UnboundedReceiver<GroupSnapshot>) {
        while let Some(snapshot) = rx.recv().await {
            let group = snapshot.group_id.as_str();
            let stored = match self.owner(group) {
                Ok(index) => self
                    .store
                    .store_group(index, group, Some(&snapshot), self.clock.now_ms())
                    .await
                    .map_err(|e| {
                        tracing::warn!(group, generation = snapshot.generation_id,
                            error = ?e.code, message = ?e.message,
                            "could not store the group's state");
                        // Kafka's SyncGroup answer to a failed store.
                        if e.code == kafka_protocol::ResponseError::NotCoordinator {
                            GroupError::NotCoordinator
                        } else {
                            GroupError::CoordinatorNotAvailable
                        }
                    }),
                // Moved away meanwhile (its parked requests were answered then), or loading
                // again.
                Err(e) => Err(e),
            };
            self.stored(&snapshot, stored);
        }
    }

    /// Hands the outcome of a group snapshot's store to the machine.
    fn stored(&self, snapshot: &GroupSnapshot, stored: Result<(), GroupError>) {
        let (group, generation) = (&snapshot.group_id, snapshot.generation_id);
        tracing::debug!(
            group,
            generation,
            members = snapshot.members.len(),
            ok = stored.is_ok(),
            "stored the group's state"
        );
        let mut m = self.lock();
        let outputs = m
            .groups
            .assignment_stored(group, generation, stored, self.clock.now_ms());
        self.settle(&mut m, outputs);
        drop(m);
        self.timer.notify_one();
    }

    /// Fires the machine's timers until shutdown, then unloads every group. Also starts
    /// following the offsets partitions and storing group snapshots.
    pub async fn run_timers(self: Arc<Self>, mut stopping: tokio::sync::watch::Receiver<bool>) {
        self.start();
        if let Some(rx) = self.snapshots_rx.lock().expect("snapshots lock").take() {
            tokio::spawn(self.clone().store_snapshots(rx));
        }
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
            // Not `with_group`: that wakes this very loop again, which would then spin.
            {
                let mut m = self.lock();
                let outputs = m.groups.tick(self.clock.now_ms());
                self.settle(&mut m, outputs);
            }
            if tokio::time::Instant::now() >= next_retention {
                next_retention = tokio::time::Instant::now() + retention_every;
                self.expire_offsets().await;
            }
        }
        let mut m = self.lock();
        let outputs = m.groups.unload_all();
        m.route(outputs);
        m.owned.clear();
    }

    /// `offsets.retention.minutes`: an empty group's offsets expire once its newest commit is
    /// older than the retention.
    async fn expire_offsets(&self) {
        let now = self.clock.now_ms();
        for (index, group) in self
            .store
            .groups_idle_since(now - self.settings.offsets_retention_ms)
        {
            let state = self.read_machine(|g| g.describe_group(&group).state);
            if !matches!(state, GroupState::Empty | GroupState::Dead) {
                continue;
            }
            match self.store.delete(index, &group, None, now).await {
                Ok(n) => {
                    tracing::info!(
                        group,
                        offsets = n,
                        "expired committed offsets of an empty group"
                    );
                    let _ = self.with_group(&group, |g, _| {
                        (g.set_has_offsets(&group, false), Vec::new())
                    });
                }
                Err(e) => tracing::warn!(group, error = ?e.code, "could not expire offsets"),
            }
        }
    }

    /// Drops every group's committed offsets for `topic` (deleted), durably, and marks the
    /// groups left without offsets. Failures are logged: the topic is gone either way, and
    /// the next load of the partition sweeps offsets of topics that no longer exist again.
    pub async fn forget_topic(&self, topic: &str) {
        let emptied = self.store.forget_topic(topic, self.clock.now_ms()).await;
        for group in &emptied {
            let _ = self.with_group(group, |g, _| (g.set_has_offsets(group, false), Vec::new()));
        }
    }

    /// Creates `__consumer_offsets` (through the controller) if it does not exist:
    /// `offsets.topic.replication.factor` replicas, capped at the live brokers.
    async fn create_offsets_topic(&self) -> Result<(), ApiError> {
        let settings = &self.settings;
        if self.image.load().topic(OFFSETS_TOPIC).is_none() {
            let live = self
                .image
                .load()
                .brokers
                .values()
                .filter(|b| !b.fenced)
                .count()
                .max(1);
            let replication_factor =
                (settings.offsets_topic_replication_factor as usize).min(live) as i16;
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
                        replication_factor,
                        assignment: None,
                        configs,
                    }],
                    false,
                )
                .await;
            match created.into_iter().next() {
                Some(Ok(_)) => {
                    tracing::info!(
                        partitions = settings.offsets_topic_partitions,
                        replication_factor,
                        "created __consumer_offsets"
                    );
                }
                // Created by someone else meanwhile.
                Some(Err(e)) if e.code == ResponseError::TopicAlreadyExists => {}
                other => {
                    tracing::error!(error = ?other, "could not create __consumer_offsets");
                    return Err(ResponseError::CoordinatorNotAvailable.into());
                }
            }
        }
        Ok(())
    }

    /// The broker that coordinates `group`: the leader of its `__consumer_offsets` partition
    /// (creating the topic, here, on first use). It may still be loading the partition; the
    /// group's requests say so.
    pub async fn coordinator_for(&self, group: &str) -> Result<sluice_meta::BrokerInfo, ApiError> {
        if self.image.load().topic(OFFSETS_TOPIC).is_none() {
            self.create_offsets_topic().await?;
        }
        let image = self.image.load();
        let topic = image
            .topic(OFFSETS_TOPIC)
            .ok_or(ResponseError::CoordinatorNotAvailable)?;
        {
            let mut m = self.lock();
            if m.partitions == 0 {
                m.partitions = topic.partitions.len();
            }
        }
        let p = &topic.partitions[offsets::partition_for(group, topic.partitions.len())];
        if !p.has_leader() {
            return Err(ApiError::new(
                ResponseError::CoordinatorNotAvailable,
                format!("the offsets partition of group {group} has no leader"),
            ));
        }
        image
            .brokers
            .get(&p.leader)
            .filter(|b| !b.fenced)
            .cloned()
            .ok_or_else(|| ResponseError::CoordinatorNotAvailable.into())
    }
}
