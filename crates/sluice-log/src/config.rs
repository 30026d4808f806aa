//! Per-log configuration (Kafka's topic-level `segment.*` and `index.interval.bytes`).

/// Tuning of one partition log. Defaults are Kafka's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogConfig {
    /// Roll to a new segment before an append would make the active one larger than this.
    /// A single append larger than this still goes into an empty segment. Positions in the
    /// index are u32, so a segment never grows beyond 4 GiB whatever this says.
    pub segment_bytes: u64,
    /// Roll when the active segment's first batch is older than this (by the `now_ms` given to
    /// `append`; after a restart, by the first batch's max timestamp).
    pub segment_ms: u64,
    /// Bytes of log between two sparse index entries.
    pub index_interval_bytes: u32,
    /// Roll when either index file of the active segment would exceed this.
    pub segment_index_bytes: u32,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1 << 30,
            segment_ms: 7 * 24 * 60 * 60 * 1000,
            index_interval_bytes: 4096,
            segment_index_bytes: 10 << 20,
        }
    }
}
