//! Moving partitions between brokers: `sluice cluster rebalance`, `sluice cluster
//! decommission`, `sluice cluster reassignments` and `sluice topic reassign`.
//!
//! Every command speaks the Kafka admin APIs a Kafka tool would: Metadata and DescribeCluster
//! for the layout, DescribeLogDirs for partition sizes and copy progress,
//! AlterPartitionReassignments (KIP-455) to start or cancel moves, ListPartitionReassignments
//! to follow them, IncrementalAlterConfigs for the throttle and ElectLeaders to hand
//! leadership to the new preferred replicas. The plan itself is [`crate::plan`].

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use kafka_protocol::messages::alter_partition_reassignments_request::{
    AlterPartitionReassignmentsRequest, ReassignablePartition, ReassignableTopic,
};
use kafka_protocol::messages::alter_partition_reassignments_response::AlterPartitionReassignmentsResponse;
use kafka_protocol::messages::describe_cluster_request::DescribeClusterRequest;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterResponse;
use kafka_protocol::messages::describe_log_dirs_request::DescribeLogDirsRequest;
use kafka_protocol::messages::elect_leaders_request::{ElectLeadersRequest, TopicPartitions};
use kafka_protocol::messages::elect_leaders_response::ElectLeadersResponse;
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig, IncrementalAlterConfigsRequest,
};
use kafka_protocol::messages::incremental_alter_configs_response::IncrementalAlterConfigsResponse;
use kafka_protocol::messages::list_partition_reassignments_request::ListPartitionReassignmentsRequest;
use kafka_protocol::messages::list_partition_reassignments_response::ListPartitionReassignmentsResponse;
use kafka_protocol::messages::{
    ApiKey, BrokerId, DescribeLogDirsResponse, MetadataRequest, MetadataResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use serde::Serialize;

use crate::client::{self, ConnArgs};
use crate::kafka_rpc;
use crate::plan::{self, Move, Placement};
use crate::table::{join, Table};

/// Admin requests that wait on the controller (a reassignment, an election) may take longer
/// than a read.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(35);
/// Between progress checks.
const POLL: Duration = Duration::from_secs(1);
/// The throttle settings `--throttle` sets cluster-wide and removes when the moves are done.
const THROTTLES: [&str; 2] = [
    "leader.replication.throttled.rate",
    "follower.replication.throttled.rate",
];

/// How a move is carried out. With `--json`, the plan goes to stderr as one JSON line (stdout
/// with `--dry-run`) and the outcome to stdout.
#[derive(clap::Args, Clone)]
pub struct MoveArgs {
    /// Only print the plan.
    #[arg(long)]
    pub dry_run: bool,
    /// Limit the copying to this many bytes/s, on each broker (sets
    /// leader.replication.throttled.rate and follower.replication.throttled.rate cluster-wide
    /// and removes them when done).
    #[arg(long, value_name = "BYTES_PER_SEC")]
    pub throttle: Option<u64>,
    /// Start the moves and return without waiting for them.
    #[arg(long)]
    pub no_wait: bool,
    /// Give up waiting after this many seconds (the moves go on).
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<u64>,
}

/// A broker as DescribeCluster reports it.
#[derive(Debug, Clone)]
struct Broker {
    id: i32,
    addr: String,
    rack: Option<String>,
    fenced: bool,
}

/// The cluster as the commands need it.
struct Layout {
    brokers: Vec<Broker>,
    partitions: Vec<Placement>,
    /// (topic, partition) -> leader.
    leaders: BTreeMap<(String, i32), i32>,
}

fn describe_cluster(bootstrap: &str) -> anyhow::Result<Vec<Broker>> {
    let resp: DescribeClusterResponse = kafka_rpc::call(
        bootstrap,
        ApiKey::DescribeCluster,
        2,
        &DescribeClusterRequest::default()
            .with_endpoint_type(1)
            .with_include_fenced_brokers(true),
        client::TIMEOUT,
    )
    .with_context(|| format!("asking {bootstrap} for the brokers"))?;
    check(resp.error_code, "DescribeCluster")?;
    let mut brokers: Vec<Broker> = resp
        .brokers
        .iter()
        .map(|b| Broker {
            id: b.broker_id.0,
            addr: format!("{}:{}", b.host.as_str(), b.port),
            rack: b.rack.as_ref().map(|r| r.to_string()),
            fenced: b.is_fenced,
        })
        .collect();
    brokers.sort_by_key(|b| b.id);
    Ok(brokers)
}

fn check(code: i16, what: &str) -> anyhow::Result<()> {
    if code != 0 {
        bail!("{what} failed: {}", error_name(code));
    }
    Ok(())
}

fn error_name(code: i16) -> String {
    ResponseError::try_from_code(code).map_or_else(|| format!("error {code}"), |e| format!("{e:?}"))
}

/// Every partition (internal topics too), its replicas, leader, and size on its leader.
fn layout(bootstrap: &str) -> anyhow::Result<Layout> {
    let brokers = describe_cluster(bootstrap)?;
    let md: MetadataResponse = kafka_rpc::call(
        bootstrap,
        ApiKey::Metadata,
        12,
        &MetadataRequest::default()
            .with_topics(None)
            .with_allow_auto_topic_creation(false),
        client::TIMEOUT,
    )
    .with_context(|| format!("asking {bootstrap} for the topics"))?;
    let mut partitions = Vec::new();
    let mut leaders = BTreeMap::new();
    for t in &md.topics {
        let Some(name) = t.name.as_ref().map(|n| n.to_string()) else {
            continue;
        };
        if t.error_code != 0 {
            continue;
        }
        for p in &t.partitions {
            partitions.push(Placement {
                topic: name.clone(),
                partition: p.partition_index,
                replicas: p.replica_nodes.iter().map(|b| b.0).collect(),
                size: 0,
            });
            leaders.insert((name.clone(), p.partition_index), p.leader_id.0);
        }
    }
    partitions.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
    let sizes = sizes(&brokers, None);
    for p in &mut partitions {
        let leader = leaders[&(p.topic.clone(), p.partition)];
        p.size = sizes
            .get(&(leader, p.topic.clone(), p.partition))
            .copied()
            .unwrap_or(0);
    }
    Ok(Layout {
        brokers,
        partitions,
        leaders,
    })
}

/// Partition sizes as each live broker reports them (DescribeLogDirs, all topics), keyed by
/// (broker, topic, partition); `only` limits the brokers asked.
fn sizes(brokers: &[Broker], only: Option<&[i32]>) -> BTreeMap<(i32, String, i32), u64> {
    std::thread::scope(|scope| {
        let asks: Vec<_> = brokers
            .iter()
            .filter(|b| !b.fenced && only.is_none_or(|o| o.contains(&b.id)))
            .map(|b| {
                scope.spawn(move || {
                    let resp: anyhow::Result<DescribeLogDirsResponse> = kafka_rpc::call(
                        &b.addr,
                        ApiKey::DescribeLogDirs,
                        3,
                        &DescribeLogDirsRequest::default().with_topics(None),
                        client::TIMEOUT,
                    );
                    (b.id, resp)
                })
            })
            .collect();
        let mut out = BTreeMap::new();
        for ask in asks {
            let Ok((broker, Ok(resp))) = ask.join() else {
                continue;
            };
            for dir in resp.results.iter().filter(|d| d.error_code == 0) {
                for t in &dir.topics {
                    for p in t.partitions.iter().filter(|p| !p.is_future_key) {
                        out.insert(
                            (broker, t.name.to_string(), p.partition_index),
                            p.partition_size.max(0) as u64,
                        );
                    }
                }
            }
        }
        out
    })
}

/// The brokers a plan may place replicas on: live, minus `excluded`. Refuses while a replica
/// sits on a fenced broker that is not being emptied: it may only be restarting, and moving
/// everything off it is not what a rebalance should decide.
fn eligible(layout: &Layout, excluded: &[i32]) -> anyhow::Result<Vec<(i32, Option<String>)>> {
    for b in layout.brokers.iter().filter(|b| b.fenced) {
        if excluded.contains(&b.id) {
            continue;
        }
        if let Some(p) = layout
            .partitions
            .iter()
            .find(|p| p.replicas.contains(&b.id))
        {
            bail!(
                "broker {} is fenced (down or restarting) and holds replicas ({}-{} and maybe \
                 more): bring it back, or move everything off it with `sluice cluster \
                 decommission {}`",
                b.id,
                p.topic,
                p.partition,
                b.id
            );
        }
    }
    Ok(layout
        .brokers
        .iter()
        .filter(|b| !b.fenced && !excluded.contains(&b.id))
        .map(|b| (b.id, b.rack.clone()))
        .collect())
}

/// A move under way (ListPartitionReassignments).
#[derive(Debug, Serialize)]
struct Ongoing {
    topic: String,
    partition: i32,
    replicas: Vec<i32>,
    adding: Vec<i32>,
    removing: Vec<i32>,
}

/// The moves under way.
fn ongoing(bootstrap: &str) -> anyhow::Result<Vec<Ongoing>> {
    ongoing_within(bootstrap, Duration::from_secs(30))
}

/// The moves under way, if the broker can tell within `timeout` (it asks the controller).
fn ongoing_within(bootstrap: &str, timeout: Duration) -> anyhow::Result<Vec<Ongoing>> {
    let resp: ListPartitionReassignmentsResponse = kafka_rpc::call(
        bootstrap,
        ApiKey::ListPartitionReassignments,
        0,
        &ListPartitionReassignmentsRequest::default()
            .with_timeout_ms(timeout.as_millis() as i32)
            .with_topics(None),
        timeout + Duration::from_secs(5),
    )
    .with_context(|| format!("asking {bootstrap} for ongoing reassignments"))?;
    check(resp.error_code, "ListPartitionReassignments")?;
    let ids = |v: &[BrokerId]| v.iter().map(|b| b.0).collect::<Vec<i32>>();
    Ok(resp
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(|p| Ongoing {
                topic: t.name.to_string(),
                partition: p.partition_index,
                replicas: ids(&p.replicas),
                adding: ids(&p.adding_replicas),
                removing: ids(&p.removing_replicas),
            })
        })
        .collect())
}

