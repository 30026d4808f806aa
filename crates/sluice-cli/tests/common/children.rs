//! Child consumer processes: a test binary re-runs itself with `--exact child_consumer` and the
//! `SLUICE_CHILD_*` environment variables, and its `child_consumer` test calls [`child_main`],
//! which is a no-op otherwise. A child writes one line per event to its output file, each with a
//! single `write` so a reader never sees half a line except, after a SIGKILL, the last one:
//!
//! ```text
//! assign 0,3        post-rebalance: partitions assigned (eager protocol: the full assignment)
//! revoke 0,3        post-rebalance: partitions revoked
//! rec 3 117 p3-117  a record was processed: partition, offset, value
//! committed 3:118   a synchronous commit succeeded, covering these positions
//! commit-error ...  a synchronous commit failed (the records stay uncommitted, so they repeat)
//! stopped           the stop file appeared, the final commit succeeded, the consumer closes
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

use super::{wait_for, CLIENT_TIMEOUT};

/// Session timeout of the child consumer processes: the bound on noticing a SIGKILL.
pub const CHILD_SESSION_MS: u64 = 4000;
const ENV_BOOTSTRAP: &str = "SLUICE_CHILD_BOOTSTRAP";
const ENV_GROUP: &str = "SLUICE_CHILD_GROUP";
const ENV_TOPIC: &str = "SLUICE_CHILD_TOPIC";
const ENV_OUT: &str = "SLUICE_CHILD_OUT";
const ENV_STOP: &str = "SLUICE_CHILD_STOP";
const ENV_SESSION: &str = "SLUICE_CHILD_SESSION_MS";
/// Simulated processing time per record, so a SIGKILL lands in the middle of the work.
const CHILD_WORK: Duration = Duration::from_micros(500);
/// A child commits after this many records (and whenever a poll comes back empty).
pub const CHILD_COMMIT_EVERY: usize = 200;

pub fn partition_list(tpl: &TopicPartitionList) -> BTreeSet<i32> {
    tpl.elements().iter().map(|e| e.partition()).collect()
}

