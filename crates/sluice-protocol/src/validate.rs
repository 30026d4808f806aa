//! The log validator: nothing reaches a log until its records have been walked and found to
//! match their batch header (Kafka's `LogValidator`).
//!
//! The header checks in [`crate::batch`] (framing, magic, CRC, `lastOffsetDelta`) cannot see a
//! batch that lies about its records: a valid CRC over a header claiming 2^31 records and one
//! record behind it, a record whose length runs past the batch, a key length of a gigabyte.
//! [`walk_records`] reads every record of one batch *in place*, without copying or allocating
//! anything sized by the data:
//!
//! ```text
//! record := length varint        bytes after this field, to the end of the record
//!           attributes int8      unused in v2
//!           timestampDelta varlong
//!           offsetDelta varint   must be 0, 1, 2, ... in order
//!           keyLength varint     -1 = null key
//!           key bytes
//!           valueLength varint   -1 = null value
//!           value bytes
//!           headerCount varint   >= 0
//!           header*  := keyLength varint (>= 0), key, valueLength varint (>= -1), value
//! ```
//!
//! Every field must lie inside its record and every record inside the batch; the records must
//! fill the batch exactly and their number must be `recordsCount`.
//!
//! Compressed batches are decompressed *streaming* through a small buffer and walked the same
//! way; the decompressed size is capped at a limit (see [`MAX_UNCOMPRESSED_BATCH_BYTES`]), so a
//! decompression bomb (CVE-2023-34455) is refused after at most `limit` bytes of work and never
//! materialised. The caller's visitor sees each record's offset delta, timestamp and key/value
//! lengths, which is all the per-record rules need (keys on compacted topics, timestamp bounds).

use std::io::{BufRead, BufReader, Read};

use thiserror::Error;

use crate::batch::{BatchError, BatchHeader, Compression, BATCH_HEADER_LEN};

/// Default bound on the decompressed size of one batch's records. Producers compress batches
/// of at most a few MiB (`batch.size`, `max.request.size`); a 1 MiB batch would have to
/// compress 128:1 to reach it. Lower than the vendored decoder's own bound, so anything stored
/// can be decoded again later.
pub const MAX_UNCOMPRESSED_BATCH_BYTES: usize = 128 << 20;

/// Bytes of buffer between a decompressor and the walk.
const STREAM_BUFFER: usize = 64 << 10;

/// zstd frames name their window size; the decoder allocates it. 2^24 (16 MiB) covers every
/// level producers use on batches of this size; a frame asking for more is refused.
const ZSTD_WINDOW_LOG_MAX: u32 = 24;

thread_local! {
    /// One zstd decompression context per thread, reused from batch to batch: a fresh one per
    /// batch allocates its window again (large enough to be mmap'd, so faulted in again) every
    /// time. The blocking-pool threads that validate produces live long.
    static ZSTD_CONTEXT: std::cell::RefCell<Option<zstd::zstd_safe::DCtx<'static>>> =
        const { std::cell::RefCell::new(None) };
}

/// One record as the walk sees it: everything but the bytes of key, value and headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordView {
    /// Position in the batch, from 0; equals the offset delta in a valid batch.
    pub index: i32,
    /// `baseTimestamp + timestampDelta` (saturating).
    pub timestamp: i64,
    /// -1 for a null key.
    pub key_len: i32,
    /// -1 for a null value (a tombstone).
    pub value_len: i32,
    pub header_count: i32,
}

impl RecordView {
    pub fn has_key(&self) -> bool {
        self.key_len >= 0
    }
}

