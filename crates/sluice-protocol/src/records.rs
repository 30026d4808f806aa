//! Looking inside a stored batch: decoding (and decompressing) its records.
//!
//! The produce and fetch paths never do this; only the rare paths that need individual records
//! do: ListOffsets by timestamp (the first *record* at or after a time, which may sit in the
//! middle of a batch) and, later, compaction.

use bytes::Bytes;
use kafka_protocol::records::RecordBatchDecoder;
use thiserror::Error;

use crate::batch::{BatchError, BatchHeader};
use crate::validate::MAX_UNCOMPRESSED_BATCH_BYTES;

#[derive(Debug, Error)]
pub enum RecordsError {
    #[error(transparent)]
    Batch(#[from] BatchError),
    #[error("undecodable records: {0}")]
    Decode(String),
}

/// The first record of `batch` (one whole v2 batch) whose timestamp is >= `target`, as
/// `(offset, timestamp)`. For LogAppendTime batches every record carries the batch's max
/// timestamp. Walks the records in place (streaming through the decompressor) without
/// materialising them.
pub fn first_at_or_after(batch: &[u8], target: i64) -> Result<Option<(i64, i64)>, RecordsError> {
    let header = BatchHeader::parse(batch)?;
    if header.max_timestamp < target {
        return Ok(None);
    }
    if header.timestamp_type_is_log_append() {
        return Ok(Some((header.base_offset, header.max_timestamp)));
    }
    let mut found = None;
    crate::validate::walk_records(batch, MAX_UNCOMPRESSED_BATCH_BYTES, |r| {
        if found.is_none() && r.timestamp >= target {
            found = Some((header.base_offset + i64::from(r.index), r.timestamp));
        }
    })
    .map_err(|e| RecordsError::Decode(e.to_string()))?;
    Ok(found)
}

/// Re-encodes one whole v2 batch with `codec` (a topic's `compression.type` that differs from
/// the producer's), keeping every record with its key, value, headers, timestamp and offset
/// delta, and the batch's producer id, epoch, base sequence and timestamp type, as Kafka's
/// `LogValidator` does when it recompresses. The caller has validated the batch, so its
/// decompressed size is bounded. Not a hot path: topics rarely force a codec.
pub fn recompress(batch: &[u8], codec: crate::batch::Compression) -> Result<Vec<u8>, RecordsError> {
    use crate::batch::Compression as C;
    use kafka_protocol::records::{Compression, RecordBatchEncoder, RecordEncodeOptions};
    let records = decode(batch)?;
    let compression = match codec {
        C::None => Compression::None,
        C::Gzip => Compression::Gzip,
        C::Snappy => Compression::Snappy,
        C::Lz4 => Compression::Lz4,
        C::Zstd => Compression::Zstd,
    };
    let mut out = bytes::BytesMut::with_capacity(batch.len());
    RecordBatchEncoder::encode(
        &mut out,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression,
        },
    )
    .map_err(|e| RecordsError::Decode(format!("re-encoding: {e:#}")))?;
    // One batch in, one batch out: the encoder only splits where producer fields change, and
    // every record of one batch shares them.
    let header = BatchHeader::parse(&out)?;
    if header.total_size() != out.len() {
        return Err(RecordsError::Decode(
            "re-encoding split the batch in two".into(),
        ));
    }
    Ok(out.to_vec())
}

/// Every record of `batch` (one whole v2 batch), decompressed. For produce-time checks that
/// Kafka makes per record (keys on compacted topics, timestamp bounds).
pub fn decode(batch: &[u8]) -> Result<Vec<kafka_protocol::records::Record>, RecordsError> {
    let mut buf = Bytes::copy_from_slice(batch);
    RecordBatchDecoder::decode(&mut buf)
        .map(|set| set.records)
        .map_err(|e| RecordsError::Decode(format!("{e:#}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::records::{
        Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };

    fn batch(compression: Compression, base: i64, timestamps: &[i64]) -> Vec<u8> {
        let records: Vec<Record> = timestamps
            .iter()
            .enumerate()
            .map(|(i, ts)| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: 0,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: base + i as i64,
                // The encoder starts a new batch whenever offset - sequence changes.
                sequence: i as i32,
                timestamp: *ts,
                key: None,
                value: Some(Bytes::from(vec![b'x'; 100])),
                headers: Default::default(),
            })
            .collect();
        let mut buf = bytes::BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            &records,
            &RecordEncodeOptions {
                version: 2,
                compression,
            },
        )
        .unwrap();
        buf.to_vec()
    }

    #[test]
    fn finds_the_record_inside_a_batch_for_every_codec() {
        for c in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let b = batch(c, 100, &[1000, 2000, 3000, 4000]);
            assert_eq!(
                first_at_or_after(&b, 0).unwrap(),
                Some((100, 1000)),
                "{c:?}"
            );
            assert_eq!(first_at_or_after(&b, 2000).unwrap(), Some((101, 2000)));
            assert_eq!(first_at_or_after(&b, 2500).unwrap(), Some((102, 3000)));
            assert_eq!(first_at_or_after(&b, 4001).unwrap(), None);
        }
    }

    #[test]
    fn out_of_order_timestamps_give_the_first_qualifying_offset() {
        let b = batch(Compression::None, 0, &[5000, 1000, 6000]);
        assert_eq!(first_at_or_after(&b, 2000).unwrap(), Some((0, 5000)));
        assert_eq!(first_at_or_after(&b, 5500).unwrap(), Some((2, 6000)));
    }

    #[test]
    fn recompression_keeps_every_record_in_every_codec() {
        use crate::batch::{BatchHeader, Compression as C};
        let codecs = [C::None, C::Gzip, C::Snappy, C::Lz4, C::Zstd];
        for from in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let original = batch(from, 100, &[1000, 2000, 1500]);
            let before = decode(&original).unwrap();
            for to in codecs {
                let out = recompress(&original, to).unwrap();
                crate::batch::validate_produce_batches(&out).unwrap();
                let h = BatchHeader::parse(&out).unwrap();
                assert_eq!(h.compression().unwrap(), to);
                assert_eq!((h.records_count, h.max_timestamp), (3, 2000));
                let after = decode(&out).unwrap();
                assert_eq!(after.len(), before.len());
                for (a, b) in after.iter().zip(&before) {
                    assert_eq!(
                        (a.offset, a.timestamp, &a.value),
                        (b.offset, b.timestamp, &b.value)
                    );
                }
            }
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let b = batch(Compression::Zstd, 0, &[1, 2, 3]);
        for cut in [0, 10, 61, b.len() - 1] {
            assert!(first_at_or_after(&b[..cut], 0).is_err() || cut == 0);
        }
    }
}
