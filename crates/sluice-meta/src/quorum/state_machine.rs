//! The quorum's state machine: [`MetaStateMachine`], openraft's `RaftStateMachine`, applying
//! committed [`MetaBatch`](super::MetaBatch)es to a [`ClusterState`] and publishing each result
//! as an [`Applied`] on a watch channel, which is how the broker follows the metadata.
//!
//! Only snapshots are durable: `<raft-dir>/snapshot.json`, two checksummed lines (the metadata
//! log's line format, [`crate::replay`]):
//!
//! ```text
//! <crc> {"last_log_id":..,"last_membership":..,"snapshot_id":".."}\n   openraft's SnapshotMeta
//! <crc> <ClusterState::snapshot()>\n                                    the state at last_log_id
//! ```
//!
//! The same bytes are the snapshot data openraft sends to a follower, so an install checks the
//! checksums before it replaces anything. On open the state machine starts from the snapshot
//! (or empty); openraft re-applies the committed entries after it (the log store saves the
//! committed log id for that).
//!
//! Crash analysis: a snapshot is written to a fresh `snapshot.json.<id>.tmp`, fsynced, renamed
//! over `snapshot.json` and the directory fsynced before openraft hears of it (and so before it
//! purges the log the snapshot covers). A crash leaves the old or the new snapshot whole; stale
//! `.tmp` files are removed at open. Any damage in `snapshot.json` is therefore corruption and
//! fails the open. A snapshot build runs concurrently with apply and install: it replaces the
//! file only if it is not older than the current one, so a slow build cannot undo an install.

use std::fs;
use std::io::{self, Cursor};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use openraft::storage::RaftStateMachine;
use openraft::{
    Entry, EntryPayload, ErrorSubject, ErrorVerb, LogId, OptionalSend, RaftSnapshotBuilder,
    Snapshot, SnapshotMeta, StorageError, StoredMembership,
};
use tokio::sync::watch;
use uuid::Uuid;

use super::error::{io_at, RaftStoreError};
use super::files::{encode, remove_stale, sync_dir, write_synced};
use super::types::{ControllerNode, MetaRaft, MetaResponse, NodeId};
use crate::replay::{checked_json, frame_line};
use crate::state::ClusterState;

/// The snapshot file's name in the Raft directory.
pub const SNAPSHOT_FILE: &str = "snapshot.json";

/// What the state machine has applied, published after every `apply` call and every snapshot
/// install (one watch, so a reader always sees a state and the membership of the same moment).
#[derive(Debug, Clone, Default)]
pub struct Applied {
    /// The cluster state after `last_applied`. Shared: a new state is a copy-on-write clone,
    /// made once per `apply` call while a reader still holds the previous one.
    pub state: Arc<ClusterState>,
    pub last_applied: Option<LogId<NodeId>>,
    /// The last membership applied: the controller quorum's voters and learners.
    pub membership: StoredMembership<NodeId, ControllerNode>,
}

/// The current snapshot: its metadata and its bytes (the content of `snapshot.json`).
#[derive(Debug, Clone)]
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, ControllerNode>,
    bytes: Arc<Vec<u8>>,
}

/// Shared between the state machine and its snapshot builders.
type SnapshotSlot = Arc<Mutex<Option<StoredSnapshot>>>;

/// The metadata state machine. See the module docs.
pub struct MetaStateMachine {
    dir: PathBuf,
    applied: Applied,
    snapshot: SnapshotSlot,
    /// Shared so handles made before the state machine moves into openraft can subscribe.
    published: Arc<watch::Sender<Applied>>,
}

/// Builds a snapshot of the state at the moment it was made, while the state machine goes on.
pub struct MetaSnapshotBuilder {
    dir: PathBuf,
    applied: Applied,
    snapshot: SnapshotSlot,
}

