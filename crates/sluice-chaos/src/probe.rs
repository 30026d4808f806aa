//! Hand-written Kafka exchanges for the harness: enough protocol to tell that a node answers
//! ([`api_versions`]), what it advertises ([`metadata_brokers`]) and who leads what
//! ([`metadata_leaders`]), without a client library.
//!
//! All use non-flexible versions (request header v1, response header v0), whose layouts are
//! fixed:
//!
//! ```text
//! request:  size:i32 | api_key:i16 | api_version:i16 = 0 | correlation_id:i32
//!           | client_id: i16 len + bytes | body
//! response: size:i32 | correlation_id:i32 | body
//! ApiVersions v0 body: request empty; response error_code:i16 | api_keys[...]
//! Metadata v0 body:    request topics: i32 count (0 = all); response
//!                      brokers: i32 count, each node_id:i32 | host: i16 len + bytes | port:i32
//!                      | topics[...] (not read)
//! Metadata v1 body:    request topics: i32 count + each i16 len + name; response
//!                      brokers: i32 count, each node_id:i32 | host | port:i32
//!                        | rack: i16 len (-1 = null) + bytes
//!                      | controller_id:i32
//!                      | topics: i32 count, each error_code:i16 | name | is_internal:i8
//!                        | partitions: i32 count, each error_code:i16 | partition:i32
//!                          | leader:i32 | replicas: i32 count + i32s | isr: i32 count + i32s
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

/// Who leads what, as one node sees it (Metadata v1).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Leadership {
    /// The controller's node id; -1 when the node knows none.
    pub controller: i32,
    /// Partition -> leader node id (-1 while leaderless), for the topic asked about.
    pub leaders: std::collections::BTreeMap<i32, i32>,
    /// Partition -> replica node ids.
    pub replicas: std::collections::BTreeMap<i32, Vec<i32>>,
    /// Partition -> in-sync replica node ids.
    pub isr: std::collections::BTreeMap<i32, Vec<i32>>,
}