/// Why the records of a batch are not what its header says. Kafka: `INVALID_RECORD`, except
/// [`RecordsError::Batch`], which carries its own code.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RecordsError {
    #[error(transparent)]
    Batch(#[from] BatchError),
    /// A record's structure is broken at record `index` of the batch.
    #[error("record {index} is malformed: {reason}")]
    Malformed { index: i32, reason: &'static str },
    /// A record's offset delta is not its position.
    #[error("record {index} has offset delta {offset_delta}, expected {index}")]
    OffsetDelta { index: i32, offset_delta: i32 },
    /// The batch holds another number of records than its header claims.
    #[error("batch header claims {claimed} records but the batch holds {found}")]
    CountMismatch { claimed: i32, found: i64 },
    /// The records decompress to more than the limit (a decompression bomb, or a batch far
    /// larger than any producer writes).
    #[error("records decompress to more than {limit} bytes")]
    TooLarge { limit: usize },
    /// The compressed bytes are not a valid stream of their codec.
    #[error("records cannot be decompressed ({codec:?}): {reason}")]
    Decompress { codec: Compression, reason: String },
}

impl RecordsError {
    /// The record at fault, when one is (for KIP-467 `record_errors`).
    pub fn record_index(&self) -> Option<i32> {
        match self {
            RecordsError::Malformed { index, .. } | RecordsError::OffsetDelta { index, .. } => {
                Some(*index)
            }
            _ => None,
        }
    }
}

/// What the walk found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalkSummary {
    /// Records in the batch (equal to the header's `recordsCount`).
    pub records: i32,
    /// Largest record timestamp; `-1` (Kafka's NO_TIMESTAMP) if the batch had none larger.
    pub max_timestamp: i64,
    /// Bytes of records after decompression (the batch's own size when uncompressed).
    pub uncompressed_bytes: usize,
    /// The batch's codec.
    pub compression: Compression,
}

/// Walks every record of one whole v2 batch (framing and CRC already checked, e.g. by
/// [`crate::batch::validate_produce_batches`]), calling `visit` for each, in order. Stops at the
/// first structural problem. `limit` bounds the decompressed size of compressed batches.
pub fn walk_records(
    batch: &[u8],
    limit: usize,
    mut visit: impl FnMut(&RecordView),
) -> Result<WalkSummary, RecordsError> {
    let header = BatchHeader::parse(batch)?;
    let end = header.total_size().min(batch.len());
    let body = batch.get(BATCH_HEADER_LEN..end).unwrap_or_default();
    let codec = header.compression()?;
    let (found, max_timestamp, bytes) = match codec {
        Compression::None => {
            let mut input = SliceInput { buf: body, pos: 0 };
            let (n, max) = walk(&mut input, &header, &mut visit)?;
            (n, max, body.len())
        }
        Compression::Gzip => stream(
            flate2::read::MultiGzDecoder::new(body),
            codec,
            &header,
            limit,
            &mut visit,
        )?,
        Compression::Snappy => stream(
            SnappyReader::new(body, limit)?,
            codec,
            &header,
            limit,
            &mut visit,
        )?,
        Compression::Lz4 => stream(
            lz4::Decoder::new(body).map_err(|e| decompress(codec, e.to_string()))?,
            codec,
            &header,
            limit,
            &mut visit,
        )?,
        Compression::Zstd => ZSTD_CONTEXT.with(|cell| {
            // Not re-entrant: `visit` never walks another batch.
            let mut slot = cell.borrow_mut();
            let context = match &mut *slot {
                Some(context) => context,
                empty => {
                    let mut context = zstd::zstd_safe::DCtx::create();
                    context
                        .set_parameter(zstd::zstd_safe::DParameter::WindowLogMax(
                            ZSTD_WINDOW_LOG_MAX,
                        ))
                        .map_err(|code| decompress(codec, zstd::zstd_safe::get_error_name(code)))?;
                    empty.insert(context)
                }
            };
            // `with_context` resets the session, whatever the last batch left behind.
            let decoder = zstd::stream::read::Decoder::with_context(body, context);
            stream(decoder, codec, &header, limit, &mut visit)
        })?,
    };
    if found != i64::from(header.records_count) {
        return Err(RecordsError::CountMismatch {
            claimed: header.records_count,
            found,
        });
    }
    Ok(WalkSummary {
        records: header.records_count,
        max_timestamp,
        uncompressed_bytes: bytes,
        compression: codec,
    })
}