impl MetaStateMachine {
    /// Opens the state machine in `raft_dir`: the snapshot's state, or the empty state.
    pub fn open(raft_dir: &Path) -> Result<MetaStateMachine, RaftStoreError> {
        fs::create_dir_all(raft_dir).map_err(io_at(raft_dir))?;
        for entry in fs::read_dir(raft_dir).map_err(io_at(raft_dir))? {
            let name = entry.map_err(io_at(raft_dir))?.file_name();
            let name = name.to_string_lossy();
            if name.starts_with("snapshot.json.") && name.ends_with(".tmp") {
                remove_stale(&raft_dir.join(&*name))?;
            }
        }
        let path = raft_dir.join(SNAPSHOT_FILE);
        let (applied, snapshot) = match fs::read(&path) {
            Ok(bytes) => {
                let (meta, state) = decode_snapshot(&path, &bytes)?;
                let applied = Applied {
                    state: Arc::new(state),
                    last_applied: meta.last_log_id,
                    membership: meta.last_membership.clone(),
                };
                let stored = StoredSnapshot {
                    meta,
                    bytes: Arc::new(bytes),
                };
                (applied, Some(stored))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => (Applied::default(), None),
            Err(e) => return Err(io_at(&path)(e)),
        };
        let (published, _) = watch::channel(applied.clone());
        Ok(MetaStateMachine {
            dir: raft_dir.to_path_buf(),
            applied,
            snapshot: Arc::new(Mutex::new(snapshot)),
            published: Arc::new(published),
        })
    }

    /// A receiver of every [`Applied`] from now on (it starts with the current one). Take it
    /// before the state machine moves into openraft, or keep a [`watch`](Self::watch) handle.
    pub fn subscribe(&self) -> watch::Receiver<Applied> {
        self.published.subscribe()
    }

    /// A handle that hands out receivers after the state machine moved into openraft.
    pub fn watch(&self) -> AppliedWatch {
        AppliedWatch(self.published.clone())
    }

    /// What has been applied so far.
    pub fn applied(&self) -> &Applied {
        &self.applied
    }

    fn publish(&self) {
        self.published.send_replace(self.applied.clone());
    }
}

/// Hands out receivers of the state machine's [`Applied`].
#[derive(Debug, Clone)]
pub struct AppliedWatch(Arc<watch::Sender<Applied>>);

impl AppliedWatch {
    pub fn subscribe(&self) -> watch::Receiver<Applied> {
        self.0.subscribe()
    }
}

/// The bytes of a snapshot: its metadata line and its state line.
fn encode_snapshot(
    meta: &SnapshotMeta<NodeId, ControllerNode>,
    state_json: &[u8],
) -> Result<Vec<u8>, RaftStoreError> {
    let mut bytes = encode("snapshot metadata", meta)?;
    bytes.extend(frame_line(state_json));
    Ok(bytes)
}

type SplitSnapshot<'a> = (SnapshotMeta<NodeId, ControllerNode>, &'a [u8], usize);

/// The metadata, the state JSON and the state line's byte position of snapshot bytes, or why
/// they are not a whole snapshot (with the 1-based line and its byte position).
fn split_snapshot(bytes: &[u8]) -> Result<SplitSnapshot<'_>, (usize, usize, String)> {
    let first =
        bytes
            .iter()
            .position(|&b| b == b'\n')
            .ok_or((1, 0, "no metadata line".to_string()))?;
    let meta_json = checked_json(&bytes[..first]).map_err(|r| (1, 0, r))?;
    let meta = serde_json::from_slice(meta_json)
        .map_err(|e| (1, 0, format!("cannot decode snapshot metadata: {e}")))?;
    let start = first + 1;
    let state_line = bytes[start..]
        .strip_suffix(b"\n")
        .filter(|l| !l.contains(&b'\n'))
        .ok_or((
            2,
            start,
            "not exactly one newline-terminated state line".to_string(),
        ))?;
    let state_json = checked_json(state_line).map_err(|r| (2, start, r))?;
    Ok((meta, state_json, start))
}

fn decode_snapshot(
    path: &Path,
    bytes: &[u8],
) -> Result<(SnapshotMeta<NodeId, ControllerNode>, ClusterState), RaftStoreError> {
    let corrupt = |(line, offset, reason): (usize, usize, String)| RaftStoreError::Corrupt {
        path: path.to_path_buf(),
        line,
        offset: offset as u64,
        reason,
    };
    let (meta, state_json, start) = split_snapshot(bytes).map_err(corrupt)?;
    let state = ClusterState::from_snapshot(state_json)
        .map_err(|e| corrupt((2, start, format!("cannot decode the cluster state: {e}"))))?;
    Ok((meta, state))
}

