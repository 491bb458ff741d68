//! Final states with known verdicts, one merge rule at a time.

use super::*;

fn op(id: u64, key: &str, op: Op, invoke: u64, complete: u64, outcome: Outcome) -> Operation {
    Operation::new(id, key, op, invoke, complete, outcome)
}
fn acked(p: u64, key: &str, o: Op, invoke: u64, complete: u64) -> Operation {
    op(p, key, o, invoke, complete, Outcome::Ok(Ret::Ack))
}
fn maybe(p: u64, key: &str, o: Op, invoke: u64) -> Operation {
    op(p, key, o, invoke, invoke + 10, Outcome::Indeterminate)
}
fn put(value: &str, covers: &[&str]) -> Op {
    Op::ApWrite {
        bucket: "b".into(),
        value: value.into(),
        covers: covers.iter().map(|c| c.to_string()).collect(),
        local: false,
    }
}
fn local_put(value: &str) -> Op {
    Op::ApWrite {
        bucket: "b".into(),
        value: value.into(),
        covers: Vec::new(),
        local: true,
    }
}
fn del(covers: &[&str]) -> Op {
    Op::ApDelete {
        covers: covers.iter().map(|c| c.to_string()).collect(),
        local: false,
        covers_unknown: false,
    }
}
fn values(vs: &[&str]) -> ApValue {
    ApValue::Values(vs.iter().map(|v| v.to_string()).collect())
}
fn members(ms: &[&str]) -> ApValue {
    ApValue::Set(ms.iter().map(|m| m.to_string()).collect())
}
/// Every one of three replicas holds `value`.
fn everywhere(key: &str, value: ApValue) -> FinalState {
    let mut state = FinalState::new();
    for replica in ["n1", "n2", "n3"] {
        state.insert(key, replica, value.clone());
    }
    state
}
fn run(rule: MergeRule, ops: Vec<Operation>, state: &FinalState) -> Verdict {
    let rules = BTreeMap::from([("b".to_string(), rule)]);
    let verdict = check(&ops.into_iter().collect(), &rules, state);
    println!("{verdict}");
    verdict
}
fn siblings_run(ops: Vec<Operation>, value: ApValue) -> Verdict {
    run(MergeRule::Siblings, ops, &everywhere("k", value))
}

#[test]
fn replicas_that_differ_are_caught() {
    let mut state = everywhere("k", values(&["a"]));
    state.insert("k", "n3", ApValue::Absent);
    let verdict = run(
        MergeRule::Siblings,
        vec![acked(1, "k", put("a", &[]), 0, 1)],
        &state,
    );
    assert!(verdict.is_violated());
    assert_eq!(
        verdict.violations[0].message,
        "replicas differ after the heal: 2 distinct copies on 3 replicas"
    );
    // The absent copy also lost the acknowledged write.
    assert_eq!(verdict.violations.len(), 2, "{verdict}");
}

#[test]
fn siblings_keep_concurrent_acknowledged_writes() {
    let ops = vec![
        acked(1, "k", put("a", &[]), 0, 10),
        acked(2, "k", put("b", &[]), 5, 15),
        maybe(3, "k", put("c", &[]), 6),
        op(4, "k", put("d", &[]), 7, 8, Outcome::Fail),
    ];
    assert!(siblings_run(ops.clone(), values(&["a", "b"])).is_ok());
    assert!(siblings_run(ops.clone(), values(&["a", "b", "c"])).is_ok());
    let lost = siblings_run(ops.clone(), values(&["a"]));
    assert_eq!(
        lost.violations[0].message,
        "acknowledged write lost: \"b\" is missing"
    );
    let phantom = siblings_run(ops, values(&["a", "b", "d"]));
    assert_eq!(
        phantom.violations[0].message,
        "\"d\" was never written (or only by refused writes)"
    );
}

