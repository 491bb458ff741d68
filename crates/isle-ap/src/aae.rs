//! Active anti-entropy between two replicas of one partition: a sans-IO exchange over their
//! [`Tree`]s that finds every key whose copies differ, in as few bytes as the trees allow.
//!
//! The initiator A drives an [`Exchange`]; the responder B answers each [`AaeRequest`] with
//! [`respond`], a pure function of its tree and its keys. The conversation:
//!
//! 1. A sends its root ([`AaeRequest::Root`], with the tree [`Shape`]). B answers
//!    [`AaeReply::Same`] if its root is equal — one round trip for replicas in sync — or else the
//!    hashes of its root's children.
//! 2. A compares them with its own and asks, for every differing node of that level at once,
//!    for B's children ([`AaeRequest::Children`]): one round trip per level. B sends every
//!    child but each node's last, which A derives as the node's hash XOR the others (inner
//!    nodes are the XOR of their children, see [`crate::merkle`]).
//! 3. At the leaves, A asks for B's (storage key, digest) list of every differing leaf
//!    ([`AaeRequest::Keys`], at most [`ExchangeConfig::max_leaves_per_request`] leaves a
//!    request) and compares it with its own ([`LeafKeys`]).
//!
//! A node whose B-side hash is 0 holds nothing on B, so A resolves it from its own keys
//! without descending (a replica that lost everything costs one round trip to find).
//! A single differing key is thus found in `depth + 1` round trips, and the bytes grow with the
//! number of differing keys, not with the partition's size.
//!
//! The result ([`AaeOutcome`]) lists every key whose (storage key, digest) differs: those A
//! holds must be pushed to B, those B holds pulled from B; a key held differently by both is
//! both, and the two copies are merged on each side ([`Object::merge`](crate::Object::merge)).
//! Streaming the objects is the caller's job. The exchange reads the trees as they are at each
//! step: a write landing mid-exchange may add a key that is already equal again (harmless:
//! merging is idempotent) or hide one until the next exchange.
//!
//! Absence counts as a state: a key A deleted by removing it (rather than keeping a tombstone)
//! and B still holds is reported as one to pull, and merging brings it back.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::PartitionId;
use crate::merkle::{Shape, Tree, leaf_hash, storage_key_hash};

/// A 128-bit hash as it travels: 16 bytes, big-endian (postcard would spend up to 19 on a
/// varint `u128`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Hash128(pub u128);

impl Serialize for Hash128 {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.to_be_bytes().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Hash128 {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        <[u8; 16]>::deserialize(deserializer).map(|bytes| Hash128(u128::from_be_bytes(bytes)))
    }
}

/// What a replica holds in one leaf; the node implements it as a range scan of its store over
/// [`Shape::leaf_range`]. The digest of a stored object is xxh3-128 of its stored encoding
/// ([`Object::digest`](crate::Object::digest)), so no decoding is needed.
pub trait LeafKeys {
    /// The (storage key, digest) of every key held in `leaf` of `partition`.
    fn keys_in_leaf(&self, partition: PartitionId, leaf: u32) -> Vec<(Vec<u8>, u128)>;
}

/// What the initiator asks (postcard on the wire).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AaeRequest {
    /// Opens an exchange: A's root. B answers [`AaeReply::Same`] if its root is equal, else the
    /// hashes of all its root's children (or, if the root is the only leaf, its keys).
    Root {
        /// The partition.
        partition: PartitionId,
        /// A's tree shape; B refuses a different one.
        shape: Shape,
        /// A's root hash.
        root: Hash128,
    },
    /// B's hashes of the children of these nodes at `level` (each known to differ), all but
    /// each node's last child, node after node.
    Children {
        /// The partition.
        partition: PartitionId,
        /// The level of the nodes (0: the root).
        level: u32,
        /// The nodes, by index within their level.
        indices: Vec<u32>,
    },
    /// B's (storage key, digest) entries of these leaves.
    Keys {
        /// The partition.
        partition: PartitionId,
        /// The leaves.
        leaves: Vec<u32>,
    },
}

