//! One partition replica hosted by this broker: its log, its replica state (role, leader epoch,
//! ISR, high watermark: the pure `sluice-replica` machine), its topic's effective configs, its
//! idempotent-producer state, and the fetches waiting for it to move.
//!
//! High watermark (HW): the offset below which consumers may read, computed by
//! [`ReplicaState`] from the local end this shell reports: the log end offset under
//! `--durability relaxed`, the durable (fsynced) offset under `fsync`, so a consumer never sees
//! a record that a crash could take back. With one replica that end is the HW; with more, the
//! least end over the ISR. The HW, the role and the leader epoch are mirrored in atomics so the
//! read paths never take the replica lock.
//!
//! Replication: as leader, a follower's fetch is recorded with
//! [`Partition::record_follower_fetch`] (it may move the HW) and appends wake the parked
//! follower fetches ([`Partition::follower_waiters`]). As follower, the log is written only by
//! the replica fetcher through [`Partition::append_as_follower`],
//! [`Partition::truncate_as_follower`] and [`Partition::flush_as_follower`], under a role lock
//! that leadership changes also take, so nothing fetched under a stale leader epoch lands; the
//! follower HW is the leader's capped by the local end ([`Partition::on_leader_high_watermark`]).
//!
//! Producer state is checked and updated under one mutex around the append, so the sequence
//! check and the write are atomic. It is snapshotted to `producer-state.json` in the partition
//! directory at clean shutdown and after each rebuild; on open the snapshot is loaded and the
//! batches after its offset are replayed ([`Partition::load_producer_state`]).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use serde::{Deserialize, Serialize};
use sluice_log::{AppendInfo, Log, LogError};
use sluice_meta::PartitionInfo;
use sluice_protocol::batch::Batches;
use sluice_replica::{
    FollowerChange, LeaderChange, Output, ReplicaConfig, ReplicaError, ReplicaState,
};
use sluice_types::{BrokerId, Clock, LeaderEpoch, Offset, TopicPartition};
use uuid::Uuid;

pub use crate::append::{AppendError, AppendOutcome};
use crate::config::Durability;
use crate::producer_state::{IncomingBatch, ProducerStateTable, Verdict};
use crate::purgatory::Waiters;
use crate::topic_config::TopicSettings;

const PRODUCER_SNAPSHOT: &str = "producer-state.json";

#[derive(Serialize, Deserialize)]
struct ProducerSnapshot {
    /// The log end offset the snapshot covers: batches from here on are replayed.
    offset: i64,
    table: ProducerStateTable,
}

pub struct Partition {
    pub topic: String,
    pub topic_id: Uuid,
    pub index: i32,
    pub log: Arc<Log>,
    durability: Durability,
    clock: Arc<dyn Clock>,
    /// The replica state machine; its outputs are applied under this lock.
    replica: Mutex<ReplicaState>,
    /// Mirrors of the replica state for lock-free reads: the HW, whether this broker leads, and
    /// the leader epoch appends are stamped with and fetchers are checked against.
    high_watermark: AtomicI64,
    is_leader: AtomicBool,
    /// Follows a leader (or waits for one): may serve consumers below its HW (KIP-392).
    is_follower: AtomicBool,
    leader_epoch: AtomicI32,
    /// As follower: the leader's HW as its latest fetch answer said, not capped by the local
    /// end (the HW is); how far this replica is behind the committed records. -1: unknown.
    leader_high_watermark: AtomicI64,
    /// The topic's effective configs; replaced when they are altered.
    settings: RwLock<Arc<TopicSettings>>,
    producers: Mutex<ProducerStateTable>,
    /// Held by leadership changes and by every write a follower makes to the log (append,
    /// truncation), so a follower write never lands after this replica started to lead, and a
    /// write under a stale leader epoch is dropped.
    role_change: Mutex<()>,
    /// Consumer fetches parked until the HW moves.
    pub waiters: Waiters,
    isr_changes: Option<tokio::sync::mpsc::UnboundedSender<IsrChange>>,
    unsafe_ack_before_replication: bool,
    lease: Arc<crate::lease::LeadershipLease>,
    /// Follower fetches parked until the log end moves (an append), the role changes, or the
    /// partition goes: followers read up to the log end, not the HW.
    pub follower_waiters: Waiters,
    /// The replicas a reassignment is adding that are not in the ISR yet, as the image last
    /// said: their replication traffic is throttled (see [`crate::throttle`]).
    catching_up: RwLock<Vec<BrokerId>>,
}

