//! Per-partition Merkle trees for active anti-entropy (AAE), updated on every write.
//!
//! Every partition a node holds has one tree of a fixed shape ([`Shape`]): a key's leaf is the
//! `leaf_bits` bits of its [`key_hash`](crate::key_hash) right below the partition bits, and
//! inner levels group `2^fanout_bits` children (the top level takes the remainder when
//! `leaf_bits` is not a multiple of `fanout_bits`). The default is binary with 12 leaf bits:
//! 4,096 leaves per partition (about one key per leaf at a million keys on 256 partitions)
//! under 12 inner levels; see [`Shape::DEFAULT`] for why.
//!
//! A leaf's hash is the XOR of [`entry_hash`]`(storage key, digest)` over its keys, and every
//! inner node is the XOR of its children (so of every entry below it). XOR rather than hashing
//! the children because:
//! - a write is O(depth) with no reads of siblings: XOR the old entry out and the new one in, and
//!   apply the same delta to every ancestor;
//! - the inner levels are a pure function of the leaves, rebuilt in O(leaves) at startup from the
//!   leaf hashes the node persisted (never by scanning keys), independent of insertion order;
//! - an empty partition's root is 0, and so is the root of one whose keys were all removed;
//! - a node's last child is its hash XOR its other children, so an exchange sends one hash
//!   fewer per node it descends into (see [`crate::aae`]).
//!
//! The price is linearity: two different key sets collide only if the XOR of the entry hashes
//! of their difference is 0, which for 128-bit pseudo-random entry hashes happens with
//! probability 2^-128 per comparison — but nothing here resists an adversary who picks keys and
//! values to cancel out (xxh3 is not a cryptographic hash either way).
//!
//! Storage keys order a partition's keys by hash ([`storage_key`]), so each leaf's keys are one
//! contiguous range of the store ([`Shape::leaf_range`]).

use std::fmt;

use crate::PartitionId;
use crate::ring::DEFAULT_PARTITION_BITS;

/// The storage key of an object: `key_hash` (8 bytes big-endian), 1 byte bucket length, the
/// bucket, then the key. Sorting storage keys sorts by hash, so a partition and each of its
/// leaves are contiguous ranges.
///
/// Bucket names must be at most 255 bytes ([`request::validate`](crate::request::validate)
/// caps them at 64); of a longer one only the first 255 bytes are kept (the hash still covers
/// all of it, so placement is right, but [`parse_storage_key`] returns the cut name).
pub fn storage_key(bucket: &str, key: &[u8]) -> Vec<u8> {
    debug_assert!(bucket.len() <= 255, "bucket name longer than 255 bytes");
    let cut = &bucket.as_bytes()[..bucket.len().min(255)];
    let mut out = Vec::with_capacity(9 + cut.len() + key.len());
    out.extend_from_slice(&crate::key_hash(bucket, key).to_be_bytes());
    out.push(u8::try_from(cut.len()).unwrap_or(u8::MAX));
    out.extend_from_slice(cut);
    out.extend_from_slice(key);
    out
}

/// Splits a storage key into (key hash, bucket, key); `None` if it is malformed.
pub fn parse_storage_key(bytes: &[u8]) -> Option<(u64, String, Vec<u8>)> {
    let hash = storage_key_hash(bytes)?;
    let len = usize::from(*bytes.get(8)?);
    let bucket = bytes.get(9..9 + len)?;
    let key = bytes.get(9 + len..)?;
    let bucket = String::from_utf8(bucket.to_vec()).ok()?;
    Some((hash, bucket, key.to_vec()))
}

/// The key hash a storage key starts with (its first 8 bytes); `None` if it is shorter.
pub fn storage_key_hash(bytes: &[u8]) -> Option<u64> {
    let prefix: [u8; 8] = bytes.get(..8)?.try_into().ok()?;
    Some(u64::from_be_bytes(prefix))
}

/// What one key contributes to its leaf: xxh3-128 of the storage key followed by the object's
/// digest (16 bytes, big-endian; fixed length, so the pair is unambiguous).
pub fn entry_hash(storage_key: &[u8], digest: u128) -> u128 {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    hasher.update(storage_key);
    hasher.update(&digest.to_be_bytes());
    hasher.digest128()
}

