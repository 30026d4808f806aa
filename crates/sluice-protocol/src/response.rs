//! Response framing: `size: i32`, the response header (v0 or v1 by API and version; ApiVersions
//! always v0 so clients can parse it before they know our versions), then the body.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::Encodable;
use thiserror::Error;

/// A response that cannot be encoded at the requested version (a field set that the version
/// cannot carry): a broker bug, never the client's fault.
#[derive(Debug, Error)]
#[error("encoding {api_key:?} v{version} response failed: {reason}")]
pub struct EncodeError {
    pub api_key: ApiKey,
    pub version: i16,
    pub reason: String,
}

/// Encodes a complete response frame, size prefix included.
pub fn encode_response(
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &ResponseKind,
) -> Result<Bytes, EncodeError> {
    let err = |e: anyhow::Error| EncodeError {
        api_key,
        version,
        reason: format!("{e:#}"),
    };
    let mut buf = BytesMut::with_capacity(256);
    buf.put_i32(0); // patched below
    ResponseHeader::default()
        .with_correlation_id(correlation_id)
        .encode(&mut buf, api_key.response_header_version(version))
        .map_err(err)?;
    body.encode(&mut buf, version).map_err(err)?;
    let size = (buf.len() - 4) as i32;
    buf[..4].copy_from_slice(&size.to_be_bytes());
    Ok(buf.freeze())
}
