//! A [`Cluster`]: N [`Node`]s with ids `1..=N`, started together.
//!
//! Nodes are prepared first (ports, data dirs, proxies), then each node's extra arguments are
//! built from every node's addresses, then all processes start, and only then does the cluster
//! wait for each to answer (a node of a multi-node cluster answers only once a quorum runs).
//!
//! [`Cluster::start_multi`] builds a real multi-node cluster with a [`Proxy`] on every link:
//! besides each node's client-link proxy (which it advertises), one proxy per ordered pair of
//! nodes and kind of link ([`LinkKind::Controller`]: Raft, registration, heartbeats, forwarded
//! operations; [`LinkKind::Broker`]: replica fetches). Node `i` is told, with the hidden
//! `serve --peer-route ADDR=VIA`, to dial node `j`'s controller address and advertised
//! listener through the proxies of link `(i, j)`, so any link can be faulted on its own:
//! [`Cluster::isolate`] cuts a node off from its peers while its clients still reach it.
//!
//! [`Cluster::leadership`] asks the nodes (bypassing the proxies) who leads what.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use crate::probe::{metadata_leaders, Leadership};
use crate::process::{free_port, Node, NodeError, START_TIMEOUT};
use crate::proxy::{Fault, Proxy};

/// What a node's arguments may refer to about any node of the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeAddrs {
    pub node_id: i32,
    /// Where the process binds its Kafka listener.
    pub listen: SocketAddr,
    /// The proxy in front of `listen`; the advertised listener.
    pub advertised: SocketAddr,
}

/// The two kinds of link between nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LinkKind {
    /// To the peer's controller listener: Raft, registration, heartbeats, forwarding.
    Controller,
    /// To the peer's Kafka listener: replica fetches.
    Broker,
}

pub struct Cluster {
    /// Index `i` holds node id `i + 1`.
    nodes: Vec<Node>,
    /// `(from, to, kind)`: the proxy node `from` dials node `to` through (multi-node only).
    links: BTreeMap<(i32, i32, LinkKind), Proxy>,
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
        Ok(Cluster {
            nodes,
            links: BTreeMap::new(),
        })
    }

    /// Starts an `n`-node cluster (`n > 1`, every node a voter) with `common` arguments and a
    /// proxy on every link between two nodes (see the module docs).
    pub async fn start_multi(n: usize, common: Vec<String>) -> Result<Cluster, NodeError> {
        assert!(n > 1, "a multi-node cluster");
        let io = |node: i32, what: &'static str| move |source| NodeError::Io { node, what, source };
        // Ports chosen now are bound only when the processes start, so neither a later choice
        // nor a proxy's ephemeral port may land on one of them: every port is checked against
        // the ones taken so far.
        let mut taken = std::collections::HashSet::new();
        let mut nodes = Vec::with_capacity(n);
        let mut controllers = Vec::with_capacity(n);
        for id in 1..=n as i32 {
            let node = loop {
                let node = Node::prepare(id, Vec::new()).await?;
                let (listen, proxy) = (node.listen_addr().port(), node.addr().port());
                if listen != proxy && !taken.contains(&listen) && !taken.contains(&proxy) {
                    taken.extend([listen, proxy]);
                    break node;
                }
            };
            nodes.push(node);
            let port = loop {
                let port = free_port().map_err(io(id, "choose a controller port"))?;
                if taken.insert(port) {
                    break port;
                }
            };
            controllers.push(SocketAddr::from(([127, 0, 0, 1], port)));
        }
        let mut links = BTreeMap::new();
        for from in 1..=n as i32 {
            for to in (1..=n as i32).filter(|&to| to != from) {
                let targets = [
                    (LinkKind::Controller, controllers[Self::index(to)]),
                    (LinkKind::Broker, nodes[Self::index(to)].listen_addr()),
                ];
                for (kind, target) in targets {
                    let proxy = loop {
                        let proxy = Proxy::start(target)
                            .await
                            .map_err(io(from, "start a peer-link proxy"))?;
                        if taken.insert(proxy.addr().port()) {
                            break proxy;
                        }
                    };
                    links.insert((from, to, kind), proxy);
                }
            }
        }
        let voters = controllers
            .iter()
            .enumerate()
            .map(|(i, a)| format!("{}@{a}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        let advertised: Vec<SocketAddr> = nodes.iter().map(Node::addr).collect();
        for node in &mut nodes {
            let from = node.id();
            let mut args = common.clone();
            args.extend([
                "--controller-listen".to_string(),
                controllers[Self::index(from)].to_string(),
                "--voters".to_string(),
                voters.clone(),
            ]);
            for to in (1..=n as i32).filter(|&to| to != from) {
                let via = |kind| links[&(from, to, kind)].addr();
                let routes = [
                    (controllers[Self::index(to)], via(LinkKind::Controller)),
                    (advertised[Self::index(to)], via(LinkKind::Broker)),
                ];
                for (addr, via) in routes {
                    args.extend(["--peer-route".to_string(), format!("{addr}={via}")]);
                }
            }
            node.set_extra_args(args);
            node.spawn()?;
        }
        for node in &mut nodes {
            node.wait_ready(START_TIMEOUT).await?;
        }
        Ok(Cluster { nodes, links })
    }

    /// The proxy node `from` dials node `to` through, for `kind` (multi-node clusters only).
    pub fn link(&self, from: i32, to: i32, kind: LinkKind) -> Option<&Proxy> {
        self.links.get(&(from, to, kind))
    }

    /// Every link between `id` and another node, both ways and both kinds.
    fn links_of(&self, id: i32) -> impl Iterator<Item = &Proxy> {
        self.links
            .iter()
            .filter(move |((from, to, _), _)| *from == id || *to == id)
            .map(|(_, proxy)| proxy)
    }

    /// Cuts node `id` off from every other node (controller and replication links, both
    /// ways), leaving its client link alone: clients still reach it, its peers do not. False
    /// if the cluster has no peer links (a single node).
    pub fn isolate(&self, id: i32) -> bool {
        let mut any = false;
        for proxy in self.links_of(id) {
            proxy.set_both(Fault::Cut);
            any = true;
        }
        any
    }

    /// Heals every link between `id` and another node.
    pub fn rejoin(&self, id: i32) {
        for proxy in self.links_of(id) {
            proxy.heal();
        }
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