/// The hash of a leaf holding these (storage key, digest) entries: the XOR of their
/// [`entry_hash`]es (0 for none). Lets a node recompute one leaf from a range scan.
pub fn leaf_hash<'a>(entries: impl IntoIterator<Item = (&'a [u8], u128)>) -> u128 {
    entries
        .into_iter()
        .fold(0, |acc, (key, digest)| acc ^ entry_hash(key, digest))
}

/// The fixed shape of every partition's tree. Both replicas of an exchange must use the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Shape {
    partition_bits: u8,
    leaf_bits: u8,
    fanout_bits: u8,
}

impl Default for Shape {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} leaves per partition, fanout {}, depth {} (partition bits {})",
            self.leaves(),
            1u32 << self.fanout_bits,
            self.depth(),
            self.partition_bits
        )
    }
}

/// Default leaf bits: 4,096 leaves per partition.
pub const DEFAULT_LEAF_BITS: u32 = 12;
/// Default fanout bits: 2 children per inner node (a binary tree).
pub const DEFAULT_FANOUT_BITS: u32 = 1;
/// Most leaf bits a shape may have (2^20 leaves, 16 MiB of leaf hashes per partition).
pub const MAX_LEAF_BITS: u32 = 20;
/// Most fanout bits a shape may have (256 children per node).
pub const MAX_FANOUT_BITS: u32 = 8;

impl Shape {
    /// 256 partitions, 4,096 leaves each, binary (depth 12).
    ///
    /// Chosen by `tests/aae_efficiency.rs` (1,000,000 keys, 0.1% diverged) for the fewest
    /// bytes. A descent costs `(fanout - 1) × 16` bytes per differing node per level (the last
    /// child is derived), i.e. about `16 × (2^b - 1) × leaf_bits / b` per differing key: 192
    /// bytes binary, 288 at fanout 4, 720 at fanout 16. Total bytes to find and repair, leaf
    /// bits × fanout: 12 × 2: 486 kB; 12 × 4: 540 kB; 12 × 8: 643 kB; 12 × 16: 815 kB;
    /// 11 × 2: 511 kB; 13 × 2: 486 kB; 14 × 2: 492 kB. Below 12 leaf bits the key lists of
    /// differing leaves grow (about one key per leaf at 12); above, the extra levels cost more
    /// than the shorter lists save, and the leaves to persist double. The price of binary is
    /// round trips: 13 per exchange against 7 at fanout 4 and 4 at fanout 16 — latency of a
    /// background task whose exchanges for all partitions run side by side.
    pub const DEFAULT: Shape = Shape {
        partition_bits: DEFAULT_PARTITION_BITS as u8,
        leaf_bits: DEFAULT_LEAF_BITS as u8,
        fanout_bits: DEFAULT_FANOUT_BITS as u8,
    };

    /// A shape for `2^partition_bits` partitions (as the [`Ring`](crate::Ring) has; 1..=16),
    /// `2^leaf_bits` leaves per partition (0..=20) and `2^fanout_bits` children per inner
    /// node (1..=8). Out-of-range values are clamped.
    pub fn new(partition_bits: u32, leaf_bits: u32, fanout_bits: u32) -> Shape {
        let clamp = |v: u32, lo: u32, hi: u32| u8::try_from(v.clamp(lo, hi)).unwrap_or(u8::MAX);
        Shape {
            partition_bits: clamp(partition_bits, 1, 16),
            leaf_bits: clamp(leaf_bits, 0, MAX_LEAF_BITS),
            fanout_bits: clamp(fanout_bits, 1, MAX_FANOUT_BITS),
        }
    }

    /// The partition exponent: `2^partition_bits` partitions.
    pub fn partition_bits(&self) -> u32 {
        u32::from(self.partition_bits)
    }

    /// The leaf exponent: `2^leaf_bits` leaves per partition.
    pub fn leaf_bits(&self) -> u32 {
        u32::from(self.leaf_bits)
    }