/// What every partition of a broker shares: who it is, how durable an acknowledgement is, the
/// clock, and where ISR changes the leader proposes go (to the controller).
#[derive(Clone)]
pub struct PartitionEnv {
    pub local: BrokerId,
    pub durability: Durability,
    pub clock: Arc<dyn Clock>,
    /// `None`: nobody to ask (tests of a lone partition); proposals are dropped.
    pub isr_changes: Option<tokio::sync::mpsc::UnboundedSender<IsrChange>>,
    /// `replica.lag.time.max.ms`.
    pub replica_lag_time_max_ms: i64,
    /// A planted fault for the chaos harness (`serve --unsafe-test-ack-before-replication`,
    /// hidden): `acks=all` is answered once the leader's own copy is durable, before the
    /// followers have it, so a leader failure loses acknowledged writes. Never set otherwise.
    pub unsafe_ack_before_replication: bool,
    /// This broker's leadership lease (see [`crate::lease`]): past it, it leads nothing.
    pub lease: Arc<crate::lease::LeadershipLease>,
}

/// What a leader knows of its followers, for KIP-392's choice of a read replica.
#[derive(Debug, Clone)]
pub struct LeaderView {
    /// The committed ISR.
    pub isr: Vec<BrokerId>,
    /// Each follower and its progress as its fetches told this leader.
    pub followers: Vec<(BrokerId, sluice_replica::FollowerProgress)>,
}

/// An ISR change a leader proposes, on its way to the controller (Kafka's AlterPartition).
#[derive(Debug, Clone)]
pub struct IsrChange {
    pub topic_id: Uuid,
    pub partition: i32,
    pub proposal: sluice_replica::IsrProposal,
}

impl Partition {
    pub fn new(
        env: &PartitionEnv,
        tp: &TopicPartition,
        topic_id: Uuid,
        log: Log,
        settings: Arc<TopicSettings>,
        checkpointed_hw: Option<Offset>,
    ) -> Partition {
        // Until it leads, the HW is what was checkpointed (never past what the log holds now).
        let hw = checkpointed_hw
            .unwrap_or(Offset(0))
            .clamp(log.log_start_offset(), log.log_end_offset());
        let replica = ReplicaState::new(
            env.local,
            ReplicaConfig {
                replica_lag_time_max_ms: env.replica_lag_time_max_ms,
                min_insync_replicas: settings.min_insync_replicas.max(1) as usize,
            },
        );
        Partition {
            isr_changes: env.isr_changes.clone(),
            unsafe_ack_before_replication: env.unsafe_ack_before_replication,
            lease: env.lease.clone(),
            clock: env.clock.clone(),
            replica: Mutex::new(replica),
            topic: tp.topic.clone(),
            topic_id,
            index: tp.partition.get(),
            log: Arc::new(log),
            durability: env.durability,
            high_watermark: AtomicI64::new(hw.get()),
            is_leader: AtomicBool::new(false),
            is_follower: AtomicBool::new(false),
            leader_epoch: AtomicI32::new(0),
            leader_high_watermark: AtomicI64::new(-1),
            settings: RwLock::new(settings),
            producers: Mutex::new(ProducerStateTable::default()),
            role_change: Mutex::new(()),
            waiters: Waiters::default(),
            follower_waiters: Waiters::default(),
            catching_up: RwLock::default(),
        }
    }

    /// Whether `replica`'s replication traffic for this partition is throttled: a
    /// reassignment is adding it and it is not in the ISR yet.
    pub fn is_throttled(&self, replica: BrokerId) -> bool {
        self.catching_up
            .read()
            .expect("catching-up lock")
            .contains(&replica)
    }

