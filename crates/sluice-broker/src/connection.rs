//! One client connection: a reader that decodes and starts requests in order, and a writer that
//! sends their answers in the same order.
//!
//! Requests are *started* one at a time, in order: a produce is validated and appended before
//! the next request is read, so a pipelined produce stream lands in the log in the order it was
//! sent. Only the wait for durability is deferred ([`handlers::Reply::Later`]): the reader goes
//! on with the next request while the writer waits for the oldest answer, so several produce
//! requests of one connection share an fsync instead of paying one each. Answers are written in
//! request order (Kafka's guarantee). Connections run in parallel with each other.
//!
//! # What a connection may hold
//!
//! - At most [`MAX_IN_FLIGHT`] answers wait to be written.
//! - Bytes, per connection (`connection.max.inflight.bytes`): a request's frame size is reserved
//!   from the connection's [`ByteBudget`] before its body is read and held while it is handled;
//!   then its encoded answer's size is reserved until the writer has written it. The reader waits
//!   for the reservation, so a client that does not read its answers stops being read. Produce
//!   answers (small, encoded by the writer when their fsync is done) are counted by number only.
//! - Bytes, broker-wide (`queued.max.request.bytes`): the frame size is also reserved from the
//!   broker's pool before the body is read, and released once the request has been handled.
//! - A reservation larger than its budget is clamped to the whole budget: it waits until nothing
//!   else holds any, so a request up to `socket.request.max.bytes` is always possible.
//! - The body buffer grows with the bytes that arrive, not with the size the frame claims.
//! - Time: a frame must be complete `socket.request.read.timeout.ms` after its first byte
//!   arrived (waits for memory included); a connection with no answer pending that received
//!   nothing for `connections.max.idle.ms` is closed; a write that makes no progress for
//!   `connections.max.idle.ms` closes the connection. One timer per connection, re-armed, serves
//!   the reader.
//!
//! Bad input never takes the broker down: an oversized or negative frame size, an unknown API
//! key, an unsupported version or an undecodable body closes *this* connection with a warning.
//! The one exception is ApiVersions at an unknown version, which is answered (KIP-511).

use std::io::IoSlice;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use kafka_protocol::messages::{ApiKey, ResponseKind};
use kafka_protocol::ResponseError;
use sluice_protocol::frame::check_request_size;
use sluice_protocol::request::{decode_request, RequestError};
use sluice_protocol::response::{encode_response, Frame};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

use crate::broker::Broker;
use crate::config::NetworkSettings;
use crate::handlers::{self, api_versions, Reply};

/// Requests of one connection that may be started but not yet answered.
pub const MAX_IN_FLIGHT: usize = 64;

/// At most one warning per this period for each kind of flood: connections closed for bad or
/// stalled input, refused connections, failed accepts.
pub const WARN_EVERY: Duration = Duration::from_secs(10);

/// The body buffer grows by at most this much beyond what has arrived.
const READ_CHUNK: usize = 64 * 1024;

/// Bytes that many holders share, reserved before they are used (a semaphore of bytes).
#[derive(Clone)]
pub struct ByteBudget {
    bytes: Arc<Semaphore>,
    /// The most one reservation takes: a larger one is clamped to this, so it waits for the
    /// whole budget instead of forever.
    largest: u32,
}

impl ByteBudget {
    pub fn new(size: usize) -> ByteBudget {
        let size = size.clamp(1, Semaphore::MAX_PERMITS);
        ByteBudget {
            bytes: Arc::new(Semaphore::new(size)),
            largest: u32::try_from(size).unwrap_or(u32::MAX),
        }
    }

    /// Waits until `n` bytes (clamped to the budget) are free and takes them; `None` once the
    /// budget is closed.
    pub async fn reserve(&self, n: usize) -> Option<OwnedSemaphorePermit> {
        let n = u32::try_from(n).unwrap_or(u32::MAX).clamp(1, self.largest);
        self.bytes.clone().acquire_many_owned(n).await.ok()
    }

    /// Bytes not reserved right now.
    pub fn available(&self) -> usize {
        self.bytes.available_permits()
    }

