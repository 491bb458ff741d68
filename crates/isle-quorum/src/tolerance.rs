//! Exact worst- and best-case failure tolerance of a voter set, for any number of voters.
//!
//! Every policy is "enough groups each hold more than half of their weight": Majority and
//! Weighted are one group (weights 1, resp. real weights) needing 1 holding group; Zones has one
//! group per zone needing a majority of zones. Within a group, the fewest voters that hold (or
//! that, once failed, break it) are found greedily heaviest-first, which is optimal for counts.
//! Groups are independent, so the cheapest groups are picked. Tests cross-check this against
//! brute-force enumeration.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::majority::majority;
use crate::policy::more_than_half;
use crate::{Policy, QuorumError, Voter, validate};

/// How many voter failures a voter set survives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tolerance {
    /// Largest k such that EVERY set of k failed voters leaves quorum.
    pub worst: usize,
    /// Largest k such that SOME set of k failed voters leaves quorum.
    pub best: usize,
}

/// Computes worst- and best-case failure tolerance of a validated voter set under `policy`.
pub fn tolerance(policy: Policy, voters: &[Voter]) -> Result<Tolerance, QuorumError> {
    validate(voters)?;
    let (groups, groups_needed) = groups(policy, voters);
    // Quorum is lost once more than `groups.len() - groups_needed` groups are broken.
    let groups_to_break = groups.len() - groups_needed + 1;
    let fewest_holding = cheapest(groups.iter().map(|g| hold_cost(g)), groups_needed);
    let fewest_breaking = cheapest(groups.iter().map(|g| break_cost(g)), groups_to_break);
    // A valid set holds quorum with everyone up, so at least one failure is needed to break it.
    assert!(
        fewest_breaking >= 1,
        "a valid voter set must hold quorum when all are up"
    );
    assert!(
        fewest_holding <= voters.len(),
        "quorum needs at most every voter"
    );
    Ok(Tolerance {
        worst: fewest_breaking - 1,
        best: voters.len() - fewest_holding,
    })
}

/// The weight groups of `voters` under `policy`, and how many groups must hold.
fn groups(policy: Policy, voters: &[Voter]) -> (Vec<Vec<u64>>, usize) {
    match policy {
        Policy::Majority => (vec![vec![1; voters.len()]], 1),
        Policy::Weighted => (
            vec![voters.iter().map(|v| u64::from(v.weight)).collect()],
            1,
        ),
        Policy::Zones => {
            let mut zones: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
            for voter in voters {
                zones
                    .entry(voter.zone.as_str())
                    .or_default()
                    .push(u64::from(voter.weight));
            }
            let n_zones = zones.len();
            (zones.into_values().collect(), majority(n_zones))
        }
    }
}

/// The sum of the `count` smallest costs.
fn cheapest(costs: impl Iterator<Item = usize>, count: usize) -> usize {
    let mut costs: Vec<usize> = costs.collect();
    costs.sort_unstable();
    costs.into_iter().take(count).sum()
}

/// The fewest voters of a group whose weight is more than half of the group's.
fn hold_cost(weights: &[u64]) -> usize {
    let need = more_than_half(weights.iter().sum());
    let mut have = 0;
    heaviest_first(weights)
        .take_while(|&w| {
            let short = have < need;
            have += w;
            short
        })
        .count()
}

/// The fewest voters of a group whose failure leaves at most half of the group's weight.
fn break_cost(weights: &[u64]) -> usize {
    let total: u64 = weights.iter().sum();
    let need = more_than_half(total);
    let mut left = total;
    heaviest_first(weights)
        .take_while(|&w| {
            let holding = left >= need;
            left -= w;
            holding
        })
        .count()
}

fn heaviest_first(weights: &[u64]) -> impl Iterator<Item = u64> {
    let mut sorted = weights.to_vec();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    sorted.into_iter()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{tolerated_failures, uniform};
    use isle_types::NodeId;

    fn voters(spec: &[(u32, &str)]) -> Vec<Voter> {
        (1..)
            .zip(spec)
            .map(|(id, &(weight, zone))| Voter::new(NodeId(id), weight, zone))
            .collect()
    }

    #[test]
    fn uniform_matches_counting() {
        for n in 1..=9 {
            let expected = Tolerance {
                worst: tolerated_failures(n),
                best: tolerated_failures(n),
            };
            for policy in Policy::ALL {
                assert_eq!(
                    tolerance(policy, &uniform(n)),
                    Ok(expected),
                    "{policy} n={n}"
                );
            }
        }
    }

    #[test]
    fn weights_and_zones() {
        let heavy = voters(&[(3, ""), (1, ""), (1, "")]);
        let three_by_two = voters(&[(1, "a"), (1, "a"), (1, "b"), (1, "b"), (1, "c"), (1, "c")]);
        // (policy, voters, worst, best)
        let table: [(Policy, &[Voter], usize, usize); 4] = [
            // Losing the heavy node breaks it; keeping only the heavy node holds.
            (Policy::Weighted, &heavy, 0, 2),
            (Policy::Majority, &heavy, 1, 1),
            // Two failures in two zones break it; a whole zone can go.
            (Policy::Zones, &three_by_two, 1, 2),
            (Policy::Majority, &three_by_two, 2, 2),
        ];
        for (policy, voters, worst, best) in table {
            assert_eq!(
                tolerance(policy, voters),
                Ok(Tolerance { worst, best }),
                "{policy} {voters:?}"
            );
        }
        assert_eq!(tolerance(Policy::Zones, &[]), Err(QuorumError::NoVoters));
    }

    #[test]
    fn group_costs() {
        // (weights, hold cost, break cost)
        let table: [(&[u64], usize, usize); 5] = [
            (&[1], 1, 1),
            (&[1, 1], 2, 1),
            (&[3, 1, 1], 1, 1),
            (&[1, 1, 1, 1], 3, 2),
            (&[2, 2, 1], 2, 2),
        ];
        for (weights, hold, brk) in table {
            assert_eq!(
                (hold_cost(weights), break_cost(weights)),
                (hold, brk),
                "{weights:?}"
            );
        }
    }
}
