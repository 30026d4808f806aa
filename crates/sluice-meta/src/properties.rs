//! `<data-dir>/__cluster_metadata/meta.properties`: which node of which cluster a data
//! directory belongs to. `node.id` is written at the first start; `cluster.id` once the node
//! learns it from the quorum (a node that joins a formed cluster has none until then). A data
//! directory is never reused by another node or another cluster: start-up compares both.
//!
//! Written atomically (temporary file, fsync, rename, fsync of the directory).

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

use crate::store::StoreError;
use crate::BrokerId;

pub const FILE: &str = "meta.properties";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeProperties {
    pub node_id: BrokerId,
    pub cluster_id: Option<String>,
    /// This data directory's own id, chosen at its first start (Kafka's `directory.id`, KIP-858):
    /// tells a restart of a node from another process claiming its id.
    pub directory_id: Option<uuid::Uuid>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Reads the properties; `None` for a new data directory.
pub fn read(meta_dir: &Path) -> Result<Option<NodeProperties>, StoreError> {
    let path = meta_dir.join(FILE);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(&path)(e)),
    };
    let mut cluster_id = None;
    let mut node_id = None;
    let mut directory_id = None;
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("cluster.id=") {
            cluster_id = Some(v.trim().to_string()).filter(|v| !v.is_empty());
        } else if let Some(v) = line.strip_prefix("directory.id=") {
            directory_id = v.trim().parse().ok();
        } else if let Some(v) = line.strip_prefix("node.id=") {
            node_id = v.trim().parse::<i32>().ok().map(BrokerId);
        }
    }
    let node_id = node_id.ok_or_else(|| StoreError::Corrupt {
        path: path.clone(),
        line: 0,
        reason: "missing node.id".into(),
    })?;
    Ok(Some(NodeProperties {
        node_id,
        cluster_id,
        directory_id,
    }))
}

/// Writes the properties durably.
pub fn write(meta_dir: &Path, props: &NodeProperties) -> Result<(), StoreError> {
    fs::create_dir_all(meta_dir).map_err(io(meta_dir))?;
    let path = meta_dir.join(FILE);
    let tmp = meta_dir.join("meta.properties.tmp");
    let mut text = String::from("version=1\n");
    if let Some(c) = &props.cluster_id {
        text.push_str(&format!("cluster.id={c}\n"));
    }
    text.push_str(&format!("node.id={}\n", props.node_id));
    if let Some(d) = &props.directory_id {
        text.push_str(&format!("directory.id={d}\n"));
    }
    let mut f = File::create(&tmp).map_err(io(&tmp))?;
    f.write_all(text.as_bytes()).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    fs::rename(&tmp, &path).map_err(io(&path))?;
    File::open(meta_dir)
        .and_then(|d| d.sync_all())
        .map_err(io(meta_dir))
}

/// Opens the identity of a data directory for node `node_id`: creates it for a new directory,
/// refuses one that belongs to another node.
pub fn open(meta_dir: &Path, node_id: BrokerId) -> Result<NodeProperties, StoreError> {
    match read(meta_dir)? {
        Some(p) if p.node_id != node_id => Err(StoreError::NodeIdMismatch {
            expected: node_id,
            found: p.node_id,
        }),
        // A directory from before directory ids gets one now.
        Some(p) if p.directory_id.is_none() => {
            let p = NodeProperties {
                directory_id: Some(uuid::Uuid::new_v4()),
                ..p
            };
            write(meta_dir, &p)?;
            Ok(p)
        }
        Some(p) => Ok(p),
        None => {
            let p = NodeProperties {
                node_id,
                cluster_id: None,
                directory_id: Some(uuid::Uuid::new_v4()),
            };
            write(meta_dir, &p)?;
            Ok(p)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_node_check() {
        let dir = tempfile::tempdir().unwrap();
        let p = open(dir.path(), BrokerId(3)).unwrap();
        assert_eq!(p.cluster_id, None);
        assert!(p.directory_id.is_some());
        write(
            dir.path(),
            &NodeProperties {
                cluster_id: Some("abc".into()),
                ..p.clone()
            },
        )
        .unwrap();
        let again = open(dir.path(), BrokerId(3)).unwrap();
        assert_eq!(again.cluster_id.as_deref(), Some("abc"));
        assert_eq!(
            again.directory_id, p.directory_id,
            "the directory keeps its id"
        );
        assert!(matches!(
            open(dir.path(), BrokerId(4)),
            Err(StoreError::NodeIdMismatch { .. })
        ));
    }
}
