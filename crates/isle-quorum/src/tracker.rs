//! Pure counting of per-voter results for one quorum request (after Garage's
//! `QuorumSetResultTracker`): has the request's [`Threshold`] been reached, or can it no longer
//! be? The threshold is a quorum [`Policy`] (CP-style: more than half) or a count the request
//! chose (AP read and write levels: at least k voters, or at least k in each zone).

use std::collections::{BTreeMap, BTreeSet};

use isle_types::{NodeId, ZoneId};
use serde::{Deserialize, Serialize};

use crate::voter::distinct;
use crate::{Policy, Verdict, Voter, evaluate};

/// Where a quorum request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Neither reached nor ruled out yet: keep waiting.
    Pending,
    /// The successful voters hold quorum.
    Reached,
    /// Enough voters failed that even all the rest succeeding could not hold quorum.
    Impossible,
}

/// What the voters that succeed must add up to.
///
/// Every threshold is monotonic (a superset of a set that holds it holds it too), which is
/// what lets a [`Tracker`] call a request impossible before everyone has answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Threshold {
    /// Quorum under a policy: more than half of the nodes, votes or zones.
    Quorum(Policy),
    /// At least this many voters, weights ignored (a level such as `W=2` or `ALL`).
    AtLeast(u64),
    /// In every listed zone, at least that many of its voters, weights ignored (`EACH_QUORUM`,
    /// `LOCAL_QUORUM`). A listed zone without voters can never be satisfied.
    PerZone(BTreeMap<ZoneId, u64>),
}

impl From<Policy> for Threshold {
    fn from(policy: Policy) -> Self {
        Threshold::Quorum(policy)
    }
}

impl Threshold {
    /// Whether the voters in `set` meet this threshold (ids that are not voters are ignored).
    pub fn holds(&self, voters: &[Voter], set: &BTreeSet<NodeId>) -> bool {
        let members = || distinct(voters).into_iter().filter(|v| set.contains(&v.id));
        match self {
            Threshold::Quorum(policy) => evaluate(*policy, voters, set).held,
            Threshold::AtLeast(k) => members().count() as u64 >= *k,
            Threshold::PerZone(need) => {
                let mut have: BTreeMap<&str, u64> = BTreeMap::new();
                for voter in members() {
                    *have.entry(voter.zone.as_str()).or_insert(0) += 1;
                }
                need.iter()
                    .all(|(zone, k)| have.get(zone.as_str()).copied().unwrap_or(0) >= *k)
            }
        }
    }
}

/// Counts successes and failures of one request's voters against a [`Threshold`].
#[derive(Debug, Clone)]
pub struct Tracker {
    threshold: Threshold,
    voters: Vec<Voter>,
    successes: BTreeSet<NodeId>,
    failures: BTreeSet<NodeId>,
}

impl Tracker {
    /// A tracker with no results yet; a repeated voter id counts once (the first wins).
    pub fn new(threshold: impl Into<Threshold>, voters: Vec<Voter>) -> Self {
        let voters = distinct(&voters).into_iter().cloned().collect();
        Tracker {
            threshold: threshold.into(),
            voters,
            successes: BTreeSet::new(),
            failures: BTreeSet::new(),
        }
    }

    /// Records that `id` succeeded; ignored for non-voters and voters that already answered.
    pub fn record_success(&mut self, id: NodeId) {
        if self.is_unanswered_voter(id) {
            self.successes.insert(id);
        }
        self.check();
    }

    /// Records that `id` failed; ignored for non-voters and voters that already answered.
    pub fn record_failure(&mut self, id: NodeId) {
        if self.is_unanswered_voter(id) {
            self.failures.insert(id);
        }
        self.check();
    }

    /// Whether the threshold is reached, ruled out, or still open.
    pub fn outcome(&self) -> Outcome {
        if self.threshold.holds(&self.voters, &self.successes) {
            return Outcome::Reached;
        }
        // Every threshold is monotonic, so if every voter not yet failed cannot hold it, nobody can.
        let possible: BTreeSet<NodeId> = self
            .voters
            .iter()
            .map(|v| v.id)
            .filter(|id| !self.failures.contains(id))
            .collect();
        if self.threshold.holds(&self.voters, &possible) {
            Outcome::Pending
        } else {
            Outcome::Impossible
        }
    }

    /// The verdict on the voters that succeeded so far, when the threshold is a quorum policy
    /// (a counted threshold has no "more than half" to report).
    pub fn verdict(&self) -> Option<Verdict> {
        match self.threshold {
            Threshold::Quorum(policy) => Some(evaluate(policy, &self.voters, &self.successes)),
            Threshold::AtLeast(_) | Threshold::PerZone(_) => None,
        }
    }

    /// What the request needs.
    pub fn threshold(&self) -> &Threshold {
        &self.threshold
    }

    /// Voters that succeeded so far.
    pub fn successes(&self) -> &BTreeSet<NodeId> {
        &self.successes
    }

    /// Voters that failed so far.
    pub fn failures(&self) -> &BTreeSet<NodeId> {
        &self.failures
    }

    /// The voters being tracked, without repeated ids.
    pub fn voters(&self) -> &[Voter] {
        &self.voters
    }

    fn is_unanswered_voter(&self, id: NodeId) -> bool {
        // A voter's first answer stands: a late contradicting answer must not un-reach a quorum.
        self.voters.iter().any(|v| v.id == id)
            && !self.successes.contains(&id)
            && !self.failures.contains(&id)
    }

