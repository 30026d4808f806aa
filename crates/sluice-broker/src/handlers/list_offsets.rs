//! ListOffsets: earliest (-2), latest (-1), max timestamp (-3), earliest local (-4, the same as
//! earliest without tiered storage), or the first offset whose timestamp is >= a given time.
//! Only offsets below the high watermark are ever reported, like everything consumers see.

use kafka_protocol::messages::list_offsets_request::ListOffsetsRequest;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::ResponseError;

use crate::error::ApiError;
use crate::handlers::fetch::check_leader;
use crate::partition::Partition;
use crate::replica_manager::ReplicaManager;
use sluice_types::Offset;

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;
const EARLIEST_LOCAL: i64 = -4;

/// `(timestamp, offset)` for one query; `(-1, -1)` when no record matches.
fn lookup(p: &Partition, timestamp: i64) -> Result<(i64, i64), ApiError> {
    let hw = p.high_watermark().get();
    let start = p.log.log_start_offset().get();
    Ok(match timestamp {
        LATEST => (-1, hw),
        EARLIEST | EARLIEST_LOCAL => (-1, start),
        // KIP-734: the first *record* carrying the largest timestamp, found like a timestamp
        // lookup for that time (KAFKA-16310: not the base offset of its batch).
        MAX_TIMESTAMP => match p.log.max_timestamp() {
            Some((ts, _)) => match p.log.offset_for_timestamp(ts).map_err(ApiError::from_log)? {
                Some((offset, found_ts)) if offset.get() < hw => (found_ts, offset.get()),
                _ => (-1, -1),
            },
            None => (-1, -1),
        },
        ts if ts >= 0 => match p.log.offset_for_timestamp(ts).map_err(ApiError::from_log)? {
            Some((offset, found_ts)) if offset.get() < hw => (found_ts, offset.get()),
            _ => (-1, -1),
        },
        other => {
            return Err(ApiError::new(
                ResponseError::InvalidRequest,
                format!("unsupported ListOffsets timestamp {other}"),
            ))
        }
    })
}

/// The leader epoch to report with an answer, as Kafka does: the current one for LATEST, else
/// the epoch of the batch holding the offset found (-1 when none was found).
fn epoch_of(p: &Partition, timestamp: i64, offset: i64) -> i32 {
    if timestamp == LATEST {
        return p.leader_epoch().get();
    }
    if offset < 0 {
        return -1;
    }
    p.log
        .epoch_for_offset(Offset(offset))
        .map_or(-1, |e| e.get())
}

pub fn handle(
    replicas: &ReplicaManager,
    req: ListOffsetsRequest,
    version: i16,
) -> ListOffsetsResponse {
    let topics = req
        .topics
        .iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|q| {
                    let resp = ListOffsetsPartitionResponse::default()
                        .with_partition_index(q.partition_index);
                    let outcome = replicas
                        .get(t.name.as_str(), q.partition_index)
                        .ok_or_else(|| ApiError::from(ResponseError::UnknownTopicOrPartition))
                        .and_then(|p| {
                            // v4+ names the epoch the client believes current (KIP-320).
                            let named = if version >= 4 {
                                q.current_leader_epoch
                            } else {
                                -1
                            };
                            check_leader(&p, named)?;
                            lookup(&p, q.timestamp)
                                .map(|(ts, offset)| (ts, offset, epoch_of(&p, q.timestamp, offset)))
                        });
                    match outcome {
                        Ok((timestamp, offset, epoch)) => {
                            let resp = resp.with_timestamp(timestamp).with_offset(offset);
                            // The leader epoch field exists from v4 on.
                            if version >= 4 {
                                resp.with_leader_epoch(epoch)
                            } else {
                                resp
                            }
                        }
                        Err(e) => resp.with_error_code(e.code.code()),
                    }
                })
                .collect();
            ListOffsetsTopicResponse::default()
                .with_name(t.name.clone())
                .with_partitions(partitions)
        })
        .collect();
    ListOffsetsResponse::default().with_topics(topics)
}
