//! What clients ask the AP keyspace and what they get back: the types shared by the node's
//! coordinator and every interface (HTTP, RESP, CLI).

use isle_crdt::{Context, Stamp};
use serde::{Deserialize, Serialize};

use crate::level::{Level, LevelError};
use crate::object::{ApplyError, Rule, Value};

/// Longest key accepted, in bytes.
pub const MAX_KEY_BYTES: usize = 1024;
/// Largest value accepted, in bytes.
pub const MAX_VALUE_BYTES: usize = 1 << 20;
/// Longest bucket name.
pub const MAX_BUCKET_BYTES: usize = 64;

/// Options of a read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadOptions {
    /// Replicas that must answer.
    pub r: Level,
    /// Only primaries count (Riak's `pr`): no answers from fallbacks.
    pub strict: bool,
}

impl Default for ReadOptions {
    fn default() -> Self {
        Self {
            r: Level::Quorum,
            strict: false,
        }
    }
}

/// Options of a write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteOptions {
    /// Replicas that must acknowledge (durably).
    pub w: Level,
    /// Only primaries count (Riak's `pw`): no sloppy quorum, no fallback hints counted.
    pub strict: bool,
}

impl Default for WriteOptions {
    fn default() -> Self {
        Self {
            w: Level::Quorum,
            strict: false,
        }
    }
}

/// How many replicas took part in a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replicas {
    /// Replicas that answered (and count for the level).
    pub answered: u32,
    /// Replicas asked.
    pub asked: u32,
    /// Replicas the level needed.
    pub needed: u32,
    /// The level, as given.
    pub level: String,
    /// Fallbacks that stood in for unreachable primaries (holding hints).
    pub fallbacks: u32,
}

/// The answer to a read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadReply {
    /// The merged value.
    pub value: Value,
    /// The causal context to send back with a write that replaces what was read.
    pub context: Context,
    /// The bucket's rule for plain values.
    pub rule: Rule,
    /// For `lww` values: the winning write's hybrid timestamp.
    pub stamp: Option<Stamp>,
    /// Who answered.
    pub replicas: Replicas,
}

/// The answer to a write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteReply {
    /// The key's value on the coordinator after the write.
    pub value: Value,
    /// The context after the write (for `siblings`).
    pub context: Context,
    /// The bucket's rule for plain values.
    pub rule: Rule,
    /// For `lww` writes: the write's hybrid timestamp.
    pub stamp: Option<Stamp>,
    /// False when an idempotent retry found its request already applied.
    pub applied: bool,
    /// Who acknowledged.
    pub replicas: Replicas,
}

/// Why an AP request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum ApError {
    /// Too few replicas answered for the level.
    #[error(
        "not enough replicas: {answered} of {asked} answered, {level} needs {needed}{}; the write may still have been stored on the replicas that answered. Retry, or use a lower level (w=one) or a sloppy quorum",
        if detail.is_empty() { String::new() } else { format!(" ({detail})") }
    )]
    Unavailable {
        /// Replicas that answered.
        answered: u32,
        /// Replicas asked.
        asked: u32,
        /// Replicas needed.
        needed: u32,
        /// The level.
        level: String,
        /// More on what failed.
        detail: String,
    },
    /// The level cannot apply to this key.
    #[error(transparent)]
    Level(#[from] LevelError),
    /// The operation does not fit the key's type or value.
    #[error(transparent)]
    Apply(#[from] ApplyError),
    /// The request is malformed or too large.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// Something on this node failed (storage, encoding).
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApError {
    /// Whether the request was refused, may have been applied, or was invalid.
    pub fn kind(&self) -> isle_types::ErrorKind {
        use isle_types::ErrorKind::{Invalid, Unknown};
        match self {
            // A write may be stored on the replicas that answered (and will spread).
            ApError::Unavailable { .. } | ApError::Internal(_) => Unknown,
            ApError::Level(_) | ApError::Apply(_) | ApError::BadRequest(_) => Invalid,
        }
    }
}

/// Checks a bucket, key and value against the limits.
pub fn validate(bucket: &str, key: &[u8], value_len: usize) -> Result<(), ApError> {
    if bucket.is_empty() || bucket.len() > MAX_BUCKET_BYTES {
        return Err(ApError::BadRequest(format!(
            "bucket name must be 1..={MAX_BUCKET_BYTES} bytes, got {}",
            bucket.len()
        )));
    }
    if key.is_empty() || key.len() > MAX_KEY_BYTES {
        return Err(ApError::BadRequest(format!(
            "key must be 1..={MAX_KEY_BYTES} bytes, got {}",
            key.len()
        )));
    }
    if value_len > MAX_VALUE_BYTES {
        return Err(ApError::BadRequest(format!(
            "value of {value_len} bytes exceeds the limit of {MAX_VALUE_BYTES}"
        )));
    }
    Ok(())
}

/// A bucket: a namespace of keys with its replica count and merge rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketInfo {
    /// The bucket's name.
    pub name: String,
    /// How plain values merge.
    pub rule: Rule,
    /// Replicas per key.
    pub n: u32,
}
