//! Who wrote each record of the final log: the producer id and epoch of its batch, read with raw
//! Fetch requests from each partition's leader (a Kafka client library does not expose them).
//!
//! The checker needs them to judge a value that an idempotent producer has at two offsets. The
//! broker must catch a batch sent twice under the same producer id and epoch (its sequence
//! numbers say so); it cannot catch one that librdkafka re-sends under a new epoch. librdkafka
//! does that after a message timeout: it drains the partition, bumps the epoch, resets the
//! sequences and re-sends what it still holds, including a batch whose earlier send was written
//! but whose answer was lost ("Message timeout considerations" in its INTRODUCTION.md).

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{BrokerId, FetchRequest, RequestHeader, ResponseHeader, TopicName};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use kafka_protocol::records::RecordBatchDecoder;
use serde::{Deserialize, Serialize};

use crate::history::{Offset, Partition};

/// The producer of one record's batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Writer {
    pub producer_id: i64,
    pub producer_epoch: i16,
}

/// Partition -> offset -> the producer of the batch holding that record.
pub type Writers = BTreeMap<Partition, BTreeMap<Offset, Writer>>;

/// Fetch v4: topics by name, no sessions, no flexible encoding.
const FETCH_VERSION: i16 = 4;
/// Largest answer accepted (the request asks for at most 8 MiB).
const MAX_RESPONSE: usize = 64 << 20;

/// Every record of `topic`-`partition` from offset 0 up to the high watermark, read from `addr`
/// (its leader), with the producer of its batch; within `timeout` per exchange.
pub fn read_writers(
    addr: SocketAddr,
    topic: &str,
    partition: Partition,
    timeout: Duration,
) -> io::Result<BTreeMap<Offset, Writer>> {
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let mut out = BTreeMap::new();
    let mut offset: Offset = 0;
    for correlation_id in 1.. {
        let req = FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(0)
            .with_min_bytes(0)
            .with_max_bytes(8 << 20)
            .with_topics(vec![FetchTopic::default()
                .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partitions(vec![FetchPartition::default()
                    .with_partition(partition)
                    .with_fetch_offset(offset)
                    .with_partition_max_bytes(8 << 20)])]);
        let resp = exchange(&mut stream, correlation_id, FETCH_VERSION, &req)?;
        let p = resp
            .responses
            .into_iter()
            .flat_map(|t| t.partitions)
            .next()
            .ok_or_else(|| invalid("a Fetch answer without the partition"))?;
        if p.error_code != 0 {
            return Err(invalid(&format!(
                "Fetch of partition {partition} answered error {}",
                p.error_code
            )));
        }
        let mut records = p.records.unwrap_or_default();
        let batches = RecordBatchDecoder::decode_all(&mut records)
            .map_err(|e| invalid(&format!("undecodable records: {e}")))?;
        let before = offset;
        for r in batches.into_iter().flat_map(|set| set.records) {
            if r.offset >= offset {
                let writer = Writer {
                    producer_id: r.producer_id,
                    producer_epoch: r.producer_epoch,
                };
                out.insert(r.offset, writer);
                offset = r.offset + 1;
            }
        }
        if offset >= p.high_watermark {
            break;
        }
        if offset == before {
            return Err(invalid(&format!(
                "no progress at offset {offset} below the high watermark {}",
                p.high_watermark
            )));
        }
    }
    Ok(out)
}

/// One request at `version` and its answer on `stream`.
pub(crate) fn exchange<R: Request>(
    stream: &mut TcpStream,
    correlation_id: i32,
    version: i16,
    req: &R,
) -> io::Result<R::Response> {
    let header = RequestHeader::default()
        .with_request_api_key(R::KEY)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str("sluice-chaos")));
    let mut buf = BytesMut::new();
    header
        .encode(&mut buf, R::header_version(version))
        .map_err(|e| invalid(&format!("encoding the request header: {e}")))?;
    req.encode(&mut buf, version)
        .map_err(|e| invalid(&format!("encoding the request: {e}")))?;
    let mut frame = (buf.len() as i32).to_be_bytes().to_vec();
    frame.extend_from_slice(&buf);
    stream.write_all(&frame)?;

    let mut size = [0u8; 4];
    stream.read_exact(&mut size)?;
    let size = usize::try_from(i32::from_be_bytes(size))
        .ok()
        .filter(|s| (4..=MAX_RESPONSE).contains(s))
        .ok_or_else(|| invalid("an implausible response size"))?;
    let mut body = vec![0u8; size];
    stream.read_exact(&mut body)?;
    let mut body = Bytes::from(body);
    let rh = ResponseHeader::decode(&mut body, R::Response::header_version(version))
        .map_err(|e| invalid(&format!("decoding the response header: {e}")))?;
    if rh.correlation_id != correlation_id {
        return Err(invalid("an answer to another request"));
    }
    let resp = R::Response::decode(&mut body, version)
        .map_err(|e| invalid(&format!("decoding the response: {e}")))?;
    if body.has_remaining() {
        return Err(invalid("trailing bytes after the response"));
    }
    Ok(resp)
}

pub(crate) fn invalid(why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why.to_string())
}
