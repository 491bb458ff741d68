//! Causality tracking: dots, version vectors and the dot kernel shared by the dotted CRDTs.
//!
//! A [`Dot`] names one write: the node that coordinated it and that node's event counter. A
//! [`Context`] (a version vector) summarises every dot a replica has seen, including the ones
//! whose values were since overwritten. A [`DotKernel`] stores the live values, each tagged with
//! its dot, next to that context; merging two kernels keeps a value when both sides still hold
//! it, or when the other side has not seen its dot yet. A value one side has seen and dropped
//! stays dropped: that is what makes overwrites and removes win over older values.
//!
//! Invariant: a node's dots enter a context in counter order, so `node -> n` means "every dot of
//! `node` up to `n` is seen". New dots are made only by their own node ([`DotKernel::next_dot`])
//! and states only travel whole, which keeps it true.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use isle_types::NodeId;
use serde::{Deserialize, Serialize};

use crate::Crdt;

/// One write event: the coordinating node and that node's counter for it (starting at 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Dot {
    /// The node that coordinated the write.
    pub node: NodeId,
    /// The node's event counter; 1 is its first write.
    pub counter: u64,
}

/// A version vector: for each node, the highest counter of that node seen.
///
/// This is the causal context handed to clients with a read and given back with their write.
/// Its partial order is "has seen at least everything the other has seen".
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Context {
    seen: BTreeMap<NodeId, u64>,
}

impl Context {
    /// The empty context: has seen nothing (a blind write).
    pub fn new() -> Self {
        Self::default()
    }

    /// The highest counter of `node` seen, 0 when none.
    pub fn get(&self, node: NodeId) -> u64 {
        self.seen.get(&node).copied().unwrap_or(0)
    }

    /// Whether `dot` has been seen.
    pub fn covers(&self, dot: Dot) -> bool {
        self.get(dot.node) >= dot.counter
    }

    /// Record `dot` (and, by the invariant, every earlier dot of its node) as seen.
    pub fn add(&mut self, dot: Dot) {
        if dot.counter == 0 {
            return;
        }
        let entry = self.seen.entry(dot.node).or_insert(0);
        *entry = (*entry).max(dot.counter);
    }

    /// Whether this context has seen everything `other` has seen (`self >= other`).
    pub fn descends(&self, other: &Context) -> bool {
        other
            .seen
            .iter()
            .all(|(&node, &counter)| self.get(node) >= counter)
    }

    /// The entries, by node: `(node, highest counter seen)`.
    pub fn iter(&self) -> impl Iterator<Item = (NodeId, u64)> + '_ {
        self.seen.iter().map(|(&node, &counter)| (node, counter))
    }

    /// Whether nothing has been seen.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

impl PartialOrd for Context {
    /// `Some(Less)` when `other` has seen strictly more, `None` when the two are concurrent.
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        match (self.descends(other), other.descends(self)) {
            (true, true) => Some(Ordering::Equal),
            (true, false) => Some(Ordering::Greater),
            (false, true) => Some(Ordering::Less),
            (false, false) => None,
        }
    }
}

impl Crdt for Context {
    /// Pointwise maximum.
    fn merge(&mut self, other: &Self) {
        for (node, counter) in other.iter() {
            self.add(Dot { node, counter });
        }
        debug_assert!(self.descends(other));
    }
}

/// Values tagged with the dots that wrote them, plus the context of every dot ever seen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DotKernel<V> {
    entries: BTreeMap<Dot, V>,
    context: Context,
}

impl<V> Default for DotKernel<V> {
    fn default() -> Self {
        Self {
            entries: BTreeMap::new(),
            context: Context::new(),
        }
    }
}

