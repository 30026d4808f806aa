//! The checker: a pure function from a [`History`](crate::History)'s entries and the final log of
//! every partition (read from offset 0 after everything healed) to a [`Report`].
//!
//! Per partition it runs each [`Check`]; a check passes when it finds no anomaly. What each
//! one holds against the broker:
//!
//! - [`Check::Lost`]: a produce acknowledged `Ok` whose value is not in the final log.
//! - [`Check::Duplicated`]: a value at two offsets of the final log, sent by an idempotent
//!   producer. From a non-idempotent producer that is a legitimate retry: reported as a note
//!   ("duplicate (non-idempotent retry)"), not an anomaly. So is an idempotent one whose copies
//!   the run read under different producer ids or epochs ([`crate::writers`]): librdkafka
//!   re-sends under a new epoch after a message timeout, and no broker can tell.
//! - [`Check::Phantom`]: a value in the final log that no producer ever sent.
//! - [`Check::Inconsistent`]: one offset holding different values for different observers (the
//!   final log, each reader, a producer's acknowledged offset).
//! - [`Check::Skipped`]: within one reader session, two consecutive reads of a partition with an
//!   offset between them that the final log holds (or, after a `Seek`, a first read beyond an
//!   offset the log holds at or after the seek).
//! - [`Check::Backwards`]: within one reader session, a read at or before the previous one.
//! - [`Check::CommitBackwards`]: a group's successful commits of a partition, in ack order,
//!   going down.
//! - [`Check::Vanished`]: a record a reader saw that is not in the final log (whether or not it
//!   was ever acknowledged: a read is a promise that the record is committed).
//!
//! Each anomaly names the op ids that show it, so the saved history can be searched for them.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::{self, Write as _};

use crate::history::{Acks, CommitOutcome, Entry, Offset, Op, Partition, ProduceOutcome};
use crate::writers::{Writer, Writers};

/// What every partition held at the end: `(offset, value)` in offset order.
pub type FinalLog = BTreeMap<Partition, Vec<(Offset, String)>>;

/// Anomalies printed per (partition, check); the rest are counted.
const SHOWN: usize = 10;

/// One property checked per partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Check {
    Lost,
    Duplicated,
    Phantom,
    Inconsistent,
    Skipped,
    Backwards,
    CommitBackwards,
    Vanished,
}

impl Check {
    pub const ALL: [Check; 8] = [
        Check::Lost,
        Check::Duplicated,
        Check::Phantom,
        Check::Inconsistent,
        Check::Skipped,
        Check::Backwards,
        Check::CommitBackwards,
        Check::Vanished,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Check::Lost => "acknowledged write lost",
            Check::Duplicated => "duplicate (idempotent producer)",
            Check::Phantom => "value never produced",
            Check::Inconsistent => "offset holds different values",
            Check::Skipped => "reader skipped offsets",
            Check::Backwards => "reader went backwards",
            Check::CommitBackwards => "committed offset went backwards",
            Check::Vanished => "read record vanished",
        }
    }
}

/// One violation, with the evidence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Anomaly {
    pub partition: Partition,
    pub check: Check,
    /// Op ids of the history entries that show it.
    pub ops: Vec<u64>,
    /// Human-readable evidence, one or more lines.
    pub detail: String,
}

/// Counts of what the history holds, to tell a meaningful run from an idle one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub produces: usize,
    pub acked: usize,
    pub failed: usize,
    pub unknown: usize,
    pub reads: usize,
    pub commits: usize,
    pub commits_ok: usize,
    pub faults: usize,
    pub final_records: usize,
    /// From each heal to the next acknowledged produce: the median and the longest, in ms
    /// (`None` without a heal followed by an ack).
    pub recovery_median_ms: Option<u64>,
    pub recovery_max_ms: Option<u64>,
}

/// The checker's verdict.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub partitions: Vec<Partition>,
    pub anomalies: Vec<Anomaly>,
    /// Legitimate but notable: duplicates from non-idempotent retries.
    pub notes: Vec<String>,
    pub stats: Stats,
    /// Records read per reader: a reader that read nothing shows a stalled client or group.
    pub reads_by_reader: BTreeMap<String, usize>,
}

impl Report {
    /// Failed (partition, check) pairs.
    pub fn failed(&self) -> usize {
        let failed: BTreeSet<(Partition, Check)> = self
            .anomalies
            .iter()
            .map(|a| (a.partition, a.check))
            .collect();
        failed.len()
    }

    /// Passed (partition, check) pairs.
    pub fn passed(&self) -> usize {
        self.partitions.len() * Check::ALL.len() - self.failed()
    }

    pub fn is_clean(&self) -> bool {
        self.anomalies.is_empty()
    }