    /// Fails every waiting and future reservation.
    fn close(&self) {
        self.bytes.close();
    }
}

/// Lets one warning through per [`WARN_EVERY`] and counts the ones held back, so a flood of bad
/// connections does not flood the log.
#[derive(Default)]
pub struct RateLimitedWarning {
    /// When the last warning went out, and how many were held back since.
    state: std::sync::Mutex<(Option<Instant>, u64)>,
}

impl RateLimitedWarning {
    /// `Some(held back since the last one)` when a warning is due now.
    pub fn due(&self, now: Instant) -> Option<u64> {
        let mut state = self.state.lock().expect("warning rate limit lock");
        let (last, held_back) = &mut *state;
        match *last {
            Some(t) if now.duration_since(t) < WARN_EVERY => {
                *held_back += 1;
                None
            }
            _ => {
                *last = Some(now);
                Some(std::mem::take(held_back))
            }
        }
    }
}

/// What every connection is held to, built once by the server.
pub struct Limits {
    /// `socket.request.max.bytes`.
    pub max_request_bytes: usize,
    /// `connection.max.inflight.bytes`: the size of each connection's own budget.
    pub connection_bytes: usize,
    /// `queued.max.request.bytes`, shared by every connection; `None`: unbounded.
    pub request_pool: Option<ByteBudget>,
    /// `connections.max.idle.ms`; `None`: never.
    pub idle: Option<Duration>,
    /// `socket.request.read.timeout.ms`.
    pub request_read_timeout: Duration,
    /// Shared by every connection: why connections were closed for bad or stalled input.
    pub close_warnings: RateLimitedWarning,
}

impl Limits {
    pub fn new(max_request_bytes: usize, network: &NetworkSettings) -> Limits {
        Limits {
            max_request_bytes,
            connection_bytes: network.connection_max_inflight_bytes,
            request_pool: network.queued_max_request_bytes.map(ByteBudget::new),
            idle: network.connections_max_idle,
            request_read_timeout: network.request_read_timeout,
            close_warnings: RateLimitedWarning::default(),
        }
    }
}

/// An answer to write, in its turn.
enum Outgoing {
    /// Encoded by the reader; `_bytes` holds its size in the connection's budget until written.
    /// A fetch answer's record sets are chunks shared with the log read, not copies.
    Frame {
        frame: Frame,
        _bytes: OwnedSemaphorePermit,
    },
    /// A produce waiting for durability; encoded by the writer.
    Later {
        api_key: ApiKey,
        version: i16,
        correlation_id: i32,
        answer: Pin<Box<dyn std::future::Future<Output = Option<ResponseKind>> + Send>>,
    },
}

/// What the reader and the writer of one connection tell each other about time.
struct Activity {
    /// Origin of `last_ms`.
    start: Instant,
    /// When a frame was last completely read or an answer completely written, in ms since
    /// `start`: the idle clock. An atomic store per request instead of a timer reset per read.
    last_ms: AtomicU64,
    /// Answers handed to the writer and not yet written: while there are any, the connection is
    /// not idle (the writer has its own no-progress bound).
    pending: AtomicUsize,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
            pending: AtomicUsize::new(0),
        }
    }

    fn touch(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// When the connection becomes idle if nothing happens meanwhile; `None`: beyond any clock.
    fn idle_deadline(&self, idle: Duration) -> Option<Instant> {
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.start.checked_add(last)?.checked_add(idle)
    }
}

/// Why the reader stopped.
enum Exit {
    /// Peer closed, shutdown, or the writer is gone: answers already started are still written.
    Drain,
    /// Timed out or bad input: the connection is dropped, unwritten answers with it.
    Drop,
}

pub async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    broker: Arc<Broker>,
    limits: Arc<Limits>,
    stopping: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let (reader, writer) = stream.into_split();
    let (tx, rx) = mpsc::channel(MAX_IN_FLIGHT);
    let budget = ByteBudget::new(limits.connection_bytes);
    let activity = Arc::new(Activity::new());
    let writer = tokio::spawn(write_answers(
        writer,
        rx,
        peer,
        budget.clone(),
        activity.clone(),
        limits.idle,
    ));
    let conn = Conn {
        peer,
        broker: &broker,
        limits: &limits,
        budget,
        activity,
    };
    match conn.read_requests(reader, stopping, tx).await {
        Exit::Drain => {
            let _ = writer.await;
        }
        Exit::Drop => writer.abort(),
    }
}

