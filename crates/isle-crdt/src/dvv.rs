//! Dotted version vectors with siblings: the `siblings` merge rule (Preguiça et al., Riak DVV).
//!
//! A key's state is a [`DvvSet`]: the concurrent values (siblings), each tagged with the [`Dot`]
//! of the write that made it, and the [`Context`] of every write the replica has seen. A read
//! returns the values and the context; a write brings the context back and replaces exactly the
//! siblings that context covers, so a client that read two siblings resolves both with one write,
//! and two clients writing on the same old context both survive as siblings.
//!
//! - **Deletes** are writes with no value: a tombstone sibling under its own dot. The deleted
//!   values' dots stay in the context, so a replica that still holds one of them cannot bring it
//!   back on merge (no "doomstone" resurrection). Tombstones are never garbage-collected here;
//!   that needs knowledge of what every replica has seen and lives above this crate.
//! - **Retries**: a coordinator that already holds an uncovered sibling equal to the value being
//!   written keeps that sibling instead of minting a new dot, so resending the same write to the
//!   same node adds nothing. A retry through a *different* node before the two replicas sync can
//!   still leave two equal siblings under two dots; [`DvvSet::values`] reports each distinct value
//!   once, and the next write with the read context replaces both. Exactly-once for
//!   non-idempotent operations is the job of idempotency keys, not of this type.

use isle_types::NodeId;
use serde::{Deserialize, Serialize};

use crate::Crdt;
use crate::causal::{Context, Dot, DotKernel};

/// A key's siblings under the `siblings` rule: dot-tagged values (`None` = tombstone) and a context.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DvvSet<V> {
    kernel: DotKernel<Option<V>>,
}

impl<V> Default for DvvSet<V> {
    fn default() -> Self {
        Self {
            kernel: DotKernel::new(),
        }
    }
}

impl<V: Clone + PartialEq> DvvSet<V> {
    /// A key never written: no values, empty context.
    pub fn new() -> Self {
        Self::default()
    }

    /// The live sibling values, each distinct value once, in dot order (tombstones left out).
    pub fn values(&self) -> Vec<&V> {
        let mut distinct: Vec<&V> = Vec::new();
        for (_, value) in self.kernel.entries() {
            if let Some(value) = value
                && !distinct.contains(&value)
            {
                distinct.push(value);
            }
        }
        distinct
    }

    /// The causal context to return to a client with [`values`](Self::values).
    pub fn context(&self) -> Context {
        self.kernel.context().clone()
    }

    /// Whether the key has no live value (never written, or deleted).
    pub fn is_deleted(&self) -> bool {
        self.values().is_empty()
    }

    /// Every sibling with its dot, tombstones included (`None`).
    pub fn siblings(&self) -> impl Iterator<Item = (Dot, Option<&V>)> + '_ {
        self.kernel
            .entries()
            .map(|(dot, value)| (dot, value.as_ref()))
    }

    /// Coordinate a write on `node`: `value` replaces what `context` covers; returns its dot.
    ///
    /// Siblings the context does not cover are concurrent with this write and are kept.
    pub fn update(&mut self, node: NodeId, context: &Context, value: V) -> Dot {
        self.write(node, context, Some(value))
    }

    /// Coordinate a delete on `node`: a tombstone replacing what `context` covers; returns its dot.
    pub fn delete(&mut self, node: NodeId, context: &Context) -> Dot {
        self.write(node, context, None)
    }

    /// Merge another replica's state of the same key into this one.
    pub fn sync(&mut self, other: &Self) {
        self.kernel.merge(&other.kernel);
    }

    fn write(&mut self, node: NodeId, context: &Context, value: Option<V>) -> Dot {
        self.kernel.remove_covered(context);
        // The client saw these dots and replaced them: copies still in flight must lose.
        self.kernel.observe(context);
        // A retry of a write this coordinator already holds: keep it, mint nothing.
        if let Some((dot, _)) = self.kernel.entries().find(|(_, held)| **held == value) {
            return dot;
        }
        let dot = self.kernel.next_dot(node);
        self.kernel.insert(dot, value);
        dot
    }
}

impl<V: Clone + PartialEq> Crdt for DvvSet<V> {
    fn merge(&mut self, other: &Self) {
        self.sync(other);
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
        Write {
            at: usize,
            read_from: usize,
            value: u8,
        },
        Delete {
            at: usize,
            read_from: usize,
        },
        Sync {
            into: usize,
            from: usize,
        },
    }