    pub fn settings(&self) -> Arc<TopicSettings> {
        self.settings.read().expect("settings lock").clone()
    }

    pub fn set_settings(&self, settings: Arc<TopicSettings>) {
        let min_insync = settings.min_insync_replicas.max(1) as usize;
        *self.settings.write().expect("settings lock") = settings;
        let mut replica = self.replica.lock().expect("replica lock");
        let out = replica.set_min_insync(min_insync, self.clock.now_ms());
        self.apply(out);
    }

    /// The local end the HW counts: what a crash cannot take back in fsync mode.
    fn counted_end(&self) -> Offset {
        match self.durability {
            Durability::Fsync => self.log.durable_offset(),
            Durability::Relaxed => self.log.log_end_offset(),
        }
    }

    /// Applies what the metadata image says about this partition: this broker leads it (under
    /// `info.leader_epoch`) or follows.
    pub fn set_leadership(&self, leads: bool, info: &PartitionInfo, now_ms: i64) {
        let _role = self.role_change.lock().expect("role lock");
        *self.catching_up.write().expect("catching-up lock") = info
            .adding
            .iter()
            .copied()
            .filter(|b| !info.isr.contains(b))
            .collect();
        let mut replica = self.replica.lock().expect("replica lock");
        if leads && info.leader_epoch > replica.leader_epoch() {
            // The new epoch starts at the log end now, not at its first append.
            if let Err(e) = self.log.assign_leader_epoch(info.leader_epoch) {
                tracing::error!(topic = %self.topic, partition = self.index, error = %e,
                    "could not record the new leader epoch");
            }
        }
        let applied = if leads {
            replica.become_leader(LeaderChange {
                epoch: info.leader_epoch,
                partition_epoch: info.partition_epoch,
                replicas: info.replicas.clone(),
                isr: info.isr.clone(),
                local_end: self.counted_end(),
                epoch_start: self.log.log_end_offset(),
                hw: self.high_watermark(),
                now_ms,
            })
        } else {
            replica.become_follower(FollowerChange {
                leader: info.has_leader().then_some(info.leader),
                epoch: info.leader_epoch,
                partition_epoch: info.partition_epoch,
                replicas: info.replicas.clone(),
            })
        };
        match applied {
            Ok(out) => {
                // The epoch first: whoever sees `is_leader` sees at least this epoch.
                self.leader_epoch
                    .store(replica.leader_epoch().get(), Ordering::Release);
                self.is_leader.store(replica.is_leader(), Ordering::Release);
                self.is_follower.store(
                    matches!(replica.role(), sluice_replica::Role::Follower { .. }),
                    Ordering::Release,
                );
                if replica.is_leader() {
                    self.leader_high_watermark.store(-1, Ordering::Release);
                }
                self.apply(out);
            }
            Err(e) => {
                tracing::warn!(topic = %self.topic, partition = self.index, error = %e,
                    "stale leadership change ignored");
            }
        }
        drop(replica);
        self.waiters.wake_all();
        self.follower_waiters.wake_all();
    }

    /// The brokers the metadata says are fenced (dead, or shutting down): outside the ISR they
    /// neither hold this partition's HW nor get proposed into its ISR, however recently they
    /// fetched (Kafka's `isReplicaIsrEligible`).
    pub fn set_ineligible(&self, fenced: &[BrokerId]) {
        let mut replica = self.replica.lock().expect("replica lock");
        let out = replica.set_ineligible(fenced.to_vec(), self.clock.now_ms());
        self.apply(out);
    }

    /// This broker no longer hosts the partition (its topic was deleted, or a reassignment
    /// moved the replica away): it neither leads nor follows, and whoever waits on it (an
    /// `acks=all` produce, a parked fetch) is woken to find that out.
    pub fn stop(&self) {
        let _role = self.role_change.lock().expect("role lock");
        let mut replica = self.replica.lock().expect("replica lock");
        let out = replica.stop();
        self.is_leader.store(false, Ordering::Release);
        self.is_follower.store(false, Ordering::Release);
        self.apply(out);
        drop(replica);
        self.waiters.wake_all();
        self.follower_waiters.wake_all();
    }

