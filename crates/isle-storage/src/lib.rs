//! Durable storage for an Isle node, on redb.
//!
//! One redb file per node (`<data-dir>/isle.redb`) holds every table the node keeps: today its
//! identity and the membership it has learned, and the Raft log of the CP keyspace
//! ([`RedbLogStore`], openraft's log storage); and the AP keyspace's objects, hints and Merkle leaves ([`ApStore`]). redb was
//! chosen because it is pure Rust, ACID with `Durability::Immediate` (fsync before a commit
//! returns), has no background threads of its own (the Raft log's flusher is ours, and only on disk, so
//! simulation stays deterministic) and offers an in-memory
//! backend, which is what the simulator plugs in.

mod ap;
mod meta;
mod raft_log;
mod record;
mod records;
mod wal;

pub use ap::{
    ApStore, ApStoreError, ApWrite, CHECKPOINT_BYTES, Durable, KeyedObject, StoredHint, StoredLeaf,
};
pub use meta::RedbStore;
pub use raft_log::{
    CorruptRecord, LIMITED_READ_BYTES_MAX, LIMITED_READ_ENTRIES_MAX, LogStats, RecordKey,
    RedbLogStore,
};
