//! Zero-copy views over Kafka RecordBatch v2 (`magic = 2`).
//!
//! The broker never decodes records on the produce or fetch path: it checks the batch header and
//! CRC here, rewrites the two header fields that lie outside the CRC (base offset and partition
//! leader epoch), and stores the bytes verbatim. Everything in this module works on borrowed
//! slices and never panics, whatever the input bytes are.
//!
//! ```text
//! offset  field                 type   notes
//!   0     baseOffset            i64    rewritten by the leader (outside the CRC)
//!   8     batchLength           i32    bytes after this field; total size = 12 + batchLength
//!  12     partitionLeaderEpoch  i32    rewritten by the leader (outside the CRC)
//!  16     magic                 i8     2
//!  17     crc                   u32    CRC32C of bytes [21 .. 12 + batchLength]
//!  21     attributes            i16    bits 0-2 codec, bit 3 LogAppendTime, bit 4 transactional,
//!                                      bit 5 control
//!  23     lastOffsetDelta       i32
//!  27     baseTimestamp         i64
//!  35     maxTimestamp          i64
//!  43     producerId            i64
//!  51     producerEpoch         i16
//!  53     baseSequence          i32
//!  57     recordsCount          i32
//!  61     records...
//! ```

use thiserror::Error;

/// Bytes before the part of a batch counted by `batchLength`: baseOffset (8) + batchLength (4).
pub const LOG_OVERHEAD: usize = 12;
/// Size of the fixed v2 batch header, up to the first record.
pub const BATCH_HEADER_LEN: usize = 61;
/// The only record format version this broker stores.
pub const MAGIC_V2: i8 = 2;
/// Smallest legal `batchLength`: a header with no records (61 - 12).
pub const MIN_BATCH_LENGTH: i32 = (BATCH_HEADER_LEN - LOG_OVERHEAD) as i32;

const BASE_OFFSET_AT: usize = 0;
const BATCH_LENGTH_AT: usize = 8;
const LEADER_EPOCH_AT: usize = 12;
const MAGIC_AT: usize = 16;
const CRC_AT: usize = 17;
/// The CRC covers everything from the attributes to the end of the batch.
const CRC_START: usize = 21;
const ATTRIBUTES_AT: usize = 21;
const LAST_OFFSET_DELTA_AT: usize = 23;
const BASE_TIMESTAMP_AT: usize = 27;
const MAX_TIMESTAMP_AT: usize = 35;
const PRODUCER_ID_AT: usize = 43;
const PRODUCER_EPOCH_AT: usize = 51;
const BASE_SEQUENCE_AT: usize = 53;
const RECORDS_COUNT_AT: usize = 57;

const COMPRESSION_MASK: i16 = 0x07;
const TIMESTAMP_TYPE_BIT: i16 = 0x08;
const TRANSACTIONAL_BIT: i16 = 0x10;
const CONTROL_BIT: i16 = 0x20;

/// Why a buffer is not an acceptable v2 batch (or sequence of batches).
///
/// The suggested Kafka error code for the broker is given per variant.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BatchError {
    /// The buffer ends before the batch does. Kafka: `CORRUPT_MESSAGE`.
    #[error("truncated batch: need {needed} bytes, have {available}")]
    Truncated { needed: usize, available: usize },
    /// `batchLength` is negative or smaller than a bare header. Kafka: `CORRUPT_MESSAGE`.
    #[error("invalid batch length {0}")]
    InvalidLength(i32),
    /// Not a v2 batch. Kafka: `UNSUPPORTED_FOR_MESSAGE_FORMAT`.
    #[error("unsupported record batch magic {0}")]
    UnsupportedMagic(i8),
    /// The stored CRC32C does not match the bytes. Kafka: `CORRUPT_MESSAGE`.
    #[error("batch CRC mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    CorruptCrc { stored: u32, computed: u32 },
    /// Compression codec bits hold a value no codec uses. Kafka: `CORRUPT_MESSAGE`.
    #[error("unknown compression codec {0}")]
    UnknownCompression(u8),
    /// `recordsCount` and `lastOffsetDelta` disagree, or the batch is empty. Kafka: `INVALID_RECORD`.
    #[error("invalid record count {records_count} with last offset delta {last_offset_delta}")]
    InvalidRecordCount {
        records_count: i32,
        last_offset_delta: i32,
    },
    /// A produce request carried no batch at all. Kafka: `INVALID_RECORD`.
    #[error("no record batches")]
    Empty,
}

