//! One chaos run, end to end: the shell around the pure checker, called by the `sluice-chaos`
//! binary and the gate test alike.
//!
//! Start the cluster, create the topic, start the [`Workload`], play the [`Schedule`] until the
//! deadline (every fault healed as it goes), stop the workload, read every partition back, run
//! the [`check`]er, and save the evidence (`history.jsonl`, `final-log.json`, `report.txt`) so
//! the verdict can be re-checked ([`recheck`]) without running anything.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::ClientConfig;
use tokio::time::Instant;

use crate::checker::{check_with_writers, FinalLog, Report};
use crate::cluster::Cluster;
use crate::history::{CommitOutcome, History, Op, ProduceOutcome};
use crate::process::NodeError;
use crate::schedule::{self, Played, Schedule, UnknownSchedule};
use crate::workload::{final_read, Workload, WorkloadConfig, WorkloadError};
use crate::writers::{read_writers, Writers};

/// The workload's topic.
pub const TOPIC: &str = "chaos";
/// Bound on creating the topic and seeing a leader for every partition.
const SETUP_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on the final read of every partition.
const FINAL_READ_TIMEOUT: Duration = Duration::from_secs(60);

/// What to run.
#[derive(Clone, Debug)]
pub struct RunConfig {
    /// How long the schedule plays.
    pub duration: Duration,
    pub seed: u64,
    pub nodes: usize,
    /// One of [`schedule::NAMES`].
    pub schedule: String,
    pub partitions: i32,
    /// Where the evidence is saved; `None` saves nothing.
    pub out: Option<PathBuf>,
    /// Start the nodes with the planted fault (`acks=all` answered before replication), to show
    /// the checker catches the writes it loses.
    pub planted_fault: bool,
}

