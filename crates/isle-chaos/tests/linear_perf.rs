//! A 10,000-operation history (10 keys, 8 clients, refusals and timeouts) checked end to end,
//! and harder shapes (one hot key, many timeouts). Timings are printed (run with
//! `--nocapture`), never asserted. The hardest shape is cut to 3,000 operations in debug builds
//! so the workspace's debug test run stays quick; release checks the full 10,000.

mod common;

use std::time::Instant;

use common::{Workload, stale_read, valid_history};
use isle_chaos::linear;

fn workload() -> Workload {
    Workload {
        keys: 10,
        clients: 8,
        ops: 10_000,
        fail: 0.03,
        indeterminate: 0.05,
        ..Workload::default()
    }
}

#[test]
fn ten_thousand_operations() {
    let history = valid_history(42, &workload());
    assert_eq!(history.len(), 10_000);
    let started = Instant::now();
    let verdict = linear::check(&history);
    let elapsed = started.elapsed();
    println!("{verdict}");
    println!(
        "checked {} operations in {:.3} s ({} build)",
        history.len(),
        elapsed.as_secs_f64(),
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    );
    assert!(verdict.is_ok(), "{verdict}");

    let mutated = stale_read(&history, 7).expect("a stale-read mutation");
    let started = Instant::now();
    let verdict = linear::check(&mutated);
    println!(
        "checked the mutated history in {:.3} s: {}",
        started.elapsed().as_secs_f64(),
        verdict.status()
    );
    assert!(verdict.is_violated(), "{verdict}");
    println!("{}", verdict.violations[0]);
}

fn timed(name: &str, workload: &Workload, seed: u64) {
    let history = valid_history(seed, workload);
    let started = Instant::now();
    let verdict = linear::check(&history);
    println!(
        "{name}: {} operations in {:.3} s ({} build); {}",
        history.len(),
        started.elapsed().as_secs_f64(),
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
        verdict.notes.join("; ")
    );
    assert!(verdict.is_ok(), "{verdict}");
}

#[test]
fn one_hot_key_with_eight_clients() {
    timed(
        "one key, 8 clients",
        &Workload {
            keys: 1,
            ..workload()
        },
        43,
    );
}

#[test]
fn a_fifth_of_the_operations_time_out() {
    timed(
        "10 keys, 8 clients, 20% timeouts",
        &Workload {
            indeterminate: 0.2,
            ..workload()
        },
        44,
    );
    timed(
        "one key, 16 clients, 20% timeouts",
        &Workload {
            keys: 1,
            clients: 16,
            indeterminate: 0.2,
            ops: if cfg!(debug_assertions) {
                3_000
            } else {
                10_000
            },
            ..workload()
        },
        45,
    );
}
