//! The `recovery-point` file: an offset below which every segment is known to be fsynced,
//! data and indexes. Unclean recovery starts scanning at the segment containing it.
//!
//! ```text
//! recovery-point (ASCII, like Kafka's checkpoint files):
//!   0\n            format version
//!   <offset>\n     decimal i64
//! ```
//!
//! Written atomically: `recovery-point.tmp` is written and fdatasynced, renamed over the old
//! file, then the directory is fsynced. A crash leaves either the old or the new file (and maybe
//! a stale `.tmp`, which open deletes). A missing or unparsable file means "scan everything".

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use crate::io::Io;

pub(crate) const FILE_NAME: &str = "recovery-point";
pub(crate) const TMP_NAME: &str = "recovery-point.tmp";

/// The stored recovery point, or `None` if absent or unreadable.
pub(crate) fn read(dir: &Path) -> Option<i64> {
    let file = File::open(dir.join(FILE_NAME)).ok()?;
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

pub(crate) fn write(io: &dyn Io, dir: &Path, offset: i64) -> io::Result<()> {
    let tmp = dir.join(TMP_NAME);
    let file = io.open(&tmp)?;
    io.set_len(&file, 0)?;
    io.write_all_at(&file, format!("0\n{offset}\n").as_bytes(), 0)?;
    io.sync_data(&file)?;
    io.rename(&tmp, &dir.join(FILE_NAME))?;
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
