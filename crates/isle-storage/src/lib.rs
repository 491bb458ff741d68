//! Durable storage for an Isle node, on redb.
//!
//! One redb file per node (`<data-dir>/isle.redb`) holds every table the node keeps: today its
//! identity and the membership it has learned; later the Raft log and the AP keyspace. redb was
//! chosen because it is pure Rust, ACID with `Durability::Immediate` (fsync before a commit
//! returns), has no background threads (deterministic under simulation) and offers an in-memory
//! backend, which is what the simulator plugs in.

mod meta;

pub use meta::RedbStore;
