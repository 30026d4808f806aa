//! Connections cannot exhaust the broker: connection limits, timeouts for stalled frames and
//! idle sockets, and memory bounds under slow readers. Each test ends by checking that the broker
//! still serves an ordinary rdkafka client.
//!
//! Raw sockets are plain blocking `std::net::TcpStream`s with short read timeouts; a request
//! written by hand is ApiVersions v0 (header v1, empty body) or Fetch v11 encoded with
//! kafka-protocol.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use common::*;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{
    ApiVersionsRequest, BrokerId, FetchRequest, FetchResponse, RequestHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, Request};

/// How long the broker gets to close a connection it should close.
const CLOSE_DEADLINE: Duration = Duration::from_secs(10);

fn connect(broker: &Broker) -> TcpStream {
    let s = TcpStream::connect_timeout(&broker.addr(), Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// A request frame: size, header (version by API), body.
fn request_frame<R: Request + Encodable>(version: i16, correlation_id: i32, body: &R) -> Vec<u8> {
    let header = RequestHeader::default()
        .with_request_api_key(R::KEY)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(kstr("sluice-it-limits")));
    let mut buf = BytesMut::new();
    header
        .encode(&mut buf, R::header_version(version))
        .expect("encode header");
    body.encode(&mut buf, version).expect("encode body");
    let mut out = (buf.len() as i32).to_be_bytes().to_vec();
    out.extend_from_slice(&buf);
    out
}

/// Reads exactly `buf.len()` bytes by `deadline`; `Err` says why not (closed, timeout, error).
fn read_exact_by(s: &mut TcpStream, buf: &mut [u8], deadline: Instant) -> Result<(), String> {
    let mut filled = 0;
    while filled < buf.len() {
        match s.read(&mut buf[filled..]) {
            Ok(0) => return Err(format!("closed after {filled} of {} bytes", buf.len())),
            Ok(n) => filled += n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if Instant::now() >= deadline {
                    return Err(format!("timed out after {filled} of {} bytes", buf.len()));
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("read failed: {e}")),
        }
    }
    Ok(())
}

/// Reads one response frame and checks its correlation id (header v0); returns the body.
fn read_response(
    s: &mut TcpStream,
    correlation_id: i32,
    timeout: Duration,
) -> Result<Bytes, String> {
    let deadline = Instant::now() + timeout;
    let mut size = [0u8; 4];
    read_exact_by(s, &mut size, deadline)?;
    let size = i32::from_be_bytes(size);
    if !(4..=64 * 1024 * 1024).contains(&size) {
        return Err(format!("implausible response size {size}"));
    }
    let mut frame = vec![0u8; size as usize];
    read_exact_by(s, &mut frame, deadline)?;
    let mut frame = Bytes::from(frame);
    let got = frame.get_i32();
    if got != correlation_id {
        return Err(format!("correlation id {got}, expected {correlation_id}"));
    }
    Ok(frame)
}

/// One ApiVersions v0 round trip; `Err` if the broker closed the connection or did not answer.
fn api_versions(s: &mut TcpStream, correlation_id: i32) -> Result<(), String> {
    let frame = request_frame(0, correlation_id, &ApiVersionsRequest::default());
    s.write_all(&frame).map_err(|e| format!("write: {e}"))?;
    read_response(s, correlation_id, CLIENT_TIMEOUT).map(|_| ())
}

/// Requires the broker to close the connection within [`CLOSE_DEADLINE`] without sending
/// anything; returns how long that took.
fn expect_closed(s: &mut TcpStream, what: &str) -> Duration {
    let start = Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return start.elapsed(),
            Ok(n) => panic!("{what}: broker sent {n} bytes instead of closing"),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if start.elapsed() >= CLOSE_DEADLINE {
                    panic!("{what}: broker kept the connection open for {CLOSE_DEADLINE:?}");
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            // Reset: the broker closed on us with bytes unread.
            Err(_) => return start.elapsed(),
        }
    }
}

/// True if the broker has not closed the connection (a read finds nothing, not EOF).
fn still_open(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 16];
    matches!(s.read(&mut buf), Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut))
}

/// Opens a connection that the broker answers, retrying while slots are still being released.
fn connect_answered(broker: &Broker, what: &str) -> TcpStream {
    wait_for(what, CLIENT_TIMEOUT, Duration::from_millis(50), || {
        let mut s = connect(broker);
        api_versions(&mut s, 1).ok().map(|_| s)
    })
}

