//! Fault schedules: what to break, for how long, and how long to let the cluster heal.
//!
//! A [`Schedule`] is an endless source of [`Step`]s: a seeded random mix ([`Schedule::random`],
//! reproducible from the seed with our own [`SplitMix64`]) or a named pattern that cycles
//! ([`Schedule::named`]). [`run`] plays steps against a [`Cluster`] until a deadline: resolve the
//! target (a node, or the leader/controller/a follower found by a Metadata probe), inject the
//! fault, hold it, heal it (restart, SIGCONT, proxy heal), then pause for recovery. Every fault and
//! heal is recorded in the [`History`], so the checker's evidence can be read against them.
//!
//! Until `sluice serve` runs multi-node clusters, the leader and the controller of a one-node
//! cluster are node 1, and it has no follower: "follower" then picks node 1 as well.

use std::time::Duration;

use tokio::time::Instant;

use crate::cluster::Cluster;
use crate::history::{History, Op};
use crate::process::NodeError;
use crate::proxy::{Direction, Fault};

/// How long a SIGTERM may take before the node is killed instead.
const TERMINATE_TIMEOUT: Duration = Duration::from_secs(15);
/// How long one leadership probe may take per node.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// The workload's topic partition whose leader "leader" means.
const LEADER_OF: i32 = 0;

/// The named schedules, for `--schedule` and `--help`.
pub const NAMES: &[&str] = &[
    "random",
    "process-faults",
    "leader-kill",
    "controller-kill",
    "leader-isolation",
    "follower-pause",
    "rolling-restart",
    "reassign",
];

/// A tiny deterministic PRNG (Steele, Lea, Flood: SplitMix64); a seed is a whole schedule.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`); the modulo bias is irrelevant at these sizes.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Uniform in `lo..=hi` milliseconds.
    pub fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.below(hi - lo + 1))
    }
}

/// Which node a step hits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Node(i32),
    /// The leader of partition 0 of the workload's topic.
    Leader,
    Controller,
    /// A replica of partition 0 that is not its leader.
    Follower,
}

/// What a step does to its node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// SIGKILL; healed by a restart.
    Kill9,
    /// The partition's followers are SIGSTOPped for this long (less than a broker session, so
    /// they stay in the ISR while they fall behind), then the target is SIGKILLed and the
    /// followers resumed: a leader crash while its followers lag, the moment an early
    /// acknowledgement is lost. Healed by a restart.
    Kill9WithLaggingFollowers(Duration),
    /// SIGTERM (SIGKILL after [`TERMINATE_TIMEOUT`]); healed by a restart.
    Terminate,
    /// SIGSTOP; healed by SIGCONT.
    Pause,
    /// A fault on the node's client-link proxy, one direction or (`None`) both; healed by
    /// [`Proxy::heal`](crate::Proxy::heal).
    Link(Fault, Option<Direction>),
    /// Every link between the node and its peers cut (controller and replication, both ways);
    /// its clients still reach it. Healed by [`Cluster::rejoin`].
    Isolate,
    /// A partition of the workload's topic is moved (AlterPartitionReassignments) to replicas
    /// drawn from `pick`: as many as it has, or on a cluster no larger than that, one fewer or
    /// as many (so replicas leave and come back, copying the log). The move runs on through
    /// later faults; "healing" cancels it if `pick` says so and it is still under way. Not
    /// aimed at a node.
    Reassign { pick: u64 },
}

/// One fault: inject, hold, heal, recover.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Step {
    pub target: Target,
    pub action: Action,
    /// How long the fault stays in force.
    pub hold: Duration,
    /// The pause for healing after it is undone.
    pub recover: Duration,
}

/// The kinds of fault a random schedule draws from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Kill9,
    Terminate,
    Pause,
    Cut,
    BlackHole,
    Delay,
    Drop,
    Isolate,
    Reassign,
}

impl Kind {
    pub const ALL: &'static [Kind] = &[
        Kind::Kill9,
        Kind::Terminate,
        Kind::Pause,
        Kind::Cut,
        Kind::BlackHole,
        Kind::Delay,
        Kind::Drop,
        Kind::Isolate,
        Kind::Reassign,
    ];
    pub const PROCESS: &'static [Kind] = &[Kind::Kill9, Kind::Terminate, Kind::Pause];
    /// Moves, twice as often as each process fault.
    pub const MOVES: &'static [Kind] = &[
        Kind::Reassign,
        Kind::Reassign,
        Kind::Kill9,
        Kind::Terminate,
        Kind::Pause,
    ];
}

