//! `sluice-chaos`: run a fault schedule against real `sluice` processes under a recorded
//! workload, check the history, and exit non-zero on any anomaly (see docs/chaos.md).
//!
//! Exit status: 0 no anomaly, 1 anomalies found, 2 the run itself failed.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use sluice_chaos::run::{recheck, run, RunConfig};
use sluice_chaos::schedule::NAMES;

#[derive(Parser)]
#[command(
    name = "sluice-chaos",
    about = "Fault injection + history checker for sluice"
)]
struct Args {
    /// How long the fault schedule plays (fractions allowed).
    #[arg(long, default_value_t = 1.0)]
    minutes: f64,
    /// Seed of the random schedules; default: from the clock (printed, to replay the run).
    #[arg(long)]
    seed: Option<u64>,
    /// Nodes in the cluster. More than 1 needs the multi-node `sluice serve` flags.
    #[arg(long, default_value_t = 1)]
    nodes: usize,
    /// Fault schedule: random, process-faults, leader-kill, controller-kill, leader-isolation,
    /// follower-pause, rolling-restart, reassign.
    #[arg(long, default_value = "random")]
    schedule: String,
    /// Partitions of the workload's topic.
    #[arg(long, default_value_t = 4)]
    partitions: i32,
    /// Where the evidence goes: history.jsonl, final-log.json, report.txt, node-N.log
    /// (default: a directory under the system temp dir named after the seed).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Start the nodes with a planted fault (acks=all answered before the followers have the
    /// records): a leader-kill schedule must then report lost writes.
    #[arg(long)]
    planted_fault: bool,
    /// Only re-check a saved run in DIR (no cluster is started).
    #[arg(long, value_name = "DIR")]
    recheck: Option<PathBuf>,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,sluice_chaos=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match real_main() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("sluice-chaos: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// `Ok(clean)`.
fn real_main() -> anyhow::Result<bool> {
    let args = Args::parse();
    if let Some(dir) = &args.recheck {
        let report = recheck(dir)?;
        println!("{report}");
        return Ok(report.is_clean());
    }
    if !NAMES.contains(&args.schedule.as_str()) {
        anyhow::bail!(
            "unknown schedule {:?}; known: {}",
            args.schedule,
            NAMES.join(", ")
        );
    }
    if !(args.minutes > 0.0 && args.minutes.is_finite()) || args.nodes == 0 || args.partitions < 1 {
        anyhow::bail!("--minutes, --nodes and --partitions must be positive");
    }
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    });
    let out = args
        .out
        .unwrap_or_else(|| std::env::temp_dir().join(format!("sluice-chaos-seed-{seed}")));
    let cfg = RunConfig {
        duration: Duration::from_secs_f64(args.minutes * 60.0),
        seed,
        nodes: args.nodes,
        schedule: args.schedule.clone(),
        partitions: args.partitions,
        out: Some(out.clone()),
        planted_fault: args.planted_fault,
    };
    eprintln!(
        "sluice-chaos: schedule {} seed {seed} nodes {} for {} min; evidence in {}",
        cfg.schedule,
        cfg.nodes,
        args.minutes,
        out.display()
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let outcome = runtime.block_on(run(&cfg))?;
    println!(
        "schedule {} seed {seed}: {} faults injected, slowest restart {:?}",
        cfg.schedule, outcome.played.faults, outcome.played.slowest_restart
    );
    println!("{}", outcome.report);
    println!("evidence: {}", out.display());
    Ok(outcome.report.is_clean())
}
