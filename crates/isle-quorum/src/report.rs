//! The split analysis behind `isle quorum`: the quorum size, worst/best-case failure tolerance,
//! and every two-way network split with which side (if any) keeps quorum.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use isle_types::NodeId;
use serde::Serialize;

use crate::policy::{more_than_half, zone_weights};
use crate::{Policy, QuorumError, Verdict, Voter, evaluate, tolerance, validate};

/// Most voters [`report`] enumerates splits for: there are `2^(n-1) - 1` of them.
pub const MAX_SPLIT_VOTERS: usize = 12;

/// Split lines shown per (sizes, outcome) group before the rest are summarised.
const SPLIT_EXAMPLES_PER_GROUP_MAX: usize = 4;

/// What a voter set can survive under a policy, for operators.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The policy analysed.
    pub policy: Policy,
    /// The voters, sorted by id.
    pub voters: Vec<Voter>,
    /// The verdict with everyone reachable: shows what quorum needs.
    pub quorum: Verdict,
    /// Largest k such that EVERY set of k failed voters leaves quorum.
    pub failures_tolerated_worst: usize,
    /// Largest k such that SOME set of k failed voters leaves quorum.
    pub failures_tolerated_best: usize,
    /// Voters without any one of whom the worst case would tolerate as many failures.
    pub voters_adding_no_tolerance: Vec<NodeId>,
    /// Every two-way split, larger side first as side a, each unordered pair once.
    pub splits: Vec<SplitOutcome>,
}

/// One two-way network split and who keeps quorum.
#[derive(Debug, Clone, Serialize)]
pub struct SplitOutcome {
    /// The larger side (on a tie, the side with the lowest id).
    pub side_a: Vec<NodeId>,
    /// The other side.
    pub side_b: Vec<NodeId>,
    /// `'a'` or `'b'` for the side that holds quorum; `None` when neither does.
    pub winner: Option<char>,
}

/// Analyses `voters` under `policy`: validates them, then enumerates every two-way split.
///
/// Refuses more than [`MAX_SPLIT_VOTERS`] voters with [`QuorumError::TooManyVoters`], since the
/// split count doubles per voter; [`tolerance`] gives failure counts for any size.
pub fn report(policy: Policy, voters: &[Voter]) -> Result<Report, QuorumError> {
    validate(voters)?;
    if voters.len() > MAX_SPLIT_VOTERS {
        return Err(QuorumError::TooManyVoters {
            n: voters.len(),
            max: MAX_SPLIT_VOTERS,
        });
    }
    let mut voters = voters.to_vec();
    voters.sort_by_key(|v| v.id);
    let everyone: BTreeSet<NodeId> = voters.iter().map(|v| v.id).collect();
    let quorum = evaluate(policy, &voters, &everyone);
    let tolerated = tolerance(policy, &voters)?;
    let voters_adding_no_tolerance = no_tolerance_added(policy, &voters, tolerated.worst)?;
    let splits = splits(policy, &voters);
    Ok(Report {
        policy,
        voters,
        quorum,
        failures_tolerated_worst: tolerated.worst,
        failures_tolerated_best: tolerated.best,
        voters_adding_no_tolerance,
        splits,
    })
}

/// Voters whose removal leaves the worst-case tolerance at `worst` or better.
fn no_tolerance_added(
    policy: Policy,
    voters: &[Voter],
    worst: usize,
) -> Result<Vec<NodeId>, QuorumError> {
    let mut ids = Vec::new();
    if voters.len() < 2 {
        return Ok(ids);
    }
    for voter in voters {
        let rest: Vec<Voter> = voters
            .iter()
            .filter(|v| v.id != voter.id)
            .cloned()
            .collect();
        if tolerance(policy, &rest)?.worst >= worst {
            ids.push(voter.id);
        }
    }
    Ok(ids)
}

