//! The PN-counter: per-node increment and decrement totals whose difference is the value.
//!
//! Each node only ever raises its own two totals, so merging takes the per-node maximum and an
//! increment is never counted twice nor lost. A retried increment *is* applied twice: callers
//! that need exactly-once must dedup by request id before calling [`PnCounter::increment`].

use std::collections::BTreeMap;

use isle_types::NodeId;
use serde::{Deserialize, Serialize};

use crate::Crdt;

/// A counter that can go up and down, merged per node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PnCounter {
    increments: BTreeMap<NodeId, u64>,
    decrements: BTreeMap<NodeId, u64>,
}

impl PnCounter {
    /// A counter at zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add `amount` on behalf of `node` (saturating at `u64::MAX` per node).
    pub fn increment(&mut self, node: NodeId, amount: u64) {
        bump(&mut self.increments, node, amount);
    }

    /// Subtract `amount` on behalf of `node` (saturating at `u64::MAX` per node).
    pub fn decrement(&mut self, node: NodeId, amount: u64) {
        bump(&mut self.decrements, node, amount);
    }

    /// Add a signed `delta` on behalf of `node` (Redis `INCRBY` with a negative argument).
    pub fn add(&mut self, node: NodeId, delta: i64) {
        if delta >= 0 {
            self.increment(node, delta.unsigned_abs());
        } else {
            self.decrement(node, delta.unsigned_abs());
        }
    }

    /// The counter's value: all increments minus all decrements, clamped to the `i64` range.
    pub fn value(&self) -> i64 {
        let up: i128 = self.increments.values().map(|&n| i128::from(n)).sum();
        let down: i128 = self.decrements.values().map(|&n| i128::from(n)).sum();
        let value = (up - down).clamp(i128::from(i64::MIN), i128::from(i64::MAX));
        i64::try_from(value).unwrap_or(if value < 0 { i64::MIN } else { i64::MAX })
    }
}

fn bump(totals: &mut BTreeMap<NodeId, u64>, node: NodeId, amount: u64) {
    if amount == 0 {
        return;
    }
    let total = totals.entry(node).or_insert(0);
    *total = total.saturating_add(amount);
}

fn merge_max(ours: &mut BTreeMap<NodeId, u64>, theirs: &BTreeMap<NodeId, u64>) {
    for (&node, &total) in theirs {
        let ours = ours.entry(node).or_insert(0);
        *ours = (*ours).max(total);
    }
}

impl Crdt for PnCounter {
    fn merge(&mut self, other: &Self) {
        merge_max(&mut self.increments, &other.increments);
        merge_max(&mut self.decrements, &other.decrements);
        // Per-node totals only grow: the join holds at least each side's.
        debug_assert!(
            other
                .increments
                .iter()
                .all(|(n, t)| self.increments[n] >= *t)
        );
        debug_assert!(
            other
                .decrements
                .iter()
                .all(|(n, t)| self.decrements[n] >= *t)
        );
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
        Add { at: usize, delta: i64 },
        Sync { into: usize, from: usize },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0..REPLICAS, -1000i64..1000).prop_map(|(at, delta)| Op::Add { at, delta }),
            (0..REPLICAS, 0..REPLICAS).prop_map(|(into, from)| Op::Sync { into, from }),
        ]
    }

    fn replay(ops: &[Op]) -> (Vec<PnCounter>, i64) {
        let mut replicas = vec![PnCounter::new(); REPLICAS];
        let mut applied = 0;
        for op in ops {
            match *op {
                Op::Add { at, delta } => {
                    replicas[at].add(NodeId(at as u64), delta);
                    applied += delta;
                }
                Op::Sync { into, from } => {
                    let other = replicas[from].clone();
                    replicas[into].merge(&other);
                }
            }
        }
        (replicas, applied)
    }

    proptest! {
        #[test]
        fn merge_laws_hold(ops in prop::collection::vec(op(), 0..60)) {
            let (replicas, _) = replay(&ops);
            check_laws(&replicas[0], &replicas[1], &replicas[2]);
        }

        #[test]
        fn converged_value_is_the_sum_of_applied_deltas(ops in prop::collection::vec(op(), 0..60)) {
            let (replicas, applied) = replay(&ops);
            let mut all = PnCounter::new();
            for replica in replicas.iter().rev() {
                all.merge(replica);
            }
            prop_assert_eq!(all.value(), applied);
        }
    }

    #[test]
    fn value_clamps_instead_of_overflowing() {
        let mut counter = PnCounter::new();
        counter.increment(NodeId(1), u64::MAX);
        counter.increment(NodeId(2), u64::MAX);
        assert_eq!(counter.value(), i64::MAX);
    }
}