/// An unknown `--schedule` name.
#[derive(Debug, thiserror::Error)]
#[error("unknown schedule {0:?}; known: {known}", known = NAMES.join(", "))]
pub struct UnknownSchedule(pub String);

/// An endless source of steps.
#[derive(Clone, Debug)]
pub enum Schedule {
    Random {
        rng: SplitMix64,
        nodes: usize,
        kinds: &'static [Kind],
    },
    Cycle {
        steps: Vec<Step>,
        next: usize,
    },
}

impl Schedule {
    /// Random faults of every kind on random nodes, reproducible from `seed`.
    pub fn random(seed: u64, nodes: usize) -> Schedule {
        Schedule::random_of(seed, nodes, Kind::ALL)
    }

    /// Random faults of the given kinds.
    pub fn random_of(seed: u64, nodes: usize, kinds: &'static [Kind]) -> Schedule {
        assert!(nodes > 0 && !kinds.is_empty());
        Schedule::Random {
            rng: SplitMix64::new(seed),
            nodes,
            kinds,
        }
    }

    /// A schedule by name: one of [`NAMES`]. `seed` drives the random ones.
    pub fn named(name: &str, seed: u64, nodes: usize) -> Result<Schedule, UnknownSchedule> {
        let secs = Duration::from_secs;
        let step = |target, action, hold, recover| Step {
            target,
            action,
            hold,
            recover,
        };
        let steps = match name {
            "random" => return Ok(Schedule::random(seed, nodes)),
            "process-faults" => return Ok(Schedule::random_of(seed, nodes, Kind::PROCESS)),
            // Plain kills, and kills while the followers lag.
            "leader-kill" => vec![
                step(Target::Leader, Action::Kill9, secs(2), secs(5)),
                step(
                    Target::Leader,
                    Action::Kill9WithLaggingFollowers(Duration::from_millis(1500)),
                    secs(2),
                    secs(5),
                ),
            ],
            "controller-kill" => vec![step(Target::Controller, Action::Kill9, secs(2), secs(5))],
            // Longer than a broker session, so the controller fences it and elects a new leader
            // while it still takes client writes it cannot replicate.
            "leader-isolation" => vec![step(Target::Leader, Action::Isolate, secs(8), secs(6))],
            "follower-pause" => vec![step(Target::Follower, Action::Pause, secs(5), secs(5))],
            // Partition moves among process faults.
            "reassign" => return Ok(Schedule::random_of(seed, nodes, Kind::MOVES)),
            "rolling-restart" => (1..=nodes as i32)
                .map(|id| step(Target::Node(id), Action::Terminate, secs(1), secs(4)))
                .collect(),
            other => return Err(UnknownSchedule(other.to_string())),
        };
        Ok(Schedule::Cycle { steps, next: 0 })
    }

    pub fn next_step(&mut self) -> Step {
        match self {
            Schedule::Cycle { steps, next } => {
                let s = steps[*next % steps.len()];
                *next += 1;
                s
            }
            Schedule::Random { rng, nodes, kinds } => {
                let kind = kinds[rng.below(kinds.len() as u64) as usize];
                let target = Target::Node(1 + rng.below(*nodes as u64) as i32);
                let dir = match rng.below(3) {
                    0 => None,
                    1 => Some(Direction::ClientToServer),
                    _ => Some(Direction::ServerToClient),
                };
                let action = match kind {
                    Kind::Kill9 => Action::Kill9,
                    Kind::Terminate => Action::Terminate,
                    Kind::Pause => Action::Pause,
                    Kind::Cut => Action::Link(Fault::Cut, None),
                    Kind::BlackHole => Action::Link(Fault::BlackHole, dir),
                    Kind::Delay => Action::Link(Fault::Delay(rng.millis(50, 1500)), dir),
                    Kind::Drop => Action::Link(Fault::Drop, dir),
                    Kind::Isolate => Action::Isolate,
                    Kind::Reassign => Action::Reassign {
                        pick: rng.next_u64(),
                    },
                };
                // One fault in five outlasts the clients' timeouts (10 s per message, 10 s
                // group session), so outcomes become unknown and groups rebalance.
                let hold = if rng.below(5) == 0 {
                    rng.millis(8000, 15000)
                } else {
                    rng.millis(500, 5000)
                };
                Step {
                    target,
                    action,
                    hold,
                    recover: rng.millis(1000, 5000),
                }
            }
        }
    }
}

/// What [`run`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Played {
    pub faults: usize,
    /// The longest time a restart took to answer again.
    pub slowest_restart: Duration,
}

