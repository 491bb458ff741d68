//! `/v1/cp/...`: the CP keyspace's requests and answers. Keys and values are UTF-8 strings
//! here (bytes that are not UTF-8 are shown lossily; the etcd gRPC API carries any bytes).

use serde::{Deserialize, Serialize};

pub use isle_cp::command::Fence;
pub use isle_node::cp::{Consistency, Membership, MembershipChange};

fn is_zero(n: &i64) -> bool {
    *n == 0
}

fn is_false(flag: &bool) -> bool {
    !*flag
}

/// One key as the HTTP API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kv {
    /// Revision of the key's creation (since its last delete).
    pub create_revision: i64,
    /// The key.
    pub key: String,
    /// The lease it is attached to (0: none); absent in a transaction's `get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<i64>,
    /// Revision of its last change.
    pub mod_revision: i64,
    /// Its value.
    pub value: String,
    /// Changes since its creation.
    pub version: i64,
}

/// Body of `POST /v1/cp/put`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutBody {
    /// The fencing token this write presents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fence: Option<Fence>,
    /// The key.
    pub key: String,
    /// The lease to attach the key to (0: none).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub lease: i64,
    /// Answer with the key's previous value.
    #[serde(default, skip_serializing_if = "is_false")]
    pub prev_kv: bool,
    /// Idempotency key: a retry with the same id is applied once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// The value.
    pub value: String,
}

/// Answer to a put.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutReply {
    /// The key as it was before, when asked for (`null` otherwise).
    pub prev_kv: Option<Kv>,
    /// The revision the put created.
    pub revision: i64,
}

/// Body of `POST /v1/cp/delete`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteBody {
    /// The fencing token this write presents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fence: Option<Fence>,
    /// The key, or the prefix.
    pub key: String,
    /// Delete every key starting with `key`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub prefix: bool,
    /// Answer with the deleted keys.
    #[serde(default, skip_serializing_if = "is_false")]
    pub prev_kv: bool,
    /// Idempotency key: a retry with the same id is applied once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// Answer to a delete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteReply {
    /// Keys deleted.
    pub deleted: i64,
    /// The deleted keys, when asked for.
    pub prev_kvs: Vec<Kv>,
    /// The revision after the delete.
    pub revision: i64,
}

/// Query of `GET /v1/cp/get`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetQuery {
    /// Linearizable (default) or stale.
    #[serde(default)]
    pub consistency: Consistency,
    /// The key, or the prefix.
    pub key: String,
    /// Most keys to return (0: all).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub limit: i64,
    /// Every key starting with `key`.
    #[serde(default)]
    pub prefix: bool,
    /// Read at this past revision (0: the latest).
    #[serde(default)]
    pub revision: i64,
}

/// Answer to a get.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetReply {
    /// The answering replica's last applied log index, when it was the node asked.
    pub applied_index: Option<u64>,
    /// How the read was served.
    pub consistency: Consistency,
    /// Keys in the range (more than `kvs` holds when limited).
    pub count: i64,
    /// The keys.
    pub kvs: Vec<Kv>,
    /// Whether a limit cut the answer short.
    pub more: bool,
    /// The revision read at.
    pub revision: i64,
    /// The node whose replica answered.
    pub served_by: u64,
}

/// Query of `GET /v1/cp/fence`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FenceQuery {
    /// The lock's name.
    pub lock: String,
    /// The token presented.
    pub token: i64,
}

/// Answer to a fence check that passed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FenceReply {
    /// The lock's name.
    pub lock: String,
    /// The token, the newest granted.
    pub token: i64,
    /// Always true (a stale token is a 409).
    pub valid: bool,
}

/// Body of `POST /v1/cp/compact`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompactBody {
    /// Drop history below this revision.
    pub revision: i64,
}

/// Answer to a compaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompactReply {
    /// The revision history now starts at.
    pub compacted_to: i64,
    /// The revision after the compaction.
    pub revision: i64,
}