/// Every split of `voters` (at most [`MAX_SPLIT_VOTERS`]), larger side a first.
fn splits(policy: Policy, voters: &[Voter]) -> Vec<SplitOutcome> {
    assert!(
        voters.len() <= MAX_SPLIT_VOTERS,
        "split enumeration is bounded"
    );
    let n = voters.len();
    let everyone_mask: u32 = (1 << n) - 1;
    let mut out = Vec::new();
    for mask in 1..everyone_mask {
        let (len_a, len_b) = (mask.count_ones(), (everyone_mask & !mask).count_ones());
        // Each unordered pair once: a is the larger side, or on a tie the side with voter 0.
        if len_a < len_b || (len_a == len_b && mask & 1 == 0) {
            continue;
        }
        let side = |in_a: bool| -> BTreeSet<NodeId> {
            let bits = voters.iter().enumerate();
            bits.filter(|&(i, _)| (mask >> i) & 1 == u32::from(in_a))
                .map(|(_, v)| v.id)
                .collect()
        };
        let (side_a, side_b) = (side(true), side(false));
        let a_holds = evaluate(policy, voters, &side_a).held;
        let b_holds = evaluate(policy, voters, &side_b).held;
        assert!(
            !(a_holds && b_holds),
            "split brain: {side_a:?} and {side_b:?} both hold"
        );
        let winner = match (a_holds, b_holds) {
            (true, _) => Some('a'),
            (_, true) => Some('b'),
            _ => None,
        };
        out.push(SplitOutcome {
            side_a: side_a.into_iter().collect(),
            side_b: side_b.into_iter().collect(),
            winner,
        });
    }
    out.sort_by(|x, y| {
        (Reverse(x.side_a.len()), &x.side_a).cmp(&(Reverse(y.side_a.len()), &y.side_a))
    });
    out
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write_header(f)?;
        self.write_tolerance(f)?;
        self.write_splits(f)
    }
}

impl Report {
    fn write_header(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.voters.len();
        let weight_total: u64 = self.voters.iter().map(|v| u64::from(v.weight)).sum();
        write!(f, "policy: {}, {n} voters", self.policy)?;
        match self.policy {
            Policy::Majority if !self.uniform_weights() => write!(f, " (weights ignored)")?,
            Policy::Majority => {}
            Policy::Weighted => write!(f, ", total weight {weight_total}")?,
            Policy::Zones => self.write_zones(f)?,
        }
        let q = &self.quorum;
        write!(f, "\nquorum: {} of {} {}", q.need, q.total, q.unit)?;
        if self.policy == Policy::Zones {
            write!(
                f,
                " (a zone counts when more than half its weight is reachable)"
            )?;
        }
        writeln!(f)
    }

    fn write_zones(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut zones: BTreeMap<&str, (usize, u64)> = BTreeMap::new();
        for v in &self.voters {
            let (count, weight) = zones.entry(v.zone.as_str()).or_default();
            *count += 1;
            *weight += u64::from(v.weight);
        }
        write!(f, " in {} zones:", zones.len())?;
        for (i, (zone, (count, weight))) in zones.into_iter().enumerate() {
            let sep = if i == 0 { " " } else { ", " };
            write!(
                f,
                "{sep}{} ({count} voters, weight {weight})",
                zone_label(zone)
            )?;
        }
        Ok(())
    }

    fn write_tolerance(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (worst, best) = (self.failures_tolerated_worst, self.failures_tolerated_best);
        let n = self.voters.len();
        write!(
            f,
            "tolerates {} (worst case), {best} (best case)",
            failures(worst)
        )?;
        let idle = &self.voters_adding_no_tolerance;
        if n >= 2 && idle.len() == n {
            write!(
                f,
                " -- no more than {} voters would: any one voter adds no fault tolerance",
                n - 1
            )?;
        } else if let [only] = idle.as_slice() {
            write!(f, " -- without voter {only} it would tolerate as many")?;
        } else if !idle.is_empty() {
            let list = id_list(idle);
            write!(
                f,
                " -- without any one of voters {list} it would tolerate as many"
            )?;
        }
        writeln!(f)
    }

    fn write_splits(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.splits.is_empty() {
            return writeln!(f, "splits: none (a single voter cannot be split)");
        }
        let stuck = self.splits.iter().filter(|s| s.winner.is_none()).count();
        let (count, n) = (self.splits.len(), self.voters.len());
        match stuck {
            0 => writeln!(
                f,
                "splits: {count} ways to cut {n} voters in two; in every one a side keeps quorum"
            )?,
            _ => writeln!(
                f,
                "splits: {count} ways to cut {n} voters in two; {stuck} leave NO side with quorum"
            )?,
        }
        let mut groups: BTreeMap<_, Vec<&SplitOutcome>> = BTreeMap::new();
        for split in &self.splits {
            let outcome_rank = match split.winner {
                Some('a') => 0,
                Some(_) => 1,
                None => 2,
            };
            let key = (Reverse(split.side_a.len()), outcome_rank);
            groups.entry(key).or_default().push(split);
        }
        for group in groups.values() {
            // Summarising a single leftover line would save nothing.
            let shown = match group.len() {
                len if len > SPLIT_EXAMPLES_PER_GROUP_MAX + 1 => SPLIT_EXAMPLES_PER_GROUP_MAX,
                len => len,
            };
            for split in &group[..shown] {
                self.write_split(f, split)?;
            }
            if let Some(first) = group.first().filter(|_| group.len() > shown) {
                let more = group.len() - shown;
                let sizes = format!("{}+{}", first.side_a.len(), first.side_b.len());
                writeln!(
                    f,
                    "  {sizes}: ... and {more} more like this  -> {}",
                    outcome(first)
                )?;
            }
        }
        Ok(())
    }

