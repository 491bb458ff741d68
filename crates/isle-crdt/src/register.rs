//! Registers: last-writer-wins on hybrid timestamps, and the multi-value register.
//!
//! [`LwwRegister`] keeps the write with the greatest [`Stamp`]. **Concurrent writes are
//! discarded**: of two writes neither saw, the one with the smaller stamp is lost without trace.
//! That is the documented cost of the `lww` rule. [`MvRegister`] keeps concurrent writes side by
//! side instead, like [`DvvSet`](crate::DvvSet) but with the writer's own state as the context.

use isle_types::NodeId;
use serde::{Deserialize, Serialize};

use crate::Crdt;
use crate::causal::{Context, Dot, DotKernel};

/// A hybrid-logical-clock timestamp, totally ordered: physical time, then logical, then node.
///
/// The caller's clock produces it; this crate never reads a clock. A node must never hand out
/// the same stamp twice, which the node id in the last place makes unique across nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Stamp {
    /// Wall-clock milliseconds as the hybrid clock saw them.
    pub physical_ms: u64,
    /// Tie-breaking counter within one millisecond.
    pub logical: u32,
    /// The node that stamped the write; breaks the remaining ties.
    pub node: NodeId,
}

/// A last-writer-wins register: the value with the greatest [`Stamp`] wins.
///
/// Concurrent writes are discarded: only the greatest stamp survives a merge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LwwRegister<T> {
    latest: Option<(Stamp, T)>,
}

impl<T> Default for LwwRegister<T> {
    fn default() -> Self {
        Self { latest: None }
    }
}

impl<T: Clone> LwwRegister<T> {
    /// A register never written.
    pub fn new() -> Self {
        Self::default()
    }

    /// Write `value` at `stamp`; returns false (and changes nothing) if a later stamp is held.
    pub fn set(&mut self, stamp: Stamp, value: T) -> bool {
        if self.stamp().is_some_and(|held| held >= stamp) {
            return false;
        }
        self.latest = Some((stamp, value));
        true
    }

    /// The current value, if ever written.
    pub fn get(&self) -> Option<&T> {
        self.latest.as_ref().map(|(_, value)| value)
    }

    /// The stamp of the current value, if ever written.
    pub fn stamp(&self) -> Option<Stamp> {
        self.latest.as_ref().map(|(stamp, _)| *stamp)
    }
}

impl<T: Clone> Crdt for LwwRegister<T> {
    fn merge(&mut self, other: &Self) {
        if let Some((stamp, value)) = &other.latest {
            self.set(*stamp, value.clone());
        }
    }
}

/// A multi-value register: a write replaces the values its replica has seen; concurrent ones stay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MvRegister<T> {
    kernel: DotKernel<T>,
}

impl<T> Default for MvRegister<T> {
    fn default() -> Self {
        Self {
            kernel: DotKernel::new(),
        }
    }
}

impl<T: Clone> MvRegister<T> {
    /// A register never written.
    pub fn new() -> Self {
        Self::default()
    }

    /// Write `value` on `node`, replacing every value seen here; returns the write's dot.
    pub fn write(&mut self, node: NodeId, value: T) -> Dot {
        let seen = self.kernel.context().clone();
        self.kernel.remove_covered(&seen);
        let dot = self.kernel.next_dot(node);
        self.kernel.insert(dot, value);
        dot
    }

    /// The concurrent values, in dot order (one unless writes raced).
    pub fn values(&self) -> Vec<&T> {
        self.kernel.entries().map(|(_, value)| value).collect()
    }

    /// Every write this replica has seen.
    pub fn context(&self) -> &Context {
        self.kernel.context()
    }

    /// Drop every value seen here (an observed remove); concurrent writes elsewhere survive.
    pub fn clear(&mut self) {
        let seen = self.kernel.context().clone();
        self.kernel.remove_covered(&seen);
    }
}

