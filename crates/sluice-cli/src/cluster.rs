//! `sluice cluster info`: brokers, controller, cluster id.

use clap::{Args, Subcommand};
use rdkafka::consumer::Consumer;
use serde::Serialize;

use crate::client::{self, ConnArgs};
use crate::table::Table;

#[derive(Subcommand)]
pub enum ClusterCommand {
    /// Show the brokers, the controller and the cluster id.
    Info(InfoArgs),
}

#[derive(Args)]
pub struct InfoArgs {
    #[command(flatten)]
    conn: ConnArgs,
}

#[derive(Serialize)]
struct BrokerInfo {
    id: i32,
    host: String,
    port: i32,
}

#[derive(Serialize)]
struct ClusterInfo {
    cluster_id: Option<String>,
    /// -1 when the broker does not report one.
    controller_id: i32,
    brokers: Vec<BrokerInfo>,
    cli_version: &'static str,
}

pub fn run(cmd: ClusterCommand) -> anyhow::Result<()> {
    match cmd {
        ClusterCommand::Info(a) => info(a),
    }
}

fn info(a: InfoArgs) -> anyhow::Result<()> {
    let brokers = &a.conn.brokers;
    let c = client::lone_consumer(brokers)?;
    let md = client::metadata(&c, brokers, None)?;
    let mut list: Vec<BrokerInfo> = md
        .brokers()
        .iter()
        .map(|b| BrokerInfo {
            id: b.id(),
            host: b.host().to_string(),
            port: b.port(),
        })
        .collect();
    list.sort_by_key(|b| b.id);
    let cluster_id = c.client().fetch_cluster_id(client::TIMEOUT);
    // rust-rdkafka does not wrap rd_kafka_controllerid; it reads the cached Metadata response.
    // SAFETY: the pointer is the live handle of `c`, which outlives the call.
    let controller_id = unsafe {
        rdkafka::bindings::rd_kafka_controllerid(
            c.client().native_ptr(),
            client::TIMEOUT.as_millis() as i32,
        )
    };
    let info = ClusterInfo {
        cluster_id,
        controller_id,
        brokers: list,
        cli_version: env!("CARGO_PKG_VERSION"),
    };
    if a.conn.json {
        return client::print_json(&info);
    }
    println!(
        "Cluster id: {}",
        info.cluster_id.as_deref().unwrap_or("(none)")
    );
    println!("Controller: {}", info.controller_id);
    println!("sluice CLI: {}", info.cli_version);
    println!();
    let mut t = Table::new(&["BROKER", "HOST", "PORT", "CONTROLLER"]);
    for b in &info.brokers {
        t.row(vec![
            b.id.to_string(),
            b.host.clone(),
            b.port.to_string(),
            if b.id == info.controller_id {
                "yes"
            } else {
                ""
            }
            .to_string(),
        ]);
    }
    t.print();
    Ok(())
}