#[test]
fn siblings_drop_what_a_later_write_covered() {
    let ops = vec![
        acked(1, "k", put("a", &[]), 0, 10),
        acked(2, "k", put("b", &["a"]), 20, 30),
    ];
    assert!(siblings_run(ops.clone(), values(&["b"])).is_ok());
    let back = siblings_run(ops, values(&["a", "b"]));
    assert_eq!(
        back.violations[0].message,
        "replaced value resurrected: \"a\" is back"
    );
}

#[test]
fn deleted_values_stay_deleted() {
    let ops = vec![
        acked(1, "k", put("a", &[]), 0, 10),
        acked(2, "k", del(&["a"]), 20, 30),
    ];
    assert!(siblings_run(ops.clone(), ApValue::Absent).is_ok());
    let back = siblings_run(ops.clone(), values(&["a"]));
    assert_eq!(
        back.violations[0].message,
        "deleted value resurrected: \"a\" is back"
    );
    // A write the delete had not seen survives it.
    let mut concurrent = ops;
    concurrent.push(acked(3, "k", put("c", &[]), 25, 35));
    assert!(siblings_run(concurrent.clone(), values(&["c"])).is_ok());
    assert!(siblings_run(concurrent, ApValue::Absent).is_violated());
    // An indeterminate delete may or may not have applied.
    let uncertain = vec![
        acked(1, "k", put("a", &[]), 0, 10),
        maybe(2, "k", del(&["a"]), 20),
    ];
    assert!(siblings_run(uncertain.clone(), ApValue::Absent).is_ok());
    assert!(siblings_run(uncertain, values(&["a"])).is_ok());
}

fn stamped(p: u64, o: Op, invoke: u64, ms: u64) -> Operation {
    op(
        p,
        "k",
        o,
        invoke,
        invoke + 5,
        Outcome::Ok(Ret::Stamp(Stamp {
            physical_ms: ms,
            logical: 0,
            node: p,
        })),
    )
}

#[test]
fn lww_keeps_the_greatest_acknowledged_timestamp() {
    // "b" was acknowledged later in real time but stamped earlier (a skewed clock): lww keeps "a".
    let ops = vec![
        stamped(1, put("a", &[]), 0, 500),
        stamped(2, put("b", &[]), 10, 400),
        maybe(3, "k", put("c", &[]), 20),
    ];
    let lww = |ops: Vec<Operation>, value| run(MergeRule::Lww, ops, &everywhere("k", value));
    assert!(lww(ops.clone(), values(&["a"])).is_ok());
    assert!(
        lww(ops.clone(), values(&["c"])).is_ok(),
        "c may have a later stamp"
    );
    let wrong = lww(ops.clone(), values(&["b"]));
    assert_eq!(
        wrong.violations[0].message,
        "lww kept \"b\", not the write with the greatest acknowledged timestamp"
    );
    assert!(lww(ops.clone(), values(&["a", "b"])).is_violated());
    assert!(
        lww(ops.clone(), ApValue::Absent).violations[0]
            .message
            .starts_with("acknowledged write lost: the key is absent")
    );
    // A delete with the greatest stamp leaves the key absent.
    let mut deleted = ops;
    deleted.pop();
    deleted.push(stamped(4, del(&[]), 30, 600));
    assert!(lww(deleted.clone(), ApValue::Absent).is_ok());
    assert_eq!(
        lww(deleted, values(&["a"])).violations[0].message,
        "deleted key resurrected: holds \"a\" after the latest acknowledged delete"
    );
}

#[test]
fn lww_without_stamps_checks_only_phantoms() {
    let ops = vec![
        acked(1, "k", put("a", &[]), 0, 10),
        acked(2, "k", put("b", &[]), 20, 30),
    ];
    let verdict = run(
        MergeRule::Lww,
        ops.clone(),
        &everywhere("k", values(&["a"])),
    );
    assert!(verdict.is_ok());
    assert!(verdict.notes[0].contains("without acknowledged timestamps"));
    assert!(run(MergeRule::Lww, ops, &everywhere("k", values(&["z"]))).is_violated());
}

