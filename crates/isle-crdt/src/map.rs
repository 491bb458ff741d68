//! The OR-map: an add-wins map from keys to CRDT values (the shopping cart: item → quantity).
//!
//! Key presence is an add-wins observed-remove set: every update of a key tags it with a fresh
//! [`Dot`], and a remove drops the dots observed. Values merge by their own [`Crdt::merge`] and
//! are never dropped, which keeps the map a semilattice. So that a removed key does not come back
//! with its old value, a remove first applies [`ObservedReset::reset`] to it: it undoes what this
//! replica observed, and a concurrent update elsewhere survives with only its own effect. For a
//! counter that is the Redis active-active rule for `DEL` against a concurrent `INCR`.

use std::collections::BTreeMap;

use isle_types::NodeId;
use serde::{Deserialize, Serialize};

use crate::causal::{Context, Dot, DotKernel};
use crate::counter::PnCounter;
use crate::{Crdt, OrSet};

/// A map value that can undo, on behalf of one node, everything its replica has observed.
pub trait ObservedReset {
    /// Cancel the observed state by a local operation on `node`, as a later update.
    fn reset(&mut self, node: NodeId);
}

impl ObservedReset for PnCounter {
    /// Bring the counter to zero with one opposite increment or decrement.
    fn reset(&mut self, node: NodeId) {
        self.add(node, self.value().saturating_neg());
    }
}

impl<E: Ord + Clone> ObservedReset for OrSet<E> {
    /// Remove every element observed.
    fn reset(&mut self, _node: NodeId) {
        for element in self.elements() {
            self.remove(&element);
        }
    }
}

/// An add-wins map of CRDT values: an update concurrent with a remove keeps the key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrMap<K: Ord, V> {
    presence: DotKernel<K>,
    values: BTreeMap<K, V>,
}

impl<K: Ord, V> Default for OrMap<K, V> {
    fn default() -> Self {
        Self {
            presence: DotKernel::new(),
            values: BTreeMap::new(),
        }
    }
}

impl<K: Ord + Clone, V: Crdt + ObservedReset + Default> OrMap<K, V> {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// Apply `change` to `key`'s value on `node` (starting from the default); returns the add's dot.
    pub fn update(&mut self, node: NodeId, key: K, change: impl FnOnce(&mut V)) -> Dot {
        self.presence.remove_where(|held| *held == key);
        let dot = self.presence.next_dot(node);
        self.presence.insert(dot, key.clone());
        change(self.values.entry(key).or_default());
        dot
    }

    /// Remove `key` as observed here, resetting its value on `node`; returns whether it was present.
    pub fn remove(&mut self, node: NodeId, key: &K) -> bool {
        let present = self.contains_key(key);
        self.presence.remove_where(|held| held == key);
        if let Some(value) = self.values.get_mut(key) {
            value.reset(node);
        }
        present
    }

    /// Whether `key` is in the map.
    pub fn contains_key(&self, key: &K) -> bool {
        self.presence.entries().any(|(_, held)| held == key)
    }

    /// The value of `key`, if the key is present.
    pub fn get(&self, key: &K) -> Option<&V> {
        if self.contains_key(key) {
            self.values.get(key)
        } else {
            None
        }
    }

    /// The present keys with their values, in key order.
    pub fn entries(&self) -> impl Iterator<Item = (&K, &V)> + '_ {
        self.values.iter().filter(|(key, _)| self.contains_key(key))
    }

    /// The number of present keys (Redis `HLEN`).
    pub fn len(&self) -> usize {
        self.entries().count()
    }

    /// Whether no key is present.
    pub fn is_empty(&self) -> bool {
        self.presence.is_empty()
    }

    /// Every key update this replica has seen.
    pub fn context(&self) -> &Context {
        self.presence.context()
    }
}

