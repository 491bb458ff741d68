//! The seam between the AP interfaces (HTTP, RESP) and the node's AP coordinator, so the
//! interfaces can be tested against a stand-in and served by the real thing.

use std::future::Future;

use isle_ap::{ApError, BucketInfo, Op, ReadOptions, ReadReply, WriteOptions, WriteReply};

/// What an AP interface needs from a node.
pub trait ApBackend: Clone + Send + Sync + 'static {
    /// Reads `key` from `bucket`, merging the replicas' answers.
    fn get(
        &self,
        bucket: String,
        key: Vec<u8>,
        options: ReadOptions,
    ) -> impl Future<Output = Result<ReadReply, ApError>> + Send;

    /// Applies `op` to `key` in `bucket` and replicates it.
    fn apply(
        &self,
        bucket: String,
        key: Vec<u8>,
        op: Op,
        options: WriteOptions,
    ) -> impl Future<Output = Result<WriteReply, ApError>> + Send;

    /// The buckets this node serves, in configuration order (RESP `SELECT i` picks the i-th).
    fn buckets(&self) -> Vec<BucketInfo>;

    /// This node's id.
    fn node_id(&self) -> u64;
}
