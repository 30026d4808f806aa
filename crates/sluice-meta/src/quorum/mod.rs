//! The controller quorum's Raft plumbing (openraft 0.9, storage v2): the type configuration,
//! the durable log store and vote, and the state machine that applies committed
//! [`MetaBatch`]es to a [`ClusterState`](crate::ClusterState).
//!
//! Every node runs one Raft instance: voters (`--voters`) vote and may become the active
//! controller; broker-only nodes are learners that receive the same log. The state machine is
//! the only writer of the applied state; the broker follows it through a watch channel.
//!
//! # Layout
//! - [`types`]: [`MetaRaft`], the openraft type configuration.
//! - [`log_store`]: [`MetaLogStore`], the durable Raft log, vote and committed id.
//! - [`state_machine`]: [`MetaStateMachine`], the applied [`ClusterState`](crate::ClusterState)
//!   published as [`Applied`], and its durable snapshot.
//! - [`open_storage`]: both, from `<data-dir>/__cluster_metadata/raft/`, importing the metadata
//!   log of a release before the quorum on first start.
//!
//! # Legacy import
//!
//! A data directory written before the quorum holds `__cluster_metadata/metadata.log`
//! ([`crate::store`]). The first [`open_storage`] replays it and writes its state as the Raft
//! directory's first snapshot, at log id `(term 0, this node, index = the legacy log's last
//! offset, at least 1)` with this node as the only voter, and records that log id as the log's
//! last purged id: openraft starts as an initialized single-voter group that already has the
//! state, and new entries continue the offsets (so broker epochs keep growing). Only then is
//! the old log renamed to `metadata.log.imported`; a crash before that redoes the import
//! (it overwrites what it wrote; Raft has not run on that directory yet).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

use openraft::{CommittedLeaderId, LogId, Membership, SnapshotMeta, StoredMembership};

pub mod error;
mod files;
pub mod log_store;
pub mod state_machine;
pub mod types;

pub use error::RaftStoreError;
pub use log_store::{LogFile, MetaLogReader, MetaLogStore};
pub use state_machine::{Applied, AppliedWatch, MetaSnapshotBuilder, MetaStateMachine};
pub use types::{node_id, ControllerNode, MetaBatch, MetaRaft, MetaResponse, NodeId};

use crate::replay::replay_bytes;
use crate::store::StoreError;

/// The Raft directory's name inside `__cluster_metadata`.
pub const RAFT_DIR: &str = "raft";
/// The metadata log of a release before the quorum, and its name once imported.
pub const LEGACY_LOG: &str = "metadata.log";
pub const LEGACY_LOG_IMPORTED: &str = "metadata.log.imported";

/// Opens the quorum's storage in `meta_dir/raft/` (`meta_dir` is
/// `<data-dir>/__cluster_metadata`), first importing a legacy `meta_dir/metadata.log` (see the
/// module docs). `self_node` is this node: the only voter of an imported group.
pub fn open_storage(
    meta_dir: &Path,
    self_node: (NodeId, ControllerNode),
) -> Result<(MetaLogStore, MetaStateMachine), RaftStoreError> {
    let raft_dir = meta_dir.join(RAFT_DIR);
    fs::create_dir_all(&raft_dir).map_err(error::io_at(&raft_dir))?;
    let legacy = meta_dir.join(LEGACY_LOG);
    if legacy.exists() {
        if log_store::has_raft_state(&raft_dir)? {
            return Err(RaftStoreError::LegacyConflict { legacy });
        }
        import_legacy(meta_dir, &raft_dir, self_node)?;
    }
    let log = MetaLogStore::open(&raft_dir)?;
    let sm = MetaStateMachine::open(&raft_dir)?;
    Ok((log, sm))
}

