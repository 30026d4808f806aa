//! `sluice topic create|list|describe|delete|alter-config`.

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use rdkafka::admin::{NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::consumer::Consumer;
use serde::Serialize;

use crate::client::{self, ConnArgs};
use crate::table::{join, Table};

#[derive(Subcommand)]
pub enum TopicCommand {
    /// Create a topic.
    Create(CreateArgs),
    /// List topics.
    List(ListArgs),
    /// Show a topic's partitions (leader, replicas, ISR, each replica's lag, offsets) and
    /// configs.
    Describe(NameArgs),
    /// Delete a topic and its data.
    Delete(NameArgs),
    /// Set (or with --delete, reset) topic configs (IncrementalAlterConfigs).
    AlterConfig(AlterArgs),
    /// Move leadership back to preferred replicas, or (--unclean) elect a leader for
    /// partitions that have none (ElectLeaders).
    ElectLeaders(ElectArgs),
    /// Move one partition to new replicas (AlterPartitionReassignments) and wait until done,
    /// or cancel its move.
    Reassign(ReassignArgs),
}

#[derive(Args)]
pub struct ReassignArgs {
    #[command(flatten)]
    conn: ConnArgs,
    /// The topic.
    topic: String,
    /// The partition to move.
    #[arg(short, long)]
    partition: i32,
    /// The new replicas, comma-separated broker ids; the first is the preferred leader.
    #[arg(long, value_delimiter = ',', required_unless_present = "cancel")]
    replicas: Vec<i32>,
    /// Cancel the partition's move under way: it returns to its original replicas.
    #[arg(long, conflicts_with = "replicas")]
    cancel: bool,
    #[command(flatten)]
    moves: crate::reassign::MoveArgs,
}

#[derive(Args)]
pub struct ElectArgs {
    #[command(flatten)]
    conn: ConnArgs,
    /// Only this topic (default: every partition that needs an election).
    topic: Option<String>,
    /// Only this partition of the topic.
    #[arg(short, long, requires = "topic")]
    partition: Option<i32>,
    /// Elect any live replica of a partition without a live in-sync one: records only the
    /// old leader had are lost.
    #[arg(long)]
    unclean: bool,
}

#[derive(Args)]
pub struct CreateArgs {
    #[command(flatten)]
    conn: ConnArgs,
    name: String,
    /// Number of partitions (default: the broker's num.partitions).
    #[arg(short, long, allow_negative_numbers = true, default_value_t = -1)]
    partitions: i32,
    /// Replication factor (default: the broker's default.replication.factor).
    #[arg(short = 'r', long, allow_negative_numbers = true, default_value_t = -1)]
    replicas: i32,
    /// A topic config, `key=value` (e.g. `retention.ms=86400000`); repeatable.
    #[arg(short = 'c', long = "config", value_name = "KEY=VALUE", value_parser = client::key_value)]
    configs: Vec<(String, String)>,
}

#[derive(Args)]
pub struct ListArgs {
    #[command(flatten)]
    conn: ConnArgs,
    /// Also list internal topics such as `__consumer_offsets`.
    #[arg(long)]
    internal: bool,
}

#[derive(Args)]
pub struct NameArgs {
    #[command(flatten)]
    conn: ConnArgs,
    name: String,
}

#[derive(Args)]
pub struct AlterArgs {
    #[command(flatten)]
    conn: ConnArgs,
    name: String,
    /// A config to set, `key=value`; repeatable.
    #[arg(short = 'c', long = "config", value_name = "KEY=VALUE", value_parser = client::key_value)]
    configs: Vec<(String, String)>,
    /// A config to reset to its default; repeatable.
    #[arg(long = "delete", value_name = "KEY")]
    deletes: Vec<String>,
}

pub fn run(cmd: TopicCommand) -> anyhow::Result<()> {
    match cmd {
        TopicCommand::Create(a) => create(a),
        TopicCommand::List(a) => list(a),
        TopicCommand::Describe(a) => describe(a),
        TopicCommand::Delete(a) => delete(a),
        TopicCommand::AlterConfig(a) => alter_config(a),
        TopicCommand::ElectLeaders(a) => elect_leaders(a),
        TopicCommand::Reassign(a) => crate::reassign::reassign_one(
            &a.conn,
            &a.moves,
            &a.topic,
            a.partition,
            (!a.cancel).then_some(a.replicas),
        ),
    }
}

/// Fails fast (with the address in the message) if no broker answers.
fn check_reachable(brokers: &str) -> anyhow::Result<()> {
    let c = client::lone_consumer(brokers)?;
    client::metadata(&c, brokers, None).map(|_| ())
}

fn create(a: CreateArgs) -> anyhow::Result<()> {
    check_reachable(&a.conn.brokers)?;
    let admin = client::admin(&a.conn.brokers)?;
    let mut nt = NewTopic::new(&a.name, a.partitions, TopicReplication::Fixed(a.replicas));
    for (k, v) in &a.configs {
        nt = nt.set(k, v);
    }
    let res = client::block_on(admin.create_topics(&[nt], &client::admin_opts()))
        .context("CreateTopics")?;
    for r in res {
        if let Err((name, code)) = r {
            bail!("cannot create topic {name:?}: {code}");
        }
    }
    if a.conn.json {
        client::print_json(&serde_json::json!({ "created": a.name }))?;
    } else {
        println!("created topic {}", a.name);
    }
    Ok(())
}

#[derive(Serialize)]
struct TopicSummary {
    name: String,
    partitions: usize,
    replication_factor: usize,
}

fn list(a: ListArgs) -> anyhow::Result<()> {
    let c = client::lone_consumer(&a.conn.brokers)?;
    let md = client::metadata(&c, &a.conn.brokers, None)?;
    let mut topics: Vec<TopicSummary> = md
        .topics()
        .iter()
        .filter(|t| a.internal || !t.name().starts_with("__"))
        .map(|t| TopicSummary {
            name: t.name().to_string(),
            partitions: t.partitions().len(),
            replication_factor: t
                .partitions()
                .first()
                .map(|p| p.replicas().len())
                .unwrap_or(0),
        })
        .collect();
    topics.sort_by(|x, y| x.name.cmp(&y.name));
    if a.conn.json {
        return client::print_json(&serde_json::json!({ "topics": topics }));
    }
    let mut t = Table::new(&["TOPIC", "PARTITIONS", "REPLICATION"]);
    for s in &topics {
        t.row(vec![
            s.name.clone(),
            s.partitions.to_string(),
            s.replication_factor.to_string(),
        ]);
    }
    t.print();
    Ok(())
}

#[derive(Serialize)]
struct PartitionInfo {
    partition: i32,
    leader: i32,
    replicas: Vec<i32>,
    isr: Vec<i32>,
    /// Per replica, in `replicas` order: how many offsets its log end is behind the committed
    /// records (the HW), as its broker reports it (DescribeLogDirs).
    lag: Vec<ReplicaLag>,
    low: i64,
    high: i64,
    /// A move under way (KIP-455): the replicas it adds and those it will remove.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    adding: Vec<i32>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    removing: Vec<i32>,
}

#[derive(Serialize)]
struct ReplicaLag {
    replica: i32,
    /// `None`: unknown (its broker did not answer, does not hold the log, or its replica has
    /// not heard from a leader yet).
    lag: Option<i64>,
}

/// How long `describe` waits for each broker's DescribeLogDirs: a broker that does not answer
/// only makes its replicas' lag unknown.
const LAG_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// Every replica's lag for `topic`'s `partitions` (id, replicas), asking each broker that
/// holds one (DescribeLogDirs v3, all at once). Keyed by (broker, partition); missing: unknown.
fn replica_lags(
    md: &rdkafka::metadata::Metadata,
    topic: &str,
    partitions: &[(i32, Vec<i32>)],
) -> std::collections::BTreeMap<(i32, i32), i64> {
    use kafka_protocol::messages::describe_log_dirs_request::{
        DescribableLogDirTopic, DescribeLogDirsRequest,
    };
    use kafka_protocol::messages::{ApiKey, DescribeLogDirsResponse, TopicName};
    use kafka_protocol::protocol::StrBytes;

    let mut per_broker: std::collections::BTreeMap<i32, Vec<i32>> = Default::default();
    for (partition, replicas) in partitions {
        for r in replicas {
            per_broker.entry(*r).or_default().push(*partition);
        }
    }
    std::thread::scope(|scope| {
        let asks: Vec<_> = per_broker
            .into_iter()
            .filter_map(|(broker, parts)| {
                let b = md.brokers().iter().find(|b| b.id() == broker)?;
                let addr = format!("{}:{}", b.host(), b.port());
                let req = DescribeLogDirsRequest::default().with_topics(Some(vec![
                    DescribableLogDirTopic::default()
                        .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
                        .with_partitions(parts),
                ]));
                Some(scope.spawn(move || {
                    let resp: anyhow::Result<DescribeLogDirsResponse> = crate::kafka_rpc::call(
                        &addr,
                        ApiKey::DescribeLogDirs,
                        3,
                        &req,
                        LAG_TIMEOUT,
                    );
                    (broker, resp)
                }))
            })
            .collect();
        let mut lags = std::collections::BTreeMap::new();
        for ask in asks {
            let Ok((broker, resp)) = ask.join() else {
                continue;
            };
            let Ok(resp) = resp else { continue };
            for dir in resp.results.iter().filter(|d| d.error_code == 0) {
                for t in dir.topics.iter().filter(|t| t.name.as_str() == topic) {
                    for p in t.partitions.iter().filter(|p| !p.is_future_key) {
                        if p.offset_lag >= 0 {
                            lags.insert((broker, p.partition_index), p.offset_lag);
                        }
                    }
                }
            }
        }
        lags
    })
}

#[derive(Serialize)]
struct ConfigInfo {
    name: String,
    value: Option<String>,
    source: String,
    is_default: bool,
    read_only: bool,
}

#[derive(Serialize)]
struct TopicDescription {
    topic: String,
    partitions: Vec<PartitionInfo>,
    /// `None` when the broker could not describe configs; `configs_error` says why.
    configs: Option<Vec<ConfigInfo>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    configs_error: Option<String>,
}

fn describe(a: NameArgs) -> anyhow::Result<()> {
    let brokers = &a.conn.brokers;
    let c = client::lone_consumer(brokers)?;
    let md = client::topic_metadata(&c, brokers, &a.name)?;
    let topic = md
        .topics()
        .iter()
        .find(|t| t.name() == a.name)
        .context("topic missing from metadata")?;
    let layout: Vec<(i32, Vec<i32>)> = topic
        .partitions()
        .iter()
        .map(|p| (p.id(), p.replicas().to_vec()))
        .collect();
    let lags = replica_lags(&md, &a.name, &layout);
    // Best effort, as the configs below: a broker without reassignments shows no moves.
    let mut moving = crate::reassign::ongoing_in(brokers, &a.name).unwrap_or_default();
    let mut partitions = Vec::new();
    for p in topic.partitions() {
        let (low, high) = c
            .fetch_watermarks(&a.name, p.id(), client::TIMEOUT)
            .with_context(|| format!("offsets of {}-{}", a.name, p.id()))?;
        let (adding, removing) = moving.remove(&p.id()).unwrap_or_default();
        partitions.push(PartitionInfo {
            partition: p.id(),
            leader: p.leader(),
            replicas: p.replicas().to_vec(),
            isr: p.isr().to_vec(),
            lag: p
                .replicas()
                .iter()
                .map(|r| ReplicaLag {
                    replica: *r,
                    lag: lags.get(&(*r, p.id())).copied(),
                })
                .collect(),
            low,
            high,
            adding,
            removing,
        });
    }
    partitions.sort_by_key(|p| p.partition);

    let (configs, configs_error) = match describe_configs(brokers, &a.name) {
        Ok(c) => (Some(c), None),
        Err(e) => (None, Some(format!("{e:#}"))),
    };
    let d = TopicDescription {
        topic: a.name.clone(),
        partitions,
        configs,
        configs_error,
    };
    if a.conn.json {
        return client::print_json(&d);
    }
    println!("Topic: {}  Partitions: {}", d.topic, d.partitions.len());
    let any_move = d
        .partitions
        .iter()
        .any(|p| !p.adding.is_empty() || !p.removing.is_empty());
    let mut header = vec![
        "PARTITION",
        "LEADER",
        "REPLICAS",
        "ISR",
        "LAG",
        "LOW",
        "HIGH",
    ];
    if any_move {
        header.push("MOVING");
    }
    let mut t = Table::new(&header);
    for p in &d.partitions {
        let lag = p
            .lag
            .iter()
            .map(|l| {
                let v = l.lag.map_or_else(|| "?".to_string(), |v| v.to_string());
                format!("{}:{v}", l.replica)
            })
            .collect::<Vec<_>>()
            .join(" ");
        let mut row = vec![
            p.partition.to_string(),
            p.leader.to_string(),
            join(&p.replicas),
            join(&p.isr),
            lag,
            p.low.to_string(),
            p.high.to_string(),
        ];
        if any_move {
            // The replicas the move adds (+) and those it will remove (-).
            let change: Vec<String> = (p.adding.iter().map(|b| format!("+{b}")))
                .chain(p.removing.iter().map(|b| format!("-{b}")))
                .collect();
            row.push(if change.is_empty() {
                "-".to_string()
            } else {
                change.join(" ")
            });
        }
        t.row(row);
    }
    t.print();
    println!();
    match (&d.configs, &d.configs_error) {
        (Some(configs), _) => {
            let mut t = Table::new(&["CONFIG", "VALUE", "SOURCE"]);
            for c in configs {
                t.row(vec![
                    c.name.clone(),
                    c.value.clone().unwrap_or_else(|| "-".into()),
                    c.source.clone(),
                ]);
            }
            t.print();
        }
        (None, Some(e)) => println!("Configs: not available ({e})"),
        (None, None) => {}
    }
    Ok(())
}

/// DescribeConfigs for one topic. An error here is reported as a note, not a failure: older
/// brokers (and sluice before configs landed) answer UNSUPPORTED_VERSION.
fn describe_configs(brokers: &str, topic: &str) -> anyhow::Result<Vec<ConfigInfo>> {
    let admin = client::admin(brokers)?;
    let spec = ResourceSpecifier::Topic(topic);
    let res = client::block_on(admin.describe_configs([&spec], &client::admin_opts()))
        .context("DescribeConfigs")?;
    let Some(first) = res.into_iter().next() else {
        bail!("DescribeConfigs returned no result");
    };
    let resource = first.map_err(|code| anyhow::anyhow!("DescribeConfigs: {code}"))?;
    let mut out: Vec<ConfigInfo> = resource
        .entries
        .into_iter()
        .map(|e| ConfigInfo {
            source: format!("{:?}", e.source),
            name: e.name,
            value: if e.is_sensitive { None } else { e.value },
            is_default: e.is_default,
            read_only: e.is_read_only,
        })
        .collect();
    out.sort_by(|x, y| x.name.cmp(&y.name));
    Ok(out)
}

fn delete(a: NameArgs) -> anyhow::Result<()> {
    let brokers = &a.conn.brokers;
    let c = client::lone_consumer(brokers)?;
    client::topic_metadata(&c, brokers, &a.name)?;
    let admin = client::admin(brokers)?;
    let res = client::block_on(admin.delete_topics(&[a.name.as_str()], &client::admin_opts()))
        .context("DeleteTopics")?;
    for r in res {
        if let Err((name, code)) = r {
            bail!("cannot delete topic {name:?}: {code}");
        }
    }
    if a.conn.json {
        client::print_json(&serde_json::json!({ "deleted": a.name }))?;
    } else {
        println!("deleted topic {}", a.name);
    }
    Ok(())
}

fn alter_config(a: AlterArgs) -> anyhow::Result<()> {
    if a.configs.is_empty() && a.deletes.is_empty() {
        bail!("nothing to change: give -c key=value and/or --delete key");
    }
    let brokers = &a.conn.brokers;
    let c = client::lone_consumer(brokers)?;
    client::topic_metadata(&c, brokers, &a.name)?;
    let admin = client::admin(brokers)?;
    crate::configs::incremental_alter_topic(&admin, &a.name, &a.configs, &a.deletes)?;
    if a.conn.json {
        client::print_json(&serde_json::json!({
            "topic": a.name,
            "set": a.configs.iter().map(|(k, v)| (k.clone(), v.clone())).collect::<std::collections::BTreeMap<_, _>>(),
            "deleted": a.deletes,
        }))?;
    } else {
        println!("updated configs of topic {}", a.name);
    }
    Ok(())
}

#[derive(Serialize)]
struct Election {
    topic: String,
    partition: i32,
    /// `elected`, or the Kafka error name.
    result: String,
}

fn elect_leaders(a: ElectArgs) -> anyhow::Result<()> {
    use kafka_protocol::messages::elect_leaders_request::{ElectLeadersRequest, TopicPartitions};
    use kafka_protocol::messages::elect_leaders_response::ElectLeadersResponse;
    use kafka_protocol::messages::{ApiKey, TopicName};
    use kafka_protocol::protocol::StrBytes;

    let brokers = &a.conn.brokers;
    let partitions = match &a.topic {
        None => None,
        Some(t) => {
            let indexes = match a.partition {
                Some(p) => vec![p],
                None => {
                    let c = client::lone_consumer(brokers)?;
                    let md = client::topic_metadata(&c, brokers, t)?;
                    md.topics()[0].partitions().iter().map(|p| p.id()).collect()
                }
            };
            Some(vec![TopicPartitions::default()
                .with_topic(TopicName(StrBytes::from_string(t.clone())))
                .with_partitions(indexes)])
        }
    };
    let req = ElectLeadersRequest::default()
        .with_election_type(if a.unclean { 1 } else { 0 })
        .with_topic_partitions(partitions)
        .with_timeout_ms(30_000);
    let resp: ElectLeadersResponse = crate::kafka_rpc::call(
        brokers,
        ApiKey::ElectLeaders,
        2,
        &req,
        std::time::Duration::from_secs(35),
    )
    .with_context(|| format!("asking {brokers} for leader elections"))?;
    if resp.error_code != 0 {
        bail!(
            "ElectLeaders failed: {:?}",
            kafka_protocol::ResponseError::try_from_code(resp.error_code)
        );
    }
    let mut results = Vec::new();
    for t in &resp.replica_election_results {
        for p in &t.partition_result {
            results.push(Election {
                topic: t.topic.to_string(),
                partition: p.partition_id,
                result: if p.error_code == 0 {
                    "elected".to_string()
                } else {
                    kafka_protocol::ResponseError::try_from_code(p.error_code)
                        .map_or_else(|| format!("error {}", p.error_code), |e| format!("{e:?}"))
                },
            });
        }
    }
    if a.conn.json {
        return client::print_json(&serde_json::json!({ "elections": results }));
    }
    if results.is_empty() {
        println!("No partition needed an election.");
        return Ok(());
    }
    let mut t = Table::new(&["TOPIC", "PARTITION", "RESULT"]);
    for r in &results {
        t.row(vec![
            r.topic.clone(),
            r.partition.to_string(),
            r.result.clone(),
        ]);
    }
    t.print();
    Ok(())
}
