//! A fault-injecting TCP proxy: listens on a loopback port, forwards every connection to one
//! target, and applies a [`Fault`] per [`Direction`] that tests switch at run time.
//!
//! Each accepted connection becomes one task that dials the target and runs two pumps
//! (client->server, server->client). A pump is a reader and a writer joined by a small queue of
//! `(due, chunk)` pairs: the reader decides a chunk's fate from the fault in force *when the
//! chunk is read* (held while black-holed, discarded when dropping, stamped `now + d` when
//! delayed), the writer sleeps until `due` and forwards. The queue keeps order, so a delay is
//! added latency, not a throughput cap.
//!
//! Every task watches one `watch` channel of [`Faults`]. A change to `Cut` closes the live
//! connections; dropping the [`Proxy`] drops the sender, which ends the accept loop and every
//! connection task. I/O errors end the affected connection and are never panics.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// Largest chunk a pump reads at once.
const CHUNK: usize = 16 * 1024;
/// Chunks a pump may hold between reader and writer; bounds the bytes in flight under `Delay`.
const QUEUE: usize = 64;
/// Pause after a failed `accept` (e.g. out of file descriptors) so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);

/// Which way bytes travel through the proxy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// From the connecting side (a client, or a broker dialing a peer) to the target.
    ClientToServer,
    /// From the target back to the connecting side.
    ServerToClient,
}

impl Direction {
    fn index(self) -> usize {
        match self {
            Direction::ClientToServer => 0,
            Direction::ServerToClient => 1,
        }
    }
}

/// What the proxy does to the bytes of one direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Forward as soon as read.
    Pass,
    /// Forward each chunk no earlier than this long after it was read.
    Delay(Duration),
    /// Read and discard: the sender sees its writes succeed, the receiver never sees the bytes.
    /// (TCP itself never loses bytes inside a live connection; this models a broken middlebox or
    /// a peer that lost what it had not yet processed.)
    Drop,
    /// Accept and hold: nothing is forwarded, so no answer comes back. Held bytes stay in the
    /// proxy and the kernel buffers, as a real black hole's stay in TCP retransmission, and flow
    /// once healed. New connections are still accepted.
    BlackHole,
    /// The link is down. TCP cannot be cut one way only, so `Cut` on either direction closes
    /// every live connection and closes each new one at once until healed. A one-way partition
    /// is `BlackHole` (or `Drop`) in that direction.
    Cut,
}

/// The faults in force, one per direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Faults {
    pub client_to_server: Fault,
    pub server_to_client: Fault,
}

impl Faults {
    /// Both directions [`Fault::Pass`].
    pub const HEALED: Faults = Faults {
        client_to_server: Fault::Pass,
        server_to_client: Fault::Pass,
    };

    pub fn get(&self, dir: Direction) -> Fault {
        match dir {
            Direction::ClientToServer => self.client_to_server,
            Direction::ServerToClient => self.server_to_client,
        }
    }

    fn set(&mut self, dir: Direction, fault: Fault) {
        match dir {
            Direction::ClientToServer => self.client_to_server = fault,
            Direction::ServerToClient => self.server_to_client = fault,
        }
    }

    /// True when the link is down (a `Cut` in either direction).
    pub fn is_cut(&self) -> bool {
        self.client_to_server == Fault::Cut || self.server_to_client == Fault::Cut
    }
}

/// Live counters, shared by every task of one proxy.
#[derive(Default)]
struct Counters {
    /// Connections accepted and forwarded (or attempted) to the target.
    accepted: AtomicU64,
    /// Connections closed at once because the link was cut.
    refused: AtomicU64,
    /// Connections whose dial to the target failed (the target is down).
    dial_failures: AtomicU64,
    /// Connection tasks still running.
    active: AtomicU64,
    /// Bytes written to the far side, per direction.
    forwarded: [AtomicU64; 2],
    /// Bytes discarded under [`Fault::Drop`], per direction.
    dropped: [AtomicU64; 2],
}

