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
//!   addresses before any starts; [`Cluster::start_multi`] adds a proxy on every link between
//!   two nodes (controller and replication, per ordered pair, dialed through the hidden
//!   `serve --peer-route`), and [`Cluster::isolate`] cuts a node off from its peers while its
//!   clients still reach it.
//! - [`history`]: the [`History`], an append-only, thread-safe log of produces, reads (and
//!   where readers start), commits, faults and heals with op ids and times, saved as JSON lines.
//! - [`checker`]: [`check`], pure over a history and the final log of every partition; a
//!   [`Report`] of [`Anomaly`]s per partition and [`Check`], ending in `N passed, M failed`.
//! - [`workload`]: rdkafka producers (idempotent or not, `acks=all`/`acks=1`), assigned readers
//!   and committing group members on their own threads, recording into the history; the final
//!   read.
//! - [`schedule`]: seeded random and named fault [`Schedule`](schedule::Schedule)s, and the loop
//!   that plays one against a cluster (inject, hold, heal, recover), recording each fault.
//! - [`writers`]: the producer id and epoch of every record of the final log, read with raw
//!   Fetches, so the checker can tell a duplicate the broker should have caught from
//!   librdkafka's re-send under a new epoch after a message timeout.
//! - [`run`]: one whole run (cluster, topic, workload, schedule, final read, checker, saved
//!   evidence), shared by the `sluice-chaos` binary (`src/main.rs`) and the gate test.
//!
//! All waits are polls with deadlines; the only sleeps are the schedule's own hold and
//! recovery times. Processes are killed and proxies stopped on drop.
//!
//! # Not yet (rest of issue 12)
//! - The ten-minute random run without anomalies: the last one found two duplicates from an
//!   idempotent producer across an epoch bump no message timeout explains, at a SIGTERM
//!   handover (producer state on new leaders, issue 14); see `docs/chaos.md`.

pub mod checker;
pub mod cluster;
pub mod history;
pub mod probe;
pub mod process;
pub mod proxy;
pub mod run;
pub mod schedule;
pub mod workload;
pub mod writers;

pub use checker::{check, Anomaly, Check, FinalLog, Report};
pub use cluster::{Cluster, LinkKind, NodeAddrs};
pub use history::{Acks, CommitOutcome, Entry, History, Op, ProduceOutcome};
pub use probe::{
    api_versions, metadata_brokers, metadata_leaders, AdvertisedBroker, Leadership, ProbeError,
};
pub use process::{free_port, sluice_bin, Node, NodeError};
pub use proxy::{Direction, Fault, Faults, Proxy, ProxyStats};