    /// The fanout exponent: `2^fanout_bits` children per inner node (the top may have fewer).
    pub fn fanout_bits(&self) -> u32 {
        u32::from(self.fanout_bits)
    }

    /// Levels below the root: the leaves are level `depth()`, the root level 0.
    pub fn depth(&self) -> u32 {
        self.leaf_bits().div_ceil(self.fanout_bits())
    }

    /// Leaves per partition.
    pub fn leaves(&self) -> u32 {
        1 << self.leaf_bits
    }

    fn level_bits(&self, level: u32) -> u32 {
        let above = self.depth().saturating_sub(level) * self.fanout_bits();
        self.leaf_bits().saturating_sub(above)
    }

    /// Nodes at `level` (1 at the root, [`leaves`](Self::leaves) at the bottom).
    pub fn width(&self, level: u32) -> u32 {
        if level > self.depth() {
            return 0;
        }
        1 << self.level_bits(level)
    }

    /// Children of each node at `level` (0 at the leaves).
    pub fn fanout(&self, level: u32) -> u32 {
        if level >= self.depth() {
            return 0;
        }
        1 << (self.level_bits(level + 1) - self.level_bits(level))
    }

    /// The partition of a key hash.
    pub fn partition_of(&self, key_hash: u64) -> PartitionId {
        u32::try_from(key_hash >> (64 - self.partition_bits())).unwrap_or(0)
    }

    /// The leaf of a key hash within its partition: the `leaf_bits` bits below the partition
    /// bits.
    pub fn leaf_of(&self, key_hash: u64) -> u32 {
        if self.leaf_bits == 0 {
            return 0;
        }
        u32::try_from((key_hash << self.partition_bits()) >> (64 - self.leaf_bits())).unwrap_or(0)
    }

    /// The key hashes of one leaf of a partition, inclusive.
    pub fn leaf_hashes(&self, partition: PartitionId, leaf: u32) -> std::ops::RangeInclusive<u64> {
        let shift = 64 - self.partition_bits() - self.leaf_bits();
        let start =
            (u64::from(partition) << (64 - self.partition_bits())) | (u64::from(leaf) << shift);
        let span = if shift == 64 {
            u64::MAX
        } else {
            (1u64 << shift) - 1
        };
        start..=start.saturating_add(span)
    }

    /// The storage keys of one leaf: from the first (inclusive) to the second (exclusive;
    /// `None`: to the end of the key space). A range scan over it lists the leaf's keys.
    pub fn leaf_range(&self, partition: PartitionId, leaf: u32) -> (Vec<u8>, Option<Vec<u8>>) {
        let hashes = self.leaf_hashes(partition, leaf);
        let end = hashes
            .end()
            .checked_add(1)
            .map(|e| e.to_be_bytes().to_vec());
        (hashes.start().to_be_bytes().to_vec(), end)
    }
}

/// One partition's tree: every level's hashes, the root alone at level 0, the leaves at level
/// [`Shape::depth`].
#[derive(Clone, PartialEq, Eq)]
pub struct Tree {
    partition: PartitionId,
    shape: Shape,
    levels: Vec<Vec<u128>>,
}

impl fmt::Debug for Tree {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tree")
            .field("partition", &self.partition)
            .field("shape", &self.shape)
            .field("root", &format_args!("{:032x}", self.root()))
            .finish()
    }
}

impl Tree {
    /// The tree of an empty partition (every hash 0).
    pub fn new(partition: PartitionId, shape: Shape) -> Tree {
        let levels = (0..=shape.depth())
            .map(|level| vec![0; shape.width(level) as usize])
            .collect();
        Tree {
            partition,
            shape,
            levels,
        }
    }

