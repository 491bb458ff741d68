//! Placement: a consistent-hash ring with virtual nodes, cut into a fixed number of partitions.
//!
//! Every member owns `vnodes` tokens on a 64-bit ring. The key space is cut into `2^bits` equal
//! partitions; a partition's *preference list* is found by walking clockwise from the
//! partition's start and taking distinct nodes, preferring zones not yet used, so N replicas
//! spread across zones when there are zones. All keys of a partition share one preference list,
//! which is what lets replicas compare one Merkle tree per partition. Adding or removing a
//! member changes only the partitions whose walk meets its tokens.

use std::collections::BTreeSet;

use isle_types::NodeId;
use serde::{Deserialize, Serialize};

/// A partition of the key space: the top `bits` of a key's hash.
pub type PartitionId = u32;

/// Default partition count exponent: 2^8 = 256 partitions.
pub const DEFAULT_PARTITION_BITS: u32 = 8;
/// Default tokens per member.
pub const DEFAULT_VNODES: u32 = 64;

/// A member as placement sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RingMember {
    /// The member.
    pub id: NodeId,
    /// Its failure domain.
    pub zone: String,
}

/// The ring: tokens, and for each partition every member in walk order.
#[derive(Debug, Clone)]
pub struct Ring {
    bits: u32,
    members: Vec<RingMember>,
    /// For each partition, every member in clockwise order from the partition's start.
    walks: Vec<Vec<NodeId>>,
}

impl Ring {
    /// Builds the ring of `members` with `vnodes` tokens each and `2^bits` partitions.
    pub fn new(members: &[RingMember], vnodes: u32, bits: u32) -> Self {
        let bits = bits.clamp(1, 16);
        let mut members: Vec<RingMember> = members.to_vec();
        members.sort_by_key(|m| m.id);
        members.dedup_by_key(|m| m.id);
        let mut tokens: Vec<(u64, NodeId)> = members
            .iter()
            .flat_map(|m| (0..vnodes.max(1)).map(move |i| (token(m.id, i), m.id)))
            .collect();
        tokens.sort_unstable();
        let walks = (0..(1u32 << bits))
            .map(|partition| {
                let start = u64::from(partition) << (64 - bits);
                let first = tokens.partition_point(|&(t, _)| t < start);
                let mut seen = BTreeSet::new();
                let mut walk = Vec::with_capacity(members.len());
                for i in 0..tokens.len() {
                    let (_, node) = tokens[(first + i) % tokens.len()];
                    if seen.insert(node) {
                        walk.push(node);
                        if walk.len() == members.len() {
                            break;
                        }
                    }
                }
                walk
            })
            .collect();
        Ring {
            bits,
            members,
            walks,
        }
    }

    /// The number of partitions.
    pub fn partitions(&self) -> u32 {
        1 << self.bits
    }

    /// The partition holding a key with this [`key_hash`](crate::key_hash).
    pub fn partition_of(&self, hash: u64) -> PartitionId {
        u32::try_from(hash >> (64 - self.bits)).unwrap_or(0)
    }

    /// The members of the ring, by id.
    pub fn members(&self) -> &[RingMember] {
        &self.members
    }

    fn zone(&self, node: NodeId) -> Option<&str> {
        self.members
            .iter()
            .find(|m| m.id == node)
            .map(|m| m.zone.as_str())
    }

    /// The zone of `node`, or "" if it is not a member.
    pub fn zone_of(&self, node: NodeId) -> &str {
        self.zone(node).unwrap_or("")
    }

    /// The `n` nodes that hold `partition`: distinct, spread over zones first, in walk order.
    pub fn preference(&self, partition: PartitionId, n: usize) -> Vec<NodeId> {
        let Some(walk) = self.walks.get(partition as usize) else {
            return Vec::new();
        };
        let mut chosen: Vec<NodeId> = Vec::with_capacity(n);
        let mut zones: BTreeSet<&str> = BTreeSet::new();
        for &node in walk {
            if chosen.len() == n {
                break;
            }
            let zone = self.zone(node).unwrap_or("");
            if zones.insert(zone) {
                chosen.push(node);
            }
        }
        for &node in walk {
            if chosen.len() == n {
                break;
            }
            if !chosen.contains(&node) {
                chosen.push(node);
            }
        }
        // Walk order, not choice order: the first reachable one coordinates.
        chosen.sort_by_key(|node| walk.iter().position(|w| w == node));
        chosen
    }