impl AaeRequest {
    /// The partition the request is about.
    pub fn partition(&self) -> PartitionId {
        match self {
            AaeRequest::Root { partition, .. }
            | AaeRequest::Children { partition, .. }
            | AaeRequest::Keys { partition, .. } => *partition,
        }
    }
}

/// What the responder answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AaeReply {
    /// The roots are equal: the replicas agree.
    Same,
    /// Hashes answering [`AaeRequest::Root`] or [`AaeRequest::Children`].
    Hashes(Vec<Hash128>),
    /// (storage key, digest) entries of the leaves asked, in the order asked.
    Keys(Vec<(Vec<u8>, Hash128)>),
    /// The request cannot be answered.
    Refused(Refusal),
}

/// Why a responder cannot answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Refusal {
    /// The responder holds no replica of the partition.
    #[error("the responder holds no replica of this partition")]
    NotHeld,
    /// The trees have different shapes (the responder's is given).
    #[error("the responder's trees have another shape: {0}")]
    Shape(Shape),
    /// A level, node or leaf index out of range.
    #[error("level, node or leaf index out of range")]
    BadRequest,
}

/// Why an exchange failed (the caller may retry later; nothing was changed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AaeError {
    /// The responder refused.
    #[error("refused: {0}")]
    Refused(Refusal),
    /// The reply does not answer the request (wrong kind, count, or a key outside the leaves).
    #[error("unexpected reply: {0}")]
    Unexpected(&'static str),
    /// The exchange already ended.
    #[error("the exchange already ended")]
    Ended,
}

/// The postcard-encoded size of a message, as counted in [`ExchangeStats`].
pub fn wire_size<T: Serialize + ?Sized>(message: &T) -> u64 {
    postcard::experimental::serialized_size(message).map_or(0, |n| n as u64)
}

/// The responder's side: B's answer to one request, from its tree of the request's partition
/// and its keys. Pure; the caller holding no tree of the partition answers
/// [`Refusal::NotHeld`] itself.
pub fn respond(tree: &Tree, keys: &impl LeafKeys, request: &AaeRequest) -> AaeReply {
    if request.partition() != tree.partition() {
        return AaeReply::Refused(Refusal::NotHeld);
    }
    let shape = tree.shape();
    match request {
        AaeRequest::Root { shape: theirs, .. } if *theirs != shape => {
            AaeReply::Refused(Refusal::Shape(shape))
        }
        AaeRequest::Root { root, .. } if root.0 == tree.root() => AaeReply::Same,
        // The root is the only leaf: its keys at once.
        AaeRequest::Root { partition, .. } if shape.depth() == 0 => {
            AaeReply::Keys(leaf_entries(keys, *partition, &[0]))
        }
        AaeRequest::Root { .. } => AaeReply::Hashes(
            tree.children(0, 0)
                .unwrap_or(&[])
                .iter()
                .map(|&h| Hash128(h))
                .collect(),
        ),
        AaeRequest::Children { level, indices, .. } => {
            let per_node = shape.fanout(*level).saturating_sub(1) as usize;
            let mut hashes = Vec::with_capacity(indices.len() * per_node);
            for &index in indices {
                match tree.children(*level, index) {
                    Some(children) => {
                        hashes.extend(children[..per_node].iter().map(|&h| Hash128(h)));
                    }
                    None => return AaeReply::Refused(Refusal::BadRequest),
                }
            }
            AaeReply::Hashes(hashes)
        }
        AaeRequest::Keys { partition, leaves } => {
            if leaves.iter().any(|&leaf| leaf >= shape.leaves()) {
                return AaeReply::Refused(Refusal::BadRequest);
            }
            AaeReply::Keys(leaf_entries(keys, *partition, leaves))
        }
    }
}

fn leaf_entries(
    keys: &impl LeafKeys,
    partition: PartitionId,
    leaves: &[u32],
) -> Vec<(Vec<u8>, Hash128)> {
    leaves
        .iter()
        .flat_map(|&leaf| keys.keys_in_leaf(partition, leaf))
        .map(|(key, digest)| (key, Hash128(digest)))
        .collect()
}

