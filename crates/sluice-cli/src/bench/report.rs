//! Latency histograms and the final report.

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::table::Table;

/// Latencies are recorded in microseconds, 1 us .. 1 h, 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("static histogram bounds are valid")
}

/// Latency percentiles in milliseconds.
#[derive(Serialize, Default)]
pub struct Latency {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

impl Latency {
    /// Merges per-thread histograms; all zeros when nothing was recorded.
    pub fn merge(hists: &[Histogram<u64>]) -> anyhow::Result<Latency> {
        let mut all = new_histogram();
        for h in hists {
            all.add(h)
                .map_err(|e| anyhow::anyhow!("merging histograms: {e:?}"))?;
        }
        if all.is_empty() {
            return Ok(Latency::default());
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Ok(Latency {
            p50: ms(all.value_at_quantile(0.50)),
            p95: ms(all.value_at_quantile(0.95)),
            p99: ms(all.value_at_quantile(0.99)),
            p999: ms(all.value_at_quantile(0.999)),
            max: ms(all.max()),
            mean: all.mean() / 1000.0,
        })
    }
}

#[derive(Serialize)]
pub struct Report {
    pub mode: &'static str,
    pub topic: String,
    pub partitions: usize,
    pub record_size: usize,
    pub acks: String,
    pub compression: String,
    pub producers: usize,
    pub consumers: usize,
    /// Requested records/s; 0 = unlimited.
    pub target_rate: f64,
    /// Records acknowledged (produce) or consumed (consume, e2e).
    pub messages: u64,
    /// Value bytes of those records.
    pub bytes: u64,
    /// Deliveries that failed.
    pub failed: u64,
    /// e2e: records acknowledged but never consumed.
    pub missing: u64,
    pub seconds: f64,
    pub msgs_per_sec: f64,
    pub mb_per_sec: f64,
    pub latency_kind: &'static str,
    pub latency_ms: Latency,
}

impl Report {
    /// `--json`: one object on the last line of stdout. Otherwise a two-column table.
    pub fn print(&self, json: bool) -> anyhow::Result<()> {
        if json {
            println!("{}", serde_json::to_string(self)?);
            return Ok(());
        }
        let mut t = Table::new(&["METRIC", "VALUE"]);
        let mut row = |k: &str, v: String| t.row(vec![k.to_string(), v]);
        row("mode", self.mode.to_string());
        row(
            "topic",
            format!("{} ({} partitions)", self.topic, self.partitions),
        );
        row("record size", format!("{} B", self.record_size));
        if self.mode != "consume" {
            row(
                "acks / compression",
                format!("{} / {}", self.acks, self.compression),
            );
            row("producers", self.producers.to_string());
        }
        if self.mode != "produce" {
            row("consumers", self.consumers.to_string());
        }
        if self.target_rate > 0.0 {
            row("target rate", format!("{:.0} msg/s", self.target_rate));
        }
        row("messages", self.messages.to_string());
        row("failed", self.failed.to_string());
        if self.mode == "e2e" {
            row("missing", self.missing.to_string());
        }
        row("seconds", format!("{:.3}", self.seconds));
        row("throughput", format!("{:.0} msg/s", self.msgs_per_sec));
        row("throughput", format!("{:.1} MB/s", self.mb_per_sec));
        row("latency", self.latency_kind.to_string());
        let l = &self.latency_ms;
        for (k, v) in [
            ("p50", l.p50),
            ("p95", l.p95),
            ("p99", l.p99),
            ("p99.9", l.p999),
            ("max", l.max),
        ] {
            row(&format!("latency {k}"), format!("{v:.3} ms"));
        }
        t.print();
        Ok(())
    }
}
