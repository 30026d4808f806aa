//! One client connection: read a frame, decode, dispatch, write the response, repeat.
//!
//! Requests on a connection are handled one at a time, so responses go out in request order and
//! a pipelined produce stream is appended in the order it was sent (Kafka's own guarantee).
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
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::broker::Broker;
use crate::handlers::{self, api_versions};

pub async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    broker: Arc<Broker>,
    mut stopping: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let (mut reader, writer) = stream.into_split();
    let mut writer = BufWriter::new(writer);
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
        let mut body = BytesMut::zeroed(len);
        if let Err(e) = reader.read_exact(&mut body).await {
            tracing::warn!(%peer, error = %e, "closing connection: frame cut short");
            return;
        }
        let request = match decode_request(body.freeze()) {
            Ok(r) => r,
            Err(RequestError::UnsupportedApiVersions { header }) => {
                // KIP-511: a v0 body with our range, so the client retries at a version we know.
                let resp = ResponseKind::ApiVersions(api_versions::handle(Some(
                    ResponseError::UnsupportedVersion,
                )));
                match encode_response(ApiKey::ApiVersions, 0, header.correlation_id, &resp) {
                    Ok(frame) => {
                        if writer.write_all(&frame).await.is_err() || writer.flush().await.is_err()
                        {
                            return;
                        }
                    }
                    Err(e) => {
                        tracing::error!(%peer, error = %e, "encoding ApiVersions fallback failed");
                        return;
                    }
                }
                continue;
            }
            Err(e) => {
                tracing::warn!(%peer, error = %e, "closing connection: bad request");
                return;
            }
        };
        let (api_key, version, correlation_id) = (
            request.api_key,
            request.version,
            request.header.correlation_id,
        );
        let client_id = request
            .header
            .client_id
            .as_ref()
            .map(|c| c.as_str().to_string());
        tracing::trace!(%peer, ?api_key, version, correlation_id, client_id, "request");
        let Some(response) = handlers::dispatch(&broker, request, peer).await else {
            continue; // acks=0 produce: Kafka sends nothing back
        };
        let frame = match encode_response(api_key, version, correlation_id, &response) {
            Ok(f) => f,
            Err(e) => {
                tracing::error!(%peer, error = %e, "closing connection: response encoding failed");
                return;
            }
        };
        if writer.write_all(&frame).await.is_err() || writer.flush().await.is_err() {
            return;
        }
    }
}
