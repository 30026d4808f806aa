//! Looking inside a stored batch for compaction: decompress its records section, walk the
//! records (offset, timestamp, key, tombstone or not), and rebuild the batch from a subset.
//!
//! Kept records are copied byte for byte: their offset and timestamp deltas stay valid because
//! the rebuilt batch keeps the source's baseOffset, baseTimestamp and lastOffsetDelta (Kafka's
//! cleaner also preserves the last offset, so the producer's last sequence survives). Only
//! recordsCount, maxTimestamp (CreateTime), batchLength and the CRC change.
//!
//! ```text
//! record (inside the possibly compressed records section):
//!   length          varint   bytes after this field
//!   attributes      i8       unused, 0
//!   timestampDelta  varlong  from baseTimestamp
//!   offsetDelta     varint   from baseOffset
//!   keyLength       varint   -1 = null key
//!   key             bytes
//!   valueLength     varint   -1 = null value (a tombstone)
//!   value           bytes
//!   headers         [varint count, then key/value pairs]  (copied, never parsed)
//! ```
//!
//! Nothing here panics on any input: every length is checked against the buffer.

use std::ops::Range;

use bytes::{Bytes, BytesMut};
use sluice_protocol::batch::{update_crc, BatchHeader, Compression, BATCH_HEADER_LEN};
use sluice_protocol::kafka::compression::{self as codec, Compressor, Decompressor};

/// Attribute bits 0-2.
const CODEC_MASK: i16 = 0x07;

/// Why a batch cannot be looked into.
pub(crate) type RecordsError = String;

/// One record of a decoded batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RecordView {
    pub offset: i64,
    pub timestamp: i64,
    pub key: Option<Bytes>,
    /// Null value.
    pub tombstone: bool,
    /// The record's bytes in [`DecodedBatch::body`], length prefix included.
    pub raw: Range<usize>,
}

/// A batch with its records section decompressed and indexed.
#[derive(Debug)]
pub(crate) struct DecodedBatch {
    pub header: BatchHeader,
    pub compression: Compression,
    /// The uncompressed records section.
    pub body: Bytes,
    pub records: Vec<RecordView>,
}

/// Decodes one whole v2 batch (`batch` holds exactly it). The CRC is not checked here: the
/// caller read it from a segment that recovery vouches for.
pub(crate) fn decode(batch: &[u8]) -> Result<DecodedBatch, RecordsError> {
    let header = BatchHeader::parse(batch).map_err(|e| e.to_string())?;
    let compression = header.compression().map_err(|e| e.to_string())?;
    let section = batch
        .get(BATCH_HEADER_LEN..header.total_size())
        .ok_or("batch shorter than its length field")?;
    let body = decompress(compression, Bytes::copy_from_slice(section))?;
    let count = usize::try_from(header.records_count).map_err(|_| "negative record count")?;
    // Each record takes at least 7 bytes: bounds the allocation.
    let mut records = Vec::with_capacity(count.min(body.len() / 7 + 1));
    let mut pos = 0usize;
    for _ in 0..count {
        let start = pos;
        let len = read_varint(&body, &mut pos)?;
        let len = usize::try_from(len).map_err(|_| "negative record length")?;
        let end = pos.checked_add(len).filter(|&e| e <= body.len());
        let end = end.ok_or("record runs past the batch")?;
        let rec = &body[..end];
        pos += 1; // attributes
        let ts_delta = read_varlong(rec, &mut pos)?;
        let offset_delta = read_varint(rec, &mut pos)?;
        let key = read_bytes(rec, &mut pos)?.map(|r| body.slice(r));
        let tombstone = read_bytes(rec, &mut pos)?.is_none();
        records.push(RecordView {
            offset: header.base_offset.saturating_add(i64::from(offset_delta)),
            timestamp: header.base_timestamp.saturating_add(ts_delta),
            key,
            tombstone,
            raw: start..end,
        });
        pos = end;
    }
    Ok(DecodedBatch {
        header,
        compression,
        body,
        records,
    })
}

