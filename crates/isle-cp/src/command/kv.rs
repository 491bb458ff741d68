//! Key-value requests and responses: Range, Put, DeleteRange, Compact and watch events.

use serde::{Deserialize, Serialize};

use super::lease::Fence;

/// One key's value at some revision, as etcd's `mvccpb.KeyValue`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct KeyValue {
    /// The key.
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    /// Revision of the put that created this incarnation of the key.
    pub create_revision: i64,
    /// Revision of the last put (or, in a delete event, of the delete).
    pub mod_revision: i64,
    /// 1 on create, +1 per put; 0 in a delete event.
    pub version: i64,
    /// The value (empty with `keys_only`).
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
    /// Attached lease id, 0 for none.
    pub lease: i64,
}

/// A read of one key or a key range, optionally at a past revision.
///
/// `range_end` follows etcd: empty means the single key `key`; `b"\0"` means every key `>= key`;
/// anything else the half-open range `[key, range_end)` (empty when `range_end <= key`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RangeRequest {
    /// First key (must not be empty).
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    /// End of the range, see the type doc.
    #[serde(with = "serde_bytes")]
    pub range_end: Vec<u8>,
    /// Revision to read at; 0 = latest.
    pub revision: i64,
    /// Maximum keys returned; 0 or negative = no limit.
    pub limit: i64,
    /// Return keys without values.
    pub keys_only: bool,
    /// Return only the count.
    pub count_only: bool,
    /// Stale read allowed: irrelevant to the state machine, the shell decides how to read.
    pub serializable: bool,
}

impl RangeRequest {
    /// A read of the single key `key` at the latest revision.
    pub fn key(key: &[u8]) -> Self {
        RangeRequest {
            key: key.to_vec(),
            ..RangeRequest::default()
        }
    }

    /// A read of every key starting with `prefix` (etcd's `--prefix`; empty = every key).
    pub fn prefix(prefix: &[u8]) -> Self {
        let (key, range_end) = prefix_range(prefix);
        RangeRequest {
            key,
            range_end,
            ..RangeRequest::default()
        }
    }
}

/// etcd's `GetPrefixRangeEnd`: the smallest key greater than every key starting with `prefix`.
///
/// Returns `b"\0"` (every key) when `prefix` is empty or all `0xff`.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// `(key, range_end)` for a prefix, as clientv3's `WithPrefix` (empty prefix = `\0`..`\0`).
fn prefix_range(prefix: &[u8]) -> (Vec<u8>, Vec<u8>) {
    if prefix.is_empty() {
        return (vec![0], vec![0]);
    }
    (prefix.to_vec(), prefix_end(prefix))
}

/// Result of a [`RangeRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RangeResponse {
    /// Store revision when the read was served.
    pub header_revision: i64,
    /// Matching keys in key order, at most `limit`.
    pub kvs: Vec<KeyValue>,
    /// Number of keys in the range, ignoring `limit`.
    pub count: i64,
    /// True when `limit` cut the result short.
    pub more: bool,
}

/// Write one key.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PutRequest {
    /// The key (must not be empty).
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    /// The value.
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
    /// Lease to attach, 0 for none; must exist.
    pub lease: i64,
    /// Return the previous value.
    pub prev_kv: bool,
    /// Keep the current value (the key must exist; `value` must be empty).
    pub ignore_value: bool,
    /// Keep the current lease (the key must exist; `lease` must be 0).
    pub ignore_lease: bool,
    /// Isle: reject the write unless this is the newest fencing token of the lock.
    pub fence: Option<Fence>,
}

impl PutRequest {
    /// A plain put of `value` at `key`.
    pub fn new(key: &[u8], value: &[u8]) -> Self {
        PutRequest {
            key: key.to_vec(),
            value: value.to_vec(),
            ..PutRequest::default()
        }
    }
}

/// Result of a [`PutRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PutResponse {
    /// Store revision after the put.
    pub header_revision: i64,
    /// The previous value, when asked for and present.
    pub prev_kv: Option<KeyValue>,
}

/// Delete one key or a range (same `range_end` conventions as [`RangeRequest`]).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DeleteRangeRequest {
    /// First key (must not be empty).
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    /// End of the range.
    #[serde(with = "serde_bytes")]
    pub range_end: Vec<u8>,
    /// Return the deleted values.
    pub prev_kv: bool,
    /// Isle: reject the delete unless this is the newest fencing token of the lock.
    pub fence: Option<Fence>,
}

impl DeleteRangeRequest {
    /// A delete of the single key `key`.
    pub fn key(key: &[u8]) -> Self {
        DeleteRangeRequest {
            key: key.to_vec(),
            ..DeleteRangeRequest::default()
        }
    }

    /// A delete of every key starting with `prefix` (empty = every key).
    pub fn prefix(prefix: &[u8]) -> Self {
        let (key, range_end) = prefix_range(prefix);
        DeleteRangeRequest {
            key,
            range_end,
            ..DeleteRangeRequest::default()
        }
    }
}

/// Result of a [`DeleteRangeRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DeleteRangeResponse {
    /// Store revision after the delete (unchanged when nothing was deleted).
    pub header_revision: i64,
    /// Number of keys deleted.
    pub deleted: i64,
    /// The deleted values, when asked for.
    pub prev_kvs: Vec<KeyValue>,
}

/// Drop history below `revision` (reads and watches below it then fail with `Compacted`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CompactRequest {
    /// The new compaction point; must be above the old one and at most the current revision.
    pub revision: i64,
}

/// Result of a [`CompactRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CompactResponse {
    /// Store revision (compaction does not change it).
    pub header_revision: i64,
}

/// Whether a watch event is a put or a delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    /// The key was written.
    Put,
    /// The key was deleted.
    Delete,
}

/// One change in the MVCC history, as etcd's `mvccpb.Event`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Put or delete.
    pub kind: EventKind,
    /// The new value; for a delete only `key` and `mod_revision` (the delete's revision) are set.
    pub kv: KeyValue,
    /// The value before this event, when it is still in the history.
    pub prev_kv: Option<KeyValue>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_matches_etcd() {
        let cases: [(&[u8], &[u8]); 5] = [
            (b"a", b"b"),
            (b"a/", b"a0"),
            (b"a\xff", b"b"),
            (b"\xff\xff", b"\0"),
            (b"", b"\0"),
        ];
        for (prefix, end) in cases {
            assert_eq!(prefix_end(prefix), end, "prefix {prefix:?}");
        }
    }
}