/// A partition's move under way: the replicas it adds and those it will remove.
pub type Change = (Vec<i32>, Vec<i32>);

/// The moves under way among `topic`'s partitions, by partition.
/// Asked for a description, so it waits a few seconds at most.
pub fn ongoing_in(bootstrap: &str, topic: &str) -> anyhow::Result<BTreeMap<i32, Change>> {
    Ok(ongoing_within(bootstrap, Duration::from_secs(5))?
        .into_iter()
        .filter(|o| o.topic == topic)
        .map(|o| (o.partition, (o.adding, o.removing)))
        .collect())
}

/// Plans over the whole cluster with `excluded` emptied, prints the plan, and unless
/// `--dry-run` carries it out.
pub fn rebalance(conn: &ConnArgs, args: &MoveArgs, excluded: &[i32]) -> anyhow::Result<()> {
    let bootstrap = &conn.brokers;
    let busy = ongoing(bootstrap)?;
    if let Some(o) = busy.first() {
        bail!(
            "{} reassignment(s) already under way ({}-{} ...): wait for them, or cancel them \
             with `sluice cluster reassignments --cancel`",
            busy.len(),
            o.topic,
            o.partition
        );
    }
    let layout = layout(bootstrap)?;
    for b in excluded {
        if !layout.brokers.iter().any(|x| x.id == *b) {
            bail!("broker {b} is not registered in this cluster");
        }
    }
    let targets = eligible(&layout, excluded)?;
    let moves = plan::plan(&layout.partitions, &targets)?;
    print_plan(conn, &layout, &moves, args.dry_run)?;
    if args.dry_run || moves.is_empty() {
        return Ok(());
    }
    execute(conn, args, &moves)?;
    if !conn.json {
        summarize(bootstrap)?;
    }
    Ok(())
}

