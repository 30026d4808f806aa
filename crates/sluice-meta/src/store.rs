//! The durable metadata log: `<data-dir>/__cluster_metadata/` holding
//! - `meta.properties`: `cluster.id` and `node.id` (a data dir belongs to one node of one cluster),
//! - `metadata.log`: one checksummed JSON [`MetadataRecord`] per line (format and replay rules
//!   in [`crate::replay`]), appended and fsynced before the change is applied or acknowledged.
//!
//! Crash analysis: a record is visible only after its line is fsynced. A kill -9 or power loss
//! during an append leaves at most one torn last line (no newline, or a bad checksum); start-up
//! cuts it. That change was never acknowledged. Damage before the last line fails start-up with
//! the file and line rather than guess.
//!
//! Sticky error: after a failed write or fsync the store refuses every later append until the
//! broker restarts, as a partition log does. Retrying is wrong twice over: a failed write may
//! have left part of a line, so the next record would land behind garbage (corruption in the
//! middle of the log at the next start), and after a failed fsync Linux may have dropped the
//! dirty pages, so a later "successful" fsync would lie. The restart's replay cuts the torn line.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use thiserror::Error;
use uuid::Uuid;

use crate::record::MetadataRecord;
use crate::replay::{encode_line, replay_bytes};
use crate::state::{ClusterState, MetaError};
use crate::BrokerId;

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("metadata I/O on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("metadata log {path} is corrupt at line {line}: {reason}")]
    Corrupt {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error(
        "metadata log {path} is offline after an earlier write or fsync failure; \
         no metadata change is possible until the broker restarts"
    )]
    Offline { path: PathBuf },
    #[error("cannot encode metadata record: {0}")]
    Encode(String),
    #[error("data directory belongs to node {found}, but this broker is node {expected}")]
    NodeIdMismatch { expected: BrokerId, found: BrokerId },
    #[error(
        "data directory's meta.properties says cluster {properties}, but its metadata log \
         belongs to cluster {log}"
    )]
    ClusterIdMismatch { properties: String, log: String },
    #[error(transparent)]
    Invalid(#[from] MetaError),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The narrow seam through which appends reach the disk, so tests can inject a failed write or
/// fsync. Start-up (read, cut a torn tail) uses the file directly: a failure there fails start-up.
pub trait MetadataFile: Send + fmt::Debug {
    /// Appends all of `buf` at the end of the file.
    fn append(&mut self, buf: &[u8]) -> io::Result<()>;
    /// fdatasync.
    fn sync_data(&mut self) -> io::Result<()>;
}

impl MetadataFile for File {
    fn append(&mut self, buf: &[u8]) -> io::Result<()> {
        self.write_all(buf)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        File::sync_data(self)
    }
}

pub struct MetadataStore {
    /// The appendable log file (opened in append mode).
    file: Box<dyn MetadataFile>,
    path: PathBuf,
    cluster_id: String,
    state: ClusterState,
    /// Set by the first failed write or fsync; sticky until restart (see the module docs).
    offline: bool,
}

impl MetadataStore {
    /// Opens (or creates) the metadata log under `data_dir` and replays it.
    pub fn open(data_dir: &Path, node_id: BrokerId) -> Result<MetadataStore, StoreError> {
        Self::open_with(data_dir, node_id, |f| Box::new(f))
    }

    /// [`open`](Self::open), with the appends going through `wrap(file)`.
    fn open_with(
        data_dir: &Path,
        node_id: BrokerId,
        wrap: impl FnOnce(File) -> Box<dyn MetadataFile>,
    ) -> Result<MetadataStore, StoreError> {
        let dir = data_dir.join("__cluster_metadata");
        fs::create_dir_all(&dir).map_err(io(&dir))?;
        let cluster_id = Self::load_identity(&dir, node_id)?;

        let path = dir.join("metadata.log");
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&path)
            .map_err(io(&path))?;
        let mut bytes = Vec::new();
        (&file).read_to_end(&mut bytes).map_err(io(&path))?;
        let replay = replay_bytes(&bytes).map_err(|e| StoreError::Corrupt {
            path: path.clone(),
            line: e.line,
            reason: e.reason,
        })?;
        if let Some(torn) = &replay.torn {
            tracing::warn!(
                path = %path.display(),
                line = torn.line,
                reason = %torn.reason,
                dropped_bytes = bytes.len() as u64 - replay.valid_len,
                "cutting a torn last metadata record (never acknowledged)"
            );
            file.set_len(replay.valid_len).map_err(io(&path))?;
            file.sync_all().map_err(io(&path))?;
        }
        if replay.unchecked_records > 0 {
            tracing::info!(
                path = %path.display(),
                records = replay.unchecked_records,
                "metadata log holds records from before checksums; new records are checksummed"
            );
        }
        file.flush().map_err(io(&path))?;
        if let Some(formed) = &replay.state.cluster_id {
            if *formed != cluster_id {
                return Err(StoreError::ClusterIdMismatch {
                    properties: cluster_id,
                    log: formed.clone(),
                });
            }
        }
        Ok(MetadataStore {
            file: wrap(file),
            path,
            cluster_id,
            state: replay.state,
            offline: false,
        })
    }

    /// Reads or writes `meta.properties` and returns the cluster id.
    fn load_identity(dir: &Path, node_id: BrokerId) -> Result<String, StoreError> {
        let path = dir.join("meta.properties");
        match fs::read_to_string(&path) {
            Ok(text) => {
                let mut cluster_id = None;
                let mut found_node = None;
                for line in text.lines() {
                    if let Some(v) = line.strip_prefix("cluster.id=") {
                        cluster_id = Some(v.trim().to_string());
                    } else if let Some(v) = line.strip_prefix("node.id=") {
                        found_node = v.trim().parse::<i32>().ok().map(BrokerId);
                    }
                }
                let corrupt = |reason: &str| StoreError::Corrupt {
                    path: path.clone(),
                    line: 0,
                    reason: reason.into(),
                };
                let found = found_node.ok_or_else(|| corrupt("missing node.id"))?;
                if found != node_id {
                    return Err(StoreError::NodeIdMismatch {
                        expected: node_id,
                        found,
                    });
                }
                cluster_id.ok_or_else(|| corrupt("missing cluster.id"))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let cluster_id = Uuid::new_v4().simple().to_string();
                let tmp = dir.join("meta.properties.tmp");
                let text = format!("version=1\ncluster.id={cluster_id}\nnode.id={node_id}\n");
                let mut f = File::create(&tmp).map_err(io(&tmp))?;
                f.write_all(text.as_bytes()).map_err(io(&tmp))?;
                f.sync_all().map_err(io(&tmp))?;
                fs::rename(&tmp, &path).map_err(io(&path))?;
                File::open(dir)
                    .and_then(|d| d.sync_all())
                    .map_err(io(dir))?;
                Ok(cluster_id)
            }
            Err(e) => Err(io(&path)(e)),
        }
    }

    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    pub fn state(&self) -> &ClusterState {
        &self.state
    }

    /// Validates `record`, makes it durable, then applies it. See [`MetadataStore::append_all`].
    pub fn append(&mut self, record: MetadataRecord) -> Result<(), StoreError> {
        self.append_all(vec![record])
    }

    /// Validates `records` one after the other (each against the state the previous ones
    /// leave), writes them with one write and one fdatasync, then applies them at the next
    /// offsets. If any record is invalid nothing is written. On an I/O error the state is
    /// unchanged, the caller reports failure, and the store goes offline (sticky; a torn line is
    /// cut at the next start).
    ///
    /// A crash part-way can leave a prefix of the batch durable (a torn line is only ever the
    /// last): the controller's batches are written so that every prefix is a consistent state.
    pub fn append_all(&mut self, records: Vec<MetadataRecord>) -> Result<(), StoreError> {
        if self.offline {
            return Err(StoreError::Offline {
                path: self.path.clone(),
            });
        }
        if records.is_empty() {
            return Ok(());
        }
        let mut next = self.state.clone();
        let mut bytes = Vec::new();
        for record in &records {
            next.replay(next.last_offset + 1, record)?;
            bytes.extend(encode_line(record).map_err(|e| StoreError::Encode(e.to_string()))?);
        }
        let written = self
            .file
            .append(&bytes)
            .and_then(|()| self.file.sync_data());
        if let Err(e) = written {
            self.offline = true;
            tracing::error!(
                path = %self.path.display(),
                error = %e,
                "metadata log write failed; the metadata log is offline until restart"
            );
            return Err(io(&self.path)(e));
        }
        self.state = next;
        Ok(())
    }

    /// Whether an earlier I/O failure took the store offline.
    pub fn is_offline(&self) -> bool {
        self.offline
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::TopicConfigs;
    use crate::BrokerId;
    use sluice_types::ProducerId;

    fn records() -> Vec<MetadataRecord> {
        vec![
            MetadataRecord::RegisterBroker {
                broker_id: BrokerId(1),
                host: "127.0.0.1".into(),
                port: 9092,
                rack: None,
                incarnation_id: None,
                directory_id: None,
                fenced: false,
            },
            MetadataRecord::CreateTopic {
                name: "a".into(),
                topic_id: Uuid::from_u128(10),
                replicas: vec![vec![BrokerId(1)]; 2],
                configs: TopicConfigs::from([("retention.ms".into(), "1000".into())]),
            },
        ]
    }

    #[test]
    fn replays_after_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let cluster_id = {
            let mut store = MetadataStore::open(dir.path(), BrokerId(1)).unwrap();
            for r in records() {
                store.append(r).unwrap();
            }
            store.cluster_id().to_string()
        };
        let store = MetadataStore::open(dir.path(), BrokerId(1)).unwrap();
        assert_eq!(store.cluster_id(), cluster_id);
        let t = store.state().topic("a").unwrap();
        assert_eq!(t.partitions.len(), 2);
        assert_eq!(t.configs["retention.ms"], "1000");
        assert!(matches!(
            MetadataStore::open(dir.path(), BrokerId(2)),
            Err(StoreError::NodeIdMismatch {
                expected: BrokerId(2),
                found: BrokerId(1)
            })
        ));
    }

    #[test]
    fn torn_last_line_is_cut_and_middle_corruption_fails() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut store = MetadataStore::open(dir.path(), BrokerId(1)).unwrap();
            for r in records() {
                store.append(r).unwrap();
            }
        }
        let log = dir.path().join("__cluster_metadata/metadata.log");
        let good = fs::read(&log).unwrap();
        let mut torn = good.clone();
        torn.extend_from_slice(b"{\"type\":\"delete_topic\",\"topic_");
        fs::write(&log, &torn).unwrap();
        let mut store = MetadataStore::open(dir.path(), BrokerId(1)).unwrap();
        assert_eq!(fs::read(&log).unwrap(), good);
        assert!(store.state().topic("a").is_some());
        store
            .append(MetadataRecord::DeleteTopic {
                topic_id: Uuid::from_u128(10),
            })
            .unwrap();
        drop(store);
        assert!(MetadataStore::open(dir.path(), BrokerId(1))
            .unwrap()
            .state()
            .topic("a")
            .is_none());

        let mut bad = b"garbage\n".to_vec();
        bad.extend_from_slice(&good);
        fs::write(&log, &bad).unwrap();
        assert!(matches!(
            MetadataStore::open(dir.path(), BrokerId(1)),
            Err(StoreError::Corrupt { line: 1, .. })
        ));
    }

    /// The record the legacy fixture holds, in order, built with today's types: the fixture
    /// must be byte-for-byte what the release before checksums wrote for them.
    fn legacy_records() -> Vec<MetadataRecord> {
        let a = Uuid::from_u128(10);
        let b = Uuid::from_u128(11);
        vec![
            MetadataRecord::RegisterBroker {
                broker_id: BrokerId(1),
                host: "127.0.0.1".into(),
                port: 9092,
                rack: None,
                incarnation_id: None,
                directory_id: None,
                fenced: false,
            },
            MetadataRecord::CreateTopic {
                name: "orders".into(),
                topic_id: a,
                replicas: vec![vec![BrokerId(1)]; 3],
                configs: TopicConfigs::from([
                    ("cleanup.policy".into(), "compact".into()),
                    ("retention.ms".into(), "1000".into()),
                ]),
            },
            MetadataRecord::CreateTopic {
                name: "gone".into(),
                topic_id: b,
                replicas: vec![vec![BrokerId(1)]],
                configs: TopicConfigs::new(),
            },
            MetadataRecord::CreatePartitions {
                topic_id: a,
                replicas: vec![vec![BrokerId(1)]],
            },
            MetadataRecord::DeleteTopic { topic_id: b },
            MetadataRecord::SetTopicConfigs {
                topic_id: a,
                configs: TopicConfigs::from([("cleanup.policy".into(), "compact".into())]),
            },
            MetadataRecord::SetBrokerConfigs {
                broker_id: None,
                configs: TopicConfigs::from([("log.retention.ms".into(), "5000".into())]),
            },
            MetadataRecord::AllocateProducerIds {
                broker_id: BrokerId(1),
                first_id: ProducerId(0),
                size: 1000,
            },
        ]
    }

    fn copy_fixture(to: &Path) {
        let from = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/legacy-v0/__cluster_metadata");
        let dir = to.join("__cluster_metadata");
        fs::create_dir_all(&dir).unwrap();
        for name in ["meta.properties", "metadata.log"] {
            fs::copy(from.join(name), dir.join(name)).unwrap();
        }
    }

    #[test]
    fn a_data_directory_from_before_checksums_opens_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        copy_fixture(dir.path());
        let log = dir.path().join("__cluster_metadata/metadata.log");
        let old = fs::read(&log).unwrap();
        // The fixture is exactly the old writer's output: one bare JSON line per record.
        let expected: Vec<u8> = legacy_records()
            .iter()
            .flat_map(|r| {
                let mut l = serde_json::to_vec(r).unwrap();
                l.push(b'\n');
                l
            })
            .collect();
        assert_eq!(old, expected);

        let mut store = MetadataStore::open(dir.path(), BrokerId(1)).unwrap();
        assert_eq!(store.cluster_id(), "4f1c2a7e9b3d4e5f8a6b7c8d9e0f1a2b");
        assert_eq!(
            fs::read(&log).unwrap(),
            old,
            "open must not rewrite old records"
        );
        let orders = store.state().topic("orders").unwrap();
        assert_eq!(orders.partitions.len(), 4);
        assert_eq!(orders.configs.len(), 1);
        assert!(store.state().topic("gone").is_none());
        assert_eq!(store.state().next_producer_id, ProducerId(1000));
        assert_eq!(
            store.state().broker_configs[&None]["log.retention.ms"],
            "5000"
        );

        // New records are checksummed and follow the old ones; both replay.
        store
            .append(MetadataRecord::DeleteTopic {
                topic_id: Uuid::from_u128(10),
            })
            .unwrap();
        drop(store);
        let bytes = fs::read(&log).unwrap();
        assert!(bytes.starts_with(&old));
        assert_ne!(bytes[old.len()], b'{', "the new line carries a checksum");
        let store = MetadataStore::open(dir.path(), BrokerId(1)).unwrap();
        assert!(store.state().topic("orders").is_none());
        assert_eq!(store.state().next_producer_id, ProducerId(1000));
    }

    /// Appends through a file whose next write or fsync fails on demand.
    #[derive(Debug, Clone, Default)]
    struct Faults(std::sync::Arc<std::sync::Mutex<FaultPlan>>);

    #[derive(Debug, Default)]
    struct FaultPlan {
        /// Fail the next write after writing this many of its bytes.
        write_fails_after: Option<usize>,
        fail_sync: bool,
    }

    #[derive(Debug)]
    struct FaultyFile {
        file: File,
        faults: Faults,
    }

    impl MetadataFile for FaultyFile {
        fn append(&mut self, buf: &[u8]) -> io::Result<()> {
            let cut = self.faults.0.lock().unwrap().write_fails_after.take();
            match cut {
                Some(n) => {
                    self.file.write_all(&buf[..n.min(buf.len())])?;
                    Err(io::Error::other("injected write failure"))
                }
                None => self.file.write_all(buf),
            }
        }

        fn sync_data(&mut self) -> io::Result<()> {
            if std::mem::take(&mut self.faults.0.lock().unwrap().fail_sync) {
                return Err(io::Error::other("injected fsync failure"));
            }
            self.file.sync_data()
        }
    }

    fn faulty_store(dir: &Path) -> (MetadataStore, Faults) {
        let faults = Faults::default();
        let f = faults.clone();
        let store = MetadataStore::open_with(dir, BrokerId(1), move |file| {
            Box::new(FaultyFile { file, faults: f })
        })
        .unwrap();
        (store, faults)
    }

    fn delete_a() -> MetadataRecord {
        MetadataRecord::DeleteTopic {
            topic_id: Uuid::from_u128(10),
        }
    }

    #[test]
    fn a_failed_fsync_takes_the_store_offline_until_restart() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, faults) = faulty_store(dir.path());
        for r in records() {
            store.append(r).unwrap();
        }
        faults.0.lock().unwrap().fail_sync = true;
        assert!(matches!(
            store.append(delete_a()),
            Err(StoreError::Io { .. })
        ));
        assert!(store.is_offline());
        assert!(store.state().topic("a").is_some(), "not applied");
        // The fault is gone, but the store does not retry: every later append is refused.
        let e = store.append(delete_a()).unwrap_err();
        assert!(matches!(e, StoreError::Offline { .. }));
        assert!(e.to_string().contains("until the broker restarts"), "{e}");
        let e = store
            .append(MetadataRecord::AllocateProducerIds {
                broker_id: BrokerId(1),
                first_id: ProducerId(0),
                size: 10,
            })
            .unwrap_err();
        assert!(matches!(e, StoreError::Offline { .. }));
        drop(store);
        // The written but unsynced line was complete: the restart may keep it (it was never
        // acknowledged, so either outcome is allowed); what matters is that it opens.
        let store = MetadataStore::open(dir.path(), BrokerId(1)).unwrap();
        assert!(!store.is_offline());
        assert_eq!(store.state().next_producer_id, ProducerId(0));
    }

    #[test]
    fn a_failed_write_leaves_a_torn_tail_that_the_restart_cuts() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, faults) = faulty_store(dir.path());
        for r in records() {
            store.append(r).unwrap();
        }
        let log = dir.path().join("__cluster_metadata/metadata.log");
        let good = fs::read(&log).unwrap();
        faults.0.lock().unwrap().write_fails_after = Some(20);
        assert!(matches!(
            store.append(delete_a()),
            Err(StoreError::Io { .. })
        ));
        assert_eq!(fs::read(&log).unwrap().len(), good.len() + 20);
        // Appending behind the torn bytes would put garbage in the middle of the log.
        assert!(matches!(
            store.append(delete_a()),
            Err(StoreError::Offline { .. })
        ));
        assert_eq!(fs::read(&log).unwrap().len(), good.len() + 20);
        drop(store);
        let mut store = MetadataStore::open(dir.path(), BrokerId(1)).unwrap();
        assert_eq!(fs::read(&log).unwrap(), good, "torn tail cut");
        assert!(store.state().topic("a").is_some());
        store.append(delete_a()).unwrap();
        drop(store);
        let store = MetadataStore::open(dir.path(), BrokerId(1)).unwrap();
        assert!(store.state().topic("a").is_none());
    }

    #[test]
    fn corruption_names_the_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut store = MetadataStore::open(dir.path(), BrokerId(1)).unwrap();
            for r in records() {
                store.append(r).unwrap();
            }
            store.append(delete_a()).unwrap();
        }
        let log = dir.path().join("__cluster_metadata/metadata.log");
        let mut bytes = fs::read(&log).unwrap();
        let second = bytes.iter().position(|&b| b == b'\n').unwrap() + 1;
        bytes[second + 40] ^= 0x20;
        fs::write(&log, &bytes).unwrap();
        let e = MetadataStore::open(dir.path(), BrokerId(1)).err().unwrap();
        assert!(matches!(e, StoreError::Corrupt { line: 2, .. }), "{e}");
        let text = e.to_string();
        assert!(
            text.contains("metadata.log") && text.contains("line 2"),
            "{text}"
        );
        assert!(text.contains("checksum mismatch"), "{text}");
        assert_eq!(
            fs::read(&log).unwrap(),
            bytes,
            "a failed start leaves the file alone"
        );
    }
}
