//! Named bounds on everything a request can make the state machine hold or do.
//!
//! etcd bounds a request at 1.5 MiB and keys not at all; Isle bounds keys to keep index
//! entries and lock-name scans cheap, and values to keep one log entry well under the
//! transport's frame limit.

/// Longest key, range end or lock waiter key, in bytes (4 KiB).
pub const KEY_BYTES_MAX: usize = 4 * 1024;
/// Largest value, in bytes (1 MiB).
pub const VALUE_BYTES_MAX: usize = 1024 * 1024;
/// Most entries in one compare, success or failure list (etcd's `--max-txn-ops` default).
pub const TXN_OPS_MAX: usize = 128;
/// Deepest transaction nesting (the outer transaction is depth 1).
pub const TXN_DEPTH_MAX: usize = 8;
/// Longest idempotency key, in bytes.
pub const REQUEST_ID_BYTES_MAX: usize = 256;
/// Most expired idempotency entries purged by one `apply` (bounded work per entry).
pub const IDEMPOTENCY_PURGE_PER_APPLY_MAX: usize = 64;