/// Plays `schedule` against `cluster` until `until` (a step starts only if its hold ends
/// before then), recording every fault and heal. Everything is healed when it returns `Ok`;
/// a node found dead that the schedule did not kill ends the run with [`NodeError::Died`].
pub async fn run(
    cluster: &mut Cluster,
    schedule: &mut Schedule,
    history: &History,
    topic: &str,
    until: Instant,
) -> Result<Played, NodeError> {
    let mut played = Played::default();
    loop {
        // A node that exited without being told to is a crash: stop and say so.
        for id in 1..=cluster.len() as i32 {
            cluster.node_mut(id).check_alive()?;
        }
        let step = schedule.next_step();
        if Instant::now() + step.hold >= until {
            return Ok(played);
        }
        let node = resolve(cluster, step.target, topic).await;
        let followers = match step.action {
            Action::Kill9WithLaggingFollowers(_) => followers_of(cluster, node, topic).await,
            _ => Vec::new(),
        };
        tracing::info!(node, ?step, ?followers, "--- fault");
        // Recorded before it is injected: ops logged after this id may have met the fault.
        history.record(Op::Fault {
            description: format!("{} (target {:?})", describe(node, step.action), step.target),
        });
        inject(cluster, history, node, &followers, step.action, topic).await?;
        played.faults += 1;
        tokio::time::sleep(step.hold).await;
        let started = Instant::now();
        let healed = heal(cluster, node, step.action, topic).await?;
        if matches!(
            step.action,
            Action::Kill9 | Action::Kill9WithLaggingFollowers(_) | Action::Terminate
        ) {
            played.slowest_restart = played.slowest_restart.max(started.elapsed());
        }
        history.record(Op::Heal {
            description: healed,
        });
        tracing::info!(node, "--- healed");
        tokio::time::sleep(step.recover).await;
    }
}

/// The node a target means now.
async fn resolve(cluster: &Cluster, target: Target, topic: &str) -> i32 {
    let l = match target {
        Target::Node(id) => return id,
        _ => cluster.leadership(topic, PROBE_TIMEOUT).await,
    };
    let valid = |id: i32| (1..=cluster.len() as i32).contains(&id);
    let found = l.and_then(|l| {
        let leader = l.leaders.get(&LEADER_OF).copied().filter(|&id| valid(id));
        match target {
            Target::Leader => leader,
            Target::Controller => Some(l.controller).filter(|&id| valid(id)),
            Target::Follower => l.replicas.get(&LEADER_OF).and_then(|r| {
                r.iter()
                    .copied()
                    .find(|&id| Some(id) != leader && valid(id))
            }),
            Target::Node(_) => None,
        }
    });
    found.unwrap_or_else(|| {
        tracing::info!(
            ?target,
            "not found by the Metadata probe (or a single node); using node 1"
        );
        1
    })
}

/// What `action` on `node` does, for the history.
fn describe(node: i32, action: Action) -> String {
    match action {
        Action::Kill9 => format!("kill -9 node {node}"),
        Action::Kill9WithLaggingFollowers(lag) => {
            format!("kill -9 node {node} after pausing its followers for {lag:?}")
        }
        Action::Terminate => format!("SIGTERM node {node}"),
        Action::Pause => format!("SIGSTOP node {node}"),
        Action::Link(fault, dir) => {
            let dir = match dir {
                Some(Direction::ClientToServer) => "client->node",
                Some(Direction::ServerToClient) => "node->client",
                None => "both ways",
            };
            format!("{fault:?} on node {node}'s client link ({dir})")
        }
        Action::Isolate => format!("cut node {node} off from its peers (clients still reach it)"),
        Action::Reassign { pick } => format!("move a partition (pick {pick:#x})"),
    }
}

/// The replicas of partition 0 other than `leader`, as the cluster reports them now.
async fn followers_of(cluster: &Cluster, leader: i32, topic: &str) -> Vec<i32> {
    let l = cluster.leadership(topic, PROBE_TIMEOUT).await;
    let valid = |id: i32| (1..=cluster.len() as i32).contains(&id);
    l.and_then(|l| l.replicas.get(&LEADER_OF).cloned())
        .unwrap_or_default()
        .into_iter()
        .filter(|&id| id != leader && valid(id))
        .collect()
}

