//! Property tests over arbitrary voter sets: no split brain, monotonicity, the whole set holds,
//! and the analytic tolerance agrees with brute force.

use std::collections::BTreeSet;

use isle_quorum::{Outcome, Policy, Threshold, Tracker, Voter, evaluate, report, tolerance};
use isle_types::NodeId;
use proptest::prelude::*;

fn policy() -> impl Strategy<Value = Policy> {
    prop_oneof![
        Just(Policy::Majority),
        Just(Policy::Weighted),
        Just(Policy::Zones)
    ]
}

/// Valid voters: distinct ids 1..=n, weights 1..=5, up to 4 zones (one of them "").
fn voters(n_max: usize) -> impl Strategy<Value = Vec<Voter>> {
    prop::collection::vec((1u32..=5, 0usize..4), 1..=n_max).prop_map(|specs| {
        (1..)
            .zip(specs)
            .map(|(id, (weight, zone))| Voter::new(NodeId(id), weight, ["", "a", "b", "c"][zone]))
            .collect()
    })
}

/// Possibly invalid voters: repeated ids (first wins) are still judged safely.
fn voters_with_duplicates() -> impl Strategy<Value = Vec<Voter>> {
    prop::collection::vec((1u64..=6, 1u32..=4, 0usize..3), 1..=9).prop_map(|specs| {
        specs
            .into_iter()
            .map(|(id, weight, zone)| Voter::new(NodeId(id), weight, ["", "a", "b"][zone]))
            .collect()
    })
}

/// Voters whose id `k` has `sides[k - 1] == side`: keyed by id so duplicates land on one side.
fn ids_where(voters: &[Voter], sides: &[u8], side: u8) -> BTreeSet<NodeId> {
    voters
        .iter()
        .map(|v| v.id)
        .filter(|id| {
            let index = usize::try_from(id.0).map_or(usize::MAX, |k| k.wrapping_sub(1));
            sides.get(index) == Some(&side)
        })
        .collect()
}

/// Counted thresholds as AP levels make them: k voters, or k per zone (zones "", a, b, c).
fn counted() -> impl Strategy<Value = Threshold> {
    prop_oneof![
        (0u64..=9).prop_map(Threshold::AtLeast),
        prop::collection::btree_map(
            prop_oneof![Just(""), Just("a"), Just("b"), Just("c")].prop_map(String::from),
            1u64..=3,
            1..=3,
        )
        .prop_map(Threshold::PerZone),
    ]
}

/// The counted thresholds' meaning, spelled out separately from the tracker's.
fn meets(threshold: &Threshold, voters: &[Voter], set: &BTreeSet<NodeId>) -> bool {
    let count = |zone: Option<&str>| {
        voters
            .iter()
            .filter(|v| set.contains(&v.id) && zone.is_none_or(|z| v.zone == z))
            .count() as u64
    };
    match threshold {
        Threshold::AtLeast(k) => count(None) >= *k,
        Threshold::PerZone(need) => need.iter().all(|(zone, k)| count(Some(zone)) >= *k),
        Threshold::Quorum(policy) => evaluate(*policy, voters, set).held,
    }
}

fn everyone(voters: &[Voter]) -> BTreeSet<NodeId> {
    voters.iter().map(|v| v.id).collect()
}

/// Brute force over every failure subset: (worst, best) tolerance.
fn brute_tolerance(policy: Policy, voters: &[Voter]) -> (usize, usize) {
    let n = voters.len();
    let mut fewest_breaking = n;
    let mut most_surviving = 0;
    for failed in 0u32..(1 << n) {
        let up: BTreeSet<NodeId> = (0..n)
            .filter(|i| (failed >> i) & 1 == 0)
            .map(|i| voters[i].id)
            .collect();
        let k = failed.count_ones() as usize;
        if evaluate(policy, voters, &up).held {
            most_surviving = most_surviving.max(k);
        } else {
            fewest_breaking = fewest_breaking.min(k);
        }
    }
    (fewest_breaking - 1, most_surviving)
}

