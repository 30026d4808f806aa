//! The checkpoint files, in Kafka's text format, and the one atomic way they are all written.
//!
//! Single-offset files of a partition directory:
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
//!
//! List files (`leader-epoch-checkpoint`, `replication-offset-checkpoint`) use Kafka's
//! `CheckpointFile` layout: a version line, a count line, then that many entry lines. They are
//! read with [`read_list`] and written with [`write_atomic`] like the others.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use crate::io::Io;

pub(crate) const FILE_NAME: &str = "recovery-point";
pub(crate) const LOG_START_NAME: &str = "log-start-offset";
pub(crate) const CLEANER_NAME: &str = "cleaner-offset-checkpoint";
/// Every checkpoint file of a partition directory; `<name>.tmp` of each is deleted on open.
pub(crate) const ALL_NAMES: [&str; 4] = [
    FILE_NAME,
    LOG_START_NAME,
    CLEANER_NAME,
    crate::epoch_cache::FILE_NAME,
];

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
    write_atomic(io, dir, name, format!("0\n{offset}\n").as_bytes())
}

/// Atomically replaces `dir/name` with `contents`: `<name>.tmp` is written and fdatasynced,
/// renamed over `name`, then `dir` is fsynced. A crash leaves the old or the new file.
pub(crate) fn write_atomic(io: &dyn Io, dir: &Path, name: &str, contents: &[u8]) -> io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    let file = io.open(&tmp)?;
    io.set_len(&file, 0)?;
    io.write_all_at(&file, contents, 0)?;
    io.sync_data(&file)?;
    io.rename(&tmp, &dir.join(name))?;
    io.sync_dir(dir)
}

/// The text of a list checkpoint: `0`, the number of entries, then one line per entry.
pub(crate) fn format_list(entries: &[String]) -> String {
    let mut text = format!("0\n{}\n", entries.len());
    for entry in entries {
        text.push_str(entry);
        text.push('\n');
    }
    text
}

/// What reading a list checkpoint found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ListFile {
    Missing,
    /// Unreadable, over `max_bytes`, or not in the format; the reason is for the log line.
    Corrupt(String),
    /// The entry lines, as many as the count line said.
    Entries(Vec<String>),
}

/// Reads list checkpoint `dir/name` (at most `max_bytes`; a sane file is far smaller).
pub(crate) fn read_list(dir: &Path, name: &str, max_bytes: u64) -> ListFile {
    let file = match File::open(dir.join(name)) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return ListFile::Missing,
        Err(e) => return ListFile::Corrupt(e.to_string()),
    };
    let mut text = String::new();
    if let Err(e) = file.take(max_bytes + 1).read_to_string(&mut text) {
        return ListFile::Corrupt(e.to_string());
    }
    if text.len() as u64 > max_bytes {
        return ListFile::Corrupt(format!("larger than {max_bytes} bytes"));
    }
    match parse_list(&text) {
        Ok(entries) => ListFile::Entries(entries.into_iter().map(str::to_owned).collect()),
        Err(reason) => ListFile::Corrupt(reason),
    }
}

/// The entry lines of a list checkpoint's text. Stricter than Kafka's reader, which takes a
/// file without a count line as empty: every file here was written whole by [`write_atomic`],
/// so anything short of that is damage.
pub(crate) fn parse_list(text: &str) -> Result<Vec<&str>, String> {
    let mut lines = text.lines();
    match lines.next() {
        Some("0") => {}
        Some(other) => return Err(format!("version line {other:?}, expected \"0\"")),
        None => return Err("empty file".into()),
    }
    let count: usize = lines
        .next()
        .ok_or("no count line")?
        .trim()
        .parse()
        .map_err(|_| "count line is not a number")?;
    let entries: Vec<&str> = lines.collect();
    if entries.len() != count {
        return Err(format!(
            "count line says {count} entries, {} follow",
            entries.len()
        ));
    }
    Ok(entries)
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

    #[test]
    fn list_round_trip_and_garbage() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_list(dir.path(), "l", 1024), ListFile::Missing);
        let entries = vec!["3 10".to_string(), "4 20".to_string()];
        let text = format_list(&entries);
        assert_eq!(text, "0\n2\n3 10\n4 20\n");
        write_atomic(&StdIo, dir.path(), "l", text.as_bytes()).unwrap();
        assert_eq!(read_list(dir.path(), "l", 1024), ListFile::Entries(entries));
        assert!(!dir.path().join("l.tmp").exists());
        assert_eq!(
            read_list(dir.path(), "l", 8),
            ListFile::Corrupt("larger than 8 bytes".into())
        );
        assert_eq!(parse_list("0\n0\n"), Ok(vec![]));
        for garbage in [
            "",
            "0\n",
            "1\n0\n",
            "0\nx\n",
            "0\n2\na\n",
            "0\n1\na\nb\n",
            "0\n-1\n",
        ] {
            assert!(parse_list(garbage).is_err(), "{garbage:?}");
        }
    }
}