/// Reads exactly `len` bytes into `body` without zero-filling. The buffer grows with the bytes
/// that actually arrive (at most [`READ_CHUNK`] ahead, doubling), so a frame that claims a lot
/// and sends little costs little.
async fn read_body(
    reader: &mut (impl AsyncRead + Unpin),
    len: usize,
    body: &mut BytesMut,
) -> std::io::Result<()> {
    while body.len() < len {
        let want = (len - body.len()).min(READ_CHUNK.max(body.len()));
        body.reserve(want);
        if (&mut *reader).take(want as u64).read_buf(body).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
    }
    Ok(())
}

/// The reader's view of one connection.
struct Conn<'a> {
    peer: SocketAddr,
    broker: &'a Arc<Broker>,
    limits: &'a Limits,
    budget: ByteBudget,
    activity: Arc<Activity>,
}

impl Conn<'_> {
    async fn read_requests(
        &self,
        mut reader: OwnedReadHalf,
        mut stopping: watch::Receiver<bool>,
        tx: mpsc::Sender<Outgoing>,
    ) -> Exit {
        let peer = self.peer;
        // One timer for the connection's life, re-armed for each wait.
        let mut timer: Pin<Box<Sleep>> = Box::pin(tokio::time::sleep(Duration::ZERO));
        loop {
            // Between frames: the idle clock runs.
            let mut size = [0u8; 4];
            let mut got = 0;
            self.arm_idle(&mut timer);
            while got == 0 {
                tokio::select! {
                    r = reader.read(&mut size) => match r {
                        Ok(0) | Err(_) => return Exit::Drain, // peer closed
                        Ok(n) => got = n,
                    },
                    _ = timer.as_mut(), if self.limits.idle.is_some() => {
                        if self.is_idle() {
                            tracing::debug!(%peer, "closing idle connection (connections.max.idle.ms)");
                            return Exit::Drop;
                        }
                        self.arm_idle(&mut timer);
                    }
                    _ = stopping.wait_for(|s| *s) => return Exit::Drain,
                    _ = tx.closed() => return Exit::Drain, // the writer gave up
                }
            }
            // Inside a frame: it must be complete by the deadline.
            timer
                .as_mut()
                .reset(Instant::now() + self.limits.request_read_timeout);
            let body = tokio::select! {
                r = self.read_frame(&mut reader, &mut size, got) => r,
                _ = timer.as_mut() => {
                    self.closing(&format_args!(
                        "request frame not complete {:?} after its first byte (socket.request.read.timeout.ms)",
                        self.limits.request_read_timeout
                    ));
                    return Exit::Drop;
                }
            };
            let Some((body, frame_bytes, pool_bytes)) = body else {
                return Exit::Drop;
            };
            self.activity.touch();
            let Some(out) = self.handle(body, frame_bytes, pool_bytes).await else {
                return Exit::Drop;
            };
            if let Some(out) = out {
                self.activity.pending.fetch_add(1, Ordering::Relaxed);
                if tx.send(out).await.is_err() {
                    return Exit::Drain; // the writer gave up (peer gone or write stalled)
                }
            }
        }
    }

    /// Logs why this connection is being closed for its input: a warning when one is due,
    /// debug otherwise.
    fn closing(&self, why: &dyn std::fmt::Display) {
        let peer = self.peer;
        match self.limits.close_warnings.due(Instant::now()) {
            Some(held_back) => tracing::warn!(%peer, similar_since_last_warning = held_back,
                "closing connection: {why}"),
            None => tracing::debug!(%peer, "closing connection: {why}"),
        }
    }

    /// Re-arms the timer for the next idle check: the idle deadline, or one idle period from now
    /// when answers kept the connection busy past it.
    fn arm_idle(&self, timer: &mut Pin<Box<Sleep>>) {
        let now = Instant::now();
        let far = now + Duration::from_secs(24 * 3600);
        let next = match self.limits.idle {
            None => far,
            Some(idle) => match self.activity.idle_deadline(idle) {
                Some(d) if d > now => d,
                Some(_) => now.checked_add(idle).unwrap_or(far),
                None => far,
            },
        };
        timer.as_mut().reset(next);
    }

    fn is_idle(&self) -> bool {
        let due = self
            .limits
            .idle
            .and_then(|idle| self.activity.idle_deadline(idle));
        self.activity.pending.load(Ordering::Relaxed) == 0
            && due.is_some_and(|d| d <= Instant::now())
    }

    /// Reads the rest of the size and the body, reserving the frame's size from the
    /// connection's budget and the broker's pool first. `None`: the connection must close (bad
    /// size, cut short, budget closed); logged here.
    async fn read_frame(
        &self,
        reader: &mut OwnedReadHalf,
        size: &mut [u8; 4],
        got: usize,
    ) -> Option<(BytesMut, OwnedSemaphorePermit, Option<OwnedSemaphorePermit>)> {
        if reader.read_exact(&mut size[got..]).await.is_err() {
            return None; // peer closed inside the size
        }
        let len = match check_request_size(*size, self.limits.max_request_bytes) {
            Ok(len) => len,
            Err(e) => {
                self.closing(&format_args!("bad frame size: {e}"));
                return None;
            }
        };
        // Reserve before reading: the client's bytes stay in the socket until there is room.
        let frame_bytes = self.budget.reserve(len).await?;
        let pool_bytes = match &self.limits.request_pool {
            Some(pool) => Some(pool.reserve(len).await?),
            None => None,
        };
        let mut body = BytesMut::with_capacity(len.min(READ_CHUNK));
        if let Err(e) = read_body(reader, len, &mut body).await {
            self.closing(&format_args!("frame cut short: {e}"));
            return None;
        }
        Some((body, frame_bytes, pool_bytes))
    }

    /// Decodes and starts one request; an answer that is ready is encoded here and its size
    /// reserved. `None`: close the connection; `Some(None)`: nothing to send.
    async fn handle(
        &self,
        body: BytesMut,
        frame_bytes: OwnedSemaphorePermit,
        pool_bytes: Option<OwnedSemaphorePermit>,
    ) -> Option<Option<Outgoing>> {
        let peer = self.peer;
        let (api_key, version, correlation_id, reply) = match decode_request(body.freeze()) {
            Ok(request) => {
                let (api_key, version, correlation_id) = (
                    request.api_key,
                    request.version,
                    request.header.correlation_id,
                );
                tracing::trace!(%peer, ?api_key, version, correlation_id,
                    client_id = ?request.header.client_id, "request");
                let reply = handlers::begin(self.broker, request, peer).await;
                (api_key, version, correlation_id, reply)
            }
            // KIP-511: a v0 body with our range, so the client retries at a version we know.
            Err(RequestError::UnsupportedApiVersions { header }) => (
                ApiKey::ApiVersions,
                0,
                header.correlation_id,
                Reply::Now(Some(Box::new(ResponseKind::ApiVersions(
                    api_versions::handle(Some(ResponseError::UnsupportedVersion)),
                )))),
            ),
            Err(e) => {
                self.closing(&format_args!("bad request: {e}"));
                return None;
            }
        };
        // The request has been handled: its bytes go back to the broker and the connection.
        drop(pool_bytes);
        drop(frame_bytes);
        match reply {
            Reply::Now(None) => Some(None),
            Reply::Now(Some(response)) => {
                let frame = match encode_response(api_key, version, correlation_id, &response) {
                    Ok(f) => f,
                    Err(e) => {
                        tracing::error!(%peer, error = %e, "closing connection: response encoding failed");
                        return None;
                    }
                };
                drop(response);
                let bytes = self.budget.reserve(frame.len()).await?;
                Some(Some(Outgoing::Frame {
                    frame,
                    _bytes: bytes,
                }))
            }
            Reply::Later(answer) => Some(Some(Outgoing::Later {
                api_key,
                version,
                correlation_id,
                answer,
            })),
        }
    }
}