proptest! {
    #[test]
    fn disjoint_sets_never_both_hold(
        policy in policy(),
        voters in voters_with_duplicates(),
        sides in prop::collection::vec(0u8..3, 9),
    ) {
        let a = ids_where(&voters, &sides, 0);
        let b = ids_where(&voters, &sides, 1);
        prop_assert!(a.is_disjoint(&b));
        let (va, vb) = (evaluate(policy, &voters, &a), evaluate(policy, &voters, &b));
        prop_assert!(!(va.held && vb.held), "split brain: {va} / {vb}");
    }

    #[test]
    fn adding_reachable_voters_never_loses_quorum(
        policy in policy(),
        voters in voters_with_duplicates(),
        sides in prop::collection::vec(0u8..3, 9),
        strangers in prop::collection::btree_set(100u64..110, 0..3),
    ) {
        let small = ids_where(&voters, &sides, 0);
        let mut large = small.clone();
        large.extend(ids_where(&voters, &sides, 1));
        large.extend(strangers.into_iter().map(NodeId));
        let (vs, vl) = (evaluate(policy, &voters, &small), evaluate(policy, &voters, &large));
        prop_assert!(vs.have <= vl.have);
        prop_assert!(!vs.held || vl.held, "lost quorum: {vs} -> {vl}");
    }

    #[test]
    fn everyone_reachable_holds(policy in policy(), voters in voters(10)) {
        let verdict = evaluate(policy, &voters, &everyone(&voters));
        prop_assert!(verdict.held, "{verdict}");
        prop_assert_eq!(verdict.have, verdict.total);
    }

    #[test]
    fn tolerance_matches_brute_force(policy in policy(), voters in voters(9)) {
        let analytic = tolerance(policy, &voters).map(|t| (t.worst, t.best));
        prop_assert_eq!(analytic, Ok(brute_tolerance(policy, &voters)));
    }

    #[test]
    fn report_is_consistent(policy in policy(), voters in voters(7)) {
        let r = report(policy, &voters);
        prop_assert!(r.is_ok());
        if let Ok(r) = r {
            let n = voters.len();
            prop_assert_eq!(r.splits.len(), (1usize << (n - 1)) - 1);
            prop_assert!(r.failures_tolerated_worst <= r.failures_tolerated_best);
            prop_assert!(r.failures_tolerated_best < n);
            for split in &r.splits {
                prop_assert!(split.side_a.len() >= split.side_b.len());
                prop_assert!(!split.side_b.is_empty());
            }
        }
    }

    #[test]
    fn tracker_settles_once_everyone_answers(
        policy in policy(),
        voters in voters(8),
        answers in prop::collection::vec(any::<bool>(), 8),
    ) {
        let mut tracker = Tracker::new(policy, voters.clone());
        let mut reached = false;
        for (voter, &ok) in voters.iter().zip(&answers) {
            if ok { tracker.record_success(voter.id) } else { tracker.record_failure(voter.id) }
            let outcome = tracker.outcome();
            // Once reached, no later answer can take it back.
            prop_assert!(!reached || outcome == Outcome::Reached);
            reached = outcome == Outcome::Reached;
        }
        let ok_ids: BTreeSet<NodeId> =
            voters.iter().zip(&answers).filter(|&(_, &ok)| ok).map(|(v, _)| v.id).collect();
        let expected = if evaluate(policy, &voters, &ok_ids).held {
            Outcome::Reached
        } else {
            Outcome::Impossible
        };
        prop_assert_eq!(tracker.outcome(), expected);
    }

    #[test]
    fn counted_thresholds_settle_as_their_count_says(
        threshold in counted(),
        voters in voters(8),
        answers in prop::collection::vec(any::<bool>(), 8),
    ) {
        let mut tracker = Tracker::new(threshold.clone(), voters.clone());
        let mut reached = false;
        let mut ok_ids = BTreeSet::new();
        let mut open = everyone(&voters);
        for (voter, &ok) in voters.iter().zip(&answers) {
            open.remove(&voter.id);
            if ok {
                ok_ids.insert(voter.id);
                tracker.record_success(voter.id);
            } else {
                tracker.record_failure(voter.id);
            }
            let outcome = tracker.outcome();
            prop_assert!(!reached || outcome == Outcome::Reached);
            reached = outcome == Outcome::Reached;
            // Pending exactly when the successes fall short but the successes plus every
            // voter not yet heard would not.
            let best: BTreeSet<NodeId> = ok_ids.union(&open).copied().collect();
            let expected = if meets(&threshold, &voters, &ok_ids) {
                Outcome::Reached
            } else if meets(&threshold, &voters, &best) {
                Outcome::Pending
            } else {
                Outcome::Impossible
            };
            prop_assert_eq!(outcome, expected);
        }
    }
}
