//! One Kafka request/response exchange over a plain TCP connection, for the admin APIs
//! librdkafka does not expose (DescribeQuorum; DescribeCluster with fenced brokers).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use anyhow::Context;
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};

/// Answers above this are refused (a cluster description is far smaller).
const MAX_RESPONSE: usize = 16 << 20;

/// Sends `req` at `version` to the first of `brokers` (comma-separated) that answers.
pub fn call<Req, Resp>(
    brokers: &str,
    api: ApiKey,
    version: i16,
    req: &Req,
    timeout: Duration,
) -> anyhow::Result<Resp>
where
    Req: Encodable + HeaderVersion,
    Resp: Decodable + HeaderVersion,
{
    let mut last = None;
    for addr in brokers.split(',').map(str::trim).filter(|a| !a.is_empty()) {
        match call_one(addr, api, version, req, timeout) {
            Ok(r) => return Ok(r),
            Err(e) => last = Some(e.context(format!("asking {addr}"))),
        }
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("no broker address given")))
}

fn call_one<Req, Resp>(
    addr: &str,
    api: ApiKey,
    version: i16,
    req: &Req,
    timeout: Duration,
) -> anyhow::Result<Resp>
where
    Req: Encodable + HeaderVersion,
    Resp: Decodable + HeaderVersion,
{
    let sock = std::net::ToSocketAddrs::to_socket_addrs(addr)
        .with_context(|| format!("resolving {addr}"))?
        .next()
        .with_context(|| format!("{addr} resolves to nothing"))?;
    let mut stream = TcpStream::connect_timeout(&sock, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let header = RequestHeader::default()
        .with_request_api_key(api as i16)
        .with_request_api_version(version)
        .with_correlation_id(1)
        .with_client_id(Some(StrBytes::from_static_str("sluice-cli")));
    let mut body = BytesMut::new();
    header.encode(&mut body, Req::header_version(version))?;
    req.encode(&mut body, version)?;
    let mut frame = BytesMut::with_capacity(4 + body.len());
    frame.put_u32(body.len() as u32);
    frame.extend_from_slice(&body);
    stream.write_all(&frame)?;
    let mut size = [0u8; 4];
    stream.read_exact(&mut size)?;
    let size = u32::from_be_bytes(size) as usize;
    anyhow::ensure!(
        size <= MAX_RESPONSE,
        "response of {size} bytes is too large"
    );
    let mut buf = Vec::new();
    (&mut stream).take(size as u64).read_to_end(&mut buf)?;
    anyhow::ensure!(buf.len() == size, "connection closed mid-response");
    let mut buf = Bytes::from(buf);
    ResponseHeader::decode(&mut buf, Resp::header_version(version))?;
    Resp::decode(&mut buf, version)
}