    fn write_split(&self, f: &mut fmt::Formatter<'_>, split: &SplitOutcome) -> fmt::Result {
        writeln!(
            f,
            "  {}+{}: {} | {}  -> {}",
            split.side_a.len(),
            split.side_b.len(),
            self.side(&split.side_a),
            self.side(&split.side_b),
            outcome(split)
        )
    }

    /// One side as `{1,2}`, with zones and weights when the policy looks at them.
    fn side(&self, ids: &[NodeId]) -> String {
        let members: Vec<&Voter> = self.voters.iter().filter(|v| ids.contains(&v.id)).collect();
        let names: Vec<String> = members
            .iter()
            .map(|v| match self.policy {
                Policy::Zones if !v.zone.is_empty() => format!("{}@{}", v.id, v.zone),
                _ => v.id.to_string(),
            })
            .collect();
        let mut text = format!("{{{}}}", names.join(","));
        let reachable: BTreeSet<NodeId> = ids.iter().copied().collect();
        match self.policy {
            Policy::Weighted if !self.uniform_weights() => {
                let votes = evaluate(self.policy, &self.voters, &reachable).have;
                text.push_str(&format!(" ({votes} votes)"));
            }
            Policy::Zones => {
                let all: Vec<&Voter> = self.voters.iter().collect();
                let held: Vec<String> = zone_weights(&all, &reachable)
                    .into_iter()
                    .filter(|&(_, (have, total))| have >= more_than_half(total))
                    .map(|(zone, _)| zone_label(zone))
                    .collect();
                match held.is_empty() {
                    true => text.push_str(" (holds no zone)"),
                    false => text.push_str(&format!(" (holds zones {})", held.join(","))),
                }
            }
            Policy::Weighted | Policy::Majority => {}
        }
        text
    }

    fn uniform_weights(&self) -> bool {
        self.voters.windows(2).all(|w| w[0].weight == w[1].weight)
    }
}

fn outcome(split: &SplitOutcome) -> String {
    match split.winner {
        Some(side) => format!("side {side} holds quorum"),
        None => "NO side holds quorum (cluster unavailable)".to_string(),
    }
}

fn failures(k: usize) -> String {
    match k {
        1 => "1 failure".to_string(),
        _ => format!("{k} failures"),
    }
}

fn zone_label(zone: &str) -> String {
    match zone {
        "" => "\"\"".to_string(),
        _ => zone.to_string(),
    }
}