    /// Reports the counted local end to the replica state and applies what follows.
    fn report_local_end(&self, now_ms: i64) {
        let mut replica = self.replica.lock().expect("replica lock");
        let out = replica.on_local_end(self.counted_end(), now_ms);
        self.apply(out);
    }

    /// Acts on the replica state's outputs (called with its lock held).
    fn apply(&self, out: Vec<Output>) {
        for o in out {
            match o {
                Output::HighWatermark(hw) => self.set_high_watermark(hw.get()),
                Output::ProposeIsr(proposal) => {
                    tracing::info!(topic = %self.topic, partition = self.index, isr = ?proposal.isr,
                        "proposing an ISR change");
                    if let Some(tx) = &self.isr_changes {
                        let _ = tx.send(IsrChange {
                            topic_id: self.topic_id,
                            partition: self.index,
                            proposal,
                        });
                    }
                }
                // acks=all produces wait on the HW through the waiters
                // ([`Partition::wait_for_hw`]), not parked in the machine.
                Output::ProduceDone { .. } => {}
            }
        }
    }

    /// The time on the broker's clock.
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    pub fn is_leader(&self) -> bool {
        self.is_leader.load(Ordering::Acquire)
    }

    /// This broker leads the partition and may act on it now: its leadership lease holds (a
    /// broker paused or cut off past its session may have been replaced without knowing it).
    /// What clients are served by; [`Partition::is_leader`] is the role as the metadata says.
    pub fn leads_now(&self) -> bool {
        self.is_leader() && self.lease.holds()
    }

    /// The broker this replica is on.
    pub fn local_broker(&self) -> BrokerId {
        self.replica.lock().expect("replica lock").local()
    }

    /// This replica follows (a leader, or waits for one to be elected).
    pub fn is_follower(&self) -> bool {
        self.is_follower.load(Ordering::Acquire)
    }

    /// KIP-392 inputs, while leading: the committed ISR and what this leader knows of each
    /// follower (its log end from its latest fetch, when it was last caught up). `None` unless
    /// leading.
    pub fn follower_progress(&self) -> Option<LeaderView> {
        let replica = self.replica.lock().expect("replica lock");
        if !replica.is_leader() {
            return None;
        }
        let followers = replica
            .replicas()
            .iter()
            .filter_map(|b| replica.follower(*b).map(|f| (*b, *f)))
            .collect();
        Some(LeaderView {
            isr: replica.isr().to_vec(),
            followers,
        })
    }

    /// How many offsets this replica's log end is behind the committed records (the HW): 0
    /// for a leader (its HW never passes its own end); for a follower, the leader's HW as its
    /// latest fetch answer said minus the local log end, at least 0; -1 if it has not heard
    /// from a leader since it started following.
    pub fn offset_lag(&self) -> i64 {
        if self.is_leader() {
            return 0;
        }
        match self.leader_high_watermark.load(Ordering::Acquire) {
            hw if hw < 0 => -1,
            hw => (hw - self.log.log_end_offset().get()).max(0),
        }
    }

    /// May an `acks=all` produce be appended: this broker leads and the ISR holds at least the
    /// effective `min.insync.replicas` (NOT_ENOUGH_REPLICAS otherwise, nothing written).
    pub fn check_min_insync(&self) -> Result<(), sluice_replica::ReplicaError> {
        self.replica
            .lock()
            .expect("replica lock")
            .check_min_insync()
    }

    /// The committed ISR as this replica knows it.
    pub fn isr(&self) -> Vec<BrokerId> {
        self.replica.lock().expect("replica lock").isr().to_vec()
    }