/// Tuning of the initiator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExchangeConfig {
    /// Most leaves asked for in one [`AaeRequest::Keys`] (bounds a reply's size when replicas
    /// differ a lot; more leaves take more round trips).
    pub max_leaves_per_request: usize,
}

impl Default for ExchangeConfig {
    fn default() -> Self {
        ExchangeConfig {
            max_leaves_per_request: 1024,
        }
    }
}

/// What an exchange cost.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExchangeStats {
    /// Requests sent, each answered by one reply.
    pub round_trips: u32,
    /// Postcard-encoded bytes of every request.
    pub bytes_sent: u64,
    /// Postcard-encoded bytes of every reply.
    pub bytes_received: u64,
}

impl ExchangeStats {
    /// Bytes both ways.
    pub fn bytes(&self) -> u64 {
        self.bytes_sent + self.bytes_received
    }
}

/// One key whose copies differ.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct KeyDiff {
    /// The key's storage key.
    pub storage_key: Vec<u8>,
    /// A's digest (`None`: A lacks the key).
    pub local: Option<u128>,
    /// B's digest (`None`: B lacks the key).
    pub remote: Option<u128>,
}

impl KeyDiff {
    /// A holds the key and B lacks it or holds it differently: A sends its copy to B.
    pub fn push(&self) -> bool {
        self.local.is_some()
    }

    /// B holds the key and A lacks it or holds it differently: A fetches B's copy.
    pub fn pull(&self) -> bool {
        self.remote.is_some()
    }
}

/// The result of an exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AaeOutcome {
    /// The partition.
    pub partition: PartitionId,
    /// Every key whose copies differ, by storage key.
    pub diffs: Vec<KeyDiff>,
    /// Leaves of A's tree whose hash did not match the keys [`LeafKeys`] listed for them when
    /// compared. Under concurrent writes this can be transient; if it persists, the stored leaf
    /// is stale: recompute it with [`leaf_hash`] and [`Tree::set_leaf`].
    pub local_leaf_mismatches: Vec<u32>,
    /// What the exchange cost.
    pub stats: ExchangeStats,
}

impl AaeOutcome {
    /// The storage keys A must push to B.
    pub fn push(&self) -> impl Iterator<Item = &[u8]> {
        self.diffs
            .iter()
            .filter(|d| d.push())
            .map(|d| d.storage_key.as_slice())
    }

    /// The storage keys A must pull from B.
    pub fn pull(&self) -> impl Iterator<Item = &[u8]> {
        self.diffs
            .iter()
            .filter(|d| d.pull())
            .map(|d| d.storage_key.as_slice())
    }
}

/// What the initiator does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Send this request to B and feed its reply to [`Exchange::handle_reply`].
    Send(AaeRequest),
    /// The exchange is over.
    Done(AaeOutcome),
}

#[derive(Debug, Clone)]
enum State {
    /// Waiting for B's answer to the root.
    Root,
    /// Waiting for B's children of these nodes at `level`, each with B's hash.
    Children {
        level: u32,
        nodes: Vec<(u32, u128)>,
    },
    /// Waiting for B's keys of `asked`; `rest` still to ask.
    Keys {
        asked: Vec<u32>,
        rest: Vec<u32>,
    },
    Ended,
}

/// The initiator's side of one exchange over one partition: a state machine fed B's replies.
///
/// ```text
/// let (mut exchange, mut request) = Exchange::start(&tree, ExchangeConfig::default());
/// loop {
///     let reply = send_to_b(&request);                       // the caller's I/O
///     match exchange.handle_reply(&tree, &store, &reply)? {
///         Step::Send(next) => request = next,
///         Step::Done(outcome) => break outcome,               // push and pull, then merge
///     }
/// }
/// ```
#[derive(Debug, Clone)]
pub struct Exchange {
    partition: PartitionId,
    shape: Shape,
    config: ExchangeConfig,
    state: State,
    stats: ExchangeStats,
    diffs: BTreeMap<Vec<u8>, (Option<u128>, Option<u128>)>,
    local_leaf_mismatches: Vec<u32>,
}

