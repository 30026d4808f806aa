//! A real `sluice` node behind its proxy: start, answer through the proxy, pause/resume,
//! kill -9 and restart, SIGTERM, and a death the harness did not cause reported as such.
//!
//! Builds nothing: runs the binary named by `SLUICE_BIN` and skips (saying so) without it.

use std::time::Duration;

use sluice_chaos::{api_versions, metadata_brokers, Cluster, Fault, Node, NodeError, ProbeError};

/// Bound for one ApiVersions exchange that should succeed.
const ANSWER: Duration = Duration::from_secs(5);
/// Bound for one that should not (a paused process): short, the test waits it out.
const NO_ANSWER: Duration = Duration::from_millis(500);

fn have_binary(test: &str) -> bool {
    if std::env::var_os("SLUICE_BIN").is_some() {
        return true;
    }
    eprintln!("SKIPPED {test}: set SLUICE_BIN to a built `sluice` binary to run it");
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_survives_pause_kill9_and_restart_behind_its_proxy() {
    if !have_binary("node_survives_pause_kill9_and_restart_behind_its_proxy") {
        return;
    }
    let mut node = Node::launch(1, vec!["--durability".into(), "relaxed".into()])
        .await
        .expect("start node");
    assert_ne!(
        node.addr(),
        node.listen_addr(),
        "clients go through the proxy"
    );

    // --- answers through the proxy
    api_versions(node.addr(), ANSWER)
        .await
        .expect("ApiVersions via proxy");
    assert!(
        node.proxy()
            .stats()
            .forwarded(sluice_chaos::Direction::ServerToClient)
            > 0
    );

    // --- a paused process completes handshakes but never answers
    node.pause().expect("SIGSTOP");
    match api_versions(node.addr(), NO_ANSWER).await {
        Err(ProbeError::Timeout(_)) => {}
        other => panic!("paused node must time out, got {other:?}"),
    }
    node.resume().expect("SIGCONT");
    api_versions(node.addr(), ANSWER)
        .await
        .expect("answers after SIGCONT");

    // --- the proxy's faults apply to the node's clients
    node.proxy().set_both(Fault::Cut);
    assert!(api_versions(node.addr(), ANSWER).await.is_err(), "cut link");
    node.proxy().heal();
    api_versions(node.addr(), ANSWER)
        .await
        .expect("answers after heal");

    // --- kill -9: nothing answers; restart on the same ports and data dir answers again
    let pid = node.pid().expect("running");
    node.kill9().expect("kill -9");
    assert!(!node.is_running());
    assert!(
        api_versions(node.addr(), ANSWER).await.is_err(),
        "killed node"
    );
    node.restart().await.expect("restart");
    assert_ne!(node.pid(), Some(pid), "a new process");
    api_versions(node.addr(), ANSWER)
        .await
        .expect("answers after restart");

    // --- SIGTERM: a clean exit
    let status = node
        .terminate(Duration::from_secs(15))
        .await
        .expect("exits on SIGTERM");
    assert!(
        status.success(),
        "clean shutdown, got {status}\n{}",
        node.log_tail()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_node_cluster_advertises_its_proxy() {
    if !have_binary("one_node_cluster_advertises_its_proxy") {
        return;
    }
    let cluster = Cluster::start(1, |_, all| {
        assert_eq!(all.len(), 1);
        vec!["--durability".into(), "relaxed".into()]
    })
    .await
    .expect("start cluster");
    let node = cluster.node(1);
    assert_eq!(cluster.bootstrap(), node.addr().to_string());
    let brokers = metadata_brokers(node.addr(), ANSWER)
        .await
        .expect("Metadata via proxy");
    let advertised: Vec<(i32, String, i32)> = brokers
        .into_iter()
        .map(|b| (b.node_id, b.host, b.port))
        .collect();
    assert_eq!(
        advertised,
        vec![(1, "127.0.0.1".to_string(), i32::from(node.addr().port()))],
        "the node advertises its proxy, not its listen port {}",
        node.listen_addr()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_dies_on_its_own_is_reported_with_its_log() {
    if !have_binary("a_node_that_dies_on_its_own_is_reported_with_its_log") {
        return;
    }
    let mut node = Node::launch(1, vec!["--durability".into(), "relaxed".into()])
        .await
        .expect("start node");
    node.check_alive().expect("alive after start");
    // Killed behind the harness's back, as a crash would end it.
    let pid = node.pid().expect("running");
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(killed.success());
    let deadline = std::time::Instant::now() + ANSWER;
    let err = loop {
        match node.check_alive() {
            Err(e) => break e,
            Ok(()) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Ok(()) => panic!("a killed process still counts as alive"),
        }
    };
    assert!(matches!(err, NodeError::Died { node: 1, .. }), "{err}");
    assert!(err.to_string().contains("node 1 log tail"), "{err}");
}
