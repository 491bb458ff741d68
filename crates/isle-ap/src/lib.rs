//! The AP keyspace's deterministic core (issue 4): everything a coordinator or replica decides,
//! with no sockets, clocks or randomness inside. The node shell (`isle-node/src/ap`) feeds it
//! member lists, clock readings and replies, and does the I/O it asks for.
//!
//! - [`ring`]: consistent hashing with virtual nodes; partitions and their preference lists.
//! - [`level`]: per-request consistency (`ONE`, `QUORUM`, `ALL`, `LOCAL_QUORUM`, ...) and the
//!   [`Tally`] that decides, on `isle-quorum`'s tracker, when a request has enough replicas.
//! - [`coord`]: the coordinator's decisions — which replicas a read or write goes to (fallbacks
//!   and their hints), forward or refuse, when the level is met, which replicas read repair
//!   brings up to date.
//! - [`object`]: what a replica stores for a key under each merge rule, and the operations on it.
//! - [`hlc`]: the hybrid logical clock that stamps `lww` writes.
//! - [`request`]: what clients ask and get back, shared by every interface.
//! - [`merkle`]: per-partition Merkle trees updated on every write, and their diff.
//! - [`aae`]: active anti-entropy, the exchange that finds the keys two replicas hold differently.

pub mod aae;
pub mod coord;
pub mod hlc;
pub mod level;
pub mod merkle;
pub mod object;
pub mod request;
pub mod ring;

pub use hlc::Hlc;
pub use level::{Level, Tally};
pub use object::{ApplyError, FieldValue, Object, Op, Rule, Value, WriteContext};
pub use request::{
    ApError, BucketInfo, ReadOptions, ReadReply, Replicas, WriteOptions, WriteReply,
};
pub use ring::{PartitionId, Ring};

/// The 64-bit hash that places a key on the ring (bucket and key, length-prefixed).
pub fn key_hash(bucket: &str, key: &[u8]) -> u64 {
    let mut bytes = Vec::with_capacity(bucket.len() + key.len() + 4);
    bytes.extend_from_slice(
        &u32::try_from(bucket.len())
            .unwrap_or(u32::MAX)
            .to_le_bytes(),
    );
    bytes.extend_from_slice(bucket.as_bytes());
    bytes.extend_from_slice(key);
    xxhash_rust::xxh3::xxh3_64(&bytes)
}
