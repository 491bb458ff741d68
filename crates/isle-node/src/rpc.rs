//! Request/response over the one-way peer transport: ids, a table of waiting callers, and
//! deadlines. Raft's RPCs and forwarded client requests both travel this way.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use isle_cp::raft::{RaftReply, RaftRequest, RaftRpc, RpcFailure, RpcFuture};
use isle_env::Clock;
use isle_net::{PeerAddr, Transport};
use isle_types::NodeId;
use tokio::sync::{oneshot, watch};

use crate::message::{PeerMessage, RpcReply, RpcRequest};
use crate::status::Status;

/// Most requests waiting for replies at once; more fail fast as unreachable.
pub const PENDING_MAX: usize = 65_536;

/// A caller waiting for a reply from `target`.
struct Waiter {
    target: NodeId,
    reply: oneshot::Sender<Result<RpcReply, RpcFailure>>,
}

/// Sends requests to peers and matches their replies.
pub struct PeerRpc {
    transport: Transport<PeerMessage>,
    clock: Arc<dyn Clock>,
    /// The node's status, for peer addresses by id.
    status: watch::Receiver<Arc<Status>>,
    pending: Mutex<BTreeMap<u64, Waiter>>,
    next_id: AtomicU64,
}

impl PeerRpc {
    /// An RPC layer over the node's transport.
    pub fn new(
        transport: Transport<PeerMessage>,
        clock: Arc<dyn Clock>,
        status: watch::Receiver<Arc<Status>>,
    ) -> Self {
        PeerRpc {
            transport,
            clock,
            status,
            pending: Mutex::new(BTreeMap::new()),
            next_id: AtomicU64::new(1),
        }
    }

    fn pending(&self) -> MutexGuard<'_, BTreeMap<u64, Waiter>> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The peer transport address of `target`, as the membership knows it.
    pub fn address(&self, target: NodeId) -> Option<String> {
        let status = self.status.borrow();
        status
            .peers
            .iter()
            .find(|p| p.id == target)
            .map(|p| p.peer_addr.clone())
    }

    /// Sends `body` to `target` and waits at most `timeout` for its reply.
    pub async fn request(
        &self,
        target: NodeId,
        body: RpcRequest,
        timeout: Duration,
    ) -> Result<RpcReply, RpcFailure> {
        let unreachable = |reason: String| RpcFailure::Unreachable {
            target: target.0,
            reason,
        };
        let addr = self
            .address(target)
            .ok_or_else(|| unreachable("no known address".into()))?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        {
            let mut pending = self.pending();
            if pending.len() >= PENDING_MAX {
                return Err(unreachable(format!(
                    "{PENDING_MAX} requests already waiting"
                )));
            }
            pending.insert(id, Waiter { target, reply: tx });
        }
        let message = PeerMessage::Request { id, body };
        if let Err(err) = self.transport.send(
            &PeerAddr {
                addr,
                id: Some(target),
            },
            message,
        ) {
            self.pending().remove(&id);
            return Err(unreachable(err.to_string()));
        }
        let outcome = tokio::select! {
            biased;
            reply = rx => reply.unwrap_or_else(|_| Err(unreachable("node shutting down".into()))),
            () = self.clock.sleep(timeout) => Err(RpcFailure::Timeout { target: target.0, timeout }),
        };
        self.pending().remove(&id);
        outcome
    }

    /// A reply arrived: wake its caller (late or unknown replies are dropped).
    pub fn complete(&self, id: u64, reply: RpcReply) {
        if let Some(waiter) = self.pending().remove(&id) {
            let _ = waiter.reply.send(Ok(reply));
        }
    }

    /// The failure detector declared `target` unreachable: its callers stop waiting now
    /// instead of at their deadlines (their requests' outcomes are unknown).
    pub fn fail_target(&self, target: NodeId) {
        let mut pending = self.pending();
        let ids: Vec<u64> = pending
            .iter()
            .filter(|(_, w)| w.target == target)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            if let Some(waiter) = pending.remove(&id) {
                let reason = "the failure detector declared it unreachable".to_string();
                let _ = waiter.reply.send(Err(RpcFailure::Lost {
                    target: target.0,
                    reason,
                }));
            }
        }
    }

    /// Sends a reply to a request from `to`.
    pub fn reply(&self, to: NodeId, id: u64, body: RpcReply) {
        if let Some(addr) = self.address(to) {
            // A lost reply is the caller's timeout: nothing more to do here.
            let _ = self.transport.send(
                &PeerAddr { addr, id: Some(to) },
                PeerMessage::Reply { id, body },
            );
        }
    }
}

/// Raft's view of [`PeerRpc`]: its RPCs as [`RpcRequest::Raft`] requests.
pub struct RaftLink(pub Arc<PeerRpc>);

impl RaftRpc for RaftLink {
    fn call(&self, target: u64, request: RaftRequest, timeout: Duration) -> RpcFuture {
        let rpc = Arc::clone(&self.0);
        Box::pin(async move {
            match rpc
                .request(NodeId(target), RpcRequest::Raft(request), timeout)
                .await?
            {
                RpcReply::Raft(reply) => Ok(reply),
                other => Ok(RaftReply::Refused(format!("mismatched reply: {other:?}"))),
            }
        })
    }
}
