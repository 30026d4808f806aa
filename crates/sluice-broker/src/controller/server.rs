//! The controller listener: accepts connections from the other nodes of the cluster and answers
//! their requests ([`super::rpc`]) one at a time per connection. A connection that sends a bad
//! frame is closed (logged); every other connection carries on.

use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};

use super::rpc::{read_frame, write_frame, RpcEnvelope};
use super::Controller;

/// Most connections held at once: each node keeps a few (Raft, heartbeats, forwarding).
const MAX_CONNECTIONS: usize = 1024;

/// Serves the controller listener until the task is dropped.
pub async fn run(listener: TcpListener, controller: Arc<Controller>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "controller listener accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "controller listener full; connection closed");
            continue;
        };
        let controller = controller.clone();
        tokio::spawn(async move {
            if let Err(e) = serve(stream, &controller).await {
                tracing::debug!(%peer, error = %e, "controller connection closed");
            }
            drop(permit);
        });
    }
}

async fn serve(mut stream: TcpStream, controller: &Controller) -> std::io::Result<()> {
    let _ = stream.set_nodelay(true);
    while let Some(envelope) = read_frame::<_, RpcEnvelope>(&mut stream).await? {
        let reply = controller.handle_rpc(envelope).await;
        write_frame(&mut stream, &reply).await?;
    }
    Ok(())
}