#[test]
fn counters_equal_acknowledged_increments() {
    let ops = vec![
        acked(1, "c", Op::Incr(5), 0, 10),
        acked(2, "c", Op::Incr(-2), 5, 15),
        maybe(3, "c", Op::Incr(10), 6),
        maybe(4, "c", Op::Incr(-1), 7),
        op(5, "c", Op::Incr(100), 8, 9, Outcome::Fail),
    ];
    let counter = |n| {
        run(
            MergeRule::Siblings,
            ops.clone(),
            &everywhere("c", ApValue::Counter(n)),
        )
    };
    for ok in [2, 3, 12, 13] {
        assert!(counter(ok).is_ok(), "{ok}");
    }
    assert_eq!(
        counter(14).violations[0].message,
        "the counter is 14, outside 2..=13 (acknowledged increments sum to 3; indeterminate ones may add -1..=10)"
    );
    assert!(counter(1).is_violated());
}

#[test]
fn retried_increments_with_a_request_id_count_once() {
    let ops = vec![
        maybe(1, "c", Op::Incr(5), 0).with_request_id("r1"),
        acked(1, "c", Op::Incr(5), 20, 30).with_request_id("r1"),
    ];
    let counter = |n| {
        run(
            MergeRule::Siblings,
            ops.clone(),
            &everywhere("c", ApValue::Counter(n)),
        )
    };
    assert!(counter(5).is_ok());
    assert_eq!(
        counter(10).violations[0].message,
        "the counter is 10, but the acknowledged increments sum to 5"
    );
}

#[test]
fn sets_keep_adds_no_remove_observed() {
    let ops = vec![
        acked(1, "s", Op::SetRemove("x".into()), 0, 10),
        acked(2, "s", Op::SetAdd("x".into()), 20, 30),
        acked(3, "s", Op::SetAdd("y".into()), 20, 30),
        acked(4, "s", Op::SetRemove("y".into()), 25, 35),
    ];
    let set = |ms: &[&str]| {
        run(
            MergeRule::Siblings,
            ops.clone(),
            &everywhere("s", members(ms)),
        )
    };
    assert!(
        set(&["x"]).is_ok(),
        "y's remove was concurrent: it may have observed the add"
    );
    assert!(set(&["x", "y"]).is_ok(), "... or not");
    assert_eq!(
        set(&["y"]).violations[0].message,
        "acknowledged add lost: \"x\" is missing"
    );
    assert_eq!(
        set(&["x", "z"]).violations[0].message,
        "member \"z\" was never added (or only by refused adds)"
    );
}

#[test]
fn sets_do_not_resurrect_covered_deletes() {
    let ops = vec![
        acked(1, "s", Op::SetAdd("x".into()), 0, 10),
        acked(2, "s", del(&["x"]), 20, 30),
    ];
    let set = |ms: &[&str]| {
        run(
            MergeRule::Siblings,
            ops.clone(),
            &everywhere("s", members(ms)),
        )
    };
    assert!(set(&[]).is_ok());
    assert_eq!(
        set(&["x"]).violations[0].message,
        "deleted member resurrected: \"x\" is back"
    );
}

#[test]
fn maps_sum_each_field() {
    let incr = |field: &str, n| Op::MapIncr {
        field: field.into(),
        n,
    };
    let ops = vec![
        acked(1, "m", incr("apples", 2), 0, 10),
        acked(2, "m", incr("apples", 3), 5, 15),
        maybe(3, "m", incr("pears", 1), 6),
    ];
    let map = |fields: &[(&str, i64)]| {
        let fields = fields.iter().map(|(f, n)| (f.to_string(), *n)).collect();
        run(
            MergeRule::Siblings,
            ops.clone(),
            &everywhere("m", ApValue::Map(fields)),
        )
    };
    assert!(map(&[("apples", 5)]).is_ok());
    assert!(map(&[("apples", 5), ("pears", 1)]).is_ok());
    assert_eq!(
        map(&[("apples", 2)]).violations[0].message,
        "field \"apples\" is 2, but the acknowledged increments sum to 5"
    );
    assert_eq!(
        map(&[("apples", 5), ("plums", 1)]).violations[0].message,
        "field \"plums\" was never written"
    );
}