impl Exchange {
    /// Starts an exchange of `tree`'s partition; returns it and the first request to send.
    pub fn start(tree: &Tree, config: ExchangeConfig) -> (Exchange, AaeRequest) {
        let mut exchange = Exchange {
            partition: tree.partition(),
            shape: tree.shape(),
            config: ExchangeConfig {
                max_leaves_per_request: config.max_leaves_per_request.max(1),
            },
            state: State::Root,
            stats: ExchangeStats::default(),
            diffs: BTreeMap::new(),
            local_leaf_mismatches: Vec::new(),
        };
        let request = AaeRequest::Root {
            partition: tree.partition(),
            shape: tree.shape(),
            root: Hash128(tree.root()),
        };
        exchange.count(&request);
        (exchange, request)
    }

    /// The partition being exchanged.
    pub fn partition(&self) -> PartitionId {
        self.partition
    }

    /// What the exchange has cost so far.
    pub fn stats(&self) -> ExchangeStats {
        self.stats
    }

    fn count(&mut self, request: &AaeRequest) {
        self.stats.round_trips += 1;
        self.stats.bytes_sent += wire_size(request);
    }

    /// Feeds B's reply to the last request; `tree` and `local` are A's tree of the partition
    /// and its keys. After an error or [`Step::Done`] the exchange is over.
    pub fn handle_reply(
        &mut self,
        tree: &Tree,
        local: &impl LeafKeys,
        reply: &AaeReply,
    ) -> Result<Step, AaeError> {
        self.stats.bytes_received += wire_size(reply);
        let state = std::mem::replace(&mut self.state, State::Ended);
        let step = self.advance(state, tree, local, reply);
        if step.is_err() {
            self.state = State::Ended;
        }
        step
    }

    fn advance(
        &mut self,
        state: State,
        tree: &Tree,
        local: &impl LeafKeys,
        reply: &AaeReply,
    ) -> Result<Step, AaeError> {
        if tree.partition() != self.partition || tree.shape() != self.shape {
            return Err(AaeError::Unexpected(
                "the local tree changed partition or shape",
            ));
        }
        match (state, reply) {
            (State::Ended, _) => Err(AaeError::Ended),
            (_, AaeReply::Refused(refusal)) => Err(AaeError::Refused(refusal.clone())),
            (State::Root, AaeReply::Same) => Ok(self.finish()),
            (State::Root, AaeReply::Keys(entries)) if self.shape.depth() == 0 => {
                // The root is the only leaf and B sent its keys at once.
                self.compare_entries(tree, local, vec![0], entries)?;
                Ok(self.finish())
            }
            (State::Root, AaeReply::Hashes(hashes)) => {
                if hashes.len() != self.shape.fanout(0) as usize || hashes.is_empty() {
                    return Err(AaeError::Unexpected("wrong number of root children"));
                }
                let children = (0..).zip(hashes.iter().map(|h| h.0)).collect();
                Ok(self.descend(tree, local, 1, children))
            }
            (State::Children { level, nodes }, AaeReply::Hashes(hashes)) => {
                let fanout = self.shape.fanout(level);
                let sent = fanout as usize - 1;
                if hashes.len() != nodes.len() * sent {
                    return Err(AaeError::Unexpected("wrong number of child hashes"));
                }
                let mut children = Vec::with_capacity(nodes.len() * fanout as usize);
                for (&(index, remote), chunk) in nodes.iter().zip(hashes.chunks(sent.max(1))) {
                    let mut last = remote;
                    for (child, hash) in (index * fanout..).zip(chunk) {
                        children.push((child, hash.0));
                        last ^= hash.0;
                    }
                    children.push(((index + 1) * fanout - 1, last));
                }
                Ok(self.descend(tree, local, level + 1, children))
            }
            (State::Keys { asked, rest }, AaeReply::Keys(entries)) => {
                self.compare_entries(tree, local, asked, entries)?;
                Ok(self.ask_keys(rest))
            }
            (_, _) => Err(AaeError::Unexpected("reply of the wrong kind")),
        }
    }