/// A batch holding only `keep` (indexes into `batch.records`, increasing), with the source's
/// base offset, lastOffsetDelta, base timestamp, producer fields, attributes (so the codec) and
/// partition leader epoch, a recomputed maxTimestamp (CreateTime with records kept) and a
/// fresh CRC. `keep` may be empty: an empty batch still covers the source's offset range
/// (uncompressed, like Kafka's empty batches).
pub(crate) fn rebuild(batch: &DecodedBatch, keep: &[usize]) -> Result<Vec<u8>, RecordsError> {
    let h = &batch.header;
    let mut raw = Vec::new();
    let mut max_timestamp = None::<i64>;
    for &i in keep {
        let r = batch.records.get(i).ok_or("record index out of range")?;
        raw.extend_from_slice(&batch.body[r.raw.clone()]);
        max_timestamp = Some(max_timestamp.map_or(r.timestamp, |m| m.max(r.timestamp)));
    }
    let max_timestamp = match max_timestamp {
        Some(ts) if !h.timestamp_type_is_log_append() => ts,
        _ => h.max_timestamp,
    };
    // An empty batch is written as Kafka writes one (`writeEmptyHeader`): no records section
    // and codec bits cleared, since an empty compressed stream is not decodable by every
    // client.
    let (section, attributes) = if keep.is_empty() {
        (Bytes::new(), h.attributes & !CODEC_MASK)
    } else {
        (compress(batch.compression, &raw)?, h.attributes)
    };
    let batch_length = i32::try_from(BATCH_HEADER_LEN - 12 + section.len())
        .map_err(|_| "rebuilt batch too large")?;
    let mut out = Vec::with_capacity(BATCH_HEADER_LEN + section.len());
    out.extend_from_slice(&h.base_offset.to_be_bytes());
    out.extend_from_slice(&batch_length.to_be_bytes());
    out.extend_from_slice(&h.partition_leader_epoch.to_be_bytes());
    out.push(h.magic as u8);
    out.extend_from_slice(&0u32.to_be_bytes()); // crc, set below
    out.extend_from_slice(&attributes.to_be_bytes());
    out.extend_from_slice(&h.last_offset_delta.to_be_bytes());
    out.extend_from_slice(&h.base_timestamp.to_be_bytes());
    out.extend_from_slice(&max_timestamp.to_be_bytes());
    out.extend_from_slice(&h.producer_id.to_be_bytes());
    out.extend_from_slice(&h.producer_epoch.to_be_bytes());
    out.extend_from_slice(&h.base_sequence.to_be_bytes());
    out.extend_from_slice(&(keep.len() as i32).to_be_bytes());
    out.extend_from_slice(&section);
    update_crc(&mut out).map_err(|e| e.to_string())?;
    Ok(out)
}

fn decompress(compression: Compression, section: Bytes) -> Result<Bytes, RecordsError> {
    fn with<D: Decompressor<Bytes, Buf = Bytes>>(mut data: Bytes) -> Result<Bytes, RecordsError> {
        D::decompress(&mut data, |buf| Ok(std::mem::take(buf)))
            .map_err(|e| format!("cannot decompress records: {e:#}"))
    }
    match compression {
        Compression::None => Ok(section),
        Compression::Gzip => with::<codec::Gzip>(section),
        Compression::Snappy => with::<codec::Snappy>(section),
        Compression::Lz4 => with::<codec::Lz4>(section),
        Compression::Zstd => with::<codec::Zstd>(section),
    }
}

fn compress(compression: Compression, raw: &[u8]) -> Result<Bytes, RecordsError> {
    fn with<C: Compressor<BytesMut, BufMut = BytesMut>>(raw: &[u8]) -> Result<Bytes, RecordsError> {
        let mut out = BytesMut::new();
        C::compress(&mut out, |tmp| {
            tmp.extend_from_slice(raw);
            Ok(())
        })
        .map_err(|e| format!("cannot compress records: {e:#}"))?;
        Ok(out.freeze())
    }
    match compression {
        Compression::None => Ok(Bytes::copy_from_slice(raw)),
        Compression::Gzip => with::<codec::Gzip>(raw),
        Compression::Snappy => with::<codec::Snappy>(raw),
        Compression::Lz4 => with::<codec::Lz4>(raw),
        Compression::Zstd => with::<codec::Zstd>(raw),
    }
}

/// Zigzag LEB128, at most 10 bytes.
fn read_varlong(buf: &[u8], pos: &mut usize) -> Result<i64, RecordsError> {
    let mut value: u64 = 0;
    for i in 0..10 {
        let b = *buf.get(*pos).ok_or("varint runs past the record")?;
        *pos += 1;
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(((value >> 1) as i64) ^ -((value & 1) as i64));
        }
    }
    Err("varint longer than 10 bytes".into())
}

fn read_varint(buf: &[u8], pos: &mut usize) -> Result<i32, RecordsError> {
    let v = read_varlong(buf, pos)?;
    i32::try_from(v).map_err(|_| "varint out of i32 range".into())
}