/// Compression codec of a batch (attribute bits 0-2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Compression {
    /// Maps the 3-bit codec code; codes 5-7 are unassigned in Kafka.
    pub fn from_code(code: u8) -> Result<Compression, BatchError> {
        match code {
            0 => Ok(Compression::None),
            1 => Ok(Compression::Gzip),
            2 => Ok(Compression::Snappy),
            3 => Ok(Compression::Lz4),
            4 => Ok(Compression::Zstd),
            other => Err(BatchError::UnknownCompression(other)),
        }
    }
}

/// The decoded fixed header of a v2 batch. Copy-cheap; the records stay in the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub records_count: i32,
}

fn be_i64(b: &[u8], at: usize) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(a)
}

fn be_i32(b: &[u8], at: usize) -> i32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    i32::from_be_bytes(a)
}

fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}

impl BatchHeader {
    /// Decodes the 61-byte header at the start of `buf`. Checks only that the bytes are there;
    /// magic, length and CRC are the caller's to check (see [`verify_crc`], [`Batches`]).
    pub fn parse(buf: &[u8]) -> Result<BatchHeader, BatchError> {
        if buf.len() < BATCH_HEADER_LEN {
            return Err(BatchError::Truncated {
                needed: BATCH_HEADER_LEN,
                available: buf.len(),
            });
        }
        // Indexing below is in bounds: every field ends at or before byte 61.
        Ok(BatchHeader {
            base_offset: be_i64(buf, BASE_OFFSET_AT),
            batch_length: be_i32(buf, BATCH_LENGTH_AT),
            partition_leader_epoch: be_i32(buf, LEADER_EPOCH_AT),
            magic: buf[MAGIC_AT] as i8,
            crc: be_i32(buf, CRC_AT) as u32,
            attributes: be_i16(buf, ATTRIBUTES_AT),
            last_offset_delta: be_i32(buf, LAST_OFFSET_DELTA_AT),
            base_timestamp: be_i64(buf, BASE_TIMESTAMP_AT),
            max_timestamp: be_i64(buf, MAX_TIMESTAMP_AT),
            producer_id: be_i64(buf, PRODUCER_ID_AT),
            producer_epoch: be_i16(buf, PRODUCER_EPOCH_AT),
            base_sequence: be_i32(buf, BASE_SEQUENCE_AT),
            records_count: be_i32(buf, RECORDS_COUNT_AT),
        })
    }

    /// Whole size of the batch in bytes (`12 + batchLength`); 12 for a negative length, so it is
    /// only meaningful once the length has been checked (as [`Batches`] does).
    pub fn total_size(&self) -> usize {
        LOG_OVERHEAD + self.batch_length.max(0) as usize
    }

    /// Offset of the last record: `baseOffset + lastOffsetDelta` (saturating, never panics).
    pub fn last_offset(&self) -> i64 {
        self.base_offset
            .saturating_add(i64::from(self.last_offset_delta))
    }

    /// The codec from attribute bits 0-2; an unassigned code is an error.
    pub fn compression(&self) -> Result<Compression, BatchError> {
        Compression::from_code((self.attributes & COMPRESSION_MASK) as u8)
    }

    /// Attribute bit 3: the timestamps are the broker's append time, not the producer's.
    pub fn timestamp_type_is_log_append(&self) -> bool {
        self.attributes & TIMESTAMP_TYPE_BIT != 0
    }