    /// Anomalies of one kind.
    pub fn of(&self, check: Check) -> impl Iterator<Item = &Anomaly> {
        self.anomalies.iter().filter(move |a| a.check == check)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.stats;
        writeln!(
            f,
            "history: {} produces ({} acked, {} failed, {} unknown), {} reads, {} commits ({} ok), \
             {} faults; final log: {} records in {} partitions",
            s.produces,
            s.acked,
            s.failed,
            s.unknown,
            s.reads,
            s.commits,
            s.commits_ok,
            s.faults,
            s.final_records,
            self.partitions.len()
        )?;
        if let (Some(median), Some(max)) = (s.recovery_median_ms, s.recovery_max_ms) {
            writeln!(
                f,
                "recovery (heal to the next acknowledged write): median {median} ms, max {max} ms"
            )?;
        }
        let readers: Vec<String> = self
            .reads_by_reader
            .iter()
            .map(|(r, n)| format!("{r} {n}"))
            .collect();
        writeln!(f, "reads by reader: {}", readers.join(", "))?;
        for &p in &self.partitions {
            writeln!(f, "partition {p}:")?;
            for check in Check::ALL {
                let found: Vec<&Anomaly> = self
                    .anomalies
                    .iter()
                    .filter(|a| a.partition == p && a.check == check)
                    .collect();
                if found.is_empty() {
                    writeln!(f, "  pass  {}", check.name())?;
                    continue;
                }
                writeln!(f, "  FAIL  {} ({})", check.name(), found.len())?;
                for a in found.iter().take(SHOWN) {
                    for line in a.detail.lines() {
                        writeln!(f, "        {line}")?;
                    }
                }
                if found.len() > SHOWN {
                    writeln!(f, "        ... and {} more", found.len() - SHOWN)?;
                }
            }
        }
        if !self.notes.is_empty() {
            writeln!(f, "notes ({}):", self.notes.len())?;
            for n in self.notes.iter().take(SHOWN) {
                writeln!(f, "  {n}")?;
            }
            if self.notes.len() > SHOWN {
                writeln!(f, "  ... and {} more", self.notes.len() - SHOWN)?;
            }
        }
        write!(f, "{} passed, {} failed", self.passed(), self.failed())
    }
}

/// A produce as the checker needs it.
struct Sent<'a> {
    id: u64,
    at_us: u64,
    producer: &'a str,
    idempotent: bool,
    outcome: &'a ProduceOutcome,
}

/// Checks `history` (entries in id order) against `final_log`.
pub fn check(history: &[Entry], final_log: &FinalLog) -> Report {
    check_with_writers(history, final_log, &Writers::new())
}

/// How long before a duplicate's send a timeout of the same producer explains its epoch bump.
const TIMEOUT_EXPLAINS_US: u64 = 60_000_000;

/// [`check`], knowing who wrote each record of the final log ([`crate::writers`]). A value an
/// idempotent producer has at two offsets, written under different producer epochs (or ids),
/// within a minute after that producer timed out a message, is librdkafka re-sending after
/// the epoch bump a message timeout makes: no broker can detect it, so it is a note. Under the
/// same epoch, with no timeout to explain the bump (the broker's answers caused it, e.g. a
/// sequence error from a new leader), or with the writers unknown, it is an anomaly.
pub fn check_with_writers(history: &[Entry], final_log: &FinalLog, writers: &Writers) -> Report {
    let acks_one_may_be_lost = history
        .iter()
        .any(|e| matches!(e.op, Op::Topic { replication_factor } if replication_factor > 1));
    let mut partitions: BTreeSet<Partition> = final_log.keys().copied().collect();
    let mut stats = Stats::default();
    let mut reads_by_reader = BTreeMap::new();
    // The last heal not yet followed by an ack, and each heal's time to the next ack (µs).
    let mut healed_at: Option<u64> = None;
    let mut recoveries: Vec<u64> = Vec::new();
    // value -> every produce of it (one, unless the workload reused a value).
    let mut sent: HashMap<(Partition, &str), Vec<Sent<'_>>> = HashMap::new();
    // producer -> (op id, time) of each message it timed out (librdkafka's MessageTimedOut).
    let mut timeouts: HashMap<&str, Vec<(u64, u64)>> = HashMap::new();
    for e in history {
        match &e.op {
            Op::Produce {
                producer,
                idempotent,
                partition,
                value,
                outcome,
                ..
            } => {
                partitions.insert(*partition);
                stats.produces += 1;
                match outcome {
                    ProduceOutcome::Ok { .. } => {
                        stats.acked += 1;
                        if let Some(h) = healed_at.take() {
                            recoveries.push(e.at_us.saturating_sub(h));
                        }
                    }
                    ProduceOutcome::Failed { .. } => stats.failed += 1,
                    ProduceOutcome::Unknown { error } => {
                        stats.unknown += 1;
                        if error.contains("MessageTimedOut") {
                            timeouts.entry(producer).or_default().push((e.id, e.at_us));
                        }
                    }
                }
                sent.entry((*partition, value)).or_default().push(Sent {
                    id: e.id,
                    at_us: e.at_us,
                    producer,
                    idempotent: *idempotent,
                    outcome,
                });
            }
            Op::Read {
                partition, reader, ..
            } => {
                partitions.insert(*partition);
                stats.reads += 1;
                *reads_by_reader.entry(reader.clone()).or_insert(0) += 1;
            }
            Op::Commit {
                partition, outcome, ..
            } => {
                partitions.insert(*partition);
                stats.commits += 1;
                if *outcome == CommitOutcome::Ok {
                    stats.commits_ok += 1;
                }
            }
            Op::Fault { .. } => stats.faults += 1,
            Op::Heal { .. } => healed_at = Some(e.at_us),
            Op::Seek { .. } | Op::Topic { .. } => {}
        }
    }
    stats.final_records = final_log.values().map(Vec::len).sum();
    recoveries.sort_unstable();
    stats.recovery_median_ms = recoveries.get(recoveries.len() / 2).map(|us| us / 1000);
    stats.recovery_max_ms = recoveries.last().map(|us| us / 1000);

    let mut report = Report {
        partitions: partitions.iter().copied().collect(),
        stats,
        reads_by_reader,
        ..Report::default()
    };
    let empty = Vec::new();
    for &p in &partitions {
        let log = final_log.get(&p).unwrap_or(&empty);
        let mut c = PartitionCheck {
            p,
            log,
            writers: writers.get(&p),
            timeouts: &timeouts,
            sent: &sent,
            by_value: HashMap::new(),
            by_offset: log.iter().map(|(o, v)| (*o, v.as_str())).collect(),
            acks_one_may_be_lost,
            report: &mut report,
        };
        for (o, v) in log {
            c.by_value.entry(v.as_str()).or_default().push(*o);
        }
        c.lost(history);
        c.duplicated_and_phantom();
        c.inconsistent(history);
        c.reader_order(history);
        c.commits(history);
        c.vanished(history);
    }
    report
}