/// Closes the connection's budget when the writer ends, so a reader waiting for room stops.
struct CloseOnDrop(ByteBudget);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.close();
    }
}

async fn write_answers(
    writer: OwnedWriteHalf,
    mut rx: mpsc::Receiver<Outgoing>,
    peer: SocketAddr,
    budget: ByteBudget,
    activity: Arc<Activity>,
    stall: Option<Duration>,
) {
    let _close = CloseOnDrop(budget);
    // The buffer is allocated with the first answer: idle connections cost none.
    let Some(mut out) = rx.recv().await else {
        return;
    };
    let mut w = BufWriter::with_capacity(64 * 1024, writer);
    loop {
        let frame = match out {
            Outgoing::Frame { frame, _bytes } => Some((frame, Some(_bytes))),
            Outgoing::Later {
                api_key,
                version,
                correlation_id,
                answer,
            } => match answer.await {
                // acks=0 produce: Kafka sends nothing back.
                None => None,
                Some(response) => {
                    match encode_response(api_key, version, correlation_id, &response) {
                        Ok(f) => Some((f, None)),
                        Err(e) => {
                            tracing::error!(%peer, error = %e, "closing connection: response encoding failed");
                            return;
                        }
                    }
                }
            },
        };
        if let Some((frame, bytes)) = frame {
            if let Err(e) = write_with_progress(&mut w, &frame, stall).await {
                tracing::debug!(%peer, error = %e, "closing connection: write failed");
                return;
            }
            drop(bytes);
        }
        activity.touch();
        activity.pending.fetch_sub(1, Ordering::Relaxed);
        // Flush when nothing else is ready, so a burst of answers goes out in few writes.
        if rx.is_empty() {
            if let Err(e) = flush_with_progress(&mut w, stall).await {
                tracing::debug!(%peer, error = %e, "closing connection: write failed");
                return;
            }
        }
        match rx.recv().await {
            Some(next) => out = next,
            None => break,
        }
    }
    let _ = flush_with_progress(&mut w, stall).await;
}