/// Makes `stored` the current snapshot, durably, unless a newer one already is.
fn persist_snapshot(
    dir: &Path,
    slot: &SnapshotSlot,
    stored: StoredSnapshot,
) -> Result<(), RaftStoreError> {
    let tmp = dir.join(format!("{SNAPSHOT_FILE}.{}.tmp", Uuid::new_v4().simple()));
    write_synced(&tmp, &stored.bytes)?;
    let path = dir.join(SNAPSHOT_FILE);
    {
        let mut current = slot.lock().unwrap_or_else(PoisonError::into_inner);
        if current
            .as_ref()
            .is_some_and(|c| c.meta.last_log_id > stored.meta.last_log_id)
        {
            drop(current);
            tracing::debug!(
                snapshot = %stored.meta.snapshot_id,
                "a newer snapshot is already current; dropping this one"
            );
            return fs::remove_file(&tmp).map_err(io_at(&tmp));
        }
        // Under the lock: two renames must land in the order of the slot's updates.
        fs::rename(&tmp, &path).map_err(io_at(&path))?;
        *current = Some(stored);
    }
    sync_dir(dir)
}

/// Runs [`persist_snapshot`] on the blocking pool.
async fn persist_snapshot_blocking(
    dir: &Path,
    slot: &SnapshotSlot,
    stored: StoredSnapshot,
) -> Result<(), RaftStoreError> {
    let (dir, slot) = (dir.to_path_buf(), slot.clone());
    let path = dir.join(SNAPSHOT_FILE);
    tokio::task::spawn_blocking(move || persist_snapshot(&dir, &slot, stored))
        .await
        .unwrap_or_else(|join| {
            Err(io_at(path)(io::Error::other(format!(
                "snapshot write task failed: {join}"
            ))))
        })
}

/// Writes the first snapshot of a Raft directory (the legacy import), before any state machine
/// is open.
pub(crate) fn write_initial_snapshot(
    raft_dir: &Path,
    meta: SnapshotMeta<NodeId, ControllerNode>,
    state: &ClusterState,
) -> Result<(), RaftStoreError> {
    let bytes = encode_snapshot(&meta, &state.snapshot())?;
    let slot = Arc::new(Mutex::new(None));
    persist_snapshot(
        raft_dir,
        &slot,
        StoredSnapshot {
            meta,
            bytes: Arc::new(bytes),
        },
    )
}

fn to_snapshot(stored: &StoredSnapshot) -> Snapshot<MetaRaft> {
    Snapshot {
        meta: stored.meta.clone(),
        snapshot: Box::new(Cursor::new(stored.bytes.to_vec())),
    }
}

impl RaftSnapshotBuilder<MetaRaft> for MetaSnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<MetaRaft>, StorageError<NodeId>> {
        let last = self.applied.last_applied;
        let meta = SnapshotMeta {
            last_log_id: last,
            last_membership: self.applied.membership.clone(),
            snapshot_id: format!(
                "{}-{}",
                last.map_or(0, |l| l.index),
                Uuid::new_v4().simple()
            ),
        };
        let signature = Some(meta.signature());
        let fail = |e: RaftStoreError| {
            e.into_storage(ErrorSubject::Snapshot(signature.clone()), ErrorVerb::Write)
        };
        let bytes = encode_snapshot(&meta, &self.applied.state.snapshot()).map_err(fail)?;
        let stored = StoredSnapshot {
            meta,
            bytes: Arc::new(bytes),
        };
        persist_snapshot_blocking(&self.dir, &self.snapshot, stored.clone())
            .await
            .map_err(fail)?;
        tracing::info!(snapshot = %stored.meta.snapshot_id, "built a metadata snapshot");
        Ok(to_snapshot(&stored))
    }
}

