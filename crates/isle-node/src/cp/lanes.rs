//! AppendEntries from one leader reach Raft in the order they arrived.
//!
//! The leader pipelines replication (several requests in flight, see
//! `isle_cp::raft::APPEND_PIPELINE`). Serving each request on its own spawned task would let the
//! scheduler hand them to Raft out of order — a request whose predecessor is not yet in the log
//! is refused as a conflict and replication restarts. A lane per sender submits them in arrival
//! order and lets them complete (each waits for its fsync) concurrently.

use std::collections::BTreeMap;
use std::sync::Mutex;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use isle_cp::raft::{CpRaft, CpTypes, RaftReply, RaftRequest};
use isle_types::NodeId;
use openraft::raft::AppendEntriesRequest;
use tokio::sync::mpsc;

use crate::message::RpcReply;
use crate::rpc::PeerRpc;

/// Requests queued on one lane before more are refused (the sender retries them).
const LANE_DEPTH: usize = 1024;

type Queued = (u64, AppendEntriesRequest<CpTypes>);

/// The lanes of one node, by sender.
#[derive(Default)]
pub(crate) struct AppendLanes {
    lanes: Mutex<BTreeMap<NodeId, mpsc::Sender<Queued>>>,
}

impl AppendLanes {
    /// Queues request `id` from `from` on its lane (started on first use); refuses it when
    /// the lane is full.
    pub(crate) fn submit(
        &self,
        raft: &CpRaft,
        rpc: &std::sync::Arc<PeerRpc>,
        from: NodeId,
        id: u64,
        request: AppendEntriesRequest<CpTypes>,
    ) {
        let mut lanes = self
            .lanes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let lane = lanes.entry(from).or_insert_with(|| {
            let (tx, rx) = mpsc::channel(LANE_DEPTH);
            tokio::spawn(run(raft.clone(), std::sync::Arc::clone(rpc), from, rx));
            tx
        });
        if let Err(err) = lane.try_send((id, request)) {
            let refusal = RaftReply::Refused(format!("append lane from node {from}: {err}"));
            rpc.reply(from, id, RpcReply::Raft(refusal));
        }
    }
}

/// Hands the lane's requests to Raft in order and answers each when Raft does.
async fn run(
    raft: CpRaft,
    rpc: std::sync::Arc<PeerRpc>,
    from: NodeId,
    mut queue: mpsc::Receiver<Queued>,
) {
    let mut in_flight = FuturesUnordered::new();
    loop {
        // `biased`: take every queued request first; FuturesUnordered first polls futures in the
        // order they were pushed, and a first poll is what submits a request to Raft.
        tokio::select! {
            biased;
            next = queue.recv() => match next {
                Some((id, request)) => {
                    let raft = raft.clone();
                    in_flight.push(async move {
                        (id, isle_cp::raft::serve(&raft, RaftRequest::Append(request)).await)
                    });
                }
                None => break,
            },
            Some((id, reply)) = in_flight.next(), if !in_flight.is_empty() => {
                rpc.reply(from, id, RpcReply::Raft(reply));
            }
        }
    }
}
