//! The gate's replicated chaos runs: three nodes (every one a voter and a broker), a topic with
//! three replicas, the full workload, and the `leader-kill` schedule for about 40 seconds.
//!
//! - As built, the checker must find no anomaly: every acknowledged write survives the leaders
//!   being killed under it.
//! - With the planted fault (`--unsafe-test-ack-before-replication`: acks=all answered once the
//!   leader alone has the records) the same schedule must lose acknowledged writes, and the
//!   checker must say so: the harness can see the failure it exists to find.
//!
//! Skips, saying so, without a `sluice` binary (`SLUICE_BIN` or the cargo target dir). Evidence
//! of a failing run is kept and its directory printed.

use std::time::Duration;

use sluice_chaos::run::{run, RunConfig};
use sluice_chaos::{sluice_bin, Check};

const SEED: u64 = 7;

fn config(dir: &std::path::Path, planted_fault: bool) -> RunConfig {
    RunConfig {
        duration: Duration::from_secs(40),
        seed: SEED,
        nodes: 3,
        schedule: "leader-kill".into(),
        partitions: 3,
        out: Some(dir.to_path_buf()),
        planted_fault,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_leaders_of_a_replicated_topic_loses_nothing() {
    if let Err(e) = sluice_bin() {
        eprintln!("SKIPPED killing_leaders_of_a_replicated_topic_loses_nothing: {e}");
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("sluice-chaos-leader-kill-")
        .tempdir()
        .expect("temp dir");
    let outcome = match run(&config(dir.path(), false)).await {
        Ok(o) => o,
        Err(e) => panic!("the run failed: {e}\nevidence: {}", dir.keep().display()),
    };
    let report = &outcome.report;
    eprintln!("{} faults\n{report}", outcome.played.faults);
    if !report.is_clean() {
        panic!(
            "the checker found anomalies; evidence kept in {}",
            dir.keep().display()
        );
    }
    let s = report.stats;
    assert!(s.acked >= 100, "too few acknowledged writes: {s:?}");
    assert!(s.faults >= 3, "too few faults: {s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_planted_fault_is_caught_as_lost_writes() {
    if let Err(e) = sluice_bin() {
        eprintln!("SKIPPED the_planted_fault_is_caught_as_lost_writes: {e}");
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("sluice-chaos-planted-")
        .tempdir()
        .expect("temp dir");
    let outcome = match run(&config(dir.path(), true)).await {
        Ok(o) => o,
        Err(e) => panic!("the run failed: {e}\nevidence: {}", dir.keep().display()),
    };
    let report = &outcome.report;
    eprintln!("{} faults\n{report}", outcome.played.faults);
    let lost = report.of(Check::Lost).count();
    assert!(
        lost > 0,
        "acks=all answered before replication must lose acknowledged writes when leaders die, \
         and the checker must report them; evidence kept in {}",
        dir.keep().display()
    );
}