fn decompress(codec: Compression, reason: impl Into<String>) -> RecordsError {
    RecordsError::Decompress {
        codec,
        reason: reason.into(),
    }
}

fn stream(
    reader: impl Read,
    codec: Compression,
    header: &BatchHeader,
    limit: usize,
    visit: &mut impl FnMut(&RecordView),
) -> Result<(i64, i64, usize), RecordsError> {
    let mut input = StreamInput {
        reader: BufReader::with_capacity(STREAM_BUFFER, reader),
        consumed: 0,
        limit,
        codec,
    };
    let (n, max) = walk(&mut input, header, visit)?;
    Ok((n, max, input.consumed))
}

/// Where the walk reads from: a slice (uncompressed) or a decompressing stream.
trait Input {
    /// Bytes consumed so far.
    fn position(&self) -> usize;
    /// Whether every byte has been consumed.
    fn at_end(&mut self) -> Result<bool, RecordsError>;
    /// The next byte; `None` at the end.
    fn byte(&mut self) -> Result<Option<u8>, RecordsError>;
    /// Skips `n` bytes; false if fewer are left.
    fn skip(&mut self, n: usize) -> Result<bool, RecordsError>;
}

struct SliceInput<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Input for SliceInput<'_> {
    fn position(&self) -> usize {
        self.pos
    }
    fn at_end(&mut self) -> Result<bool, RecordsError> {
        Ok(self.pos >= self.buf.len())
    }
    #[inline]
    fn byte(&mut self) -> Result<Option<u8>, RecordsError> {
        let b = self.buf.get(self.pos).copied();
        self.pos += usize::from(b.is_some());
        Ok(b)
    }
    fn skip(&mut self, n: usize) -> Result<bool, RecordsError> {
        if self.buf.len() - self.pos < n {
            return Ok(false);
        }
        self.pos += n;
        Ok(true)
    }
}

struct StreamInput<R> {
    reader: BufReader<R>,
    consumed: usize,
    limit: usize,
    codec: Compression,
}

impl<R: Read> StreamInput<R> {
    /// The next buffered bytes, refilling from the decompressor; empty at the end.
    fn fill(&mut self) -> Result<&[u8], RecordsError> {
        if self.consumed > self.limit {
            return Err(RecordsError::TooLarge { limit: self.limit });
        }
        let (codec, limit) = (self.codec, self.limit);
        self.reader.fill_buf().map_err(|e| match e.kind() {
            std::io::ErrorKind::FileTooLarge => RecordsError::TooLarge { limit },
            _ => decompress(codec, e.to_string()),
        })
    }
}

impl<R: Read> Input for StreamInput<R> {
    fn position(&self) -> usize {
        self.consumed
    }
    fn at_end(&mut self) -> Result<bool, RecordsError> {
        Ok(self.fill()?.is_empty())
    }
    fn byte(&mut self) -> Result<Option<u8>, RecordsError> {
        let b = self.fill()?.first().copied();
        if b.is_some() {
            self.reader.consume(1);
            self.consumed += 1;
        }
        Ok(b)
    }
    fn skip(&mut self, mut n: usize) -> Result<bool, RecordsError> {
        while n > 0 {
            let available = self.fill()?.len();
            if available == 0 {
                return Ok(false);
            }
            let step = available.min(n);
            self.reader.consume(step);
            self.consumed += step;
            n -= step;
        }
        Ok(true)
    }
}