pub fn fmt_parts(parts: &BTreeSet<i32>) -> String {
    if parts.is_empty() {
        return "-".to_string();
    }
    parts
        .iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// Appends whole lines with one `write` each (File is unbuffered), so a concurrent reader sees
/// complete lines and a SIGKILL can cut only the last one.
struct LineLog(Mutex<File>);

impl LineLog {
    fn line(&self, s: String) {
        let mut f = self.0.lock().unwrap();
        f.write_all(format!("{s}\n").as_bytes())
            .expect("write child output");
    }
}

struct ChildCtx {
    log: Arc<LineLog>,
}

impl ClientContext for ChildCtx {}

impl ConsumerContext for ChildCtx {
    fn post_rebalance(&self, _c: &BaseConsumer<Self>, r: &Rebalance<'_>) {
        match r {
            Rebalance::Assign(tpl) => self
                .log
                .line(format!("assign {}", fmt_parts(&partition_list(tpl)))),
            Rebalance::Revoke(tpl) => self
                .log
                .line(format!("revoke {}", fmt_parts(&partition_list(tpl)))),
            Rebalance::Error(e) => self.log.line(format!("rebalance-error {e}")),
        }
    }
}

/// Synchronous commit of everything processed so far; `NoOffset` means nothing was new. A
/// successful commit is logged with the positions it covered (position = last processed + 1,
/// which is what librdkafka's offset store holds and commits).
fn child_commit(c: &BaseConsumer<ChildCtx>, log: &LineLog) -> bool {
    match c.commit_consumer_state(CommitMode::Sync) {
        Ok(()) => {
            let positions: Vec<String> = c
                .position()
                .map(|tpl| {
                    tpl.elements()
                        .iter()
                        .filter_map(|e| match e.offset() {
                            Offset::Offset(o) => Some(format!("{}:{o}", e.partition())),
                            _ => None,
                        })
                        .collect()
                })
                .unwrap_or_default();
            if !positions.is_empty() {
                log.line(format!("committed {}", positions.join(",")));
            }
            true
        }
        Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => true,
        Err(e) => {
            log.line(format!("commit-error {e}"));
            false
        }
    }
}

/// The body of a child consumer process (see the module docs): runs it when this process was
/// started as one (the `SLUICE_CHILD_*` variables are set), else returns at once. Each test
/// binary that spawns children calls it from a test named `child_consumer`.
pub fn child_main() {
    let Ok(bootstrap) = std::env::var(ENV_BOOTSTRAP) else {
        return;
    };
    let var = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("child needs {k}"));
    let (group, topic) = (var(ENV_GROUP), var(ENV_TOPIC));
    let session_ms: u64 = std::env::var(ENV_SESSION)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(CHILD_SESSION_MS);
    let stop = PathBuf::from(var(ENV_STOP));
    let out = File::options()
        .create(true)
        .append(true)
        .open(var(ENV_OUT))
        .expect("open child output");
    let log = Arc::new(LineLog(Mutex::new(out)));
    let c: BaseConsumer<ChildCtx> = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("broker.address.family", "v4")
        .set("group.id", &group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", session_ms.to_string())
        .set("heartbeat.interval.ms", "500")
        // librdkafka wants it at least the session timeout.
        .set("max.poll.interval.ms", session_ms.max(10_000).to_string())
        .set("fetch.wait.max.ms", "100")
        .create_with_context(ChildCtx { log: log.clone() })
        .expect("create child consumer");
    c.subscribe(&[&topic]).expect("subscribe");
    // A child must never outlive a parent that was itself killed.
    let give_up = Instant::now() + Duration::from_secs(120);
    let mut uncommitted = 0usize;
    loop {
        if stop.exists() {
            while !child_commit(&c, &log) {
                assert!(Instant::now() < give_up, "final commit never succeeded");
                c.poll(Duration::from_millis(100));
            }
            log.line("stopped".to_string());
            break;
        }
        assert!(Instant::now() < give_up, "child consumer ran too long");
        match c.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                let value = String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned();
                std::thread::sleep(CHILD_WORK);
                log.line(format!("rec {} {} {value}", m.partition(), m.offset()));
                uncommitted += 1;
                if uncommitted >= CHILD_COMMIT_EVERY && child_commit(&c, &log) {
                    uncommitted = 0;
                }
            }
            None | Some(Err(KafkaError::PartitionEOF(_))) => {
                if uncommitted > 0 && child_commit(&c, &log) {
                    uncommitted = 0;
                }
            }
            Some(Err(e)) => log.line(format!("consumer-error {e}")),
        }
    }
    // Dropping the consumer closes it: revoke, LeaveGroup.
    drop(c);
}

/// One child consumer process; killed (SIGKILL) and reaped on drop.
pub struct ChildProc {
    pub name: String,
    child: Option<Child>,
    out: PathBuf,
    stop: PathBuf,
    stderr: PathBuf,
}

impl ChildProc {
    pub fn spawn(name: &str, bootstrap: &str, group: &str, topic: &str, dir: &Path) -> ChildProc {
        ChildProc::spawn_with(name, bootstrap, group, topic, dir, CHILD_SESSION_MS)
    }