#[test]
fn unread_keys_and_mixed_types_are_undecided() {
    let ops = vec![acked(1, "k", put("a", &[]), 0, 10)];
    let verdict = run(MergeRule::Siblings, ops, &FinalState::new());
    assert_eq!(verdict.status(), crate::verdict::Status::Inconclusive);
    let mixed = vec![
        acked(1, "k", put("a", &[]), 0, 10),
        acked(1, "k", Op::Incr(1), 20, 30),
    ];
    let verdict = run(
        MergeRule::Siblings,
        mixed,
        &everywhere("k", ApValue::Counter(1)),
    );
    assert_eq!(verdict.status(), crate::verdict::Status::Inconclusive);
    let unknown_bucket = run(
        MergeRule::Siblings,
        vec![acked(
            1,
            "k",
            Op::ApWrite {
                bucket: "other".into(),
                value: "a".into(),
                covers: vec![],
                local: false,
            },
            0,
            1,
        )],
        &everywhere("k", values(&["a"])),
    );
    assert_eq!(
        unknown_bucket.status(),
        crate::verdict::Status::Inconclusive
    );
}

#[test]
fn local_writes_and_deletes_may_replace_what_came_before() {
    let local_del = Op::ApDelete {
        covers: Vec::new(),
        local: true,
        covers_unknown: false,
    };
    let ops = vec![
        acked(1, "k", put("a", &[]), 0, 10),
        acked(2, "k", local_put("b"), 20, 30),
        acked(3, "k", put("c", &[]), 40, 50),
    ];
    // "a" may have been replaced by the local write; "b" and "c" were written after anything
    // that could replace them... except "b" is not replaced by "c" (blind).
    assert!(siblings_run(ops.clone(), values(&["b", "c"])).is_ok());
    assert!(siblings_run(ops.clone(), values(&["a", "b", "c"])).is_ok());
    assert_eq!(
        siblings_run(ops.clone(), values(&["b"])).violations[0].message,
        "acknowledged write lost: \"c\" is missing"
    );
    let mut deleted = ops;
    deleted.push(acked(4, "k", local_del, 60, 70));
    assert!(siblings_run(deleted.clone(), ApValue::Absent).is_ok());
    deleted.push(acked(5, "k", put("d", &[]), 80, 90));
    assert!(siblings_run(deleted, ApValue::Absent).is_violated());
}

#[test]
fn a_delete_whose_read_was_never_seen_covers_only_earlier_writes() {
    let unseen = Op::ApDelete {
        covers: Vec::new(),
        local: false,
        covers_unknown: true,
    };
    // Cut off at 100: its read answered before then, so it may cover "a" (invoked at 10) but
    // not "b" (invoked at 200).
    let ops = vec![
        acked(1, "k", put("a", &[]), 10, 20),
        acked(2, "k", put("b", &[]), 200, 210),
        op(3, "k", unseen, 50, 100, Outcome::Indeterminate),
    ];
    assert!(siblings_run(ops.clone(), values(&["b"])).is_ok());
    assert!(siblings_run(ops.clone(), values(&["a", "b"])).is_ok());
    assert_eq!(
        siblings_run(ops, values(&["a"])).violations[0].message,
        "acknowledged write lost: \"b\" is missing"
    );
}

/// A copy of `value` on a primary, with a digest.
fn digested(value: ApValue, digest: &str) -> FinalCopy {
    FinalCopy {
        digest: Some(digest.into()),
        ..FinalCopy::held(value)
    }
}

