//! The Raft network adapter: openraft's RPCs as [`RaftRequest`]s, carried by whatever
//! [`RaftRpc`] the node provides (its peer transport), and [`serve`] for the receiving side.

use std::future::Future;

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use openraft::BasicNode;
use openraft::base::{BoxFuture, BoxStream};
use openraft::entry::RaftEntry;
use openraft::error::{
    NetworkError, RPCError, ReplicationClosed, StreamingError, Timeout, Unreachable,
};
use openraft::network::{RPCOption, RPCTypes, RaftNetworkFactory, v2::RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, StreamAppendResult, VoteRequest,
    VoteResponse,
};
use openraft::type_config::alias::{SnapshotMetaOf, SnapshotOf, VoteOf};
use serde::{Deserialize, Serialize};

use super::types::{CpRaft, CpTypes};

/// One Raft RPC on the wire.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum RaftRequest {
    /// Log replication and heartbeats.
    Append(AppendEntriesRequest<CpTypes>),
    /// A real election vote.
    Vote(VoteRequest<CpTypes>),
    /// A pre-vote: would you vote for me? (nothing is persisted)
    PreVote(VoteRequest<CpTypes>),
    /// A whole snapshot for a follower too far behind the log.
    Snapshot {
        /// The leader's vote.
        vote: VoteOf<CpTypes>,
        /// What the snapshot covers.
        meta: SnapshotMetaOf<CpTypes>,
        /// The state machine bytes.
        data: Vec<u8>,
    },
}

/// The answer to a [`RaftRequest`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum RaftReply {
    /// Answer to `Append`.
    Append(AppendEntriesResponse<CpTypes>),
    /// Answer to `Vote` or `PreVote`.
    Vote(VoteResponse<CpTypes>),
    /// Answer to `Snapshot`.
    Snapshot(SnapshotResponse<CpTypes>),
    /// The receiver could not handle it (shutting down, not started): retry later.
    Refused(String),
}

/// Why an RPC got no answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RpcFailure {
    /// Not sent: no address for the node, queue full, breaker open.
    #[error("node {target} unreachable: {reason}")]
    Unreachable {
        /// The target node.
        target: u64,
        /// Why.
        reason: String,
    },
    /// Sent, then the target was declared unreachable before it answered: the request may or
    /// may not have been acted on.
    #[error("node {target} became unreachable before answering: {reason}")]
    Lost {
        /// The target node.
        target: u64,
        /// Why.
        reason: String,
    },
    /// Sent, but no answer within the deadline.
    #[error("no answer from node {target} within {timeout:?}")]
    Timeout {
        /// The target node.
        target: u64,
        /// The deadline that passed.
        timeout: Duration,
    },
}

/// A boxed RPC future.
pub type RpcFuture = Pin<Box<dyn Future<Output = Result<RaftReply, RpcFailure>> + Send>>;

/// How the CP adapter reaches other nodes: implemented by the node over its peer transport.
pub trait RaftRpc: Send + Sync + 'static {
    /// Sends `request` to `target` and waits at most `timeout` for the reply.
    fn call(&self, target: u64, request: RaftRequest, timeout: Duration) -> RpcFuture;
}

/// Hands openraft one [`CpNetwork`] per target.
#[derive(Clone)]
pub struct CpNetworkFactory {
    rpc: Arc<dyn RaftRpc>,
}

impl CpNetworkFactory {
    /// A factory over the node's RPC.
    pub fn new(rpc: Arc<dyn RaftRpc>) -> Self {
        CpNetworkFactory { rpc }
    }
}

impl RaftNetworkFactory<CpTypes> for CpNetworkFactory {
    type Network = CpNetwork;

    async fn new_client(&mut self, target: u64, _node: &BasicNode) -> CpNetwork {
        CpNetwork {
            target,
            rpc: Arc::clone(&self.rpc),
        }
    }
}