    /// Resolves once the HW reaches `end` (every record below it is on the ISR, durably in
    /// fsync mode), or with NOT_LEADER_OR_FOLLOWER when this broker stops leading first. The
    /// caller bounds the wait.
    pub async fn wait_for_hw(&self, end: Offset) -> Result<(), AppendError> {
        if self.unsafe_ack_before_replication {
            return Ok(());
        }
        loop {
            let woken = Arc::new(tokio::sync::Notify::new());
            // Registered before the check: a move in between leaves a permit.
            self.waiters.register(&woken);
            if self.high_watermark() >= end {
                return Ok(());
            }
            if !self.is_leader() {
                return Err(AppendError::NotLeader);
            }
            woken.notified().await;
        }
    }

    /// The controller refused the ISR change `id` without applying it: free to propose again.
    pub fn isr_change_rejected(&self, id: u64) {
        let mut replica = self.replica.lock().expect("replica lock");
        let out = replica.isr_change_rejected(id, self.clock.now_ms());
        self.apply(out);
    }

    /// Runs what time makes due in the replica state (ISR shrink after
    /// `replica.lag.time.max.ms`, a held HW released); cheap when nothing is due.
    pub fn tick(&self, now_ms: i64) {
        let mut replica = self.replica.lock().expect("replica lock");
        if replica.next_deadline(now_ms).is_some_and(|d| d <= now_ms) {
            let out = replica.tick(now_ms);
            self.apply(out);
        }
    }

    pub fn leader_epoch(&self) -> LeaderEpoch {
        LeaderEpoch(self.leader_epoch.load(Ordering::Acquire))
    }

    pub fn high_watermark(&self) -> Offset {
        Offset(self.high_watermark.load(Ordering::Acquire))
    }

    fn set_high_watermark(&self, to: i64) {
        let prev = self.high_watermark.swap(to, Ordering::AcqRel);
        if to != prev {
            self.waiters.wake_all();
        }
    }

    /// Appends validated batches straight from the caller's bytes (the log patches the
    /// assigned offset into what it writes). Runs inline: a write into the page cache, in request
    /// order. Idempotent batches (`producer` given) are checked against the producer state
    /// first; a duplicate is not written again.
    pub fn append(
        &self,
        batches: &[u8],
        now_ms: i64,
        producer: Option<IncomingBatch>,
    ) -> Result<AppendOutcome, AppendError> {
        let mut producers = self.producers.lock().expect("producer state lock");
        if !self.leads_now() {
            return Err(AppendError::NotLeader);
        }
        if let Some(b) = &producer {
            let verdict = producers.check(b).map_err(|e| {
                // Rare, and what a client does next (librdkafka bumps its epoch, which can
                // duplicate a batch) depends on it: say what was expected.
                let known = producers.get(b.producer_id).map(|p| {
                    let batches: Vec<_> = p
                        .batches
                        .iter()
                        .map(|m| (m.first_seq, m.last_seq, m.first_offset))
                        .collect();
                    (p.epoch, batches)
                });
                tracing::warn!(topic = %self.topic, partition = self.index,
                    producer_id = b.producer_id, epoch = b.epoch, first_seq = b.first_seq,
                    last_seq = b.last_seq, error = ?e, known = ?known,
                    "idempotent batch refused");
                AppendError::Sequence(e)
            })?;
            if let Verdict::Duplicate { first_offset, .. } = verdict {
                return Ok(AppendOutcome::Duplicate {
                    base_offset: first_offset,
                });
            }
        }
        let info = self
            .log
            .append_from(batches, self.leader_epoch(), now_ms)
            .map_err(AppendError::Log)?;
        if let Some(b) = &producer {
            producers.record(b, info.base_offset.get(), info.last_offset.get(), now_ms);
        }
        drop(producers);
        self.follower_waiters.wake_all();
        if self.durability == Durability::Relaxed {
            self.report_local_end(now_ms);
        }
        Ok(AppendOutcome::Appended(info))
    }

    /// Resolves once everything below `end_offset` is as durable as the configured mode
    /// promises, advancing the HW. Concurrent callers share fsyncs (group commit in the log).
    pub async fn make_durable(self: &Arc<Self>, end_offset: Offset) -> Result<(), LogError> {
        if self.durability == Durability::Relaxed {
            return Ok(());
        }
        let me = self.clone();
        tokio::task::spawn_blocking(move || me.log.flush(end_offset))
            .await
            .map_err(|e| LogError::Io(std::io::Error::other(e.to_string())))??;
        self.report_local_end(self.clock.now_ms());
        Ok(())
    }