/// Reads a zigzag varint of at most `max_bytes` bytes (5 for int, 10 for long).
#[inline]
fn varlong(input: &mut impl Input, max_bytes: u32, index: i32) -> Result<i64, RecordsError> {
    let mut z: u64 = 0;
    for i in 0..max_bytes {
        let b = input.byte()?.ok_or(RecordsError::Malformed {
            index,
            reason: "ends inside a varint",
        })?;
        z |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok((z >> 1) as i64 ^ -((z & 1) as i64));
        }
    }
    Err(RecordsError::Malformed {
        index,
        reason: "varint is too long",
    })
}

#[inline]
fn varint(input: &mut impl Input, index: i32) -> Result<i32, RecordsError> {
    let v = varlong(input, 5, index)?;
    i32::try_from(v).map_err(|_| RecordsError::Malformed {
        index,
        reason: "varint out of range",
    })
}

/// Walks records until the input ends; returns (records found, max timestamp).
fn walk(
    input: &mut impl Input,
    header: &BatchHeader,
    visit: &mut impl FnMut(&RecordView),
) -> Result<(i64, i64), RecordsError> {
    let mut index: i32 = 0;
    let mut found: i64 = 0;
    let mut max_timestamp = -1i64;
    while !input.at_end()? {
        // A batch holds at most `recordsCount` records, and that is an i32; anything past it
        // is reported as a count mismatch without walking further.
        if found >= i64::from(header.records_count) {
            return Err(RecordsError::CountMismatch {
                claimed: header.records_count,
                found: found + 1,
            });
        }
        let view = record(input, header, index)?;
        max_timestamp = max_timestamp.max(view.timestamp);
        visit(&view);
        found += 1;
        index = index.saturating_add(1);
    }
    Ok((found, max_timestamp))
}

fn record(
    input: &mut impl Input,
    header: &BatchHeader,
    index: i32,
) -> Result<RecordView, RecordsError> {
    let bad = |reason| RecordsError::Malformed { index, reason };
    let length = varint(input, index)?;
    let length = usize::try_from(length).map_err(|_| bad("negative record length"))?;
    let start = input.position();
    let end = start.saturating_add(length);
    // Every field read below must end by `end`.
    input.byte()?.ok_or(bad("ends before its attributes"))?;
    let timestamp_delta = varlong(input, 10, index)?;
    let offset_delta = varint(input, index)?;
    if offset_delta != index {
        return Err(RecordsError::OffsetDelta {
            index,
            offset_delta,
        });
    }
    let key_len = varint(input, index)?;
    skip_field(input, key_len, end, index, "key")?;
    let value_len = varint(input, index)?;
    skip_field(input, value_len, end, index, "value")?;
    let header_count = varint(input, index)?;
    if header_count < 0 {
        return Err(bad("negative header count"));
    }
    for _ in 0..header_count {
        // Each header takes at least two bytes, so a lying count runs out of record quickly.
        if input.position() >= end {
            return Err(bad("header count runs past the record"));
        }
        let key_len = varint(input, index)?;
        if key_len < 0 {
            return Err(bad("negative header key length"));
        }
        skip_field(input, key_len, end, index, "header key")?;
        let value_len = varint(input, index)?;
        skip_field(input, value_len, end, index, "header value")?;
    }
    match input.position().cmp(&end) {
        std::cmp::Ordering::Equal => {}
        std::cmp::Ordering::Less => return Err(bad("bytes left over after its last field")),
        std::cmp::Ordering::Greater => return Err(bad("fields run past its length")),
    }
    Ok(RecordView {
        index,
        timestamp: header.base_timestamp.saturating_add(timestamp_delta),
        key_len,
        value_len,
        header_count,
    })
}