/// Body of `POST /v1/cp/lease/grant`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaseGrantBody {
    /// The lease id wanted (0: the server picks one).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub id: i64,
    /// Time to live, seconds.
    pub ttl_secs: i64,
}

/// Answer to a lease grant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseGrantReply {
    /// The lease's id.
    pub id: i64,
    /// The revision after the grant.
    pub revision: i64,
    /// Its time to live, seconds.
    pub ttl_secs: i64,
}

/// Body of the lease calls that name one lease (keep-alive, revoke).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaseIdBody {
    /// The lease's id.
    pub id: i64,
}

/// Answer to a keep-alive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseKeepAliveReply {
    /// The lease's id.
    pub id: i64,
    /// Its time to live from now, seconds.
    pub ttl_secs: i64,
}

/// Answer to a revoke.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRevokeReply {
    /// The lease's id.
    pub id: i64,
    /// The revision after the revoke (its keys deleted).
    pub revision: i64,
}

/// One lease in `GET /v1/cp/leases`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The lease's id.
    pub id: i64,
    /// Keys attached to it.
    pub keys: Vec<String>,
    /// Seconds left, when this node (the leader) knows.
    pub remaining_secs: Option<i64>,
    /// Its time to live, seconds.
    pub ttl_secs: i64,
}

/// Answer to `GET /v1/cp/leases`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeasesReply {
    /// Every lease.
    pub leases: Vec<Lease>,
}

fn lock_timeout_ms() -> u64 {
    10_000
}

/// Body of `POST /v1/cp/lock`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockBody {
    /// The lease the lock is held under.
    pub lease: i64,
    /// The lock's name.
    pub name: String,
    /// Give up waiting after this long (default 10 s, at most 300 s).
    #[serde(default = "lock_timeout_ms")]
    pub timeout_ms: u64,
}

/// Answer to a lock that was granted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockReply {
    /// The holder's key: pass it to unlock.
    pub key: String,
    /// The lease it is held under.
    pub lease: i64,
    /// The lock's name.
    pub name: String,
    /// The revision of the grant.
    pub revision: i64,
    /// The fencing token: the key's create revision.
    pub token: i64,
}

/// Body of `POST /v1/cp/unlock`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnlockBody {
    /// The holder's key, as the lock answered.
    pub key: String,
}

/// Answer to an unlock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnlockReply {
    /// Whether the key was still held.
    pub released: bool,
    /// The revision after the unlock.
    pub revision: i64,
}

/// Body of `POST /v1/cp/txn`: compares, then the `success` or the `failure` ops.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TxnBody {
    /// Conditions, all of which must hold for `success` to run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub compare: Vec<Compare>,
    /// Ops run when a compare fails.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failure: Vec<TxnOp>,
    /// The fencing token this transaction presents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fence: Option<Fence>,
    /// Idempotency key: a retry with the same id is applied once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Ops run when every compare holds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub success: Vec<TxnOp>,
}

/// One condition of a transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Compare {
    /// The key, or the prefix.
    pub key: String,
    /// Every key starting with `key`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub prefix: bool,
    /// `=`, `!=`, `>` or `<`.
    pub result: String,
    /// `version`, `create`, `mod`, `value` or `lease`.
    pub target: String,
    /// What the target is compared with: text for `value`, a number for the others.
    pub value: CompareValue,
}

/// A compare's operand.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum CompareValue {
    /// A version, revision or lease.
    Int(i64),
    /// A value.
    Text(String),
}

/// One op of a transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum TxnOp {
    /// Delete a key or a prefix.
    Delete {
        /// The key, or the prefix.
        key: String,
        /// Every key starting with `key`.
        #[serde(default, skip_serializing_if = "is_false")]
        prefix: bool,
    },
    /// Read a key or a prefix.
    Get {
        /// The key, or the prefix.
        key: String,
        /// Every key starting with `key`.
        #[serde(default, skip_serializing_if = "is_false")]
        prefix: bool,
    },
    /// Write a key.
    Put {
        /// The key.
        key: String,
        /// The lease to attach it to (0: none).
        #[serde(default, skip_serializing_if = "is_zero")]
        lease: i64,
        /// The value.
        value: String,
    },
}

