//! One client connection: a reader that decodes and starts requests in order, and a writer that
//! sends their answers in the same order.
//!
//! Requests are *started* one at a time, in order: a produce is validated and appended before
//! the next request is read, so a pipelined produce stream lands in the log in the order it was
//! sent. Only the wait for durability is deferred ([`handlers::Reply::Later`]): the reader goes
//! on with the next request while the writer waits for the oldest answer, so several produce
//! requests of one connection share an fsync instead of paying one each. Answers are written in
//! request order (Kafka's guarantee); at most [`MAX_IN_FLIGHT`] wait, which bounds memory.
//! Connections run in parallel with each other.
//!
//! Bad input never takes the broker down: an oversized or negative frame size, an unknown API
//! key, an unsupported version or an undecodable body closes *this* connection with a warning.
//! The one exception is ApiVersions at an unknown version, which is answered (KIP-511).

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use kafka_protocol::messages::{ApiKey, ResponseKind};
use kafka_protocol::ResponseError;
use sluice_protocol::frame::check_request_size;
use sluice_protocol::request::{decode_request, RequestError};
use sluice_protocol::response::encode_response;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};

use crate::broker::Broker;
use crate::handlers::{self, api_versions, Reply};

/// Requests of one connection that may be started but not yet answered.
pub const MAX_IN_FLIGHT: usize = 64;

/// An answer to write, in its turn.
struct Outgoing {
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    reply: Reply,
}

pub async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    broker: Arc<Broker>,
    stopping: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let (reader, writer) = stream.into_split();
    let (tx, rx) = mpsc::channel(MAX_IN_FLIGHT);
    let writer = tokio::spawn(write_answers(writer, rx, peer));
    read_requests(reader, peer, &broker, stopping, tx).await;
    // The reader is done (peer closed, bad input or shutdown); answers already started are
    // still written.
    let _ = writer.await;
}

/// Reads exactly `len` bytes without zero-filling a buffer first.
async fn read_body(reader: &mut (impl AsyncRead + Unpin), len: usize) -> std::io::Result<BytesMut> {
    let mut body = BytesMut::with_capacity(len);
    while body.len() < len {
        let want = (len - body.len()) as u64;
        if (&mut *reader).take(want).read_buf(&mut body).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
    }
    Ok(body)
}

async fn read_requests(
    mut reader: OwnedReadHalf,
    peer: SocketAddr,
    broker: &Arc<Broker>,
    mut stopping: watch::Receiver<bool>,
    tx: mpsc::Sender<Outgoing>,
) {
    let limit = broker.config.socket_request_max_bytes;
    loop {
        let mut size = [0u8; 4];
        tokio::select! {
            r = reader.read_exact(&mut size) => {
                if r.is_err() {
                    return; // peer closed
                }
            }
            _ = stopping.wait_for(|s| *s) => return,
        }
        let len = match check_request_size(size, limit) {
            Ok(len) => len,
            Err(e) => {
                tracing::warn!(%peer, error = %e, "closing connection: bad frame size");
                return;
            }
        };
        let body = match read_body(&mut reader, len).await {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(%peer, error = %e, "closing connection: frame cut short");
                return;
            }
        };
        let out = match decode_request(body.freeze()) {
            Ok(request) => {
                let (api_key, version, correlation_id) = (
                    request.api_key,
                    request.version,
                    request.header.correlation_id,
                );
                tracing::trace!(%peer, ?api_key, version, correlation_id,
                    client_id = ?request.header.client_id, "request");
                Outgoing {
                    api_key,
                    version,
                    correlation_id,
                    reply: handlers::begin(broker, request, peer).await,
                }
            }
            // KIP-511: a v0 body with our range, so the client retries at a version we know.
            Err(RequestError::UnsupportedApiVersions { header }) => Outgoing {
                api_key: ApiKey::ApiVersions,
                version: 0,
                correlation_id: header.correlation_id,
                reply: Reply::Now(Some(Box::new(ResponseKind::ApiVersions(
                    api_versions::handle(Some(ResponseError::UnsupportedVersion)),
                )))),
            },
            Err(e) => {
                tracing::warn!(%peer, error = %e, "closing connection: bad request");
                return;
            }
        };
        if tx.send(out).await.is_err() {
            return; // the writer gave up (peer gone or encoding failure)
        }
    }
}

async fn write_answers(writer: OwnedWriteHalf, mut rx: mpsc::Receiver<Outgoing>, peer: SocketAddr) {
    let mut writer = BufWriter::with_capacity(64 * 1024, writer);
    while let Some(out) = rx.recv().await {
        let response = match out.reply {
            Reply::Now(r) => r.map(|b| *b),
            Reply::Later(pending) => pending.await,
        };
        // acks=0 produce: Kafka sends nothing back.
        if let Some(response) = response {
            let frame = match encode_response(
                out.api_key,
                out.version,
                out.correlation_id,
                &response,
            ) {
                Ok(f) => f,
                Err(e) => {
                    tracing::error!(%peer, error = %e, "closing connection: response encoding failed");
                    return;
                }
            };
            if writer.write_all(&frame).await.is_err() {
                return;
            }
        }
        // Flush when nothing else is ready, so a burst of answers goes out in few writes.
        if rx.is_empty() && writer.flush().await.is_err() {
            return;
        }
    }
    let _ = writer.flush().await;
}
