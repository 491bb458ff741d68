//! `CpError`: every way the CP state machine refuses a request, as a typed, serializable value.
//!
//! Errors are replicated state too: the idempotency table records them, so a retried request
//! gets the same error back. Messages say what the caller can do about it.

use serde::{Deserialize, Serialize};

/// Why the CP state machine refused a request or a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum CpError {
    /// The revision asked for has been compacted away.
    #[error(
        "revision {requested} has been compacted (history starts at {compacted}): read at a newer revision or restart the watch from {compacted}"
    )]
    Compacted {
        /// Revision asked for.
        requested: i64,
        /// Oldest revision still readable.
        compacted: i64,
    },
    /// The revision asked for is beyond the store's current revision.
    #[error(
        "revision {requested} is in the future (current revision is {current}): retry later or read at revision 0 (latest)"
    )]
    FutureRevision {
        /// Revision asked for.
        requested: i64,
        /// Current revision.
        current: i64,
    },
    /// No lease with this id exists (never granted, revoked or expired).
    #[error("lease {id} not found: it was never granted or has expired; grant a new lease")]
    LeaseNotFound {
        /// The lease id.
        id: i64,
    },
    /// A lease with this id already exists.
    #[error("lease {id} already exists: pick another id or pass 0 to get a fresh one")]
    LeaseExists {
        /// The lease id.
        id: i64,
    },
    /// Lease TTLs must be at least one second.
    #[error("lease ttl {ttl_secs}s is invalid: use a ttl of at least 1 second")]
    InvalidTtl {
        /// TTL asked for.
        ttl_secs: i64,
    },
    /// `ignore_value`/`ignore_lease` on a key that does not exist.
    #[error("key not found: ignore_value/ignore_lease need an existing key; put it first")]
    KeyNotFound,
    /// A newer fencing token has been granted: the presenter no longer holds the lock.
    #[error(
        "fencing token {presented} is stale: token {current} has since been granted; re-acquire the lock"
    )]
    FencingTokenStale {
        /// Token presented with the write.
        presented: i64,
        /// Highest token granted for the lock.
        current: i64,
    },
    /// The token presented was never granted for that lock.
    #[error(
        "fencing token {presented} was never granted (highest granted is {current}): acquire the lock and use its token"
    )]
    FencingTokenUnknown {
        /// Token presented with the write.
        presented: i64,
        /// Highest token granted for the lock (0 if none).
        current: i64,
    },
    /// The key (or range end, or lock name) is too long.
    #[error("key of {size} bytes is too large: keys may be at most {max} bytes")]
    KeyTooLarge {
        /// Size presented.
        size: usize,
        /// Limit.
        max: usize,
    },
    /// The value is too large.
    #[error("value of {size} bytes is too large: values may be at most {max} bytes")]
    ValueTooLarge {
        /// Size presented.
        size: usize,
        /// Limit.
        max: usize,
    },
    /// A transaction list (compares, success or failure) holds too many entries.
    #[error("transaction has {count} operations in one list: at most {max} are allowed, split it")]
    TooManyOps {
        /// Entries in the longest list.
        count: usize,
        /// Limit.
        max: usize,
    },
    /// Transactions nest too deeply.
    #[error("transactions nest {depth} deep: at most {max} levels are allowed")]
    TxnTooDeep {
        /// Depth presented.
        depth: usize,
        /// Limit.
        max: usize,
    },
    /// The key is empty.
    #[error("key is empty: give a key (use b\"\\0\" with range_end b\"\\0\" for every key)")]
    EmptyKey,
    /// The request is malformed in some other way.
    #[error("invalid request: {reason}")]
    InvalidRequest {
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// The request id was already used for a different request within the idempotency window.
    #[error(
        "request id already used for a different request: use a fresh request id per distinct request"
    )]
    RequestIdConflict,
    /// Snapshot bytes failed the format, checksum or invariant checks.
    #[error("snapshot is corrupt ({reason}): install a snapshot from another node")]
    CorruptSnapshot {
        /// What failed.
        reason: String,
    },
    /// The log index was already applied (a replay after restart); nothing changed.
    #[error("log index {index} already applied (last applied {last_applied}): skip it")]
    StaleIndex {
        /// Index presented.
        index: u64,
        /// Last index applied.
        last_applied: u64,
    },
}

impl CpError {
    /// What the refusal means for the request's effect: the state machine applied nothing.
    pub fn kind(&self) -> isle_types::ErrorKind {
        use isle_types::ErrorKind::{Invalid, Refused, Unknown};
        match self {
            // The state of the store (or of a lock) refuses it now; another time it may pass.
            CpError::Compacted { .. }
            | CpError::FutureRevision { .. }
            | CpError::LeaseNotFound { .. }
            | CpError::LeaseExists { .. }
            | CpError::KeyNotFound
            | CpError::FencingTokenStale { .. }
            | CpError::FencingTokenUnknown { .. }
            | CpError::RequestIdConflict => Refused,
            // The request itself is wrong.
            CpError::InvalidTtl { .. }
            | CpError::KeyTooLarge { .. }
            | CpError::ValueTooLarge { .. }
            | CpError::TooManyOps { .. }
            | CpError::TxnTooDeep { .. }
            | CpError::EmptyKey
            | CpError::InvalidRequest { .. } => Invalid,
            // Not about a client request: if one ever carries these, its fate is not known.
            CpError::CorruptSnapshot { .. } | CpError::StaleIndex { .. } => Unknown,
        }
    }
}