/// Applies `action` to `node` (`followers`: the ones a lagging-followers kill pauses first).
async fn inject(
    cluster: &mut Cluster,
    history: &History,
    node: i32,
    followers: &[i32],
    action: Action,
    topic: &str,
) -> Result<(), NodeError> {
    if let Action::Reassign { pick } = action {
        let planned = plan_move(cluster, topic, pick).await;
        match planned {
            Some((partition, to)) => {
                let result = reassign(cluster, topic, partition, Some(to.clone())).await;
                tracing::info!(partition, ?to, ?result, "reassignment requested");
                history.record(Op::Fault {
                    description: format!(
                        "move {topic}-{partition} to {to:?}: {}",
                        result.unwrap_or_else(|e| e)
                    ),
                });
            }
            None => tracing::info!("no partition layout known: no move"),
        }
        return Ok(());
    }
    if let Action::Kill9WithLaggingFollowers(lag) = action {
        for f in followers {
            cluster.node_mut(*f).pause()?;
        }
        tokio::time::sleep(lag).await;
        let killed = cluster.node_mut(node).kill9();
        for f in followers {
            cluster.node_mut(*f).resume()?;
        }
        killed?;
        return Ok(());
    }
    let n = cluster.node_mut(node);
    match action {
        Action::Kill9 | Action::Kill9WithLaggingFollowers(_) => {
            n.kill9()?;
        }
        Action::Terminate => match n.terminate(TERMINATE_TIMEOUT).await {
            Ok(status) if !status.success() => {
                tracing::warn!(node, %status, "unclean exit on SIGTERM");
            }
            Ok(_) => {}
            Err(NodeError::StopTimeout { .. }) => {
                tracing::warn!(node, "no exit within {TERMINATE_TIMEOUT:?} of SIGTERM");
                history.record(Op::Fault {
                    description: format!(
                        "kill -9 node {node} (no exit within {TERMINATE_TIMEOUT:?} of SIGTERM)"
                    ),
                });
                n.kill9()?;
            }
            Err(e) => return Err(e),
        },
        Action::Pause => n.pause()?,
        Action::Link(fault, dir) => match dir {
            Some(d) => n.proxy().set(d, fault),
            None => n.proxy().set_both(fault),
        },
        Action::Isolate => {
            if !cluster.isolate(node) {
                tracing::info!(node, "no peer links to cut (a single node)");
            }
        }
        Action::Reassign { .. } => {}
    }
    Ok(())
}

/// The partition and target replicas `pick` draws, from the layout the cluster reports now.
async fn plan_move(cluster: &Cluster, topic: &str, pick: u64) -> Option<(i32, Vec<i32>)> {
    let l = cluster.leadership(topic, PROBE_TIMEOUT).await?;
    let partitions: Vec<i32> = l.replicas.keys().copied().collect();
    if partitions.is_empty() {
        return None;
    }
    let mut rng = SplitMix64::new(pick);
    let partition = partitions[rng.below(partitions.len() as u64) as usize];
    let rf = l.replicas[&partition].len().max(1);
    let n = cluster.len();
    // On a cluster no larger than the replica count, one replica in two moves drops one (it
    // comes back at a later move): otherwise every target would be a reordering.
    let size = if n <= rf && rf > 1 && rng.below(2) == 0 {
        rf - 1
    } else {
        rf.min(n)
    };
    let mut nodes: Vec<i32> = (1..=n as i32).collect();
    for i in (1..nodes.len()).rev() {
        nodes.swap(i, rng.below(i as u64 + 1) as usize);
    }
    nodes.truncate(size);
    Some((partition, nodes))
}

/// AlterPartitionReassignments for one partition (`None`: cancel), sent to the first node that
/// answers, past the proxies; the partition's outcome as text, or why nobody answered.
async fn reassign(
    cluster: &Cluster,
    topic: &str,
    partition: i32,
    to: Option<Vec<i32>>,
) -> Result<String, String> {
    use kafka_protocol::messages::alter_partition_reassignments_request::{
        ReassignablePartition, ReassignableTopic,
    };
    use kafka_protocol::messages::{AlterPartitionReassignmentsRequest, BrokerId, TopicName};
    use kafka_protocol::protocol::StrBytes;

    let req = AlterPartitionReassignmentsRequest::default()
        .with_timeout_ms(10_000)
        .with_topics(vec![ReassignableTopic::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partitions(vec![ReassignablePartition::default()
                .with_partition_index(partition)
                .with_replicas(
                    to.map(|r| r.into_iter().map(BrokerId).collect()),
                )])]);
    let addrs: Vec<std::net::SocketAddr> =
        cluster.nodes().iter().map(|n| n.listen_addr()).collect();
    tokio::task::spawn_blocking(move || {
        let mut last = String::from("no node");
        for addr in addrs {
            let timeout = Duration::from_secs(15);
            let attempt = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1))
                .and_then(|mut s| {
                    s.set_read_timeout(Some(timeout))?;
                    s.set_write_timeout(Some(timeout))?;
                    crate::writers::exchange(&mut s, 1, 0, &req)
                });
            match attempt {
                Ok(resp) if resp.error_code != 0 => last = format!("error {}", resp.error_code),
                Ok(resp) => {
                    let code = resp
                        .responses
                        .iter()
                        .flat_map(|t| &t.partitions)
                        .map(|p| p.error_code)
                        .next()
                        .unwrap_or(-1);
                    return Ok(if code == 0 {
                        "accepted".to_string()
                    } else {
                        format!("refused with error {code}")
                    });
                }
                Err(e) => last = format!("{addr}: {e}"),
            }
        }
        Err(last)
    })
    .await
    .unwrap_or_else(|e| Err(format!("panicked: {e}")))
}

