//! Hostile and malformed bytes on a raw TCP socket. The broker must drop the offending
//! connection (never allocate what a frame claims, never crash) and keep serving everyone else;
//! ApiVersions must answer even versions it does not know (KIP-511).
//!
//! Request framing written here by hand where it is malformed on purpose, and with
//! kafka-protocol where it is valid:
//!
//! ```text
//! i32 size | i16 api_key | i16 api_version | i32 correlation_id | i16 client_id len | client_id
//!          | (header v2 only) unsigned varint tagged-field count | body
//! ```

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use common::*;
use kafka_protocol::messages::{
    ApiVersionsRequest, ApiVersionsResponse, MetadataRequest, MetadataResponse, RequestHeader,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use rdkafka::consumer::Consumer;

const API_PRODUCE: i16 = 0;
const API_FETCH: i16 = 1;
const API_LIST_OFFSETS: i16 = 2;
const API_METADATA: i16 = 3;
const API_API_VERSIONS: i16 = 18;
const API_CREATE_TOPICS: i16 = 19;
const UNSUPPORTED_VERSION: i16 = 35;

/// How long the broker gets to close a connection it should reject.
const CLOSE_DEADLINE: Duration = Duration::from_secs(5);

fn connect(broker: &Broker) -> TcpStream {
    let s = TcpStream::connect_timeout(&broker.addr(), Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// Sends `bytes`; a write error just means the broker already hung up, which the following
/// read observes.
fn send(s: &mut TcpStream, bytes: &[u8]) {
    let _ = s.write_all(bytes).and_then(|_| s.flush());
}

/// Requires the broker to close the connection within [`CLOSE_DEADLINE`]. Bytes the broker sends
/// before closing are tolerated (and reported), silence until the deadline is a failure.
fn expect_closed(s: &mut TcpStream, what: &str) {
    let deadline = Instant::now() + CLOSE_DEADLINE;
    let mut received = 0usize;
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => received += n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if Instant::now() >= deadline {
                    panic!(
                        "{what}: broker kept the connection open for {CLOSE_DEADLINE:?} \
                         (received {received} bytes)"
                    );
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            // Reset / aborted: the broker closed on us.
            Err(_) => break,
        }
    }
    if received > 0 {
        eprintln!("{what}: broker sent {received} bytes before closing");
    }
}

fn read_exact_by(s: &mut TcpStream, buf: &mut [u8], deadline: Instant, what: &str) {
    let mut filled = 0;
    while filled < buf.len() {
        match s.read(&mut buf[filled..]) {
            Ok(0) => panic!(
                "{what}: connection closed after {filled} of {} bytes",
                buf.len()
            ),
            Ok(n) => filled += n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if Instant::now() >= deadline {
                    panic!("{what}: no complete response within the deadline ({filled} bytes)");
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => panic!("{what}: read failed: {e}"),
        }
    }
}

/// Reads one size-prefixed response, checks the correlation id (response header v0) and returns
/// the body.
fn read_response(s: &mut TcpStream, correlation_id: i32, what: &str) -> Bytes {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut size = [0u8; 4];
    read_exact_by(s, &mut size, deadline, what);
    let size = i32::from_be_bytes(size);
    assert!(
        (4..=16 * 1024 * 1024).contains(&size),
        "{what}: implausible response size {size}"
    );
    let mut frame = vec![0u8; size as usize];
    read_exact_by(s, &mut frame, deadline, what);
    let mut frame = Bytes::from(frame);
    assert_eq!(frame.get_i32(), correlation_id, "{what}: correlation id");
    frame
}

/// Frames a valid request: header v1 (`flexible_header == false`) or v2, then `body`.
fn frame(
    api_key: i16,
    api_version: i16,
    correlation_id: i32,
    flexible_header: bool,
    body: &[u8],
) -> Vec<u8> {
    let header = RequestHeader::default()
        .with_request_api_key(api_key)
        .with_request_api_version(api_version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str("sluice-it")));
    let mut buf = BytesMut::new();
    header
        .encode(&mut buf, if flexible_header { 2 } else { 1 })
        .expect("encode header");
    buf.extend_from_slice(body);
    let mut out = (buf.len() as i32).to_be_bytes().to_vec();
    out.extend_from_slice(&buf);
    out
}

/// A hand-written header v1 prefix (no size), for frames whose body is malformed on purpose.
fn raw_header_v1(api_key: i16, api_version: i16, correlation_id: i32) -> Vec<u8> {
    let mut h = Vec::new();
    h.extend_from_slice(&api_key.to_be_bytes());
    h.extend_from_slice(&api_version.to_be_bytes());
    h.extend_from_slice(&correlation_id.to_be_bytes());
    h.extend_from_slice(&2i16.to_be_bytes());
    h.extend_from_slice(b"it");
    h
}

fn size_prefixed(payload: &[u8]) -> Vec<u8> {
    let mut out = (payload.len() as i32).to_be_bytes().to_vec();
    out.extend_from_slice(payload);
    out
}

/// Deterministic garbage (xorshift64), so a failure reproduces.
fn garbage(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn encode<M: Encodable>(m: &M, version: i16) -> Vec<u8> {
    let mut b = BytesMut::new();
    m.encode(&mut b, version).expect("encode body");
    b.to_vec()
}

fn assert_has_key(resp: &ApiVersionsResponse, key: i16, what: &str) {
    let k = resp
        .api_keys
        .iter()
        .find(|k| k.api_key == key)
        .unwrap_or_else(|| panic!("{what}: api key {key} missing from {:?}", resp.api_keys));
    assert!(
        0 <= k.min_version && k.min_version <= k.max_version,
        "{what}: bad range for api key {key}: {k:?}"
    );
}

#[test]
fn malformed_frames_close_the_connection_and_the_broker_survives() {
    let mut broker = Broker::start();

    eprintln!("--- (a) frame size 0x7fffffff");
    let mut s = connect(&broker);
    let mut bytes = 0x7fff_ffffi32.to_be_bytes().to_vec();
    bytes.extend_from_slice(&raw_header_v1(API_METADATA, 1, 1));
    send(&mut s, &bytes);
    expect_closed(&mut s, "size 0x7fffffff");
    broker.assert_running("after a 0x7fffffff frame size");
    // Another client is unaffected.
    let c = consumer(&broker, &[]);
    c.fetch_metadata(None, CLIENT_TIMEOUT)
        .map(|_| ())
        .expect("rdkafka metadata after a huge frame size");

    eprintln!("--- (b) negative frame sizes");
    for size in [-1i32, i32::MIN] {
        let mut s = connect(&broker);
        let mut bytes = size.to_be_bytes().to_vec();
        bytes.extend_from_slice(&raw_header_v1(API_METADATA, 1, 2));
        send(&mut s, &bytes);
        expect_closed(&mut s, &format!("size {size}"));
        broker.assert_running("after a negative frame size");
    }

    eprintln!("--- (c) 64 bytes of garbage behind a valid size");
    // Seed chosen so the garbage's api_key is not a real API; see the assertion.
    let junk = garbage(0x5eed_1234_abcd_0001, 64);
    let junk_key = i16::from_be_bytes([junk[0], junk[1]]);
    assert!(
        !(0..=100).contains(&junk_key),
        "garbage seed yields plausible api key {junk_key}; pick another seed"
    );
    let mut s = connect(&broker);
    send(&mut s, &size_prefixed(&junk));
    expect_closed(&mut s, "64 bytes of garbage");
    broker.assert_running("after garbage");

    eprintln!("--- (d) unknown api key 999");
    let mut s = connect(&broker);
    send(&mut s, &size_prefixed(&raw_header_v1(999, 0, 4)));
    expect_closed(&mut s, "api key 999");
    broker.assert_running("after api key 999");

    eprintln!("--- (e) ApiVersions v0");
    let mut s = connect(&broker);
    let body = encode(&ApiVersionsRequest::default(), 0);
    send(&mut s, &frame(API_API_VERSIONS, 0, 42, false, &body));
    let mut resp = read_response(&mut s, 42, "ApiVersions v0");
    let av = ApiVersionsResponse::decode(&mut resp, 0).expect("decode ApiVersions v0 response");
    assert_eq!(
        resp.remaining(),
        0,
        "trailing bytes after the ApiVersions v0 body"
    );
    assert_eq!(av.error_code, 0, "ApiVersions v0 error code");
    for key in [
        API_PRODUCE,
        API_FETCH,
        API_LIST_OFFSETS,
        API_METADATA,
        API_API_VERSIONS,
        API_CREATE_TOPICS,
    ] {
        assert_has_key(&av, key, "ApiVersions v0");
    }
    // A good request leaves the connection usable: ask again, flexible this time (v3 uses
    // request header v2 but, like every ApiVersions response, response header v0).
    let body = encode(
        &ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("sluice-it"))
            .with_client_software_version(StrBytes::from_static_str("0.1")),
        3,
    );
    send(&mut s, &frame(API_API_VERSIONS, 3, 43, true, &body));
    let mut resp = read_response(&mut s, 43, "ApiVersions v3");
    let av3 = ApiVersionsResponse::decode(&mut resp, 3).expect("decode ApiVersions v3 response");
    assert_eq!(av3.error_code, 0, "ApiVersions v3 error code");
    assert_has_key(&av3, API_API_VERSIONS, "ApiVersions v3");
    drop(s);

    eprintln!("--- (f) ApiVersions v127: UNSUPPORTED_VERSION with a v0 body");
    let mut s = connect(&broker);
    let body = encode(
        &ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("sluice-it"))
            .with_client_software_version(StrBytes::from_static_str("0.1")),
        3,
    );
    send(&mut s, &frame(API_API_VERSIONS, 127, 44, true, &body));
    let mut resp = read_response(&mut s, 44, "ApiVersions v127");
    let av = ApiVersionsResponse::decode(&mut resp, 0).expect("decode v0 body of the v127 answer");
    assert_eq!(resp.remaining(), 0, "trailing bytes after the v0 body");
    assert_eq!(
        av.error_code, UNSUPPORTED_VERSION,
        "ApiVersions v127 error code"
    );
    assert_has_key(&av, API_API_VERSIONS, "ApiVersions v127");
    let range = av
        .api_keys
        .iter()
        .find(|k| k.api_key == API_API_VERSIONS)
        .unwrap();
    assert_eq!(range.min_version, 0, "ApiVersions min version");
    assert!(
        range.max_version >= 3,
        "ApiVersions max version {}",
        range.max_version
    );
    drop(s);

    eprintln!("--- control: a well-formed Metadata v1 is answered");
    let mut s = connect(&broker);
    let body = encode(&MetadataRequest::default().with_topics(Some(Vec::new())), 1);
    send(&mut s, &frame(API_METADATA, 1, 50, false, &body));
    let mut resp = read_response(&mut s, 50, "Metadata v1");
    let md = MetadataResponse::decode(&mut resp, 1).expect("decode Metadata v1 response");
    assert!(
        md.brokers
            .iter()
            .any(|b| b.node_id.0 == 1 && b.port == broker.port() as i32),
        "Metadata v1 brokers: {:?}",
        md.brokers
    );

    eprintln!("--- (g) Metadata v1 with a truncated body");
    // topics: array of 2, first name claims 10 bytes, only 3 follow; the frame size is honest.
    let mut payload = raw_header_v1(API_METADATA, 1, 51);
    payload.extend_from_slice(&2i32.to_be_bytes());
    payload.extend_from_slice(&10i16.to_be_bytes());
    payload.extend_from_slice(b"abc");
    send(&mut s, &size_prefixed(&payload));
    expect_closed(&mut s, "truncated Metadata body");
    broker.assert_running("after a truncated body");

    eprintln!("--- (h) Metadata v1 claiming 0x7fffffff topics");
    let mut s = connect(&broker);
    let mut payload = raw_header_v1(API_METADATA, 1, 52);
    payload.extend_from_slice(&0x7fff_ffffi32.to_be_bytes());
    send(&mut s, &size_prefixed(&payload));
    expect_closed(&mut s, "huge array count");
    broker.assert_running("after a huge array count");

    eprintln!("--- the broker still serves real clients");
    block_on(round_trip(&broker, "after-bad-input"));
    broker.assert_running("at the end");
}