    fn op() -> impl Strategy<Value = Op> {
        let replica = 0..REPLICAS;
        prop_oneof![
            (replica.clone(), replica.clone(), 0u8..4).prop_map(|(at, read_from, value)| {
                Op::Write {
                    at,
                    read_from,
                    value,
                }
            }),
            (replica.clone(), replica.clone())
                .prop_map(|(at, read_from)| Op::Delete { at, read_from }),
            (replica.clone(), replica).prop_map(|(into, from)| Op::Sync { into, from }),
        ]
    }

    fn node(index: usize) -> NodeId {
        NodeId(index as u64 + 1)
    }

    /// Replay a history: replica `i` is node `i + 1`, and reads may come from any replica.
    fn replay(ops: &[Op]) -> Vec<DvvSet<u8>> {
        let mut replicas = vec![DvvSet::new(); REPLICAS];
        for op in ops {
            match *op {
                Op::Write {
                    at,
                    read_from,
                    value,
                } => {
                    let context = replicas[read_from].context();
                    replicas[at].update(node(at), &context, value);
                }
                Op::Delete { at, read_from } => {
                    let context = replicas[read_from].context();
                    replicas[at].delete(node(at), &context);
                }
                Op::Sync { into, from } => {
                    let other = replicas[from].clone();
                    replicas[into].sync(&other);
                }
            }
        }
        replicas
    }

    fn merged(replicas: &[DvvSet<u8>]) -> DvvSet<u8> {
        let mut all = DvvSet::new();
        for replica in replicas {
            all.merge(replica);
        }
        all
    }

    proptest! {
        #[test]
        fn merge_laws_hold(ops in prop::collection::vec(op(), 0..40)) {
            let replicas = replay(&ops);
            check_laws(&replicas[0], &replicas[1], &replicas[2]);
        }

        #[test]
        fn write_with_latest_context_leaves_one_value(
            ops in prop::collection::vec(op(), 0..40),
            value in 10u8..20,
        ) {
            let mut replicas = replay(&ops);
            let everything = merged(&replicas);
            replicas[0].merge(&everything);
            let context = replicas[0].context();
            replicas[0].update(node(0), &context, value);
            let latest = replicas[0].clone();
            for replica in &mut replicas {
                replica.merge(&latest);
                prop_assert_eq!(replica.values(), vec![&value]);
            }
        }

        #[test]
        fn writes_on_the_same_old_context_become_siblings(
            ops in prop::collection::vec(op(), 0..40),
            first in 10u8..20,
            second in 20u8..30,
        ) {
            let replicas = replay(&ops);
            let mut a = replicas[0].clone();
            let mut b = replicas[1].clone();
            let context = a.context();
            a.update(node(0), &context, first);
            b.update(node(1), &context, second);
            a.merge(&b);
            let values = a.values();
            prop_assert!(values.contains(&&first) && values.contains(&&second), "{:?}", values);
        }

        #[test]
        fn a_retry_to_the_same_coordinator_adds_no_sibling(
            ops in prop::collection::vec(op(), 0..40),
            value in 10u8..20,
        ) {
            let mut replicas = replay(&ops);
            let context = replicas[1].context();
            let first = replicas[0].update(node(0), &context, value);
            let once = replicas[0].clone();
            let retried = replicas[0].update(node(0), &context, value);
            prop_assert_eq!(first, retried);
            prop_assert_eq!(&replicas[0], &once);
        }

        #[test]
        fn a_retry_through_another_node_shows_one_value(value in 10u8..20) {
            let mut a = DvvSet::new();
            let mut b = DvvSet::new();
            let context = Context::new();
            a.update(node(0), &context, value);
            b.update(node(1), &context, value);
            a.merge(&b);
            prop_assert_eq!(a.siblings().count(), 2);
            prop_assert_eq!(a.values(), vec![&value]);
            let context = a.context();
            a.update(node(0), &context, value);
            prop_assert_eq!(a.siblings().count(), 1);
        }

        #[test]
        fn a_deleted_key_stays_deleted(ops in prop::collection::vec(op(), 0..40)) {
            let mut replicas = replay(&ops);
            let stale = replicas[1].clone();
            replicas[0].merge(&stale);
            let context = replicas[0].context();
            replicas[0].delete(node(0), &context);
            let deleted = replicas[0].clone();
            replicas[0].merge(&stale);
            prop_assert!(replicas[0].is_deleted());
            let mut stale = stale;
            stale.merge(&deleted);
            prop_assert!(stale.is_deleted());
        }
    }

    #[test]
    fn update_replaces_only_what_the_context_covers() {
        let mut replica = DvvSet::new();
        let empty = Context::new();
        replica.update(node(0), &empty, "a");
        let seen_a = replica.context();
        replica.update(node(0), &empty, "b");
        replica.update(node(0), &seen_a, "c");
        assert_eq!(replica.values(), vec![&"b", &"c"]);
    }
}