/// Lines of the broker's log containing `needle`.
fn log_lines_with(broker: &Broker, needle: &str) -> usize {
    std::fs::read_to_string(broker.log_path())
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(needle))
        .count()
}

#[test]
fn max_connections_refuses_past_the_limit_and_recovers() {
    let mut broker = Broker::start_with(&["max.connections=50"]);

    tracing_phase("--- 50 connections take every slot");
    let mut held: Vec<TcpStream> = (0..50)
        .map(|i| connect_answered(&broker, &format!("connection {i} answered")))
        .collect();

    tracing_phase("--- the 51st is accepted and closed, politely and with a warning");
    let first_refusal = Instant::now();
    let mut extra = connect(&broker);
    expect_closed(&mut extra, "51st connection");
    wait_for(
        "the refusal in the broker log",
        CLIENT_TIMEOUT,
        Duration::from_millis(50),
        || (log_lines_with(&broker, "max.connections (50) reached") > 0).then_some(()),
    );
    for i in 0..20 {
        let mut s = connect(&broker);
        expect_closed(&mut s, &format!("refused connection {i}"));
    }
    // Rate-limited: one warning per 10 s, however many refusals.
    let allowed = 1 + first_refusal.elapsed().as_secs() as usize / 10 + 1;
    let warned = log_lines_with(&broker, "connection refused");
    assert!(
        (1..=allowed).contains(&warned),
        "{warned} refusal warnings for 21 refusals (allowed {allowed})"
    );
    broker.assert_running("after refusing connections");

    tracing_phase("--- the held connections are still served");
    for (i, s) in held.iter_mut().enumerate() {
        api_versions(s, 2).unwrap_or_else(|e| panic!("held connection {i}: {e}"));
    }

    tracing_phase("--- once they close, new clients get in");
    held.clear();
    drop(connect_answered(
        &broker,
        "a new connection after the held ones closed",
    ));
    block_on(round_trip(&broker, "after-max-connections"));
}

#[test]
fn max_connections_per_ip_refuses_past_the_limit() {
    let mut broker = Broker::start_with(&["max.connections.per.ip=10"]);
    let mut held: Vec<TcpStream> = (0..10)
        .map(|i| connect_answered(&broker, &format!("connection {i} answered")))
        .collect();
    let mut extra = connect(&broker);
    expect_closed(&mut extra, "11th connection from 127.0.0.1");
    wait_for(
        "the refusal in the broker log",
        CLIENT_TIMEOUT,
        Duration::from_millis(50),
        || (log_lines_with(&broker, "max.connections.per.ip (10) reached") > 0).then_some(()),
    );
    broker.assert_running("after refusing a connection");

    // A freed slot is reusable.
    held.pop();
    held.push(connect_answered(&broker, "a connection in the freed slot"));
    for (i, s) in held.iter_mut().enumerate() {
        api_versions(s, 2).unwrap_or_else(|e| panic!("held connection {i}: {e}"));
    }
    held.clear();
    drop(connect_answered(
        &broker,
        "a new connection after the held ones closed",
    ));
    block_on(round_trip(&broker, "after-per-ip"));
}

