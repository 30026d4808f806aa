//! openraft's network, over the controller listener's RPC ([`super::rpc`]).

use std::sync::Arc;
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{Backoff, RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use sluice_meta::quorum::{ControllerNode, MetaRaft, NodeId};

use super::rpc::{RpcClient, RpcEnvelope, RpcError, RpcReply, RpcRequest};
use super::Identity;
use crate::peer_routes::PeerRoutes;

/// How long openraft waits before retrying a peer it could not reach.
const UNREACHABLE_BACKOFF: Duration = Duration::from_millis(250);

/// Makes one [`Peer`] per Raft target.
pub struct Network {
    pub identity: Arc<Identity>,
    pub routes: Arc<PeerRoutes>,
}

pub struct Peer {
    target: NodeId,
    client: RpcClient,
    identity: Arc<Identity>,
}

impl RaftNetworkFactory<MetaRaft> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: NodeId, node: &ControllerNode) -> Peer {
        Peer {
            target,
            client: RpcClient::new(self.routes.resolve(&node.addr)),
            identity: self.identity.clone(),
        }
    }
}

type RaftRpcError<E = openraft::error::Infallible> =
    RPCError<NodeId, ControllerNode, RaftError<NodeId, E>>;

impl Peer {
    async fn send(&self, request: RpcRequest, ttl: Duration) -> Result<RpcReply, RpcError> {
        let envelope = RpcEnvelope {
            from: self.identity.node,
            cluster_id: self.identity.cluster_id(),
            request,
        };
        self.client.call(&envelope, ttl).await
    }

    /// openraft retries a `Network` error at once but backs off after `Unreachable`
    /// ([`RaftNetwork::backoff`]): a peer that refuses, resets or closes the connection is
    /// unreachable, or the leader would spin on it (thousands of attempts a second against a
    /// cut link). A timeout has already waited, so it is a plain network error.
    fn transport<E: std::error::Error>(&self, e: RpcError) -> RPCError<NodeId, ControllerNode, E> {
        match e {
            RpcError::Connect { .. } | RpcError::Io { .. } => {
                RPCError::Unreachable(Unreachable::new(&e))
            }
            other => RPCError::Network(NetworkError::new(&other)),
        }
    }

    fn unexpected<E: std::error::Error>(
        &self,
        reply: RpcReply,
    ) -> RPCError<NodeId, ControllerNode, E> {
        let reason = match reply {
            RpcReply::WrongCluster { ours } => {
                format!("node {} belongs to cluster {ours}", self.target)
            }
            other => format!("unexpected reply {other:?}"),
        };
        RPCError::Unreachable(Unreachable::new(&std::io::Error::other(reason)))
    }
}

impl RaftNetwork<MetaRaft> for Peer {
    /// Between attempts to reach an unreachable peer: well under the election timeout, so a
    /// peer that comes back is heard from before anyone stands for election.
    fn backoff(&self) -> Backoff {
        Backoff::new(std::iter::repeat(UNREACHABLE_BACKOFF))
    }

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<MetaRaft>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RaftRpcError> {
        match self
            .send(RpcRequest::AppendEntries(rpc), option.hard_ttl())
            .await
        {
            Ok(RpcReply::AppendEntries(r)) => {
                r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            Ok(other) => Err(self.unexpected(other)),
            Err(e) => Err(self.transport(e)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<MetaRaft>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RaftRpcError<InstallSnapshotError>> {
        match self
            .send(RpcRequest::InstallSnapshot(rpc), option.hard_ttl())
            .await
        {
            Ok(RpcReply::InstallSnapshot(r)) => {
                r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            Ok(other) => Err(self.unexpected(other)),
            Err(e) => Err(self.transport(e)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RaftRpcError> {
        match self.send(RpcRequest::Vote(rpc), option.hard_ttl()).await {
            Ok(RpcReply::Vote(r)) => {
                r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            Ok(other) => Err(self.unexpected(other)),
            Err(e) => Err(self.transport(e)),
        }
    }
}