/// The checks of one partition, over indexes built once.
struct PartitionCheck<'a, 'r> {
    p: Partition,
    log: &'a [(Offset, String)],
    /// Offset -> the producer id and epoch of its batch, when the run read them.
    writers: Option<&'a BTreeMap<Offset, Writer>>,
    /// Producer -> (op id, time) of each message it timed out.
    timeouts: &'a HashMap<&'a str, Vec<(u64, u64)>>,
    sent: &'a HashMap<(Partition, &'a str), Vec<Sent<'a>>>,
    /// Final-log value -> its offsets.
    by_value: HashMap<&'a str, Vec<Offset>>,
    /// Final-log offset -> its value.
    by_offset: BTreeMap<Offset, &'a str>,
    /// The topic is replicated ([`Op::Topic`]): an `acks=1` write may be lost in a failover.
    acks_one_may_be_lost: bool,
    report: &'r mut Report,
}

impl<'a> PartitionCheck<'a, '_> {
    fn anomaly(&mut self, check: Check, ops: Vec<u64>, detail: String) {
        self.report.anomalies.push(Anomaly {
            partition: self.p,
            check,
            ops,
            detail,
        });
    }

    fn describe_final(&self) -> String {
        match (self.log.first(), self.log.last()) {
            (Some((a, _)), Some((b, _))) => {
                format!("{} records, offsets {a}..={b}", self.log.len())
            }
            _ => "empty".to_string(),
        }
    }

    fn lost(&mut self, history: &'a [Entry]) {
        for e in history {
            let Op::Produce {
                producer,
                idempotent,
                acks,
                partition,
                value,
                outcome: ProduceOutcome::Ok { offset },
            } = &e.op
            else {
                continue;
            };
            if *partition != self.p || self.by_value.contains_key(value.as_str()) {
                continue;
            }
            let at = match self.by_offset.get(offset) {
                Some(v) => format!("holds {v:?}"),
                None => "is absent".to_string(),
            };
            if self.acks_one_may_be_lost && *acks == Acks::One {
                self.report.notes.push(format!(
                    "partition {}: acks=1 write lost in a leader failover (allowed: only the \
                     leader had it): {value:?} by {producer}, op #{}, offset {offset} {at}",
                    self.p, e.id
                ));
                continue;
            }
            let detail = format!(
                "op #{} produce {value:?} by {producer} (idempotent={idempotent}, acks={}) \
                 acknowledged at offset {offset}; not in the final log ({}; offset {offset} {at})",
                e.id,
                acks.config_value(),
                self.describe_final()
            );
            self.anomaly(Check::Lost, vec![e.id], detail);
        }
    }

    fn duplicated_and_phantom(&mut self) {
        let mut by_value: Vec<(&str, Vec<Offset>)> =
            self.by_value.iter().map(|(v, o)| (*v, o.clone())).collect();
        by_value.sort_by_key(|(_, offsets)| offsets[0]);
        for (value, offsets) in by_value {
            let Some(sends) = self.sent.get(&(self.p, value)) else {
                let detail = format!(
                    "final log offset {} holds {value:?}, which no producer sent to partition {}",
                    offsets[0], self.p
                );
                self.anomaly(Check::Phantom, Vec::new(), detail);
                continue;
            };
            if offsets.len() < 2 {
                continue;
            }
            let s = &sends[0];
            let detail = format!(
                "{value:?} at offsets {offsets:?} of the final log; sent by {} in op #{} ({})",
                s.producer,
                s.id,
                describe_outcome(s.outcome)
            );
            let epochs: Option<BTreeSet<Writer>> = self
                .writers
                .and_then(|w| offsets.iter().map(|o| w.get(o).copied()).collect());
            let across_epochs = epochs.as_ref().is_some_and(|e| e.len() == offsets.len());
            let last = sends.last().unwrap_or(s);
            let timed_out_before = self.timeouts.get(s.producer).is_some_and(|ts| {
                ts.iter().any(|(id, at)| {
                    *id < last.id && last.at_us.saturating_sub(*at) <= TIMEOUT_EXPLAINS_US
                })
            });
            let epochs: Vec<String> = epochs
                .iter()
                .flatten()
                .map(|w| format!("{}/{}", w.producer_id, w.producer_epoch))
                .collect();
            if s.idempotent && across_epochs && timed_out_before {
                self.report.notes.push(format!(
                    "partition {}: duplicate across producer epochs ({}) after a message \
                     timeout (librdkafka re-sends under a new epoch, which no broker can \
                     detect): {detail}",
                    self.p,
                    epochs.join(", ")
                ));
            } else if s.idempotent {
                let detail = if epochs.is_empty() {
                    detail
                } else if across_epochs {
                    format!(
                        "{detail}; written under producer epochs {} with no message timeout \
                         before: the bump came from the broker's answers",
                        epochs.join(", ")
                    )
                } else {
                    format!(
                        "{detail}; written under producer epochs {}",
                        epochs.join(", ")
                    )
                };
                self.anomaly(Check::Duplicated, vec![s.id], detail);
            } else {
                self.report.notes.push(format!(
                    "partition {}: duplicate (non-idempotent retry): {detail}",
                    self.p
                ));
            }
        }
    }

    fn inconsistent(&mut self, history: &'a [Entry]) {
        // offset -> (value -> who saw it there)
        let mut claims: BTreeMap<Offset, BTreeMap<&str, Vec<String>>> = BTreeMap::new();
        for (o, v) in self.log {
            claims
                .entry(*o)
                .or_default()
                .entry(v)
                .or_default()
                .push("final log".to_string());
        }
        let mut ops_at: BTreeMap<Offset, Vec<u64>> = BTreeMap::new();
        for e in history {
            let (offset, value, who) = match &e.op {
                Op::Read {
                    reader,
                    session,
                    partition,
                    offset,
                    value,
                } if *partition == self.p => (
                    *offset,
                    value,
                    format!("op #{} read by {reader} (session {session})", e.id),
                ),
                // An acks=1 write lost in a failover (noted by `lost`) claims nothing.
                Op::Produce {
                    acks: Acks::One,
                    partition,
                    value,
                    ..
                } if *partition == self.p
                    && self.acks_one_may_be_lost
                    && !self.by_value.contains_key(value.as_str()) =>
                {
                    continue
                }
                // An offset librdkafka did not know (-1001) is no claim about any offset.
                Op::Produce {
                    producer,
                    partition,
                    value,
                    outcome: ProduceOutcome::Ok { offset },
                    ..
                } if *partition == self.p && *offset >= 0 => {
                    (*offset, value, format!("op #{} acked to {producer}", e.id))
                }
                _ => continue,
            };
            claims
                .entry(offset)
                .or_default()
                .entry(value)
                .or_default()
                .push(who);
            ops_at.entry(offset).or_default().push(e.id);
        }
        for (offset, values) in claims {
            if values.len() < 2 {
                continue;
            }
            let mut detail = format!("offset {offset} holds {} different values:", values.len());
            for (value, who) in &values {
                let shown: Vec<&str> = who.iter().take(4).map(String::as_str).collect();
                let more = who.len().saturating_sub(shown.len());
                let _ = write!(detail, "\n  {value:?}: {}", shown.join(", "));
                if more > 0 {
                    let _ = write!(detail, " and {more} more");
                }
            }
            let ops = ops_at.remove(&offset).unwrap_or_default();
            self.anomaly(Check::Inconsistent, ops, detail);
        }
    }

    fn reader_order(&mut self, history: &'a [Entry]) {
        // (reader, session) -> where it is in this partition: the op that put it there, the
        // offset below which it owes nothing, and how to describe that op.
        let mut last: HashMap<(&str, u64), (u64, Offset, String)> = HashMap::new();
        for e in history {
            let (reader, session, partition, offset, read) = match &e.op {
                Op::Read {
                    reader,
                    session,
                    partition,
                    offset,
                    ..
                } => (reader, session, partition, *offset, true),
                Op::Seek {
                    reader,
                    session,
                    partition,
                    offset,
                } => (reader, session, partition, *offset, false),
                _ => continue,
            };
            if *partition != self.p {
                continue;
            }
            let key = (reader.as_str(), *session);
            if !read {
                let what = format!("op #{} started at offset {offset}", e.id);
                last.insert(key, (e.id, offset - 1, what));
                continue;
            }
            if let Some((prev_id, prev, what)) = last.get(&key) {
                let prev_id = *prev_id;
                if offset <= *prev {
                    let detail = format!(
                        "{reader} session {session}: {what}, then op #{} read offset {offset}",
                        e.id
                    );
                    self.anomaly(Check::Backwards, vec![prev_id, e.id], detail);
                } else {
                    let skipped: Vec<Offset> = self
                        .by_offset
                        .range(prev + 1..offset)
                        .map(|(o, _)| *o)
                        .collect();
                    if !skipped.is_empty() {
                        let detail = format!(
                            "{reader} session {session}: {what}, then op #{} read offset \
                             {offset}, skipping {} offset(s) the final log holds ({})",
                            e.id,
                            skipped.len(),
                            summarize(&skipped)
                        );
                        self.anomaly(Check::Skipped, vec![prev_id, e.id], detail);
                    }
                }
            }
            let what = format!("op #{} read offset {offset}", e.id);
            last.insert(key, (e.id, offset, what));
        }
    }

    fn commits(&mut self, history: &'a [Entry]) {
        // group -> highest successful commit so far: (op id, offset)
        let mut high: HashMap<&str, (u64, Offset)> = HashMap::new();
        for e in history {
            let Op::Commit {
                group,
                partition,
                offset,
                outcome: CommitOutcome::Ok,
            } = &e.op
            else {
                continue;
            };
            if *partition != self.p {
                continue;
            }
            match high.get(group.as_str()) {
                Some(&(prev_id, prev)) if *offset < prev => {
                    let detail = format!(
                        "group {group}: op #{prev_id} committed offset {prev}, then op #{} \
                         committed {offset}",
                        e.id
                    );
                    self.anomaly(Check::CommitBackwards, vec![prev_id, e.id], detail);
                }
                _ => {
                    high.insert(group, (e.id, *offset));
                }
            }
        }
    }

    fn vanished(&mut self, history: &'a [Entry]) {
        for e in history {
            let Op::Read {
                reader,
                session,
                partition,
                offset,
                value,
            } = &e.op
            else {
                continue;
            };
            if *partition != self.p || self.by_value.contains_key(value.as_str()) {
                continue;
            }
            let producer = match self.sent.get(&(self.p, value.as_str())) {
                Some(sends) => format!(
                    "sent in op #{} ({})",
                    sends[0].id,
                    describe_outcome(sends[0].outcome)
                ),
                None => "never sent".to_string(),
            };
            let detail = format!(
                "op #{} {reader} (session {session}) read {value:?} at offset {offset}; it is not \
                 in the final log ({}); {producer}",
                e.id,
                self.describe_final()
            );
            self.anomaly(Check::Vanished, vec![e.id], detail);
        }
    }
}