#[test]
fn primaries_agree_on_digests_and_on_holding_a_copy() {
    let ops = vec![acked(1, "k", put("a", &[]), 0, 1)];
    let mut state = FinalState::new();
    for replica in ["n1", "n2", "n3"] {
        state.insert_copy("k", replica, digested(values(&["a"]), "d1"));
    }
    assert!(run(MergeRule::Siblings, ops.clone(), &state).is_ok());
    // Equal values, different causal metadata: anti-entropy would never rest.
    state.insert_copy("k", "n3", digested(values(&["a"]), "d2"));
    let verdict = run(MergeRule::Siblings, ops.clone(), &state);
    assert_eq!(verdict.violations.len(), 1, "{verdict}");
    assert!(
        verdict.violations[0].story[2].ends_with("(digest d2)"),
        "{verdict}"
    );
    // A fallback's copy need not converge.
    state.insert_copy(
        "k",
        "n3",
        FinalCopy {
            primary: false,
            ..digested(values(&["a"]), "d2")
        },
    );
    assert!(run(MergeRule::Siblings, ops.clone(), &state).is_ok());
    // No copy at all is not a tombstone.
    let mut deleted = ops.clone();
    deleted.push(acked(2, "k", del(&["a"]), 2, 3));
    let mut state = FinalState::new();
    state.insert_copy("k", "n1", digested(ApValue::Absent, "t"));
    let nothing = FinalCopy {
        value: None,
        ..FinalCopy::held(ApValue::Absent)
    };
    state.insert_copy("k", "n2", nothing.clone());
    assert_eq!(
        run(MergeRule::Siblings, deleted.clone(), &state).violations[0].message,
        "replicas differ after the heal: 2 distinct copies on 2 replicas"
    );
    // An acknowledged key that no primary holds at all.
    state.insert_copy("k", "n1", nothing);
    assert_eq!(
        run(MergeRule::Siblings, deleted, &state).violations[0].message,
        "acknowledged mutations, but no primary replica holds a copy of the key"
    );
}

#[test]
fn one_write_is_one_sibling_on_every_copy() {
    let ops = vec![acked(1, "k", put("a", &[]), 0, 1)];
    let mut state = everywhere("k", values(&["a"]));
    state.insert_copy(
        "k",
        "n4",
        FinalCopy {
            primary: false,
            duplicates: vec!["a".into()],
            ..FinalCopy::held(values(&["a"]))
        },
    );
    let verdict = run(MergeRule::Siblings, ops, &state);
    assert_eq!(verdict.violations.len(), 1, "{verdict}");
    assert_eq!(
        verdict.violations[0].message,
        "one write stored as two siblings: n4 holds \"a\" more than once"
    );
}

#[test]
fn reads_return_only_written_values_members_and_fields() {
    let read = |p, value| op(p, "k", Op::ApRead, 30, 40, Outcome::Ok(Ret::Ap(value)));
    let writes = vec![
        acked(1, "k", put("a", &[]), 0, 10),
        maybe(2, "k", put("b", &[]), 5),
        op(3, "k", put("c", &[]), 5, 6, Outcome::Fail),
    ];
    let with = |r| {
        let mut ops = writes.clone();
        ops.push(r);
        siblings_run(ops, values(&["a"]))
    };
    assert!(with(read(4, values(&["a", "b"]))).is_ok());
    assert_eq!(
        with(read(4, values(&["a", "c"]))).violations[0].message,
        "a read returned \"c\", never written (or only by refused operations)"
    );
    let adds = vec![acked(1, "s", Op::SetAdd("x".into()), 0, 10)];
    let set_read = |member: &str| {
        let mut ops = adds.clone();
        ops.push(op(
            2,
            "s",
            Op::ApRead,
            20,
            30,
            Outcome::Ok(Ret::Ap(members(&[member]))),
        ));
        run(MergeRule::Siblings, ops, &everywhere("s", members(&["x"])))
    };
    assert!(set_read("x").is_ok());
    assert!(set_read("y").is_violated());
    let incr = acked(
        1,
        "m",
        Op::MapIncr {
            field: "f".into(),
            n: 1,
        },
        0,
        10,
    );
    let map_read = |field: &str| {
        let fields = ApValue::Map([(field.to_string(), 1)].into());
        let ops = vec![
            incr.clone(),
            op(2, "m", Op::ApRead, 20, 30, Outcome::Ok(Ret::Ap(fields))),
        ];
        let held = ApValue::Map([("f".to_string(), 1)].into());
        run(MergeRule::Siblings, ops, &everywhere("m", held))
    };
    assert!(map_read("f").is_ok());
    assert!(map_read("g").is_violated());
}