#[derive(Serialize)]
struct PlannedMove<'a> {
    topic: &'a str,
    partition: i32,
    from: &'a [i32],
    to: &'a [i32],
    bytes: u64,
}

fn print_plan(
    conn: &ConnArgs,
    layout: &Layout,
    moves: &[Move],
    dry_run: bool,
) -> anyhow::Result<()> {
    let total: u64 = moves.iter().map(|m| m.bytes).sum();
    if conn.json {
        let list: Vec<PlannedMove> = moves
            .iter()
            .map(|m| PlannedMove {
                topic: &m.topic,
                partition: m.partition,
                from: &m.from,
                to: &m.to,
                bytes: m.bytes,
            })
            .collect();
        // With --dry-run the plan is the whole answer; otherwise the result follows it.
        if dry_run {
            return client::print_json(&serde_json::json!({ "moves": list, "bytes": total }));
        }
        eprintln!(
            "{}",
            serde_json::to_string(&serde_json::json!({ "moves": list, "bytes": total }))?
        );
        return Ok(());
    }
    if moves.is_empty() {
        println!("Nothing to move: replicas and preferred leaders are already spread evenly.");
        return Ok(());
    }
    let mut t = Table::new(&["TOPIC", "PARTITION", "LEADER", "FROM", "TO", "COPY"]);
    for m in moves {
        t.row(vec![
            m.topic.clone(),
            m.partition.to_string(),
            layout
                .leaders
                .get(&(m.topic.clone(), m.partition))
                .map_or("-".into(), |l| l.to_string()),
            join(&m.from),
            join(&m.to),
            human_bytes(m.bytes),
        ]);
    }
    t.print();
    let copies: usize = moves.iter().map(|m| m.adding().len()).sum();
    println!();
    println!(
        "{} partition(s) change, {copies} new replica(s), {} to copy.",
        moves.len(),
        human_bytes(total)
    );
    let mut replicas: BTreeMap<i32, (usize, usize)> = BTreeMap::new();
    for p in &layout.partitions {
        let list = moves
            .iter()
            .find(|m| m.topic == p.topic && m.partition == p.partition)
            .map_or(&p.replicas, |m| &m.to);
        for (i, b) in list.iter().enumerate() {
            let e = replicas.entry(*b).or_default();
            e.0 += 1;
            if i == 0 {
                e.1 += 1;
            }
        }
    }
    println!("After the moves (replicas / preferred leaderships per broker):");
    let mut t = Table::new(&["BROKER", "REPLICAS", "PREFERRED-LEADER"]);
    for (b, (r, l)) in replicas {
        t.row(vec![b.to_string(), r.to_string(), l.to_string()]);
    }
    t.print();
    if dry_run {
        println!("(dry run: nothing was changed)");
    }
    Ok(())
}

