//! Judging a set of reachable voters: the three [`Policy`] rules and the [`Verdict`] they give.
//!
//! Every rule has the same shape: something is counted (nodes, votes, zones) and quorum needs
//! strictly more than half of its total, i.e. `need = total / 2 + 1`. Strictly more than half is
//! what makes two disjoint sides unable to both hold quorum.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use isle_types::NodeId;
use serde::{Deserialize, Serialize};

use crate::ParsePolicyError;
use crate::voter::{Voter, distinct};

/// How a set of reachable voters is judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    /// More than half of the voters, weights ignored.
    Majority,
    /// More than half of the total vote weight.
    #[default]
    Weighted,
    /// More than half of the zones, each holding more than half of its own weight.
    Zones,
}

impl Policy {
    /// Every policy, in declaration order.
    pub const ALL: [Policy; 3] = [Policy::Majority, Policy::Weighted, Policy::Zones];

    /// The policy's lowercase name, as parsed and serialized.
    pub fn name(self) -> &'static str {
        match self {
            Policy::Majority => "majority",
            Policy::Weighted => "weighted",
            Policy::Zones => "zones",
        }
    }

    /// What this policy counts.
    pub fn unit(self) -> Unit {
        match self {
            Policy::Majority => Unit::Nodes,
            Policy::Weighted => Unit::Votes,
            Policy::Zones => Unit::Zones,
        }
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Policy {
    type Err = ParsePolicyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Policy::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| ParsePolicyError(s.to_string()))
    }
}

/// What a [`Verdict`] counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Unit {
    /// Voters, one each.
    Nodes,
    /// Vote weight.
    Votes,
    /// Zones holding a local majority.
    Zones,
}

impl fmt::Display for Unit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Unit::Nodes => "nodes",
            Unit::Votes => "votes",
            Unit::Zones => "zones",
        })
    }
}

/// The judgement of one reachable set under one policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    /// Whether the reachable set holds quorum (`have >= need`).
    pub held: bool,
    /// The policy that judged.
    pub policy: Policy,
    /// What the reachable set has, in `unit`.
    pub have: u64,
    /// The least that holds quorum: `total / 2 + 1`.
    pub need: u64,
    /// Everything there is to have, in `unit`.
    pub total: u64,
    /// What is counted.
    pub unit: Unit,
}

impl Verdict {
    fn new(policy: Policy, have: u64, total: u64) -> Self {
        let need = more_than_half(total);
        // Two disjoint sides can never both hold: need is a strict majority of the total.
        assert!(have <= total, "{have} of {total} reachable");
        assert!(need * 2 > total, "need {need} of {total} is no majority");
        Verdict {
            held: have >= need,
            policy,
            have,
            need,
            total,
            unit: policy.unit(),
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let head = if self.held {
            "quorum held"
        } else {
            "no quorum"
        };
        let (have, total, need, unit) = (self.have, self.total, self.need, self.unit);
        match unit {
            Unit::Zones => write!(
                f,
                "{head}: {have} of {total} {unit} hold a local majority, need {need}"
            ),
            Unit::Nodes | Unit::Votes => {
                write!(f, "{head}: {have} of {total} {unit} reachable, need {need}")
            }
        }
    }
}

/// The least count that is strictly more than half of `total`.
pub(crate) fn more_than_half(total: u64) -> u64 {
    total / 2 + 1
}

/// Judges whether the `reachable` voters hold quorum under `policy`.
///
/// Ids in `reachable` that are not voters are ignored. A repeated voter id counts once: the
/// first occurrence wins. A voter of weight 0 (refused by [`crate::validate`]) adds nothing to
/// weights. An empty voter list never holds quorum.
pub fn evaluate(policy: Policy, voters: &[Voter], reachable: &BTreeSet<NodeId>) -> Verdict {
    let voters = distinct(voters);
    match policy {
        Policy::Majority => {
            let have = voters.iter().filter(|v| reachable.contains(&v.id)).count();
            Verdict::new(policy, have as u64, voters.len() as u64)
        }
        Policy::Weighted => {
            let (have, total) = weigh(voters.iter().copied(), reachable);
            Verdict::new(policy, have, total)
        }
        Policy::Zones => {
            let zones = zone_weights(&voters, reachable);
            let holding = zones
                .values()
                .filter(|&&(have, total)| have >= more_than_half(total))
                .count();
            Verdict::new(policy, holding as u64, zones.len() as u64)
        }
    }
}

/// (reachable weight, total weight) of `voters`.
fn weigh<'a>(voters: impl Iterator<Item = &'a Voter>, reachable: &BTreeSet<NodeId>) -> (u64, u64) {
    voters.fold((0, 0), |(have, total), v| {
        let weight = u64::from(v.weight);
        let have = if reachable.contains(&v.id) {
            have + weight
        } else {
            have
        };
        (have, total + weight)
    })
}

