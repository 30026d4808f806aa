//! A [`Cluster`]: N [`Node`]s with ids `1..=N`, started together.
//!
//! Nodes are prepared first (ports, data dirs, proxies), then each node's extra arguments are
//! built from every node's addresses, then all processes start, and only then does the cluster
//! wait for each to answer (a node of a multi-node cluster may answer only once a quorum runs).
//! That order is what multi-node flags need: [`multi_node_args`] builds `--controller-listen`
//! and `--voters` from controller ports chosen up front, so going multi-node changes only the
//! `args` function. Today `sluice serve` is single-node and takes none of those flags (the
//! runner uses them only for N > 1). Later the cluster will grow one proxy per ordered pair of
//! nodes, so node i's `--voters` names j through proxy (i, j) and each link can be faulted on
//! its own.
//!
//! [`Cluster::leadership`] asks the nodes (bypassing the proxies) who leads what.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use crate::probe::{metadata_leaders, Leadership};
use crate::process::{free_port, Node, NodeError, START_TIMEOUT};

/// What a node's arguments may refer to about any node of the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeAddrs {
    pub node_id: i32,
    /// Where the process binds its Kafka listener.
    pub listen: SocketAddr,
    /// The proxy in front of `listen`; the advertised listener.
    pub advertised: SocketAddr,
}

pub struct Cluster {
    /// Index `i` holds node id `i + 1`.
    nodes: Vec<Node>,
}

impl Cluster {
    /// Starts nodes `1..=n`; `args(id, all)` returns node `id`'s extra `serve` arguments.
    pub async fn start(
        n: usize,
        args: impl Fn(i32, &[NodeAddrs]) -> Vec<String>,
    ) -> Result<Cluster, NodeError> {
        let mut nodes = Vec::with_capacity(n);
        for id in 1..=n as i32 {
            nodes.push(Node::prepare(id, Vec::new()).await?);
        }
        let addrs: Vec<NodeAddrs> = nodes
            .iter()
            .map(|n| NodeAddrs {
                node_id: n.id(),
                listen: n.listen_addr(),
                advertised: n.addr(),
            })
            .collect();
        for node in &mut nodes {
            node.set_extra_args(args(node.id(), &addrs));
            node.spawn()?;
        }
        // Only now: a multi-node cluster may answer only once a quorum of voters runs.
        for node in &mut nodes {
            node.wait_ready(START_TIMEOUT).await?;
        }
        Ok(Cluster { nodes })
    }

    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// Node `id` (1-based). Panics on an id outside the cluster: a bug in the test.
    pub fn node(&self, id: i32) -> &Node {
        &self.nodes[Self::index(id)]
    }

    pub fn node_mut(&mut self, id: i32) -> &mut Node {
        &mut self.nodes[Self::index(id)]
    }

    fn index(id: i32) -> usize {
        usize::try_from(id - 1).expect("node ids start at 1")
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Who leads `topic`'s partitions and which node is the controller, from the first node
    /// that answers Metadata on its listen port (bypassing the proxies, which may be faulted);
    /// `None` if no node answers within `timeout` each.
    pub async fn leadership(&self, topic: &str, timeout: Duration) -> Option<Leadership> {
        for node in &self.nodes {
            match metadata_leaders(node.listen_addr(), timeout, topic).await {
                Ok(l) => return Some(l),
                Err(e) => tracing::debug!(node = node.id(), error = %e, "metadata probe failed"),
            }
        }
        None
    }

    /// Every node's advertised (proxied) address, comma-separated, for `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        let addrs: Vec<String> = self.nodes.iter().map(|n| n.addr().to_string()).collect();
        addrs.join(",")
    }
}

/// The arguments of a multi-node cluster, for [`Cluster::start`]: `common` plus
/// `--controller-listen` on a controller port chosen now (free at the time, like every port
/// here) and `--voters` naming every node's controller address. (`--node-id` and `--listen`
/// come from the [`Node`] itself.) Only for `n > 1`: a one-node `sluice serve` takes none of
/// these.
pub fn multi_node_args(
    n: usize,
    common: Vec<String>,
) -> io::Result<impl Fn(i32, &[NodeAddrs]) -> Vec<String>> {
    let controllers = (0..n)
        .map(|_| Ok(SocketAddr::from(([127, 0, 0, 1], free_port()?))))
        .collect::<io::Result<Vec<SocketAddr>>>()?;
    let voters = controllers
        .iter()
        .enumerate()
        .map(|(i, a)| format!("{}@{a}", i + 1))
        .collect::<Vec<_>>()
        .join(",");
    Ok(move |id: i32, _: &[NodeAddrs]| {
        let mut args = common.clone();
        let own = usize::try_from(id - 1).expect("node ids start at 1");
        args.extend([
            "--controller-listen".to_string(),
            controllers[own].to_string(),
            "--voters".to_string(),
            voters.clone(),
        ]);
        args
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_node_args_name_every_voter_and_each_own_controller_port() {
        let args = multi_node_args(3, vec!["--durability".into(), "fsync".into()]).unwrap();
        let a1 = args(1, &[]);
        let a3 = args(3, &[]);
        assert_eq!(&a1[..3], ["--durability", "fsync", "--controller-listen"]);
        assert_eq!(a1[4], "--voters");
        assert_eq!(a1[5], a3[5], "the same voter set everywhere");
        let voters: Vec<&str> = a1[5].split(',').collect();
        assert_eq!(voters.len(), 3);
        assert_eq!(voters[0], format!("1@{}", a1[3]));
        assert_eq!(voters[2], format!("3@{}", a3[3]));
        assert_ne!(a1[3], a3[3]);
    }
}
