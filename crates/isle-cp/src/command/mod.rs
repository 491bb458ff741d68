//! Commands that travel in the Raft log and the responses `apply` returns.
//!
//! Every type here derives `Serialize`/`Deserialize` (it is replicated), `Clone`, `Debug` and
//! `PartialEq`. The shapes mirror etcd v3's `rpc.proto` so the gRPC layer maps 1:1; where Isle
//! departs (fences, request ids, lock commands) the field says so.

mod kv;
mod lease;
mod txn;

pub use kv::{
    CompactRequest, CompactResponse, DeleteRangeRequest, DeleteRangeResponse, Event, EventKind,
    KeyValue, PutRequest, PutResponse, RangeRequest, RangeResponse, prefix_end,
};
pub use lease::{
    Fence, LeaseGrantRequest, LeaseGrantResponse, LeaseInfo, LeaseRevokeRequest,
    LeaseRevokeResponse, LockAcquireRequest, LockAcquireResponse, LockOwner, LockReleaseRequest,
    LockReleaseResponse,
};
pub use txn::{Compare, CompareResult, CompareTarget, Op, OpResponse, TxnRequest, TxnResponse};

use serde::{Deserialize, Serialize};

/// A client-chosen idempotency key, e.g. `"client-7:42"` or a UUID's bytes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RequestId(#[serde(with = "serde_bytes")] pub Vec<u8>);

impl From<&str> for RequestId {
    fn from(text: &str) -> Self {
        RequestId(text.as_bytes().to_vec())
    }
}

impl From<String> for RequestId {
    fn from(text: String) -> Self {
        RequestId(text.into_bytes())
    }
}

impl From<Vec<u8>> for RequestId {
    fn from(bytes: Vec<u8>) -> Self {
        RequestId(bytes)
    }
}

/// One replicated log entry's payload: a write request plus its optional idempotency key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Command {
    /// Applied once per id within the idempotency window; a repeat returns the recorded outcome.
    pub request_id: Option<RequestId>,
    /// What to do.
    pub request: Request,
}

impl Command {
    /// A command without an idempotency key.
    pub fn new(request: impl Into<Request>) -> Self {
        Command {
            request_id: None,
            request: request.into(),
        }
    }

    /// The same command carrying idempotency key `id`.
    pub fn with_request_id(mut self, id: impl Into<RequestId>) -> Self {
        self.request_id = Some(id.into());
        self
    }
}

/// Every state-changing request the CP keyspace replicates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Request {
    /// Write one key.
    Put(PutRequest),
    /// Delete a key or a range of keys.
    DeleteRange(DeleteRangeRequest),
    /// Compare-and-swap transaction.
    Txn(TxnRequest),
    /// Drop history below a revision.
    Compact(CompactRequest),
    /// Create a lease.
    LeaseGrant(LeaseGrantRequest),
    /// Delete a lease and every key attached to it (also how the leader expires a lease).
    LeaseRevoke(LeaseRevokeRequest),
    /// Enqueue a waiter for a lock; returns its fencing token.
    LockAcquire(LockAcquireRequest),
    /// Delete a lock waiter key (the next waiter becomes holder).
    LockRelease(LockReleaseRequest),
}

/// What `apply` returns for each request kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Response {
    /// Answer to [`Request::Put`].
    Put(PutResponse),
    /// Answer to [`Request::DeleteRange`].
    DeleteRange(DeleteRangeResponse),
    /// Answer to [`Request::Txn`].
    Txn(TxnResponse),
    /// Answer to [`Request::Compact`].
    Compact(CompactResponse),
    /// Answer to [`Request::LeaseGrant`].
    LeaseGrant(LeaseGrantResponse),
    /// Answer to [`Request::LeaseRevoke`].
    LeaseRevoke(LeaseRevokeResponse),
    /// Answer to [`Request::LockAcquire`].
    LockAcquire(LockAcquireResponse),
    /// Answer to [`Request::LockRelease`].
    LockRelease(LockReleaseResponse),
}

impl Response {
    /// The store revision in the response header.
    pub fn header_revision(&self) -> i64 {
        match self {
            Response::Put(r) => r.header_revision,
            Response::DeleteRange(r) => r.header_revision,
            Response::Txn(r) => r.header_revision,
            Response::Compact(r) => r.header_revision,
            Response::LeaseGrant(r) => r.header_revision,
            Response::LeaseRevoke(r) => r.header_revision,
            Response::LockAcquire(r) => r.header_revision,
            Response::LockRelease(r) => r.header_revision,
        }
    }
}

macro_rules! request_from {
    ($($variant:ident($ty:ty)),* $(,)?) => {
        $(impl From<$ty> for Request {
            fn from(request: $ty) -> Self {
                Request::$variant(request)
            }
        })*
    };
}

request_from!(
    Put(PutRequest),
    DeleteRange(DeleteRangeRequest),
    Txn(TxnRequest),
    Compact(CompactRequest),
    LeaseGrant(LeaseGrantRequest),
    LeaseRevoke(LeaseRevokeRequest),
    LockAcquire(LockAcquireRequest),
    LockRelease(LockReleaseRequest),
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_round_trip_through_postcard_and_json() {
        let txn = TxnRequest {
            compare: vec![Compare::new(
                b"k",
                CompareTarget::Version(0),
                CompareResult::Equal,
            )],
            success: vec![Op::Put(PutRequest::new(b"k", b"v"))],
            failure: vec![Op::Range(RangeRequest::key(b"k"))],
            fence: Some(Fence {
                lock: "jobs".into(),
                token: 7,
            }),
        };
        let command = Command::new(txn).with_request_id("client-7:42");
        let bytes = postcard::to_allocvec(&command).expect("encode");
        let back: Command = postcard::from_bytes(&bytes).expect("decode");
        assert_eq!(back, command);
        let json = serde_json::to_string(&command).expect("json encode");
        let back: Command = serde_json::from_str(&json).expect("json decode");
        assert_eq!(back, command);
    }
}