/// Per zone: (reachable weight, total weight).
pub(crate) fn zone_weights<'a>(
    voters: &[&'a Voter],
    reachable: &BTreeSet<NodeId>,
) -> BTreeMap<&'a str, (u64, u64)> {
    let mut zones: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for voter in voters {
        let (have, total) = zones.entry(voter.zone.as_str()).or_default();
        let (voter_have, voter_total) = weigh(std::iter::once(*voter), reachable);
        *have += voter_have;
        *total += voter_total;
    }
    zones
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::uniform;

    fn ids(list: &[u64]) -> BTreeSet<NodeId> {
        list.iter().copied().map(NodeId).collect()
    }

    fn voters(spec: &[(u64, u32, &str)]) -> Vec<Voter> {
        spec.iter()
            .map(|&(id, weight, zone)| Voter::new(NodeId(id), weight, zone))
            .collect()
    }

    #[test]
    fn policy_names_round_trip() {
        for policy in Policy::ALL {
            assert_eq!(policy.to_string().parse::<Policy>(), Ok(policy));
        }
        assert_eq!(Policy::default(), Policy::Weighted);
        assert!("Majority".parse::<Policy>().is_err());
        assert_eq!(
            serde_json::to_string(&Policy::Zones).ok().as_deref(),
            Some("\"zones\"")
        );
    }

    #[test]
    fn uniform_clusters() {
        // (n, reachable, held, need) under Majority; Weighted must agree on uniform weights.
        let table: [(usize, &[u64], bool, u64); 10] = [
            (1, &[1], true, 1),
            (1, &[], false, 1),
            (2, &[1], false, 2),
            (2, &[1, 2], true, 2),
            (3, &[1, 3], true, 2),
            (4, &[1, 2], false, 3),
            (4, &[2, 3, 4], true, 3),
            (5, &[1, 2], false, 3),
            (6, &[1, 2, 3], false, 4),
            (6, &[1, 2, 3, 6], true, 4),
        ];
        for (n, reachable, held, need) in table {
            for policy in [Policy::Majority, Policy::Weighted, Policy::Zones] {
                let verdict = evaluate(policy, &uniform(n), &ids(reachable));
                if policy == Policy::Zones {
                    // All voters share zone "": one zone, which holds exactly when a majority does.
                    assert_eq!((verdict.held, verdict.need), (held, 1), "{n} {reachable:?}");
                } else {
                    assert_eq!(
                        (verdict.held, verdict.need),
                        (held, need),
                        "{n} {reachable:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn weighted() {
        let heavy = voters(&[(1, 3, ""), (2, 1, ""), (3, 1, "")]);
        let four = voters(&[(1, 2, ""), (2, 2, "")]);
        // (voters, reachable, held, have, need, total)
        type Case<'a> = (&'a [Voter], &'a [u64], bool, u64, u64, u64);
        let table: [Case; 6] = [
            (&heavy, &[1], true, 3, 3, 5),
            (&heavy, &[2, 3], false, 2, 3, 5),
            (&heavy, &[1, 2, 3], true, 5, 3, 5),
            (&four, &[1], false, 2, 3, 4),
            (&four, &[2], false, 2, 3, 4),
            (&four, &[1, 2], true, 4, 3, 4),
        ];
        for (voters, reachable, held, have, need, total) in table {
            let v = evaluate(Policy::Weighted, voters, &ids(reachable));
            assert_eq!((v.held, v.have, v.need, v.total), (held, have, need, total));
            assert_eq!(v.unit, Unit::Votes);
        }
        // Plain majority ignores the heavy node's weight.
        assert!(!evaluate(Policy::Majority, &heavy, &ids(&[1])).held);
    }

    #[test]
    fn zones() {
        let three_by_two = voters(&[
            (1, 1, "a"),
            (2, 1, "a"),
            (3, 1, "b"),
            (4, 1, "b"),
            (5, 1, "c"),
            (6, 1, "c"),
        ]);
        // (reachable, held, holding zones)
        let table: [(&[u64], bool, u64); 5] = [
            (&[1, 2, 3, 4, 5, 6], true, 3),
            (&[3, 4, 5, 6], true, 2),    // lost all of zone a
            (&[1, 2, 4, 6], false, 1),   // lost one node in b and in c
            (&[1, 2, 3, 4, 5], true, 2), // lost one node in c only
            (&[1, 3, 5], false, 0),      // one node everywhere: no local majority
        ];
        for (reachable, held, have) in table {
            let v = evaluate(Policy::Zones, &three_by_two, &ids(reachable));
            assert_eq!(
                (v.held, v.have, v.need, v.total),
                (held, have, 2, 3),
                "{reachable:?}"
            );
        }
        let weighted_zone = voters(&[(1, 3, "a"), (2, 1, "a"), (3, 1, "a"), (4, 1, "b")]);
        let v = evaluate(Policy::Zones, &weighted_zone, &ids(&[1, 4]));
        assert_eq!(
            (v.held, v.have),
            (true, 2),
            "zone a held by weight, not by count"
        );
    }

    #[test]
    fn ignores_strangers_and_duplicates() {
        let dup = voters(&[(1, 1, ""), (2, 1, ""), (1, 9, "")]);
        let v = evaluate(Policy::Weighted, &dup, &ids(&[1, 7, 8]));
        assert_eq!((v.held, v.have, v.total), (false, 1, 2));
        let v = evaluate(Policy::Majority, &[], &ids(&[1]));
        assert_eq!((v.held, v.have, v.need, v.total), (false, 0, 1, 0));
    }

    #[test]
    fn verdict_display() {
        let five = uniform(5);
        let heavy = voters(&[(1, 1, ""), (2, 1, ""), (3, 1, ""), (4, 1, ""), (5, 1, "")]);
        let zones = voters(&[(1, 1, "a"), (2, 1, "b"), (3, 1, "c")]);
        let table = [
            (
                evaluate(Policy::Majority, &five, &ids(&[1, 2, 3])),
                "quorum held: 3 of 5 nodes reachable, need 3",
            ),
            (
                evaluate(Policy::Weighted, &heavy, &ids(&[4, 5])),
                "no quorum: 2 of 5 votes reachable, need 3",
            ),
            (
                evaluate(Policy::Zones, &zones, &ids(&[2])),
                "no quorum: 1 of 3 zones hold a local majority, need 2",
            ),
        ];
        for (verdict, text) in table {
            assert_eq!(verdict.to_string(), text);
        }
    }

    #[test]
    fn verdict_serializes_lowercase() {
        let v = evaluate(Policy::Zones, &uniform(1), &ids(&[1]));
        let json = serde_json::to_string(&v).unwrap_or_default();
        assert_eq!(
            json,
            r#"{"held":true,"policy":"zones","have":1,"need":1,"total":1,"unit":"zones"}"#
        );
    }
}
