//! What AP replicas say to each other (inside [`RpcRequest::Ap`](crate::message::RpcRequest)).

use isle_ap::aae::{AaeReply, AaeRequest, Hash128};
use isle_ap::{ApError, Object, Op, WriteOptions, WriteReply};
use isle_types::NodeId;
use serde::{Deserialize, Serialize};

/// Replicas' copies of keys: (storage key, copy if any).
pub type Copies = Vec<(Vec<u8>, Option<Object>)>;

/// Requests between AP replicas.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ApRequest {
    /// Coordinate a client write (sent to a primary replica by a node that is not one).
    Coordinate {
        /// Bucket.
        bucket: String,
        /// Key.
        key: Vec<u8>,
        /// Operation.
        op: Op,
        /// Consistency.
        options: WriteOptions,
    },
    /// Merge `object` into the replica's copy, or into the hint held for `hint_for`.
    Store {
        /// Storage key.
        key: Vec<u8>,
        /// The coordinator's state of the key.
        object: Object,
        /// Set when the receiver is a fallback holding the write for this primary.
        hint_for: Option<NodeId>,
    },
    /// Merge many objects into the replica (hint delivery, anti-entropy push).
    StoreMany {
        /// (storage key, object) pairs.
        objects: Vec<(Vec<u8>, Object)>,
    },
    /// The replica's copy of a key, or the hint it holds for `hint_for`.
    Fetch {
        /// Storage key.
        key: Vec<u8>,
        /// Read a fallback's hint for this primary instead of the replica's own copy.
        hint_for: Option<NodeId>,
    },
    /// The replica's copies of many keys (anti-entropy pull).
    FetchMany {
        /// Storage keys.
        keys: Vec<Vec<u8>>,
    },
    /// A step of a Merkle-tree exchange over the tree of buckets with `n` replicas.
    Aae {
        /// The replica count whose trees are compared.
        n: u32,
        /// The step.
        request: AaeRequest,
    },
    /// Drop these tombstones if the receiver's copy still has this digest (every replica
    /// was found holding the same tombstone).
    Reap {
        /// (storage key, digest of the tombstone).
        tombstones: Vec<(Vec<u8>, Hash128)>,
    },
    /// The roots of the receiver's trees with these ids (`N << 16 | partition`; one request
    /// per peer and round, so replicas in agreement cost one round trip).
    Roots {
        /// Tree ids asked.
        partitions: Vec<u32>,
    },
}

/// Answers to [`ApRequest`]s.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ApReply {
    /// Answer to [`ApRequest::Coordinate`].
    Coordinated(Result<WriteReply, ApError>),
    /// Answer to [`ApRequest::Store`] and [`ApRequest::StoreMany`]: durable when Ok.
    Stored(Result<(), ApError>),
    /// Answer to [`ApRequest::Fetch`].
    Fetched(Result<Option<Object>, ApError>),
    /// Answer to [`ApRequest::FetchMany`]: (storage key, copy) in request order.
    FetchedMany(Result<Copies, ApError>),
    /// Answer to [`ApRequest::Aae`].
    Aae(Result<AaeReply, ApError>),
    /// Answer to [`ApRequest::Roots`]: one root per partition asked, in order.
    Roots(Vec<Hash128>),
}
