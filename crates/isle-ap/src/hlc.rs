//! A hybrid logical clock: stamps that follow wall-clock time but never go backwards and always
//! exceed every stamp this node has seen (Kulkarni et al.). `lww` writes carry them, so a node
//! with a slow clock cannot overwrite a write it has already seen.

use isle_crdt::Stamp;
use isle_types::NodeId;

/// The clock of one node; the caller passes in wall-clock readings.
#[derive(Debug, Clone)]
pub struct Hlc {
    node: NodeId,
    last: Stamp,
    /// Remote stamps further than this ahead of our wall clock are not followed (a bad clock).
    max_ahead_ms: u64,
}

impl Hlc {
    /// A clock for `node` that follows remote stamps at most `max_ahead_ms` ahead of local time.
    pub fn new(node: NodeId, max_ahead_ms: u64) -> Self {
        Self {
            node,
            last: Stamp {
                physical_ms: 0,
                logical: 0,
                node,
            },
            max_ahead_ms,
        }
    }

    /// A fresh stamp, greater than every stamp issued or observed so far.
    pub fn now(&mut self, wall_ms: u64) -> Stamp {
        let stamp = if wall_ms > self.last.physical_ms {
            Stamp {
                physical_ms: wall_ms,
                logical: 0,
                node: self.node,
            }
        } else {
            match self.last.logical.checked_add(1) {
                Some(logical) => Stamp {
                    physical_ms: self.last.physical_ms,
                    logical,
                    node: self.node,
                },
                None => Stamp {
                    physical_ms: self.last.physical_ms + 1,
                    logical: 0,
                    node: self.node,
                },
            }
        };
        self.last = stamp;
        stamp
    }

    /// Take a remote stamp into account; returns false if it was too far ahead to follow.
    pub fn observe(&mut self, remote: Stamp, wall_ms: u64) -> bool {
        if remote.physical_ms > wall_ms.saturating_add(self.max_ahead_ms) {
            return false;
        }
        let ours = (self.last.physical_ms, self.last.logical);
        if (remote.physical_ms, remote.logical) > ours {
            self.last = Stamp {
                physical_ms: remote.physical_ms,
                logical: remote.logical,
                node: self.node,
            };
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn a_slow_wall_clock_still_moves_forward_after_seeing_a_later_stamp() {
        let mut clock = Hlc::new(NodeId(1), 60_000);
        let remote = Stamp {
            physical_ms: 5_000,
            logical: 3,
            node: NodeId(2),
        };
        assert!(clock.observe(remote, 1_000));
        let next = clock.now(1_001);
        assert!(next > remote, "{next:?} must follow {remote:?}");
        assert_eq!(next.node, NodeId(1));
    }

    #[test]
    fn a_stamp_from_a_runaway_clock_is_not_followed() {
        let mut clock = Hlc::new(NodeId(1), 1_000);
        let runaway = Stamp {
            physical_ms: 1_000_000,
            logical: 0,
            node: NodeId(2),
        };
        assert!(!clock.observe(runaway, 1_000));
        assert_eq!(clock.now(1_000).physical_ms, 1_000);
    }

    proptest! {
        /// Whatever the wall clock does (jumps back, stalls), stamps strictly increase.
        #[test]
        fn stamps_strictly_increase(readings in proptest::collection::vec((0u64..10_000, any::<bool>(), 0u64..10_000), 1..200)) {
            let mut clock = Hlc::new(NodeId(1), 5_000);
            let mut last: Option<Stamp> = None;
            for (wall, remote_first, remote_ms) in readings {
                if remote_first {
                    clock.observe(Stamp { physical_ms: remote_ms, logical: 7, node: NodeId(2) }, wall);
                }
                let stamp = clock.now(wall);
                if let Some(last) = last {
                    prop_assert!(stamp > last);
                }
                last = Some(stamp);
            }
        }
    }
}
