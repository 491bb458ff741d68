//! The lab can fail: each deliberately broken build (`isle_sim::Bug`) runs a few seeds and the
//! checker that guards what it breaks must report a violation in at least one of them — stale
//! reads without the quorum check, a superseded holder's write accepted without fencing,
//! replicas left unequal without anti-entropy.

mod common;

use isle_sim::{Bug, Nemesis, Schedule, Sides, SimConfig};

/// Runs `bug` on `seeds` with `schedule`; returns how many seeds broke `rule` (a violation whose
/// rule name contains it), printing every run's line.
fn caught(bug: Bug, nodes: u64, schedule: &Schedule, seeds: &[u64], rule: &str) -> usize {
    let mut caught = 0;
    for &seed in seeds {
        let config = common::lighten(
            SimConfig::new(seed)
                .nodes(nodes)
                .schedule(schedule.clone())
                .run_ms(4_000)
                .bug(Some(bug)),
        );
        let checked = common::run_and_check(config, "cargo test -p isle-sim --test bugs");
        println!("{}", checked.line);
        let hits: Vec<_> = checked
            .violations
            .iter()
            .filter(|v| v.rule.contains(rule))
            .collect();
        if let Some(first) = hits.first() {
            println!("  caught ({} × {rule}): {first}", hits.len());
            caught += 1;
        }
    }
    caught
}

#[test]
fn without_the_quorum_check_reads_go_stale() {
    let split = Schedule::new().window(
        500,
        2_500,
        Nemesis::Partition {
            sides: Sides::MajorityMinority,
        },
    );
    let hits = caught(Bug::NoQuorumCheck, 5, &split, &[1, 2], "linearizability");
    assert!(hits > 0, "no stale read caught in 2 seeds");
}

#[test]
fn without_fencing_a_superseded_holder_writes() {
    let hits = caught(Bug::NoFencing, 3, &Schedule::new(), &[1, 2], "fencing");
    assert!(hits > 0, "no fencing violation caught in 2 seeds");
}

#[test]
fn without_anti_entropy_replicas_stay_apart() {
    let flaky = Schedule::new()
        .window(
            300,
            3_000,
            Nemesis::Flaky {
                nodes: vec![],
                fail_rate: 0.05,
                latency_ms_max: 100,
            },
        )
        .window(1_000, 1_500, Nemesis::Crash { node: 2 });
    let hits = caught(Bug::NoAntiEntropy, 3, &flaky, &[1, 2], "convergence");
    assert!(hits > 0, "no divergence caught in 2 seeds");
}
