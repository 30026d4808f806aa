//! Chaos harness for Sluice: start real `sluice` processes on free loopback ports, each behind
//! a fault-injecting TCP proxy, and break them (issue 12, first building blocks).
//!
//! # Layout
//! - [`proxy`]: [`Proxy`], a tokio TCP proxy with a run-time [`Fault`] per [`Direction`]
//!   (`Pass`, `Delay`, `Drop`, `BlackHole`, `Cut`), `heal`, and [`ProxyStats`] counters that
//!   tests wait on.
//! - [`process`]: [`Node`], one `sluice serve` child (binary from `SLUICE_BIN` or the cargo
//!   target dir) with its data dir, listen port and client-link proxy, whose address it
//!   advertises; `kill9`, `pause`/`resume` (SIGSTOP/SIGCONT), `terminate` (SIGTERM, bounded),
//!   `restart`; readiness by an ApiVersions exchange.
//! - [`probe`]: hand-written Kafka v0 exchanges: [`api_versions`] (does it answer?) and
//!   [`metadata_brokers`] (what does it advertise?).
//! - [`cluster`]: [`Cluster`], N nodes whose per-node arguments are built from every node's
//!   addresses before any starts.
//!
//! All waits are polls with deadlines; nothing sleeps to let things settle. Processes are
//! killed and proxies stopped on drop.
//!
//! # Not yet (rest of issue 12)
//! - Multi-node clusters: `sluice serve` has no `--controller-listen`/`--voters` yet, so N > 1
//!   is N separate one-node clusters. Then: a controller-link proxy per ordered node pair (built
//!   into each node's `--voters`), and broker<->broker proxies, which need a way to make a
//!   broker dial a peer through a per-pair address instead of the peer's advertised one.
//! - The workload (producers/consumers recording what they did), the history checker (lost,
//!   duplicated, reordered, inconsistent records), fault schedules (rolling restarts, random
//!   partitions) and the `scripts/chaos` runner.

pub mod checker;
pub mod cluster;
pub mod history;
pub mod probe;
pub mod process;
pub mod proxy;
pub mod run;
pub mod schedule;
pub mod workload;

pub use checker::{check, Anomaly, Check, FinalLog, Report};
pub use cluster::{multi_node_args, Cluster, NodeAddrs};
pub use history::{Acks, CommitOutcome, Entry, History, Op, ProduceOutcome};
pub use probe::{
    api_versions, metadata_brokers, metadata_leaders, AdvertisedBroker, Leadership, ProbeError,
};
pub use process::{free_port, sluice_bin, Node, NodeError};
pub use proxy::{Direction, Fault, Faults, Proxy, ProxyStats};
