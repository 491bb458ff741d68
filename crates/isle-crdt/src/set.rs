//! The add-wins observed-remove set (OR-set), on a dot kernel.
//!
//! Every add tags the element with a fresh [`Dot`]; a remove drops the dots of that element the
//! replica has *observed*, and those dots stay in the context. An add concurrent with a remove
//! carries a dot the remover never saw, so it survives the merge: adds win. Removing an element
//! and adding it again later works, because the new add has a new dot.

use std::collections::BTreeSet;

use isle_types::NodeId;
use serde::{Deserialize, Serialize};

use crate::Crdt;
use crate::causal::{Context, Dot, DotKernel};

/// An add-wins observed-remove set of `E`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrSet<E> {
    kernel: DotKernel<E>,
}

impl<E> Default for OrSet<E> {
    fn default() -> Self {
        Self {
            kernel: DotKernel::new(),
        }
    }
}

impl<E: Ord + Clone> OrSet<E> {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add `element` on behalf of `node`; returns the add's dot.
    ///
    /// The element's older dots seen here are folded into the new one, keeping one dot per add
    /// site instead of one per add.
    pub fn add(&mut self, node: NodeId, element: E) -> Dot {
        self.kernel.remove_where(|held| *held == element);
        let dot = self.kernel.next_dot(node);
        self.kernel.insert(dot, element);
        dot
    }

    /// Remove `element` as observed here; returns whether it was present.
    ///
    /// Concurrent adds this replica has not seen are unaffected (add wins).
    pub fn remove(&mut self, element: &E) -> bool {
        let present = self.contains(element);
        self.kernel.remove_where(|held| held == element);
        present
    }

    /// Whether `element` is in the set.
    pub fn contains(&self, element: &E) -> bool {
        self.kernel.entries().any(|(_, held)| held == element)
    }

    /// The elements, in order.
    pub fn elements(&self) -> BTreeSet<E> {
        self.kernel
            .entries()
            .map(|(_, held)| held.clone())
            .collect()
    }

    /// The number of distinct elements (Redis `SCARD`).
    pub fn len(&self) -> usize {
        self.elements().len()
    }

    /// Whether the set has no element.
    pub fn is_empty(&self) -> bool {
        self.kernel.is_empty()
    }

    /// Every add this replica has seen, including removed ones.
    pub fn context(&self) -> &Context {
        self.kernel.context()
    }
}

impl<E: Ord + Clone> Crdt for OrSet<E> {
    fn merge(&mut self, other: &Self) {
        self.kernel.merge(&other.kernel);
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::laws::check_laws;

    const REPLICAS: usize = 3;

    #[derive(Debug, Clone)]
    enum Op {
        Add { at: usize, element: u8 },
        Remove { at: usize, element: u8 },
        Sync { into: usize, from: usize },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0..REPLICAS, 0u8..6).prop_map(|(at, element)| Op::Add { at, element }),
            (0..REPLICAS, 0u8..6).prop_map(|(at, element)| Op::Remove { at, element }),
            (0..REPLICAS, 0..REPLICAS).prop_map(|(into, from)| Op::Sync { into, from }),
        ]
    }

    fn replay(ops: &[Op]) -> Vec<OrSet<u8>> {
        let mut replicas = vec![OrSet::new(); REPLICAS];
        for op in ops {
            match *op {
                Op::Add { at, element } => {
                    replicas[at].add(NodeId(at as u64), element);
                }
                Op::Remove { at, element } => {
                    replicas[at].remove(&element);
                }
                Op::Sync { into, from } => {
                    let other = replicas[from].clone();
                    replicas[into].merge(&other);
                }
            }
        }
        replicas
    }

    proptest! {
        #[test]
        fn merge_laws_hold(ops in prop::collection::vec(op(), 0..60)) {
            let replicas = replay(&ops);
            check_laws(&replicas[0], &replicas[1], &replicas[2]);
        }

        #[test]
        fn add_wins_over_a_concurrent_remove(
            ops in prop::collection::vec(op(), 0..60),
            element in 0u8..6,
        ) {
            let mut replicas = replay(&ops);
            let before = replicas[1].clone();
            replicas[0].merge(&before);
            let mut remover = replicas[0].clone();
            remover.remove(&element);
            replicas[1].add(NodeId(1), element);
            remover.merge(&replicas[1]);
            replicas[1].merge(&remover);
            prop_assert!(remover.contains(&element));
            prop_assert_eq!(&remover, &replicas[1]);
        }

        #[test]
        fn an_observed_remove_sticks(ops in prop::collection::vec(op(), 0..60), element in 0u8..6) {
            let mut replicas = replay(&ops);
            let stale = replicas[1].clone();
            replicas[0].merge(&stale);
            replicas[0].remove(&element);
            replicas[0].merge(&stale);
            prop_assert!(!replicas[0].contains(&element));
        }
    }

    #[test]
    fn remove_then_add_again() {
        let mut set = OrSet::new();
        set.add(NodeId(1), "milk");
        assert!(set.remove(&"milk"));
        assert!(!set.remove(&"milk"));
        set.add(NodeId(1), "milk");
        assert_eq!(set.elements(), BTreeSet::from(["milk"]));
    }
}
