//! Hand-written histories with known verdicts.

use super::*;
use crate::history::Operation;

fn ok(p: u64, op: Op, ret: Ret, invoke: u64, complete: u64) -> Operation {
    Operation::new(p, "x", op, invoke, complete, Outcome::Ok(ret))
}
fn w(p: u64, v: &str, invoke: u64, complete: u64) -> Operation {
    ok(p, Op::Write(v.into()), Ret::Ack, invoke, complete)
}
fn r(p: u64, v: Option<&str>, invoke: u64, complete: u64) -> Operation {
    ok(
        p,
        Op::Read,
        Ret::Value(v.map(String::from)),
        invoke,
        complete,
    )
}
fn cas(p: u64, e: Option<&str>, n: &str, applied: bool, invoke: u64, complete: u64) -> Operation {
    ok(
        p,
        Op::Cas {
            expect: e.map(String::from),
            new: n.into(),
        },
        Ret::Cas(applied),
        invoke,
        complete,
    )
}
fn maybe(p: u64, op: Op, invoke: u64) -> Operation {
    Operation::new(p, "x", op, invoke, invoke + 5, Outcome::Indeterminate)
}
fn h(ops: Vec<Operation>) -> History {
    ops.into_iter().collect()
}
fn verdict(ops: Vec<Operation>) -> Verdict {
    let verdict = check(&h(ops));
    println!("{verdict}");
    verdict
}

#[test]
fn empty_and_sequential_histories_are_linearizable() {
    assert!(verdict(vec![]).is_ok());
    assert!(
        verdict(vec![
            r(1, None, 0, 1),
            w(1, "a", 2, 3),
            r(2, Some("a"), 4, 5),
            cas(1, Some("a"), "b", true, 6, 7),
            cas(2, Some("a"), "c", false, 8, 9),
            ok(1, Op::Delete, Ret::Ack, 10, 11),
            r(2, None, 12, 13),
        ])
        .is_ok()
    );
}

#[test]
fn concurrent_reads_may_see_either_side_of_a_write() {
    assert!(
        verdict(vec![
            w(1, "a", 0, 10),
            w(2, "b", 20, 40),
            r(3, Some("a"), 21, 30),
            r(4, Some("b"), 22, 31),
            r(5, Some("b"), 41, 42),
        ])
        .is_ok()
    );
}

#[test]
fn stale_read_after_acknowledged_write_is_caught_and_explained() {
    let verdict = verdict(vec![
        w(1, "a", 0, 10),
        w(2, "b", 20, 30),
        r(3, Some("a"), 40, 50),
    ]);
    assert!(verdict.is_violated());
    let violation = &verdict.violations[0];
    assert_eq!(violation.key.as_deref(), Some("x"));
    assert_eq!(
        violation.message,
        "stale read: #2 read \"a\", which #1 had already replaced"
    );
    let story = violation.story.join("\n");
    assert!(
        story.contains("\"a\" was written by #0 (acknowledged at 10); #1 (write \"b\") began after that, at 20, and finished at 30, before #2 began at 40"),
        "{story}"
    );
}

#[test]
fn lost_write_is_caught() {
    // The write of "b" was acknowledged, but a later read still sees the older "a".
    let verdict = verdict(vec![
        w(1, "a", 0, 10),
        r(2, Some("a"), 11, 12),
        w(1, "b", 13, 20),
        r(2, Some("a"), 25, 30),
        r(3, Some("a"), 31, 32),
    ]);
    assert!(verdict.is_violated());
    assert!(verdict.violations[0].message.starts_with("stale read: #3"));
}

#[test]
fn read_of_absent_after_a_write_is_stale() {
    let verdict = verdict(vec![w(1, "a", 0, 10), r(2, None, 11, 12)]);
    assert!(verdict.is_violated());
    let story = verdict.violations[0].story.join("\n");
    assert!(story.contains("the key starts absent; #0"), "{story}");
}