impl<T: Clone> Crdt for MvRegister<T> {
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
        Write {
            at: usize,
            physical_ms: u64,
            value: u8,
        },
        Sync {
            into: usize,
            from: usize,
        },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0..REPLICAS, 0u64..5, any::<u8>()).prop_map(|(at, physical_ms, value)| Op::Write {
                at,
                physical_ms,
                value
            }),
            (0..REPLICAS, 0..REPLICAS).prop_map(|(into, from)| Op::Sync { into, from }),
        ]
    }

    /// Replay on LWW registers; `logical` counts writes per node so no stamp repeats.
    fn replay_lww(ops: &[Op]) -> (Vec<LwwRegister<u8>>, Option<(Stamp, u8)>) {
        let mut replicas = vec![LwwRegister::new(); REPLICAS];
        let mut writes = [0u32; REPLICAS];
        let mut greatest: Option<(Stamp, u8)> = None;
        for op in ops {
            match *op {
                Op::Write {
                    at,
                    physical_ms,
                    value,
                } => {
                    writes[at] += 1;
                    let stamp = Stamp {
                        physical_ms,
                        logical: writes[at],
                        node: NodeId(at as u64),
                    };
                    replicas[at].set(stamp, value);
                    if greatest.is_none_or(|(held, _)| held < stamp) {
                        greatest = Some((stamp, value));
                    }
                }
                Op::Sync { into, from } => {
                    let other = replicas[from].clone();
                    replicas[into].merge(&other);
                }
            }
        }
        (replicas, greatest)
    }

    fn replay_mv(ops: &[Op]) -> Vec<MvRegister<u8>> {
        let mut replicas = vec![MvRegister::new(); REPLICAS];
        for op in ops {
            match *op {
                Op::Write { at, value, .. } => {
                    replicas[at].write(NodeId(at as u64), value);
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
        fn lww_merge_laws_hold(ops in prop::collection::vec(op(), 0..60)) {
            let (replicas, _) = replay_lww(&ops);
            check_laws(&replicas[0], &replicas[1], &replicas[2]);
        }

        #[test]
        fn lww_converges_on_the_greatest_stamp(ops in prop::collection::vec(op(), 0..60)) {
            let (replicas, greatest) = replay_lww(&ops);
            let mut all = LwwRegister::new();
            for replica in &replicas {
                all.merge(replica);
            }
            prop_assert_eq!(all.latest, greatest);
        }

        #[test]
        fn mv_merge_laws_hold(ops in prop::collection::vec(op(), 0..60)) {
            let replicas = replay_mv(&ops);
            check_laws(&replicas[0], &replicas[1], &replicas[2]);
        }

        #[test]
        fn mv_keeps_concurrent_writes_and_resolves_them(
            ops in prop::collection::vec(op(), 0..60),
            first in any::<u8>(),
            second in any::<u8>(),
            resolved in any::<u8>(),
        ) {
            let mut replicas = replay_mv(&ops);
            let other = replicas[1].clone();
            replicas[0].merge(&other);
            replicas[1] = replicas[0].clone();
            replicas[0].write(NodeId(0), first);
            replicas[1].write(NodeId(1), second);
            let other = replicas[1].clone();
            replicas[0].merge(&other);
            prop_assert_eq!(replicas[0].values(), vec![&first, &second]);
            replicas[0].write(NodeId(0), resolved);
            prop_assert_eq!(replicas[0].values(), vec![&resolved]);
        }
    }

    #[test]
    fn stamps_order_by_time_then_logical_then_node() {
        let stamp = |physical_ms, logical, node| Stamp {
            physical_ms,
            logical,
            node: NodeId(node),
        };
        assert!(stamp(1, 9, 9) < stamp(2, 0, 0));
        assert!(stamp(1, 1, 9) < stamp(1, 2, 0));
        assert!(stamp(1, 1, 1) < stamp(1, 1, 2));
    }

    #[test]
    fn an_older_write_is_discarded() {
        let early = Stamp {
            physical_ms: 5,
            logical: 0,
            node: NodeId(2),
        };
        let late = Stamp {
            physical_ms: 5,
            logical: 0,
            node: NodeId(3),
        };
        let mut register = LwwRegister::new();
        assert!(register.set(late, "late"));
        assert!(!register.set(early, "early"));
        assert_eq!(register.get(), Some(&"late"));
    }
}
