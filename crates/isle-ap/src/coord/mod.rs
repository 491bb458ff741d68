//! The AP coordinator's decisions, without IO: which replicas a request goes to, when its
//! level is met or can no longer be, and which replicas a read repairs.
//!
//! A [`Placement`] is what a coordinator knows about one key: its preference list with zones,
//! the nodes after it on the ring (candidate fallbacks), who is reachable, and itself. From it:
//!
//! - [`route_write`]: coordinate here (a primary, or a fallback when no primary is reachable),
//!   forward once to the first reachable primary, or refuse (strict, no primary reachable).
//! - [`ReadRound`] (`read.rs`): the replicas a read asks, a fallback's hint standing in for
//!   each unreachable primary unless strict; fed the answers and the deadline, it says when R
//!   is met (with the merged reply) or can no longer be. Its [`ReadRepair`] then takes the
//!   stragglers' answers and lists the primaries to bring up to the merged state.
//! - [`WriteRound`] (`write.rs`): where this node keeps its own copy (its data, or a hint for
//!   the primary it stands in for), where the new state goes, and when W is met.
//!
//! Counting is [`Tally`]'s, on [`isle_quorum::Tracker`]. The node's shell (`isle-node/src/ap`)
//! sends what a round lists, feeds it answers and the deadline, and performs the repairs.

mod read;
mod write;

#[cfg(test)]
mod tests;

use std::collections::BTreeSet;

use isle_quorum::Outcome;
use isle_types::NodeId;

pub use self::read::{Held, ReadRepair, ReadRound, repair_targets};
pub use self::write::WriteRound;
use crate::level::{Tally, Target, needed};
use crate::ring::Ring;
use crate::{ApError, Level, Replicas, WriteOptions};

/// What a coordinator knows about where one key lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// The key's preference list (node, zone), in walk order.
    pub preferred: Vec<(NodeId, String)>,
    /// The nodes after the preference list in walk order: candidate fallbacks.
    pub spare: Vec<NodeId>,
    /// Nodes whose heartbeats arrive, this node included.
    pub reachable: BTreeSet<NodeId>,
    /// The coordinating node.
    pub me: NodeId,
    /// Its zone.
    pub my_zone: String,
}

impl Placement {
    /// The placement of the key with this [`key_hash`](crate::key_hash) in a bucket of `n`
    /// replicas, as `me` sees it with `reachable` (to which `me` is added) answering.
    pub fn new(
        ring: &Ring,
        hash: u64,
        n: u32,
        me: NodeId,
        mut reachable: BTreeSet<NodeId>,
    ) -> Self {
        let partition = ring.partition_of(hash);
        let n = usize::try_from(n).unwrap_or(usize::MAX);
        reachable.insert(me);
        Placement {
            preferred: ring
                .preference(partition, n)
                .into_iter()
                .map(|node| (node, ring.zone_of(node).to_string()))
                .collect(),
            spare: ring.fallbacks(partition, n),
            reachable,
            me,
            my_zone: ring.zone_of(me).to_string(),
        }
    }

    /// Whether `node` is in the preference list.
    pub fn is_primary(&self, node: NodeId) -> bool {
        self.preferred.iter().any(|(n, _)| *n == node)
    }

    /// The zone of a primary or of this node ("" for anyone else, as the ring says).
    fn zone_of(&self, node: NodeId) -> &str {
        match self.preferred.iter().find(|(n, _)| *n == node) {
            Some((_, zone)) => zone,
            None if node == self.me => &self.my_zone,
            None => "",
        }
    }

    /// Primaries whose heartbeats arrive.
    fn reachable_primaries(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.preferred
            .iter()
            .map(|(n, _)| *n)
            .filter(|n| self.reachable.contains(n))
    }
}

/// One replica a request goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ask {
    /// The node asked.
    pub node: NodeId,
    /// The unreachable primary this node stands in for (its copy is a hint for it); `None`
    /// for a primary.
    pub hint_for: Option<NodeId>,
}

/// Where a request stands after an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step<T> {
    /// Not decided: keep waiting for answers or the deadline.
    Pending,
    /// The level is met.
    Done(T),
    /// The level cannot be met (too many failures), or the deadline passed first.
    Failed(ApError),
}

/// A request in progress: fed each replica's answer and the deadline, it decides.
pub trait Round {
    /// What a replica answers when it succeeds.
    type Answer;
    /// What the request returns once its level is met.
    type Reply;

    /// `node` answered (every node asked answers once; none after the round decided).
    fn answer(&mut self, node: NodeId, answer: Result<Self::Answer, ApError>) -> Step<Self::Reply>;

    /// Where the request stands (it may be decided before any answer).
    fn step(&self) -> Step<Self::Reply>;

    /// The deadline passed, or no more answers can come: the reply if the level was met,
    /// else a refusal.
    fn deadline(&self) -> Step<Self::Reply>;
}

/// Where a write goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Coordinate it on this node: a primary, or a fallback when no primary is reachable.
    Here,
    /// Forward it to this primary, once: if the forward fails, the primary may have applied
    /// the write, so trying another would apply it twice (see [`forward_failed`]).
    Forward(NodeId),
}

/// Decides where a write received by this node is coordinated, or refuses it: strict, and
/// no primary is reachable.
pub fn route_write(placement: &Placement, options: &WriteOptions) -> Result<Route, ApError> {
    if placement.is_primary(placement.me) {
        return Ok(Route::Here);
    }
    if let Some(owner) = placement.reachable_primaries().next() {
        return Ok(Route::Forward(owner));
    }
    if options.strict {
        return Err(ApError::Unavailable {
            answered: 0,
            asked: u32::try_from(placement.preferred.len()).unwrap_or(u32::MAX),
            needed: needed(&options.w, &placement.preferred, &placement.my_zone)?,
            level: options.w.to_string(),
            detail: "no primary replica reachable from this node (strict)".into(),
        });
    }
    Ok(Route::Here)
}