fn id_list(ids: &[NodeId]) -> String {
    let names: Vec<String> = ids.iter().map(NodeId::to_string).collect();
    format!("{{{}}}", names.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::uniform;

    fn ids(list: &[u64]) -> Vec<NodeId> {
        list.iter().copied().map(NodeId).collect()
    }

    fn report_of(policy: Policy, voters: &[Voter]) -> Report {
        match report(policy, voters) {
            Ok(report) => report,
            Err(e) => panic!("report refused valid voters: {e}"),
        }
    }

    #[test]
    fn four_nodes_tolerate_no_more_than_three() {
        for policy in Policy::ALL {
            let three = report_of(policy, &uniform(3));
            let four = report_of(policy, &uniform(4));
            assert_eq!(three.failures_tolerated_worst, 1, "{policy}");
            assert_eq!(four.failures_tolerated_worst, 1, "{policy}");
            assert_eq!(four.failures_tolerated_best, three.failures_tolerated_best);
            assert_eq!(four.voters_adding_no_tolerance, ids(&[1, 2, 3, 4]));
            assert!(three.voters_adding_no_tolerance.is_empty());
        }
    }

    #[test]
    fn even_split_has_no_winner() {
        let four = report_of(Policy::Weighted, &uniform(4));
        assert_eq!(four.splits.len(), 7, "2^(4-1) - 1 unordered splits");
        let two_two: Vec<&SplitOutcome> =
            four.splits.iter().filter(|s| s.side_a.len() == 2).collect();
        assert_eq!(two_two.len(), 3);
        assert!(two_two.iter().all(|s| s.winner.is_none()));
        let first = &four.splits[0];
        assert_eq!(
            (&first.side_a, &first.side_b),
            (&ids(&[1, 2, 3]), &ids(&[4]))
        );
        assert_eq!(first.winner, Some('a'));
        assert_eq!(four.quorum.need, 3);
    }

    #[test]
    fn heavy_minority_wins() {
        let voters = vec![
            Voter::new(NodeId(1), 1, ""),
            Voter::new(NodeId(2), 1, ""),
            Voter::new(NodeId(3), 3, ""),
        ];
        let r = report_of(Policy::Weighted, &voters);
        let split = r.splits.iter().find(|s| s.side_b == ids(&[3]));
        assert_eq!(split.map(|s| s.winner), Some(Some('b')));
        assert_eq!(
            (r.failures_tolerated_worst, r.failures_tolerated_best),
            (0, 2)
        );
        let text = r.to_string();
        assert!(text.contains("2+1: {1,2} (2 votes) | {3} (3 votes)  -> side b holds quorum"));
        assert!(text.contains("(best case) -- no more than 2 voters would"));
        let one_heavy = vec![
            Voter::new(NodeId(1), 2, ""),
            Voter::new(NodeId(2), 1, ""),
            Voter::new(NodeId(3), 1, ""),
            Voter::new(NodeId(4), 1, ""),
        ];
        let r = report_of(Policy::Weighted, &one_heavy);
        assert_eq!(r.voters_adding_no_tolerance, ids(&[1]));
        assert!(r.to_string().contains(
            "tolerates 1 failure (worst case), 2 (best case) -- without voter 1 it would tolerate as many"
        ));
    }

    #[test]
    fn display_uniform_four() {
        let text = report_of(Policy::Weighted, &uniform(4)).to_string();
        let expected = "\
policy: weighted, 4 voters, total weight 4
quorum: 3 of 4 votes
tolerates 1 failure (worst case), 1 (best case) -- no more than 3 voters would: any one voter adds no fault tolerance
splits: 7 ways to cut 4 voters in two; 3 leave NO side with quorum
  3+1: {1,2,3} | {4}  -> side a holds quorum
  3+1: {1,2,4} | {3}  -> side a holds quorum
  3+1: {1,3,4} | {2}  -> side a holds quorum
  3+1: {2,3,4} | {1}  -> side a holds quorum
  2+2: {1,2} | {3,4}  -> NO side holds quorum (cluster unavailable)
  2+2: {1,3} | {2,4}  -> NO side holds quorum (cluster unavailable)
  2+2: {1,4} | {2,3}  -> NO side holds quorum (cluster unavailable)
";
        assert_eq!(text, expected);
    }

    #[test]
    fn display_zones_and_large_groups() {
        let zones = ["a", "a", "b", "b", "c", "c"];
        let voters: Vec<Voter> = (1..)
            .zip(zones)
            .map(|(id, zone)| Voter::new(NodeId(id), 1, zone))
            .collect();
        let text = report_of(Policy::Zones, &voters).to_string();
        assert!(text.starts_with(
            "policy: zones, 6 voters in 3 zones: a (2 voters, weight 2), b (2 voters, weight 2), \
             c (2 voters, weight 2)\nquorum: 2 of 3 zones"
        ));
        assert!(text.contains("tolerates 1 failure (worst case), 2 (best case) -- no more than 5"));
        assert!(text.contains(
            "4+2: {1@a,2@a,3@b,4@b} (holds zones a,b) | {5@c,6@c} (holds zones c)  -> side a holds quorum"
        ));
        assert!(
            text.contains("... and "),
            "groups beyond the example limit are summarised"
        );
        let majority = report_of(Policy::Majority, &uniform(12)).to_string();
        assert!(majority.contains("2047 ways to cut 12 voters"));
        assert!(majority.lines().count() < 40, "grouped output stays short");
        let five = report_of(Policy::Majority, &uniform(5)).to_string();
        assert!(five.contains("in every one a side keeps quorum"));
        assert!(
            five.contains("4+1: {2,3,4,5} | {1}"),
            "a group one over the limit is shown whole"
        );
    }

    #[test]
    fn refusals() {
        let table = [
            (uniform(0), QuorumError::NoVoters),
            (
                uniform(MAX_SPLIT_VOTERS + 1),
                QuorumError::TooManyVoters { n: 13, max: 12 },
            ),
            (
                vec![Voter::new(NodeId(1), 0, "")],
                QuorumError::ZeroWeight(NodeId(1)),
            ),
            (
                vec![Voter::new(NodeId(2), 1, ""), Voter::new(NodeId(2), 1, "")],
                QuorumError::DuplicateVoter(NodeId(2)),
            ),
        ];
        for (voters, error) in table {
            assert_eq!(report(Policy::Majority, &voters).err(), Some(error));
        }
    }

    #[test]
    fn single_voter() {
        let r = report_of(Policy::Majority, &uniform(1));
        assert!(r.splits.is_empty());
        assert!(
            r.to_string()
                .ends_with("splits: none (a single voter cannot be split)\n")
        );
    }
}
