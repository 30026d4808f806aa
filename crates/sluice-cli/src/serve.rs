//! `sluice serve`: start a broker and run it until SIGTERM/SIGINT.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, ValueEnum};
use sluice_broker::config::ClusterConfig;
use sluice_broker::{Broker, BrokerConfig, Durability, Settings};

#[derive(Clone, Copy, ValueEnum)]
enum DurabilityArg {
    /// Acknowledge produces only after fsync (group commit). Consumers see only fsynced data.
    Fsync,
    /// Acknowledge after the write reaches the page cache (Kafka's default behaviour).
    Relaxed,
}

#[derive(Args)]
pub struct ServeArgs {
    /// Address the Kafka listener binds to.
    #[arg(long, default_value = "127.0.0.1:9092", value_name = "HOST:PORT")]
    listen: SocketAddr,
    /// Address Metadata tells clients to connect to (default: the listen address).
    #[arg(long, value_name = "HOST:PORT")]
    advertised_listener: Option<String>,
    /// Directory holding the logs and the cluster metadata.
    #[arg(long, default_value = "./sluice-data", value_name = "DIR")]
    data_dir: PathBuf,
    /// This broker's node id.
    #[arg(long, default_value_t = 1)]
    node_id: i32,
    /// TOML file of Kafka broker settings (e.g. `num.partitions = 3`).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// A Kafka broker setting, `key=value`; repeatable; wins over --config.
    #[arg(long = "override", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
    /// When acknowledged produces are durable.
    #[arg(long, value_enum, default_value = "fsync")]
    durability: DurabilityArg,
    /// Address of this node's controller listener (Raft, broker registration and heartbeats;
    /// never clients). A voter's defaults to its entry in --voters.
    #[arg(long, value_name = "HOST:PORT")]
    controller_listen: Option<SocketAddr>,
    /// The controller quorum: `ID@HOST:PORT,...` (each voter's controller listener). Without
    /// it the node is a cluster of one.
    #[arg(long, value_name = "ID@HOST:PORT,...")]
    voters: Option<String>,
    /// `broker,controller` (the default: a voter, combined mode) or `broker` (follows the
    /// metadata without voting; for brokers added to a running cluster).
    #[arg(long, value_name = "ROLES")]
    roles: Option<String>,
    /// This broker's rack, for rack-aware replica placement.
    #[arg(long, value_name = "RACK")]
    rack: Option<String>,
    /// Test only: answer acks=all before the followers have the records, so a leader failure
    /// loses acknowledged writes. For the chaos harness to show it catches that; never use it.
    #[arg(long, hide = true)]
    unsafe_test_ack_before_replication: bool,
    /// Test only: `ADDR=VIA`, dial VIA wherever another node's ADDR (controller address or
    /// advertised listener) would be dialed; repeatable. For a fault-injection harness that
    /// puts a proxy on each link between two nodes.
    #[arg(long = "peer-route", hide = true, value_name = "ADDR=VIA")]
    peer_routes: Vec<String>,
}

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let file_text = match &args.config {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("reading config file {}", path.display()))?,
        ),
        None => None,
    };
    let settings = Settings::load(file_text.as_deref(), &args.overrides)?;
    let durability = match args.durability {
        DurabilityArg::Fsync => Durability::Fsync,
        DurabilityArg::Relaxed => Durability::Relaxed,
    };
    let mut config = BrokerConfig::new(
        args.node_id,
        args.listen,
        args.advertised_listener.as_deref(),
        args.data_dir,
        durability,
        &settings,
    )?;
    if args.unsafe_test_ack_before_replication {
        tracing::error!(
            "UNSAFE TEST SWITCH: acks=all is answered before replication; a leader failure \
             WILL lose acknowledged writes"
        );
        config.unsafe_ack_before_replication = true;
    }
    config.cluster = ClusterConfig::new(
        args.node_id,
        args.controller_listen,
        args.voters.as_deref(),
        args.roles.as_deref(),
        args.rack,
    )?;
    config.cluster.peer_routes = sluice_broker::peer_routes::PeerRoutes::parse(&args.peer_routes)?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("sluice")
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let listen = config.listen;
        // The client listener is bound only once the broker is registered and unfenced.
        let broker = tokio::select! {
            b = Broker::open(config) => b.context("starting the broker")?,
            _ = shutdown_signal() => {
                tracing::info!("stopped before the broker joined the cluster");
                return anyhow::Ok(());
            }
        };
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("binding {listen}"))?;
        tracing::info!(
            listen = %listen,
            advertised = %format!("{}:{}", broker.config.advertised_host, broker.config.advertised_port),
            node_id = broker.config.node_id,
            durability = ?broker.config.durability,
            version = env!("CARGO_PKG_VERSION"),
            "sluice broker started"
        );
        let fatal = std::sync::Mutex::new(None);
        let stop = async {
            tokio::select! {
                _ = shutdown_signal() => {}
                why = broker.fatal() => {
                    *fatal.lock().unwrap() = Some(why);
                }
            }
        };
        sluice_broker::server::run(listener, broker.clone(), stop).await;
        if let Some(why) = fatal.into_inner().unwrap() {
            anyhow::bail!(why);
        }
        tracing::info!("sluice broker stopped");
        anyhow::Ok(())
    })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM");
            return std::future::pending().await;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
    }
}