/// A length-prefixed byte field: `None` for length -1, else its range in `buf`.
fn read_bytes(buf: &[u8], pos: &mut usize) -> Result<Option<Range<usize>>, RecordsError> {
    let len = read_varint(buf, pos)?;
    if len == -1 {
        return Ok(None);
    }
    let len = usize::try_from(len).map_err(|_| "negative field length")?;
    let end = pos
        .checked_add(len)
        .filter(|&e| e <= buf.len())
        .ok_or("field runs past the record")?;
    let range = *pos..end;
    *pos = end;
    Ok(Some(range))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_protocol::batch::testing::build_batch;
    use sluice_protocol::batch::verify_crc;
    use sluice_protocol::kafka::records::{
        Compression as Codec, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions,
        TimestampType,
    };

    /// A batch with keys k0..kn, values v0..vn (value None for every index in `tombstones`).
    pub(crate) fn keyed_batch(codec: Codec, base: i64, n: usize, tombstones: &[usize]) -> Vec<u8> {
        let records: Vec<Record> = (0..n)
            .map(|i| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: 3,
                producer_id: 77,
                producer_epoch: 2,
                timestamp_type: TimestampType::Creation,
                offset: base + i as i64,
                sequence: 10 + i as i32,
                timestamp: 1000 + i as i64,
                key: Some(Bytes::from(format!("k{i}"))),
                value: (!tombstones.contains(&i)).then(|| Bytes::from(format!("v{i}"))),
                headers: Default::default(),
            })
            .collect();
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            &records,
            &RecordEncodeOptions {
                version: 2,
                compression: codec,
            },
        )
        .unwrap();
        buf.to_vec()
    }

    #[test]
    fn decode_and_rebuild_every_codec() {
        for (codec, ours) in [
            (Codec::None, Compression::None),
            (Codec::Gzip, Compression::Gzip),
            (Codec::Snappy, Compression::Snappy),
            (Codec::Lz4, Compression::Lz4),
            (Codec::Zstd, Compression::Zstd),
        ] {
            let src = keyed_batch(codec, 100, 5, &[3]);
            let d = decode(&src).unwrap();
            assert_eq!(d.compression, ours);
            assert_eq!(d.records.len(), 5);
            assert_eq!(d.records[2].offset, 102);
            assert_eq!(d.records[2].timestamp, 1002);
            assert_eq!(d.records[2].key.as_deref(), Some(&b"k2"[..]));
            assert!(d.records[3].tombstone && !d.records[2].tombstone);

            let out = rebuild(&d, &[1, 3]).unwrap();
            verify_crc(&out).unwrap();
            let h = BatchHeader::parse(&out).unwrap();
            let sh = d.header;
            assert_eq!(
                (h.base_offset, h.last_offset_delta, h.records_count),
                (100, 4, 2)
            );
            assert_eq!(
                (h.attributes, h.producer_id, h.producer_epoch),
                (sh.attributes, 77, 2)
            );
            assert_eq!((h.base_sequence, h.partition_leader_epoch), (10, 3));
            assert_eq!((h.base_timestamp, h.max_timestamp), (1000, 1003));
            let set = RecordBatchDecoder::decode(&mut Bytes::from(out)).unwrap();
            let got: Vec<_> = set
                .records
                .iter()
                .map(|r| {
                    (
                        r.offset,
                        r.timestamp,
                        r.key.clone(),
                        r.value.clone(),
                        r.sequence,
                    )
                })
                .collect();
            assert_eq!(
                got,
                vec![
                    (
                        101,
                        1001,
                        Some(Bytes::from("k1")),
                        Some(Bytes::from("v1")),
                        11
                    ),
                    (103, 1003, Some(Bytes::from("k3")), None, 13),
                ],
                "{codec:?}"
            );

            let empty = rebuild(&d, &[]).unwrap();
            verify_crc(&empty).unwrap();
            let h = BatchHeader::parse(&empty).unwrap();
            assert_eq!(
                (h.last_offset(), h.records_count, h.max_timestamp),
                (104, 0, 1004)
            );
            assert!(RecordBatchDecoder::decode(&mut Bytes::from(empty))
                .unwrap()
                .records
                .is_empty());
        }
    }

    #[test]
    fn null_keys_and_garbage() {
        let src = build_batch(5, &[(None, Some(b"a"), 1), (Some(b"k"), None, 2)]);
        let d = decode(&src).unwrap();
        assert_eq!(d.records[0].key, None);
        assert_eq!(d.records[1].key.as_deref(), Some(&b"k"[..]));
        assert!(d.records[1].tombstone);
        for cut in 0..src.len() {
            let mut broken = src.clone();
            broken[cut] ^= 0xff;
            let _ = decode(&broken);
            let _ = decode(&src[..cut]);
        }
    }
}