    /// The nodes after the preference list in walk order: where sloppy writes go instead.
    pub fn fallbacks(&self, partition: PartitionId, n: usize) -> Vec<NodeId> {
        let preferred = self.preference(partition, n);
        self.walks
            .get(partition as usize)
            .map(|walk| {
                walk.iter()
                    .copied()
                    .filter(|node| !preferred.contains(node))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The partitions `node` holds a replica of when each key has `n` replicas.
    pub fn partitions_of(&self, node: NodeId, n: usize) -> Vec<PartitionId> {
        (0..self.partitions())
            .filter(|&p| self.preference(p, n).contains(&node))
            .collect()
    }
}

fn token(node: NodeId, index: u32) -> u64 {
    let mut bytes = [0u8; 12];
    bytes[..8].copy_from_slice(&node.0.to_le_bytes());
    bytes[8..].copy_from_slice(&index.to_le_bytes());
    xxhash_rust::xxh3::xxh3_64(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(zones: &[&str]) -> Vec<RingMember> {
        zones
            .iter()
            .enumerate()
            .map(|(i, zone)| RingMember {
                id: NodeId(i as u64 + 1),
                zone: (*zone).to_string(),
            })
            .collect()
    }

    #[test]
    fn preference_lists_hold_n_distinct_nodes() {
        let ring = Ring::new(&members(&["a"; 5]), 64, 8);
        for p in 0..ring.partitions() {
            let list = ring.preference(p, 3);
            let distinct: BTreeSet<_> = list.iter().collect();
            assert_eq!(distinct.len(), 3, "partition {p}: {list:?}");
            assert_eq!(ring.fallbacks(p, 3).len(), 2);
        }
    }

    #[test]
    fn load_is_spread_over_members() {
        let ring = Ring::new(&members(&["a"; 5]), 64, 8);
        for id in 1..=5 {
            let held = ring.partitions_of(NodeId(id), 3).len();
            // 256 partitions × 3 replicas / 5 nodes ≈ 154 each.
            assert!((110..=200).contains(&held), "node {id} holds {held}");
        }
    }

    #[test]
    fn replicas_spread_over_zones_when_there_are_zones() {
        let ring = Ring::new(&members(&["a", "a", "b", "b", "c", "c"]), 64, 8);
        for p in 0..ring.partitions() {
            let zones: BTreeSet<_> = ring
                .preference(p, 3)
                .into_iter()
                .map(|n| ring.zone_of(n).to_string())
                .collect();
            assert_eq!(zones.len(), 3, "partition {p}");
        }
    }

    #[test]
    fn adding_a_member_moves_only_the_ranges_it_takes() {
        let before = Ring::new(&members(&["a"; 5]), 64, 8);
        let after = Ring::new(&members(&["a"; 6]), 64, 8);
        let mut moved = 0;
        for p in 0..before.partitions() {
            let old: BTreeSet<_> = before.preference(p, 3).into_iter().collect();
            let new: BTreeSet<_> = after.preference(p, 3).into_iter().collect();
            // Every change is the newcomer replacing one old replica.
            let lost: Vec<_> = old.difference(&new).collect();
            let gained: Vec<_> = new.difference(&old).collect();
            assert_eq!(lost.len(), gained.len());
            assert!(
                gained.iter().all(|n| n.0 == 6),
                "partition {p} gained {gained:?}"
            );
            moved += gained.len();
        }
        // The newcomer takes about 3/6 of 256 partition replicas, not a reshuffle.
        assert!(moved > 60 && moved < 200, "moved {moved}");
    }
}
