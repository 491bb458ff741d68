//! Pure counting of per-voter results for one quorum request (after Garage's
//! `QuorumSetResultTracker`): has quorum been reached, or can it no longer be?

use std::collections::BTreeSet;

use isle_types::NodeId;
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

/// Counts successes and failures of one request's voters against a quorum policy.
#[derive(Debug, Clone)]
pub struct Tracker {
    policy: Policy,
    voters: Vec<Voter>,
    successes: BTreeSet<NodeId>,
    failures: BTreeSet<NodeId>,
}

impl Tracker {
    /// A tracker with no results yet; a repeated voter id counts once (the first wins).
    pub fn new(policy: Policy, voters: Vec<Voter>) -> Self {
        let voters = distinct(&voters).into_iter().cloned().collect();
        Tracker {
            policy,
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
    }

    /// Records that `id` failed; ignored for non-voters and voters that already answered.
    pub fn record_failure(&mut self, id: NodeId) {
        if self.is_unanswered_voter(id) {
            self.failures.insert(id);
        }
    }

    /// Whether quorum is reached, ruled out, or still open.
    pub fn outcome(&self) -> Outcome {
        if self.verdict().held {
            return Outcome::Reached;
        }
        // Holding quorum is monotonic, so if every voter not yet failed cannot hold it, nobody can.
        let possible: BTreeSet<NodeId> = self
            .voters
            .iter()
            .map(|v| v.id)
            .filter(|id| !self.failures.contains(id))
            .collect();
        if evaluate(self.policy, &self.voters, &possible).held {
            Outcome::Pending
        } else {
            Outcome::Impossible
        }
    }

    /// The verdict on the voters that succeeded so far.
    pub fn verdict(&self) -> Verdict {
        evaluate(self.policy, &self.voters, &self.successes)
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::uniform;

    enum Step {
        Ok(u64),
        Fail(u64),
    }

    fn run(policy: Policy, voters: Vec<Voter>, steps: &[Step]) -> Vec<Outcome> {
        let mut tracker = Tracker::new(policy, voters);
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
    fn accessors() {
        let mut tracker = Tracker::new(Policy::Majority, uniform(3));
        tracker.record_success(NodeId(1));
        tracker.record_failure(NodeId(2));
        assert!(tracker.successes().contains(&NodeId(1)));
        assert!(tracker.failures().contains(&NodeId(2)));
        assert_eq!(tracker.verdict().have, 1);
        assert_eq!(tracker.voters().len(), 3);
    }
}