/// The answer to a write forwarded to `owner` that did not come back: indeterminate, since
/// the request may have arrived and only the answer been lost.
pub fn forward_failed(owner: NodeId, level: &Level, err: &ApError) -> ApError {
    ApError::Unavailable {
        answered: 0,
        asked: 1,
        needed: 1,
        level: level.to_string(),
        detail: format!(
            "forwarded to primary {owner}, which did not answer ({err}); it may have applied the write"
        ),
    }
}

/// Who a request for some primaries goes to.
#[derive(Debug, Default)]
struct Plan {
    asks: Vec<Ask>,
    /// Every replica asked, as the level counts it, and the unreachable primaries.
    targets: Vec<Target>,
    /// Primaries neither reachable nor stood in for: failed from the start.
    unreached: Vec<NodeId>,
    /// Fallbacks standing in.
    fallbacks: u32,
}

/// Each of `owners` is asked if reachable, else (unless `strict`) the next reachable spare
/// that `may_stand_in` allows, holding a hint for it; else it counts as failed.
fn plan<'a>(
    placement: &Placement,
    owners: impl Iterator<Item = &'a (NodeId, String)>,
    strict: bool,
    may_stand_in: impl Fn(NodeId) -> bool,
) -> Plan {
    let mut spare = placement
        .spare
        .iter()
        .copied()
        .filter(|n| placement.reachable.contains(n) && may_stand_in(*n));
    let mut plan = Plan::default();
    for (owner, zone) in owners {
        let (node, hint_for) = if placement.reachable.contains(owner) {
            (*owner, None)
        } else if !strict && let Some(fallback) = spare.next() {
            plan.fallbacks += 1;
            (fallback, Some(*owner))
        } else {
            plan.unreached.push(*owner);
            plan.targets.push(Target {
                node: *owner,
                zone: zone.clone(),
                primary: true,
            });
            continue;
        };
        plan.asks.push(Ask { node, hint_for });
        plan.targets.push(Target {
            node,
            zone: zone.clone(),
            primary: hint_for.is_none(),
        });
    }
    plan.check(placement);
    plan
}

impl Plan {
    /// The placement invariants: each node asked once, a fallback is never a primary and
    /// stands in for an unreachable one, an unreached primary is not asked.
    fn check(&self, placement: &Placement) {
        let distinct: BTreeSet<NodeId> = self.asks.iter().map(|a| a.node).collect();
        debug_assert_eq!(distinct.len(), self.asks.len(), "a node asked twice");
        for ask in &self.asks {
            debug_assert!(placement.reachable.contains(&ask.node), "asked unreachable");
            if let Some(owner) = ask.hint_for {
                debug_assert!(!placement.is_primary(ask.node), "a primary as fallback");
                debug_assert!(placement.is_primary(owner), "a hint for a non-primary");
                debug_assert!(
                    !placement.reachable.contains(&owner),
                    "a hint for a live owner"
                );
            }
        }
        for owner in &self.unreached {
            debug_assert!(!distinct.contains(owner), "an unreached primary asked");
        }
        debug_assert_eq!(
            self.asks.iter().filter(|a| a.hint_for.is_some()).count(),
            self.fallbacks as usize,
            "fallbacks miscounted"
        );
    }
}

/// A request's counting: its tally, level, fallbacks, and the last replica error seen.
#[derive(Debug, Clone)]
struct Count {
    tally: Tally,
    level: Level,
    fallbacks: u32,
    /// The last replica error, for the refusal's detail.
    failure: String,
}

impl Count {
    fn new(tally: Tally, level: &Level, fallbacks: u32, unreached: &[NodeId]) -> Self {
        let mut count = Count {
            tally,
            level: level.clone(),
            fallbacks,
            failure: String::new(),
        };
        for &owner in unreached {
            count.tally.fail(owner);
        }
        count
    }

    fn answer<T>(&mut self, node: NodeId, result: &Result<T, ApError>) {
        match result {
            Ok(_) => self.tally.ack(node),
            Err(err) => {
                self.failure = format!("node {node}: {err}");
                self.tally.fail(node);
            }
        }
    }

    fn replicas(&self) -> Replicas {
        Replicas {
            answered: self.tally.acked(),
            asked: self.tally.asked(),
            needed: self.tally.needed(),
            level: self.level.to_string(),
            fallbacks: self.fallbacks,
        }
    }

    /// Where the request stands; `otherwise` is the refusal's detail when no replica failed.
    fn step(&self, otherwise: impl FnOnce() -> String) -> Step<Replicas> {
        match self.tally.state() {
            Outcome::Pending => Step::Pending,
            Outcome::Reached => Step::Done(self.replicas()),
            Outcome::Impossible => Step::Failed(self.unavailable(otherwise)),
        }
    }

    /// The deadline passed (or nothing more can arrive): met, or refused.
    fn deadline(&self, otherwise: impl FnOnce() -> String) -> Step<Replicas> {
        match self.tally.state() {
            Outcome::Reached => Step::Done(self.replicas()),
            Outcome::Pending | Outcome::Impossible => Step::Failed(self.unavailable(otherwise)),
        }
    }

    fn unavailable(&self, otherwise: impl FnOnce() -> String) -> ApError {
        let replicas = self.replicas();
        ApError::Unavailable {
            answered: replicas.answered,
            asked: replicas.asked,
            needed: replicas.needed,
            level: replicas.level,
            detail: if self.failure.is_empty() {
                otherwise()
            } else {
                self.failure.clone()
            },
        }
    }
}
