//! DescribeLogDirs (API 35, v1-v3): the partition logs this broker holds, in its one log
//! directory (`--data-dir`), with their size and how far each is behind.
//!
//! - `topics` null: every hosted partition; otherwise the named partitions that are hosted
//!   here (others are left out, as Kafka does).
//! - `partition_size`: bytes of record batches in the log's segments (Kafka's `log.size`).
//! - `offset_lag`: Kafka reports `max(0, HW - log end)` for a current log, which is always 0
//!   because a Kafka follower's HW is capped by its own log end; only "future" logs (moves
//!   between log directories, which Sluice does not have) ever show a lag there. Sluice reports
//!   what an operator wants from that field instead: on a follower, the leader's HW as its
//!   latest fetch answer said minus its own log end (at least 0; -1 before it has heard from a
//!   leader), on a leader 0. `sluice topic describe` shows it per replica.
//! - `is_future_key`: always false (no log-directory moves).
//! - v4 adds the volume's total and usable bytes; not advertised (they would need `statvfs`).

use kafka_protocol::messages::describe_log_dirs_request::DescribeLogDirsRequest;
use kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResponse, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use std::collections::BTreeMap;

use crate::replica_manager::ReplicaManager;

pub fn handle(replicas: &ReplicaManager, req: DescribeLogDirsRequest) -> DescribeLogDirsResponse {
    let wanted: Option<BTreeMap<String, Vec<i32>>> = req.topics.map(|topics| {
        let mut m: BTreeMap<String, Vec<i32>> = BTreeMap::new();
        for t in topics {
            m.entry(t.topic.as_str().to_string())
                .or_default()
                .extend(t.partitions);
        }
        m
    });
    let mut by_topic: BTreeMap<String, Vec<DescribeLogDirsPartition>> = BTreeMap::new();
    for p in replicas.all() {
        if let Some(w) = &wanted {
            if !w.get(&p.topic).is_some_and(|ps| ps.contains(&p.index)) {
                continue;
            }
        }
        by_topic.entry(p.topic.clone()).or_default().push(
            DescribeLogDirsPartition::default()
                .with_partition_index(p.index)
                .with_partition_size(p.log.size_bytes().min(i64::MAX as u64) as i64)
                .with_offset_lag(p.offset_lag())
                .with_is_future_key(false),
        );
    }
    let topics = by_topic
        .into_iter()
        .map(|(name, mut partitions)| {
            partitions.sort_by_key(|p| p.partition_index);
            DescribeLogDirsTopic::default()
                .with_name(super::topic_name(&name))
                .with_partitions(partitions)
        })
        .collect();
    let dir = replicas.data_dir();
    // Made absolute without touching the disk (no symlinks resolved).
    let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    DescribeLogDirsResponse::default().with_results(vec![DescribeLogDirsResult::default()
        .with_log_dir(super::str_bytes(&dir.display().to_string()))
        .with_topics(topics)
        .with_total_bytes(-1)
        .with_usable_bytes(-1)])
}
