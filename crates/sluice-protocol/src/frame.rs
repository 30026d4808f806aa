//! Request framing: every Kafka request is `size: i32 (big-endian)` followed by `size` bytes.
//!
//! The size is checked here, before the connection allocates a buffer for the body: a peer that
//! claims 2 GiB gets its connection closed, not 2 GiB of memory.

use thiserror::Error;

/// Kafka's `socket.request.max.bytes` default (100 MiB).
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 100 * 1024 * 1024;

/// Smallest possible request: api_key, api_version, correlation_id, client_id length.
pub const MIN_REQUEST_BYTES: usize = 2 + 2 + 4 + 2;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("negative frame size {0}")]
    Negative(i32),
    #[error("frame size {size} is below the minimum request size {MIN_REQUEST_BYTES}")]
    TooSmall { size: usize },
    #[error("frame size {size} exceeds the limit of {limit} bytes (socket.request.max.bytes)")]
    TooLarge { size: usize, limit: usize },
}

/// Validates the size prefix of a request frame and returns the body length to read.
pub fn check_request_size(size_prefix: [u8; 4], limit: usize) -> Result<usize, FrameError> {
    let size = i32::from_be_bytes(size_prefix);
    if size < 0 {
        return Err(FrameError::Negative(size));
    }
    let size = size as usize;
    if size < MIN_REQUEST_BYTES {
        return Err(FrameError::TooSmall { size });
    }
    if size > limit {
        return Err(FrameError::TooLarge { size, limit });
    }
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_checked_before_allocation() {
        let limit = DEFAULT_MAX_REQUEST_BYTES;
        assert_eq!(check_request_size(100i32.to_be_bytes(), limit), Ok(100));
        assert_eq!(
            check_request_size((-1i32).to_be_bytes(), limit),
            Err(FrameError::Negative(-1))
        );
        assert_eq!(
            check_request_size(3i32.to_be_bytes(), limit),
            Err(FrameError::TooSmall { size: 3 })
        );
        assert_eq!(
            check_request_size(i32::MAX.to_be_bytes(), limit),
            Err(FrameError::TooLarge {
                size: i32::MAX as usize,
                limit
            })
        );
        assert_eq!(
            check_request_size((limit as i32).to_be_bytes(), limit),
            Ok(limit)
        );
    }
}
