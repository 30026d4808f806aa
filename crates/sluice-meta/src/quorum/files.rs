//! Small durable files of the quorum (vote, committed, purged, snapshot): written whole and
//! atomically, each a checksummed line (the metadata log's line format, [`crate::replay`]).
//!
//! Crash analysis: a file is replaced by writing `<name>.tmp`, fsyncing it, renaming it over
//! `<name>` and fsyncing the directory; a crash leaves either the old or the new file whole,
//! plus possibly a stale `.tmp` that the next open removes. So any damage found in the named
//! file is corruption (never a torn write), and fails the open.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::error::{io_at, RaftStoreError};
use crate::replay::{checked_json, frame_line};

/// Encodes `value` as one checksummed line.
pub(crate) fn encode<T: Serialize>(
    what: &'static str,
    value: &T,
) -> Result<Vec<u8>, RaftStoreError> {
    let json =
        serde_json::to_vec(value).map_err(|source| RaftStoreError::Encode { what, source })?;
    Ok(frame_line(&json))
}

/// Replaces `dir/name` with `bytes`, durably, through `dir/<name>.tmp`.
pub(crate) fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), RaftStoreError> {
    let tmp = dir.join(format!("{name}.tmp"));
    write_synced(&tmp, bytes)?;
    let path = dir.join(name);
    fs::rename(&tmp, &path).map_err(io_at(&path))?;
    sync_dir(dir)
}

/// Creates (or replaces) `path` with `bytes` and fsyncs it.
pub(crate) fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), RaftStoreError> {
    let mut f = File::create(path).map_err(io_at(path))?;
    f.write_all(bytes).map_err(io_at(path))?;
    f.sync_all().map_err(io_at(path))
}

pub(crate) fn sync_dir(dir: &Path) -> Result<(), RaftStoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_at(dir))
}

/// Removes `path` if it exists.
pub(crate) fn remove_stale(path: &Path) -> Result<(), RaftStoreError> {
    match fs::remove_file(path) {
        Ok(()) => {
            tracing::info!(path = %path.display(), "removed a file left by an interrupted write");
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_at(path)(e)),
    }
}

/// Reads the one-line file `dir/name`: `None` if it does not exist.
pub(crate) fn read_value<T: DeserializeOwned>(
    dir: &Path,
    name: &str,
) -> Result<Option<T>, RaftStoreError> {
    let path = dir.join(name);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_at(&path)(e)),
    };
    let corrupt = |reason: String| RaftStoreError::Corrupt {
        path: path.clone(),
        line: 1,
        offset: 0,
        reason,
    };
    let line = bytes
        .strip_suffix(b"\n")
        .filter(|l| !l.contains(&b'\n'))
        .ok_or_else(|| corrupt("not exactly one newline-terminated line".into()))?;
    let json = checked_json(line).map_err(corrupt)?;
    serde_json::from_slice(json)
        .map(Some)
        .map_err(|e| corrupt(format!("valid checksum but cannot be decoded: {e}")))
}
