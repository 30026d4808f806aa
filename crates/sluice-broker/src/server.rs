//! The accept loop, connection limits and graceful shutdown.
//!
//! `run` is called by `sluice serve` and by tests alike. Each accepted socket takes a slot in
//! [`ConnectionSlots`] (`max.connections`, `max.connections.per.ip`); when none is free the
//! socket is closed at once and the refusal logged, at most once per
//! [`connection::WARN_EVERY`] so a flood does not flood the log. On shutdown it stops accepting, tells every connection to finish the
//! request in hand (parked fetches answer at once), waits for them (bounded), then flushes and
//! closes the logs and records a clean shutdown.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::broker::Broker;
use crate::connection::{self, Limits, RateLimitedWarning};

/// How long in-flight requests get to finish once shutdown starts.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn run(listener: TcpListener, broker: Arc<Broker>, shutdown: impl Future<Output = ()>) {
    let network = &broker.config.settings.network;
    let limits = Arc::new(Limits::new(
        broker.config.settings.socket_request_max_bytes,
        network,
    ));
    let slots = Arc::new(ConnectionSlots::new(
        network.max_connections,
        network.max_connections_per_ip,
    ));
    if let Some(files) = open_file_limit() {
        if network.max_connections as u64 >= files {
            tracing::warn!(
                max_connections = network.max_connections,
                open_file_limit = files,
                "max.connections is not below the open-file limit: accepts will fail with EMFILE \
                 before it is reached; raise `ulimit -n` or lower max.connections"
            );
        }
    }
    let refused = RateLimitedWarning::default();
    let accept_failed = RateLimitedWarning::default();
    let mut connections = JoinSet::new();
    let timers = tokio::spawn(
        broker
            .groups
            .clone()
            .run_timers(broker.stopping.subscribe()),
    );
    let maintenance = tokio::spawn(crate::maintenance::run(broker.clone()));
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => match slots.take(peer.ip()) {
                    Ok(slot) => {
                        tracing::debug!(%peer, "connection accepted");
                        let serve = connection::serve(
                            stream,
                            peer,
                            broker.clone(),
                            limits.clone(),
                            broker.stopping.subscribe(),
                        );
                        connections.spawn(async move {
                            serve.await;
                            drop(slot);
                        });
                    }
                    Err(refusal) => {
                        drop(stream);
                        if let Some(more) = refused.due(Instant::now()) {
                            tracing::warn!(%peer, reason = %refusal, refused_since_last_warning = more,
                                "connection refused");
                        }
                    }
                },
                Err(e) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    if let Some(more) = accept_failed.due(Instant::now()) {
                        tracing::warn!(error = %e, failed_since_last_warning = more, "accept failed");
                    }
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
    // Controlled shutdown: fenced now, so the cluster moves on without waiting a session out.
    broker.leave_cluster().await;
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

/// Why a new connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `max.connections` are open.
    Total(usize),
    /// `max.connections.per.ip` are open from this address.
    PerIp(usize),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Total(n) => write!(f, "max.connections ({n}) reached"),
            Refusal::PerIp(n) => write!(f, "max.connections.per.ip ({n}) reached"),
        }
    }
}

/// Open connections, in total and per client address.
pub struct ConnectionSlots {
    max: usize,
    max_per_ip: usize,
    /// Taken slots: (total, per address). Touched twice per connection (open, close), never
    /// across an await.
    open: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

/// One connection's place; given back when dropped.
pub struct Slot {
    slots: Arc<ConnectionSlots>,
    ip: IpAddr,
}

impl ConnectionSlots {
    pub fn new(max: usize, max_per_ip: usize) -> ConnectionSlots {
        ConnectionSlots {
            max,
            max_per_ip,
            open: Mutex::new((0, HashMap::new())),
        }
    }

    pub fn take(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, Refusal> {
        let mut open = self.open.lock().expect("connection slots lock");
        let (total, per_ip) = &mut *open;
        if *total >= self.max {
            return Err(Refusal::Total(self.max));
        }
        let here = per_ip.entry(ip).or_insert(0);
        if *here >= self.max_per_ip {
            return Err(Refusal::PerIp(self.max_per_ip));
        }
        *here += 1;
        *total += 1;
        Ok(Slot {
            slots: self.clone(),
            ip,
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.lock().expect("connection slots lock").0
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.slots.open.lock().expect("connection slots lock");
        let (total, per_ip) = &mut *open;
        *total -= 1;
        if let Some(here) = per_ip.get_mut(&self.ip) {
            *here -= 1;
            if *here == 0 {
                per_ip.remove(&self.ip);
            }
        }
    }
}

/// The soft limit on open files (`/proc/self/limits`, Linux); `None` if unknown or unlimited.
fn open_file_limit() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connection::WARN_EVERY;

    #[test]
    fn slots_bound_total_and_per_address() {
        let slots = Arc::new(ConnectionSlots::new(3, 2));
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let a1 = slots.take(a).unwrap();
        let _a2 = slots.take(a).unwrap();
        assert_eq!(slots.take(a).err(), Some(Refusal::PerIp(2)));
        let _b1 = slots.take(b).unwrap();
        assert_eq!(slots.take(b).err(), Some(Refusal::Total(3)));
        assert_eq!(slots.open(), 3);
        drop(a1);
        assert_eq!(slots.open(), 2);
        let _a3 = slots.take(a).unwrap();
        assert_eq!(slots.take(a).err(), Some(Refusal::Total(3)));
    }

    #[test]
    fn warnings_are_rate_limited() {
        let w = RateLimitedWarning::default();
        let t0 = Instant::now();
        assert_eq!(w.due(t0), Some(0));
        assert_eq!(w.due(t0 + Duration::from_secs(1)), None);
        assert_eq!(w.due(t0 + Duration::from_secs(9)), None);
        assert_eq!(w.due(t0 + WARN_EVERY), Some(2));
        assert_eq!(w.due(t0 + WARN_EVERY), None);
    }

    #[test]
    fn reads_the_open_file_limit() {
        if std::path::Path::new("/proc/self/limits").exists() {
            assert!(open_file_limit().is_some_and(|n| n > 0));
        }
    }
}
