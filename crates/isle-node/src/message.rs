//! What nodes say to each other over the peer transport.

use isle_cp::command::{RangeRequest, RangeResponse};
use isle_cp::raft::{RaftReply, RaftRequest};
use isle_cp::{Command, Response};
use isle_detect::View;
use isle_types::Member;
use serde::{Deserialize, Serialize};

use crate::cp::CpRequestError;

/// Every node-to-node message. Later keyspaces add their variants here.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum PeerMessage {
    /// Liveness plus gossip: sent to every known peer each heartbeat interval.
    Heartbeat(Heartbeat),
    /// A request that expects a [`PeerMessage::Reply`] with the same id.
    Request {
        /// Chosen by the caller, unique among its outstanding requests.
        id: u64,
        /// What is asked.
        body: RpcRequest,
    },
    /// The answer to a [`PeerMessage::Request`].
    Reply {
        /// The request's id.
        id: u64,
        /// The answer.
        body: RpcReply,
    },
}

/// Requests between nodes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum RpcRequest {
    /// Raft's own RPCs.
    Raft(RaftRequest),
    /// A client write forwarded to the leader.
    Write(Command),
    /// A linearizable read forwarded to the leader.
    Read(RangeRequest),
}

/// Answers to [`RpcRequest`]s.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum RpcReply {
    /// Answer to [`RpcRequest::Raft`].
    Raft(RaftReply),
    /// Answer to [`RpcRequest::Write`].
    Write(Result<Response, CpRequestError>),
    /// Answer to [`RpcRequest::Read`].
    Read(Result<RangeResponse, CpRequestError>),
}

/// A heartbeat: "I am alive", who I am, who I know, and who sees whom as far as I know.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// The sender's incarnation; a higher one means it restarted.
    pub incarnation: u64,
    /// Per-incarnation sequence number; stale or duplicated heartbeats are ignored.
    pub seq: u64,
    /// The sender's own record (authoritative about itself).
    pub member: Member,
    /// Other members the sender knows of (so seeds spread the full membership).
    pub members: Vec<Member>,
    /// The sender's reachability view and the latest views it holds of others.
    pub views: Vec<View>,
}