fn import_legacy(
    meta_dir: &Path,
    raft_dir: &Path,
    (self_id, self_node): (NodeId, ControllerNode),
) -> Result<(), RaftStoreError> {
    let legacy = meta_dir.join(LEGACY_LOG);
    let bytes = fs::read(&legacy).map_err(error::io_at(&legacy))?;
    let replay = replay_bytes(&bytes).map_err(|e| StoreError::Corrupt {
        path: legacy.clone(),
        line: e.line,
        reason: e.reason,
    })?;
    if let Some(torn) = &replay.torn {
        // Never acknowledged; the old file is kept as it is (renamed), so nothing is cut.
        tracing::warn!(
            path = %legacy.display(),
            line = torn.line,
            reason = %torn.reason,
            "ignoring a torn last legacy metadata record (never acknowledged)"
        );
    }
    let index = replay.state.last_offset.max(1) as u64;
    let log_id = LogId::new(CommittedLeaderId::new(0, self_id), index);
    let membership = Membership::new(
        vec![BTreeSet::from([self_id])],
        BTreeMap::from([(self_id, self_node)]),
    );
    let meta = SnapshotMeta {
        last_log_id: Some(log_id),
        last_membership: StoredMembership::new(Some(log_id), membership),
        snapshot_id: format!("{index}-imported"),
    };
    state_machine::write_initial_snapshot(raft_dir, meta, &replay.state)?;
    log_store::write_purged(raft_dir, log_id)?;
    let imported = meta_dir.join(LEGACY_LOG_IMPORTED);
    fs::rename(&legacy, &imported).map_err(error::io_at(&imported))?;
    files::sync_dir(meta_dir)?;
    tracing::info!(
        path = %legacy.display(),
        records = replay.records,
        last_offset = replay.state.last_offset,
        log_id = %log_id,
        "imported the legacy metadata log into the Raft storage"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use openraft::storage::{RaftLogStorage, RaftStateMachine};
    use openraft::testing::{StoreBuilder, Suite};
    use openraft::StorageError;

    use super::*;
    use crate::record::{MetadataRecord, TopicConfigs};
    use crate::{BrokerId, MetadataStore};
    use uuid::Uuid;

    struct TempStore;

    impl StoreBuilder<MetaRaft, MetaLogStore, MetaStateMachine, tempfile::TempDir> for TempStore {
        async fn build(
            &self,
        ) -> Result<(tempfile::TempDir, MetaLogStore, MetaStateMachine), StorageError<NodeId>>
        {
            let dir = tempfile::tempdir().expect("temp dir");
            let (mut log, sm) =
                open_storage(dir.path(), (0, ControllerNode::default())).expect("open storage");
            // Rewrite the log on every purge, so the suite runs the compaction path too.
            log.set_compact_after(1);
            Ok((dir, log, sm))
        }
    }

    /// openraft's storage conformance suite, every case on a fresh directory.
    #[test]
    fn openraft_storage_suite() {
        Suite::test_all(TempStore).unwrap();
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

    #[tokio::test]
    async fn a_legacy_metadata_log_is_imported_as_the_first_snapshot() {
        let data = tempfile::tempdir().unwrap();
        let expected = {
            let mut store = MetadataStore::open(data.path(), BrokerId(1)).unwrap();
            store.append(broker(1)).unwrap();
            store
                .append(MetadataRecord::CreateTopic {
                    name: "orders".into(),
                    topic_id: Uuid::from_u128(7),
                    replicas: vec![vec![BrokerId(1)]; 3],
                    configs: TopicConfigs::from([("retention.ms".into(), "1000".into())]),
                })
                .unwrap();
            store.append(broker(2)).unwrap();
            store.state().clone()
        };
        assert_eq!(expected.last_offset, 2);
        let meta_dir = data.path().join("__cluster_metadata");
        let node = ControllerNode::new("127.0.0.1:9093");

        let (mut log, mut sm) = open_storage(&meta_dir, (1, node.clone())).unwrap();
        let log_id = LogId::new(CommittedLeaderId::new(0, 1), 2);
        let st = log.get_log_state().await.unwrap();
        assert_eq!(st.last_purged_log_id, Some(log_id));
        assert_eq!(st.last_log_id, Some(log_id));
        let (applied, membership) = sm.applied_state().await.unwrap();
        assert_eq!(applied, Some(log_id));
        assert_eq!(membership.log_id(), &Some(log_id));
        assert_eq!(
            membership.membership().voter_ids().collect::<Vec<_>>(),
            vec![1]
        );
        assert_eq!(membership.membership().get_node(&1), Some(&node));
        assert_eq!(*sm.subscribe().borrow().state, expected);
        assert!(!meta_dir.join(LEGACY_LOG).exists());
        assert!(meta_dir.join(LEGACY_LOG_IMPORTED).exists());
        let snap = sm.get_current_snapshot().await.unwrap().unwrap();
        assert_eq!(snap.meta.last_log_id, Some(log_id));
        drop((log, sm));

        // A second open does not import again, and finds the same state.
        let (mut log, sm) = open_storage(&meta_dir, (1, node.clone())).unwrap();
        assert_eq!(
            log.get_log_state().await.unwrap().last_purged_log_id,
            Some(log_id)
        );
        assert_eq!(*sm.applied().state, expected);
        drop((log, sm));

        // An interrupted import (the old log not yet renamed) is redone...
        fs::rename(
            meta_dir.join(LEGACY_LOG_IMPORTED),
            meta_dir.join(LEGACY_LOG),
        )
        .unwrap();
        let (log, sm) = open_storage(&meta_dir, (1, node.clone())).unwrap();
        assert_eq!(log.last_purged(), Some(log_id));
        assert_eq!(*sm.applied().state, expected);
        drop((log, sm));

        // ...but a legacy log next to a Raft log in use is refused.
        let raft_dir = meta_dir.join(RAFT_DIR);
        files::write_atomic(&raft_dir, "vote", b"x").unwrap();
        fs::rename(
            meta_dir.join(LEGACY_LOG_IMPORTED),
            meta_dir.join(LEGACY_LOG),
        )
        .unwrap();
        assert!(matches!(
            open_storage(&meta_dir, (1, node)),
            Err(RaftStoreError::LegacyConflict { .. })
        ));
    }

    #[tokio::test]
    async fn an_empty_legacy_log_imports_at_index_one() {
        let data = tempfile::tempdir().unwrap();
        drop(MetadataStore::open(data.path(), BrokerId(3)).unwrap());
        let meta_dir = data.path().join("__cluster_metadata");
        let (mut log, sm) = open_storage(&meta_dir, (3, ControllerNode::default())).unwrap();
        let log_id = LogId::new(CommittedLeaderId::new(0, 3), 1);
        assert_eq!(
            log.get_log_state().await.unwrap().last_purged_log_id,
            Some(log_id)
        );
        assert_eq!(sm.applied().last_applied, Some(log_id));
        assert_eq!(*sm.applied().state, crate::ClusterState::new());
    }
}
