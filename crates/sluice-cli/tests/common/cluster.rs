//! A cluster of real `sluice` processes on free loopback ports, every node a voter and a broker
//! (combined mode), for the multi-node black-box tests.

use super::{free_port, override_args, Broker};

/// A cluster's nodes, every one a voter (combined mode).
pub struct TestCluster {
    pub nodes: Vec<Broker>,
    /// The `--voters` every node was given.
    pub voters: String,
}

/// Settings that make fencing quick enough for tests (and still well above the heartbeat).
pub const FAST_LIVENESS: &[&str] = &[
    "broker.heartbeat.interval.ms=200",
    "broker.session.timeout.ms=3000",
];

pub fn node_args(controller_port: u16, voters: &str, overrides: &[&str]) -> Vec<String> {
    let mut args = vec![
        "--controller-listen".to_string(),
        format!("127.0.0.1:{controller_port}"),
        "--voters".to_string(),
        voters.to_string(),
    ];
    args.extend(override_args(overrides));
    args
}

impl TestCluster {
    pub fn start(n: u32) -> TestCluster {
        TestCluster::start_with(n, &[])
    }

    pub fn start_with(n: u32, extra: &[&str]) -> TestCluster {
        let overrides: Vec<&str> = FAST_LIVENESS.iter().chain(extra).copied().collect();
        let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
        let voters = ports
            .iter()
            .enumerate()
            .map(|(i, (_, c))| format!("{}@127.0.0.1:{c}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        let mut nodes: Vec<Broker> = ports
            .iter()
            .enumerate()
            .map(|(i, (p, c))| {
                Broker::prepare_node(i as u32 + 1, *p, node_args(*c, &voters, &overrides))
            })
            .collect();
        // Every process first: none finishes starting before a quorum of them runs.
        for b in &mut nodes {
            b.spawn_process();
        }
        for b in &mut nodes {
            b.wait_accepting();
        }
        TestCluster { nodes, voters }
    }

    pub fn node(&mut self, id: i32) -> &mut Broker {
        &mut self.nodes[id as usize - 1]
    }

    pub fn bootstrap(&self) -> String {
        self.nodes
            .iter()
            .map(|b| b.bootstrap())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The bootstrap string of some of the nodes.
    pub fn bootstrap_of(&self, ids: &[i32]) -> String {
        ids.iter()
            .map(|id| self.nodes[*id as usize - 1].bootstrap())
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn running(&mut self) -> Vec<i32> {
        self.nodes
            .iter_mut()
            .filter_map(|b| b.is_running().then_some(b.node_id() as i32))
            .collect()
    }
}