/// Starts `moves`, waits for them with a progress line per second, then elects the new
/// preferred leaders. The throttle, if any, is set first and removed at the end.
pub fn execute(conn: &ConnArgs, args: &MoveArgs, moves: &[Move]) -> anyhow::Result<()> {
    let bootstrap = &conn.brokers;
    if let Some(rate) = args.throttle {
        set_throttle(bootstrap, Some(rate))?;
    }
    let wanted: Vec<(String, i32, Option<Vec<i32>>)> = moves
        .iter()
        .map(|m| (m.topic.clone(), m.partition, Some(m.to.clone())))
        .collect();
    let refused = alter(bootstrap, &wanted)?;
    if !refused.is_empty() {
        let list: Vec<String> = refused
            .iter()
            .map(|(t, p, e)| format!("{t}-{p}: {e}"))
            .collect();
        bail!("reassignment refused for {}", list.join("; "));
    }
    if args.no_wait {
        if !conn.json {
            println!(
                "Started {} move(s). Follow them with `sluice cluster reassignments`.",
                moves.len()
            );
            if args.throttle.is_some() {
                println!(
                    "The throttle stays until the moves are cancelled or {} are reset \
                     (IncrementalAlterConfigs on the cluster-wide broker resource).",
                    THROTTLES.join(" and ")
                );
            }
        }
        return Ok(());
    }
    let started = Instant::now();
    let outcome = wait(conn, args, moves, started);
    if args.throttle.is_some() {
        remove_throttle(bootstrap);
    }
    outcome?;
    let elected = elect_preferred(bootstrap, moves)?;
    if conn.json {
        client::print_json(&serde_json::json!({
            "moved": moves.len(),
            "bytes": moves.iter().map(|m| m.bytes).sum::<u64>(),
            "seconds": started.elapsed().as_secs_f64(),
            "leaders_moved": elected,
        }))?;
    } else {
        println!(
            "Done: {} partition(s) moved in {:.1} s; {elected} leadership(s) moved to the new \
             preferred replicas.",
            moves.len(),
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

/// Sends AlterPartitionReassignments; returns the partitions refused, with why.
fn alter(
    bootstrap: &str,
    wanted: &[(String, i32, Option<Vec<i32>>)],
) -> anyhow::Result<Vec<(String, i32, String)>> {
    let mut topics: Vec<ReassignableTopic> = Vec::new();
    for (t, p, target) in wanted {
        let part = ReassignablePartition::default()
            .with_partition_index(*p)
            .with_replicas(
                target
                    .as_ref()
                    .map(|r| r.iter().map(|b| BrokerId(*b)).collect()),
            );
        match topics.iter_mut().find(|x| x.name.as_str() == t) {
            Some(x) => x.partitions.push(part),
            None => topics.push(
                ReassignableTopic::default()
                    .with_name(TopicName(StrBytes::from_string(t.clone())))
                    .with_partitions(vec![part]),
            ),
        }
    }
    let resp: AlterPartitionReassignmentsResponse = kafka_rpc::call(
        bootstrap,
        ApiKey::AlterPartitionReassignments,
        0,
        &AlterPartitionReassignmentsRequest::default()
            .with_timeout_ms(30_000)
            .with_topics(topics),
        ADMIN_TIMEOUT,
    )
    .with_context(|| format!("asking {bootstrap} to reassign partitions"))?;
    if resp.error_code != 0 {
        bail!(
            "AlterPartitionReassignments failed: {} {}",
            error_name(resp.error_code),
            resp.error_message.as_deref().unwrap_or_default()
        );
    }
    let mut refused = Vec::new();
    for t in &resp.responses {
        for p in t.partitions.iter().filter(|p| p.error_code != 0) {
            refused.push((
                t.name.to_string(),
                p.partition_index,
                format!(
                    "{} {}",
                    error_name(p.error_code),
                    p.error_message.as_deref().unwrap_or_default()
                ),
            ));
        }
    }
    Ok(refused)
}

/// Waits until none of `moves` is under way, printing progress (partitions done, bytes the new
/// replicas hold) every second.
fn wait(conn: &ConnArgs, args: &MoveArgs, moves: &[Move], started: Instant) -> anyhow::Result<()> {
    let bootstrap = &conn.brokers;
    let total: u64 = moves.iter().map(|m| m.bytes).sum();
    let brokers = describe_cluster(bootstrap)?;
    let mut last_line = Instant::now() - POLL;
    loop {
        let busy = ongoing(bootstrap)?;
        let pending: Vec<&Move> = moves
            .iter()
            .filter(|m| {
                busy.iter()
                    .any(|o| o.topic == m.topic && o.partition == m.partition)
            })
            .collect();
        if pending.is_empty() {
            return Ok(());
        }
        if let Some(limit) = args.timeout {
            if started.elapsed() >= Duration::from_secs(limit) {
                bail!(
                    "{} move(s) still under way after {limit} s; they go on (see `sluice \
                     cluster reassignments`)",
                    pending.len()
                );
            }
        }
        if !conn.json && last_line.elapsed() >= POLL {
            last_line = Instant::now();
            let adding: Vec<i32> = pending.iter().flat_map(|m| m.adding()).collect();
            let held = sizes(&brokers, Some(&adding));
            let mut copied: u64 = moves
                .iter()
                .filter(|m| !pending.contains(m))
                .map(|m| m.bytes)
                .sum();
            for m in &pending {
                let per = m.bytes / m.adding().len().max(1) as u64;
                for b in m.adding() {
                    let have = held
                        .get(&(b, m.topic.clone(), m.partition))
                        .copied()
                        .unwrap_or(0);
                    copied += have.min(per);
                }
            }
            println!(
                "[{:>5.1} s] {} of {} partition(s) moved, {} of {} copied",
                started.elapsed().as_secs_f64(),
                moves.len() - pending.len(),
                moves.len(),
                human_bytes(copied),
                human_bytes(total)
            );
        }
        std::thread::sleep(POLL);
    }
}

/// Preferred elections for the moved partitions; returns how many leaderships moved.
fn elect_preferred(bootstrap: &str, moves: &[Move]) -> anyhow::Result<usize> {
    let mut topics: Vec<TopicPartitions> = Vec::new();
    for m in moves {
        match topics.iter_mut().find(|t| t.topic.as_str() == m.topic) {
            Some(t) => t.partitions.push(m.partition),
            None => topics.push(
                TopicPartitions::default()
                    .with_topic(TopicName(StrBytes::from_string(m.topic.clone())))
                    .with_partitions(vec![m.partition]),
            ),
        }
    }
    let resp: ElectLeadersResponse = kafka_rpc::call(
        bootstrap,
        ApiKey::ElectLeaders,
        2,
        &ElectLeadersRequest::default()
            .with_election_type(0)
            .with_topic_partitions(Some(topics))
            .with_timeout_ms(30_000),
        ADMIN_TIMEOUT,
    )
    .with_context(|| format!("asking {bootstrap} for preferred elections"))?;
    check(resp.error_code, "ElectLeaders")?;
    Ok(resp
        .replica_election_results
        .iter()
        .flat_map(|t| &t.partition_result)
        .filter(|p| p.error_code == 0)
        .count())
}

/// Sets both throttle rates cluster-wide (`Some`), or removes them (`None`).
fn set_throttle(bootstrap: &str, rate: Option<u64>) -> anyhow::Result<()> {
    let configs = THROTTLES
        .iter()
        .map(|k| {
            AlterableConfig::default()
                .with_name(StrBytes::from_static_str(k))
                // 0: SET, 1: DELETE.
                .with_config_operation(if rate.is_some() { 0 } else { 1 })
                .with_value(rate.map(|r| StrBytes::from_string(r.to_string())))
        })
        .collect();
    let resp: IncrementalAlterConfigsResponse = kafka_rpc::call(
        bootstrap,
        ApiKey::IncrementalAlterConfigs,
        1,
        &IncrementalAlterConfigsRequest::default().with_resources(vec![
            AlterConfigsResource::default()
                // BROKER, "": the cluster-wide default.
                .with_resource_type(4)
                .with_resource_name(StrBytes::from_static_str(""))
                .with_configs(configs),
        ]),
        ADMIN_TIMEOUT,
    )
    .with_context(|| format!("asking {bootstrap} to set the replication throttle"))?;
    for r in &resp.responses {
        if r.error_code != 0 {
            bail!(
                "setting the replication throttle failed: {} {}",
                error_name(r.error_code),
                r.error_message.as_deref().unwrap_or_default()
            );
        }
    }
    Ok(())
}

/// A cancel removes the throttle a `--no-wait` move left, as Kafka's `--cancel` does.
fn remove_throttle(bootstrap: &str) {
    if let Err(e) = set_throttle(bootstrap, None) {
        eprintln!("warning: could not remove the replication throttle: {e:#}");
    }
}

/// Replicas and leaders per broker, after the moves.
fn summarize(bootstrap: &str) -> anyhow::Result<()> {
    let layout = layout(bootstrap)?;
    let mut per: BTreeMap<i32, (usize, usize, u64)> = BTreeMap::new();
    for p in &layout.partitions {
        for b in &p.replicas {
            let e = per.entry(*b).or_default();
            e.0 += 1;
            e.2 += p.size;
        }
        if let Some(l) = layout.leaders.get(&(p.topic.clone(), p.partition)) {
            per.entry(*l).or_default().1 += 1;
        }
    }
    println!();
    let mut t = Table::new(&["BROKER", "REPLICAS", "LEADERS", "BYTES"]);
    for (b, (r, l, bytes)) in per {
        t.row(vec![
            b.to_string(),
            r.to_string(),
            l.to_string(),
            human_bytes(bytes),
        ]);
    }
    t.print();
    Ok(())
}

/// `sluice topic reassign`: one partition to new replicas, or its move cancelled.
pub fn reassign_one(
    conn: &ConnArgs,
    args: &MoveArgs,
    topic: &str,
    partition: i32,
    replicas: Option<Vec<i32>>,
) -> anyhow::Result<()> {
    let bootstrap = &conn.brokers;
    let Some(to) = replicas else {
        let refused = alter(bootstrap, &[(topic.to_string(), partition, None)])?;
        if let Some((_, _, e)) = refused.first() {
            bail!("cannot cancel the move of {topic}-{partition}: {e}");
        }
        remove_throttle(bootstrap);
        if conn.json {
            return client::print_json(
                &serde_json::json!({ "cancelled": format!("{topic}-{partition}") }),
            );
        }
        println!("Cancelled the move of {topic}-{partition}: it keeps its original replicas.");
        return Ok(());
    };
    let layout = layout(bootstrap)?;
    let Some(p) = layout
        .partitions
        .iter()
        .find(|p| p.topic == topic && p.partition == partition)
    else {
        bail!("unknown partition {topic}-{partition}");
    };
    let added = to.iter().filter(|b| !p.replicas.contains(b)).count() as u64;
    let m = Move {
        topic: topic.to_string(),
        partition,
        from: p.replicas.clone(),
        to,
        bytes: p.size * added,
    };
    print_plan(conn, &layout, std::slice::from_ref(&m), args.dry_run)?;
    if args.dry_run {
        return Ok(());
    }
    execute(conn, args, std::slice::from_ref(&m))
}

/// `sluice cluster reassignments`: the moves under way, or (`cancel`) cancels them all.
pub fn list(conn: &ConnArgs, cancel: bool) -> anyhow::Result<()> {
    let bootstrap = &conn.brokers;
    let busy = ongoing(bootstrap)?;
    if cancel && !busy.is_empty() {
        let wanted: Vec<(String, i32, Option<Vec<i32>>)> = busy
            .iter()
            .map(|o| (o.topic.clone(), o.partition, None))
            .collect();
        let refused = alter(bootstrap, &wanted)?;
        for (t, p, e) in &refused {
            eprintln!("could not cancel {t}-{p}: {e}");
        }
        remove_throttle(bootstrap);
        if !conn.json {
            println!("Cancelled {} move(s).", busy.len() - refused.len());
        }
        if !refused.is_empty() {
            bail!("{} move(s) could not be cancelled", refused.len());
        }
        return Ok(());
    }
    if conn.json {
        return client::print_json(&serde_json::json!({ "reassignments": busy }));
    }
    if busy.is_empty() {
        println!("No reassignment is under way.");
        return Ok(());
    }
    let mut t = Table::new(&["TOPIC", "PARTITION", "REPLICAS", "ADDING", "REMOVING"]);
    for o in &busy {
        t.row(vec![
            o.topic.clone(),
            o.partition.to_string(),
            join(&o.replicas),
            join(&o.adding),
            join(&o.removing),
        ]);
    }
    t.print();
    Ok(())
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::human_bytes;

    #[test]
    fn bytes_read_as_people_write_them() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(5 << 30), "5.0 GiB");
    }
}