#[test]
fn thousands_of_idle_and_half_open_connections_under_the_defaults() {
    const SOCKETS: usize = 5000;
    let mut broker = Broker::start();
    let pid = broker.pid();
    let rss_before = rss_bytes(pid);

    tracing_phase("--- 5000 sockets: silent, 2 bytes of a size, a size and part of a body");
    let mut sockets = Vec::with_capacity(SOCKETS);
    for i in 0..SOCKETS {
        let mut s = TcpStream::connect_timeout(&broker.addr(), Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("connect #{i}: {e}"));
        let bytes: Vec<u8> = match i % 4 {
            0 => vec![],
            1 => vec![0, 0],
            2 => {
                let mut b = 1000i32.to_be_bytes().to_vec();
                b.extend_from_slice(&[0u8; 10]);
                b
            }
            // A few claim 100 MB and send 10 bytes: together less than the request pool, and
            // they must not cost what they claim.
            _ if i % 1000 == 3 => {
                let mut b = (100_000_000i32).to_be_bytes().to_vec();
                b.extend_from_slice(&[0u8; 10]);
                b
            }
            _ => vec![0, 0, 0],
        };
        s.write_all(&bytes).expect("write partial frame");
        sockets.push(s);
    }
    wait_for(
        "the broker to hold every socket",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || (open_sockets(pid) > SOCKETS).then_some(()), // and the listener
    );
    broker.assert_running("holding 5000 sockets");
    let rss = rss_bytes(pid);
    eprintln!(
        "broker RSS {} MiB before, {} MiB holding {SOCKETS} sockets",
        rss_before >> 20,
        rss >> 20
    );
    // A connection costs a few KiB (two tasks, no buffers until it has something to read or
    // write): 5000 of them stay well under 256 MiB.
    assert!(
        rss < rss_before + (256 << 20),
        "RSS grew by {} MiB for {SOCKETS} idle sockets",
        (rss - rss_before) >> 20
    );

    tracing_phase("--- an ordinary client is served meanwhile");
    block_on(round_trip(&broker, "among-5000-sockets"));

    tracing_phase("--- they close, the broker lets go of them");
    drop(sockets);
    wait_for(
        "the broker to release the sockets",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || (open_sockets(pid) < 10).then_some(()),
    );
    broker.assert_running("after 5000 sockets closed");
    block_on(round_trip(&broker, "after-5000-sockets"));
}

