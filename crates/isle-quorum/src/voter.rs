//! Voters: who votes, with what weight, from which failure domain.

use std::collections::BTreeSet;

use isle_types::{Member, NodeId, ZoneId};
use serde::{Deserialize, Serialize};

use crate::QuorumError;

/// A voter: id, vote weight (>=1), zone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Voter {
    /// The voter's node id.
    pub id: NodeId,
    /// Vote weight under weighted and zone quorums (ignored by plain majority); at least 1.
    pub weight: u32,
    /// Failure domain; voters with an empty zone form one zone named "".
    pub zone: ZoneId,
}

impl Voter {
    /// A voter with the given id, weight and zone.
    pub fn new(id: NodeId, weight: u32, zone: impl Into<ZoneId>) -> Self {
        Voter {
            id,
            weight,
            zone: zone.into(),
        }
    }
}

impl From<&Member> for Voter {
    fn from(member: &Member) -> Self {
        Voter::new(member.id, member.weight, member.zone.clone())
    }
}

/// `n` voters with ids `1..=n`, weight 1 and the empty zone: a plain uniform cluster.
pub fn uniform(n: usize) -> Vec<Voter> {
    (1..=n as u64)
        .map(|id| Voter::new(NodeId(id), 1, ""))
        .collect()
}

/// Checks that `voters` is non-empty, every weight is at least 1, and no id repeats.
pub fn validate(voters: &[Voter]) -> Result<(), QuorumError> {
    if voters.is_empty() {
        return Err(QuorumError::NoVoters);
    }
    let mut seen = BTreeSet::new();
    for voter in voters {
        if voter.weight == 0 {
            return Err(QuorumError::ZeroWeight(voter.id));
        }
        if !seen.insert(voter.id) {
            return Err(QuorumError::DuplicateVoter(voter.id));
        }
    }
    Ok(())
}

/// The voters with repeated ids dropped (the first occurrence wins), in their original order.
pub(crate) fn distinct(voters: &[Voter]) -> Vec<&Voter> {
    let mut seen = BTreeSet::new();
    voters.iter().filter(|v| seen.insert(v.id)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_voters() {
        let voters = uniform(3);
        let ids: Vec<u64> = voters.iter().map(|v| v.id.0).collect();
        assert_eq!(ids, [1, 2, 3]);
        assert!(voters.iter().all(|v| v.weight == 1 && v.zone.is_empty()));
        assert!(uniform(0).is_empty());
    }

    #[test]
    fn validation() {
        let ok = uniform(2);
        let zero = vec![Voter::new(NodeId(1), 1, ""), Voter::new(NodeId(2), 0, "")];
        let dup = vec![Voter::new(NodeId(1), 1, "a"), Voter::new(NodeId(1), 2, "b")];
        let table: [(&[Voter], Result<(), QuorumError>); 4] = [
            (&ok, Ok(())),
            (&[], Err(QuorumError::NoVoters)),
            (&zero, Err(QuorumError::ZeroWeight(NodeId(2)))),
            (&dup, Err(QuorumError::DuplicateVoter(NodeId(1)))),
        ];
        for (voters, expected) in table {
            assert_eq!(validate(voters), expected, "{voters:?}");
        }
    }

    #[test]
    fn distinct_keeps_first() {
        let voters = vec![
            Voter::new(NodeId(1), 1, "a"),
            Voter::new(NodeId(2), 1, "a"),
            Voter::new(NodeId(1), 5, "b"),
        ];
        let kept = distinct(&voters);
        assert_eq!(kept.len(), 2);
        assert_eq!(kept[0].zone, "a");
    }

    #[test]
    fn from_member() {
        let member = Member {
            id: NodeId(7),
            peer_addr: "p".into(),
            http_addr: "h".into(),
            grpc_addr: None,
            zone: "z".into(),
            weight: 2,
        };
        assert_eq!(Voter::from(&member), Voter::new(NodeId(7), 2, "z"));
    }
}
