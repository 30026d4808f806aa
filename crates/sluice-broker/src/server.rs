//! The accept loop and graceful shutdown.
//!
//! `run` is called by `sluice serve` and by tests alike. On shutdown it stops accepting, tells
//! every connection to finish the request in hand (parked fetches answer at once), waits for
//! them (bounded), then flushes and closes the logs and records a clean shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::broker::Broker;
use crate::connection;

/// How long in-flight requests get to finish once shutdown starts.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn run(listener: TcpListener, broker: Arc<Broker>, shutdown: impl Future<Output = ()>) {
    let mut connections = JoinSet::new();
    let timers = tokio::spawn(broker.groups.clone().run_timers(broker.clone()));
    let maintenance = tokio::spawn(crate::maintenance::run(broker.clone()));
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    tracing::debug!(%peer, "connection accepted");
                    connections.spawn(connection::serve(stream, peer, broker.clone(), broker.stopping.subscribe()));
                }
                Err(e) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            // Reap finished connections so the set does not grow without bound.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            _ = &mut shutdown => break,
        }
    }
    tracing::info!(
        connections = connections.len(),
        "shutting down: draining connections"
    );
    drop(listener);
    broker.stopping.send_replace(true);
    let _ = timers.await;
    let _ = maintenance.await;
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!("connections did not finish in time; closing them");
        connections.abort_all();
    }
    let b = broker.clone();
    let _ = tokio::task::spawn_blocking(move || b.shutdown()).await;
}
