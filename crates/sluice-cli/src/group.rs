//! `sluice group list|describe|reset-offsets|delete`.
//!
//! rust-rdkafka's AdminClient has no ListGroups/DescribeGroups, so listing and describing go
//! through `fetch_group_list` (librdkafka's `rd_kafka_list_groups`: ListGroups, then
//! DescribeGroups), and committed offsets through a consumer that carries the group's id but never
//! joins it.

use std::collections::BTreeMap;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;

use crate::client::{self, ConnArgs};
use crate::table::{join, Table};

#[derive(Subcommand)]
pub enum GroupCommand {
    /// List consumer groups.
    List(ListArgs),
    /// Show a group's state, members and per-partition committed offset, end offset and lag.
    Describe(GroupArgs),
    /// Set a group's committed offsets for a topic (the group must have no active members).
    ResetOffsets(ResetArgs),
    /// Delete a group and its committed offsets (the group must have no active members).
    Delete(GroupArgs),
}

#[derive(Args)]
pub struct ListArgs {
    #[command(flatten)]
    conn: ConnArgs,
}

#[derive(Args)]
pub struct GroupArgs {
    #[command(flatten)]
    conn: ConnArgs,
    group: String,
}

#[derive(Args)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["to_earliest", "to_latest", "to_offset"])))]
pub struct ResetArgs {
    #[command(flatten)]
    conn: ConnArgs,
    group: String,
    /// The topic whose offsets to reset.
    #[arg(long)]
    topic: String,
    /// Only this partition (default: all).
    #[arg(short, long)]
    partition: Option<i32>,
    /// To each partition's log start offset.
    #[arg(long)]
    to_earliest: bool,
    /// To each partition's end offset (skip everything written so far).
    #[arg(long)]
    to_latest: bool,
    /// To this offset, clamped to each partition's [earliest, latest] range.
    #[arg(long, value_name = "N")]
    to_offset: Option<i64>,
}

pub fn run(cmd: GroupCommand) -> anyhow::Result<()> {
    match cmd {
        GroupCommand::List(a) => list(a),
        GroupCommand::Describe(a) => describe(a),
        GroupCommand::ResetOffsets(a) => reset_offsets(a),
        GroupCommand::Delete(a) => delete(a),
    }
}

#[derive(Serialize)]
struct GroupSummary {
    group: String,
    state: String,
    protocol_type: String,
    members: usize,
}

fn list(a: ListArgs) -> anyhow::Result<()> {
    let brokers = &a.conn.brokers;
    let c = client::lone_consumer(brokers)?;
    client::metadata(&c, brokers, None)?;
    let groups = c
        .fetch_group_list(None, client::TIMEOUT)
        .context("listing groups")?;
    let mut out: Vec<GroupSummary> = groups
        .groups()
        .iter()
        .map(|g| GroupSummary {
            group: g.name().to_string(),
            state: g.state().to_string(),
            protocol_type: g.protocol_type().to_string(),
            members: g.members().len(),
        })
        .collect();
    out.sort_by(|x, y| x.group.cmp(&y.group));
    if a.conn.json {
        return client::print_json(&serde_json::json!({ "groups": out }));
    }
    let mut t = Table::new(&["GROUP", "STATE", "TYPE", "MEMBERS"]);
    for g in &out {
        t.row(vec![
            g.group.clone(),
            g.state.clone(),
            g.protocol_type.clone(),
            g.members.to_string(),
        ]);
    }
    t.print();
    Ok(())
}

#[derive(Serialize)]
struct MemberInfo {
    member_id: String,
    client_id: String,
    client_host: String,
    /// topic -> partitions, decoded from the consumer protocol's assignment.
    assignment: BTreeMap<String, Vec<i32>>,
}

#[derive(Serialize)]
struct PartitionOffsets {
    topic: String,
    partition: i32,
    /// `None` when the group has committed nothing for this partition.
    committed: Option<i64>,
    end: i64,
    lag: Option<i64>,
    /// The member the partition is assigned to, if any.
    member: Option<String>,
}

#[derive(Serialize)]
struct GroupDescription {
    group: String,
    state: String,
    protocol_type: String,
    protocol: String,
    members: Vec<MemberInfo>,
    offsets: Vec<PartitionOffsets>,
}

/// What DescribeGroups told us about one group, copied out of librdkafka's group list.
struct GroupView {
    state: String,
    protocol_type: String,
    protocol: String,
    members: Vec<MemberInfo>,
}

/// DescribeGroups for one group through librdkafka. A group the broker does not know comes back
/// in state `Dead` with no members.
fn group_view(c: &BaseConsumer, brokers: &str, group: &str) -> anyhow::Result<GroupView> {
    client::metadata(c, brokers, None)?;
    let list = c
        .fetch_group_list(Some(group), client::TIMEOUT)
        .with_context(|| format!("describing group {group:?}"))?;
    let info = list
        .groups()
        .iter()
        .find(|g| g.name() == group)
        .with_context(|| format!("unknown group {group:?}"))?;
    Ok(GroupView {
        state: info.state().to_string(),
        protocol_type: info.protocol_type().to_string(),
        protocol: info.protocol().to_string(),
        members: info
            .members()
            .iter()
            .map(|m| MemberInfo {
                member_id: m.id().to_string(),
                client_id: m.client_id().to_string(),
                client_host: m.client_host().to_string(),
                assignment: m.assignment().map(decode_assignment).unwrap_or_default(),
            })
            .collect(),
    })
}

