//! Lease and lock requests, fences, and the read-side views of leases and lock owners.

use serde::{Deserialize, Serialize};

/// A fencing token presented with a write: the write is accepted only while `token` is the
/// newest token granted for `lock`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Fence {
    /// Lock name (as given to `LockAcquire`).
    pub lock: String,
    /// The token the writer was granted.
    pub token: i64,
}

/// Create a lease.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LeaseGrantRequest {
    /// Requested id; 0 = let the state machine pick the next free id.
    pub id: i64,
    /// Time to live in seconds, at least 1.
    pub ttl_secs: i64,
}

/// Result of a [`LeaseGrantRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LeaseGrantResponse {
    /// Store revision (granting does not change it).
    pub header_revision: i64,
    /// The lease id granted.
    pub id: i64,
    /// The TTL granted.
    pub ttl_secs: i64,
}

/// Delete a lease and every key attached to it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LeaseRevokeRequest {
    /// The lease id.
    pub id: i64,
}

/// Result of a [`LeaseRevokeRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LeaseRevokeResponse {
    /// Store revision after the deletes (one bump for all of them, none if no keys).
    pub header_revision: i64,
}

/// A lease as the state machine knows it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LeaseInfo {
    /// The lease id.
    pub id: i64,
    /// Granted TTL in seconds.
    pub ttl_secs: i64,
    /// Leader's wall time (Unix ms) in the grant's log entry.
    pub granted_unix_ms: u64,
    /// Keys attached, in key order.
    pub keys: Vec<Vec<u8>>,
}

/// Enqueue a waiter for lock `name` under `lease` (etcd's lock recipe).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LockAcquireRequest {
    /// Lock name; the waiter key is `<name>/<lease in lowercase hex>`.
    pub name: String,
    /// Lease holding the waiter key (must exist); when it ends, the waiter is gone.
    pub lease: i64,
}

/// Result of a [`LockAcquireRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LockAcquireResponse {
    /// Store revision after the waiter key was created (or found).
    pub header_revision: i64,
    /// The waiter key.
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    /// The fencing token: the waiter key's create revision.
    pub token: i64,
    /// Whether this waiter holds the lock now; if not, wait for the earlier waiters to go.
    pub is_holder: bool,
}

/// Delete a lock waiter key.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LockReleaseRequest {
    /// The waiter key returned by `LockAcquire`.
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
}

/// Result of a [`LockReleaseRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LockReleaseResponse {
    /// Store revision after the delete.
    pub header_revision: i64,
    /// False when the key was already gone.
    pub released: bool,
}

/// The current holder of a lock.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LockOwner {
    /// The holder's waiter key.
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    /// Its fencing token (create revision).
    pub token: i64,
    /// The lease holding it.
    pub lease: i64,
}
