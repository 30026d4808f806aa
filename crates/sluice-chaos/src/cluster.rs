//! A [`Cluster`]: N [`Node`]s with ids `1..=N`, started together.
//!
//! Nodes are prepared first (ports, data dirs, proxies), then each node's extra arguments are
//! built from every node's addresses, then all processes start. That order is what multi-node
//! flags need: today `sluice serve` is single-node, so N > 1 gives N independent one-node
//! clusters. When `--controller-listen` and `--voters` exist, the `args` function builds them
//! from [`NodeAddrs`] (and the cluster will grow a controller port plus one proxy per ordered
//! pair of nodes, so node i's `--voters` names j through proxy (i, j) and each link can be
//! faulted on its own).

use std::net::SocketAddr;

use crate::process::{Node, NodeError};

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
            node.start().await?;
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

    /// Every node's advertised (proxied) address, comma-separated, for `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        let addrs: Vec<String> = self.nodes.iter().map(|n| n.addr().to_string()).collect();
        addrs.join(",")
    }
}
