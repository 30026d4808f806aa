//! Request header parsing and body decoding.
//!
//! Order matters for safety and for the errors clients see: the API key and version are peeked
//! first (unknown keys and unsupported versions are refused before the body is touched), then the
//! header, then the body. The body decoder bounds every allocation by the bytes left in the frame
//! (see `vendor/kafka-protocol/SLUICE-PATCHES.md`).

use bytes::{Buf, Bytes};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind};
use kafka_protocol::protocol::Decodable;
use thiserror::Error;

use crate::versions;

/// A fully decoded request.
#[derive(Debug)]
pub struct Request {
    pub api_key: ApiKey,
    pub version: i16,
    pub header: RequestHeader,
    pub body: RequestKind,
}

#[derive(Debug, Error)]
pub enum RequestError {
    #[error("request frame of {0} bytes is too short for a request header")]
    Truncated(usize),
    #[error("unknown API key {api_key} (correlation id {correlation_id})")]
    UnknownApiKey { api_key: i16, correlation_id: i32 },
    /// An ApiVersions request at a version we do not serve: answered per KIP-511, so the caller
    /// needs the header to reply.
    #[error("unsupported ApiVersions version {}", header.request_api_version)]
    UnsupportedApiVersions { header: RequestHeader },
    #[error("unsupported version {version} of {api_key:?} (correlation id {correlation_id})")]
    UnsupportedVersion {
        api_key: ApiKey,
        version: i16,
        correlation_id: i32,
    },
    #[error("malformed {api_key:?} v{version} request header: {reason}")]
    MalformedHeader {
        api_key: ApiKey,
        version: i16,
        reason: String,
    },
    #[error(
        "malformed {api_key:?} v{version} request body (correlation id {correlation_id}): {reason}"
    )]
    MalformedBody {
        api_key: ApiKey,
        version: i16,
        correlation_id: i32,
        reason: String,
    },
}

/// Peeks the API key, version and correlation id without consuming anything.
fn peek_prefix(frame: &Bytes) -> Result<(i16, i16, i32), RequestError> {
    if frame.len() < 8 {
        return Err(RequestError::Truncated(frame.len()));
    }
    let mut prefix = &frame[..8];
    Ok((prefix.get_i16(), prefix.get_i16(), prefix.get_i32()))
}

/// Decodes one request frame (the bytes after the size prefix).
pub fn decode_request(mut frame: Bytes) -> Result<Request, RequestError> {
    let (raw_key, version, correlation_id) = peek_prefix(&frame)?;
    let api_key = ApiKey::try_from(raw_key).map_err(|()| RequestError::UnknownApiKey {
        api_key: raw_key,
        correlation_id,
    })?;
    let header_version = api_key.request_header_version(version);
    let header = RequestHeader::decode(&mut frame, header_version).map_err(|e| {
        RequestError::MalformedHeader {
            api_key,
            version,
            reason: e.to_string(),
        }
    })?;
    if !versions::is_supported(api_key, version) {
        if api_key == ApiKey::ApiVersions {
            return Err(RequestError::UnsupportedApiVersions { header });
        }
        return Err(RequestError::UnsupportedVersion {
            api_key,
            version,
            correlation_id,
        });
    }
    let body = RequestKind::decode(api_key, &mut frame, version).map_err(|e| {
        RequestError::MalformedBody {
            api_key,
            version,
            correlation_id,
            reason: format!("{e:#}"),
        }
    })?;
    Ok(Request {
        api_key,
        version,
        header,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::{BufMut, BytesMut};
    use kafka_protocol::messages::{ApiVersionsRequest, MetadataRequest};
    use kafka_protocol::protocol::{Encodable, StrBytes};

    fn frame(api_key: ApiKey, version: i16, body: &impl Encodable) -> Bytes {
        let mut buf = BytesMut::new();
        let header = RequestHeader::default()
            .with_request_api_key(api_key as i16)
            .with_request_api_version(version)
            .with_correlation_id(7)
            .with_client_id(Some(StrBytes::from_static_str("test")));
        header
            .encode(&mut buf, api_key.request_header_version(version))
            .unwrap();
        body.encode(&mut buf, version).unwrap();
        buf.freeze()
    }

    #[test]
    fn decodes_supported_requests() {
        for version in 0..=4 {
            let req = decode_request(frame(
                ApiKey::ApiVersions,
                version,
                &ApiVersionsRequest::default(),
            ))
            .unwrap();
            assert_eq!(req.api_key, ApiKey::ApiVersions);
            assert_eq!(req.version, version);
            assert_eq!(req.header.correlation_id, 7);
        }
        let req = decode_request(frame(ApiKey::Metadata, 12, &MetadataRequest::default())).unwrap();
        assert!(matches!(req.body, RequestKind::Metadata(_)));
    }

    #[test]
    fn unknown_key_and_versions_are_refused_before_the_body() {
        let mut buf = BytesMut::new();
        buf.put_i16(999);
        buf.put_i16(0);
        buf.put_i32(5);
        buf.put_i16(-1);
        assert!(matches!(
            decode_request(buf.freeze()),
            Err(RequestError::UnknownApiKey {
                api_key: 999,
                correlation_id: 5
            })
        ));

        let mut buf = BytesMut::new();
        buf.put_i16(ApiKey::Produce as i16);
        buf.put_i16(0);
        buf.put_i32(5);
        buf.put_i16(-1);
        assert!(matches!(
            decode_request(buf.freeze()),
            Err(RequestError::UnsupportedVersion { version: 0, .. })
        ));

        let mut buf = BytesMut::new();
        buf.put_i16(ApiKey::ApiVersions as i16);
        buf.put_i16(127);
        buf.put_i32(9);
        buf.put_i16(-1);
        buf.put_u8(0); // empty tagged fields (header v2)
        match decode_request(buf.freeze()) {
            Err(RequestError::UnsupportedApiVersions { header }) => {
                assert_eq!(header.correlation_id, 9)
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn truncated_and_hostile_bodies_are_errors() {
        let full = frame(ApiKey::Metadata, 1, &MetadataRequest::default());
        for cut in 0..full.len() {
            let _ = decode_request(full.slice(..cut));
        }
        // Metadata v1 with a topics array claiming i32::MAX entries and no bytes behind it.
        let mut buf = BytesMut::new();
        buf.put_i16(ApiKey::Metadata as i16);
        buf.put_i16(1);
        buf.put_i32(1);
        buf.put_i16(-1);
        buf.put_i32(i32::MAX);
        assert!(matches!(
            decode_request(buf.freeze()),
            Err(RequestError::MalformedBody { .. })
        ));
    }

    #[test]
    fn random_bytes_never_panic() {
        // xorshift: deterministic, no extra dependency.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..20_000 {
            let len = (next() % 64) as usize;
            let mut buf = BytesMut::with_capacity(len + 4);
            // Valid key/version prefixes most of the time, to get past the first checks.
            let (key, _, max) = versions::SUPPORTED[(next() as usize) % versions::SUPPORTED.len()];
            buf.put_i16(key as i16);
            buf.put_i16((next() % (max as u64 + 1)) as i16);
            for _ in 0..len {
                buf.put_u8(next() as u8);
            }
            let _ = decode_request(buf.freeze());
        }
    }
}