    /// Attribute bit 4.
    pub fn is_transactional(&self) -> bool {
        self.attributes & TRANSACTIONAL_BIT != 0
    }

    /// Attribute bit 5: a transaction marker, not user records.
    pub fn is_control(&self) -> bool {
        self.attributes & CONTROL_BIT != 0
    }

    /// Sequence number of the last record, wrapping past `i32::MAX` to 0 as Kafka does;
    /// -1 when the batch carries no sequence.
    pub fn last_sequence(&self) -> i32 {
        if self.base_sequence < 0 {
            return -1;
        }
        let delta = self.last_offset_delta.max(0);
        if self.base_sequence > i32::MAX - delta {
            delta - (i32::MAX - self.base_sequence) - 1
        } else {
            self.base_sequence + delta
        }
    }
}

/// Checks the CRC32C of the batch at the start of `batch` (which may be followed by more bytes).
pub fn verify_crc(batch: &[u8]) -> Result<(), BatchError> {
    let header = BatchHeader::parse(batch)?;
    check_length(&header, batch.len())?;
    let computed = crc32c::crc32c(&batch[CRC_START..header.total_size()]);
    if computed != header.crc {
        return Err(BatchError::CorruptCrc {
            stored: header.crc,
            computed,
        });
    }
    Ok(())
}

/// Computes the CRC32C a batch should carry (over bytes 21..end) and stores it at byte 17.
/// Used by builders and by the broker when it has to change a CRC-covered field
/// (LogAppendTime max timestamp).
pub fn update_crc(batch: &mut [u8]) -> Result<(), BatchError> {
    let header = BatchHeader::parse(batch)?;
    check_length(&header, batch.len())?;
    let crc = crc32c::crc32c(&batch[CRC_START..header.total_size()]);
    batch[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
    Ok(())
}

/// `batchLength` must cover at least a header and fit in the `available` bytes.
fn check_length(header: &BatchHeader, available: usize) -> Result<(), BatchError> {
    if header.batch_length < MIN_BATCH_LENGTH {
        return Err(BatchError::InvalidLength(header.batch_length));
    }
    if header.total_size() > available {
        return Err(BatchError::Truncated {
            needed: header.total_size(),
            available,
        });
    }
    Ok(())
}

/// Rewrites the base offset (bytes 0..8, outside the CRC). Does nothing on a buffer shorter
/// than a batch header, which a validated batch never is.
pub fn set_base_offset(batch: &mut [u8], base_offset: i64) {
    if batch.len() >= BATCH_HEADER_LEN {
        batch[BASE_OFFSET_AT..BASE_OFFSET_AT + 8].copy_from_slice(&base_offset.to_be_bytes());
    }
}

/// Rewrites the partition leader epoch (bytes 12..16, outside the CRC). Does nothing on a buffer
/// shorter than a batch header.
pub fn set_partition_leader_epoch(batch: &mut [u8], epoch: i32) {
    if batch.len() >= BATCH_HEADER_LEN {
        batch[LEADER_EPOCH_AT..LEADER_EPOCH_AT + 4].copy_from_slice(&epoch.to_be_bytes());
    }
}

/// Iterator over a buffer of concatenated batches, yielding each header with the batch's bytes.
///
/// Checks only framing: the length field (same place in every magic) must be at least a v2
/// header and fit in what is left. It does not check magic or CRC. After the first error it
/// yields nothing more, so `collect::<Result<Vec<_>, _>>()` is the usual way to consume it.
#[derive(Debug, Clone)]
pub struct Batches<'a> {
    buf: &'a [u8],
    pos: usize,
    failed: bool,
}

