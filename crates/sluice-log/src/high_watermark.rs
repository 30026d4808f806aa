//! The high-watermark checkpoint of a data directory (Kafka's `replication-offset-checkpoint`):
//! one file for every partition in the directory, written by the broker from time to time and
//! read at start-up, so a restarted replica does not expose offsets above what was committed.
//! A pure file helper: no partition log reads or writes it.
//!
//! ```text
//! <data-dir>/replication-offset-checkpoint (ASCII, Kafka's OffsetCheckpointFile):
//!   0\n                              format version
//!   <N>\n                            number of entries
//!   <topic> <partition> <offset>\n   N times, one space between fields, sorted by topic and
//!                                    partition; partition and offset decimal, both >= 0
//! ```
//!
//! Written atomically (`.tmp`, fdatasync, rename, directory fsync): a crash leaves the old or
//! the new file. A missing file reads as an empty map; an unreadable or malformed one too,
//! with a warning (every high watermark is then 0 until the leader tells the follower more,
//! which is safe: it only hides data for a while).

use std::collections::BTreeMap;
use std::io;
use std::path::Path;

use sluice_types::{Offset, PartitionId, TopicPartition};

use crate::checkpoint::{self, ListFile};
use crate::io::Io;

pub const FILE_NAME: &str = "replication-offset-checkpoint";
/// Guards against reading something absurd; ~100 bytes per partition fits a million.
const MAX_FILE_BYTES: u64 = 128 << 20;

/// The high watermarks stored in `data_dir`. Missing or damaged: empty (damage is logged).
pub fn read(data_dir: &Path) -> BTreeMap<TopicPartition, Offset> {
    let lines = match checkpoint::read_list(data_dir, FILE_NAME, MAX_FILE_BYTES) {
        ListFile::Missing => return BTreeMap::new(),
        ListFile::Entries(lines) => lines,
        ListFile::Corrupt(reason) => {
            warn_corrupt(data_dir, &reason);
            return BTreeMap::new();
        }
    };
    match parse_entries(&lines) {
        Ok(map) => map,
        Err(reason) => {
            warn_corrupt(data_dir, &reason);
            BTreeMap::new()
        }
    }
}

fn warn_corrupt(data_dir: &Path, reason: &str) {
    tracing::warn!(
        dir = %data_dir.display(),
        file = FILE_NAME,
        %reason,
        "ignoring an unreadable high-watermark checkpoint; high watermarks start at 0"
    );
}

fn parse_entries(lines: &[String]) -> Result<BTreeMap<TopicPartition, Offset>, String> {
    let mut map = BTreeMap::new();
    for line in lines {
        let mut fields = line.split_whitespace();
        let (Some(topic), Some(partition), Some(offset), None) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            return Err(format!("malformed line {line:?}"));
        };
        let (Ok(partition), Ok(offset)) = (partition.parse::<i32>(), offset.parse::<i64>()) else {
            return Err(format!("malformed line {line:?}"));
        };
        if partition < 0 || offset < 0 {
            return Err(format!("negative partition or offset in {line:?}"));
        }
        let tp = TopicPartition::new(topic, PartitionId(partition));
        if map.insert(tp, Offset(offset)).is_some() {
            return Err(format!("partition listed twice: {line:?}"));
        }
    }
    Ok(map)
}

/// Atomically replaces the checkpoint in `data_dir` with `hws`. A topic name that is empty or
/// holds whitespace, or a negative partition or offset, cannot be stored in this format and
/// is refused (`InvalidInput`) before anything is written.
pub fn write(
    io: &dyn Io,
    data_dir: &Path,
    hws: &BTreeMap<TopicPartition, Offset>,
) -> io::Result<()> {
    let mut lines = Vec::with_capacity(hws.len());
    for (tp, offset) in hws {
        if tp.topic.is_empty() || tp.topic.contains(char::is_whitespace) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("topic name {:?} cannot go into {FILE_NAME}", tp.topic),
            ));
        }
        if tp.partition.0 < 0 || offset.0 < 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("negative partition or offset for {tp}: {offset}"),
            ));
        }
        lines.push(format!("{} {} {}", tp.topic, tp.partition, offset));
    }
    checkpoint::write_atomic(
        io,
        data_dir,
        FILE_NAME,
        checkpoint::format_list(&lines).as_bytes(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::{FaultInjectingIo, StdIo};

    fn tp(topic: &str, p: i32) -> TopicPartition {
        TopicPartition::new(topic, PartitionId(p))
    }

    #[test]
    fn round_trip_in_kafkas_format() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read(dir.path()).is_empty());
        let mut hws = BTreeMap::new();
        hws.insert(tp("orders", 1), Offset(42));
        hws.insert(tp("orders", 0), Offset(0));
        hws.insert(tp("__consumer_offsets", 17), Offset(1 << 40));
        write(&StdIo, dir.path(), &hws).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join(FILE_NAME)).unwrap(),
            "0\n3\n__consumer_offsets 17 1099511627776\norders 0 0\norders 1 42\n"
        );
        assert_eq!(read(dir.path()), hws);
        assert!(!dir.path().join(format!("{FILE_NAME}.tmp")).exists());
        write(&StdIo, dir.path(), &BTreeMap::new()).unwrap();
        assert!(read(dir.path()).is_empty());
        // Kafka's reader splits on any whitespace; so does this one.
        std::fs::write(dir.path().join(FILE_NAME), "0\n1\nt\t3   9\n").unwrap();
        assert_eq!(read(dir.path()), BTreeMap::from([(tp("t", 3), Offset(9))]));
    }

    #[test]
    fn damaged_files_read_as_empty() {
        let dir = tempfile::tempdir().unwrap();
        for garbage in [
            "",
            "0\n",
            "0\n2\nt 0 5\n",
            "0\n1\nt 0\n",
            "0\n1\nt 0 5 6\n",
            "0\n1\nt x 5\n",
            "0\n1\nt 0 -5\n",
            "0\n2\nt 0 5\nt 0 6\n",
            "1\n1\nt 0 5\n",
            "\u{0}\u{1}garbage",
        ] {
            std::fs::write(dir.path().join(FILE_NAME), garbage).unwrap();
            assert!(read(dir.path()).is_empty(), "{garbage:?}");
        }
    }

    #[test]
    fn unstorable_entries_and_failed_writes_keep_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let good = BTreeMap::from([(tp("t", 0), Offset(7))]);
        write(&StdIo, dir.path(), &good).unwrap();
        for bad in [
            BTreeMap::from([(tp("has space", 0), Offset(1))]),
            BTreeMap::from([(tp("", 0), Offset(1))]),
            BTreeMap::from([(tp("t", 0), Offset(-1))]),
        ] {
            let e = write(&StdIo, dir.path(), &bad).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        }
        let io = FaultInjectingIo::new();
        io.fail_syncs(true);
        let newer = BTreeMap::from([(tp("t", 0), Offset(9))]);
        assert!(write(&io, dir.path(), &newer).is_err());
        assert_eq!(read(dir.path()), good, "the rename never happened");
    }
}
