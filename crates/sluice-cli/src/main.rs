//! `sluice`: the broker (`serve`), the admin CLI, the console producer/consumer and the bench
//! tool, all in one binary.
//!
//! # Layout
//! - `serve`: start a broker.
//! - `client`: what every client command shares: `-b/--brokers`, `--json`, the rdkafka base
//!   config and the "can we reach the broker at all" check that turns a dead address into a clear
//!   error within seconds instead of librdkafka's endless retries.
//! - `table`: aligned text tables for the human-readable output.
//! - `topic`, `configs`: topic administration (`configs` holds the IncrementalAlterConfigs call
//!   rust-rdkafka does not wrap).
//! - `produce`, `consume`, `format`: the console clients; `format` is the kcat-style `-f` format.
//! - `group`, `cluster`: consumer-group administration and cluster information.
//! - `plan`, `reassign`: moving partitions between brokers (`cluster rebalance`,
//!   `cluster decommission`, `topic reassign`): the pure plan, and carrying it out.
//! - `dev`: `dev cluster`, a local multi-node cluster of child processes.
//! - `bench`: load generators (`bench produce|consume|e2e`) with throughput and latency reports.

mod bench;
mod client;
mod cluster;
mod configs;
mod consume;
mod dev;
mod format;
mod group;
mod kafka_rpc;
mod plan;
mod produce;
mod reassign;
mod serve;
mod table;
mod topic;

use clap::{Parser, Subcommand};

/// Sluice: a Kafka-compatible event-streaming broker and durable message queue.
#[derive(Parser)]
#[command(name = "sluice", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a broker (a single-node cluster by default, data in ./sluice-data).
    Serve(serve::ServeArgs),
    /// Create, list, describe, delete and configure topics.
    #[command(subcommand)]
    Topic(topic::TopicCommand),
    /// Produce one record per line of stdin.
    Produce(produce::ProduceArgs),
    /// Print records of a topic to stdout.
    Consume(consume::ConsumeArgs),
    /// List, describe, reset and delete consumer groups.
    #[command(subcommand)]
    Group(group::GroupCommand),
    /// Cluster information.
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
    /// Load generators: throughput and latency of produce, consume and end to end.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Development helpers: a local multi-node cluster in one command.
    #[command(subcommand)]
    Dev(dev::DevCommand),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // The broker logs at info by default; the client commands speak through stdout/stderr and
    // only want the logs when asked for with RUST_LOG.
    let default_filter = match cli.command {
        // openraft narrates every election and shutdown step at info.
        Command::Serve(_) | Command::Dev(_) => "info,openraft=warn",
        _ => "warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter)),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Dev(cmd) => dev::run(cmd),
        Command::Topic(cmd) => topic::run(cmd),
        Command::Produce(args) => produce::run(args),
        Command::Consume(args) => consume::run(args),
        Command::Group(cmd) => group::run(cmd),
        Command::Cluster(cmd) => cluster::run(cmd),
        Command::Bench(cmd) => bench::run(cmd),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