    /// Whether `broker` is in this partition's replica set (as last applied from the image).
    pub fn has_replica(&self, broker: BrokerId) -> bool {
        self.replica
            .lock()
            .expect("replica lock")
            .replicas()
            .contains(&broker)
    }

    /// Leader side of a follower's fetch from `fetch_offset` (it holds everything before it):
    /// recorded against the leader's counted end, which may move the HW (waking consumers) or
    /// propose an ISR change. Refused when this replica does not lead or `follower` is not one
    /// of its followers.
    pub fn record_follower_fetch(
        &self,
        follower: BrokerId,
        broker_epoch: i64,
        fetch_offset: Offset,
    ) -> Result<(), ReplicaError> {
        let now_ms = self.clock.now_ms();
        let mut replica = self.replica.lock().expect("replica lock");
        let leader_end = self.counted_end();
        let out =
            replica.on_follower_fetch(follower, broker_epoch, fetch_offset, leader_end, now_ms)?;
        self.apply(out);
        Ok(())
    }

    /// Runs `write` on the log as a follower of `leader_epoch`, under the role lock; `None`
    /// (nothing written) if this replica leads now or follows under another epoch.
    fn as_follower<T>(
        &self,
        leader_epoch: LeaderEpoch,
        write: impl FnOnce() -> Result<T, LogError>,
    ) -> Result<Option<T>, LogError> {
        let _role = self.role_change.lock().expect("role lock");
        if self.is_leader() || self.leader_epoch() != leader_epoch {
            return Ok(None);
        }
        write().map(Some)
    }

    /// Appends batches fetched from the leader of `leader_epoch`, as they are (their offsets and
    /// epochs are the leader's), and notes their producers so the idempotent-producer state is
    /// current if this replica becomes leader. `Ok(None)`: the role moved on, nothing written.
    /// Blocking (a write); no fsync (see [`Partition::flush_as_follower`]).
    pub fn append_as_follower(
        &self,
        batches: &[u8],
        leader_epoch: LeaderEpoch,
        now_ms: i64,
    ) -> Result<Option<AppendInfo>, LogError> {
        let Some(info) = self.as_follower(leader_epoch, || {
            let mut producers = self.producers.lock().expect("producer state lock");
            let info = self.log.append_as_follower(batches)?;
            for (h, _) in Batches::new(batches).map_while(Result::ok) {
                if h.producer_id >= 0 && !h.is_control() {
                    producers.observe(
                        &IncomingBatch {
                            producer_id: h.producer_id,
                            epoch: h.producer_epoch,
                            first_seq: h.base_sequence,
                            last_seq: h.last_sequence(),
                        },
                        h.base_offset,
                        h.last_offset(),
                        h.max_timestamp,
                    );
                }
            }
            Ok(info)
        })?
        else {
            return Ok(None);
        };
        if self.durability == Durability::Relaxed {
            self.report_local_end(now_ms);
        }
        Ok(Some(info))
    }

    /// Cuts the log back to `offset` (a diverging suffix), or, with `restart`, empties it and
    /// starts it at `offset` (the leader's log start is past everything this replica holds).
    /// The producer state is rebuilt from what remains. `Ok(false)`: the role moved on, nothing
    /// changed. Blocking.
    pub fn truncate_as_follower(
        &self,
        offset: Offset,
        restart: bool,
        leader_epoch: LeaderEpoch,
        now_ms: i64,
        producer_expiration_ms: i64,
    ) -> Result<bool, LogError> {
        let done = self.as_follower(leader_epoch, || {
            if restart {
                self.log.truncate_fully_and_start_at(offset)
            } else {
                self.log.truncate_to(offset)
            }
        })?;
        if done.is_none() {
            return Ok(false);
        }
        self.report_local_end(now_ms);
        self.load_producer_state(now_ms, producer_expiration_ms)?;
        Ok(true)
    }