/// Undoes `action` on `node`; returns what was done.
async fn heal(
    cluster: &mut Cluster,
    node: i32,
    action: Action,
    topic: &str,
) -> Result<String, NodeError> {
    if let Action::Reassign { pick } = action {
        // One move in four is cancelled (the others run on).
        if pick >> 62 != 0 {
            return Ok("let the move run on".to_string());
        }
        let Some((partition, _)) = plan_move(cluster, topic, pick).await else {
            return Ok("no partition layout known: nothing to cancel".to_string());
        };
        let result = reassign(cluster, topic, partition, None).await;
        return Ok(format!(
            "cancel the move of {topic}-{partition}: {}",
            result.unwrap_or_else(|e| e)
        ));
    }
    let n = cluster.node_mut(node);
    Ok(match action {
        Action::Kill9 | Action::Kill9WithLaggingFollowers(_) | Action::Terminate => {
            n.restart().await?;
            format!("restart node {node}")
        }
        Action::Pause => {
            n.resume()?;
            format!("SIGCONT node {node}")
        }
        Action::Link(..) => {
            n.proxy().heal();
            format!("heal node {node}'s client link")
        }
        Action::Isolate => {
            cluster.rejoin(node);
            format!("heal node {node}'s links to its peers")
        }
        Action::Reassign { .. } => unreachable!("handled above"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix64_matches_the_reference_sequence() {
        // From the reference implementation with seed 1234567.
        let mut r = SplitMix64::new(1234567);
        assert_eq!(r.next_u64(), 6457827717110365317);
        assert_eq!(r.next_u64(), 3203168211198807973);
    }

    #[test]
    fn a_seed_is_a_whole_schedule() {
        let steps = |seed| {
            let mut s = Schedule::random(seed, 3);
            (0..50).map(|_| s.next_step()).collect::<Vec<_>>()
        };
        assert_eq!(steps(7), steps(7));
        assert_ne!(steps(7), steps(8));
        for s in steps(7) {
            let Target::Node(id) = s.target else {
                panic!("random steps name nodes")
            };
            assert!((1..=3).contains(&id));
        }
    }

    #[test]
    fn process_faults_draw_only_process_faults() {
        let mut s = Schedule::named("process-faults", 1, 1).unwrap();
        for _ in 0..100 {
            let step = s.next_step();
            assert!(!matches!(step.action, Action::Link(..)), "{step:?}");
        }
    }

    #[test]
    fn the_reassign_schedule_moves_partitions_among_process_faults() {
        let mut s = Schedule::named("reassign", 3, 4).unwrap();
        let actions: Vec<Action> = (0..100).map(|_| s.next_step().action).collect();
        assert!(actions.iter().all(|a| matches!(
            a,
            Action::Reassign { .. } | Action::Kill9 | Action::Terminate | Action::Pause
        )));
        let moves = actions
            .iter()
            .filter(|a| matches!(a, Action::Reassign { .. }))
            .count();
        assert!((25..=60).contains(&moves), "{moves} moves in 100 steps");
    }

    #[test]
    fn every_name_builds_and_unknown_names_are_refused() {
        for name in NAMES {
            Schedule::named(name, 0, 3).unwrap().next_step();
        }
        let err = Schedule::named("nope", 0, 3).unwrap_err().to_string();
        assert!(err.contains("leader-kill"), "{err}");
        let mut rolling = Schedule::named("rolling-restart", 0, 3).unwrap();
        let targets: Vec<Target> = (0..4).map(|_| rolling.next_step().target).collect();
        assert_eq!(
            targets,
            [1, 2, 3, 1].map(Target::Node),
            "each node in turn, then again"
        );
    }
}
