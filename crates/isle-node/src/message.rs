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
    /// A lease keep-alive forwarded to the leader (expiry is leader-local, not replicated).
    KeepAlive(i64),
    /// A membership change forwarded to the leader.
    Membership(crate::cp::MembershipChange),
    /// A lease's remaining time, which only the leader tracks.
    LeaseTtl(i64),
    /// The AP keyspace's replica protocol.
    Ap(crate::ap::wire::ApRequest),
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
    /// Answer to [`RpcRequest::KeepAlive`]: the lease's TTL in seconds.
    KeepAlive(Result<i64, CpRequestError>),
    /// Answer to [`RpcRequest::Membership`]: the membership after the change.
    Membership(Result<crate::cp::Membership, CpRequestError>),
    /// Answer to [`RpcRequest::LeaseTtl`]: granted and remaining seconds, if the lease exists.
    LeaseTtl(Option<(i64, Option<i64>)>),
    /// Answer to [`RpcRequest::Ap`].
    Ap(crate::ap::wire::ApReply),
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

#[cfg(test)]
mod tests {
    use isle_cp::CpError;
    use isle_net::{Envelope, FrameDecoder, encode};
    use isle_types::NodeId;

    use super::*;

    fn round_trip(message: PeerMessage) -> PeerMessage {
        let frame = encode(&Envelope::new(NodeId(1), message)).expect("encode");
        let mut decoder = FrameDecoder::<PeerMessage>::new(1 << 20);
        decoder.push(&frame);
        decoder
            .next_frame()
            .expect("decodes")
            .expect("one frame")
            .msg
    }

    /// Every reply shape must survive postcard: a reply that does not decode is silently a
    /// timeout on the caller's side (this once hid every forwarded refusal).
    #[test]
    fn every_refusal_survives_the_wire() {
        let refusals = [
            CpRequestError::NoQuorum {
                reachable: 2,
                needed: 3,
                total: 5,
                unit: "votes".into(),
                leader: Some(1),
            },
            CpRequestError::NoLeader { detail: "x".into() },
            CpRequestError::NotInitialized,
            CpRequestError::Timeout { after_ms: 5 },
            CpRequestError::Rejected(CpError::LeaseNotFound { id: 1 }),
            CpRequestError::Rejected(CpError::FencingTokenStale {
                presented: 1,
                current: 2,
            }),
            CpRequestError::LockTimeout {
                name: "a".into(),
                waited_ms: 1,
            },
            CpRequestError::Internal("y".into()),
        ];
        for refusal in refusals {
            let reply = PeerMessage::Reply {
                id: 7,
                body: RpcReply::Write(Err(refusal.clone())),
            };
            match round_trip(reply) {
                PeerMessage::Reply {
                    id: 7,
                    body: RpcReply::Write(Err(back)),
                } => assert_eq!(back, refusal),
                other => panic!("{refusal:?} came back as {other:?}"),
            }
        }
    }
}