/// Skips a length-prefixed field (`len` -1 = null) that must end by `end`.
fn skip_field(
    input: &mut impl Input,
    len: i32,
    end: usize,
    index: i32,
    what: &'static str,
) -> Result<(), RecordsError> {
    let bad = |reason| RecordsError::Malformed { index, reason };
    if len < -1 {
        return Err(bad(match what {
            "key" => "negative key length",
            "value" => "negative value length",
            _ => "negative header value length",
        }));
    }
    if len <= 0 {
        return Ok(());
    }
    let len = len as usize;
    if input.position().saturating_add(len) > end {
        return Err(bad(match what {
            "key" => "key runs past the record",
            "value" => "value runs past the record",
            "header key" => "header key runs past the record",
            _ => "header value runs past the record",
        }));
    }
    if !input.skip(len)? {
        return Err(bad("ends inside a field"));
    }
    Ok(())
}

/// Kafka's snappy framing (xerial `SnappyOutputStream`): an 8-byte magic, two 4-byte version
/// fields, then blocks of `[u32 compressed length][raw snappy block]`. Without the magic the
/// whole input is one raw snappy block, as Java's `SnappyInputStream` accepts.
///
/// Decompresses one block at a time; a block's claimed size is checked against what is left of
/// the limit before its buffer is allocated.
struct SnappyReader<'a> {
    input: &'a [u8],
    /// Decompressed bytes of the current block and how many were read.
    block: Vec<u8>,
    pos: usize,
    /// Decompressed bytes still allowed.
    budget: usize,
    decoder: snap::raw::Decoder,
}

const SNAPPY_MAGIC: &[u8; 8] = b"\x82SNAPPY\x00";
/// Magic, version and compatible-version fields.
const SNAPPY_HEADER_LEN: usize = 16;

impl<'a> SnappyReader<'a> {
    fn new(input: &'a [u8], limit: usize) -> Result<SnappyReader<'a>, RecordsError> {
        let mut reader = SnappyReader {
            input,
            block: Vec::new(),
            pos: 0,
            budget: limit,
            decoder: snap::raw::Decoder::new(),
        };
        if input.len() >= SNAPPY_MAGIC.len() && &input[..SNAPPY_MAGIC.len()] == SNAPPY_MAGIC {
            if input.len() < SNAPPY_HEADER_LEN {
                return Err(decompress(
                    Compression::Snappy,
                    "snappy stream header is cut short",
                ));
            }
            reader.input = &input[SNAPPY_HEADER_LEN..];
        } else {
            // Raw snappy: the whole input is one block.
            reader.decode_block(input).map_err(|e| match e.kind() {
                std::io::ErrorKind::FileTooLarge => RecordsError::TooLarge { limit },
                _ => decompress(Compression::Snappy, e.to_string()),
            })?;
            reader.input = &[];
        }
        Ok(reader)
    }

    /// Decompresses one raw block into `self.block`. A block claiming more than the budget
    /// left fails with `FileTooLarge` before anything is allocated.
    fn decode_block(&mut self, compressed: &[u8]) -> std::io::Result<()> {
        let len = snap::raw::decompress_len(compressed).map_err(std::io::Error::other)?;
        if len > self.budget {
            return Err(std::io::Error::new(
                std::io::ErrorKind::FileTooLarge,
                format!("a snappy block claims {len} bytes, past the limit"),
            ));
        }
        self.block.clear();
        self.block.resize(len, 0);
        self.decoder
            .decompress(compressed, &mut self.block)
            .map_err(std::io::Error::other)?;
        self.budget -= len;
        self.pos = 0;
        Ok(())
    }
}

impl Read for SnappyReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos >= self.block.len() {
            if self.input.is_empty() {
                return Ok(0);
            }
            let Some((len, rest)) = self.input.split_first_chunk::<4>() else {
                return Err(std::io::Error::other("snappy block length is cut short"));
            };
            let len = u32::from_be_bytes(*len) as usize;
            if rest.len() < len {
                return Err(std::io::Error::other("snappy block is cut short"));
            }
            let (block, rest) = rest.split_at(len);
            self.input = rest;
            self.decode_block(block)?;
        }
        let n = out.len().min(self.block.len() - self.pos);
        out[..n].copy_from_slice(&self.block[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests;
