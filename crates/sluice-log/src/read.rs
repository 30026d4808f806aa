//! The fetch path: find the batch containing an offset and read whole batches out of the
//! segment files with pread, outside the append lock, into a buffer that is not zero-filled
//! first and that becomes the records of the fetch answer as it is (no further copy).

use std::fs::File;
use std::sync::Arc;

use sluice_protocol::batch::{BatchHeader, Batches, BATCH_HEADER_LEN, MIN_BATCH_LENGTH};

use crate::error::LogError;
use crate::io::read_vec_at;
use crate::recovery::read_header;

/// What a reader needs of a segment, snapshotted under the append lock. Bytes below `size`
/// were fully written before the snapshot, so they are stable while truncation is excluded.
#[derive(Debug, Clone)]
pub(crate) struct SegmentView {
    pub base_offset: i64,
    pub file: Arc<File>,
    pub size: u64,
    /// Batches may have gaps between them (a cleaned segment).
    pub gaps: bool,
}

impl SegmentView {
    /// Whether a batch starting at `base` may follow one that ended just before `expected`.
    fn chains(&self, base: i64, expected: i64) -> bool {
        if self.gaps {
            base >= expected
        } else {
            base == expected
        }
    }
}

/// Position and header of the first batch in `view` that satisfies `found`, scanning headers
/// from `start`, where a batch with base offset `expected_base` must begin (`None` if the
/// segment ends first). Headers must chain (each base offset follows the previous batch, or
/// comes after it in a cleaned segment), so a wrong index entry or damaged file gives
/// `Corrupt`, never a batch out of order.
pub(crate) fn find_batch(
    view: &SegmentView,
    mut start: u64,
    mut expected_base: i64,
    found: impl Fn(&BatchHeader) -> bool,
) -> Result<Option<(u64, BatchHeader)>, LogError> {
    while start < view.size {
        let Some(header) = read_header(&view.file, start, view.size)? else {
            return Err(corrupt(view, start));
        };
        if header.batch_length < MIN_BATCH_LENGTH || !view.chains(header.base_offset, expected_base)
        {
            return Err(corrupt(view, start));
        }
        if found(&header) {
            return Ok(Some((start, header)));
        }
        start += header.total_size() as u64;
        expected_base = header.last_offset() + 1;
    }
    Ok(None)
}

fn corrupt(view: &SegmentView, position: u64) -> LogError {
    LogError::Corrupt(format!(
        "no valid batch header in segment {} at position {position}",
        view.base_offset
    ))
}

/// Whole batches from the one containing `offset` (in `views[0]`, index hint `start`) on,
/// across segments, each with last offset < `max_offset`, at most `max_bytes` in total unless
/// `min_one` and the first batch alone is larger. Stops early at a batch that does not follow
/// its predecessor.
pub(crate) fn read_batches(
    views: &[SegmentView],
    start: (u64, i64),
    offset: i64,
    max_bytes: usize,
    max_offset: i64,
    min_one: bool,
) -> Result<Vec<u8>, LogError> {
    let mut data: Vec<u8> = Vec::new();
    let Some(first) = views.first() else {
        return Ok(data);
    };
    let Some((mut position, header)) =
        find_batch(first, start.0, start.1, |h| h.last_offset() >= offset)?
    else {
        return Ok(data);
    };
    let mut expected_base = header.base_offset;
    for (i, view) in views.iter().enumerate() {
        if i > 0 {
            position = 0;
        }
        while position < view.size {
            let avail = view.size - position;
            let budget = max_bytes.saturating_sub(data.len()) as u64;
            let mut want = avail.min(budget);
            if data.is_empty() && min_one {
                // KIP-74: the first batch is returned whole even if larger than max_bytes.
                let Some(h) = read_header(&view.file, position, view.size)? else {
                    return Err(corrupt(view, position));
                };
                want = want.max((h.total_size() as u64).min(avail));
            }
            if want < BATCH_HEADER_LEN as u64 {
                return Ok(data);
            }
            let old = data.len();
            let chunk = read_vec_at(&view.file, want as usize, position)?;
            let mut accepted = old;
            let mut done = false;
            for item in Batches::new(&chunk) {
                // An error is a batch cut by the budget at the end of the chunk.
                let Ok((header, bytes)) = item else { break };
                let over_budget = accepted + bytes.len() > max_bytes && !(min_one && accepted == 0);
                if header.last_offset() >= max_offset
                    || over_budget
                    || !view.chains(header.base_offset, expected_base)
                {
                    done = true;
                    break;
                }
                accepted += bytes.len();
                expected_base = header.last_offset() + 1;
            }
            let consumed = accepted - old;
            if data.is_empty() {
                data = chunk;
                data.truncate(consumed);
            } else {
                // Only where a read crosses into the next segment.
                data.extend_from_slice(&chunk[..consumed]);
            }
            let consumed = consumed as u64;
            position += consumed;
            if done || consumed < want {
                return Ok(data);
            }
        }
    }
    Ok(data)
}