/// A snapshot of a proxy's counters, for tests to wait on instead of sleeping.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProxyStats {
    pub accepted: u64,
    pub refused: u64,
    pub dial_failures: u64,
    pub active: u64,
    forwarded: [u64; 2],
    dropped: [u64; 2],
}

impl ProxyStats {
    /// Bytes written to the far side in `dir`.
    pub fn forwarded(&self, dir: Direction) -> u64 {
        self.forwarded[dir.index()]
    }

    /// Bytes discarded under [`Fault::Drop`] in `dir`.
    pub fn dropped(&self, dir: Direction) -> u64 {
        self.dropped[dir.index()]
    }
}

/// Handle to a running proxy. Dropping it stops the proxy and closes all its connections.
pub struct Proxy {
    /// Where clients connect.
    addr: SocketAddr,
    /// Where every connection is forwarded.
    target: SocketAddr,
    /// The one source of truth for faults; its drop is the shutdown signal.
    faults: watch::Sender<Faults>,
    counters: Arc<Counters>,
}

impl Proxy {
    /// Starts a proxy to `target` on a free loopback port. Needs a tokio runtime.
    pub async fn start(target: SocketAddr) -> io::Result<Proxy> {
        Proxy::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), target).await
    }

    /// Starts a proxy to `target` listening on `listen`.
    pub async fn start_on(listen: SocketAddr, target: SocketAddr) -> io::Result<Proxy> {
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let (faults, rx) = watch::channel(Faults::HEALED);
        let counters = Arc::new(Counters::default());
        tokio::spawn(accept_loop(listener, target, rx, counters.clone()));
        Ok(Proxy {
            addr,
            target,
            faults,
            counters,
        })
    }

    /// The address clients connect to (what a node advertises).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address every connection is forwarded to.
    pub fn target(&self) -> SocketAddr {
        self.target
    }

    /// Sets the fault of one direction; the other is unchanged.
    pub fn set(&self, dir: Direction, fault: Fault) {
        tracing::info!(proxy = %self.addr, target = %self.target, ?dir, ?fault, "proxy fault");
        self.faults.send_modify(|f| f.set(dir, fault));
    }

    /// Sets the same fault in both directions.
    pub fn set_both(&self, fault: Fault) {
        self.set(Direction::ClientToServer, fault);
        self.set(Direction::ServerToClient, fault);
    }

    /// Back to [`Fault::Pass`] both ways; held (black-holed) bytes flow again.
    pub fn heal(&self) {
        tracing::info!(proxy = %self.addr, target = %self.target, "proxy healed");
        self.faults.send_replace(Faults::HEALED);
    }

    /// The faults in force.
    pub fn faults(&self) -> Faults {
        *self.faults.borrow()
    }

    pub fn stats(&self) -> ProxyStats {
        let c = &self.counters;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ProxyStats {
            accepted: load(&c.accepted),
            refused: load(&c.refused),
            dial_failures: load(&c.dial_failures),
            active: load(&c.active),
            forwarded: [load(&c.forwarded[0]), load(&c.forwarded[1])],
            dropped: [load(&c.dropped[0]), load(&c.dropped[1])],
        }
    }

    /// Polls the counters until `cond` holds; returns the last snapshot either way, as `Err`
    /// on timeout.
    pub async fn wait_stats(
        &self,
        timeout: Duration,
        mut cond: impl FnMut(&ProxyStats) -> bool,
    ) -> Result<ProxyStats, ProxyStats> {
        let deadline = Instant::now() + timeout;
        loop {
            let s = self.stats();
            if cond(&s) {
                return Ok(s);
            }
            if Instant::now() >= deadline {
                return Err(s);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    target: SocketAddr,
    mut faults: watch::Receiver<Faults>,
    counters: Arc<Counters>,
) {
    loop {
        tokio::select! {
            changed = faults.changed() => {
                if changed.is_err() {
                    return; // The Proxy was dropped.
                }
            }
            accepted = listener.accept() => match accepted {
                Ok((client, _)) => {
                    if faults.borrow().is_cut() {
                        counters.refused.fetch_add(1, Ordering::Relaxed);
                        drop(client);
                        continue;
                    }
                    counters.accepted.fetch_add(1, Ordering::Relaxed);
                    tokio::spawn(connection(client, target, faults.clone(), counters.clone()));
                }
                Err(e) => {
                    tracing::debug!(error = %e, "proxy accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
        }
    }
}

/// Counts a connection task as active for as long as it lives.
struct ActiveGuard(Arc<Counters>);

impl ActiveGuard {
    fn new(counters: &Arc<Counters>) -> ActiveGuard {
        counters.active.fetch_add(1, Ordering::Relaxed);
        ActiveGuard(counters.clone())
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn connection(
    client: TcpStream,
    target: SocketAddr,
    mut faults: watch::Receiver<Faults>,
    counters: Arc<Counters>,
) {
    let _active = ActiveGuard::new(&counters);
    let server = tokio::select! {
        dialed = TcpStream::connect(target) => match dialed {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(%target, error = %e, "proxy dial failed");
                counters.dial_failures.fetch_add(1, Ordering::Relaxed);
                return;
            }
        },
        () = cut_or_shutdown(&mut faults) => return,
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_r, client_w) = client.into_split();
    let (server_r, server_w) = server.into_split();
    let up = pump(
        client_r,
        server_w,
        Direction::ClientToServer,
        faults.clone(),
        &counters,
    );
    let down = pump(
        server_r,
        client_w,
        Direction::ServerToClient,
        faults.clone(),
        &counters,
    );
    // Dropping the pumps drops the sockets, which closes both sides.
    tokio::select! {
        _ = async { tokio::join!(up, down) } => {}
        () = cut_or_shutdown(&mut faults) => {}
    }
}

/// Resolves when the link is cut or the proxy is dropped.
async fn cut_or_shutdown(faults: &mut watch::Receiver<Faults>) {
    loop {
        if faults.borrow_and_update().is_cut() {
            return;
        }
        if faults.changed().await.is_err() {
            return;
        }
    }
}

/// The fault in force for `dir` once it is not `BlackHole`; `None` if the proxy was dropped.
async fn wait_not_blackholed(
    faults: &mut watch::Receiver<Faults>,
    dir: Direction,
) -> Option<Fault> {
    loop {
        let fault = faults.borrow_and_update().get(dir);
        if fault != Fault::BlackHole {
            return Some(fault);
        }
        faults.changed().await.ok()?;
    }
}

/// Moves bytes one way until EOF, an I/O error, a cut or shutdown; then half-closes the far side.
async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    dir: Direction,
    mut faults: watch::Receiver<Faults>,
    counters: &Counters,
) {
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(QUEUE);
    let i = dir.index();
    let reader = async move {
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            // The fault at read time decides; a chunk read just before a black hole is held.
            let Some(fault) = wait_not_blackholed(&mut faults, dir).await else {
                return;
            };
            let due = match fault {
                Fault::Pass => Instant::now(),
                Fault::Delay(d) => Instant::now() + d,
                Fault::Drop => {
                    counters.dropped[i].fetch_add(n as u64, Ordering::Relaxed);
                    continue;
                }
                // The connection task closes the sockets; stop moving bytes meanwhile.
                Fault::Cut | Fault::BlackHole => return,
            };
            if tx.send((due, buf[..n].to_vec())).await.is_err() {
                return;
            }
        }
    };
    // `move`: a failed writer drops the queue, which ends the reader too.
    let writer = async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
            counters.forwarded[i].fetch_add(chunk.len() as u64, Ordering::Relaxed);
        }
        // The reader hit EOF: pass the half-close on.
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}
