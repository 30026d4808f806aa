//! One slow disk must not stall unrelated clients.
//!
//! An in-process broker whose partition logs go through a disk seam that holds every write and
//! fsync of one topic's files hostage. While several produces to that topic are stuck on the
//! disk, a produce to another topic and a Metadata request on other connections must still be
//! answered; once the disk is released, the stuck produces complete without error.
//!
//! The runtime has two worker threads, as `sluice serve` has on this two-core machine: a handler
//! that blocked a worker on the disk would take half the broker with it, two would take all of it.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use sluice_broker::config::{BrokerConfig, Durability, Settings};
use sluice_broker::controller::NewTopic;
use sluice_broker::Broker;
use sluice_log::{Io, StdIo};
use sluice_protocol::batch::testing::build_batch;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Instant;

/// How long a request that must not be delayed by the hostage disk may take (generous: this is
/// not a speed test, it separates "answered" from "stuck behind the disk").
const ANSWER_DEADLINE: Duration = Duration::from_secs(20);

/// [`StdIo`] that stalls writes and fsyncs of files whose path contains `marker` while held.
#[derive(Debug)]
struct HostageIo {
    inner: StdIo,
    marker: String,
    /// Inodes of the files opened under the marker.
    hostages: Mutex<HashSet<u64>>,
    held: Mutex<bool>,
    released: Condvar,
    /// Operations that found the disk held and waited.
    stalled: AtomicU64,
}

impl HostageIo {
    fn new(marker: &str) -> HostageIo {
        HostageIo {
            inner: StdIo,
            marker: marker.into(),
            hostages: Mutex::default(),
            held: Mutex::new(false),
            released: Condvar::new(),
            stalled: AtomicU64::new(0),
        }
    }

    fn hold(&self, on: bool) {
        *self.held.lock().unwrap() = on;
        self.released.notify_all();
    }

    fn wait_if_hostage(&self, file: &std::fs::File) {
        let Ok(meta) = file.metadata() else { return };
        if !self.hostages.lock().unwrap().contains(&meta.ino()) {
            return;
        }
        let mut held = self.held.lock().unwrap();
        if *held {
            self.stalled.fetch_add(1, Ordering::SeqCst);
        }
        while *held {
            held = self.released.wait(held).unwrap();
        }
    }
}

impl Io for HostageIo {
    fn open(&self, path: &Path) -> std::io::Result<std::fs::File> {
        let file = self.inner.open(path)?;
        if path.to_string_lossy().contains(&self.marker) {
            self.hostages.lock().unwrap().insert(file.metadata()?.ino());
        }
        Ok(file)
    }
    fn write_all_at(&self, file: &std::fs::File, buf: &[u8], pos: u64) -> std::io::Result<()> {
        self.wait_if_hostage(file);
        self.inner.write_all_at(file, buf, pos)
    }
    fn set_len(&self, file: &std::fs::File, len: u64) -> std::io::Result<()> {
        self.inner.set_len(file, len)
    }
    fn sync_data(&self, file: &std::fs::File) -> std::io::Result<()> {
        self.wait_if_hostage(file);
        self.inner.sync_data(file)
    }
    fn sync_dir(&self, dir: &Path) -> std::io::Result<()> {
        self.inner.sync_dir(dir)
    }
    fn create_dir_all(&self, dir: &Path) -> std::io::Result<()> {
        self.inner.create_dir_all(dir)
    }
    fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()> {
        self.inner.rename(from, to)
    }
    fn remove_file(&self, path: &Path) -> std::io::Result<()> {
        self.inner.remove_file(path)
    }
    fn remove_dir_all(&self, dir: &Path) -> std::io::Result<()> {
        self.inner.remove_dir_all(dir)
    }
}

/// Releases the hostage disk when dropped (also when the test fails).
struct Release(Arc<HostageIo>);

impl Drop for Release {
    fn drop(&mut self) {
        self.0.hold(false);
    }
}

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