/// Why a run could not produce a verdict.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Schedule(#[from] UnknownSchedule),
    #[error(transparent)]
    Node(#[from] NodeError),
    #[error(transparent)]
    Workload(#[from] WorkloadError),
    #[error("setting up topic {TOPIC:?}: {0}")]
    Setup(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
}

/// What a run found.
pub struct RunOutcome {
    pub report: Report,
    pub history: Arc<History>,
    pub final_log: FinalLog,
    /// Who wrote each record of the final log, where it could be read.
    pub writers: Writers,
    pub played: Played,
}

/// Runs the whole thing. Needs a multi-threaded tokio runtime (the proxies run on it while
/// blocking work is sent to the blocking pool). With `cfg.out`, the evidence is saved whether
/// or not the run reached a verdict: the history so far and every node's log always, the final
/// log and the report when there are some.
pub async fn run(cfg: &RunConfig) -> Result<RunOutcome, RunError> {
    let mut schedule = Schedule::named(&cfg.schedule, cfg.seed, cfg.nodes)?;
    // fsync: an acknowledged write must survive kill -9 of every node at once. No initial
    // rebalance delay: a group that loses its coordinator every few seconds must be able to
    // settle between faults (a 3 s delay, extended once per late joiner, takes 6 s).
    let mut common = [
        "--durability",
        "fsync",
        "--override",
        "group.initial.rebalance.delay.ms=0",
    ]
    .map(String::from)
    .to_vec();
    if cfg.planted_fault {
        common.push("--unsafe-test-ack-before-replication".into());
    }
    tracing::info!(nodes = cfg.nodes, "--- starting the cluster");
    let mut cluster = if cfg.nodes > 1 {
        Cluster::start_multi(cfg.nodes, common).await?
    } else {
        Cluster::start(1, move |_, _| common.clone()).await?
    };
    let history = Arc::new(History::new());
    let result = drive(cfg, &mut cluster, &mut schedule, history.clone()).await;
    if let Some(dir) = &cfg.out {
        let saved = save(dir, &history, &cluster, result.as_ref().ok());
        if let (Ok(_), Err(e)) = (&result, saved) {
            return Err(e);
        }
    }
    result
}

/// Everything after the cluster is up.
async fn drive(
    cfg: &RunConfig,
    cluster: &mut Cluster,
    schedule: &mut Schedule,
    history: Arc<History>,
) -> Result<RunOutcome, RunError> {
    let bootstrap = cluster.bootstrap();
    let replication = cfg.nodes.min(3) as i32;
    create_topic(&bootstrap, cfg.partitions, replication).await?;
    history.record(Op::Topic {
        replication_factor: replication,
    });
    wait_for_leaders(cluster, cfg.partitions).await?;

    tracing::info!("--- starting the workload");
    let wl_cfg = WorkloadConfig::standard(bootstrap.clone(), TOPIC.to_string(), cfg.partitions);
    let workload = Workload::start(&wl_cfg, history.clone())?;
    wait_for_workload(&history, wl_cfg.groups > 0).await;

    tracing::info!(schedule = %cfg.schedule, seed = cfg.seed, "--- playing the schedule");
    let until = Instant::now() + cfg.duration;
    let mut played = schedule::run(cluster, schedule, &history, TOPIC, until).await;
    if played.is_ok() {
        // The last step may end early; the workload keeps going against the healed cluster,
        // which must still be alive at the end.
        tokio::time::sleep_until(until).await;
        for id in 1..=cluster.len() as i32 {
            if let Err(e) = cluster.node_mut(id).check_alive() {
                played = Err(e);
                break;
            }
        }
    }
    tracing::info!("--- stopping the workload");
    tokio::task::spawn_blocking(move || workload.stop())
        .await
        .map_err(|e| RunError::Setup(format!("workload stop panicked: {e}")))?;
    let played = played?;

    tracing::info!("--- final read");
    let partitions = cfg.partitions;
    let final_log = tokio::task::spawn_blocking(move || {
        final_read(&bootstrap, TOPIC, partitions, FINAL_READ_TIMEOUT)
    })
    .await
    .map_err(|e| RunError::Setup(format!("final read panicked: {e}")))??;

    let writers = final_writers(cluster, partitions).await;
    let report = check_with_writers(&history.snapshot(), &final_log, &writers);
    Ok(RunOutcome {
        report,
        history,
        final_log,
        writers,
        played,
    })
}

async fn create_topic(bootstrap: &str, partitions: i32, replication: i32) -> Result<(), RunError> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("socket.connection.setup.timeout.ms", "5000")
        .create()
        .map_err(|e| RunError::Setup(e.to_string()))?;
    let opts = AdminOptions::new()
        .request_timeout(Some(SETUP_TIMEOUT))
        .operation_timeout(Some(SETUP_TIMEOUT));
    let topic = NewTopic::new(TOPIC, partitions, TopicReplication::Fixed(replication));
    let results = admin
        .create_topics(&[topic], &opts)
        .await
        .map_err(|e| RunError::Setup(e.to_string()))?;
    for r in results {
        r.map_err(|(name, code)| RunError::Setup(format!("create {name}: {code}")))?;
    }
    Ok(())
}

/// Polls Metadata until every partition has a leader.
async fn wait_for_leaders(cluster: &Cluster, partitions: i32) -> Result<(), RunError> {
    let deadline = Instant::now() + SETUP_TIMEOUT;
    loop {
        let l = cluster.leadership(TOPIC, Duration::from_secs(2)).await;
        let led = l.as_ref().map_or(0, |l| {
            l.leaders.values().filter(|&&leader| leader >= 0).count()
        });
        if led == partitions as usize {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(RunError::Setup(format!(
                "{led} of {partitions} partitions have a leader after {SETUP_TIMEOUT:?}: {l:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits (bounded) until the workload is under way, so the faults hit a working system: a
/// produce acknowledged and, with groups, a commit accepted (a group that is still joining when
/// the first fault hits can take a long time to settle, and then the run says little about
/// groups). A workload that never gets going shows in the report's figures.
async fn wait_for_workload(history: &History, groups: bool) {
    let deadline = Instant::now() + SETUP_TIMEOUT;
    while Instant::now() < deadline {
        let (mut acked, mut committed) = (false, !groups);
        for e in history.snapshot() {
            match e.op {
                Op::Produce {
                    outcome: ProduceOutcome::Ok { .. },
                    ..
                } => acked = true,
                Op::Commit {
                    outcome: CommitOutcome::Ok,
                    ..
                } => committed = true,
                _ => {}
            }
        }
        if acked && committed {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tracing::warn!("the workload did not get going within {SETUP_TIMEOUT:?}");
}

const HISTORY_FILE: &str = "history.jsonl";
const FINAL_LOG_FILE: &str = "final-log.json";
const WRITERS_FILE: &str = "final-writers.json";
const REPORT_FILE: &str = "report.txt";

/// Writes `history.jsonl` and `node-N.log` for every node into `dir`, and `final-log.json` and
/// `report.txt` when the run got that far.
pub fn save(
    dir: &Path,
    history: &History,
    cluster: &Cluster,
    outcome: Option<&RunOutcome>,
) -> Result<(), RunError> {
    let io = |what: &str, path: &Path| {
        let what = format!("{what} {}", path.display());
        move |source| RunError::Io { what, source }
    };
    std::fs::create_dir_all(dir).map_err(io("creating", dir))?;
    let path = dir.join(HISTORY_FILE);
    let file = File::create(&path).map_err(io("creating", &path))?;
    history
        .write_jsonl(BufWriter::new(file))
        .map_err(io("writing", &path))?;
    for node in cluster.nodes() {
        let path = dir.join(format!("node-{}.log", node.id()));
        std::fs::copy(node.log_path(), &path).map_err(io("copying the node log to", &path))?;
    }
    let Some(outcome) = outcome else {
        return Ok(());
    };
    let path = dir.join(FINAL_LOG_FILE);
    let mut file = BufWriter::new(File::create(&path).map_err(io("creating", &path))?);
    serde_json::to_writer(&mut file, &outcome.final_log)
        .map_err(io::Error::from)
        .and_then(|()| file.flush())
        .map_err(io("writing", &path))?;
    let path = dir.join(WRITERS_FILE);
    let mut file = BufWriter::new(File::create(&path).map_err(io("creating", &path))?);
    serde_json::to_writer(&mut file, &outcome.writers)
        .map_err(io::Error::from)
        .and_then(|()| file.flush())
        .map_err(io("writing", &path))?;
    let path = dir.join(REPORT_FILE);
    std::fs::write(&path, format!("{}\n", outcome.report)).map_err(io("writing", &path))?;
    Ok(())
}

/// Checks a saved run again (the files [`save`] wrote).
pub fn recheck(dir: &Path) -> Result<Report, RunError> {
    let open = |name: &str| {
        let path = dir.join(name);
        File::open(&path)
            .map(BufReader::new)
            .map_err(|source| RunError::Io {
                what: format!("opening {}", path.display()),
                source,
            })
    };
    let bad = |name: &str| {
        let what = format!("reading {}", dir.join(name).display());
        move |source| RunError::Io { what, source }
    };
    let history = History::read_jsonl(open(HISTORY_FILE)?).map_err(bad(HISTORY_FILE))?;
    let final_log: FinalLog = serde_json::from_reader(open(FINAL_LOG_FILE)?)
        .map_err(io::Error::from)
        .map_err(bad(FINAL_LOG_FILE))?;
    // Runs saved before the writers were read have none: every idempotent duplicate counts.
    let writers: Writers = match File::open(dir.join(WRITERS_FILE)) {
        Ok(f) => serde_json::from_reader(BufReader::new(f))
            .map_err(io::Error::from)
            .map_err(bad(WRITERS_FILE))?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => Writers::new(),
        Err(e) => return Err(bad(WRITERS_FILE)(e)),
    };
    Ok(check_with_writers(
        &history.snapshot(),
        &final_log,
        &writers,
    ))
}

/// The producer of every record of each partition, read from its leader (past the proxies);
/// a partition that cannot be read is left out, and its duplicates count as anomalies.
async fn final_writers(cluster: &Cluster, partitions: i32) -> Writers {
    let mut writers = Writers::new();
    let Some(leadership) = cluster.leadership(TOPIC, Duration::from_secs(5)).await else {
        tracing::warn!("no node answered Metadata: the final log's writers are unknown");
        return writers;
    };
    for p in 0..partitions {
        let Some(leader) = leadership
            .leaders
            .get(&p)
            .copied()
            .filter(|l| (1..=cluster.len() as i32).contains(l))
        else {
            tracing::warn!(partition = p, "no leader: its writers are unknown");
            continue;
        };
        let addr = cluster.node(leader).listen_addr();
        let read = tokio::task::spawn_blocking(move || {
            read_writers(addr, TOPIC, p, Duration::from_secs(10))
        })
        .await;
        match read {
            Ok(Ok(w)) => {
                writers.insert(p, w);
            }
            Ok(Err(e)) => tracing::warn!(partition = p, error = %e, "writers unknown"),
            Err(e) => tracing::warn!(partition = p, error = %e, "writers read panicked"),
        }
    }
    writers
}