impl<'a> Batches<'a> {
    pub fn new(buf: &'a [u8]) -> Batches<'a> {
        Batches {
            buf,
            pos: 0,
            failed: false,
        }
    }

    /// Byte position in the buffer of the next batch to be yielded.
    pub fn position(&self) -> usize {
        self.pos
    }
}

impl<'a> Iterator for Batches<'a> {
    type Item = Result<(BatchHeader, &'a [u8]), BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.pos >= self.buf.len() {
            return None;
        }
        let rest = &self.buf[self.pos..];
        let result = next_batch(rest);
        match &result {
            Ok((_, bytes)) => self.pos += bytes.len(),
            Err(_) => self.failed = true,
        }
        Some(result)
    }
}

fn next_batch(rest: &[u8]) -> Result<(BatchHeader, &[u8]), BatchError> {
    if rest.len() < LOG_OVERHEAD {
        return Err(BatchError::Truncated {
            needed: LOG_OVERHEAD,
            available: rest.len(),
        });
    }
    let batch_length = be_i32(rest, BATCH_LENGTH_AT);
    if batch_length < MIN_BATCH_LENGTH {
        return Err(BatchError::InvalidLength(batch_length));
    }
    let total = LOG_OVERHEAD + batch_length as usize;
    if total > rest.len() {
        return Err(BatchError::Truncated {
            needed: total,
            available: rest.len(),
        });
    }
    let header = BatchHeader::parse(rest)?;
    Ok((header, &rest[..total]))
}

/// What the broker needs to know about a produce request's records after validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProduceSummary {
    pub batch_count: usize,
    pub record_count: i64,
    /// Largest `maxTimestamp` over all batches.
    pub max_timestamp: i64,
    /// Idempotence fields of the first batch.
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub first_sequence: i32,
    /// `baseSequence + lastOffsetDelta` of the first batch (wrapping), -1 without sequences.
    pub last_sequence: i32,
    pub has_transactional: bool,
    /// Producers must not send control batches; the broker rejects them with `INVALID_RECORD`.
    pub has_control: bool,
}

/// Validates the records of one partition in a produce request: at least one batch, each v2,
/// well framed with no trailing bytes, CRC intact, `recordsCount >= 1` and
/// `lastOffsetDelta == recordsCount - 1`, a known codec.
pub fn validate_produce_batches(buf: &[u8]) -> Result<ProduceSummary, BatchError> {
    let mut summary: Option<ProduceSummary> = None;
    for item in Batches::new(buf) {
        let (header, bytes) = item?;
        if header.magic != MAGIC_V2 {
            return Err(BatchError::UnsupportedMagic(header.magic));
        }
        verify_crc(bytes)?;
        if header.records_count < 1
            || i64::from(header.last_offset_delta) != i64::from(header.records_count) - 1
        {
            return Err(BatchError::InvalidRecordCount {
                records_count: header.records_count,
                last_offset_delta: header.last_offset_delta,
            });
        }
        header.compression()?;
        let s = summary.get_or_insert(ProduceSummary {
            batch_count: 0,
            record_count: 0,
            max_timestamp: i64::MIN,
            producer_id: header.producer_id,
            producer_epoch: header.producer_epoch,
            first_sequence: header.base_sequence,
            last_sequence: header.last_sequence(),
            has_transactional: false,
            has_control: false,
        });
        s.batch_count += 1;
        s.record_count += i64::from(header.records_count);
        s.max_timestamp = s.max_timestamp.max(header.max_timestamp);
        s.has_transactional |= header.is_transactional();
        s.has_control |= header.is_control();
    }
    summary.ok_or(BatchError::Empty)
}

/// Hand-built batches for tests in this and other crates (the log, the broker).
pub mod testing {
    use super::*;

    /// Header fields a test may want to choose; everything else is derived from the records.
    #[derive(Debug, Clone, Copy)]
    pub struct BatchOptions {
        pub base_offset: i64,
        pub partition_leader_epoch: i32,
        pub attributes: i16,
        pub producer_id: i64,
        pub producer_epoch: i16,
        pub base_sequence: i32,
    }