impl<K: Ord + Clone, V: Crdt + Default> Crdt for OrMap<K, V> {
    fn merge(&mut self, other: &Self) {
        self.presence.merge(&other.presence);
        for (key, value) in &other.values {
            self.values.entry(key.clone()).or_default().merge(value);
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::laws::check_laws;

    const REPLICAS: usize = 3;

    type Cart = OrMap<u8, PnCounter>;

    #[derive(Debug, Clone)]
    enum Op {
        Add { at: usize, item: u8, quantity: i64 },
        Remove { at: usize, item: u8 },
        Sync { into: usize, from: usize },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0..REPLICAS, 0u8..5, -3i64..10).prop_map(|(at, item, quantity)| Op::Add {
                at,
                item,
                quantity
            }),
            (0..REPLICAS, 0u8..5).prop_map(|(at, item)| Op::Remove { at, item }),
            (0..REPLICAS, 0..REPLICAS).prop_map(|(into, from)| Op::Sync { into, from }),
        ]
    }

    fn node(index: usize) -> NodeId {
        NodeId(index as u64)
    }

    fn replay(ops: &[Op]) -> Vec<Cart> {
        let mut replicas = vec![Cart::new(); REPLICAS];
        for op in ops {
            match *op {
                Op::Add { at, item, quantity } => {
                    replicas[at].update(node(at), item, |count| count.add(node(at), quantity));
                }
                Op::Remove { at, item } => {
                    replicas[at].remove(node(at), &item);
                }
                Op::Sync { into, from } => {
                    let other = replicas[from].clone();
                    replicas[into].merge(&other);
                }
            }
        }
        replicas
    }

    fn quantity(cart: &Cart, item: u8) -> Option<i64> {
        cart.get(&item).map(PnCounter::value)
    }

    proptest! {
        #[test]
        fn merge_laws_hold(ops in prop::collection::vec(op(), 0..60)) {
            let replicas = replay(&ops);
            check_laws(&replicas[0], &replicas[1], &replicas[2]);
        }

        #[test]
        fn a_concurrent_add_beats_a_remove_with_only_its_own_quantity(
            ops in prop::collection::vec(op(), 0..60),
            item in 0u8..5,
            added in 1i64..10,
        ) {
            let mut replicas = replay(&ops);
            let other = replicas[1].clone();
            replicas[0].merge(&other);
            replicas[1] = replicas[0].clone();
            replicas[0].remove(node(0), &item);
            replicas[1].update(node(1), item, |count| count.add(node(1), added));
            let other = replicas[1].clone();
            replicas[0].merge(&other);
            prop_assert_eq!(quantity(&replicas[0], item), Some(added));
        }

        #[test]
        fn an_observed_remove_sticks_and_a_re_add_starts_from_zero(
            ops in prop::collection::vec(op(), 0..60),
            item in 0u8..5,
            added in 1i64..10,
        ) {
            let mut replicas = replay(&ops);
            let stale = replicas[1].clone();
            replicas[0].merge(&stale);
            replicas[0].remove(node(0), &item);
            replicas[0].merge(&stale);
            prop_assert_eq!(quantity(&replicas[0], item), None);
            replicas[0].update(node(0), item, |count| count.add(node(0), added));
            prop_assert_eq!(quantity(&replicas[0], item), Some(added));
        }
    }

    #[test]
    fn carts_from_both_sides_of_a_partition_union() {
        let mut left = Cart::new();
        left.update(node(0), 1, |count| count.add(node(0), 2));
        let mut right = left.clone();
        left.update(node(0), 2, |count| count.add(node(0), 1));
        right.update(node(1), 1, |count| count.add(node(1), 3));
        right.update(node(1), 3, |count| count.add(node(1), 4));
        right.remove(node(1), &3);
        left.merge(&right);
        let cart: Vec<(u8, i64)> = left
            .entries()
            .map(|(&item, count)| (item, count.value()))
            .collect();
        assert_eq!(cart, vec![(1, 5), (2, 1)]);
    }
}