impl RaftStateMachine<MetaRaft> for MetaStateMachine {
    type SnapshotBuilder = MetaSnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<
        (
            Option<LogId<NodeId>>,
            StoredMembership<NodeId, ControllerNode>,
        ),
        StorageError<NodeId>,
    > {
        Ok((self.applied.last_applied, self.applied.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<MetaResponse>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<MetaRaft>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut replies = Vec::new();
        for entry in entries {
            let log_id = entry.log_id;
            match entry.payload {
                EntryPayload::Blank => {}
                EntryPayload::Normal(batch) => {
                    // Copy-on-write: clones the state once per call if a reader holds it.
                    let state = Arc::make_mut(&mut self.applied.state);
                    for record in &batch.records {
                        state.apply(log_id.index as i64, record);
                    }
                }
                EntryPayload::Membership(m) => {
                    self.applied.membership = StoredMembership::new(Some(log_id), m);
                }
            }
            self.applied.last_applied = Some(log_id);
            replies.push(MetaResponse {
                index: log_id.index,
            });
        }
        if !replies.is_empty() {
            self.publish();
        }
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> MetaSnapshotBuilder {
        MetaSnapshotBuilder {
            dir: self.dir.clone(),
            applied: self.applied.clone(),
            snapshot: self.snapshot.clone(),
        }
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<NodeId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, ControllerNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeId>> {
        let signature = Some(meta.signature());
        let fail = |e: RaftStoreError| {
            e.into_storage(ErrorSubject::Snapshot(signature.clone()), ErrorVerb::Write)
        };
        let bytes = snapshot.into_inner();
        let (embedded, state_json, _) = split_snapshot(&bytes)
            .map_err(|(line, _, reason)| {
                RaftStoreError::SnapshotMismatch(format!(
                    "line {line} of the received data: {reason}"
                ))
            })
            .map_err(fail)?;
        if embedded.last_log_id != meta.last_log_id
            || embedded.last_membership != meta.last_membership
        {
            return Err(fail(RaftStoreError::SnapshotMismatch(format!(
                "the data is of {:?} with membership {:?}, the metadata says {:?} with {:?}",
                embedded.last_log_id,
                embedded.last_membership,
                meta.last_log_id,
                meta.last_membership
            ))));
        }
        let state = ClusterState::from_snapshot(state_json)
            .map_err(|e| {
                RaftStoreError::SnapshotMismatch(format!("cannot decode the cluster state: {e}"))
            })
            .map_err(fail)?;
        // Re-framed with the given metadata, so the file and `get_current_snapshot` agree on it.
        let stored = StoredSnapshot {
            meta: meta.clone(),
            bytes: Arc::new(encode_snapshot(meta, state_json).map_err(fail)?),
        };
        persist_snapshot_blocking(&self.dir, &self.snapshot, stored)
            .await
            .map_err(fail)?;
        self.applied = Applied {
            state: Arc::new(state),
            last_applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
        };
        self.publish();
        tracing::info!(snapshot = %meta.snapshot_id, "installed a metadata snapshot");
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<MetaRaft>>, StorageError<NodeId>> {
        let current = self
            .snapshot
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        Ok(current.as_ref().map(to_snapshot))
    }
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, Membership};
    use uuid::Uuid;

    use super::*;
    use crate::quorum::MetaBatch;
    use crate::record::{MetadataRecord, TopicConfigs};
    use crate::BrokerId;

    fn lid(term: u64, index: u64) -> LogId<NodeId> {
        LogId::new(CommittedLeaderId::new(term, 1), index)
    }

    fn normal(index: u64, records: Vec<MetadataRecord>) -> Entry<MetaRaft> {
        Entry {
            log_id: lid(1, index),
            payload: EntryPayload::Normal(MetaBatch { records }),
        }
    }

    fn broker(id: i32) -> MetadataRecord {
        MetadataRecord::RegisterBroker {
            broker_id: BrokerId(id),
            host: "127.0.0.1".into(),
            port: 9092,
            rack: None,
            incarnation_id: None,
            directory_id: None,
            fenced: false,
        }
    }

    fn topic(name: &str, id: u128) -> MetadataRecord {
        MetadataRecord::CreateTopic {
            name: name.into(),
            topic_id: Uuid::from_u128(id),
            replicas: vec![vec![BrokerId(1)]; 2],
            configs: TopicConfigs::new(),
        }
    }

    fn membership(index: u64) -> Entry<MetaRaft> {
        Entry {
            log_id: lid(1, index),
            payload: EntryPayload::Membership(Membership::new(vec![[1, 2].into()], ())),
        }
    }

    #[tokio::test]
    async fn apply_publishes_each_call_and_a_snapshot_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = MetaStateMachine::open(dir.path()).unwrap();
        let mut rx = sm.subscribe();
        let handle = sm.watch();
        assert!(rx.borrow_and_update().last_applied.is_none());

        let replies = sm
            .apply([
                Entry {
                    log_id: lid(1, 1),
                    payload: EntryPayload::Blank,
                },
                normal(2, vec![broker(1), topic("a", 10)]),
                membership(3),
            ])
            .await
            .unwrap();
        assert_eq!(
            replies.iter().map(|r| r.index).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        assert!(rx.has_changed().unwrap());
        let seen = rx.borrow_and_update().clone();
        assert_eq!(seen.last_applied, Some(lid(1, 3)));
        assert_eq!(seen.membership.log_id(), &Some(lid(1, 3)));
        assert_eq!(
            seen.state.brokers[&BrokerId(1)].epoch,
            2,
            "the entry's index"
        );
        assert_eq!(seen.state.last_offset, 2);
        assert!(seen.state.topic("a").is_some());

        // The published state is not changed under a reader by the next apply.
        let mut late = handle.subscribe();
        sm.apply([normal(4, vec![topic("b", 11)])]).await.unwrap();
        assert!(seen.state.topic("b").is_none());
        assert!(late.borrow_and_update().state.topic("b").is_some());

        let snap = sm
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        assert_eq!(snap.meta.last_log_id, Some(lid(1, 4)));
        assert_eq!(snap.meta.last_membership.log_id(), &Some(lid(1, 3)));
        let expected = sm.applied().clone();
        // Applied after the snapshot: gone at reopen (openraft re-applies it from the log).
        sm.apply([normal(5, vec![topic("c", 12)])]).await.unwrap();
        drop(sm);

        let mut sm = MetaStateMachine::open(dir.path()).unwrap();
        assert_eq!(*sm.applied().state, *expected.state);
        assert_eq!(
            sm.applied_state().await.unwrap(),
            (expected.last_applied, expected.membership.clone())
        );
        assert_eq!(*sm.subscribe().borrow().state, *expected.state);
        let current = sm.get_current_snapshot().await.unwrap().unwrap();
        assert_eq!(current.meta, snap.meta);
        assert_eq!(current.snapshot.into_inner(), snap.snapshot.into_inner());
    }

    #[tokio::test]
    async fn install_checks_the_data_and_a_slow_build_does_not_undo_it() {
        let leader_dir = tempfile::tempdir().unwrap();
        let mut leader = MetaStateMachine::open(leader_dir.path()).unwrap();
        leader
            .apply([membership(1), normal(2, vec![broker(1), topic("a", 10)])])
            .await
            .unwrap();
        let snap = leader
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        let data = snap.snapshot.into_inner();

        let dir = tempfile::tempdir().unwrap();
        let mut sm = MetaStateMachine::open(dir.path()).unwrap();
        sm.apply([normal(1, vec![broker(1)])]).await.unwrap();
        // Taken before the install, built after it.
        let mut slow = sm.get_snapshot_builder().await;

        let mut damaged = data.clone();
        let at = damaged.len() - 5;
        damaged[at] ^= 0x01;
        let e = sm
            .install_snapshot(&snap.meta, Box::new(Cursor::new(damaged)))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("checksum mismatch"), "{e}");
        let mut other = snap.meta.clone();
        other.last_log_id = Some(lid(1, 7));
        let e = sm
            .install_snapshot(&other, Box::new(Cursor::new(data.clone())))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("does not match"), "{e}");
        assert!(sm.applied().state.topic("a").is_none(), "nothing installed");

        let mut rx = sm.subscribe();
        sm.install_snapshot(&snap.meta, Box::new(Cursor::new(data)))
            .await
            .unwrap();
        assert!(rx.borrow_and_update().state.topic("a").is_some());
        let old = slow.build_snapshot().await.unwrap();
        assert_eq!(old.meta.last_log_id, Some(lid(1, 1)));
        let current = sm.get_current_snapshot().await.unwrap().unwrap();
        assert_eq!(current.meta, snap.meta, "the install stays current");
        drop(sm);
        let mut sm = MetaStateMachine::open(dir.path()).unwrap();
        assert_eq!(sm.applied_state().await.unwrap().0, Some(lid(1, 2)));
        assert_eq!(*sm.applied().state, *leader.applied().state);
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temporary files left"
        );
    }

    #[tokio::test]
    async fn a_damaged_snapshot_file_fails_open() {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = MetaStateMachine::open(dir.path()).unwrap();
        sm.apply([normal(1, vec![broker(1)])]).await.unwrap();
        sm.get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        drop(sm);
        let path = dir.path().join(SNAPSHOT_FILE);
        let mut bytes = fs::read(&path).unwrap();
        let second = bytes.iter().position(|&b| b == b'\n').unwrap() + 1;
        bytes[second + 12] ^= 0x02;
        fs::write(&path, &bytes).unwrap();
        fs::write(dir.path().join("snapshot.json.abc.tmp"), b"stale").unwrap();
        let e = MetaStateMachine::open(dir.path()).err().unwrap();
        assert!(
            matches!(&e, RaftStoreError::Corrupt { line: 2, offset, .. } if *offset == second as u64),
            "{e}"
        );
        assert!(!dir.path().join("snapshot.json.abc.tmp").exists());
    }
}