/// Answer to a transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnReply {
    /// One answer per op run.
    pub responses: Vec<TxnOpReply>,
    /// The revision after the transaction.
    pub revision: i64,
    /// Whether every compare held (`success` ran).
    pub succeeded: bool,
}

/// The answer to one op of a transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TxnOpReply {
    /// A delete.
    Delete {
        /// Keys deleted.
        deleted: i64,
    },
    /// A get.
    Get {
        /// Keys in the range.
        count: i64,
        /// The keys.
        kvs: Vec<Kv>,
    },
    /// A put.
    Put {
        /// The revision it created.
        revision: i64,
    },
    /// A nested transaction.
    Txn {
        /// Whether its compares held.
        succeeded: bool,
    },
}

/// Query of `GET /v1/cp/watch`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchQuery {
    /// The key, or the prefix.
    pub key: String,
    /// Every key starting with `key`.
    #[serde(default)]
    pub prefix: bool,
    /// Replay from this revision (0: changes from now on).
    #[serde(default)]
    pub start_revision: i64,
}

/// What a watch event did to its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WatchEventType {
    /// Written.
    Put,
    /// Deleted.
    Delete,
}

impl WatchEventType {
    /// Its name on the wire (also the SSE event's name).
    pub fn name(self) -> &'static str {
        match self {
            WatchEventType::Put => "put",
            WatchEventType::Delete => "delete",
        }
    }
}

/// The data of one watch event (SSE `put` or `delete`; an `error` event carries an
/// [`ErrorBody`](super::ErrorBody)).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchEvent {
    /// The key.
    pub key: String,
    /// The value before the change, when the history kept it.
    pub prev_value: Option<String>,
    /// The revision of the change.
    pub revision: i64,
    /// Put or delete.
    #[serde(rename = "type")]
    pub kind: WatchEventType,
    /// The value after the change (empty for a delete).
    pub value: String,
    /// The key's version after the change.
    pub version: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_leave_defaults_out_and_replies_keep_their_nulls() {
        let put = PutBody {
            key: "k".into(),
            value: "v".into(),
            ..PutBody::default()
        };
        assert_eq!(
            serde_json::to_string(&put).expect("encodes"),
            r#"{"key":"k","value":"v"}"#
        );
        let reply = PutReply {
            prev_kv: None,
            revision: 7,
        };
        assert_eq!(
            serde_json::to_string(&reply).expect("encodes"),
            r#"{"prev_kv":null,"revision":7}"#
        );
    }

    #[test]
    fn a_transaction_round_trips() {
        let text = r#"{"compare":[{"key":"k","result":"=","target":"version","value":0},{"key":"k","result":"=","target":"value","value":"v"}],"request_id":"r","success":[{"put":{"key":"k","value":"new"}},{"get":{"key":"k","prefix":true}}]}"#;
        let body: TxnBody = serde_json::from_str(text).expect("decodes");
        assert_eq!(body.compare[0].value, CompareValue::Int(0));
        assert_eq!(body.compare[1].value, CompareValue::Text("v".into()));
        assert_eq!(serde_json::to_string(&body).expect("encodes"), text);
        let reply = r#"{"responses":[{"put":{"revision":3}},{"get":{"count":1,"kvs":[{"create_revision":3,"key":"k","mod_revision":3,"value":"new","version":1}]}}],"revision":3,"succeeded":true}"#;
        let decoded: TxnReply = serde_json::from_str(reply).expect("decodes");
        assert_eq!(decoded.responses[0], TxnOpReply::Put { revision: 3 });
        assert_eq!(serde_json::to_string(&decoded).expect("encodes"), reply);
    }
}
