//! One run per nemesis of the vocabulary, on 3 and 5 nodes: each must pass every check — AP
//! (convergence, no lost acknowledged write, deleted stays deleted, counters equal to their
//! increments, lww keeps the latest), CP (linearizable registers, fencing, the minority
//! refuses writes) — and recover after the heal.

mod common;

use isle_sim::{Nemesis, Schedule, Sides, SimConfig};

fn run(seed: u64, nodes: u64, nemeses: Vec<Nemesis>) {
    let mut schedule = Schedule::new();
    for (i, nemesis) in nemeses.into_iter().enumerate() {
        schedule = schedule.window(400 + 300 * i as u64, 2_500, nemesis);
    }
    let config = common::lighten(
        SimConfig::new(seed)
            .nodes(nodes)
            .schedule(schedule)
            .run_ms(4_000),
    );
    let checked = common::run_and_check(config, "cargo test -p isle-sim --test nemeses");
    let history_bytes = checked.history.as_ref().map_or(0, String::len);
    println!("{} ({history_bytes} bytes of history)", checked.line);
    for violation in &checked.violations {
        println!("  {violation}");
    }
    assert!(checked.violations.is_empty(), "{}", checked.line);
}

#[test]
fn complete_partitions() {
    run(
        11,
        3,
        vec![Nemesis::Partition {
            sides: Sides::One(3),
        }],
    );
    run(
        12,
        5,
        vec![Nemesis::Partition {
            sides: Sides::MajorityMinority,
        }],
    );
    run(13, 5, vec![Nemesis::Partition { sides: Sides::Even }]);
}

#[test]
fn majorities_ring_and_bridge() {
    run(21, 5, vec![Nemesis::MajoritiesRing]);
    run(22, 3, vec![Nemesis::MajoritiesRing]);
    run(23, 5, vec![Nemesis::Bridge]);
}

#[test]
fn partial_and_one_way_cuts() {
    run(
        31,
        5,
        vec![Nemesis::Cut {
            links: vec![[1, 2], [3, 4]],
        }],
    );
    run(
        32,
        3,
        vec![Nemesis::OneWay {
            from: vec![1],
            to: vec![2, 3],
        }],
    );
}

#[test]
fn flaky_links() {
    run(
        41,
        3,
        vec![Nemesis::Flaky {
            nodes: vec![],
            fail_rate: 0.01,
            latency_ms_max: 150,
        }],
    );
}

#[test]
fn crashes_restarts_and_clock_skew() {
    run(
        51,
        3,
        vec![Nemesis::Crash { node: 2 }, Nemesis::Restart { node: 1 }],
    );
    run(
        52,
        5,
        vec![
            Nemesis::ClockSkew {
                node: 4,
                skew_ms: 30_000,
            },
            Nemesis::Crash { node: 4 },
        ],
    );
}

#[test]
fn pause_corrupt_and_membership() {
    run(61, 3, vec![Nemesis::Pause { node: 1 }]);
    run(
        62,
        5,
        vec![Nemesis::Corrupt {
            nodes: vec![2, 4],
            rate: 0.2,
        }],
    );
    run(63, 3, vec![Nemesis::Membership { node: 3 }]);
    run(
        64,
        5,
        vec![Nemesis::Membership { node: 1 }, Nemesis::Pause { node: 2 }],
    );
}
