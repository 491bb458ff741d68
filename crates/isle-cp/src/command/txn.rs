//! Transactions: compares, then the success or the failure branch, as etcd's `TxnRequest`.

use serde::{Deserialize, Serialize};

use super::kv::{
    DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse, RangeRequest, RangeResponse,
};
use super::lease::Fence;

/// What a [`Compare`] looks at, carrying the operand (etcd's `target` + `target_union`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompareTarget {
    /// The key's version (0 when missing).
    Version(i64),
    /// The key's create revision (0 when missing).
    Create(i64),
    /// The key's mod revision (0 when missing).
    Mod(i64),
    /// The key's value, byte-wise (a missing key never matches).
    Value(#[serde(with = "serde_bytes")] Vec<u8>),
    /// The key's lease id (0 when missing or none).
    Lease(i64),
}

/// How the key's field must relate to the operand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompareResult {
    /// field == operand
    Equal,
    /// field > operand
    Greater,
    /// field < operand
    Less,
    /// field != operand
    NotEqual,
}

/// One guard of a transaction; with a `range_end`, every key in the range must satisfy it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compare {
    /// The key (must not be empty).
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    /// End of the range, same conventions as [`RangeRequest`]; empty = just `key`.
    #[serde(with = "serde_bytes")]
    pub range_end: Vec<u8>,
    /// Field and operand.
    pub target: CompareTarget,
    /// Relation that must hold.
    pub result: CompareResult,
}

impl Compare {
    /// A compare on the single key `key`.
    pub fn new(key: &[u8], target: CompareTarget, result: CompareResult) -> Self {
        Compare {
            key: key.to_vec(),
            range_end: Vec::new(),
            target,
            result,
        }
    }
}

/// One operation inside a transaction branch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Op {
    /// A read; it sees the writes of earlier ops in the same transaction.
    Range(RangeRequest),
    /// A write.
    Put(PutRequest),
    /// A delete.
    DeleteRange(DeleteRangeRequest),
    /// A nested transaction (its compares are evaluated before the outer one runs, as etcd).
    Txn(TxnRequest),
}

/// The result of one [`Op`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum OpResponse {
    /// Result of [`Op::Range`].
    Range(RangeResponse),
    /// Result of [`Op::Put`].
    Put(PutResponse),
    /// Result of [`Op::DeleteRange`].
    DeleteRange(DeleteRangeResponse),
    /// Result of [`Op::Txn`].
    Txn(TxnResponse),
}

/// If every compare holds run `success`, else `failure`; all writes share one revision.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct TxnRequest {
    /// Guards, all evaluated against the state before the transaction.
    pub compare: Vec<Compare>,
    /// Ops run when every compare holds.
    pub success: Vec<Op>,
    /// Ops run otherwise.
    pub failure: Vec<Op>,
    /// Isle: reject the whole transaction unless this is the newest fencing token of the lock.
    pub fence: Option<Fence>,
}

/// Result of a [`TxnRequest`].
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct TxnResponse {
    /// Store revision after the transaction (every nested header carries the same).
    pub header_revision: i64,
    /// Whether the success branch ran.
    pub succeeded: bool,
    /// One response per op of the branch that ran.
    pub responses: Vec<OpResponse>,
}