    /// Compares B's `entries` of the leaves `asked` with A's.
    fn compare_entries(
        &mut self,
        tree: &Tree,
        local: &impl LeafKeys,
        asked: Vec<u32>,
        entries: &[(Vec<u8>, Hash128)],
    ) -> Result<(), AaeError> {
        let mut remote: BTreeMap<u32, Vec<(&[u8], u128)>> =
            asked.into_iter().map(|leaf| (leaf, Vec::new())).collect();
        for (key, digest) in entries {
            let leaf = storage_key_hash(key)
                .filter(|&h| self.shape.partition_of(h) == self.partition)
                .map(|h| self.shape.leaf_of(h))
                .and_then(|leaf| remote.get_mut(&leaf))
                .ok_or(AaeError::Unexpected("a key outside the leaves asked"))?;
            leaf.push((key.as_slice(), digest.0));
        }
        for (leaf, entries) in remote {
            self.compare_leaf(tree, local, leaf, &entries);
        }
        Ok(())
    }

    /// `nodes` at `level` with B's hashes: keeps those that differ from A's; resolves those B
    /// holds nothing under from A's own keys; descends into, or fetches the keys of, the rest.
    fn descend(
        &mut self,
        tree: &Tree,
        local: &impl LeafKeys,
        level: u32,
        nodes: Vec<(u32, u128)>,
    ) -> Step {
        let mut differing = Vec::new();
        for (index, remote) in nodes {
            if tree.hash(level, index) == Some(remote) {
                continue;
            }
            if remote == 0 {
                for leaf in tree.leaves_under(level, index) {
                    if tree.leaf(leaf) != 0 {
                        self.compare_leaf(tree, local, leaf, &[]);
                    }
                }
            } else {
                differing.push((index, remote));
            }
        }
        if differing.is_empty() {
            return self.finish();
        }
        if level == self.shape.depth() {
            let leaves = differing.into_iter().map(|(leaf, _)| leaf).collect();
            return self.ask_keys(leaves);
        }
        let request = AaeRequest::Children {
            partition: self.partition,
            level,
            indices: differing.iter().map(|&(index, _)| index).collect(),
        };
        self.count(&request);
        self.state = State::Children {
            level,
            nodes: differing,
        };
        Step::Send(request)
    }

    /// Asks for B's keys of the first batch of `leaves`; the rest wait for its reply.
    fn ask_keys(&mut self, mut leaves: Vec<u32>) -> Step {
        if leaves.is_empty() {
            return self.finish();
        }
        let rest = leaves.split_off(leaves.len().min(self.config.max_leaves_per_request));
        let request = AaeRequest::Keys {
            partition: self.partition,
            leaves: leaves.clone(),
        };
        self.count(&request);
        self.state = State::Keys {
            asked: leaves,
            rest,
        };
        Step::Send(request)
    }

    fn compare_leaf(
        &mut self,
        tree: &Tree,
        local: &impl LeafKeys,
        leaf: u32,
        remote: &[(&[u8], u128)],
    ) {
        let ours = local.keys_in_leaf(self.partition, leaf);
        if leaf_hash(ours.iter().map(|(k, d)| (k.as_slice(), *d))) != tree.leaf(leaf) {
            self.local_leaf_mismatches.push(leaf);
        }
        let mut both: BTreeMap<&[u8], (Option<u128>, Option<u128>)> = BTreeMap::new();
        for (key, digest) in &ours {
            both.entry(key.as_slice()).or_default().0 = Some(*digest);
        }
        for &(key, digest) in remote {
            both.entry(key).or_default().1 = Some(digest);
        }
        for (key, (a, b)) in both {
            if a != b {
                self.diffs.insert(key.to_vec(), (a, b));
            }
        }
    }

