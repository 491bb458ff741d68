//! `isle-chaos`'s checkers on a run — AP convergence and merge rules (with the final copies of
//! every replica), availability per nemesis window and node, CP linearizability and fencing —
//! plus "the minority refuses CP writes", judged from the nemeses in force.
//!
//! The run records in `isle-chaos`'s model directly (see [`crate::record`]): keys are
//! `bucket/key`; times are simulated nanoseconds; nodes are `n1`, `n2`, ...

use std::collections::{BTreeMap, BTreeSet};

use isle_chaos::availability::{self, Availability, Window};
use isle_chaos::{Keyspace, MergeRule, Verdict};

use crate::engine::Run;
use crate::nemesis::{Effects, Nemesis};

/// Each bucket's merge rule.
pub fn rules(run: &Run) -> BTreeMap<String, MergeRule> {
    run.config
        .ap
        .buckets
        .iter()
        .map(|bucket| {
            let rule = match bucket.rule {
                isle_ap::Rule::Siblings => MergeRule::Siblings,
                isle_ap::Rule::Lww => MergeRule::Lww,
            };
            (bucket.name.clone(), rule)
        })
        .collect()
}

/// `isle-chaos`'s convergence checker on the run.
pub fn convergence(run: &Run) -> Verdict {
    isle_chaos::convergence::check(&run.history, &rules(run), &run.finals)
}

/// Availability per nemesis window (each start to its stop, numbered in start order), per
/// node, and after the final heal.
pub fn availability(run: &Run) -> Vec<Availability> {
    let mut windows = Vec::new();
    let mut open: Vec<(usize, &Nemesis, u64)> = Vec::new();
    let mut started = 0;
    for event in &run.nemeses {
        if event.start {
            started += 1;
            open.push((started, &event.nemesis, event.at_ns));
        } else if let Some(index) = open.iter().position(|(_, n, _)| **n == event.nemesis) {
            let (number, nemesis, from) = open.remove(index);
            windows.push(Window::new(
                format!("{number} {}", nemesis.name()),
                from,
                event.at_ns,
            ));
        }
    }
    let heal_ns = run.figures.heal_at_ms.saturating_mul(1_000_000);
    let end_ns = run.figures.sim_ms.saturating_mul(1_000_000);
    windows.push(Window::new("after heal", heal_ns, end_ns));
    availability::figures(
        &run.history,
        &windows,
        &BTreeMap::<String, BTreeSet<String>>::new(),
    )
}

/// `isle-chaos`'s linearizability checker on the CP registers.
pub fn linearizability(run: &Run) -> Verdict {
    isle_chaos::linear::check(&run.history.of_keyspace(Keyspace::Cp))
}

/// `isle-chaos`'s fencing checker on the CP locks and fenced writes.
pub fn fencing(run: &Run) -> Verdict {
    isle_chaos::fencing::check(&run.history.of_keyspace(Keyspace::Cp))
}

/// The nemesis effects in force over time: `(from_ns, effects)`, in time order, each lasting
/// until the next.
fn effects_timeline(run: &Run) -> Vec<(u64, Effects)> {
    let n = run.config.nodes;
    let mut active: Vec<&Nemesis> = Vec::new();
    let mut timeline = vec![(0, Effects::default())];
    for event in &run.nemeses {
        if event.nemesis.is_instant() {
            continue;
        }
        if event.start {
            active.push(&event.nemesis);
        } else if let Some(index) = active.iter().position(|a| **a == event.nemesis) {
            active.remove(index);
        }
        timeline.push((event.at_ns, Effects::of(active.iter().copied(), n)));
    }
    timeline
}

/// Whether `node`'s side holds a majority of the CP voters under `effects`: the nodes it
/// exchanges messages with both ways (directly or through others), counted against every node
/// and against the voters left by membership nemeses. Only a side short of both is "without
/// quorum" — during a membership change either configuration may rule.
fn side_has_quorum(effects: &Effects, node: u64, n: u64) -> bool {
    let mut side = BTreeSet::from([node]);
    let mut frontier = vec![node];
    while let Some(a) = frontier.pop() {
        for b in 1..=n {
            if !side.contains(&b) && effects.delivers(a, b) && effects.delivers(b, a) {
                side.insert(b);
                frontier.push(b);
            }
        }
    }
    if effects.down.contains(&node) || effects.paused.contains(&node) {
        side.clear();
    }
    let all: BTreeSet<u64> = (1..=n).collect();
    let voters: BTreeSet<u64> = all.difference(&effects.removed).copied().collect();
    let majority = |of: &BTreeSet<u64>| side.intersection(of).count() > of.len() / 2;
    majority(&all) || majority(&voters)
}

/// "The minority refuses CP writes": no CP mutation was acknowledged by a node whose side of
/// the network lacked a quorum for the operation's whole lifetime (from invocation to
/// acknowledgement no message could have carried it to a majority and back).
pub fn minority_writes(run: &Run) -> Verdict {
    let mut verdict = Verdict::new("minority refuses CP writes");
    let n = run.config.nodes;
    let timeline = effects_timeline(run);
    let mut checked = 0;
    for op in &run.history.ops {
        let cp = op.op.keyspace() == Keyspace::Cp;
        if !cp || !op.op.is_mutation() || !op.outcome.is_ok() {
            continue;
        }
        let Some(node) = op
            .node
            .as_deref()
            .and_then(|name| name.trim_start_matches('n').parse::<u64>().ok())
        else {
            continue;
        };
        checked += 1;
        let overlapping = timeline.iter().enumerate().filter(|(index, (from, _))| {
            let until = timeline.get(index + 1).map_or(u64::MAX, |(at, _)| *at);
            *from <= op.complete && until > op.invoke
        });
        let mut ever_quorum = false;
        for (_, (_, effects)) in overlapping {
            ever_quorum |= side_has_quorum(effects, node, n);
        }
        if !ever_quorum {
            verdict.violation(
                Some(&op.key),
                format!("n{node} acknowledged a CP write while its side held no quorum"),
                vec![op.to_string()],
            );
        }
    }
    verdict.note(format!("{checked} acknowledged CP mutations checked"));
    verdict
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nemesis::Sides;

    #[test]
    fn a_side_holds_quorum_only_with_a_majority_of_the_voters() {
        let split = Nemesis::Partition {
            sides: Sides::MajorityMinority,
        };
        let effects = Effects::of([&split], 5);
        assert!(side_has_quorum(&effects, 1, 5));
        assert!(!side_has_quorum(&effects, 4, 5));
        // A paused or crashed node is a side of its own.
        let pause = Nemesis::Pause { node: 2 };
        assert!(!side_has_quorum(&Effects::of([&pause], 3), 2, 3));
        assert!(side_has_quorum(&Effects::of([&pause], 3), 1, 3));
        // Two of five, but a majority of the three voters left: either configuration counts.
        let removed = [
            split.clone(),
            Nemesis::Membership { node: 1 },
            Nemesis::Membership { node: 2 },
        ];
        assert!(side_has_quorum(&Effects::of(&removed, 5), 4, 5));
        // One-way reachability is not a side: node 1 hears nobody back.
        let one_way = Nemesis::OneWay {
            from: vec![2, 3],
            to: vec![1],
        };
        assert!(!side_has_quorum(&Effects::of([&one_way], 3), 1, 3));
    }
}