/// A consumer that carries the group's id to read or write its committed offsets, without
/// joining (it never subscribes).
fn group_consumer(brokers: &str, group: &str) -> anyhow::Result<BaseConsumer> {
    let mut c = client::base_config(brokers);
    c.set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false");
    client::create(&c)
}

fn describe(a: GroupArgs) -> anyhow::Result<()> {
    let brokers = &a.conn.brokers;
    let c = group_consumer(brokers, &a.group)?;
    let view = group_view(&c, brokers, &a.group)?;

    // Which partitions to look at: every partition of every (non-internal) topic, so committed
    // offsets of topics the group no longer consumes show up too.
    let md = client::metadata(&c, brokers, None)?;
    let mut query = TopicPartitionList::new();
    for t in md.topics().iter().filter(|t| !t.name().starts_with("__")) {
        for p in t.partitions() {
            query.add_partition(t.name(), p.id());
        }
    }
    let committed = if query.count() == 0 {
        TopicPartitionList::new()
    } else {
        c.committed_offsets(query, client::TIMEOUT)
            .context("fetching committed offsets")?
    };
    let mut owner: BTreeMap<(String, i32), String> = BTreeMap::new();
    for m in &view.members {
        for (topic, parts) in &m.assignment {
            for p in parts {
                owner.insert((topic.clone(), *p), m.member_id.clone());
            }
        }
    }
    let mut offsets = Vec::new();
    for el in committed.elements() {
        let key = (el.topic().to_string(), el.partition());
        let committed = match el.offset() {
            Offset::Offset(o) if o >= 0 => Some(o),
            _ => None,
        };
        let member = owner.get(&key).cloned();
        if committed.is_none() && member.is_none() {
            continue;
        }
        let (_, end) = c
            .fetch_watermarks(el.topic(), el.partition(), client::TIMEOUT)
            .with_context(|| format!("end offset of {}-{}", el.topic(), el.partition()))?;
        offsets.push(PartitionOffsets {
            topic: key.0,
            partition: key.1,
            committed,
            end,
            lag: committed.map(|o| (end - o).max(0)),
            member,
        });
    }
    offsets.sort_by(|x, y| (&x.topic, x.partition).cmp(&(&y.topic, y.partition)));
    if view.state == "Dead" && view.members.is_empty() && offsets.is_empty() {
        bail!("unknown group {:?}", a.group);
    }
    let d = GroupDescription {
        group: a.group.clone(),
        state: view.state,
        protocol_type: view.protocol_type,
        protocol: view.protocol,
        members: view.members,
        offsets,
    };
    if a.conn.json {
        return client::print_json(&d);
    }
    println!(
        "Group: {}  State: {}  Protocol: {} {}  Members: {}",
        d.group,
        d.state,
        d.protocol_type,
        d.protocol,
        d.members.len()
    );
    if !d.members.is_empty() {
        println!();
        let mut t = Table::new(&["MEMBER", "CLIENT-ID", "HOST", "ASSIGNMENT"]);
        for m in &d.members {
            let assignment = m
                .assignment
                .iter()
                .map(|(t, ps)| format!("{t}:{}", join(ps)))
                .collect::<Vec<_>>()
                .join(" ");
            t.row(vec![
                m.member_id.clone(),
                m.client_id.clone(),
                m.client_host.clone(),
                assignment,
            ]);
        }
        t.print();
    }
    println!();
    let mut t = Table::new(&["TOPIC", "PARTITION", "COMMITTED", "END", "LAG", "MEMBER"]);
    for o in &d.offsets {
        let dash = || "-".to_string();
        t.row(vec![
            o.topic.clone(),
            o.partition.to_string(),
            o.committed.map_or_else(dash, |v| v.to_string()),
            o.end.to_string(),
            o.lag.map_or_else(dash, |v| v.to_string()),
            o.member.clone().unwrap_or_else(dash),
        ]);
    }
    t.print();
    Ok(())
}

#[derive(Serialize)]
struct ResetRow {
    topic: String,
    partition: i32,
    previous: Option<i64>,
    offset: i64,
}

