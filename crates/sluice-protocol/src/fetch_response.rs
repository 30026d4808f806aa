//! The Fetch response body, encoded by hand around its record sets so they are never copied.
//!
//! `kafka-protocol`'s encoder writes a record set with `put_slice` into the one output buffer:
//! every byte a consumer fetches would be copied once more (into a buffer grown by doubling
//! from the frame's first 256 bytes). Here the fields are written into the frame's small buffer
//! and each record set is spliced in as its own chunk ([`FrameBuilder::put_bytes`]). Nested
//! structs that carry no records (aborted transactions, tagged-field structs, node endpoints) are
//! still encoded by `kafka-protocol`.
//!
//! The output is byte-for-byte what `kafka-protocol` 0.18 writes for the same
//! `FetchResponse` at every version it knows (v4-v18), and it fails where that encoder fails (a
//! field set that the version cannot carry); the tests below hold it to that. Layout (Kafka's
//! `FetchResponse.json`; *flexible* versions are v12+, where array, string and bytes lengths are
//! unsigned varints of n + 1, 0 meaning null, and every struct ends with its tagged fields):
//!
//! ```text
//! FetchResponse
//!   throttle_time_ms        i32
//!   error_code              i16                       v7+
//!   session_id              i32                       v7+ (must be 0 before)
//!   responses               [FetchableTopicResponse]  i32 count; flexible: varint count + 1
//!   tagged fields                                     v12+: 0 = node_endpoints (v16+, if any)
//! FetchableTopicResponse
//!   topic                   string                    v4-v12 (i16 length; v12: compact)
//!   topic_id                uuid (16 bytes)           v13+
//!   partitions              [PartitionData]
//!   tagged fields                                     v12+
//! PartitionData
//!   partition_index         i32
//!   error_code              i16
//!   high_watermark          i64
//!   last_stable_offset      i64
//!   log_start_offset        i64                       v5+
//!   aborted_transactions    [AbortedTransaction]      nullable
//!   preferred_read_replica  i32                       v11+ (must be -1 before)
//!   records                 bytes                     nullable; i32 length, flexible: varint
//!                                                     length + 1; then the record set, shared
//!   tagged fields                                     v12+: 0 = diverging_epoch,
//!                                                     1 = current_leader, 2 = snapshot_id
//!                                                     (each only when not its default)
//! tagged fields: varint count, then per field: varint tag, varint size, the field's bytes
//! ```

use std::collections::BTreeMap;
use std::ops::RangeFrom;

use anyhow::{bail, Result};
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::fetch_response::{
    FetchResponse, FetchableTopicResponse, PartitionData,
};
use kafka_protocol::protocol::Encodable;

use crate::response::FrameBuilder;

/// First version with tagged fields and compact lengths.
const FLEXIBLE: i16 = 12;

pub(crate) fn encode(r: &FetchResponse, version: i16, out: &mut FrameBuilder) -> Result<()> {
    if !(4..=18).contains(&version) {
        bail!("specified version not supported by this message type");
    }
    let flexible = version >= FLEXIBLE;
    let buf = &mut out.head;
    buf.put_i32(r.throttle_time_ms);
    if version >= 7 {
        buf.put_i16(r.error_code);
        buf.put_i32(r.session_id);
    } else if r.session_id != 0 {
        bail!("A field is set that is not available on the selected protocol version");
    }
    put_array_len(buf, flexible, r.responses.len())?;
    for topic in &r.responses {
        encode_topic(topic, version, out)?;
    }
    if flexible {
        let buf = &mut out.head;
        let endpoints = version >= 16 && !r.node_endpoints.is_empty();
        put_tag_count(buf, r.unknown_tagged_fields.len() + usize::from(endpoints))?;
        if endpoints {
            let mut size = uvarint_len(r.node_endpoints.len() as u32 + 1);
            for e in &r.node_endpoints {
                size += e.compute_size(version)?;
            }
            put_uvarint(buf, 0);
            put_uvarint(buf, tagged_size(size)?);
            put_array_len(buf, true, r.node_endpoints.len())?;
            for e in &r.node_endpoints {
                e.encode(buf, version)?;
            }
        }
        put_unknown_tagged_fields(buf, 1.., &r.unknown_tagged_fields)?;
    }
    Ok(())
}