    /// [`ChildProc::spawn`] with another session timeout: librdkafka gives its membership up
    /// (and rejoins with a new member id) when no heartbeat succeeds for that long.
    pub fn spawn_with(
        name: &str,
        bootstrap: &str,
        group: &str,
        topic: &str,
        dir: &Path,
        session_ms: u64,
    ) -> ChildProc {
        let out = dir.join(format!("{name}.out"));
        let stop = dir.join(format!("{name}.stop"));
        let stderr = dir.join(format!("{name}.stderr"));
        let child = Command::new(std::env::current_exe().expect("current_exe"))
            .args([
                "--exact",
                "child_consumer",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(ENV_BOOTSTRAP, bootstrap)
            .env(ENV_GROUP, group)
            .env(ENV_TOPIC, topic)
            .env(ENV_OUT, &out)
            .env(ENV_STOP, &stop)
            .env(ENV_SESSION, session_ms.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(File::create(&stderr).expect("child stderr")))
            .spawn()
            .expect("spawn child consumer");
        ChildProc {
            name: name.to_string(),
            child: Some(child),
            out,
            stop,
            stderr,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("child already gone").id()
    }

    pub fn view(&self) -> ChildView {
        ChildView::read(&self.out)
    }

    /// SIGKILL: no revoke, no commit, no LeaveGroup.
    pub fn kill9(&mut self) {
        let mut c = self.child.take().expect("child already gone");
        c.kill().expect("SIGKILL child");
        c.wait().expect("reap child");
    }

    /// Asks the child to commit, leave and exit, and waits (bounded) for it.
    pub fn stop(&mut self) -> ExitStatus {
        File::create(&self.stop).expect("create stop file");
        let c = self.child.as_mut().expect("child already gone");
        let status = wait_for(
            &format!("{} to exit after its stop file", self.name),
            CLIENT_TIMEOUT,
            Duration::from_millis(50),
            || c.try_wait().expect("try_wait"),
        );
        self.child = None;
        status
    }

    fn stderr_tail(&self) -> String {
        let s = std::fs::read_to_string(&self.stderr).unwrap_or_default();
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for ChildProc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "----- {} stderr tail -----\n{}\n----- {} output tail -----\n{}",
                self.name,
                self.stderr_tail(),
                self.name,
                self.view().tail.join("\n")
            );
        }
    }
}

/// What a child's output file says so far.
#[derive(Default)]
pub struct ChildView {
    /// Partitions held after the last assign/revoke line.
    pub assigned: BTreeSet<i32>,
    /// Every processed record: (partition, offset, value).
    pub recs: Vec<(i32, i64, String)>,
    /// Per partition, the position of the last commit this child logged as successful.
    pub committed: BTreeMap<i32, i64>,
    /// Successful commits of a partition below an earlier one of this child.
    pub commits_backwards: Vec<String>,
    /// commit-error / consumer-error / rebalance-error lines.
    pub errors: Vec<String>,
    pub rebalances: usize,
    pub stopped: bool,
    /// The last non-record lines, for failure messages.
    pub tail: Vec<String>,
}

impl ChildView {
    pub fn read(path: &Path) -> ChildView {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let mut v = ChildView::default();
        // Only complete lines: after a SIGKILL the last one may be cut short.
        let complete = match text.rfind('\n') {
            Some(i) => &text[..=i],
            None => "",
        };
        for line in complete.lines() {
            let (kind, rest) = line.split_once(' ').unwrap_or((line, ""));
            let parts = || -> BTreeSet<i32> {
                if rest == "-" {
                    return BTreeSet::new();
                }
                rest.split(',')
                    .map(|p| p.parse().expect("partition number"))
                    .collect()
            };
            match kind {
                "rec" => {
                    let mut it = rest.splitn(3, ' ');
                    let p = it.next().unwrap().parse().expect("rec partition");
                    let o = it.next().unwrap().parse().expect("rec offset");
                    v.recs.push((p, o, it.next().unwrap_or("").to_string()));
                    continue;
                }
                "assign" => {
                    v.assigned.extend(parts());
                    v.rebalances += 1;
                }
                "revoke" => {
                    let gone = parts();
                    v.assigned.retain(|p| !gone.contains(p));
                    v.rebalances += 1;
                }
                "committed" => {
                    for pair in rest.split(',') {
                        let (p, o) = pair.split_once(':').expect("partition:offset");
                        let (p, o): (i32, i64) =
                            (p.parse().expect("partition"), o.parse().expect("offset"));
                        if let Some(before) = v.committed.insert(p, o).filter(|b| *b > o) {
                            v.commits_backwards
                                .push(format!("partition {p}: committed {o} after {before}"));
                        }
                    }
                }
                "stopped" => v.stopped = true,
                _ => v.errors.push(line.to_string()),
            }
            v.tail.push(line.to_string());
        }
        let keep = v.tail.len().saturating_sub(30);
        v.tail.drain(..keep);
        v
    }
}

/// `Some(assignments)` once the children hold pairwise disjoint, non-empty assignments that
/// together cover `0..partitions`.
pub fn covering(views: &[ChildView], partitions: i32) -> Option<Vec<BTreeSet<i32>>> {
    let sets: Vec<BTreeSet<i32>> = views.iter().map(|v| v.assigned.clone()).collect();
    let total: usize = sets.iter().map(|s| s.len()).sum();
    let union: BTreeSet<i32> = sets.iter().flatten().copied().collect();
    let all: BTreeSet<i32> = (0..partitions).collect();
    (sets.iter().all(|s| !s.is_empty()) && total == partitions as usize && union == all)
        .then_some(sets)
}