/// Writes all of `frame`, failing when one write makes no progress for `stall` (a client that
/// stopped reading).
///
/// The chunks go out in vectored writes: through the `BufWriter` a frame smaller than its
/// buffer is gathered there (so a burst of small answers leaves in few writes), and a larger
/// one goes to the socket straight from its chunks, record sets included, with no copy in
/// between.
async fn write_with_progress(
    w: &mut (impl AsyncWrite + Unpin),
    frame: &Frame,
    stall: Option<Duration>,
) -> std::io::Result<()> {
    let mut slices: Vec<IoSlice<'_>> = frame.chunks().iter().map(|c| IoSlice::new(c)).collect();
    let mut bufs: &mut [IoSlice<'_>] = &mut slices;
    while !bufs.is_empty() {
        let n = match stall {
            Some(stall) => tokio::time::timeout(stall, w.write_vectored(bufs))
                .await
                .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??,
            None => w.write_vectored(bufs).await?,
        };
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut bufs, n);
    }
    Ok(())
}

async fn flush_with_progress(
    w: &mut (impl AsyncWrite + Unpin),
    stall: Option<Duration>,
) -> std::io::Result<()> {
    match stall {
        Some(stall) => tokio::time::timeout(stall, w.flush())
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?,
        None => w.flush().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// A frame that claims 100 MB and sends 10 bytes gets a buffer the size of what arrived
    /// plus a chunk, not of the claim.
    #[tokio::test]
    async fn body_buffer_grows_with_arrivals() {
        let (mut client, mut server) = tokio::io::duplex(1024 * 1024);
        client.write_all(&[7u8; 10]).await.unwrap();
        let mut body = BytesMut::with_capacity(READ_CHUNK);
        let cut = tokio::time::timeout(
            Duration::from_millis(50),
            read_body(&mut server, 100 << 20, &mut body),
        )
        .await;
        assert!(cut.is_err(), "the body cannot be complete");
        assert_eq!(body.len(), 10);
        assert!(body.capacity() <= 2 * READ_CHUNK, "{}", body.capacity());

        // The rest arrives: the whole frame is read, and the buffer stays near its size.
        let (mut client, mut server) = tokio::io::duplex(1024 * 1024);
        let len = 3 * 1024 * 1024 + 17;
        let writer = tokio::spawn(async move {
            let data: Vec<u8> = (0..len).map(|i| i as u8).collect();
            client.write_all(&data).await.unwrap();
            client
        });
        let mut body = BytesMut::with_capacity(READ_CHUNK);
        read_body(&mut server, len, &mut body).await.unwrap();
        let _client = writer.await.unwrap();
        assert_eq!(body.len(), len);
        assert!(body.iter().enumerate().all(|(i, b)| *b == i as u8));
        assert!(body.capacity() <= 2 * len, "{}", body.capacity());
    }

    /// A fetch answer made of several chunks (header, shared record sets) arrives whole and in
    /// order after a small answer still in the buffer, through partial writes: a duplex pipe
    /// (plain writes) and a TCP socket with a small send buffer (vectored writes).
    #[tokio::test]
    async fn chunked_frames_are_written_whole() {
        use bytes::Bytes;
        use kafka_protocol::messages::fetch_response::{
            FetchResponse, FetchableTopicResponse, PartitionData,
        };
        let records = |n: usize, seed: u8| -> Bytes {
            (0..n)
                .map(|i| (i as u8).wrapping_add(seed))
                .collect::<Vec<u8>>()
                .into()
        };
        let partitions = (0..3)
            .map(|i| {
                PartitionData::default()
                    .with_partition_index(i)
                    .with_records(Some(records(100_000 + i as usize, i as u8)))
            })
            .collect();
        let body = ResponseKind::Fetch(FetchResponse::default().with_responses(vec![
            FetchableTopicResponse::default().with_partitions(partitions),
        ]));
        let fetch = encode_response(ApiKey::Fetch, 16, 7, &body).unwrap();
        assert!(fetch.chunks().len() > 3, "{}", fetch.chunks().len());
        let small = ResponseKind::Fetch(FetchResponse::default());
        let small = encode_response(ApiKey::Fetch, 16, 6, &small).unwrap();
        let mut want = small.to_bytes().to_vec();
        want.extend_from_slice(&fetch.to_bytes());

        async fn send(w: impl AsyncWrite + Unpin, frames: &[&Frame]) {
            let mut w = BufWriter::with_capacity(64 * 1024, w);
            let stall = Some(Duration::from_secs(10));
            for f in frames {
                write_with_progress(&mut w, f, stall).await.unwrap();
            }
            flush_with_progress(&mut w, stall).await.unwrap();
            w.shutdown().await.unwrap();
        }
        async fn receive(mut r: impl AsyncRead + Unpin + Send + 'static) -> Vec<u8> {
            tokio::spawn(async move {
                let mut got = Vec::new();
                r.read_to_end(&mut got).await.unwrap();
                got
            })
            .await
            .unwrap()
        }

        let frames = [&small, &fetch];
        let (client, server) = tokio::io::duplex(4096);
        let (_, got) = tokio::join!(send(client, &frames), receive(server));
        assert!(
            got == want,
            "duplex: {} bytes, want {}",
            got.len(),
            want.len()
        );

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_send_buffer_size(4096).unwrap();
        let client = socket
            .connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        assert!(client.is_write_vectored());
        let (_, got) = tokio::join!(send(client, &frames), receive(server));
        assert!(got == want, "tcp: {} bytes, want {}", got.len(), want.len());
    }

    #[tokio::test]
    async fn budget_clamps_and_waits() {
        let budget = ByteBudget::new(1000);
        let a = budget.reserve(600).await.unwrap();
        assert_eq!(budget.available(), 400);
        // Larger than the whole budget: waits for all of it, then takes all of it.
        let waiting = tokio::spawn({
            let budget = budget.clone();
            async move { budget.reserve(5000).await.map(|p| p.num_permits()) }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        drop(a);
        assert_eq!(waiting.await.unwrap(), Some(1000));
        budget.close();
        assert!(budget.reserve(1).await.is_none());
    }
}