fn encode_topic(t: &FetchableTopicResponse, version: i16, out: &mut FrameBuilder) -> Result<()> {
    let flexible = version >= FLEXIBLE;
    let buf = &mut out.head;
    if version <= 12 {
        put_string(buf, flexible, t.topic.as_str())?;
    }
    if version >= 13 {
        buf.put_slice(t.topic_id.as_bytes());
    }
    put_array_len(buf, flexible, t.partitions.len())?;
    for p in &t.partitions {
        encode_partition(p, version, out)?;
    }
    if flexible {
        let buf = &mut out.head;
        put_tag_count(buf, t.unknown_tagged_fields.len())?;
        put_unknown_tagged_fields(buf, 0.., &t.unknown_tagged_fields)?;
    }
    Ok(())
}

fn encode_partition(p: &PartitionData, version: i16, out: &mut FrameBuilder) -> Result<()> {
    let flexible = version >= FLEXIBLE;
    let buf = &mut out.head;
    buf.put_i32(p.partition_index);
    buf.put_i16(p.error_code);
    buf.put_i64(p.high_watermark);
    buf.put_i64(p.last_stable_offset);
    if version >= 5 {
        buf.put_i64(p.log_start_offset);
    }
    match &p.aborted_transactions {
        None => put_null(buf, flexible),
        Some(aborted) => {
            put_array_len(buf, flexible, aborted.len())?;
            for a in aborted {
                a.encode(buf, version)?;
            }
        }
    }
    if version >= 11 {
        buf.put_i32(*p.preferred_read_replica);
    } else if *p.preferred_read_replica != -1 {
        bail!("A field is set that is not available on the selected protocol version");
    }
    match &p.records {
        None => put_null(buf, flexible),
        Some(records) => {
            put_bytes_len(buf, flexible, records.len())?;
            // The one field that is not copied.
            out.put_bytes(records);
        }
    }
    if flexible {
        let buf = &mut out.head;
        let diverging = p.diverging_epoch != Default::default();
        let leader = p.current_leader != Default::default();
        let snapshot = p.snapshot_id != Default::default();
        let known = usize::from(diverging) + usize::from(leader) + usize::from(snapshot);
        put_tag_count(buf, p.unknown_tagged_fields.len() + known)?;
        if diverging {
            put_tagged_struct(buf, 0, &p.diverging_epoch, version)?;
        }
        if leader {
            put_tagged_struct(buf, 1, &p.current_leader, version)?;
        }
        if snapshot {
            put_tagged_struct(buf, 2, &p.snapshot_id, version)?;
        }
        put_unknown_tagged_fields(buf, 3.., &p.unknown_tagged_fields)?;
    }
    Ok(())
}

