//! `sluice cluster info`: the cluster id, every broker (address, rack, alive or fenced) and the
//! controller quorum (active controller, voters and how far each is behind). Asks with
//! DescribeCluster and DescribeQuorum, as admin tools do.

use clap::{Args, Subcommand};
use kafka_protocol::messages::describe_cluster_request::DescribeClusterRequest;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterResponse;
use kafka_protocol::messages::describe_quorum_request::{self as dq_req, DescribeQuorumRequest};
use kafka_protocol::messages::describe_quorum_response::DescribeQuorumResponse;
use kafka_protocol::messages::{ApiKey, TopicName};
use kafka_protocol::protocol::StrBytes;
use serde::Serialize;

use crate::client::{self, ConnArgs};
use crate::kafka_rpc;
use crate::reassign;
use crate::table::Table;

#[derive(Subcommand)]
pub enum ClusterCommand {
    /// Show the cluster id, the brokers and the controller quorum.
    Info(InfoArgs),
    /// Spread replicas and preferred leaders evenly over the live brokers (rack-aware): print
    /// the plan (what moves where, bytes to copy), carry it out and show progress until done.
    Rebalance(RebalanceArgs),
    /// Move every replica off a broker (spread evenly over the others) so it can be stopped.
    Decommission(DecommissionArgs),
    /// List the partition moves under way, or cancel them all.
    Reassignments(ReassignmentsArgs),
}

#[derive(Args)]
pub struct RebalanceArgs {
    #[command(flatten)]
    conn: ConnArgs,
    #[command(flatten)]
    moves: reassign::MoveArgs,
}

#[derive(Args)]
pub struct DecommissionArgs {
    #[command(flatten)]
    conn: ConnArgs,
    /// The broker to empty.
    broker: i32,
    #[command(flatten)]
    moves: reassign::MoveArgs,
}

#[derive(Args)]
pub struct ReassignmentsArgs {
    #[command(flatten)]
    conn: ConnArgs,
    /// Cancel every move under way: each partition returns to its original replicas.
    #[arg(long)]
    cancel: bool,
}

#[derive(Args)]
pub struct InfoArgs {
    #[command(flatten)]
    conn: ConnArgs,
}

#[derive(Serialize)]
struct BrokerInfo {
    id: i32,
    host: String,
    port: i32,
    rack: Option<String>,
    fenced: bool,
}

#[derive(Serialize)]
struct VoterInfo {
    id: i32,
    /// The offset after the last metadata entry the active controller knows this node holds;
    /// -1 if unknown.
    log_end_offset: i64,
    /// Entries behind the committed metadata; -1 if unknown.
    lag: i64,
}

#[derive(Serialize)]
struct QuorumInfo {
    leader_id: i32,
    /// The Raft term.
    leader_epoch: i32,
    high_watermark: i64,
    voters: Vec<VoterInfo>,
    /// Broker-only nodes that follow the metadata without voting.
    observers: Vec<VoterInfo>,
}

#[derive(Serialize, Default)]
struct PartitionCounts {
    partitions: usize,
    /// Fewer in-sync replicas than replicas.
    under_replicated: usize,
    /// No leader: not readable or writable until one of its in-sync replicas returns.
    offline: usize,
}

#[derive(Serialize)]
struct ClusterInfo {
    cluster_id: Option<String>,
    /// The active controller; -1 during an election.
    controller_id: i32,
    brokers: Vec<BrokerInfo>,
    partitions: PartitionCounts,
    quorum: Option<QuorumInfo>,
    cli_version: &'static str,
}

pub fn run(cmd: ClusterCommand) -> anyhow::Result<()> {
    match cmd {
        ClusterCommand::Info(a) => info(a),
        ClusterCommand::Rebalance(a) => reassign::rebalance(&a.conn, &a.moves, &[]),
        ClusterCommand::Decommission(a) => {
            reassign::rebalance(&a.conn, &a.moves, &[a.broker])?;
            if !a.moves.dry_run && !a.moves.no_wait && !a.conn.json {
                println!(
                    "Broker {} holds no replica now: it can be stopped.",
                    a.broker
                );
            }
            Ok(())
        }
        ClusterCommand::Reassignments(a) => reassign::list(&a.conn, a.cancel),
    }
}

fn unreachable(brokers: &str, e: anyhow::Error) -> anyhow::Error {
    anyhow::anyhow!(
        "cannot reach a broker at {brokers} within {}s ({e:#}); is `sluice serve` running there?",
        client::TIMEOUT.as_secs()
    )
}

