//! The proxy against a local echo server: every fault, in each direction, does what it says.
//!
//! "Nothing arrives" can only be shown by waiting; those waits are [`QUIET`] long and always
//! follow a positive check (a counter moved) that the bytes did reach the proxy.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use sluice_chaos::{Direction, Fault, Faults, Proxy, ProxyStats};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use Direction::{ClientToServer as C2S, ServerToClient as S2C};

/// Bound for anything that should happen.
const WAIT: Duration = Duration::from_secs(5);
/// How long "nothing arrives" is watched.
const QUIET: Duration = Duration::from_millis(300);

/// An echo server on a free loopback port; runs until the test's runtime ends.
async fn echo_server() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

async fn setup() -> (Proxy, TcpStream) {
    let proxy = Proxy::start(echo_server().await).await.unwrap();
    let conn = TcpStream::connect(proxy.addr()).await.unwrap();
    (proxy, conn)
}

async fn read_exactly(s: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    tokio::time::timeout(WAIT, s.read_exact(&mut buf))
        .await
        .expect("bytes within WAIT")
        .expect("read");
    buf
}

/// Asserts no byte arrives for [`QUIET`] (the connection may stay open).
async fn assert_silent(s: &mut TcpStream) {
    let mut buf = [0u8; 64];
    if let Ok(r) = tokio::time::timeout(QUIET, s.read(&mut buf)).await {
        panic!(
            "expected silence, got {r:?} ({:?})",
            &buf[..*r.as_ref().unwrap_or(&0)]
        );
    }
}

/// Asserts the peer closes the connection (EOF or reset) within [`WAIT`].
async fn assert_closed(s: &mut TcpStream) {
    let mut buf = [0u8; 64];
    match tokio::time::timeout(WAIT, s.read(&mut buf)).await {
        Ok(Ok(0)) | Ok(Err(_)) => {}
        other => panic!("expected the connection closed, got {other:?}"),
    }
}

async fn wait_stats(proxy: &Proxy, what: &str, cond: impl FnMut(&ProxyStats) -> bool) {
    if let Err(s) = proxy.wait_stats(WAIT, cond).await {
        panic!("timed out waiting for {what}: {s:?}");
    }
}

#[tokio::test]
async fn pass_forwards_both_ways_and_counts() {
    let (proxy, mut c) = setup().await;
    c.write_all(b"hello").await.unwrap();
    assert_eq!(read_exactly(&mut c, 5).await, b"hello");
    let s = proxy.stats();
    assert_eq!((s.forwarded(C2S), s.forwarded(S2C)), (5, 5));
    assert_eq!((s.accepted, s.active), (1, 1));
    drop(c);
    wait_stats(&proxy, "connection task ended", |s| s.active == 0).await;
}

#[tokio::test]
async fn delay_holds_bytes_at_least_the_delay_in_each_direction() {
    let d = Duration::from_millis(600);
    for dir in [C2S, S2C] {
        let (proxy, mut c) = setup().await;
        proxy.set(dir, Fault::Delay(d));
        let t0 = Instant::now();
        c.write_all(b"slow").await.unwrap();
        assert_eq!(read_exactly(&mut c, 4).await, b"slow");
        assert!(
            t0.elapsed() >= d,
            "{dir:?}: round trip {:?} < {d:?}",
            t0.elapsed()
        );
        // Healed: the fault is gone and bytes flow. (No upper bound on the time it takes: a
        // loaded machine may be slow, and tests never fail on wall-clock speed.)
        proxy.heal();
        assert_eq!(
            proxy.faults(),
            Faults::HEALED,
            "{dir:?}: heal() left a fault"
        );
        c.write_all(b"fast").await.unwrap();
        assert_eq!(read_exactly(&mut c, 4).await, b"fast");
    }
}

