//! The per-partition checkpoint files, each holding one offset:
//! - `recovery-point`: every segment before the one containing it is fsynced, data and
//!   indexes. Unclean recovery starts scanning at the segment containing it.
//! - `log-start-offset`: the log start set by DeleteRecords (it may lie inside a segment).
//! - `cleaner-offset-checkpoint`: every segment whose base offset is below it has been
//!   through a compaction pass (dirty-ratio bookkeeping and the tombstone rule).
//!
//! ```text
//! <name> (ASCII, like Kafka's checkpoint files):
//!   0\n            format version
//!   <offset>\n     decimal i64
//! ```
//!
//! Written atomically: `<name>.tmp` is written and fdatasynced, renamed over the old file, then
//! the directory is fsynced. A crash leaves either the old or the new file (and maybe a stale
//! `.tmp`, which open deletes). A missing or unparsable file means "unknown": scan everything,
//! log start at the first segment, nothing cleaned.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use crate::io::Io;

pub(crate) const FILE_NAME: &str = "recovery-point";
pub(crate) const LOG_START_NAME: &str = "log-start-offset";
pub(crate) const CLEANER_NAME: &str = "cleaner-offset-checkpoint";
/// Every checkpoint file; `<name>.tmp` of each is deleted on open.
pub(crate) const ALL_NAMES: [&str; 3] = [FILE_NAME, LOG_START_NAME, CLEANER_NAME];

/// The stored recovery point, or `None` if absent or unreadable.
pub(crate) fn read(dir: &Path) -> Option<i64> {
    read_named(dir, FILE_NAME)
}

pub(crate) fn write(io: &dyn Io, dir: &Path, offset: i64) -> io::Result<()> {
    write_named(io, dir, FILE_NAME, offset)
}

/// The offset stored in checkpoint file `name`, or `None` if absent or unreadable.
pub(crate) fn read_named(dir: &Path, name: &str) -> Option<i64> {
    let file = File::open(dir.join(name)).ok()?;
    let mut text = String::new();
    // Bounded: a sane file is a few dozen bytes.
    file.take(64).read_to_string(&mut text).ok()?;
    let mut lines = text.lines();
    if lines.next()? != "0" {
        return None;
    }
    let offset: i64 = lines.next()?.trim().parse().ok()?;
    (offset >= 0).then_some(offset)
}

/// Atomically replaces checkpoint file `name` with `offset`.
pub(crate) fn write_named(io: &dyn Io, dir: &Path, name: &str, offset: i64) -> io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    let file = io.open(&tmp)?;
    io.set_len(&file, 0)?;
    io.write_all_at(&file, format!("0\n{offset}\n").as_bytes(), 0)?;
    io.sync_data(&file)?;
    io.rename(&tmp, &dir.join(name))?;
    io.sync_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::StdIo;

    #[test]
    fn round_trip_and_garbage() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()), None);
        write(&StdIo, dir.path(), 1234).unwrap();
        assert_eq!(read(dir.path()), Some(1234));
        write(&StdIo, dir.path(), 7).unwrap();
        assert_eq!(read(dir.path()), Some(7));
        for garbage in ["", "0\n", "1\n5\n", "0\nx\n", "0\n-3\n"] {
            std::fs::write(dir.path().join(FILE_NAME), garbage).unwrap();
            assert_eq!(read(dir.path()), None, "{garbage:?}");
        }
    }
}