fn describe_outcome(o: &ProduceOutcome) -> String {
    match o {
        ProduceOutcome::Ok { offset } => format!("acknowledged at offset {offset}"),
        ProduceOutcome::Failed { error } => format!("failed: {error}"),
        ProduceOutcome::Unknown { error } => format!("outcome unknown: {error}"),
    }
}

/// `[3, 4, 5, 9]` -> "3..=5, 9" (at most a few ranges).
fn summarize(offsets: &[Offset]) -> String {
    let mut ranges: Vec<(Offset, Offset)> = Vec::new();
    for &o in offsets {
        match ranges.last_mut() {
            Some((_, end)) if *end + 1 == o => *end = o,
            _ => ranges.push((o, o)),
        }
    }
    let shown: Vec<String> = ranges
        .iter()
        .take(5)
        .map(|&(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}..={b}")
            }
        })
        .collect();
    let mut s = shown.join(", ");
    if ranges.len() > 5 {
        s.push_str(", ...");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{Acks, History};

    /// Builds histories tersely.
    struct H(History);

    impl H {
        fn new() -> H {
            H(History::new())
        }

        fn produce(&self, idempotent: bool, p: Partition, value: &str, outcome: ProduceOutcome) {
            self.0.record(Op::Produce {
                producer: if idempotent { "idem" } else { "plain" }.into(),
                idempotent,
                acks: Acks::All,
                partition: p,
                value: value.into(),
                outcome,
            });
        }

        fn acked(&self, p: Partition, value: &str, offset: Offset) {
            self.produce(true, p, value, ProduceOutcome::Ok { offset });
        }

        fn read(&self, reader: &str, session: u64, p: Partition, offset: Offset, value: &str) {
            self.0.record(Op::Read {
                reader: reader.into(),
                session,
                partition: p,
                offset,
                value: value.into(),
            });
        }

        fn commit(&self, group: &str, p: Partition, offset: Offset, outcome: CommitOutcome) {
            self.0.record(Op::Commit {
                group: group.into(),
                partition: p,
                offset,
                outcome,
            });
        }

        fn check(&self, log: &[(Partition, &[(Offset, &str)])]) -> Report {
            let final_log: FinalLog = log
                .iter()
                .map(|(p, recs)| (*p, recs.iter().map(|(o, v)| (*o, v.to_string())).collect()))
                .collect();
            check(&self.0.snapshot(), &final_log)
        }
    }

    fn unknown() -> ProduceOutcome {
        ProduceOutcome::Unknown {
            error: "timed out".into(),
        }
    }

    fn only(report: &Report, check: Check) -> &Anomaly {
        assert_eq!(
            report.anomalies.len(),
            1,
            "expected exactly one {check:?}:\n{report}"
        );
        let a = &report.anomalies[0];
        assert_eq!(a.check, check, "{report}");
        a
    }

    /// Three records on partition 0, read by an assigned reader and a group member that
    /// commits; one unknown produce that did land and one that did not.
    fn clean() -> H {
        let h = H::new();
        h.acked(0, "a", 0);
        h.acked(0, "b", 1);
        h.produce(false, 0, "c", unknown());
        h.produce(false, 0, "lost-but-unknown", unknown());
        h.read("r", 0, 0, 0, "a");
        h.read("r", 0, 0, 1, "b");
        h.read("r", 0, 0, 2, "c");
        h.read("g1", 3, 0, 1, "b");
        h.commit("g", 0, 2, CommitOutcome::Ok);
        h.commit(
            "g",
            0,
            1,
            CommitOutcome::Failed {
                error: "illegal generation".into(),
            },
        );
        h.commit("g", 0, 2, CommitOutcome::Ok);
        h.0.record(Op::Fault {
            description: "kill -9 node 1".into(),
        });
        h.0.record(Op::Heal {
            description: "restart node 1".into(),
        });
        h
    }

    #[test]
    fn an_acks_one_write_lost_on_a_replicated_topic_is_a_note() {
        let acks_one = |h: &H, value: &str, offset: Offset| {
            h.0.record(Op::Produce {
                producer: "one".into(),
                idempotent: false,
                acks: Acks::One,
                partition: 0,
                value: value.into(),
                outcome: ProduceOutcome::Ok { offset },
            })
        };
        // Replicated: the leader died before its followers copied "b"; "c" took offset 1.
        let h = H::new();
        h.0.record(Op::Topic {
            replication_factor: 3,
        });
        h.acked(0, "a", 0);
        acks_one(&h, "b", 1);
        h.acked(0, "c", 1);
        let r = h.check(&[(0, &[(0, "a"), (1, "c")])]);
        assert!(r.is_clean(), "{r}");
        assert!(
            r.notes.iter().any(|n| n.contains("acks=1 write lost")),
            "{r}"
        );
        // One replica: the same loss is a lost write (an fsynced acks=1 write must survive).
        let h = H::new();
        h.acked(0, "a", 0);
        acks_one(&h, "b", 1);
        let r = h.check(&[(0, &[(0, "a")])]);
        assert_eq!(r.of(Check::Lost).count(), 1, "{r}");
        // Replicated, an acks=all loss is still an anomaly.
        let h = H::new();
        h.0.record(Op::Topic {
            replication_factor: 3,
        });
        h.acked(0, "a", 0);
        let r = h.check(&[(0, &[])]);
        assert_eq!(r.of(Check::Lost).count(), 1, "{r}");
    }

    #[test]
    fn a_clean_history_passes_every_check() {
        let r = clean().check(&[(0, &[(0, "a"), (1, "b"), (2, "c")]), (1, &[])]);
        assert!(r.is_clean(), "{r}");
        assert_eq!((r.passed(), r.failed()), (2 * Check::ALL.len(), 0));
        assert!(r.to_string().ends_with("16 passed, 0 failed"), "{r}");
        assert_eq!(r.stats.acked, 2);
        assert_eq!(r.stats.reads, 4);
        assert_eq!(r.stats.faults, 1);
        assert_eq!(r.reads_by_reader["r"], 3);
        // No ack after the one heal.
        assert_eq!(r.stats.recovery_max_ms, None);
    }

    #[test]
    fn a_lost_acknowledged_write_is_named() {
        let r = clean().check(&[(0, &[(0, "a"), (2, "c")])]);
        // "b" is lost, and the reads of it vanished; offset 1 is now a gap a reader could skip.
        let lost: Vec<&Anomaly> = r.of(Check::Lost).collect();
        assert_eq!(lost.len(), 1, "{r}");
        assert_eq!(lost[0].ops, vec![1]);
        assert!(lost[0].detail.contains("op #1 produce \"b\""), "{r}");
        assert_eq!(r.of(Check::Vanished).count(), 2, "{r}");
        assert!(!r.is_clean());
        let text = r.to_string();
        assert!(text.contains("FAIL  acknowledged write lost (1)"), "{text}");
        assert!(
            text.ends_with(&format!("{} passed, 2 failed", 8 - 2)),
            "{text}"
        );
    }

    #[test]
    fn an_idempotent_duplicate_is_an_anomaly_a_plain_one_a_note() {
        let h = H::new();
        h.acked(0, "i", 0);
        h.produce(false, 0, "n", ProduceOutcome::Ok { offset: 2 });
        let r = h.check(&[(0, &[(0, "i"), (1, "i"), (2, "n"), (3, "n")])]);
        let a = only(&r, Check::Duplicated);
        assert!(a.detail.contains("\"i\" at offsets [0, 1]"), "{r}");
        assert_eq!(r.notes.len(), 1, "{r}");
        assert!(
            r.notes[0].contains("duplicate (non-idempotent retry)"),
            "{r}"
        );
        assert!(r.notes[0].contains("\"n\" at offsets [2, 3]"), "{r}");
    }

    #[test]
    fn an_idempotent_duplicate_across_epochs_after_a_timeout_is_a_note_otherwise_an_anomaly() {
        let h = H::new();
        h.acked(0, "same", 2);
        h.acked(0, "unexplained", 4);
        h.produce(
            true,
            0,
            "lost-track",
            ProduceOutcome::Unknown {
                error: "Message production error: MessageTimedOut (Local: Message timed out)"
                    .into(),
            },
        );
        h.acked(0, "bumped", 0);
        let final_log: FinalLog = BTreeMap::from([(
            0,
            [
                (0, "bumped"),
                (1, "bumped"),
                (2, "same"),
                (3, "same"),
                (4, "unexplained"),
                (5, "unexplained"),
            ]
            .into_iter()
            .map(|(o, v)| (o, v.to_string()))
            .collect(),
        )]);
        let w = |producer_epoch| Writer {
            producer_id: 7,
            producer_epoch,
        };
        let epochs = [(0, 1), (1, 2), (2, 2), (3, 2), (4, 1), (5, 2)];
        let writers = Writers::from([(0, epochs.map(|(o, e)| (o, w(e))).into())]);
        let r = check_with_writers(&h.0.snapshot(), &final_log, &writers);
        // "bumped" was sent after the producer timed out a message; the other two before it.
        let dups: Vec<&str> = r.of(Check::Duplicated).map(|a| a.detail.as_str()).collect();
        assert_eq!(dups.len(), 2, "{r}");
        assert!(
            dups.iter()
                .any(|d| d.contains("\"same\" at offsets [2, 3]")),
            "{r}"
        );
        assert!(
            dups.iter()
                .any(|d| d.contains("\"unexplained\" at offsets [4, 5]")
                    && d.contains("the bump came from the broker's answers")),
            "{r}"
        );
        assert_eq!(r.notes.len(), 1, "{r}");
        assert!(
            r.notes[0].contains("duplicate across producer epochs (7/1, 7/2)"),
            "{r}"
        );
        // Without the writers, all three are anomalies.
        let r = check(&h.0.snapshot(), &final_log);
        assert_eq!(r.of(Check::Duplicated).count(), 3, "{r}");
    }

    #[test]
    fn a_value_nobody_sent_is_a_phantom() {
        let h = H::new();
        h.acked(0, "a", 0);
        let r = h.check(&[(0, &[(0, "a"), (1, "ghost")])]);
        assert!(only(&r, Check::Phantom).detail.contains("\"ghost\""), "{r}");
    }

    #[test]
    fn readers_disagreeing_on_an_offset_are_inconsistent() {
        let h = H::new();
        h.acked(0, "a", 0);
        h.produce(true, 0, "b", unknown());
        h.read("r1", 0, 0, 0, "a");
        h.read("r2", 0, 0, 0, "b");
        // "b" is also at offset 1, so only offset 0 is contested.
        let r = h.check(&[(0, &[(0, "a"), (1, "b")])]);
        let a = only(&r, Check::Inconsistent);
        assert_eq!(a.ops, vec![0, 2, 3]);
        assert!(
            a.detail.contains("offset 0 holds 2 different values"),
            "{r}"
        );
        assert!(a.detail.contains("op #3 read by r2"), "{r}");
    }

    #[test]
    fn acks_without_an_offset_claim_none_but_must_survive() {
        let h = H::new();
        h.acked(0, "a", -1001);
        h.acked(0, "b", -1001);
        let r = h.check(&[(0, &[(0, "a"), (1, "b")])]);
        assert!(r.anomalies.is_empty(), "{r}");
        let lost = h.check(&[(0, &[(0, "a")])]);
        only(&lost, Check::Lost);
    }

    #[test]
    fn an_ack_at_an_offset_the_final_log_gives_another_value_is_inconsistent() {
        let h = H::new();
        h.acked(0, "a", 0);
        h.acked(0, "b", 0);
        let r = h.check(&[(0, &[(0, "a"), (1, "b")])]);
        let a = only(&r, Check::Inconsistent);
        assert!(a.detail.contains("op #1 acked to idem"), "{r}");
    }

    #[test]
    fn a_reader_skipping_a_present_offset_is_caught_but_a_gap_is_not() {
        let h = H::new();
        for (o, v) in [(0, "a"), (1, "b"), (2, "c"), (4, "e"), (5, "f")] {
            h.acked(0, v, o);
        }
        h.read("r", 0, 0, 0, "a");
        h.read("r", 0, 0, 2, "c"); // skips 1
        h.read("r", 0, 0, 4, "e"); // 3 is not in the log: fine
        h.read("r", 1, 0, 5, "f"); // a new session may start anywhere
        let r = h.check(&[(0, &[(0, "a"), (1, "b"), (2, "c"), (4, "e"), (5, "f")])]);
        let a = only(&r, Check::Skipped);
        assert_eq!(a.ops, vec![5, 6]);
        assert!(a.detail.contains("skipping 1 offset(s)"), "{r}");
    }

    #[test]
    fn a_reader_that_starts_past_its_seek_skipped_the_start() {
        let h = H::new();
        h.acked(0, "a", 0);
        h.acked(0, "b", 1);
        for reader in ["r", "ok"] {
            h.0.record(Op::Seek {
                reader: reader.into(),
                session: 0,
                partition: 0,
                offset: 0,
            });
        }
        h.read("r", 0, 0, 1, "b"); // never saw offset 0
        h.read("ok", 0, 0, 0, "a");
        h.read("ok", 0, 0, 1, "b");
        let r = h.check(&[(0, &[(0, "a"), (1, "b")])]);
        let a = only(&r, Check::Skipped);
        assert_eq!(a.ops, vec![2, 4]);
        assert!(a.detail.contains("op #2 started at offset 0"), "{r}");
    }

    #[test]
    fn a_reader_going_backwards_within_a_session_is_caught() {
        let h = H::new();
        h.acked(0, "a", 0);
        h.acked(0, "b", 1);
        h.read("r", 7, 0, 0, "a");
        h.read("r", 7, 0, 1, "b");
        h.read("r", 7, 0, 0, "a");
        h.read("r", 8, 0, 0, "a"); // new session: fine
        let r = h.check(&[(0, &[(0, "a"), (1, "b")])]);
        let a = only(&r, Check::Backwards);
        assert_eq!(a.ops, vec![3, 4]);
    }

    #[test]
    fn a_successful_commit_going_backwards_is_caught() {
        let h = H::new();
        h.commit("g", 0, 10, CommitOutcome::Ok);
        h.commit(
            "g",
            0,
            3,
            CommitOutcome::Unknown {
                error: "timeout".into(),
            },
        );
        h.commit("other", 0, 1, CommitOutcome::Ok);
        h.commit("g", 0, 4, CommitOutcome::Ok);
        let r = h.check(&[(0, &[])]);
        let a = only(&r, Check::CommitBackwards);
        assert_eq!(a.ops, vec![0, 3]);
        assert!(a.detail.contains("group g"), "{r}");
    }

    #[test]
    fn a_read_of_an_unacknowledged_record_that_vanished_is_caught() {
        let h = H::new();
        h.acked(0, "a", 0);
        h.produce(false, 0, "x", unknown());
        h.read("r", 0, 0, 0, "a");
        h.read("r", 0, 0, 1, "x");
        let r = h.check(&[(0, &[(0, "a")])]);
        let a = only(&r, Check::Vanished);
        assert_eq!(a.ops, vec![3]);
        assert!(a.detail.contains("outcome unknown"), "{r}");
    }

    #[test]
    fn recovery_is_the_time_from_a_heal_to_the_next_ack() {
        let entry = |id, at_us, op| Entry { id, at_us, op };
        let heal = || Op::Heal {
            description: "restart".into(),
        };
        let ack = |v: &str| Op::Produce {
            producer: "p".into(),
            idempotent: true,
            acks: Acks::All,
            partition: 0,
            value: v.into(),
            outcome: ProduceOutcome::Ok { offset: 0 },
        };
        let history = [
            entry(0, 1_000_000, heal()),
            entry(1, 1_250_000, ack("a")),
            entry(2, 1_300_000, ack("b")),
            entry(3, 2_000_000, heal()),
            entry(4, 4_000_000, ack("c")),
            entry(5, 5_000_000, heal()),
            entry(6, 5_100_000, ack("d")),
        ];
        let r = check(&history, &FinalLog::new());
        assert_eq!(r.stats.recovery_median_ms, Some(250));
        assert_eq!(r.stats.recovery_max_ms, Some(2000));
        assert!(r.to_string().contains("median 250 ms, max 2000 ms"), "{r}");
    }

    #[test]
    fn summarize_collapses_ranges() {
        assert_eq!(summarize(&[3, 4, 5, 9]), "3..=5, 9");
    }
}