fn reset_offsets(a: ResetArgs) -> anyhow::Result<()> {
    let brokers = &a.conn.brokers;
    let c = group_consumer(brokers, &a.group)?;
    let view = group_view(&c, brokers, &a.group)?;
    if !view.members.is_empty() {
        bail!(
            "group {:?} has {} active member(s) (state {}); stop them before resetting offsets",
            a.group,
            view.members.len(),
            view.state
        );
    }
    let md = client::topic_metadata(&c, brokers, &a.topic)?;
    let parts = match a.partition {
        Some(p) if client::partition_ids(&md, &a.topic).contains(&p) => vec![p],
        Some(p) => bail!("topic {:?} has no partition {p}", a.topic),
        None => client::partition_ids(&md, &a.topic),
    };
    let mut query = TopicPartitionList::new();
    for &p in &parts {
        query.add_partition(&a.topic, p);
    }
    let before = c
        .committed_offsets(query, client::TIMEOUT)
        .context("fetching committed offsets")?;
    let mut rows = Vec::new();
    let mut tpl = TopicPartitionList::new();
    for &p in &parts {
        let (low, high) = c
            .fetch_watermarks(&a.topic, p, client::TIMEOUT)
            .with_context(|| format!("offsets of {}-{p}", a.topic))?;
        let target = match (a.to_earliest, a.to_latest, a.to_offset) {
            (true, _, _) => low,
            (_, true, _) => high,
            (_, _, Some(n)) => n.clamp(low, high),
            _ => bail!("give --to-earliest, --to-latest or --to-offset N"),
        };
        let previous = before
            .find_partition(&a.topic, p)
            .and_then(|el| match el.offset() {
                Offset::Offset(o) if o >= 0 => Some(o),
                _ => None,
            });
        tpl.add_partition_offset(&a.topic, p, Offset::Offset(target))?;
        rows.push(ResetRow {
            topic: a.topic.clone(),
            partition: p,
            previous,
            offset: target,
        });
    }
    c.assign(&tpl).context("assign")?;
    c.commit(&tpl, CommitMode::Sync)
        .with_context(|| format!("committing offsets for group {:?}", a.group))?;
    if a.conn.json {
        return client::print_json(&serde_json::json!({ "group": a.group, "offsets": rows }));
    }
    let mut t = Table::new(&["TOPIC", "PARTITION", "PREVIOUS", "NEW"]);
    for r in &rows {
        t.row(vec![
            r.topic.clone(),
            r.partition.to_string(),
            r.previous.map_or_else(|| "-".into(), |v| v.to_string()),
            r.offset.to_string(),
        ]);
    }
    t.print();
    Ok(())
}

fn delete(a: GroupArgs) -> anyhow::Result<()> {
    let brokers = &a.conn.brokers;
    let c = client::lone_consumer(brokers)?;
    client::metadata(&c, brokers, None)?;
    let admin = client::admin(brokers)?;
    let res = client::block_on(admin.delete_groups(&[a.group.as_str()], &client::admin_opts()))
        .context("DeleteGroups")?;
    for r in res {
        if let Err((name, code)) = r {
            bail!("cannot delete group {name:?}: {code}");
        }
    }
    if a.conn.json {
        client::print_json(&serde_json::json!({ "deleted": a.group }))?;
    } else {
        println!("deleted group {}", a.group);
    }
    Ok(())
}

/// Decodes a ConsumerProtocolAssignment (any version: v0-v3 share the leading fields):
/// `version: i16, [topic: string(i16), [partition: i32]], user_data: bytes`. Anything malformed
/// yields what was decoded so far: this is display only.
fn decode_assignment(bytes: &[u8]) -> BTreeMap<String, Vec<i32>> {
    let mut out = BTreeMap::new();
    let mut r = Reader(bytes);
    let _version = r.i16();
    let Some(n_topics) = r.i32() else {
        return out;
    };
    for _ in 0..n_topics.max(0) {
        let Some(len) = r.i16() else { break };
        let Some(name) = r.take(len.max(0) as usize) else {
            break;
        };
        let name = String::from_utf8_lossy(name).into_owned();
        let Some(n) = r.i32() else { break };
        let mut parts = Vec::new();
        for _ in 0..n.max(0) {
            let Some(p) = r.i32() else { break };
            parts.push(p);
        }
        parts.sort_unstable();
        out.insert(name, parts);
    }
    out
}

/// A bounds-checked big-endian reader over untrusted bytes.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Some(head)
    }
    fn i16(&mut self) -> Option<i16> {
        self.take(2).map(|b| i16::from_be_bytes([b[0], b[1]]))
    }
    fn i32(&mut self) -> Option<i32> {
        self.take(4)
            .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
}

#[cfg(test)]
mod tests {
    use super::decode_assignment;

    #[test]
    fn decodes_consumer_assignment() {
        let mut b = vec![0, 1]; // version
        b.extend_from_slice(&1i32.to_be_bytes());
        b.extend_from_slice(&6i16.to_be_bytes());
        b.extend_from_slice(b"orders");
        b.extend_from_slice(&2i32.to_be_bytes());
        b.extend_from_slice(&2i32.to_be_bytes());
        b.extend_from_slice(&0i32.to_be_bytes());
        b.extend_from_slice(&(-1i32).to_be_bytes()); // null user data
        let got = decode_assignment(&b);
        assert_eq!(got.get("orders"), Some(&vec![0, 2]));
        // Truncated input decodes what it can and does not panic.
        for cut in 0..b.len() {
            decode_assignment(&b[..cut]);
        }
    }
}