/// The RPC client for one target node.
pub struct CpNetwork {
    target: u64,
    rpc: Arc<dyn RaftRpc>,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Failure(String);

fn rpc_error(failure: RpcFailure, action: RPCTypes, target: u64) -> RPCError<CpTypes> {
    match failure {
        RpcFailure::Timeout { timeout, .. } => RPCError::Timeout(Timeout {
            action,
            id: 0,
            target,
            timeout,
        }),
        unreachable @ (RpcFailure::Unreachable { .. } | RpcFailure::Lost { .. }) => {
            RPCError::Unreachable(Unreachable::new(&Failure(unreachable.to_string())))
        }
    }
}

fn unexpected(reply: RaftReply) -> RPCError<CpTypes> {
    let message = match reply {
        RaftReply::Refused(reason) => format!("refused: {reason}"),
        other => format!("mismatched reply {other:?}"),
    };
    RPCError::Network(NetworkError::new(&Failure(message)))
}

/// AppendEntries requests in flight to one follower at once: batch k+1 goes out before batch k
/// is acknowledged, so a follower's fsync does not idle the link.
pub const APPEND_PIPELINE: usize = 16;

/// A pipelined append is given up after this many heartbeat intervals (openraft's RPC option is
/// one interval, 100 ms by default — too tight for a request queued behind others and a busy
/// disk; giving up restarts replication from scratch).
const APPEND_TIMEOUT_INTERVALS: u32 = 10;

impl CpNetwork {
    async fn call(&self, request: RaftRequest, timeout: Duration) -> Result<RaftReply, RpcFailure> {
        self.rpc.call(self.target, request, timeout).await
    }
}

/// Sends one AppendEntries of a pipelined stream; also says whether the stream must stop
/// after it (a conflict, a higher vote, or a partial answer: what follows was built on entries
/// the follower did not take).
async fn pipelined_append(
    rpc: Arc<dyn RaftRpc>,
    target: u64,
    request: AppendEntriesRequest<CpTypes>,
    timeout: Duration,
) -> Result<(StreamAppendResult<CpTypes>, bool), RPCError<CpTypes>> {
    let prev = request.prev_log_id;
    let last = request.entries.last().map(|e| e.log_id()).or(prev);
    let reply = rpc
        .call(target, RaftRequest::Append(request), timeout)
        .await;
    let response = match reply.map_err(|f| rpc_error(f, RPCTypes::AppendEntries, target))? {
        RaftReply::Append(response) => response,
        other => return Err(unexpected(other)),
    };
    let stop = match &response {
        AppendEntriesResponse::Success => false,
        AppendEntriesResponse::PartialSuccess(upto) => *upto != last,
        AppendEntriesResponse::Conflict | AppendEntriesResponse::HigherVote(_) => true,
    };
    if matches!(response, AppendEntriesResponse::Conflict) && prev.is_none() {
        // A conflict is reported at the previous log id; without one there is nothing to
        // report it at (a follower cannot conflict before the first entry).
        return Err(unexpected(RaftReply::Refused(
            "conflict reported for a request without a previous log id".into(),
        )));
    }
    Ok((response.into_stream_result(prev, last), stop))
}

impl RaftNetworkV2<CpTypes> for CpNetwork {
    type SnapshotData = Vec<u8>;

