//! The Sluice broker: a tokio server speaking the Kafka protocol over the storage engine
//! (`sluice-log`) and the cluster metadata (`sluice-meta`).
//!
//! # Layout
//! - [`config`]: broker settings by Kafka name ([`config::Settings`], with their sources) and
//!   typed ([`config::BrokerSettings`], built from them field by field); [`config::BrokerConfig`].
//! - [`append`]: what an append did ([`append::AppendOutcome`]) or why it failed.
//! - [`blocking`]: running disk-bound work off the reactor.
//! - [`broker`]: shared state (metadata image, controller, hosted partitions, fetch sessions,
//!   groups); start-up and shutdown.
//! - [`controller`]: every metadata decision (placement, leaders and epochs, producer-id blocks,
//!   config validation), written as records; handlers ask it.
//! - [`image`]: the immutable metadata image handlers read, and the publisher that swaps it and
//!   drives the replica manager from each delta.
//! - [`server`]: accept loop and graceful shutdown; [`connection`]: one client connection.
//! - [`handlers`]: one module per Kafka API family (produce, fetch, metadata, topics, ...).
//! - [`replica_manager`], [`partition`]: the partitions hosted here, their logs and high watermarks.
//! - [`replica_fetcher`]: the follower side of replication: one task per leader broker fetching
//!   this broker's follower partitions from it.
//! - [`replica_selector`]: KIP-392, which in-sync replica in a consumer's rack it should read
//!   from (pure).
//! - [`maintenance`]: background retention and compaction of every hosted log.
//! - [`purgatory`]: parked requests (long-polling fetches) woken by partition events.
//! - [`fetch_session`]: KIP-227 incremental fetch sessions.
//! - [`coordinator`]: consumer groups (the `sluice-group` machine driven by tokio) and committed
//!   offsets in `__consumer_offsets`.
//! - [`topic_config`]: topic configs, their broker synonyms and defaults, typed per topic.
//! - [`producer_ids`]: producer ids from controller-allocated blocks.
//! - [`producer_state`]: idempotent-producer sequence state of a partition.
//! - [`error`]: the one place Kafka error codes are chosen.

pub mod append;
pub mod blocking;
pub mod broker;
pub mod config;
pub mod connection;
pub mod controller;
pub mod coordinator;
pub mod error;
pub mod fetch_session;
pub mod handlers;
pub mod image;
pub mod lease;
pub mod maintenance;
pub mod partition;
pub mod peer_routes;
pub mod producer_ids;
pub mod producer_state;
pub mod purgatory;
pub mod replica_fetcher;
pub mod replica_manager;
pub mod replica_selector;
pub mod server;
pub mod throttle;
pub mod topic_config;

pub use broker::Broker;
pub use config::{BrokerConfig, BrokerSettings, Durability, Settings};
