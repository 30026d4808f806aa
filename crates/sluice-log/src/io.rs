//! The narrow I/O seam: every write, truncation, fsync, create, rename and delete the log does
//! goes through [`Io`], so tests can inject an fsync failure or a torn write.
//!
//! Reads are plain `pread`s on shared file handles ([`read_exact_at`]); they do not change the
//! disk, so they need no fault injection.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

/// Disk operations of the log. Implementations must be usable from many threads at once.
pub trait Io: Send + Sync + fmt::Debug {
    /// Opens `path` for reading and writing, creating it if missing (never truncating).
    fn open(&self, path: &Path) -> io::Result<File>;
    /// Writes all of `buf` at `pos` (pwrite).
    fn write_all_at(&self, file: &File, buf: &[u8], pos: u64) -> io::Result<()>;
    /// Truncates or extends the file.
    fn set_len(&self, file: &File, len: u64) -> io::Result<()>;
    /// fdatasync: data and the metadata needed to read it (the size) are on stable storage.
    fn sync_data(&self, file: &File) -> io::Result<()>;
    /// fsync of a directory, making created, renamed and removed entries durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    fn remove_dir_all(&self, dir: &Path) -> io::Result<()>;
}

/// The real thing: `std::fs`.
#[derive(Debug, Default, Clone, Copy)]
pub struct StdIo;

impl Io for StdIo {
    fn open(&self, path: &Path) -> io::Result<File> {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
    }

    fn write_all_at(&self, file: &File, buf: &[u8], pos: u64) -> io::Result<()> {
        file.write_all_at(buf, pos)
    }

    fn set_len(&self, file: &File, len: u64) -> io::Result<()> {
        file.set_len(len)
    }

    fn sync_data(&self, file: &File) -> io::Result<()> {
        file.sync_data()
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        fs::create_dir_all(dir)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        match fs::remove_file(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }

    fn remove_dir_all(&self, dir: &Path) -> io::Result<()> {
        fs::remove_dir_all(dir)
    }
}

/// pread of exactly `buf.len()` bytes at `pos`; a short file is `UnexpectedEof`.
pub fn read_exact_at(file: &File, buf: &mut [u8], pos: u64) -> io::Result<()> {
    file.read_exact_at(buf, pos)
}

/// pread of exactly `len` bytes at `pos` into a new buffer that is not zero-filled first: the
/// kernel writes into the vector's spare capacity and only the bytes it reports become part of
/// the vector (`rustix::buffer::spare_capacity`: no unsafe code, no uninitialised bytes ever
/// visible). This is the fetch path's read; zero-filling would be one more pass over every byte
/// served. A short file is `UnexpectedEof`.
pub fn read_vec_at(file: &File, len: usize, mut pos: u64) -> io::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(len);
    while buf.len() < len {
        // If the allocation has room beyond `len`, the read may fill some of it: cut below.
        match rustix::io::pread(file, rustix::buffer::spare_capacity(&mut buf), pos) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => pos += n as u64,
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    buf.truncate(len);
    Ok(buf)
}

/// [`StdIo`] with switchable faults, for tests of this crate and of the broker.
#[derive(Debug, Default)]
pub struct FaultInjectingIo {
    inner: StdIo,
    fail_syncs: AtomicBool,
    fail_writes: AtomicBool,
    /// Some(n): the next write stores only its first n bytes and then fails, like a crash or a
    /// full disk in the middle of a pwrite.
    torn_write: Mutex<Option<usize>>,
    syncs: AtomicU64,
}

impl FaultInjectingIo {
    pub fn new() -> FaultInjectingIo {
        FaultInjectingIo::default()
    }

    /// While on, every `sync_data`/`sync_dir` fails with an I/O error.
    pub fn fail_syncs(&self, on: bool) {
        self.fail_syncs.store(on, Ordering::SeqCst);
    }

    /// While on, every write and truncation fails without touching the file.
    pub fn fail_writes(&self, on: bool) {
        self.fail_writes.store(on, Ordering::SeqCst);
    }

    /// The next `write_all_at` writes only `keep` bytes, then fails.
    pub fn tear_next_write(&self, keep: usize) {
        *self.torn_write.lock().unwrap_or_else(|e| e.into_inner()) = Some(keep);
    }

    /// Successful `sync_data` calls so far (to observe group commit sharing fsyncs).
    pub fn sync_count(&self) -> u64 {
        self.syncs.load(Ordering::SeqCst)
    }

    fn injected(what: &str) -> io::Error {
        io::Error::other(format!("injected {what} failure"))
    }
}

impl Io for FaultInjectingIo {
    fn open(&self, path: &Path) -> io::Result<File> {
        self.inner.open(path)
    }

    fn write_all_at(&self, file: &File, buf: &[u8], pos: u64) -> io::Result<()> {
        if self.fail_writes.load(Ordering::SeqCst) {
            return Err(Self::injected("write"));
        }
        let torn = self
            .torn_write
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        match torn {
            Some(keep) => {
                self.inner
                    .write_all_at(file, &buf[..keep.min(buf.len())], pos)?;
                Err(Self::injected("torn write"))
            }
            None => self.inner.write_all_at(file, buf, pos),
        }
    }

    fn set_len(&self, file: &File, len: u64) -> io::Result<()> {
        if self.fail_writes.load(Ordering::SeqCst) {
            return Err(Self::injected("truncate"));
        }
        self.inner.set_len(file, len)
    }

    fn sync_data(&self, file: &File) -> io::Result<()> {
        if self.fail_syncs.load(Ordering::SeqCst) {
            return Err(Self::injected("fsync"));
        }
        self.inner.sync_data(file)?;
        self.syncs.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        if self.fail_syncs.load(Ordering::SeqCst) {
            return Err(Self::injected("directory fsync"));
        }
        self.inner.sync_dir(dir)
    }

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.inner.create_dir_all(dir)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.inner.rename(from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.inner.remove_file(path)
    }

    fn remove_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.inner.remove_dir_all(dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_vec_at_reads_exactly_the_range() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        fs::write(&path, &data).unwrap();
        let file = File::open(&path).unwrap();
        for (pos, len) in [(0, 0), (0, 1), (7, 65_536), (0, 100_000), (99_999, 1)] {
            let got = read_vec_at(&file, len, pos as u64).unwrap();
            assert_eq!(got, &data[pos..pos + len], "{pos} {len}");
        }
        let short = read_vec_at(&file, 10, 99_995).unwrap_err();
        assert_eq!(short.kind(), io::ErrorKind::UnexpectedEof);
    }
}