#[test]
fn phantom_and_future_reads_are_caught() {
    let phantom = verdict(vec![w(1, "a", 0, 10), r(2, Some("z"), 11, 12)]);
    assert_eq!(
        phantom.violations[0].message,
        "#1 read \"z\", which no operation wrote"
    );
    let future = verdict(vec![r(2, Some("a"), 0, 5), w(1, "a", 6, 10)]);
    assert_eq!(
        future.violations[0].message,
        "#0 read \"a\" before it was written"
    );
    let refused = verdict(vec![
        Operation::new(1, "x", Op::Write("a".into()), 0, 5, Outcome::Fail),
        r(2, Some("a"), 6, 10),
    ]);
    assert_eq!(
        refused.violations[0].message,
        "#1 read \"a\", written only by refused operations"
    );
}

#[test]
fn two_concurrent_cas_from_the_same_value_cannot_both_apply() {
    let verdict = verdict(vec![
        w(1, "a", 0, 1),
        cas(2, Some("a"), "b", true, 10, 20),
        cas(3, Some("a"), "c", true, 11, 21),
    ]);
    assert!(verdict.is_violated());
}

#[test]
fn cas_that_applied_on_a_replaced_value_is_caught() {
    let verdict = verdict(vec![
        w(1, "a", 0, 1),
        w(1, "b", 2, 3),
        cas(2, Some("a"), "c", true, 10, 20),
    ]);
    assert!(verdict.is_violated());
    assert!(
        verdict.violations[0]
            .message
            .starts_with("stale compare-and-set: #2"),
        "{verdict}"
    );
}

#[test]
fn cas_that_failed_although_its_value_was_there_is_caught() {
    let verdict = verdict(vec![w(1, "a", 0, 1), cas(2, Some("a"), "c", false, 10, 20)]);
    assert!(verdict.is_violated());
    // ... but a concurrent write could explain the failure.
    assert!(
        super::check(&h(vec![
            w(1, "a", 0, 1),
            w(3, "b", 5, 15),
            cas(2, Some("a"), "c", false, 10, 20),
            r(1, Some("a"), 30, 31),
            w(1, "a2", 32, 33),
        ]))
        .is_violated()
    );
    assert!(
        verdict_ok_with_concurrent_write(),
        "a failed cas explained by a concurrent write"
    );
}

fn verdict_ok_with_concurrent_write() -> bool {
    check(&h(vec![
        w(1, "a", 0, 1),
        w(3, "b", 5, 15),
        cas(2, Some("a"), "c", false, 10, 20),
        r(1, Some("b"), 30, 31),
    ]))
    .is_ok()
}

#[test]
fn indeterminate_write_that_shows_up_later_is_fine() {
    // Timed out at 5, visible long after.
    assert!(
        verdict(vec![
            w(1, "a", 0, 1),
            maybe(2, Op::Write("b".into()), 2),
            r(3, Some("a"), 10, 11),
            r(3, Some("a"), 100, 101),
            r(3, Some("b"), 1000, 1001),
            r(4, Some("b"), 1002, 1003),
        ])
        .is_ok()
    );
    // ... or never.
    assert!(
        verdict(vec![
            w(1, "a", 0, 1),
            maybe(2, Op::Write("b".into()), 2),
            r(3, Some("a"), 1000, 1001),
        ])
        .is_ok()
    );
}

#[test]
fn indeterminate_write_that_shows_up_then_disappears_is_caught() {
    let verdict = verdict(vec![
        w(1, "a", 0, 1),
        maybe(2, Op::Write("b".into()), 2),
        r(3, Some("b"), 10, 11),
        r(3, Some("a"), 20, 21),
    ]);
    assert!(verdict.is_violated());
    assert_eq!(
        verdict.violations[0].message,
        "stale read: #3 read \"a\", which #2 had already replaced"
    );
    let story = verdict.violations[0].story.join("\n");
    assert!(
        story.contains("#2 (read → \"b\") began after that, at 10, and finished at 11"),
        "{story}"
    );
}

#[test]
fn indeterminate_write_cannot_take_effect_before_its_invocation() {
    assert!(
        verdict(vec![
            r(3, Some("b"), 0, 1),
            maybe(2, Op::Write("b".into()), 2),
        ])
        .is_violated()
    );
}