    /// Pipelined replication: up to [`APPEND_PIPELINE`] requests in flight, answers yielded in
    /// order, the stream ending after the first error or stopping answer. The receiving node
    /// hands the requests of one sender to Raft in arrival order (see `isle-node`).
    fn stream_append<'s, S>(
        &'s mut self,
        input: S,
        option: RPCOption,
    ) -> BoxFuture<
        's,
        Result<
            BoxStream<'s, Result<StreamAppendResult<CpTypes>, RPCError<CpTypes>>>,
            RPCError<CpTypes>,
        >,
    >
    where
        S: futures_util::Stream<Item = AppendEntriesRequest<CpTypes>>
            + openraft::OptionalSend
            + Unpin
            + 'static,
    {
        let rpc = Arc::clone(&self.rpc);
        let target = self.target;
        let timeout = option.hard_ttl() * APPEND_TIMEOUT_INTERVALS;
        Box::pin(async move {
            let answers = input
                .map(move |request| pipelined_append(Arc::clone(&rpc), target, request, timeout))
                .buffered(APPEND_PIPELINE)
                .scan(false, |stopped, answer| {
                    let item = if *stopped {
                        None
                    } else {
                        Some(match answer {
                            Ok((result, stop)) => {
                                *stopped = stop;
                                Ok(result)
                            }
                            Err(err) => {
                                *stopped = true;
                                Err(err)
                            }
                        })
                    };
                    std::future::ready(item)
                });
            let answers: BoxStream<'s, _> = Box::pin(answers);
            Ok(answers)
        })
    }

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<CpTypes>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<CpTypes>, RPCError<CpTypes>> {
        let reply = self.call(RaftRequest::Append(rpc), option.hard_ttl()).await;
        match reply.map_err(|f| rpc_error(f, RPCTypes::AppendEntries, self.target))? {
            RaftReply::Append(response) => Ok(response),
            other => Err(unexpected(other)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<CpTypes>,
        option: RPCOption,
    ) -> Result<VoteResponse<CpTypes>, RPCError<CpTypes>> {
        let reply = self.call(RaftRequest::Vote(rpc), option.hard_ttl()).await;
        match reply.map_err(|f| rpc_error(f, RPCTypes::Vote, self.target))? {
            RaftReply::Vote(response) => Ok(response),
            other => Err(unexpected(other)),
        }
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<CpTypes>,
        option: RPCOption,
    ) -> Result<VoteResponse<CpTypes>, RPCError<CpTypes>> {
        let reply = self
            .call(RaftRequest::PreVote(rpc), option.hard_ttl())
            .await;
        match reply.map_err(|f| rpc_error(f, RPCTypes::Vote, self.target))? {
            RaftReply::Vote(response) => Ok(response),
            other => Err(unexpected(other)),
        }
    }

    async fn full_snapshot(
        &mut self,
        vote: VoteOf<CpTypes>,
        snapshot: SnapshotOf<CpTypes, Vec<u8>>,
        _cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<CpTypes>, StreamingError<CpTypes>> {
        let request = RaftRequest::Snapshot {
            vote,
            meta: snapshot.meta,
            data: snapshot.snapshot,
        };
        match self.call(request, option.hard_ttl()).await {
            Ok(RaftReply::Snapshot(response)) => Ok(response),
            Ok(other) => Err(StreamingError::Network(NetworkError::new(&Failure(
                format!("snapshot: {:?}", unexpected(other)),
            )))),
            Err(RpcFailure::Timeout { timeout, target }) => Err(StreamingError::Timeout(Timeout {
                action: RPCTypes::InstallSnapshot,
                id: 0,
                target,
                timeout,
            })),
            Err(failure) => Err(StreamingError::Unreachable(Unreachable::new(&Failure(
                failure.to_string(),
            )))),
        }
    }
}

/// Handles one inbound Raft RPC on the local Raft instance.
pub async fn serve(raft: &CpRaft, request: RaftRequest) -> RaftReply {
    let refused = |e: &dyn std::fmt::Display| RaftReply::Refused(e.to_string());
    match request {
        RaftRequest::Append(rpc) => match raft.append_entries(rpc).await {
            Ok(response) => RaftReply::Append(response),
            Err(e) => refused(&e),
        },
        RaftRequest::Vote(rpc) => match raft.vote(rpc).await {
            Ok(response) => RaftReply::Vote(response),
            Err(e) => refused(&e),
        },
        RaftRequest::PreVote(rpc) => match raft.pre_vote(rpc).await {
            Ok(response) => RaftReply::Vote(response),
            Err(e) => refused(&e),
        },
        RaftRequest::Snapshot { vote, meta, data } => {
            let snapshot = SnapshotOf::<CpTypes, Vec<u8>> {
                meta,
                snapshot: data,
            };
            match raft.install_full_snapshot(vote, snapshot).await {
                Ok(response) => RaftReply::Snapshot(response),
                Err(e) => refused(&e),
            }
        }
    }
}