#[test]
fn a_stalled_frame_is_closed_after_the_read_timeout() {
    let mut broker = Broker::start_with(&["socket.request.read.timeout.ms=1000"]);
    let mut silent = connect(&broker);

    let mut half_size = connect(&broker);
    let sent = Instant::now();
    half_size.write_all(&[0, 0]).unwrap();
    expect_closed(&mut half_size, "2 bytes of a size");
    assert!(
        sent.elapsed() >= Duration::from_millis(950),
        "closed after {:?}, before the 1000 ms timeout",
        sent.elapsed()
    );

    let mut half_body = connect(&broker);
    let mut bytes = 1000i32.to_be_bytes().to_vec();
    bytes.extend_from_slice(&[0u8; 10]);
    half_body.write_all(&bytes).unwrap();
    expect_closed(&mut half_body, "a size and 10 bytes of body");

    // A valid request sent one byte every 200 ms: each byte is progress, but the frame is not
    // complete a second after it began, so it is dropped before it is answered.
    let mut trickle = connect(&broker);
    let frame = request_frame(0, 7, &ApiVersionsRequest::default());
    let mut writer = trickle.try_clone().unwrap();
    let trickler = std::thread::spawn(move || {
        for b in frame {
            if writer.write_all(&[b]).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    });
    expect_closed(&mut trickle, "a frame trickled a byte at a time");
    trickler.join().unwrap();

    // The read timeout is about frames: a connection that sent nothing is left alone.
    assert!(
        still_open(&mut silent),
        "a connection that sent nothing was closed"
    );
    api_versions(&mut silent, 1).expect("the silent connection is served");
    broker.assert_running("after stalled frames");
    block_on(round_trip(&broker, "after-stalled-frames"));
}

#[test]
fn an_idle_connection_is_closed_after_connections_max_idle_ms() {
    let mut broker = Broker::start_with(&["connections.max.idle.ms=1000"]);

    let mut silent = connect(&broker);
    let opened = Instant::now();
    let mut answered_once = connect(&broker);
    api_versions(&mut answered_once, 1).expect("first request answered");
    let mut busy = connect(&broker);

    // A connection that keeps sending requests is never idle.
    for i in 0..10 {
        api_versions(&mut busy, i).expect("a busy connection is served");
        std::thread::sleep(Duration::from_millis(300));
    }
    let closed_after =
        expect_closed(&mut silent, "a connection that sent nothing") + opened.elapsed();
    assert!(
        closed_after >= Duration::from_millis(950),
        "closed after {closed_after:?}, before connections.max.idle.ms"
    );
    expect_closed(&mut answered_once, "a connection idle after one request");
    api_versions(&mut busy, 99).expect("the busy connection is still served");
    broker.assert_running("after closing idle connections");
    block_on(round_trip(&broker, "after-idle"));
}

/// A broker whose fetch responses are at most `R` = 2 MiB (`fetch.max.bytes`) and whose
/// connections may hold `B` = 4 MiB (`connection.max.inflight.bytes`). 50 connections each
/// pipeline 16 fetches of a 24 MB partition and do not read. Per connection the broker holds at
/// most `B` of queued answers plus the one answer waiting for room (`R`: the records as read,
/// which the answer's frame shares instead of copying): 50 x 6 MiB = 300 MiB. Without the byte
/// budget every fetch would be answered and queued: 50 x 16 x 2 MiB = 1.6 GiB.
#[test]
fn a_fetch_storm_of_slow_readers_stays_bounded() {
    const CONNS: usize = 50;
    const FETCHES: i32 = 16;
    const R: u64 = 2 << 20;
    const B: u64 = 4 << 20;
    let mut broker = Broker::start_with_args(
        [
            "--durability",
            "relaxed",
            "--override",
            &format!("fetch.max.bytes={R}"),
            "--override",
            &format!("connection.max.inflight.bytes={B}"),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
    );
    let pid = broker.pid();
    let topic = "storm";

    tracing_phase("--- 24 MB in one partition");
    create_topic_sync(&broker, topic, 1);
    let value = "x".repeat(10_000);
    let recs: Vec<Rec> = (0..2400)
        .map(|i| Rec::kv(&format!("k{i}"), &value))
        .collect();
    let p = producer(&broker, &[("acks", "1")]);
    block_on(produce(&p, topic, Some(0), &recs));
    drop(p);

    tracing_phase("--- 50 connections pipeline 16 fetches each and do not read");
    let fetch = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(0)
        .with_min_bytes(1)
        .with_max_bytes(i32::MAX)
        .with_session_id(0)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(kstr(topic)))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(0)
                .with_current_leader_epoch(-1)
                .with_fetch_offset(0)
                .with_log_start_offset(-1)
                .with_partition_max_bytes(i32::MAX)])]);
    let rss_before = rss_bytes(pid);
    let mut conns: Vec<TcpStream> = (0..CONNS).map(|_| connect(&broker)).collect();
    for s in &mut conns {
        for c in 1..=FETCHES {
            s.write_all(&request_frame(11, c, &fetch))
                .expect("send fetch");
        }
    }

    // The broker works until every connection is blocked on its budget; its CPU time then
    // stops growing. Track the peak RSS until then.
    let mut peak = rss_before;
    let mut last_ticks = cpu_ticks(pid);
    let mut quiet_since = Instant::now();
    wait_for(
        "the broker to go quiet",
        Duration::from_secs(60),
        Duration::from_millis(20),
        || {
            peak = peak.max(rss_bytes(pid));
            let ticks = cpu_ticks(pid);
            if ticks != last_ticks {
                last_ticks = ticks;
                quiet_since = Instant::now();
            }
            (quiet_since.elapsed() >= Duration::from_secs(1)).then_some(())
        },
    );
    peak = peak.max(rss_bytes(pid));
    broker.assert_running("under a fetch storm");
    let bound = CONNS as u64 * (B + R) + (128 << 20);
    eprintln!(
        "broker RSS {} MiB before the storm, peak {} MiB (bound: before + {} MiB)",
        rss_before >> 20,
        peak >> 20,
        bound >> 20
    );
    assert!(
        peak < rss_before + bound,
        "broker RSS peaked at {} MiB, {} MiB above the {} MiB before the storm (bound {} MiB)",
        peak >> 20,
        (peak - rss_before) >> 20,
        rss_before >> 20,
        bound >> 20
    );

    tracing_phase("--- the readers catch up: every fetch is answered, with records");
    let readers: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(i, mut s)| {
            std::thread::spawn(move || {
                for c in 1..=FETCHES {
                    let mut body = read_response(&mut s, c, Duration::from_secs(60))
                        .unwrap_or_else(|e| panic!("connection {i}, fetch {c}: {e}"));
                    let resp = FetchResponse::decode(&mut body, 11).expect("decode fetch");
                    let records = resp.responses[0].partitions[0]
                        .records
                        .as_ref()
                        .map_or(0, |r| r.len());
                    assert!(records > 0, "connection {i}, fetch {c}: no records");
                }
            })
        })
        .collect();
    for r in readers {
        r.join().expect("reader thread");
    }
    broker.assert_running("after the fetch storm");
    block_on(round_trip(&broker, "after-fetch-storm"));
}

/// Announces a test phase on stderr (shown with the failure).
fn tracing_phase(what: &str) {
    eprintln!("{what}");
}