    /// Rebuilds a tree from persisted (leaf index, leaf hash) pairs — only non-zero leaves need
    /// persisting; out-of-range indices are ignored. O(leaves), no key is read.
    pub fn from_leaves(
        partition: PartitionId,
        shape: Shape,
        leaves: impl IntoIterator<Item = (u32, u128)>,
    ) -> Tree {
        let mut tree = Tree::new(partition, shape);
        let depth = shape.depth() as usize;
        for (index, hash) in leaves {
            if let Some(slot) = tree.levels[depth].get_mut(index as usize) {
                *slot = hash;
            }
        }
        for level in (0..depth).rev() {
            let fanout = shape.fanout(level as u32) as usize;
            let (upper, lower) = tree.levels.split_at_mut(level + 1);
            for (node, children) in upper[level].iter_mut().zip(lower[0].chunks(fanout)) {
                *node = children.iter().fold(0, |acc, h| acc ^ h);
            }
        }
        tree
    }

    /// Builds a tree from (key hash, storage key, digest) entries of this partition (entries of
    /// other partitions are skipped). For tests and for re-shaping; a node's startup uses
    /// [`from_leaves`](Self::from_leaves).
    pub fn from_entries<'a>(
        partition: PartitionId,
        shape: Shape,
        entries: impl IntoIterator<Item = (u64, &'a [u8], u128)>,
    ) -> Tree {
        let mut leaves = vec![0u128; shape.leaves() as usize];
        for (hash, key, digest) in entries {
            if shape.partition_of(hash) == partition {
                leaves[shape.leaf_of(hash) as usize] ^= entry_hash(key, digest);
            }
        }
        Tree::from_leaves(partition, shape, (0..).zip(leaves))
    }

    /// The partition this tree covers.
    pub fn partition(&self) -> PartitionId {
        self.partition
    }

    /// The tree's shape.
    pub fn shape(&self) -> Shape {
        self.shape
    }

    /// The leaf of a key hash (see [`Shape::leaf_of`]).
    pub fn leaf_of(&self, key_hash: u64) -> u32 {
        self.shape.leaf_of(key_hash)
    }

    /// The hash of leaf `index` (0 if out of range).
    pub fn leaf(&self, index: u32) -> u128 {
        self.hash(self.shape.depth(), index).unwrap_or(0)
    }

