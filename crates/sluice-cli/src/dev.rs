//! `sluice dev cluster`: a local N-node cluster in one command, for trying things out and for
//! tests. Each node is a child `sluice serve` process of this same binary, combined broker and
//! controller, on consecutive loopback ports, with its own data directory and log file.
//! Ctrl-C (or SIGTERM) stops them all.

use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};

#[derive(Subcommand)]
pub enum DevCommand {
    /// Start a local cluster of N nodes (combined broker + controller), until Ctrl-C.
    Cluster(ClusterArgs),
}

#[derive(Args)]
pub struct ClusterArgs {
    /// How many nodes.
    #[arg(long, default_value_t = 3)]
    nodes: u16,
    /// Node i (from 1) listens for clients on P + 100*(i-1) and for the controller quorum on
    /// P + 100*(i-1) + 1.
    #[arg(long, default_value_t = 9092)]
    base_port: u16,
    /// Parent of the nodes' data directories (`node-1`, ...) and logs (`node-1.log`, ...).
    #[arg(long, default_value = "./sluice-dev-cluster", value_name = "DIR")]
    data_dir: PathBuf,
    /// A Kafka broker setting for every node, `key=value`; repeatable.
    #[arg(long = "override", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
}

pub fn run(cmd: DevCommand) -> anyhow::Result<()> {
    match cmd {
        DevCommand::Cluster(a) => cluster(a),
    }
}

struct Children(Vec<(u16, Child)>);

impl Drop for Children {
    fn drop(&mut self) {
        for (_, child) in &mut self.0 {
            // SIGTERM first: each node shuts down cleanly.
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
        }
        for (id, child) in &mut self.0 {
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            loop {
                match child.try_wait() {
                    Ok(Some(_)) => break,
                    Ok(None) if std::time::Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(50))
                    }
                    _ => {
                        eprintln!("node {id} did not stop in time; killing it");
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                }
            }
        }
    }
}

fn cluster(a: ClusterArgs) -> anyhow::Result<()> {
    anyhow::ensure!(a.nodes >= 1, "--nodes must be at least 1");
    let last = a.base_port as u32 + 100 * (a.nodes as u32 - 1) + 1;
    anyhow::ensure!(
        last <= u16::MAX as u32,
        "--base-port {} is too high for {} nodes",
        a.base_port,
        a.nodes
    );
    let exe = std::env::current_exe().context("finding the sluice binary")?;
    std::fs::create_dir_all(&a.data_dir)
        .with_context(|| format!("creating {}", a.data_dir.display()))?;
    let port = |i: u16| a.base_port + 100 * (i - 1);
    let voters = (1..=a.nodes)
        .map(|i| format!("{i}@127.0.0.1:{}", port(i) + 1))
        .collect::<Vec<_>>()
        .join(",");
    let bootstrap = (1..=a.nodes)
        .map(|i| format!("127.0.0.1:{}", port(i)))
        .collect::<Vec<_>>()
        .join(",");

    let mut children = Children(Vec::new());
    for i in 1..=a.nodes {
        let dir = a.data_dir.join(format!("node-{i}"));
        let log_path = a.data_dir.join(format!("node-{i}.log"));
        let log =
            File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
        let mut cmd = Command::new(&exe);
        cmd.arg("serve")
            .args(["--node-id", &i.to_string()])
            .args(["--listen", &format!("127.0.0.1:{}", port(i))])
            .args(["--controller-listen", &format!("127.0.0.1:{}", port(i) + 1)])
            .args(["--voters", &voters])
            .arg("--data-dir")
            .arg(&dir);
        for o in &a.overrides {
            cmd.args(["--override", o]);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting node {i}"))?;
        println!(
            "node {i}: kafka 127.0.0.1:{}  controller 127.0.0.1:{}  data {}  log {}",
            port(i),
            port(i) + 1,
            dir.display(),
            log_path.display()
        );
        children.0.push((i, child));
    }
    println!("bootstrap: {bootstrap}");
    println!("Ctrl-C stops the cluster.");

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let exited = runtime.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let mut poll = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => return anyhow::Ok(None),
                _ = term.recv() => return anyhow::Ok(None),
                _ = poll.tick() => {
                    for (id, child) in &mut children.0 {
                        if let Ok(Some(status)) = child.try_wait() {
                            return anyhow::Ok(Some((*id, status)));
                        }
                    }
                }
            }
        }
    })?;
    match exited {
        None => {
            println!("stopping the cluster");
            drop(children);
            Ok(())
        }
        Some((id, status)) => {
            drop(children);
            anyhow::bail!(
                "node {id} exited ({status}); see {}",
                a.data_dir.join(format!("node-{id}.log")).display()
            )
        }
    }
}