    fn finish(&mut self) -> Step {
        self.state = State::Ended;
        let mut mismatches = std::mem::take(&mut self.local_leaf_mismatches);
        mismatches.sort_unstable();
        mismatches.dedup();
        Step::Done(AaeOutcome {
            partition: self.partition,
            diffs: std::mem::take(&mut self.diffs)
                .into_iter()
                .map(|(storage_key, (local, remote))| KeyDiff {
                    storage_key,
                    local,
                    remote,
                })
                .collect(),
            local_leaf_mismatches: mismatches,
            stats: self.stats,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;

    /// One replica of one partition: its keys (storage key → digest) and its tree.
    #[derive(Clone)]
    struct Replica {
        keys: BTreeMap<Vec<u8>, u128>,
        tree: Tree,
    }

    impl Replica {
        fn new(partition: PartitionId, shape: Shape) -> Self {
            Replica {
                keys: BTreeMap::new(),
                tree: Tree::new(partition, shape),
            }
        }

        fn put(&mut self, key: &[u8], digest: Option<u128>) {
            let hash = storage_key_hash(key).expect("storage key");
            let old = match digest {
                Some(d) => self.keys.insert(key.to_vec(), d),
                None => self.keys.remove(key),
            };
            self.tree.update(hash, key, old, digest).expect("partition");
        }
    }

    impl LeafKeys for Replica {
        fn keys_in_leaf(&self, partition: PartitionId, leaf: u32) -> Vec<(Vec<u8>, u128)> {
            let (start, end) = self.tree.shape().leaf_range(partition, leaf);
            let range = match end {
                Some(end) => self.keys.range(start..end),
                None => self.keys.range(start..),
            };
            range.map(|(k, d)| (k.clone(), *d)).collect()
        }
    }

    /// A storage key in `partition` (of 256) whose remaining hash bits come from `n`.
    fn key(partition: PartitionId, n: u64) -> Vec<u8> {
        let spread = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let hash = (u64::from(partition) << 56) | (spread >> 8);
        let mut key = hash.to_be_bytes().to_vec();
        key.extend_from_slice(&[1, b'b']);
        key.extend_from_slice(&n.to_le_bytes());
        key
    }

    /// Runs an exchange A → B, checking the byte and round-trip accounting on the way.
    fn exchange(a: &Replica, b: &Replica, config: ExchangeConfig) -> AaeOutcome {
        let (mut ex, mut request) = Exchange::start(&a.tree, config);
        let (mut trips, mut bytes) = (0, 0);
        loop {
            let bytes_of_request = postcard::to_allocvec(&request).expect("encodes");
            let decoded: AaeRequest = postcard::from_bytes(&bytes_of_request).expect("decodes");
            assert_eq!(decoded, request);
            let reply = respond(&b.tree, b, &decoded);
            let bytes_of_reply = postcard::to_allocvec(&reply).expect("encodes");
            let reply: AaeReply = postcard::from_bytes(&bytes_of_reply).expect("decodes");
            trips += 1;
            bytes += bytes_of_request.len() + bytes_of_reply.len();
            match ex.handle_reply(&a.tree, a, &reply).expect("exchange") {
                Step::Send(next) => request = next,
                Step::Done(outcome) => {
                    assert_eq!(outcome.stats.round_trips, trips);
                    assert_eq!(outcome.stats.bytes(), bytes as u64);
                    assert_eq!(ex.stats(), outcome.stats);
                    return outcome;
                }
            }
        }
    }

    fn pair(shape: Shape, n: u64) -> (Replica, Replica) {
        let mut a = Replica::new(7, shape);
        for i in 0..n {
            a.put(&key(7, i), Some(u128::from(i as u32) + 1));
        }
        (a.clone(), a)
    }

    fn shapes() -> [Shape; 5] {
        [
            Shape::DEFAULT,
            Shape::new(8, 12, 2),
            Shape::new(8, 12, 4),
            Shape::new(8, 5, 2),
            Shape::new(8, 0, 4),
        ]
    }

    #[test]
    fn identical_trees_take_one_round_and_find_nothing() {
        for shape in shapes() {
            let (a, b) = pair(shape, 500);
            let outcome = exchange(&a, &b, ExchangeConfig::default());
            assert!(outcome.diffs.is_empty());
            assert!(outcome.local_leaf_mismatches.is_empty());
            assert_eq!(outcome.stats.round_trips, 1);
            assert!(outcome.stats.bytes() < 30, "{:?}", outcome.stats);
        }
    }

    #[test]
    fn a_single_differing_key_takes_depth_plus_one_rounds() {
        for shape in shapes() {
            let (a, mut b) = pair(shape, 500);
            b.put(&key(7, 123), Some(99_999));
            let outcome = exchange(&a, &b, ExchangeConfig::default());
            assert_eq!(
                outcome.diffs,
                vec![KeyDiff {
                    storage_key: key(7, 123),
                    local: Some(124),
                    remote: Some(99_999),
                }],
                "{shape}"
            );
            assert_eq!(outcome.stats.round_trips, shape.depth() + 1, "{shape}");
            assert_eq!(outcome.push().count(), 1);
            assert_eq!(outcome.pull().count(), 1);
        }
    }

    #[test]
    fn one_sided_changed_and_deleted_keys_are_found() {
        let (mut a, mut b) = pair(Shape::DEFAULT, 2000);
        a.put(&key(7, 5000), Some(1)); // only on A: push
        b.put(&key(7, 5001), Some(2)); // only on B: pull
        b.put(&key(7, 10), Some(3)); // changed on B: both
        a.put(&key(7, 20), None); // deleted on A: pull
        b.put(&key(7, 30), None); // deleted on B: push
        let outcome = exchange(&a, &b, ExchangeConfig::default());
        let push: BTreeSet<&[u8]> = outcome.push().collect();
        let pull: BTreeSet<&[u8]> = outcome.pull().collect();
        let k = |n| key(7, n);
        assert_eq!(
            push,
            [k(5000), k(10), k(30)].iter().map(Vec::as_slice).collect()
        );
        assert_eq!(
            pull,
            [k(5001), k(10), k(20)].iter().map(Vec::as_slice).collect()
        );
        assert_eq!(outcome.diffs.len(), 5);
    }

    #[test]
    fn an_empty_responder_costs_one_round_and_an_empty_initiator_finds_all() {
        let (a, _) = pair(Shape::DEFAULT, 300);
        let empty = Replica::new(7, Shape::DEFAULT);
        let outcome = exchange(&a, &empty, ExchangeConfig::default());
        assert_eq!(outcome.stats.round_trips, 1);
        assert_eq!(outcome.push().count(), 300);
        assert_eq!(outcome.pull().count(), 0);

        let outcome = exchange(
            &empty,
            &a,
            ExchangeConfig {
                max_leaves_per_request: 100,
            },
        );
        assert_eq!(outcome.pull().count(), 300);
        assert_eq!(outcome.push().count(), 0);
        // The descent, then the ~300 differing leaves 100 at a time.
        assert!(outcome.stats.round_trips >= Shape::DEFAULT.depth() + 3);
    }

    #[test]
    fn a_stale_local_leaf_is_reported() {
        let (mut a, b) = pair(Shape::DEFAULT, 100);
        let leaf = a.tree.leaf_of(storage_key_hash(&key(7, 1)).expect("key"));
        a.tree.set_leaf(leaf, 42);
        let outcome = exchange(&a, &b, ExchangeConfig::default());
        assert!(outcome.diffs.is_empty());
        assert_eq!(outcome.local_leaf_mismatches, vec![leaf]);
    }

    #[test]
    fn refusals_and_bad_replies_end_the_exchange() {
        let (a, b) = pair(Shape::DEFAULT, 10);
        let other = Replica::new(7, Shape::new(8, 12, 2));
        let (mut ex, request) = Exchange::start(&a.tree, ExchangeConfig::default());
        let reply = respond(&other.tree, &other, &request);
        assert_eq!(reply, AaeReply::Refused(Refusal::Shape(other.tree.shape())));
        assert_eq!(
            ex.handle_reply(&a.tree, &a, &reply),
            Err(AaeError::Refused(Refusal::Shape(other.tree.shape())))
        );
        assert_eq!(
            ex.handle_reply(&a.tree, &a, &AaeReply::Same),
            Err(AaeError::Ended)
        );

        let elsewhere = Replica::new(8, Shape::DEFAULT);
        assert_eq!(
            respond(&elsewhere.tree, &elsewhere, &request),
            AaeReply::Refused(Refusal::NotHeld)
        );
        for bad in [
            AaeRequest::Children {
                partition: 7,
                level: Shape::DEFAULT.depth(),
                indices: vec![0],
            },
            AaeRequest::Children {
                partition: 7,
                level: 1,
                indices: vec![2],
            },
            AaeRequest::Keys {
                partition: 7,
                leaves: vec![4096],
            },
        ] {
            assert_eq!(
                respond(&b.tree, &b, &bad),
                AaeReply::Refused(Refusal::BadRequest)
            );
        }

        let (mut ex, _) = Exchange::start(&a.tree, ExchangeConfig::default());
        assert!(matches!(
            ex.handle_reply(&a.tree, &a, &AaeReply::Hashes(vec![Hash128(1)])),
            Err(AaeError::Unexpected(_))
        ));
        let (mut ex, _) = Exchange::start(&a.tree, ExchangeConfig::default());
        assert!(matches!(
            ex.handle_reply(&a.tree, &a, &AaeReply::Keys(vec![])),
            Err(AaeError::Unexpected(_))
        ));
    }

    #[test]
    fn hashes_travel_as_sixteen_bytes() {
        let bytes = postcard::to_allocvec(&Hash128(u128::MAX)).expect("encodes");
        assert_eq!(bytes.len(), 16);
        assert_eq!(
            postcard::from_bytes::<Hash128>(&bytes).expect("decodes"),
            Hash128(u128::MAX)
        );
    }

    proptest! {
        /// For random key sets diverging at random, the keys found are exactly the symmetric
        /// difference of the (key, digest) sets; pushing and pulling them makes the trees
        /// equal, after which an exchange takes one round.
        #[test]
        fn finds_exactly_the_symmetric_difference(
            leaf_bits in 0u32..9,
            fanout_bits in 1u32..5,
            batch in 1usize..6,
            common in proptest::collection::btree_map(0u64..2000, 1u128..4, 0..200),
            // Per key: 0 same, 1 A changes, 2 B changes, 3 A deletes, 4 B deletes.
            changes in proptest::collection::vec((0u64..2000, 0u8..5, 1u128..4), 0..40),
        ) {
            let shape = Shape::new(8, leaf_bits, fanout_bits);
            let mut a = Replica::new(7, shape);
            for (&n, &d) in &common {
                a.put(&key(7, n), Some(d));
            }
            let mut b = a.clone();
            for (n, what, d) in changes {
                let k = key(7, n);
                match what {
                    1 => a.put(&k, Some(d + 10)),
                    2 => b.put(&k, Some(d + 20)),
                    3 if a.keys.contains_key(&k) => a.put(&k, None),
                    4 if b.keys.contains_key(&k) => b.put(&k, None),
                    _ => {}
                }
            }
            let outcome = exchange(&a, &b, ExchangeConfig { max_leaves_per_request: batch });
            let set = |r: &Replica| -> BTreeSet<(Vec<u8>, u128)> {
                r.keys.iter().map(|(k, d)| (k.clone(), *d)).collect()
            };
            let (sa, sb) = (set(&a), set(&b));
            let expected: BTreeSet<Vec<u8>> =
                sa.symmetric_difference(&sb).map(|(k, _)| k.clone()).collect();
            let found: BTreeSet<Vec<u8>> =
                outcome.diffs.iter().map(|d| d.storage_key.clone()).collect();
            prop_assert_eq!(&found, &expected);
            prop_assert!(outcome.local_leaf_mismatches.is_empty());
            for d in &outcome.diffs {
                prop_assert_eq!(d.local, a.keys.get(&d.storage_key).copied());
                prop_assert_eq!(d.remote, b.keys.get(&d.storage_key).copied());
            }
            // Repair: "merge" keeps the larger digest.
            for d in &outcome.diffs {
                let merged = d.local.max(d.remote);
                a.put(&d.storage_key, merged);
                b.put(&d.storage_key, merged);
            }
            prop_assert_eq!(&a.tree, &b.tree);
            let again = exchange(&a, &b, ExchangeConfig::default());
            prop_assert!(again.diffs.is_empty());
            prop_assert_eq!(again.stats.round_trips, 1);
        }
    }
}