    /// Every non-zero leaf, by index: what a node persists, or checks against its store.
    pub fn nonzero_leaves(&self) -> impl Iterator<Item = (u32, u128)> + '_ {
        (0..)
            .zip(self.levels[self.shape.depth() as usize].iter().copied())
            .filter(|&(_, hash)| hash != 0)
    }

    /// Sets leaf `index` to `hash` and fixes its path to the root in O(depth); out-of-range
    /// indices are ignored.
    pub fn set_leaf(&mut self, index: u32, hash: u128) {
        let old = self.leaf(index);
        self.xor_path(index, old ^ hash);
    }

    fn xor_path(&mut self, leaf: u32, delta: u128) {
        if delta == 0 || leaf >= self.shape.leaves() {
            return;
        }
        let mut index = leaf;
        for level in (0..=self.shape.depth()).rev() {
            self.levels[level as usize][index as usize] ^= delta;
            if level > 0 {
                index >>= self.shape.fanout(level - 1).trailing_zeros();
            }
        }
    }

    /// Records a write of one key in O(depth): XORs out its old entry (`old_digest`; `None`:
    /// the key was absent) and XORs in the new one (`new_digest`; `None`: the key is removed).
    /// Returns the leaf that changed and its new hash — what the node persists in the same
    /// transaction as the object — or `None` if the key hash lies in another partition.
    pub fn update(
        &mut self,
        key_hash: u64,
        storage_key: &[u8],
        old_digest: Option<u128>,
        new_digest: Option<u128>,
    ) -> Option<(u32, u128)> {
        if self.shape.partition_of(key_hash) != self.partition {
            return None;
        }
        let leaf = self.leaf_of(key_hash);
        let delta = old_digest.map_or(0, |d| entry_hash(storage_key, d))
            ^ new_digest.map_or(0, |d| entry_hash(storage_key, d));
        self.xor_path(leaf, delta);
        Some((leaf, self.leaf(leaf)))
    }

    /// The root hash: 0 for an empty partition.
    pub fn root(&self) -> u128 {
        self.levels[0][0]
    }

    /// The hash of node `index` at `level` (0: root, [`Shape::depth`]: leaves).
    pub fn hash(&self, level: u32, index: u32) -> Option<u128> {
        self.levels
            .get(level as usize)?
            .get(index as usize)
            .copied()
    }

    /// The hashes of several nodes at one level; `None` if any is out of range.
    pub fn hashes(&self, level: u32, indices: &[u32]) -> Option<Vec<u128>> {
        indices.iter().map(|&i| self.hash(level, i)).collect()
    }

    /// The hashes of the children (at `level + 1`) of node `index` at `level`.
    pub fn children(&self, level: u32, index: u32) -> Option<&[u128]> {
        let fanout = self.shape.fanout(level) as usize;
        if fanout == 0 || index >= self.shape.width(level) {
            return None;
        }
        let start = index as usize * fanout;
        self.levels
            .get(level as usize + 1)?
            .get(start..start + fanout)
    }

    /// The indices (at `level + 1`) of the children of node `index` at `level`.
    pub fn child_indices(&self, level: u32, index: u32) -> std::ops::Range<u32> {
        let fanout = self.shape.fanout(level);
        index * fanout..(index + 1) * fanout
    }

    /// The leaves below node `index` at `level`.
    pub fn leaves_under(&self, level: u32, index: u32) -> std::ops::Range<u32> {
        let shift = self.shape.level_bits(self.shape.depth()) - self.shape.level_bits(level);
        index << shift..(index + 1) << shift
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn sample(i: u32) -> (u64, Vec<u8>) {
        let k = format!("key-{i}");
        (
            crate::key_hash("b", k.as_bytes()),
            storage_key("b", k.as_bytes()),
        )
    }

    #[test]
    fn storage_keys_round_trip_and_sort_by_hash() {
        let sk = storage_key("bucket", b"\x00key\xff");
        let (hash, bucket, key) = parse_storage_key(&sk).expect("parses");
        assert_eq!(hash, crate::key_hash("bucket", b"\x00key\xff"));
        assert_eq!(bucket, "bucket");
        assert_eq!(key, b"\x00key\xff");
        assert_eq!(storage_key_hash(&sk), Some(hash));
        assert_eq!(parse_storage_key(&sk[..7]), None);
        assert_eq!(parse_storage_key(&sk[..12]), None);
        let empty_key = storage_key("b", b"");
        assert_eq!(parse_storage_key(&empty_key).map(|p| p.2), Some(vec![]));

        let mut keys: Vec<(u64, Vec<u8>)> = (0..500).map(sample).collect();
        keys.sort_by(|a, b| a.1.cmp(&b.1));
        assert!(keys.windows(2).all(|w| w[0].0 <= w[1].0));
    }

    #[test]
    fn shapes() {
        let s = Shape::DEFAULT;
        assert_eq!((s.depth(), s.leaves()), (12, 4096));
        assert_eq!(
            (s.width(1), s.width(12), s.fanout(0), s.fanout(12)),
            (2, 4096, 2, 0)
        );
        let s = Shape::new(8, 12, 2);
        assert_eq!((s.depth(), s.leaves()), (6, 4096));
        assert_eq!(
            (s.width(0), s.width(1), s.width(6), s.width(7)),
            (1, 4, 4096, 0)
        );
        assert_eq!((s.fanout(0), s.fanout(5), s.fanout(6)), (4, 4, 0));
        // Uneven: 5 leaf bits in fanout 4 → the top takes the remaining bit.
        let s = Shape::new(8, 5, 2);
        assert_eq!(s.depth(), 3);
        assert_eq!(
            (s.width(0), s.width(1), s.width(2), s.width(3)),
            (1, 2, 8, 32)
        );
        assert_eq!((s.fanout(0), s.fanout(1), s.fanout(2)), (2, 4, 4));
        let s = Shape::new(8, 0, 4);
        assert_eq!((s.depth(), s.leaves(), s.fanout(0)), (0, 1, 0));
        assert_eq!(Shape::new(0, 99, 0), Shape::new(1, MAX_LEAF_BITS, 1));
    }

    #[test]
    fn leaf_ranges_hold_exactly_their_keys() {
        let s = Shape::new(8, 12, 4);
        for i in 0..2000 {
            let (hash, sk) = sample(i);
            let (p, leaf) = (s.partition_of(hash), s.leaf_of(hash));
            assert!(s.leaf_hashes(p, leaf).contains(&hash));
            let (start, end) = s.leaf_range(p, leaf);
            assert!(sk >= start && end.is_none_or(|e| sk < e));
            let (start, _) = s.leaf_range(p, (leaf + 1) % s.leaves());
            if leaf + 1 < s.leaves() {
                assert!(sk < start);
            }
        }
        let last = s.leaf_range(255, 4095);
        assert_eq!(last.1, None);
        let one_leaf = Shape::new(8, 0, 4);
        assert_eq!(one_leaf.leaf_hashes(1, 0), 1u64 << 56..=(2u64 << 56) - 1);
    }

    #[test]
    fn add_then_remove_is_the_empty_root() {
        let shape = Shape::DEFAULT;
        let mut tree = Tree::new(3, shape);
        let keys: Vec<_> = (0..5000)
            .map(sample)
            .filter(|(h, _)| shape.partition_of(*h) == 3)
            .collect();
        assert!(keys.len() > 5);
        for (i, (h, sk)) in keys.iter().enumerate() {
            tree.update(*h, sk, None, Some(i as u128));
        }
        assert_ne!(tree.root(), 0);
        for (i, (h, sk)) in keys.iter().enumerate() {
            tree.update(*h, sk, Some(i as u128), Some(i as u128 + 7));
        }
        for (i, (h, sk)) in keys.iter().enumerate() {
            let (leaf, hash) = tree
                .update(*h, sk, Some(i as u128 + 7), None)
                .expect("same partition");
            assert_eq!(hash, tree.leaf(leaf));
        }
        assert_eq!(tree, Tree::new(3, shape));
        assert_eq!(tree.root(), 0);
        let other = keys.iter().find(|_| true).map(|(h, _)| *h ^ (1 << 63));
        assert_eq!(tree.update(other.unwrap_or(0), b"x", None, Some(1)), None);
    }

    proptest! {
        /// Updates in any order, `from_entries` and `from_leaves` of the persisted leaves all
        /// give the same tree; every inner node is the XOR of its children.
        #[test]
        fn rebuilds_agree(
            leaf_bits in 0u32..9,
            fanout_bits in 1u32..5,
            entries in proptest::collection::btree_map(0u32..400, any::<u128>(), 0..120),
        ) {
            let shape = Shape::new(1, leaf_bits, fanout_bits);
            let keys: Vec<(u64, Vec<u8>, u128)> = entries
                .iter()
                .map(|(&i, &d)| { let (h, sk) = sample(i); (h, sk, d) })
                .filter(|(h, _, _)| shape.partition_of(*h) == 0)
                .collect();
            let mut updated = Tree::new(0, shape);
            for (h, sk, d) in keys.iter().rev() {
                updated.update(*h, sk, None, Some(*d));
            }
            let built = Tree::from_entries(0, shape, keys.iter().map(|(h, sk, d)| (*h, sk.as_slice(), *d)));
            prop_assert_eq!(&updated, &built);
            let reloaded = Tree::from_leaves(0, shape, updated.nonzero_leaves());
            prop_assert_eq!(&updated, &reloaded);
            let mut set = Tree::new(0, shape);
            for (i, h) in updated.nonzero_leaves() {
                set.set_leaf(i, h);
            }
            prop_assert_eq!(&updated, &set);
            for level in 0..shape.depth() {
                for i in 0..shape.width(level) {
                    let xor = updated.children(level, i).unwrap_or(&[]).iter().fold(0, |a, h| a ^ h);
                    prop_assert_eq!(updated.hash(level, i), Some(xor));
                    let leaves: u128 = updated.leaves_under(level, i).fold(0, |a, l| a ^ updated.leaf(l));
                    prop_assert_eq!(xor, leaves);
                }
            }
            let by_leaf_hash = leaf_hash(keys.iter().map(|(_, sk, d)| (sk.as_slice(), *d)));
            prop_assert_eq!(by_leaf_hash, updated.root());
        }
    }
}
