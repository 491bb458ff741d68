//! A read's round: the replicas asked, R counted as their copies arrive, the merged reply, and
//! then read repair — every primary that answered with something other than the merge,
//! stragglers included, is sent the merged state.

use std::collections::BTreeSet;

use isle_types::NodeId;

use super::{Ask, Count, Placement, Round, Step, plan};
use crate::level::Tally;
use crate::{ApError, Object, ReadOptions, ReadReply, Replicas, Rule, Value};

/// One replica's answer to a read, as read repair needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    /// The replica.
    pub node: NodeId,
    /// Whether it is a primary (a fallback's answer is a hint, never repaired).
    pub primary: bool,
    /// The digest of its copy, `None` if it holds none.
    pub digest: Option<u128>,
}

/// A read in progress: fed each replica's answer and the deadline, it says when R is met.
#[derive(Debug, Clone)]
pub struct ReadRound {
    pub(super) count: Count,
    copies: Copies,
    rule: Rule,
    /// "k of n replicas reachable": the refusal's detail when no replica failed.
    reachable_primaries: usize,
    n: usize,
}

impl ReadRound {
    /// Plans a read of a key placed as `placement` in a bucket whose plain values merge by
    /// `rule`; an error if the level cannot apply to the key.
    pub fn new(placement: &Placement, options: &ReadOptions, rule: Rule) -> Result<Self, ApError> {
        let plan = plan(
            placement,
            placement.preferred.iter(),
            options.strict,
            |_| true,
        );
        let tally = Tally::new(
            &options.r,
            options.strict,
            &placement.preferred,
            &placement.my_zone,
            &plan.targets,
        )?;
        Ok(ReadRound {
            count: Count::new(tally, &options.r, plan.fallbacks, &plan.unreached),
            copies: Copies {
                waiting: plan.asks.iter().map(|a| a.node).collect(),
                asks: plan.asks,
                merged: None,
                held: Vec::new(),
            },
            rule,
            reachable_primaries: placement.reachable_primaries().count(),
            n: placement.preferred.len(),
        })
    }

    /// The replicas to ask, in preference order: a fallback is asked for the hint it holds.
    pub fn asks(&self) -> &[Ask] {
        &self.copies.asks
    }

    fn unreachable(&self) -> String {
        format!(
            "{} of {} replicas reachable",
            self.reachable_primaries, self.n
        )
    }

    fn reply(&self, step: Step<Replicas>) -> Step<ReadReply> {
        let merged = self.copies.merged.as_ref();
        match step {
            Step::Pending => Step::Pending,
            Step::Failed(err) => Step::Failed(err),
            Step::Done(replicas) => Step::Done(ReadReply {
                value: merged.map_or(Value::Absent, Object::value),
                context: merged.map(Object::context).unwrap_or_default(),
                rule: self.rule,
                stamp: merged.and_then(Object::stamp),
                replicas,
            }),
        }
    }

    /// After the reply: the stragglers' answers go to read repair.
    pub fn into_repair(self) -> ReadRepair {
        ReadRepair {
            copies: self.copies,
        }
    }
}

impl Round for ReadRound {
    /// A replica's copy, `None` if it holds none.
    type Answer = Option<Object>;
    type Reply = ReadReply;

    fn answer(&mut self, node: NodeId, result: Result<Option<Object>, ApError>) -> Step<ReadReply> {
        debug_assert!(
            matches!(self.step(), Step::Pending),
            "an answer after the read was decided"
        );
        self.count.answer(node, &result);
        self.copies.answer(node, result);
        self.step()
    }

    /// The merged reply once R replicas answered.
    fn step(&self) -> Step<ReadReply> {
        self.reply(self.count.step(|| self.unreachable()))
    }

    fn deadline(&self) -> Step<ReadReply> {
        self.reply(self.count.deadline(|| self.unreachable()))
    }
}

/// Read repair after the reply: takes the stragglers' copies, then names the primaries to
/// bring up to the merged state.
#[derive(Debug, Clone)]
pub struct ReadRepair {
    copies: Copies,
}

impl ReadRepair {
    /// A straggler's answer: its copy is merged in and compared at the end; a failure is
    /// ignored (nothing to compare).
    pub fn answer(&mut self, node: NodeId, result: Result<Option<Object>, ApError>) {
        self.copies.answer(node, result);
    }

    /// The merged state and the primaries to send it to (none if no replica held a copy).
    pub fn finish(self) -> Option<(Object, Vec<NodeId>)> {
        let merged = self.copies.merged?;
        let targets = repair_targets(&self.copies.held, merged.digest());
        Some((merged, targets))
    }
}

/// The copies a read collected: merged, and each one's digest for read repair.
#[derive(Debug, Clone)]
struct Copies {
    asks: Vec<Ask>,
    /// Replicas asked that have not answered yet.
    waiting: BTreeSet<NodeId>,
    merged: Option<Object>,
    held: Vec<Held>,
}

impl Copies {
    fn answer(&mut self, node: NodeId, result: Result<Option<Object>, ApError>) {
        let was_waiting = self.waiting.remove(&node);
        debug_assert!(was_waiting, "{node} answered twice or was not asked");
        let Ok(object) = result else { return };
        let primary = self
            .asks
            .iter()
            .any(|a| a.node == node && a.hint_for.is_none());
        self.held.push(Held {
            node,
            primary,
            digest: object.as_ref().map(Object::digest),
        });
        match (self.merged.as_mut(), object) {
            (Some(merged), Some(object)) => merged.merge(&object),
            (None, Some(object)) => self.merged = Some(object),
            (_, None) => {}
        }
    }
}

/// The primaries whose copy (or lack of one) differs from the merged state's digest, in the
/// order they answered. Fallbacks are not repaired: they hold hints, delivered by handoff.
pub fn repair_targets(held: &[Held], merged: u128) -> Vec<NodeId> {
    held.iter()
        .filter(|h| h.primary && h.digest != Some(merged))
        .map(|h| h.node)
        .collect()
}
