//! Work that must not run on a reactor thread.

/// Runs synchronous work that may wait on a disk (a metadata or log fsync, a `pwrite` the
/// kernel throttles, directory removal, reading indexes) or burn CPU (decompression) on the
/// blocking pool, so it never holds a reactor thread that other connections need. A panic in
/// `f` is a bug; it is re-raised in the calling task.
pub async fn off_reactor<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(f).await {
        Ok(v) => v,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}