/// Sends one request and reads its response on `conn` (a blocking socket with a read timeout:
/// the client side runs on plain threads, so a broker whose runtime is stuck fails the test
/// instead of hanging it).
fn call<R: Request>(conn: &mut TcpStream, version: i16, req: &R) -> std::io::Result<R::Response> {
    let mut buf = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(R::KEY)
        .with_request_api_version(version)
        .with_correlation_id(1)
        .with_client_id(Some(s("isolation-test")))
        .encode(&mut buf, R::header_version(version))
        .unwrap();
    req.encode(&mut buf, version).unwrap();
    let mut frame = (buf.len() as i32).to_be_bytes().to_vec();
    frame.extend_from_slice(&buf);
    conn.write_all(&frame)?;
    let mut size = [0u8; 4];
    conn.read_exact(&mut size)?;
    let mut body = vec![0u8; i32::from_be_bytes(size) as usize];
    conn.read_exact(&mut body)?;
    let mut body = Bytes::from(body);
    ResponseHeader::decode(&mut body, R::Response::header_version(version)).unwrap();
    let resp = R::Response::decode(&mut body, version).unwrap();
    assert_eq!(body.remaining(), 0);
    Ok(resp)
}

fn connect(addr: SocketAddr, read_timeout: Duration) -> TcpStream {
    let conn = TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(read_timeout)).unwrap();
    conn
}

fn produce(topic: &str, value: &str) -> ProduceRequest {
    let batch = build_batch(0, &[(None, Some(value.as_bytes()), 1_000)]);
    ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(60_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(s(topic)))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(Bytes::from(batch)))])])
}

fn produce_error(r: &ProduceResponse) -> i16 {
    r.responses[0].partition_responses[0].error_code
}

fn isolation(durability: Durability) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let settings = Settings::load(None, &[]).unwrap();
    let listen: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let config = BrokerConfig::new(
        1,
        listen,
        None,
        dir.path().to_path_buf(),
        durability,
        &settings,
    )
    .unwrap();
    let io = Arc::new(HostageIo::new("hostage-0"));
    let seam: Arc<dyn Io> = io.clone();
    let broker = runtime
        .block_on(Broker::open_with_io(config, seam))
        .unwrap();
    for name in ["hostage", "free"] {
        runtime
            .block_on(
                broker
                    .controller
                    .create_topics(vec![NewTopic::new(name, 1)], false),
            )
            .remove(0)
            .unwrap();
    }
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (addr, server) = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(listen).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(sluice_broker::server::run(
            listener,
            broker.clone(),
            async {
                let _ = stop_rx.await;
            },
        ));
        (addr, server)
    });

    eprintln!("--- the hostage topic's disk stops answering");
    io.hold(true);
    // Whatever happens below, the disk is released at the end, so no thread stays stuck.
    let release = Release(io.clone());
    let stuck: Vec<_> = (0..4)
        .map(|i| {
            std::thread::spawn(move || {
                let mut conn = connect(addr, Duration::from_secs(120));
                let r = call(&mut conn, 9, &produce("hostage", &format!("stuck-{i}")));
                produce_error(&r.expect("stuck produce answered after release"))
            })
        })
        .collect();
    let deadline = Instant::now() + ANSWER_DEADLINE;
    // The first stuck produce holds the partition; the others queue behind it.
    while io.stalled.load(Ordering::SeqCst) < 1 {
        assert!(
            Instant::now() < deadline,
            "the hostage produces never reached the disk"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Give the other stuck produces time to be read and started (a broker that blocked a
    // worker per stuck produce would now have none left).
    std::thread::sleep(Duration::from_millis(300));

    eprintln!("--- other clients are still answered");
    let mut conn = connect(addr, ANSWER_DEADLINE);
    let r = call(&mut conn, 9, &produce("free", "ok"))
        .expect("a produce to another topic answered while the hostage disk is held");
    assert_eq!(produce_error(&r), 0);
    let r = call(&mut conn, 12, &MetadataRequest::default().with_topics(None))
        .expect("Metadata answered while the hostage disk is held");
    assert_eq!(r.topics.len(), 2);
    assert!(
        stuck.iter().all(|t| !t.is_finished()),
        "the hostage produces cannot have been answered yet"
    );

    eprintln!("--- the disk comes back: the stuck produces complete");
    drop(release);
    for t in stuck {
        assert_eq!(t.join().unwrap(), 0);
    }
    let _ = stop_tx.send(());
    runtime.block_on(server).unwrap();
}

#[test]
fn a_stalled_fsync_does_not_stall_other_clients() {
    isolation(Durability::Fsync);
}

#[test]
fn a_stalled_write_does_not_stall_other_clients() {
    // Relaxed durability answers after the write: the stall is in the pwrite itself, the
    // dirty-page throttling that gave relaxed mode its worse latency tail.
    isolation(Durability::Relaxed);
}