/// One ApiVersions v0 round trip to `addr` within `timeout`; `Ok` if the node answered with
/// error code 0.
pub async fn api_versions(addr: SocketAddr, timeout: Duration) -> Result<(), ProbeError> {
    let body = exchange(addr, timeout, API_VERSIONS, 0, &[]).await?;
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
    let body = exchange(addr, timeout, METADATA, 0, &0i32.to_be_bytes()).await?;
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

/// One Metadata v1 round trip for `topic` to `addr` within `timeout`: the controller and the
/// leader and replicas of each of the topic's partitions.
pub async fn metadata_leaders(
    addr: SocketAddr,
    timeout: Duration,
    topic: &str,
) -> Result<Leadership, ProbeError> {
    let name_len =
        i16::try_from(topic.len()).map_err(|_| ProbeError::Malformed("topic name too long"))?;
    let mut req = Vec::with_capacity(6 + topic.len());
    req.extend_from_slice(&1i32.to_be_bytes());
    req.extend_from_slice(&name_len.to_be_bytes());
    req.extend_from_slice(topic.as_bytes());
    let body = exchange(addr, timeout, METADATA, 1, &req).await?;
    parse_leadership(&body, topic)
}

/// A Metadata v1 response body (after the correlation id): the controller and `topic`'s
/// partitions.
fn parse_leadership(body: &[u8], topic: &str) -> Result<Leadership, ProbeError> {
    let mut r = Reader(body);
    // Each broker takes at least 12 bytes.
    for _ in 0..r.count(12)? {
        r.i32()?; // node id
        r.string()?; // host
        r.i32()?; // port
        r.nullable_string()?; // rack
    }
    let mut out = Leadership {
        controller: r.i32()?,
        ..Leadership::default()
    };
    // Each topic takes at least 9 bytes, each partition at least 18.
    for _ in 0..r.count(9)? {
        r.i16()?; // topic error code
        let name = r.string()?;
        r.take(1)?; // is_internal
        for _ in 0..r.count(18)? {
            r.i16()?; // partition error code
            let partition = r.i32()?;
            let leader = r.i32()?;
            let mut replicas = Vec::new();
            for _ in 0..r.count(4)? {
                replicas.push(r.i32()?);
            }
            let mut isr = Vec::new();
            for _ in 0..r.count(4)? {
                isr.push(r.i32()?);
            }
            if name == topic.as_bytes() {
                out.leaders.insert(partition, leader);
                out.replicas.insert(partition, replicas);
                out.isr.insert(partition, isr);
            }
        }
    }
    Ok(out)
}

/// Sends one request (header v1) and returns the response body after the correlation id.
async fn exchange(
    addr: SocketAddr,
    timeout: Duration,
    api_key: i16,
    api_version: i16,
    body: &[u8],
) -> Result<Vec<u8>, ProbeError> {
    let mut req = Vec::with_capacity(4 + 10 + CLIENT_ID.len() + body.len());
    req.extend_from_slice(&[0; 4]); // size, filled in below
    req.extend_from_slice(&api_key.to_be_bytes());
    req.extend_from_slice(&api_version.to_be_bytes());
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

    /// An array count, refused when `count * min_size` exceeds what is left (a lie, not an
    /// allocation).
    fn count(&mut self, min_size: usize) -> Result<usize, ProbeError> {
        let count =
            usize::try_from(self.i32()?).map_err(|_| ProbeError::Malformed("negative count"))?;
        if count > self.0.len() / min_size {
            return Err(ProbeError::Malformed("count exceeds the response"));
        }
        Ok(count)
    }

    fn string(&mut self) -> Result<&'a [u8], ProbeError> {
        let len = usize::try_from(self.i16()?).map_err(|_| ProbeError::Malformed("null string"))?;
        self.take(len)
    }

    fn nullable_string(&mut self) -> Result<Option<&'a [u8]>, ProbeError> {
        let len = self.i16()?;
        if len < 0 {
            return Ok(None);
        }
        self.take(len as usize).map(Some)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn string(out: &mut Vec<u8>, s: &str) {
        out.extend_from_slice(&(s.len() as i16).to_be_bytes());
        out.extend_from_slice(s.as_bytes());
    }

    fn i32s(out: &mut Vec<u8>, v: &[i32]) {
        out.extend_from_slice(&(v.len() as i32).to_be_bytes());
        for x in v {
            out.extend_from_slice(&x.to_be_bytes());
        }
    }

    /// Two brokers (one with a rack), controller 2, topic "t" with partitions 0 (leader 2) and
    /// 1 (leaderless), and another topic whose partitions must be ignored.
    fn metadata_v1() -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&2i32.to_be_bytes());
        for (id, rack) in [(1i32, None), (2, Some("r1"))] {
            b.extend_from_slice(&id.to_be_bytes());
            string(&mut b, "127.0.0.1");
            b.extend_from_slice(&9092i32.to_be_bytes());
            match rack {
                Some(r) => string(&mut b, r),
                None => b.extend_from_slice(&(-1i16).to_be_bytes()),
            }
        }
        b.extend_from_slice(&2i32.to_be_bytes()); // controller
        b.extend_from_slice(&2i32.to_be_bytes()); // topics
        for (name, parts) in [("other", vec![(0i32, 1i32)]), ("t", vec![(0, 2), (1, -1)])] {
            b.extend_from_slice(&0i16.to_be_bytes());
            string(&mut b, name);
            b.push(0);
            b.extend_from_slice(&(parts.len() as i32).to_be_bytes());
            for (p, leader) in parts {
                b.extend_from_slice(&0i16.to_be_bytes());
                b.extend_from_slice(&p.to_be_bytes());
                b.extend_from_slice(&leader.to_be_bytes());
                i32s(&mut b, &[2, 1]);
                i32s(&mut b, &[2]);
            }
        }
        b
    }

    #[test]
    fn metadata_v1_gives_the_controller_and_the_topics_leaders() {
        let l = parse_leadership(&metadata_v1(), "t").unwrap();
        assert_eq!(l.controller, 2);
        assert_eq!(l.leaders.into_iter().collect::<Vec<_>>(), [(0, 2), (1, -1)]);
        assert_eq!(l.replicas[&0], [2, 1]);
        assert_eq!(l.isr[&0], [2]);
    }

    #[test]
    fn a_truncated_or_lying_response_is_an_error_not_a_panic() {
        let body = metadata_v1();
        for len in 0..body.len() {
            assert!(parse_leadership(&body[..len], "t").is_err(), "prefix {len}");
        }
        let mut lying = body.clone();
        lying[..4].copy_from_slice(&i32::MAX.to_be_bytes());
        assert!(matches!(
            parse_leadership(&lying, "t"),
            Err(ProbeError::Malformed(_))
        ));
    }
}