#[tokio::test]
async fn drop_discards_bytes_in_each_direction() {
    for dir in [C2S, S2C] {
        let (proxy, mut c) = setup().await;
        proxy.set(dir, Fault::Drop);
        c.write_all(b"lost").await.unwrap();
        wait_stats(&proxy, "4 bytes dropped", |s| s.dropped(dir) == 4).await;
        assert_silent(&mut c).await;
        proxy.heal();
        c.write_all(b"kept").await.unwrap();
        // Exactly "kept": the dropped bytes are gone, not late.
        assert_eq!(read_exactly(&mut c, 4).await, b"kept", "{dir:?}");
        assert_silent(&mut c).await;
    }
}

#[tokio::test]
async fn black_hole_accepts_but_never_answers_until_healed() {
    // Client to server: the request never reaches the server.
    let (proxy, mut c) = setup().await;
    proxy.set(C2S, Fault::BlackHole);
    c.write_all(b"held").await.unwrap();
    assert_silent(&mut c).await;
    assert_eq!(proxy.stats().forwarded(C2S), 0);
    // New connections are accepted and get nothing either.
    let mut c2 = TcpStream::connect(proxy.addr()).await.unwrap();
    c2.write_all(b"also").await.unwrap();
    wait_stats(&proxy, "second connection accepted", |s| s.accepted == 2).await;
    assert_silent(&mut c2).await;
    proxy.heal();
    // Held bytes flow once healed, as TCP retransmission would deliver them.
    assert_eq!(read_exactly(&mut c, 4).await, b"held");
    assert_eq!(read_exactly(&mut c2, 4).await, b"also");

    // Server to client: the server gets the request, the answer never comes back.
    let (proxy, mut c) = setup().await;
    proxy.set(S2C, Fault::BlackHole);
    c.write_all(b"ping").await.unwrap();
    wait_stats(&proxy, "request forwarded", |s| s.forwarded(C2S) == 4).await;
    assert_silent(&mut c).await;
    assert_eq!(proxy.stats().forwarded(S2C), 0);
    proxy.heal();
    assert_eq!(read_exactly(&mut c, 4).await, b"ping");
}

#[tokio::test]
async fn cut_closes_live_connections_and_refuses_new_ones_until_healed() {
    for dir in [C2S, S2C] {
        let (proxy, mut c) = setup().await;
        c.write_all(b"up").await.unwrap();
        assert_eq!(read_exactly(&mut c, 2).await, b"up");
        proxy.set(dir, Fault::Cut);
        assert_closed(&mut c).await;
        wait_stats(&proxy, "live connection gone", |s| s.active == 0).await;

        let mut refused = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_closed(&mut refused).await;
        assert_eq!(proxy.stats().refused, 1, "{dir:?}");

        proxy.heal();
        let mut c = TcpStream::connect(proxy.addr()).await.unwrap();
        c.write_all(b"back").await.unwrap();
        assert_eq!(read_exactly(&mut c, 4).await, b"back", "{dir:?}");
    }
}

#[tokio::test]
async fn dropping_the_proxy_closes_connections_and_the_port() {
    let (proxy, mut c) = setup().await;
    c.write_all(b"x").await.unwrap();
    assert_eq!(read_exactly(&mut c, 1).await, b"x");
    let addr = proxy.addr();
    drop(proxy);
    assert_closed(&mut c).await;
    // The accept loop ended with the listener: connecting is refused (or closed at once).
    let deadline = Instant::now() + WAIT;
    loop {
        match TcpStream::connect(addr).await {
            Err(_) => break,
            Ok(mut s) => assert_closed(&mut s).await,
        }
        assert!(Instant::now() < deadline, "proxy port still accepting");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn target_down_closes_the_client_connection() {
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let proxy = Proxy::start(dead).await.unwrap();
    let mut c = TcpStream::connect(proxy.addr()).await.unwrap();
    assert_closed(&mut c).await;
    wait_stats(&proxy, "dial failure counted", |s| s.dial_failures == 1).await;
}