    impl Default for BatchOptions {
        fn default() -> Self {
            BatchOptions {
                base_offset: 0,
                partition_leader_epoch: -1,
                attributes: 0,
                producer_id: -1,
                producer_epoch: -1,
                base_sequence: -1,
            }
        }
    }

    /// xorshift64*: reproducible pseudo-random numbers without a dependency, for the bounded
    /// random and mutation passes the gate runs over every decoder of untrusted bytes.
    pub struct Rng(pub u64);

    impl Rng {
        #[allow(clippy::should_implement_trait)]
        pub fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
    }

    /// One record as a test writes it: key, value, timestamp.
    pub type TestRecord<'a> = (Option<&'a [u8]>, Option<&'a [u8]>, i64);

    /// A valid, uncompressed v2 batch holding `records` (no headers), CRC set.
    pub fn build_batch(base_offset: i64, records: &[TestRecord<'_>]) -> Vec<u8> {
        build_batch_with(
            &BatchOptions {
                base_offset,
                ..BatchOptions::default()
            },
            records,
        )
    }

    /// Like [`build_batch`] with chosen header fields. `attributes` is stored as given, so a
    /// test can mark a batch compressed or transactional without compressing anything.
    pub fn build_batch_with(options: &BatchOptions, records: &[TestRecord<'_>]) -> Vec<u8> {
        let base_timestamp = records.first().map_or(-1, |r| r.2);
        let max_timestamp = records.iter().map(|r| r.2).max().unwrap_or(-1);
        let mut body = Vec::new();
        for (i, (key, value, ts)) in records.iter().enumerate() {
            let mut rec = Vec::new();
            rec.push(0u8); // record attributes
            put_varlong(&mut rec, ts - base_timestamp);
            put_varint(&mut rec, i as i32);
            put_bytes(&mut rec, *key);
            put_bytes(&mut rec, *value);
            put_varint(&mut rec, 0); // header count
            put_varint(&mut body, rec.len() as i32);
            body.extend_from_slice(&rec);
        }
        let mut out = Vec::with_capacity(BATCH_HEADER_LEN + body.len());
        out.extend_from_slice(&options.base_offset.to_be_bytes());
        out.extend_from_slice(
            &((BATCH_HEADER_LEN - LOG_OVERHEAD + body.len()) as i32).to_be_bytes(),
        );
        out.extend_from_slice(&options.partition_leader_epoch.to_be_bytes());
        out.push(MAGIC_V2 as u8);
        out.extend_from_slice(&0u32.to_be_bytes()); // crc, set below
        out.extend_from_slice(&options.attributes.to_be_bytes());
        out.extend_from_slice(&(records.len() as i32 - 1).to_be_bytes());
        out.extend_from_slice(&base_timestamp.to_be_bytes());
        out.extend_from_slice(&max_timestamp.to_be_bytes());
        out.extend_from_slice(&options.producer_id.to_be_bytes());
        out.extend_from_slice(&options.producer_epoch.to_be_bytes());
        out.extend_from_slice(&options.base_sequence.to_be_bytes());
        out.extend_from_slice(&(records.len() as i32).to_be_bytes());
        out.extend_from_slice(&body);
        update_crc(&mut out).expect("builder produces a well-framed batch");
        out
    }

    /// Decodes the records of an uncompressed batch built by [`build_batch`] back into
    /// (key, value, timestamp). Returns `None` on anything it does not understand.
    #[allow(clippy::type_complexity)]
    pub fn decode_records(batch: &[u8]) -> Option<Vec<(Option<Vec<u8>>, Option<Vec<u8>>, i64)>> {
        let header = BatchHeader::parse(batch).ok()?;
        let mut rest = batch.get(BATCH_HEADER_LEN..header.total_size())?;
        let mut out = Vec::new();
        for _ in 0..header.records_count {
            let len = get_varint(&mut rest)?;
            let mut rec = rest.get(..usize::try_from(len).ok()?)?;
            rest = &rest[len as usize..];
            rec = rec.get(1..)?; // attributes
            let ts_delta = get_varint(&mut rec)?;
            let _offset_delta = get_varint(&mut rec)?;
            let key = get_bytes(&mut rec)?;
            let value = get_bytes(&mut rec)?;
            out.push((key, value, header.base_timestamp + ts_delta));
        }
        Some(out)
    }

    fn put_varlong(out: &mut Vec<u8>, v: i64) {
        let mut z = ((v << 1) ^ (v >> 63)) as u64;
        while z >= 0x80 {
            out.push((z as u8) | 0x80);
            z >>= 7;
        }
        out.push(z as u8);
    }

    fn put_varint(out: &mut Vec<u8>, v: i32) {
        put_varlong(out, i64::from(v));
    }

    fn put_bytes(out: &mut Vec<u8>, b: Option<&[u8]>) {
        match b {
            None => put_varint(out, -1),
            Some(b) => {
                put_varint(out, b.len() as i32);
                out.extend_from_slice(b);
            }
        }
    }

    fn get_varint(buf: &mut &[u8]) -> Option<i64> {
        let mut z: u64 = 0;
        for shift in (0..70).step_by(7) {
            let (&b, rest) = buf.split_first()?;
            *buf = rest;
            z |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some((z >> 1) as i64 ^ -((z & 1) as i64));
            }
        }
        None
    }

    fn get_bytes(buf: &mut &[u8]) -> Option<Option<Vec<u8>>> {
        let len = get_varint(buf)?;
        if len < 0 {
            return Some(None);
        }
        let len = usize::try_from(len).ok()?;
        let b = buf.get(..len)?.to_vec();
        *buf = &buf[len..];
        Some(Some(b))
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;

    fn three_records() -> Vec<u8> {
        build_batch(
            100,
            &[
                (Some(b"k1"), Some(b"v1"), 1_000),
                (None, Some(b"v2"), 1_005),
                (Some(b"k3"), None, 1_002),
            ],
        )
    }

    #[test]
    fn builder_produces_a_valid_batch() {
        let b = three_records();
        let h = BatchHeader::parse(&b).unwrap();
        assert_eq!(h.base_offset, 100);
        assert_eq!(h.total_size(), b.len());
        assert_eq!(h.magic, MAGIC_V2);
        assert_eq!(h.records_count, 3);
        assert_eq!(h.last_offset_delta, 2);
        assert_eq!(h.last_offset(), 102);
        assert_eq!(h.base_timestamp, 1_000);
        assert_eq!(h.max_timestamp, 1_005);
        assert_eq!(h.compression(), Ok(Compression::None));
        assert!(!h.is_transactional() && !h.is_control() && !h.timestamp_type_is_log_append());
        verify_crc(&b).unwrap();
        let recs = decode_records(&b).unwrap();
        assert_eq!(recs[0], (Some(b"k1".to_vec()), Some(b"v1".to_vec()), 1_000));
        assert_eq!(recs[1], (None, Some(b"v2".to_vec()), 1_005));
        assert_eq!(recs[2], (Some(b"k3".to_vec()), None, 1_002));
    }

    #[test]
    fn header_needs_61_bytes() {
        let b = three_records();
        assert_eq!(
            BatchHeader::parse(&b[..60]),
            Err(BatchError::Truncated {
                needed: 61,
                available: 60
            })
        );
        assert!(BatchHeader::parse(&b[..61]).is_ok());
    }

    #[test]
    fn attribute_bits() {
        let opts = BatchOptions {
            attributes: 4 | 0x08 | 0x10 | 0x20,
            ..BatchOptions::default()
        };
        let h = BatchHeader::parse(&build_batch_with(&opts, &[(None, None, 1)])).unwrap();
        assert_eq!(h.compression(), Ok(Compression::Zstd));
        assert!(h.timestamp_type_is_log_append() && h.is_transactional() && h.is_control());
        for (code, c) in [
            (1, Compression::Gzip),
            (2, Compression::Snappy),
            (3, Compression::Lz4),
        ] {
            assert_eq!(Compression::from_code(code), Ok(c));
        }
        for code in 5..8 {
            assert_eq!(
                Compression::from_code(code),
                Err(BatchError::UnknownCompression(code))
            );
        }
    }

    #[test]
    fn setters_do_not_break_the_crc() {
        let mut b = three_records();
        set_base_offset(&mut b, 123_456_789);
        set_partition_leader_epoch(&mut b, 7);
        let h = BatchHeader::parse(&b).unwrap();
        assert_eq!(h.base_offset, 123_456_789);
        assert_eq!(h.partition_leader_epoch, 7);
        verify_crc(&b).unwrap();
        let mut short = [0u8; 20];
        set_base_offset(&mut short, 1); // too short: ignored, no panic
        assert_eq!(short, [0u8; 20]);
    }

    #[test]
    fn every_flipped_bit_in_crc_range_is_detected() {
        let b = three_records();
        for i in CRC_START..b.len() {
            let mut c = b.clone();
            c[i] ^= 0x01;
            assert!(
                matches!(verify_crc(&c), Err(BatchError::CorruptCrc { .. })),
                "byte {i}"
            );
        }
        // The CRC field itself.
        let mut c = b.clone();
        c[CRC_AT] ^= 0x80;
        assert!(matches!(verify_crc(&c), Err(BatchError::CorruptCrc { .. })));
        // Bytes outside the CRC range are free to change.
        let mut c = b;
        c[0] ^= 0xff;
        c[LEADER_EPOCH_AT] ^= 0xff;
        verify_crc(&c).unwrap();
    }

    #[test]
    fn iterates_concatenated_batches() {
        let a = build_batch(0, &[(None, Some(b"a"), 1)]);
        let b = three_records();
        let mut buf = a.clone();
        buf.extend_from_slice(&b);
        let mut it = Batches::new(&buf);
        let (h, bytes) = it.next().unwrap().unwrap();
        assert_eq!((h.base_offset, bytes), (0, &a[..]));
        assert_eq!(it.position(), a.len());
        let (h, bytes) = it.next().unwrap().unwrap();
        assert_eq!((h.base_offset, bytes), (100, &b[..]));
        assert!(it.next().is_none());
    }

    #[test]
    fn iterator_reports_truncation_then_stops() {
        let a = build_batch(0, &[(None, Some(b"a"), 1)]);
        let mut buf = a.clone();
        buf.extend_from_slice(&a[..a.len() - 1]);
        let items: Vec<_> = Batches::new(&buf).collect();
        assert_eq!(items.len(), 2);
        assert!(items[0].is_ok());
        assert!(matches!(items[1], Err(BatchError::Truncated { .. })));
        // Fewer than 12 bytes left.
        let items: Vec<_> = Batches::new(&a[..5]).collect();
        assert_eq!(items.len(), 1);
        assert!(matches!(items[0], Err(BatchError::Truncated { .. })));
    }

    #[test]
    fn iterator_rejects_bad_lengths() {
        for len in [-1i32, i32::MIN, 0, 48] {
            let mut b = three_records();
            b[8..12].copy_from_slice(&len.to_be_bytes());
            let items: Vec<_> = Batches::new(&b).collect();
            assert_eq!(items, vec![Err(BatchError::InvalidLength(len))]);
        }
        let mut b = three_records();
        b[8..12].copy_from_slice(&i32::MAX.to_be_bytes());
        let items: Vec<_> = Batches::new(&b).collect();
        assert!(matches!(items[..], [Err(BatchError::Truncated { .. })]));
    }

    #[test]
    fn validate_accepts_good_batches_and_summarises() {
        let first = build_batch_with(
            &BatchOptions {
                producer_id: 42,
                producer_epoch: 3,
                base_sequence: i32::MAX - 1,
                ..BatchOptions::default()
            },
            &[
                (None, Some(b"x"), 10),
                (None, Some(b"y"), 30),
                (None, Some(b"z"), 20),
            ],
        );
        let second = build_batch_with(
            &BatchOptions {
                attributes: 0x10,
                ..BatchOptions::default()
            },
            &[(None, Some(b"w"), 50)],
        );
        let mut buf = first;
        buf.extend_from_slice(&second);
        let s = validate_produce_batches(&buf).unwrap();
        assert_eq!(s.batch_count, 2);
        assert_eq!(s.record_count, 4);
        assert_eq!(s.max_timestamp, 50);
        assert_eq!((s.producer_id, s.producer_epoch), (42, 3));
        assert_eq!(s.first_sequence, i32::MAX - 1);
        assert_eq!(s.last_sequence, 0, "sequence wraps past i32::MAX");
        assert!(s.has_transactional);
        assert!(!s.has_control);
    }

    #[test]
    fn validate_rejects_bad_input() {
        let good = three_records();
        assert_eq!(validate_produce_batches(&[]), Err(BatchError::Empty));

        let mut trailing = good.clone();
        trailing.push(0);
        assert!(matches!(
            validate_produce_batches(&trailing),
            Err(BatchError::Truncated { .. })
        ));

        let mut magic = good.clone();
        magic[MAGIC_AT] = 1;
        assert_eq!(
            validate_produce_batches(&magic),
            Err(BatchError::UnsupportedMagic(1))
        );

        let mut crc = good.clone();
        *crc.last_mut().unwrap() ^= 1;
        assert!(matches!(
            validate_produce_batches(&crc),
            Err(BatchError::CorruptCrc { .. })
        ));

        let mut count = good.clone();
        count[RECORDS_COUNT_AT..RECORDS_COUNT_AT + 4].copy_from_slice(&2i32.to_be_bytes());
        update_crc(&mut count).unwrap();
        assert!(matches!(
            validate_produce_batches(&count),
            Err(BatchError::InvalidRecordCount { .. })
        ));

        let empty = build_batch(0, &[]);
        assert!(matches!(
            validate_produce_batches(&empty),
            Err(BatchError::InvalidRecordCount { .. })
        ));

        let mut codec = good;
        codec[ATTRIBUTES_AT + 1] |= 0x07;
        update_crc(&mut codec).unwrap();
        assert_eq!(
            validate_produce_batches(&codec),
            Err(BatchError::UnknownCompression(7))
        );
    }

    #[test]
    fn random_and_mutated_inputs_never_panic() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let good = {
            let mut b = three_records();
            b.extend_from_slice(&build_batch(3, &[(None, Some(b"tail"), 9)]));
            b
        };
        for round in 0..20_000 {
            let buf: Vec<u8> = if round % 2 == 0 {
                let len = (rng.next() % 200) as usize;
                (0..len).map(|_| rng.next() as u8).collect()
            } else {
                // Mutate a valid buffer: flip bytes, then cut it somewhere.
                let mut b = good.clone();
                for _ in 0..(rng.next() % 4) {
                    let i = (rng.next() as usize) % b.len();
                    b[i] = rng.next() as u8;
                }
                let cut = (rng.next() as usize) % (b.len() + 1);
                b.truncate(cut);
                b
            };
            // The iterator ends after an error, so only the Ok prefix matters here.
            for (h, bytes) in Batches::new(&buf).flatten() {
                assert_eq!(h.total_size(), bytes.len());
                let _ = h.compression();
                let _ = h.last_offset();
                let _ = h.last_sequence();
            }
            let _ = BatchHeader::parse(&buf);
            let _ = verify_crc(&buf);
            let _ = validate_produce_batches(&buf);
            let _ = decode_records(&buf);
        }
    }
}