    /// Makes what the follower appended durable when the durability mode asks for it, so that
    /// its next fetch offset (which the leader counts toward the HW) covers only data a crash
    /// cannot take back. Blocking (an fsync).
    pub fn flush_as_follower(&self, now_ms: i64) -> Result<(), LogError> {
        if self.durability == Durability::Fsync {
            self.log.flush(self.log.log_end_offset())?;
        }
        self.report_local_end(now_ms);
        Ok(())
    }

    /// A follower learnt its leader's HW: its own is that, capped by its counted local end.
    pub fn on_leader_high_watermark(&self, leader_hw: Offset) {
        let mut replica = self.replica.lock().expect("replica lock");
        if !replica.is_leader() {
            self.leader_high_watermark
                .store(leader_hw.get(), Ordering::Release);
        }
        let out = replica.on_leader_hw(leader_hw);
        self.apply(out);
    }

    /// Active producers, for DescribeProducers.
    pub fn producer_state(&self) -> ProducerStateTable {
        self.producers.lock().expect("producer state lock").clone()
    }

    fn snapshot_path(&self) -> PathBuf {
        self.log.dir().join(PRODUCER_SNAPSHOT)
    }

    /// Rebuilds the producer state: the snapshot, then every idempotent batch after it; drops
    /// producers silent for `expiration_ms`. Blocking (start-up).
    pub fn load_producer_state(&self, now_ms: i64, expiration_ms: i64) -> Result<(), LogError> {
        let start = self.log.log_start_offset().get();
        let end = self.log.log_end_offset().get();
        let (mut table, mut offset) = match std::fs::read(self.snapshot_path())
            .ok()
            .and_then(|b| serde_json::from_slice::<ProducerSnapshot>(&b).ok())
        {
            // A snapshot beyond the log end describes data that is gone (truncated).
            Some(s) if s.offset <= end && s.offset >= start => (s.table, s.offset),
            _ => (ProducerStateTable::default(), start),
        };
        let replay_from = offset;
        while offset < end {
            let read = self.log.read(Offset(offset), 1 << 20, Offset(end), true)?;
            if read.data.is_empty() {
                break;
            }
            for item in Batches::new(&read.data) {
                let Ok((h, _)) = item else { break };
                offset = h.last_offset() + 1;
                if h.producer_id >= 0 && !h.is_control() {
                    table.observe(
                        &IncomingBatch {
                            producer_id: h.producer_id,
                            epoch: h.producer_epoch,
                            first_seq: h.base_sequence,
                            last_seq: h.last_sequence(),
                        },
                        h.base_offset,
                        h.last_offset(),
                        h.max_timestamp,
                    );
                }
            }
        }
        table.expire(now_ms, expiration_ms);
        *self.producers.lock().expect("producer state lock") = table;
        if end > replay_from {
            tracing::debug!(topic = %self.topic, partition = self.index, from = replay_from, to = end,
                "producer state rebuilt from the log");
            self.snapshot_producer_state();
        }
        Ok(())
    }

    /// Writes the producer-state snapshot (temp file, fsync, rename). Best effort: a missing or
    /// stale snapshot only costs a longer replay at the next start.
    pub fn snapshot_producer_state(&self) {
        let snapshot = {
            let table = self.producers.lock().expect("producer state lock");
            ProducerSnapshot {
                offset: self.log.log_end_offset().get(),
                table: table.clone(),
            }
        };
        let path = self.snapshot_path();
        let tmp = path.with_extension("json.tmp");
        let result = serde_json::to_vec(&snapshot)
            .map_err(std::io::Error::other)
            .and_then(|bytes| {
                use std::io::Write;
                let mut f = std::fs::File::create(&tmp)?;
                f.write_all(&bytes)?;
                f.sync_all()?;
                std::fs::rename(&tmp, &path)
            });
        if let Err(e) = result {
            tracing::warn!(topic = %self.topic, partition = self.index, error = %e, "could not write producer-state snapshot");
        }
    }
}
