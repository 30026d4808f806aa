//! Chaos harness for Sluice (issue 12): start real `sluice` processes on free loopback ports,
//! each behind a fault-injecting TCP proxy, run real Kafka clients against them while a fault
//! schedule breaks them, record every operation, and check the history for lost, duplicated,
//! inconsistent or reordered records. `docs/chaos.md` tells how to run it (`scripts/chaos`).
//!
//! # Layout
//! - [`proxy`]: [`Proxy`], a tokio TCP proxy with a run-time [`Fault`] per [`Direction`]
//!   (`Pass`, `Delay`, `Drop`, `BlackHole`, `Cut`), `heal`, and [`ProxyStats`] counters that
//!   tests wait on.
//! - [`process`]: [`Node`], one `sluice serve` child (binary from `SLUICE_BIN` or the cargo
//!   target dir) with its data dir, listen port and client-link proxy, whose address it
//!   advertises; `kill9`, `pause`/`resume` (SIGSTOP/SIGCONT), `terminate` (SIGTERM, bounded),
//!   `restart`; readiness by an ApiVersions exchange; `check_alive` tells a crash from a kill.
//! - [`probe`]: hand-written Kafka exchanges: [`api_versions`] (does it answer?),
//!   [`metadata_brokers`] (what does it advertise?) and [`metadata_leaders`] (who leads each
//!   partition, who is the controller?).
//! - [`cluster`]: [`Cluster`], N nodes whose per-node arguments are built from every node's
//!   addresses before any starts; [`multi_node_args`] builds the multi-node flags.
//! - [`history`]: the [`History`], an append-only, thread-safe log of produces, reads (and
//!   where readers start), commits, faults and heals with op ids and times, saved as JSON lines.
//! - [`checker`]: [`check`], pure over a history and the final log of every partition; a
//!   [`Report`] of [`Anomaly`]s per partition and [`Check`], ending in `N passed, M failed`.
//! - [`workload`]: rdkafka producers (idempotent or not, `acks=all`/`acks=1`), assigned readers
//!   and committing group members on their own threads, recording into the history; the final
//!   read.
//! - [`schedule`]: seeded random and named fault [`Schedule`](schedule::Schedule)s, and the loop
//!   that plays one against a cluster (inject, hold, heal, recover), recording each fault.
//! - [`run`]: one whole run (cluster, topic, workload, schedule, final read, checker, saved
//!   evidence), shared by the `sluice-chaos` binary (`src/main.rs`) and the gate test.
//!
//! All waits are polls with deadlines; the only sleeps are the schedule's own hold and
//! recovery times. Processes are killed and proxies stopped on drop.
//!
//! # Not yet (rest of issue 12)
//! - Multi-node clusters: `sluice serve` has no `--controller-listen`/`--voters` yet, so the
//!   runner defaults to one node; [`multi_node_args`] is used for `--nodes` > 1 once it has.
//!   Then: a controller-link proxy per ordered node pair (built into each node's `--voters`),
//!   and broker<->broker proxies, which need a way to make a broker dial a peer through a
//!   per-pair address instead of the peer's advertised one. Until then "leader isolation" cuts
//!   only the leader's client link.
//! - The planted-fault demonstration (a test-only switch acknowledging `acks=all` early, caught
//!   by `leader-kill`) and the ten-minute random run with its figures in the docs: both need
//!   replication.

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