fn put_uvarint(buf: &mut BytesMut, mut v: u32) {
    while v >= 0x80 {
        buf.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    buf.put_u8(v as u8);
}

fn uvarint_len(v: u32) -> usize {
    match v {
        0..=0x7f => 1,
        0x80..=0x3fff => 2,
        0x4000..=0x1f_ffff => 3,
        0x20_0000..=0xfff_ffff => 4,
        _ => 5,
    }
}

/// A null array or bytes field.
fn put_null(buf: &mut BytesMut, flexible: bool) {
    if flexible {
        put_uvarint(buf, 0);
    } else {
        buf.put_i32(-1);
    }
}

fn put_array_len(buf: &mut BytesMut, flexible: bool, n: usize) -> Result<()> {
    put_len(buf, flexible, n, "Array")
}

fn put_bytes_len(buf: &mut BytesMut, flexible: bool, n: usize) -> Result<()> {
    put_len(buf, flexible, n, "Bytes")
}

/// The length of a non-null array or bytes field: i32, or varint n + 1 when flexible.
fn put_len(buf: &mut BytesMut, flexible: bool, n: usize, what: &str) -> Result<()> {
    if flexible {
        match u32::try_from(n) {
            Ok(n) if n < u32::MAX => put_uvarint(buf, n + 1),
            _ => bail!("Compact{what} is too long to encode ({n})"),
        }
    } else {
        match i32::try_from(n) {
            Ok(n) => buf.put_i32(n),
            Err(_) => bail!("{what} is too long to encode ({n})"),
        }
    }
    Ok(())
}

/// A non-null string: i16 length, or varint length + 1 when flexible.
fn put_string(buf: &mut BytesMut, flexible: bool, s: &str) -> Result<()> {
    if flexible {
        match u32::try_from(s.len()) {
            Ok(n) if n < u32::MAX => put_uvarint(buf, n + 1),
            _ => bail!("CompactString is too long to encode ({} bytes)", s.len()),
        }
    } else {
        match i16::try_from(s.len()) {
            Ok(n) => buf.put_i16(n),
            Err(_) => bail!("String is too long to encode ({} bytes)", s.len()),
        }
    }
    buf.put_slice(s.as_bytes());
    Ok(())
}

fn put_tag_count(buf: &mut BytesMut, n: usize) -> Result<()> {
    let Ok(n) = u32::try_from(n) else {
        bail!("Too many tagged fields to encode ({n} fields)");
    };
    put_uvarint(buf, n);
    Ok(())
}

fn tagged_size(size: usize) -> Result<u32> {
    u32::try_from(size)
        .map_err(|_| anyhow::anyhow!("Tagged field is too large to encode ({size} bytes)"))
}

fn put_tagged_struct<T: Encodable>(
    buf: &mut BytesMut,
    tag: u32,
    value: &T,
    version: i16,
) -> Result<()> {
    let size = tagged_size(value.compute_size(version)?)?;
    put_uvarint(buf, tag);
    put_uvarint(buf, size);
    value.encode(buf, version)
}

/// Fields this version does not know, passed through, from tag `tags.start` on (the count
/// written before them covers all of them, as `kafka-protocol` does).
fn put_unknown_tagged_fields(
    buf: &mut BytesMut,
    tags: RangeFrom<i32>,
    fields: &BTreeMap<i32, Bytes>,
) -> Result<()> {
    for (&tag, value) in fields.range(tags) {
        let Ok(len) = u32::try_from(value.len()) else {
            bail!("Tagged field is too long to encode ({} bytes)", value.len());
        };
        put_uvarint(buf, tag as u32);
        put_uvarint(buf, len);
        buf.put_slice(value);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::fetch_response::{
        AbortedTransaction, EpochEndOffset, LeaderIdAndEpoch, NodeEndpoint, SnapshotId,
    };
    use kafka_protocol::messages::{ApiKey, BrokerId, ResponseHeader, ResponseKind, TopicName};
    use kafka_protocol::protocol::StrBytes;

    use super::*;
    use crate::response::{encode_response, SHARE_RECORDS_FROM};
    use crate::versions::supported_range;

    /// What the frame was before: `kafka-protocol` encodes header and body into one buffer.
    fn reference(version: i16, correlation_id: i32, body: &FetchResponse) -> Result<Bytes> {
        let mut buf = BytesMut::new();
        buf.put_i32(0);
        ResponseHeader::default()
            .with_correlation_id(correlation_id)
            .encode(&mut buf, ApiKey::Fetch.response_header_version(version))?;
        body.encode(&mut buf, version)?;
        let size = (buf.len() - 4) as i32;
        buf[..4].copy_from_slice(&size.to_be_bytes());
        Ok(buf.freeze())
    }

    /// Every version the codec knows, which includes every version we advertise.
    fn versions() -> std::ops::RangeInclusive<i16> {
        let codec = ApiKey::Fetch.valid_versions();
        let (min, max) = supported_range(ApiKey::Fetch).expect("Fetch is served");
        assert!(codec.min <= min && max <= codec.max);
        assert_eq!(
            (codec.min, codec.max),
            (4, 18),
            "new Fetch versions: review encode()"
        );
        codec.min..=codec.max
    }

    /// Same bytes as the reference at `version`, or an error where the reference fails.
    fn check(version: i16, body: &FetchResponse) {
        let ours = encode_response(
            ApiKey::Fetch,
            version,
            0x1234_5678,
            &ResponseKind::Fetch(body.clone()),
        );
        match (reference(version, 0x1234_5678, body), ours) {
            (Ok(want), Ok(got)) => {
                assert_eq!(got.len(), want.len(), "v{version} length");
                assert!(
                    got.chunks().iter().all(|c| !c.is_empty()),
                    "v{version}: empty chunk"
                );
                let got = got.to_bytes();
                if got != want {
                    let at = got.iter().zip(want.iter()).position(|(a, b)| a != b);
                    panic!("v{version}: first difference at byte {at:?}\n{body:?}");
                }
            }
            (Err(_), Err(_)) => {}
            (want, got) => panic!(
                "v{version}: reference {:?}, ours {:?}\n{body:?}",
                want.map(|_| ()),
                got.map(|_| ())
            ),
        }
    }

    fn records(len: usize, seed: u8) -> Bytes {
        Bytes::from(
            (0..len)
                .map(|i| (i as u8).wrapping_mul(31) ^ seed)
                .collect::<Vec<u8>>(),
        )
    }

    fn partition(index: i32, records: Option<Bytes>) -> PartitionData {
        PartitionData::default()
            .with_partition_index(index)
            .with_high_watermark(1_000 + i64::from(index))
            .with_last_stable_offset(990)
            .with_log_start_offset(5)
            .with_records(records)
    }

    fn topic(name: &str, id: u128, partitions: Vec<PartitionData>) -> FetchableTopicResponse {
        FetchableTopicResponse::default()
            .with_topic(TopicName(StrBytes::from_string(name.to_string())))
            .with_topic_id(uuid::Uuid::from_u128(id))
            .with_partitions(partitions)
    }

    /// What the broker sends: with and without records, small and large record sets, empty
    /// aborted transactions, errors, several topics.
    #[test]
    fn matches_kafka_protocol_for_broker_shapes() {
        let bodies = [
            FetchResponse::default(),
            FetchResponse::default()
                .with_error_code(71)
                .with_session_id(0),
            FetchResponse::default()
                .with_session_id(17)
                .with_responses(vec![topic(
                    "t",
                    1,
                    vec![partition(0, None), partition(1, Some(Bytes::new()))],
                )]),
            FetchResponse::default()
                .with_throttle_time_ms(3)
                .with_responses(vec![
                    topic(
                        "orders",
                        0xfeed,
                        vec![
                            partition(0, Some(records(100, 1)))
                                .with_aborted_transactions(Some(vec![])),
                            partition(1, Some(records(SHARE_RECORDS_FROM, 2))),
                            partition(2, Some(records(200_000, 3))).with_error_code(0),
                            partition(3, Some(Bytes::new())).with_error_code(1),
                        ],
                    ),
                    topic(
                        "",
                        0,
                        vec![partition(7, Some(Bytes::new())).with_error_code(100)],
                    ),
                    topic(
                        "x".repeat(300).as_str(),
                        2,
                        vec![partition(0, Some(records(70_000, 4)))],
                    ),
                ]),
        ];
        for v in versions() {
            for body in &bodies {
                check(v, body);
            }
        }
    }

    /// Fields the broker does not set today but later versions carry: preferred read replica,
    /// diverging epoch, current leader, snapshot id, node endpoints, aborted transactions,
    /// unknown tagged fields, and fields set at versions that cannot carry them.
    #[test]
    fn matches_kafka_protocol_for_every_field() {
        let p = partition(4, Some(records(9000, 9)))
            .with_aborted_transactions(Some(vec![
                AbortedTransaction::default()
                    .with_producer_id(42.into())
                    .with_first_offset(7),
                AbortedTransaction::default()
                    .with_producer_id(43.into())
                    .with_first_offset(8)
                    .with_unknown_tagged_field(5, Bytes::from_static(b"at")),
            ]))
            .with_preferred_read_replica(BrokerId(2))
            .with_diverging_epoch(EpochEndOffset::default().with_epoch(3).with_end_offset(99))
            .with_current_leader(
                LeaderIdAndEpoch::default()
                    .with_leader_id(BrokerId(1))
                    .with_leader_epoch(6),
            )
            .with_snapshot_id(SnapshotId::default().with_end_offset(1 << 40).with_epoch(2))
            .with_unknown_tagged_field(9, Bytes::from_static(b"partition tag"));
        let endpoint = NodeEndpoint::default()
            .with_node_id(BrokerId(1))
            .with_host(StrBytes::from_static_str("broker-1.example"))
            .with_port(9092)
            .with_rack(Some(StrBytes::from_static_str("rack-a")));
        let full = FetchResponse::default()
            .with_throttle_time_ms(-1)
            .with_error_code(0)
            .with_session_id(99)
            .with_responses(vec![topic("t", 3, vec![p.clone()])
                .with_unknown_tagged_field(1, Bytes::from_static(b"topic tag"))])
            .with_node_endpoints(vec![
                endpoint.clone(),
                NodeEndpoint::default().with_node_id(BrokerId(2)),
            ])
            .with_unknown_tagged_field(7, Bytes::from_static(b"response tag"));
        let single = |p: PartitionData| {
            FetchResponse::default().with_responses(vec![topic("t", 3, vec![p])])
        };
        let mut bodies = vec![
            full.clone(),
            full.clone().with_session_id(0),
            full.clone().with_node_endpoints(vec![]),
            single(p.clone()),
            single(p.clone().with_preferred_read_replica(BrokerId(-1))),
            single(
                partition(0, None).with_diverging_epoch(EpochEndOffset::default().with_epoch(1)),
            ),
            single(
                partition(0, None)
                    .with_current_leader(LeaderIdAndEpoch::default().with_leader_id(BrokerId(3))),
            ),
            single(partition(0, None).with_snapshot_id(SnapshotId::default().with_epoch(1))),
            single(partition(0, None).with_aborted_transactions(None)),
            FetchResponse::default().with_node_endpoints(vec![endpoint]),
        ];
        // A tag below the known ones is counted but not written by kafka-protocol; match it.
        bodies.push(full.with_unknown_tagged_field(0, Bytes::from_static(b"zero")));
        for v in versions() {
            for body in &bodies {
                check(v, body);
            }
        }
    }

    /// Random responses (a fixed seed, so a failure reproduces) at every version.
    #[test]
    fn matches_kafka_protocol_for_random_responses() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..300 {
            let mut topics = Vec::new();
            for t in 0..next() % 4 {
                let mut parts = Vec::new();
                for i in 0..next() % 5 {
                    let records = match next() % 4 {
                        0 => None,
                        1 => Some(Bytes::new()),
                        2 => Some(records((next() % 3000) as usize, i as u8)),
                        _ => Some(records(
                            SHARE_RECORDS_FROM + (next() % 100_000) as usize,
                            i as u8,
                        )),
                    };
                    let mut p = partition(next() as i32, records)
                        .with_error_code((next() % 120) as i16)
                        .with_high_watermark(next() as i64)
                        .with_log_start_offset(next() as i64 >> 3);
                    if next() % 3 == 0 {
                        p = p.with_aborted_transactions(Some(vec![]));
                    }
                    if next() % 5 == 0 {
                        p = p.with_preferred_read_replica(BrokerId((next() % 4) as i32));
                    }
                    if next() % 5 == 0 {
                        p = p.with_current_leader(
                            LeaderIdAndEpoch::default()
                                .with_leader_id(BrokerId(1))
                                .with_leader_epoch(next() as i32),
                        );
                    }
                    parts.push(p);
                }
                let name = "n".repeat((next() % 40) as usize);
                topics.push(topic(
                    &name,
                    u128::from(next()) << 64 | u128::from(t),
                    parts,
                ));
            }
            let body = FetchResponse::default()
                .with_throttle_time_ms((next() % 1000) as i32)
                .with_session_id(if next() % 2 == 0 { 0 } else { next() as i32 })
                .with_responses(topics);
            for v in versions() {
                check(v, &body);
            }
        }
    }

    /// Large record sets reach the frame as the caller's own buffers.
    #[test]
    fn large_record_sets_are_shared_not_copied() {
        let a = records(SHARE_RECORDS_FROM, 1);
        let b = records(1 << 20, 2);
        let body = FetchResponse::default().with_responses(vec![topic(
            "t",
            1,
            vec![
                partition(0, Some(a.clone())),
                partition(1, Some(records(10, 3))),
                partition(2, Some(b.clone())),
            ],
        )]);
        for v in versions() {
            let frame =
                encode_response(ApiKey::Fetch, v, 1, &ResponseKind::Fetch(body.clone())).unwrap();
            let shared: Vec<*const u8> = frame
                .chunks()
                .iter()
                .filter(|c| c.len() >= SHARE_RECORDS_FROM)
                .map(|c| c.as_ptr())
                .collect();
            assert_eq!(shared, [a.as_ptr(), b.as_ptr()], "v{v}");
            // Header and fields between them are small chunks; flexible versions end with
            // tagged fields after the last record set.
            let want = if v >= FLEXIBLE { 5 } else { 4 };
            assert_eq!(frame.chunks().len(), want, "v{v}");
        }
    }
}