impl<V> DotKernel<V> {
    /// An empty kernel that has seen nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// The live values with their dots, in dot order.
    pub fn entries(&self) -> impl Iterator<Item = (Dot, &V)> + '_ {
        self.entries.iter().map(|(&dot, value)| (dot, value))
    }

    /// The number of live values.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no value is live.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Every dot this replica has seen, live or overwritten.
    pub fn context(&self) -> &Context {
        &self.context
    }

    /// The dot `node` would give its next write here: one past any counter of it seen so far.
    pub fn next_dot(&self, node: NodeId) -> Dot {
        Dot {
            node,
            counter: self.context.get(node).saturating_add(1),
        }
    }

    /// Store `value` under `dot` and mark the dot seen.
    pub fn insert(&mut self, dot: Dot, value: V) {
        // A dot names one write: a live value is never replaced under the same dot.
        debug_assert!(!self.entries.contains_key(&dot), "dot {dot:?} reused");
        self.context.add(dot);
        self.entries.insert(dot, value);
    }

    /// Drop the live values whose dots `context` covers (they were observed and overwritten).
    ///
    /// The dropped dots stay in this kernel's context, which is what keeps them dropped.
    pub fn remove_covered(&mut self, context: &Context) {
        self.entries.retain(|&dot, _| !context.covers(dot));
    }

    /// Drop the live values for which `remove` is true; their dots stay seen.
    pub fn remove_where(&mut self, mut remove: impl FnMut(&V) -> bool) {
        self.entries.retain(|_, value| !remove(value));
    }

    /// Mark everything in `context` as seen without adding values.
    pub fn observe(&mut self, context: &Context) {
        self.context.merge(context);
    }
}

impl<V: Clone> Crdt for DotKernel<V> {
    /// Keep a value both sides hold, or one side holds and the other has not seen.
    fn merge(&mut self, other: &Self) {
        let own_context = &self.context;
        let arriving: Vec<(Dot, V)> = other
            .entries
            .iter()
            .filter(|&(dot, _)| !self.entries.contains_key(dot) && !own_context.covers(*dot))
            .map(|(&dot, value)| (dot, value.clone()))
            .collect();
        self.entries
            .retain(|dot, _| other.entries.contains_key(dot) || !other.context.covers(*dot));
        self.entries.extend(arriving);
        self.context.merge(&other.context);
        // The join has seen all either side saw, and every live value is one it has seen.
        debug_assert!(self.context.descends(&other.context));
        debug_assert!(self.entries.keys().all(|dot| self.context.covers(*dot)));
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;
    use crate::laws::check_laws;

    fn context() -> impl Strategy<Value = Context> {
        prop::collection::btree_map(0u64..4, 1u64..4, 0..4).prop_map(|seen| {
            let mut context = Context::new();
            for (node, counter) in seen {
                context.add(Dot {
                    node: NodeId(node),
                    counter,
                });
            }
            context
        })
    }

    /// The reference model: a context is the set of dots it has seen.
    fn dots(context: &Context) -> BTreeSet<Dot> {
        context
            .iter()
            .flat_map(|(node, highest)| (1..=highest).map(move |counter| Dot { node, counter }))
            .collect()
    }

    proptest! {
        #[test]
        fn context_merge_laws_hold(a in context(), b in context(), c in context()) {
            check_laws(&a, &b, &c);
        }

        #[test]
        fn comparison_matches_the_set_of_dots_model(a in context(), b in context()) {
            let (model_a, model_b) = (dots(&a), dots(&b));
            let expected = match (model_a.is_superset(&model_b), model_b.is_superset(&model_a)) {
                (true, true) => Some(Ordering::Equal),
                (true, false) => Some(Ordering::Greater),
                (false, true) => Some(Ordering::Less),
                (false, false) => None,
            };
            prop_assert_eq!(a.partial_cmp(&b), expected);
            let mut joined = a.clone();
            joined.merge(&b);
            let union: BTreeSet<Dot> = model_a.union(&model_b).copied().collect();
            prop_assert_eq!(dots(&joined), union);
        }

        #[test]
        fn covers_matches_the_model(a in context(), node in 0u64..4, counter in 1u64..5) {
            let dot = Dot { node: NodeId(node), counter };
            prop_assert_eq!(a.covers(dot), dots(&a).contains(&dot));
        }
    }

    #[test]
    fn a_kernel_keeps_unseen_values_and_drops_overwritten_ones() {
        let (a, b) = (NodeId(1), NodeId(2));
        let mut left = DotKernel::new();
        left.insert(left.next_dot(a), "old");
        let mut right = left.clone();
        right.remove_where(|_| true);
        right.insert(right.next_dot(b), "new");
        left.insert(left.next_dot(a), "concurrent");
        left.merge(&right);
        let values: Vec<&str> = left.entries().map(|(_, value)| *value).collect();
        assert_eq!(values, vec!["concurrent", "new"]);
    }
}
