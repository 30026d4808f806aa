//! Response framing: `size: i32`, the response header (v0 or v1 by API and version; ApiVersions
//! always v0 so clients can parse it before they know our versions), then the body.
//!
//! A frame is a list of chunks written in order ([`Frame`]). Every response but Fetch is one
//! chunk encoded by `kafka-protocol`. A Fetch response is encoded by [`crate::fetch_response`]
//! around its record sets: each large record set is a chunk of its own, the very `Bytes` the
//! log read returned, so record data is never copied into the frame.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::Encodable;
use thiserror::Error;

use crate::fetch_response;

/// Record sets smaller than this are copied into the frame's own buffer: a separate chunk (one
/// more iovec, one more reference count) costs more than copying a few KiB.
pub const SHARE_RECORDS_FROM: usize = 4096;

/// A response that cannot be encoded at the requested version (a field set that the version
/// cannot carry): a broker bug, never the client's fault.
#[derive(Debug, Error)]
#[error("encoding {api_key:?} v{version} response failed: {reason}")]
pub struct EncodeError {
    pub api_key: ApiKey,
    pub version: i16,
    pub reason: String,
}

/// A complete response frame, size prefix included: chunks to be written one after another
/// (or in one vectored write). Cloning shares the chunks.
#[derive(Debug, Clone, Default)]
pub struct Frame {
    chunks: Vec<Bytes>,
    /// Sum of the chunks' lengths.
    len: usize,
}

impl Frame {
    /// The chunks, in order; none is empty.
    pub fn chunks(&self) -> &[Bytes] {
        &self.chunks
    }

    /// Bytes in the whole frame.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The frame as one contiguous buffer: a copy unless it has a single chunk. For tests and
    /// diagnostics, not for the write path.
    pub fn to_bytes(&self) -> Bytes {
        match self.chunks.as_slice() {
            [] => Bytes::new(),
            [one] => one.clone(),
            many => {
                let mut all = BytesMut::with_capacity(self.len);
                for c in many {
                    all.extend_from_slice(c);
                }
                all.freeze()
            }
        }
    }
}

/// Builds a [`Frame`]: small fields go into one buffer; shared chunks are spliced in at the
/// current position without copying. The size prefix is patched by [`FrameBuilder::finish`].
pub(crate) struct FrameBuilder {
    /// Everything but the shared chunks, the 4-byte size placeholder first.
    pub head: BytesMut,
    /// `(position in head, chunk)`: each chunk goes before the head's byte at that position.
    shared: Vec<(usize, Bytes)>,
    shared_len: usize,
}

impl FrameBuilder {
    fn new() -> FrameBuilder {
        let mut head = BytesMut::with_capacity(256);
        head.put_i32(0); // patched by finish
        FrameBuilder {
            head,
            shared: Vec::new(),
            shared_len: 0,
        }
    }

    /// Appends `bytes`: shared when large, copied when small.
    pub fn put_bytes(&mut self, bytes: &Bytes) {
        if bytes.len() < SHARE_RECORDS_FROM {
            self.head.extend_from_slice(bytes);
        } else {
            self.shared.push((self.head.len(), bytes.clone()));
            self.shared_len += bytes.len();
        }
    }

    fn finish(mut self) -> Result<Frame, String> {
        let len = self.head.len() + self.shared_len;
        let size = i32::try_from(len - 4)
            .map_err(|_| format!("response of {len} bytes exceeds the 2 GiB frame limit"))?;
        self.head[..4].copy_from_slice(&size.to_be_bytes());
        let head = self.head.freeze();
        let mut chunks = Vec::with_capacity(2 * self.shared.len() + 1);
        let mut from = 0;
        for (at, chunk) in self.shared {
            if at > from {
                chunks.push(head.slice(from..at));
            }
            from = at;
            chunks.push(chunk);
        }
        if head.len() > from {
            chunks.push(head.slice(from..));
        }
        Ok(Frame { chunks, len })
    }
}

/// Encodes a complete response frame, size prefix included.
pub fn encode_response(
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &ResponseKind,
) -> Result<Frame, EncodeError> {
    let err = |reason: String| EncodeError {
        api_key,
        version,
        reason,
    };
    let mut frame = FrameBuilder::new();
    ResponseHeader::default()
        .with_correlation_id(correlation_id)
        .encode(&mut frame.head, api_key.response_header_version(version))
        .map_err(|e| err(format!("{e:#}")))?;
    match body {
        ResponseKind::Fetch(fetch) => fetch_response::encode(fetch, version, &mut frame),
        other => other.encode(&mut frame.head, version),
    }
    .map_err(|e| err(format!("{e:#}")))?;
    frame.finish().map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::metadata_response::MetadataResponse;

    #[test]
    fn one_chunk_for_ordinary_responses() {
        let body = ResponseKind::Metadata(MetadataResponse::default().with_throttle_time_ms(7));
        let frame = encode_response(ApiKey::Metadata, 12, 42, &body).unwrap();
        assert_eq!(frame.chunks().len(), 1);
        let bytes = frame.to_bytes();
        assert_eq!(frame.len(), bytes.len());
        let size = i32::from_be_bytes(bytes[..4].try_into().unwrap()) as usize;
        assert_eq!(size, bytes.len() - 4);
        assert_eq!(&bytes[4..8], &42i32.to_be_bytes());
    }

    #[test]
    fn builder_splices_large_chunks_and_copies_small_ones() {
        let mut b = FrameBuilder::new();
        b.head.put_u8(1);
        let large = Bytes::from(vec![7u8; SHARE_RECORDS_FROM]);
        b.put_bytes(&large);
        b.put_bytes(&Bytes::from_static(b"small"));
        b.put_bytes(&large);
        let frame = b.finish().unwrap();
        let lens: Vec<usize> = frame.chunks().iter().map(Bytes::len).collect();
        assert_eq!(lens, [5, SHARE_RECORDS_FROM, 5, SHARE_RECORDS_FROM]);
        // The large chunks are the caller's buffer, not copies.
        assert_eq!(frame.chunks()[1].as_ptr(), large.as_ptr());
        let all = frame.to_bytes();
        assert_eq!(all.len(), frame.len());
        assert_eq!(&all[..4], &((frame.len() - 4) as i32).to_be_bytes());
        assert!(frame.chunks().iter().all(|c| !c.is_empty()));
    }
}
