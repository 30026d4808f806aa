//! `sluice consume TOPIC`: print records to stdout.
//!
//! Without `-g` the partitions are assigned by hand (nothing is committed, no group is joined);
//! with `-g` the consumer subscribes as a member of that group and commits what it printed, so a
//! later run of the same group continues where this one stopped.

use std::collections::HashSet;
use std::io::Write;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

use crate::client::{self, ConnArgs};
use crate::format::Format;

#[derive(Args)]
pub struct ConsumeArgs {
    #[command(flatten)]
    conn: ConnArgs,
    topic: String,
    /// Consume as a member of this group (subscribe, commit) instead of assigning partitions.
    #[arg(short, long)]
    group: Option<String>,
    /// Where to start: `start`, `end`, an offset (`-N`: N before the end) or `@TIMESTAMP_MS`.
    /// With -g only `start`/`end`, used when the group has no committed offset.
    #[arg(short, long, default_value = "start", allow_hyphen_values = true)]
    offset: String,
    /// Exit after this many records.
    #[arg(short = 'n', long)]
    count: Option<u64>,
    /// Only this partition (not with -g).
    #[arg(short, long)]
    partition: Option<i32>,
    /// Exit once every partition has been read to its end.
    #[arg(short, long)]
    exit_at_end: bool,
    /// Output format: %t topic, %p partition, %o offset, %k key, %s value, %T timestamp,
    /// %h headers; \n \t escapes. With --json each record is a JSON line instead.
    #[arg(short, long, default_value = r"%s\n")]
    format: String,
}

/// Where a partition starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StartAt {
    Start,
    End,
    /// An absolute offset (>= 0) or, negative, that many records before the end.
    Offset(i64),
    /// The first record with a timestamp at or after this many ms since the epoch.
    Timestamp(i64),
}

fn parse_start(s: &str) -> anyhow::Result<StartAt> {
    Ok(match s {
        "start" | "beginning" | "earliest" => StartAt::Start,
        "end" | "latest" => StartAt::End,
        _ => {
            if let Some(ts) = s.strip_prefix('@') {
                StartAt::Timestamp(
                    ts.parse()
                        .with_context(|| format!("bad timestamp {ts:?}"))?,
                )
            } else {
                StartAt::Offset(s.parse().with_context(|| {
                    format!("bad offset {s:?}: expected start, end, OFFSET or @TIMESTAMP_MS")
                })?)
            }
        }
    })
}

pub fn run(a: ConsumeArgs) -> anyhow::Result<()> {
    let brokers = &a.conn.brokers;
    let start = parse_start(&a.offset)?;
    let format = Format::parse(&a.format).map_err(|e| anyhow::anyhow!("-f: {e}"))?;
    let mut config = client::base_config(brokers);
    config
        .set("enable.partition.eof", "true")
        .set("enable.auto.offset.store", "false")
        .set("fetch.wait.max.ms", "200");
    match &a.group {
        Some(g) => {
            if a.partition.is_some() {
                bail!("-p cannot be combined with -g: the group assigns partitions");
            }
            let reset = match start {
                StartAt::Start => "earliest",
                StartAt::End => "latest",
                _ => bail!("with -g, -o must be start or end"),
            };
            config
                .set("group.id", g)
                .set("enable.auto.commit", "true")
                .set("auto.offset.reset", reset);
        }
        None => {
            config
                .set("group.id", format!("sluice-cli-{}", std::process::id()))
                .set("enable.auto.commit", "false");
        }
    }
    let consumer: BaseConsumer = client::create(&config)?;
    let md = client::topic_metadata(&consumer, brokers, &a.topic)?;
    let all = client::partition_ids(&md, &a.topic);

    // Manual mode: the partitions we wait on for -e. Group mode: whatever the group assigned.
    let mut manual: Option<Vec<i32>> = None;
    if a.group.is_some() {
        consumer.subscribe(&[&a.topic]).context("subscribe")?;
    } else {
        let parts = match a.partition {
            Some(p) if all.contains(&p) => vec![p],
            Some(p) => bail!("topic {:?} has no partition {p}", a.topic),
            None => all,
        };
        let tpl = start_positions(&consumer, &a.topic, &parts, start)?;
        consumer.assign(&tpl).context("assign")?;
        manual = Some(parts);
    }

    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut printed = 0u64;
    let mut at_end: HashSet<i32> = HashSet::new();
    let all_at_end = |at_end: &HashSet<i32>| -> bool {
        match &manual {
            Some(parts) => parts.iter().all(|p| at_end.contains(p)),
            None => match consumer.assignment() {
                Ok(tpl) => {
                    let e = tpl.elements();
                    !e.is_empty() && e.iter().all(|el| at_end.contains(&el.partition()))
                }
                Err(_) => false,
            },
        }
    };
    let mut broken_pipe = false;
    loop {
        if a.count.is_some_and(|n| printed >= n) {
            break;
        }
        match consumer.poll(Duration::from_millis(100)) {
            None => {
                if write_out(&mut out, &mut buf)? {
                    broken_pipe = true;
                    break;
                }
                if a.exit_at_end && all_at_end(&at_end) {
                    break;
                }
            }
            Some(Ok(m)) => {
                at_end.remove(&m.partition());
                if a.conn.json {
                    serde_json::to_writer(&mut buf, &record_json(&m))?;
                    buf.push(b'\n');
                } else {
                    format.render(&m, &mut buf);
                }
                printed += 1;
                if a.group.is_some() {
                    consumer
                        .store_offset_from_message(&m)
                        .context("storing the consumed offset")?;
                }
                if buf.len() >= 32 * 1024 && write_out(&mut out, &mut buf)? {
                    broken_pipe = true;
                    break;
                }
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                at_end.insert(p);
                if a.exit_at_end && all_at_end(&at_end) {
                    break;
                }
            }
            Some(Err(e)) => match e.rdkafka_error_code() {
                Some(RDKafkaErrorCode::UnknownTopicOrPartition)
                | Some(RDKafkaErrorCode::UnknownTopic)
                | Some(RDKafkaErrorCode::UnknownPartition) => {
                    bail!("topic {:?}: {e}", a.topic)
                }
                _ => eprintln!("warning: {e}"),
            },
        }
    }
    if !broken_pipe {
        write_out(&mut out, &mut buf)?;
    }
    if a.group.is_some() && printed > 0 {
        match consumer.commit_consumer_state(CommitMode::Sync) {
            Ok(()) => {}
            Err(e) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::NoOffset) => {}
            Err(e) => bail!("committing offsets: {e}"),
        }
    }
    Ok(())
}

