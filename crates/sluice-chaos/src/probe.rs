//! Hand-written Kafka exchanges for the harness: enough protocol to tell that a node answers
//! ([`api_versions`]) and what it advertises ([`metadata_brokers`]), without a client library.
//!
//! Both use version 0 (request header v1, response header v0), whose layouts are fixed:
//!
//! ```text
//! request:  size:i32 | api_key:i16 | api_version:i16 = 0 | correlation_id:i32
//!           | client_id: i16 len + bytes | body
//! response: size:i32 | correlation_id:i32 | body
//! ApiVersions v0 body: request empty; response error_code:i16 | api_keys[...]
//! Metadata v0 body:    request topics: i32 count (0 = all); response
//!                      brokers: i32 count, each node_id:i32 | host: i16 len + bytes | port:i32
//!                      | topics[...] (not read)
//! ```
//!
//! Every length from the wire is checked against the bytes received before it is used.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const API_VERSIONS: i16 = 18;
const METADATA: i16 = 3;
const CLIENT_ID: &[u8] = b"sluice-chaos";
/// Arbitrary, recognisable; one request per connection, so it only guards against garbage.
const CORRELATION_ID: i32 = 0x5c_4a05;
/// Bounds the response allocation: these answers are a few KiB.
const MAX_RESPONSE: usize = 1 << 20;

/// Why a probe failed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
    #[error("malformed response: {0}")]
    Malformed(&'static str),
    #[error("error code {0}")]
    ErrorCode(i16),
}

/// One broker as a node advertises it in Metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdvertisedBroker {
    pub node_id: i32,
    pub host: String,
    pub port: i32,
}

/// One ApiVersions v0 round trip to `addr` within `timeout`; `Ok` if the node answered with
/// error code 0.
pub async fn api_versions(addr: SocketAddr, timeout: Duration) -> Result<(), ProbeError> {
    let body = exchange(addr, timeout, API_VERSIONS, &[]).await?;
    let mut r = Reader(&body);
    match r.i16()? {
        0 => Ok(()),
        code => Err(ProbeError::ErrorCode(code)),
    }
}

/// One Metadata v0 round trip (all topics) to `addr` within `timeout`: the brokers the node
/// advertises.
pub async fn metadata_brokers(
    addr: SocketAddr,
    timeout: Duration,
) -> Result<Vec<AdvertisedBroker>, ProbeError> {
    let body = exchange(addr, timeout, METADATA, &0i32.to_be_bytes()).await?;
    let mut r = Reader(&body);
    let count = r.i32()?;
    // Each broker takes at least 10 bytes; a larger count is a lie, not an allocation.
    let count = usize::try_from(count).map_err(|_| ProbeError::Malformed("negative count"))?;
    if count > r.0.len() / 10 {
        return Err(ProbeError::Malformed("broker count exceeds the response"));
    }
    let mut brokers = Vec::with_capacity(count);
    for _ in 0..count {
        let node_id = r.i32()?;
        let len = usize::try_from(r.i16()?).map_err(|_| ProbeError::Malformed("null host"))?;
        let host = String::from_utf8_lossy(r.take(len)?).into_owned();
        let port = r.i32()?;
        brokers.push(AdvertisedBroker {
            node_id,
            host,
            port,
        });
    }
    Ok(brokers)
}

/// Sends one v0 request and returns the response body after the correlation id.
async fn exchange(
    addr: SocketAddr,
    timeout: Duration,
    api_key: i16,
    body: &[u8],
) -> Result<Vec<u8>, ProbeError> {
    let mut req = Vec::with_capacity(4 + 10 + CLIENT_ID.len() + body.len());
    req.extend_from_slice(&[0; 4]); // size, filled in below
    req.extend_from_slice(&api_key.to_be_bytes());
    req.extend_from_slice(&0i16.to_be_bytes());
    req.extend_from_slice(&CORRELATION_ID.to_be_bytes());
    req.extend_from_slice(&(CLIENT_ID.len() as i16).to_be_bytes());
    req.extend_from_slice(CLIENT_ID);
    req.extend_from_slice(body);
    let size = (req.len() - 4) as i32;
    req[..4].copy_from_slice(&size.to_be_bytes());

    let round_trip = async {
        let mut s = TcpStream::connect(addr).await?;
        s.write_all(&req).await?;
        let mut size = [0u8; 4];
        s.read_exact(&mut size).await?;
        let size = usize::try_from(i32::from_be_bytes(size))
            .map_err(|_| ProbeError::Malformed("negative size"))?;
        if !(4..=MAX_RESPONSE).contains(&size) {
            return Err(ProbeError::Malformed("size out of range"));
        }
        let mut resp = vec![0u8; size];
        s.read_exact(&mut resp).await?;
        if resp[..4] != CORRELATION_ID.to_be_bytes() {
            return Err(ProbeError::Malformed("wrong correlation id"));
        }
        resp.drain(..4);
        Ok(resp)
    };
    tokio::time::timeout(timeout, round_trip)
        .await
        .map_err(|_| ProbeError::Timeout(timeout))?
}

/// Big-endian reads that fail instead of panicking on a short buffer.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ProbeError> {
        if self.0.len() < n {
            return Err(ProbeError::Malformed("truncated"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn i16(&mut self) -> Result<i16, ProbeError> {
        let b = self.take(2)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }

    fn i32(&mut self) -> Result<i32, ProbeError> {
        let b = self.take(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
}