#[test]
fn refused_writes_never_apply() {
    let verdict = verdict(vec![
        w(1, "a", 0, 1),
        Operation::new(2, "x", Op::Write("b".into()), 2, 3, Outcome::Fail),
        r(3, Some("b"), 10, 11),
    ]);
    assert!(verdict.is_violated());
}

#[test]
fn indeterminate_cas_applies_at_most_once_and_only_on_its_value() {
    let cas_op = Op::Cas {
        expect: Some("a".into()),
        new: "b".into(),
    };
    assert!(
        verdict(vec![
            w(1, "a", 0, 1),
            maybe(2, cas_op.clone(), 2),
            r(3, Some("b"), 10, 11),
        ])
        .is_ok()
    );
    assert!(
        verdict(vec![
            w(1, "z", 0, 1),
            maybe(2, cas_op, 2),
            r(3, Some("b"), 10, 11),
        ])
        .is_violated()
    );
}

#[test]
fn retries_with_one_request_id_apply_once() {
    // A cas timed out, was retried with the same request id, and the retry returned the
    // original answer (the idempotency table): one operation, applied once, early.
    let attempt = Operation::new(
        2,
        "x",
        Op::Cas {
            expect: Some("a".into()),
            new: "b".into(),
        },
        2,
        5,
        Outcome::Indeterminate,
    )
    .with_request_id("r1");
    let retry = Operation::new(
        2,
        "x",
        Op::Cas {
            expect: Some("a".into()),
            new: "b".into(),
        },
        20,
        25,
        Outcome::Ok(Ret::Cas(true)),
    )
    .with_request_id("r1");
    let history = vec![w(1, "a", 0, 1), attempt, r(3, Some("b"), 10, 11), retry];
    assert!(verdict(history.clone()).is_ok());
    // Without the request id, the retry would have to apply after the read saw "b".
    let mut history = history;
    history[1].request_id = None;
    history[3].request_id = None;
    assert!(verdict(history).is_violated());
}

#[test]
fn fenced_writes_are_register_writes_and_other_keys_are_independent() {
    let mut fenced = ok(
        1,
        Op::FencedWrite {
            lock: "l".into(),
            token: 3,
            value: "f".into(),
        },
        Ret::Ack,
        0,
        1,
    );
    fenced.key = "y".into();
    let mut read = r(2, Some("f"), 2, 3);
    read.key = "y".into();
    assert!(verdict(vec![w(1, "a", 0, 1), fenced, read, r(2, Some("a"), 4, 5)]).is_ok());
}

#[test]
fn touching_intervals_count_as_concurrent() {
    // The write returns at 10 and the read starts at 10: either order is allowed.
    assert!(verdict(vec![w(1, "a", 0, 10), r(2, None, 10, 12)]).is_ok());
}

#[test]
fn many_pending_indeterminate_writes_do_not_explode() {
    // Forty timed-out writes nobody read, with failed compare-and-sets (so they are not
    // dropped), then a stale read: the search must still finish quickly.
    let mut ops = vec![w(0, "a", 0, 1)];
    for i in 0..40 {
        ops.push(maybe(i + 1, Op::Write(format!("lost{i}")), 2 + i));
    }
    ops.push(cas(50, Some("zz"), "q", false, 100, 101));
    ops.push(w(51, "b", 102, 103));
    ops.push(r(52, Some("a"), 104, 105));
    let verdict = verdict(ops);
    assert!(verdict.is_violated());
}

#[test]
fn budget_exhaustion_is_undecided_not_a_verdict() {
    let history = h(vec![
        w(1, "a", 0, 10),
        w(2, "b", 0, 10),
        w(3, "c", 0, 10),
        r(4, Some("z"), 0, 10),
    ]);
    let options = LinearOptions {
        max_states: 1,
        max_steps: 1_000,
    };
    let verdict = check_with(&history, &options);
    assert_eq!(
        verdict.status(),
        crate::verdict::Status::Inconclusive,
        "{verdict}"
    );
}