/// Writes and flushes `buf`; returns true if the reader went away (`sluice consume | head`).
fn write_out(out: &mut impl Write, buf: &mut Vec<u8>) -> anyhow::Result<bool> {
    if buf.is_empty() {
        return Ok(false);
    }
    let r = out.write_all(buf).and_then(|()| out.flush());
    buf.clear();
    match r {
        Ok(()) => Ok(false),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(true),
        Err(e) => Err(e).context("writing stdout"),
    }
}

/// The starting position of each partition.
fn start_positions(
    consumer: &BaseConsumer,
    topic: &str,
    parts: &[i32],
    start: StartAt,
) -> anyhow::Result<TopicPartitionList> {
    let mut tpl = TopicPartitionList::new();
    match start {
        StartAt::Timestamp(ts) => {
            let mut query = TopicPartitionList::new();
            for &p in parts {
                query.add_partition_offset(topic, p, Offset::Offset(ts))?;
            }
            let found = consumer
                .offsets_for_times(query, client::TIMEOUT)
                .context("looking up offsets by timestamp")?;
            for el in found.elements() {
                // No record at or after the timestamp: start at the end.
                let off = match el.offset() {
                    Offset::Offset(o) if o >= 0 => Offset::Offset(o),
                    _ => Offset::End,
                };
                tpl.add_partition_offset(topic, el.partition(), off)?;
            }
        }
        other => {
            let off = match other {
                StartAt::Start => Offset::Beginning,
                StartAt::End => Offset::End,
                StartAt::Offset(o) if o >= 0 => Offset::Offset(o),
                StartAt::Offset(o) => Offset::OffsetTail(-o),
                StartAt::Timestamp(_) => unreachable!("handled above"),
            };
            for &p in parts {
                tpl.add_partition_offset(topic, p, off)?;
            }
        }
    }
    Ok(tpl)
}

fn record_json<M: Message>(m: &M) -> serde_json::Value {
    let text = |b: Option<&[u8]>| b.map(|b| String::from_utf8_lossy(b).into_owned());
    let headers: Vec<serde_json::Value> = m
        .headers()
        .map(|hs| {
            hs.iter()
                .map(|h| serde_json::json!({ "key": h.key, "value": text(h.value) }))
                .collect()
        })
        .unwrap_or_default();
    serde_json::json!({
        "topic": m.topic(),
        "partition": m.partition(),
        "offset": m.offset(),
        "timestamp": m.timestamp().to_millis(),
        "key": text(m.key()),
        "value": text(m.payload()),
        "headers": headers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_start_positions() {
        assert_eq!(parse_start("start").unwrap(), StartAt::Start);
        assert_eq!(parse_start("end").unwrap(), StartAt::End);
        assert_eq!(parse_start("42").unwrap(), StartAt::Offset(42));
        assert_eq!(parse_start("-5").unwrap(), StartAt::Offset(-5));
        assert_eq!(
            parse_start("@1700000000000").unwrap(),
            StartAt::Timestamp(1700000000000)
        );
        assert!(parse_start("soon").is_err());
    }
}