    /// The counting invariants, after every answer.
    fn check(&self) {
        debug_assert!(
            self.successes.is_disjoint(&self.failures),
            "a voter counted both as success and failure"
        );
        debug_assert!(
            self.successes.len() + self.failures.len() <= self.voters.len(),
            "more answers than voters"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::uniform;

    enum Step {
        Ok(u64),
        Fail(u64),
    }

    fn run(threshold: impl Into<Threshold>, voters: Vec<Voter>, steps: &[Step]) -> Vec<Outcome> {
        let mut tracker = Tracker::new(threshold, voters);
        let mut outcomes = vec![tracker.outcome()];
        for step in steps {
            match *step {
                Step::Ok(id) => tracker.record_success(NodeId(id)),
                Step::Fail(id) => tracker.record_failure(NodeId(id)),
            }
            outcomes.push(tracker.outcome());
        }
        outcomes
    }

    #[test]
    fn outcomes() {
        use Outcome::{Impossible as I, Pending as P, Reached as R};
        use Step::{Fail, Ok};
        let heavy = vec![
            Voter::new(NodeId(1), 3, ""),
            Voter::new(NodeId(2), 1, ""),
            Voter::new(NodeId(3), 1, ""),
        ];
        // (policy, voters, steps, outcome before any step and after each)
        type Case = (Policy, Vec<Voter>, Vec<Step>, Vec<Outcome>);
        let table: [Case; 6] = [
            (
                Policy::Majority,
                uniform(3),
                vec![Ok(1), Ok(2)],
                vec![P, P, R],
            ),
            (
                Policy::Majority,
                uniform(3),
                vec![Fail(1), Fail(2)],
                vec![P, P, I],
            ),
            (
                Policy::Majority,
                uniform(4),
                vec![Ok(1), Fail(2), Fail(3)],
                vec![P, P, P, I],
            ),
            // Strangers and second answers are ignored.
            (
                Policy::Majority,
                uniform(3),
                vec![Ok(9), Ok(1), Fail(1), Ok(1)],
                vec![P, P, P, P, P],
            ),
            (Policy::Weighted, heavy.clone(), vec![Ok(1)], vec![P, R]),
            (Policy::Weighted, heavy, vec![Fail(1)], vec![P, I]),
        ];
        for (policy, voters, steps, expected) in table {
            assert_eq!(run(policy, voters, &steps), expected, "{policy}");
        }
        assert_eq!(run(Policy::Zones, Vec::new(), &[]), vec![I]);
    }

    #[test]
    fn counted_thresholds() {
        use Outcome::{Impossible as I, Pending as P, Reached as R};
        use Step::{Fail, Ok};
        let zoned = vec![
            Voter::new(NodeId(1), 5, "a"),
            Voter::new(NodeId(2), 1, "a"),
            Voter::new(NodeId(3), 1, "b"),
        ];
        let each = |a: u64, b: u64| Threshold::PerZone([("a".into(), a), ("b".into(), b)].into());
        // (threshold, voters, steps, outcome before any step and after each)
        type Case = (Threshold, Vec<Voter>, Vec<Step>, Vec<Outcome>);
        let table: [Case; 8] = [
            // Two of three, whatever the order of answers.
            (
                Threshold::AtLeast(2),
                uniform(3),
                vec![Ok(3), Fail(1), Ok(2)],
                vec![P, P, P, R],
            ),
            (
                Threshold::AtLeast(2),
                uniform(3),
                vec![Fail(1), Fail(2)],
                vec![P, P, I],
            ),
            // Weights are ignored: the heavy voter alone is one of two.
            (
                Threshold::AtLeast(2),
                zoned.clone(),
                vec![Ok(1)],
                vec![P, P],
            ),
            // More than there are voters is impossible from the start; nothing needed is met.
            (Threshold::AtLeast(4), uniform(3), vec![], vec![I]),
            (Threshold::AtLeast(0), uniform(3), vec![], vec![R]),
            // Each zone on its own: zone a's two answers do not make up for zone b.
            (
                each(1, 1),
                zoned.clone(),
                vec![Ok(1), Ok(2), Ok(3)],
                vec![P, P, P, R],
            ),
            (
                each(2, 1),
                zoned.clone(),
                vec![Ok(3), Fail(2)],
                vec![P, P, I],
            ),
            // A zone nobody votes in can never be satisfied.
            (
                Threshold::PerZone([("c".into(), 1)].into()),
                zoned,
                vec![],
                vec![I],
            ),
        ];
        for (threshold, voters, steps, expected) in table {
            assert_eq!(
                run(threshold.clone(), voters, &steps),
                expected,
                "{threshold:?}"
            );
        }
        assert_eq!(
            Tracker::new(Threshold::AtLeast(1), uniform(1)).verdict(),
            None
        );
    }

    #[test]
    fn accessors() {
        let mut tracker = Tracker::new(Policy::Majority, uniform(3));
        tracker.record_success(NodeId(1));
        tracker.record_failure(NodeId(2));
        assert!(tracker.successes().contains(&NodeId(1)));
        assert!(tracker.failures().contains(&NodeId(2)));
        assert_eq!(tracker.verdict().map(|v| v.have), Some(1));
        assert_eq!(tracker.threshold(), &Threshold::Quorum(Policy::Majority));
        assert_eq!(tracker.voters().len(), 3);
    }
}
