//! The linearizability checker against generated histories: valid ones (a real register under
//! concurrent clients, refusals and timeouts) must pass, mutated ones must fail, and on tiny
//! random histories it must agree with a brute-force search.

mod common;

use common::{Rng, Workload, brute_force, stale_read, unapply_observed_write, valid_history};
use isle_chaos::history::{History, Op, Operation, Outcome, Ret};
use isle_chaos::linear;

#[test]
fn generated_valid_histories_pass() {
    for seed in 0..40 {
        let history = valid_history(seed, &Workload::default());
        let verdict = linear::check(&history);
        assert!(verdict.is_ok(), "seed {seed}: {verdict}");
        if seed == 0 {
            println!("{verdict}");
        }
    }
}

#[test]
fn generated_valid_histories_with_many_timeouts_pass() {
    let workload = Workload {
        keys: 2,
        clients: 6,
        ops: 200,
        indeterminate: 0.3,
        fail: 0.1,
        ..Workload::default()
    };
    for seed in 100..130 {
        let history = valid_history(seed, &workload);
        let verdict = linear::check(&history);
        assert!(verdict.is_ok(), "seed {seed}: {verdict}");
    }
}

#[test]
fn mutated_histories_fail() {
    let mut stale = 0;
    let mut unapplied = 0;
    for seed in 0..40 {
        let history = valid_history(seed, &Workload::default());
        if let Some(mutated) = stale_read(&history, seed) {
            let verdict = linear::check(&mutated);
            assert!(verdict.is_violated(), "seed {seed} stale read: {verdict}");
            if stale == 0 {
                println!("{verdict}");
            }
            stale += 1;
        }
        if let Some(mutated) = unapply_observed_write(&history, seed) {
            let verdict = linear::check(&mutated);
            assert!(
                verdict.is_violated(),
                "seed {seed} unapplied write: {verdict}"
            );
            if unapplied == 0 {
                println!("{verdict}");
            }
            unapplied += 1;
        }
    }
    println!("{stale} stale-read and {unapplied} unapplied-write mutations caught");
    assert!(stale >= 30 && unapplied >= 30, "{stale} {unapplied}");
}

fn tiny_random_history(rng: &mut Rng, indeterminate: u64) -> History {
    let pool = ["a", "b", "c"];
    let value = |rng: &mut Rng| pool[rng.below(3) as usize].to_string();
    let count = 1 + rng.below(7);
    (0..count)
        .map(|i| {
            let invoke = rng.below(20);
            let complete = invoke + rng.below(10);
            let (op, ret) = match rng.below(4) {
                0 => {
                    let seen = (rng.below(4) > 0).then(|| value(rng));
                    (Op::Read, Ret::Value(seen))
                }
                1 => (Op::Write(value(rng)), Ret::Ack),
                2 => (
                    Op::Cas {
                        expect: (rng.below(4) > 0).then(|| value(rng)),
                        new: value(rng),
                    },
                    Ret::Cas(rng.chance(0.5)),
                ),
                _ => (Op::Delete, Ret::Ack),
            };
            let roll = rng.below(10);
            let outcome = if roll == 0 {
                Outcome::Fail
            } else if roll <= indeterminate {
                Outcome::Indeterminate
            } else {
                Outcome::Ok(ret)
            };
            Operation::new(i, "x", op, invoke, complete, outcome)
        })
        .collect()
}

#[test]
fn agrees_with_brute_force_on_tiny_random_histories() {
    agree_with_brute_force(7, 2);
}

#[test]
fn agrees_with_brute_force_when_half_the_operations_time_out() {
    agree_with_brute_force(8, 5);
}

/// `indeterminate`: in tenths, how many operations time out.
fn agree_with_brute_force(seed: u64, indeterminate: u64) {
    let mut rng = Rng::new(seed);
    let (mut valid, mut invalid) = (0, 0);
    for case in 0..5_000 {
        let history = tiny_random_history(&mut rng, indeterminate);
        let verdict = linear::check(&history);
        let expected = brute_force(&history);
        assert!(verdict.undecided.is_empty(), "case {case}: {verdict}");
        assert_eq!(
            verdict.is_ok(),
            expected,
            "case {case}: checker says {verdict}\nhistory:\n{}",
            history.to_jsonl().unwrap()
        );
        if expected {
            valid += 1;
        } else {
            invalid += 1;
        }
    }
    println!("{valid} valid, {invalid} invalid tiny histories agree with brute force");
    assert!(
        valid > 500 && invalid > 500,
        "{valid} valid, {invalid} invalid"
    );
}