fn info(a: InfoArgs) -> anyhow::Result<()> {
    let brokers = &a.conn.brokers;
    let cluster: DescribeClusterResponse = kafka_rpc::call(
        brokers,
        ApiKey::DescribeCluster,
        2,
        &DescribeClusterRequest::default()
            .with_endpoint_type(1)
            .with_include_fenced_brokers(true),
        client::TIMEOUT,
    )
    .map_err(|e| unreachable(brokers, e))?;
    anyhow::ensure!(
        cluster.error_code == 0,
        "DescribeCluster failed: error {} {}",
        cluster.error_code,
        cluster.error_message.as_deref().unwrap_or_default()
    );
    let quorum: Option<DescribeQuorumResponse> = kafka_rpc::call(
        brokers,
        ApiKey::DescribeQuorum,
        2,
        &DescribeQuorumRequest::default().with_topics(vec![dq_req::TopicData::default()
            .with_topic_name(TopicName(StrBytes::from_static_str("__cluster_metadata")))
            .with_partitions(vec![dq_req::PartitionData::default()])]),
        client::TIMEOUT,
    )
    .ok();
    let quorum = quorum.and_then(|q| {
        let p = q.topics.first()?.partitions.first()?.clone();
        if p.error_code != 0 {
            return None;
        }
        let hw = p.high_watermark;
        let voter =
            |r: &kafka_protocol::messages::describe_quorum_response::ReplicaState| VoterInfo {
                id: r.replica_id.0,
                log_end_offset: r.log_end_offset,
                lag: if r.log_end_offset < 0 {
                    -1
                } else {
                    (hw - r.log_end_offset).max(0)
                },
            };
        Some(QuorumInfo {
            leader_id: p.leader_id.0,
            leader_epoch: p.leader_epoch,
            high_watermark: hw,
            voters: p.current_voters.iter().map(voter).collect(),
            observers: p.observers.iter().map(voter).collect(),
        })
    });
    let metadata: kafka_protocol::messages::MetadataResponse = kafka_rpc::call(
        brokers,
        ApiKey::Metadata,
        12,
        &kafka_protocol::messages::MetadataRequest::default()
            .with_topics(None)
            .with_allow_auto_topic_creation(false),
        client::TIMEOUT,
    )
    .map_err(|e| unreachable(brokers, e))?;
    let mut partitions = PartitionCounts::default();
    for p in metadata.topics.iter().flat_map(|t| &t.partitions) {
        partitions.partitions += 1;
        if p.leader_id.0 < 0 {
            partitions.offline += 1;
        }
        if p.isr_nodes.len() < p.replica_nodes.len() {
            partitions.under_replicated += 1;
        }
    }
    let mut list: Vec<BrokerInfo> = cluster
        .brokers
        .iter()
        .map(|b| BrokerInfo {
            id: b.broker_id.0,
            host: b.host.to_string(),
            port: b.port,
            rack: b.rack.as_ref().map(|r| r.to_string()),
            fenced: b.is_fenced,
        })
        .collect();
    list.sort_by_key(|b| b.id);
    let info = ClusterInfo {
        cluster_id: Some(cluster.cluster_id.to_string()).filter(|c| !c.is_empty()),
        controller_id: cluster.controller_id.0,
        brokers: list,
        partitions,
        quorum,
        cli_version: env!("CARGO_PKG_VERSION"),
    };
    if a.conn.json {
        return client::print_json(&info);
    }
    println!(
        "Cluster id: {}",
        info.cluster_id.as_deref().unwrap_or("(none)")
    );
    println!("Controller: {}", info.controller_id);
    println!(
        "Partitions: {} ({} under-replicated, {} offline)",
        info.partitions.partitions, info.partitions.under_replicated, info.partitions.offline
    );
    println!("sluice CLI: {}", info.cli_version);
    println!();
    let mut t = Table::new(&["BROKER", "HOST", "PORT", "RACK", "STATUS", "CONTROLLER"]);
    for b in &info.brokers {
        t.row(vec![
            b.id.to_string(),
            b.host.clone(),
            b.port.to_string(),
            b.rack.clone().unwrap_or_else(|| "-".into()),
            if b.fenced { "fenced" } else { "alive" }.to_string(),
            if b.id == info.controller_id {
                "yes"
            } else {
                ""
            }
            .to_string(),
        ]);
    }
    t.print();
    if let Some(q) = &info.quorum {
        println!();
        println!(
            "Controller quorum: leader {}, term {}, committed offset {}",
            q.leader_id, q.leader_epoch, q.high_watermark
        );
        let mut t = Table::new(&["NODE", "ROLE", "LOG-END", "LAG"]);
        let show = |n: i64| {
            if n < 0 {
                "?".to_string()
            } else {
                n.to_string()
            }
        };
        for (role, nodes) in [("voter", &q.voters), ("observer", &q.observers)] {
            for v in nodes.iter() {
                let role = if v.id == q.leader_id { "leader" } else { role };
                t.row(vec![
                    v.id.to_string(),
                    role.to_string(),
                    show(v.log_end_offset),
                    show(v.lag),
                ]);
            }
        }
        t.print();
    }
    Ok(())
}
