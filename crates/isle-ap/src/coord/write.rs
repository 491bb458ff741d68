//! A write's round on its coordinator: where the coordinator keeps its own copy, where the new
//! state goes (each reachable primary, else unless strict a fallback holding a hint for it),
//! and when W durable acknowledgements are in.

use std::collections::BTreeSet;

use isle_types::NodeId;

use super::{Ask, Count, Placement, Round, Step, plan};
use crate::level::{Tally, Target};
use crate::{ApError, Replicas, WriteOptions};

/// A write in progress on its coordinator.
#[derive(Debug, Clone)]
pub struct WriteRound {
    own: Ask,
    sends: Vec<Ask>,
    pub(super) count: Count,
    /// Replicas asked (this node included) that have not answered yet.
    waiting: BTreeSet<NodeId>,
}

impl WriteRound {
    /// Plans the write of a key placed as `placement`; an error if the level cannot apply to
    /// the key. A coordinator that is no primary stands in for the first one: its own copy is
    /// a hint for it, and it counts for that primary's zone.
    pub fn new(placement: &Placement, options: &WriteOptions) -> Result<Self, ApError> {
        let me = placement.me;
        let primary = placement.is_primary(me);
        let stands_for = if primary {
            me
        } else {
            placement.preferred.first().map_or(me, |(owner, _)| *owner)
        };
        let others = placement
            .preferred
            .iter()
            .filter(|(owner, _)| *owner != stands_for);
        let plan = plan(placement, others, options.strict, |n| n != me);
        let mut targets = vec![Target {
            node: me,
            zone: placement.zone_of(stands_for).to_string(),
            primary,
        }];
        targets.extend(plan.targets);
        let tally = Tally::new(
            &options.w,
            options.strict,
            &placement.preferred,
            &placement.my_zone,
            &targets,
        )?;
        let own = Ask {
            node: me,
            hint_for: (!primary).then_some(stands_for),
        };
        let waiting: BTreeSet<NodeId> = std::iter::once(me)
            .chain(plan.asks.iter().map(|a| a.node))
            .collect();
        debug_assert_eq!(waiting.len(), plan.asks.len() + 1, "a node asked twice");
        Ok(WriteRound {
            own,
            sends: plan.asks,
            count: Count::new(
                tally,
                &options.w,
                plan.fallbacks + u32::from(!primary),
                &plan.unreached,
            ),
            waiting,
        })
    }

    /// This node's own copy: its data if a primary, else a hint for the primary it stands in
    /// for (and the write is minted under the fallback's actor).
    pub fn own(&self) -> Ask {
        self.own
    }

    /// Where the new state is sent besides this node, in preference order.
    pub fn sends(&self) -> &[Ask] {
        &self.sends
    }
}

impl Round for WriteRound {
    /// A durable acknowledgement (this node's own once its copy is fsynced).
    type Answer = ();
    /// Who acknowledged.
    type Reply = Replicas;

    fn answer(&mut self, node: NodeId, result: Result<(), ApError>) -> Step<Replicas> {
        debug_assert!(
            matches!(self.step(), Step::Pending),
            "an answer after the write was decided"
        );
        let was_waiting = self.waiting.remove(&node);
        debug_assert!(was_waiting, "{node} answered twice or was not asked");
        self.count.answer(node, &result);
        self.step()
    }

    fn step(&self) -> Step<Replicas> {
        self.count.step(unreachable)
    }

    fn deadline(&self) -> Step<Replicas> {
        self.count.deadline(unreachable)
    }
}

fn unreachable() -> String {
    "replicas unreachable or too slow".into()
}
