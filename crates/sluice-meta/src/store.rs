//! The durable metadata log: `<data-dir>/__cluster_metadata/` holding
//! - `meta.properties`: `cluster.id` and `node.id` (a data dir belongs to one node of one cluster),
//! - `metadata.log`: one JSON [`MetadataRecord`] per line, appended and fsynced before the change
//!   is applied or acknowledged.
//!
//! Crash analysis: a record is visible only after its line is fsynced. A kill -9 during an append
//! leaves at most one torn last line (no trailing newline or unparsable); replay drops and truncates
//! it. That change was never acknowledged. An unparsable line before the last one is corruption and
//! start-up fails rather than guess.

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use thiserror::Error;
use uuid::Uuid;

use crate::record::MetadataRecord;
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
    #[error("data directory belongs to node {found}, but this broker is node {expected}")]
    NodeIdMismatch { expected: BrokerId, found: BrokerId },
    #[error(transparent)]
    Invalid(#[from] MetaError),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

pub struct MetadataStore {
    /// The appendable log file, positioned at its end.
    file: File,
    path: PathBuf,
    cluster_id: String,
    state: ClusterState,
}

impl MetadataStore {
    /// Opens (or creates) the metadata log under `data_dir` and replays it.
    pub fn open(data_dir: &Path, node_id: BrokerId) -> Result<MetadataStore, StoreError> {
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
        let (state, valid_len) = Self::replay(&file, &path)?;
        let len = file.metadata().map_err(io(&path))?.len();
        if valid_len < len {
            tracing::warn!(
                path = %path.display(),
                dropped_bytes = len - valid_len,
                "truncating a torn last metadata record (never acknowledged)"
            );
            file.set_len(valid_len).map_err(io(&path))?;
            file.sync_all().map_err(io(&path))?;
        }
        file.flush().map_err(io(&path))?;
        Ok(MetadataStore {
            file,
            path,
            cluster_id,
            state,
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
                        found_node = v.trim().parse::<BrokerId>().ok();
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

    /// Replays the log; returns the state and the length of the valid prefix.
    fn replay(file: &File, path: &Path) -> Result<(ClusterState, u64), StoreError> {
        let mut state = ClusterState::default();
        let mut reader = BufReader::new(file);
        let mut valid_len = 0u64;
        let mut line_no = 0usize;
        let mut line = Vec::new();
        loop {
            line.clear();
            let n = reader.read_until(b'\n', &mut line).map_err(io(path))?;
            if n == 0 {
                break;
            }
            line_no += 1;
            let complete = line.last() == Some(&b'\n');
            let parsed = serde_json::from_slice::<MetadataRecord>(&line);
            match parsed {
                Ok(record) if complete => {
                    state.apply(&record).map_err(|e| StoreError::Corrupt {
                        path: path.to_path_buf(),
                        line: line_no,
                        reason: e.to_string(),
                    })?;
                    valid_len += n as u64;
                }
                result => {
                    // Only the last line may be torn; anything after it means real corruption.
                    let mut rest = Vec::new();
                    std::io::Read::read_to_end(&mut reader, &mut rest).map_err(io(path))?;
                    if !rest.is_empty() {
                        return Err(StoreError::Corrupt {
                            path: path.to_path_buf(),
                            line: line_no,
                            reason: match result {
                                Err(e) => e.to_string(),
                                Ok(_) => "missing newline".into(),
                            },
                        });
                    }
                    break;
                }
            }
        }
        Ok((state, valid_len))
    }

    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    pub fn state(&self) -> &ClusterState {
        &self.state
    }

    /// Validates `record`, makes it durable, then applies it. On an I/O error the state is
    /// unchanged (the caller reports failure; a torn line is cut at the next start).
    pub fn append(&mut self, record: MetadataRecord) -> Result<(), StoreError> {
        self.state.validate(&record)?;
        let mut line = serde_json::to_vec(&record).expect("metadata records always serialize");
        line.push(b'\n');
        self.file.write_all(&line).map_err(io(&self.path))?;
        self.file.sync_data().map_err(io(&self.path))?;
        self.state.apply(&record)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::TopicConfigs;

    fn records() -> Vec<MetadataRecord> {
        vec![
            MetadataRecord::RegisterBroker {
                broker_id: 1,
                host: "127.0.0.1".into(),
                port: 9092,
                rack: None,
            },
            MetadataRecord::CreateTopic {
                name: "a".into(),
                topic_id: Uuid::from_u128(10),
                replicas: vec![vec![1]; 2],
                configs: TopicConfigs::from([("retention.ms".into(), "1000".into())]),
            },
        ]
    }

    #[test]
    fn replays_after_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let cluster_id = {
            let mut store = MetadataStore::open(dir.path(), 1).unwrap();
            for r in records() {
                store.append(r).unwrap();
            }
            store.cluster_id().to_string()
        };
        let store = MetadataStore::open(dir.path(), 1).unwrap();
        assert_eq!(store.cluster_id(), cluster_id);
        let t = store.state().topic("a").unwrap();
        assert_eq!(t.partitions.len(), 2);
        assert_eq!(t.configs["retention.ms"], "1000");
        assert!(matches!(
            MetadataStore::open(dir.path(), 2),
            Err(StoreError::NodeIdMismatch {
                expected: 2,
                found: 1
            })
        ));
    }

    #[test]
    fn torn_last_line_is_cut_and_middle_corruption_fails() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut store = MetadataStore::open(dir.path(), 1).unwrap();
            for r in records() {
                store.append(r).unwrap();
            }
        }
        let log = dir.path().join("__cluster_metadata/metadata.log");
        let good = fs::read(&log).unwrap();
        let mut torn = good.clone();
        torn.extend_from_slice(b"{\"type\":\"delete_topic\",\"topic_");
        fs::write(&log, &torn).unwrap();
        let mut store = MetadataStore::open(dir.path(), 1).unwrap();
        assert_eq!(fs::read(&log).unwrap(), good);
        assert!(store.state().topic("a").is_some());
        store
            .append(MetadataRecord::DeleteTopic {
                topic_id: Uuid::from_u128(10),
            })
            .unwrap();
        drop(store);
        assert!(MetadataStore::open(dir.path(), 1)
            .unwrap()
            .state()
            .topic("a")
            .is_none());

        let mut bad = b"garbage\n".to_vec();
        bad.extend_from_slice(&good);
        fs::write(&log, &bad).unwrap();
        assert!(matches!(
            MetadataStore::open(dir.path(), 1),
            Err(StoreError::Corrupt { line: 1, .. })
        ));
    }
}
