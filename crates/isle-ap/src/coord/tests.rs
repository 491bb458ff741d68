//! The coordinator's decisions, driven by hand: no sockets, no clock.

use std::collections::BTreeSet;

use isle_crdt::Stamp;
use isle_types::NodeId;

use super::*;
use crate::ring::RingMember;
use crate::{Object, Op, ReadOptions, ReadReply, Rule, Value};

/// A placement of preference list `preferred` (id, zone) and spare nodes `spare`, seen from
/// `me` (in `my_zone`) with `reachable` answering.
fn placement(
    preferred: &[(u64, &str)],
    spare: &[u64],
    me: u64,
    my_zone: &str,
    reachable: &[u64],
) -> Placement {
    Placement {
        preferred: preferred
            .iter()
            .map(|&(id, zone)| (NodeId(id), zone.to_string()))
            .collect(),
        spare: spare.iter().copied().map(NodeId).collect(),
        reachable: reachable.iter().copied().chain([me]).map(NodeId).collect(),
        me: NodeId(me),
        my_zone: my_zone.to_string(),
    }
}

/// Nodes 1, 2, 3 in zone "a" hold the key; 4 and 5 come next on the ring.
fn three(me: u64, reachable: &[u64]) -> Placement {
    placement(&[(1, "a"), (2, "a"), (3, "a")], &[4, 5], me, "a", reachable)
}

fn ask(node: u64, hint_for: Option<u64>) -> Ask {
    Ask {
        node: NodeId(node),
        hint_for: hint_for.map(NodeId),
    }
}

fn read(level: Level, strict: bool) -> ReadOptions {
    ReadOptions { r: level, strict }
}

fn write(level: Level, strict: bool) -> WriteOptions {
    WriteOptions { w: level, strict }
}

fn down() -> ApError {
    ApError::Internal("disk on fire".into())
}

/// A counter incremented by `by` under actor `actor`.
fn counter(actor: u64, by: i64) -> Object {
    let op = Op::Incr {
        by,
        request_id: None,
    };
    let mut object = Object::empty_for(&op, Rule::Siblings);
    let stamp = Stamp {
        physical_ms: 1,
        logical: 0,
        node: NodeId(actor),
    };
    assert_eq!(object.apply(&op, NodeId(actor), stamp), Ok(true));
    object
}

fn merged(objects: &[&Object]) -> Object {
    let mut all = objects[0].clone();
    for object in &objects[1..] {
        all.merge(object);
    }
    all
}

fn replicas(answered: u32, asked: u32, needed: u32, level: &str, fallbacks: u32) -> Replicas {
    Replicas {
        answered,
        asked,
        needed,
        level: level.into(),
        fallbacks,
    }
}

fn unavailable(answered: u32, asked: u32, needed: u32, level: &str, detail: &str) -> ApError {
    ApError::Unavailable {
        answered,
        asked,
        needed,
        level: level.into(),
        detail: detail.into(),
    }
}

fn done_read(step: Step<ReadReply>) -> ReadReply {
    match step {
        Step::Done(reply) => reply,
        other => panic!("read not done: {other:?}"),
    }
}

#[test]
fn placement_from_a_ring_lists_primaries_then_spares() {
    let members: Vec<RingMember> = (1..=5)
        .map(|id| RingMember {
            id: NodeId(id),
            zone: if id % 2 == 0 { "even" } else { "odd" }.into(),
        })
        .collect();
    let ring = Ring::new(&members, 16, 4);
    let hash = crate::key_hash("default", b"k");
    let p = Placement::new(&ring, hash, 3, NodeId(2), BTreeSet::new());
    let partition = ring.partition_of(hash);
    let preferred: Vec<NodeId> = p.preferred.iter().map(|(n, _)| *n).collect();
    assert_eq!(preferred, ring.preference(partition, 3));
    assert_eq!(p.spare, ring.fallbacks(partition, 3));
    for (node, zone) in &p.preferred {
        assert_eq!(zone, ring.zone_of(*node));
    }
    assert_eq!(p.my_zone, "even");
    assert_eq!(
        p.reachable,
        BTreeSet::from([NodeId(2)]),
        "this node is reachable"
    );
}

#[test]
fn reads_ask_a_fallback_for_each_unreachable_primary_in_order() {
    // (reachable besides me, strict, asks, fallbacks)
    type Case = (&'static [u64], bool, Vec<Ask>, u32);
    let table: [Case; 5] = [
        (
            &[2, 3],
            false,
            vec![ask(1, None), ask(2, None), ask(3, None)],
            0,
        ),
        (
            &[3, 4, 5],
            false,
            vec![ask(1, None), ask(4, Some(2)), ask(3, None)],
            1,
        ),
        // Two primaries down, one spare up: the second goes without a stand-in.
        (&[5], false, vec![ask(1, None), ask(5, Some(2))], 1),
        // Strict: no fallbacks, ever.
        (&[3, 4, 5], true, vec![ask(1, None), ask(3, None)], 0),
        (&[], true, vec![ask(1, None)], 0),
    ];
    for (reachable, strict, asks, fallbacks) in table {
        let round = ReadRound::new(&three(1, reachable), &read(Level::One, strict), Rule::Lww)
            .expect("level applies");
        assert_eq!(round.asks(), asks, "{reachable:?} strict={strict}");
        assert_eq!(round.count.fallbacks, fallbacks);
    }
}

#[test]
fn a_read_coordinator_off_the_list_may_read_its_own_hint() {
    let round = ReadRound::new(&three(4, &[1, 3]), &read(Level::Quorum, false), Rule::Lww)
        .expect("level applies");
    assert_eq!(round.asks(), [ask(1, None), ask(4, Some(2)), ask(3, None)]);
}

#[test]
fn a_strict_read_without_enough_primaries_fails_before_any_answer() {
    let round = ReadRound::new(&three(1, &[4, 5]), &read(Level::Quorum, true), Rule::Lww)
        .expect("level applies");
    assert_eq!(round.asks(), [ask(1, None)]);
    assert_eq!(
        round.step(),
        Step::Failed(unavailable(0, 3, 2, "quorum", "1 of 3 replicas reachable"))
    );
}

#[test]
fn r_is_met_with_the_merge_of_the_copies_that_answered() {
    let (a, b) = (counter(1, 1), counter(3, 2));
    let mut round = ReadRound::new(&three(1, &[2, 3]), &read(Level::Quorum, false), Rule::Lww)
        .expect("level applies");
    assert_eq!(round.step(), Step::Pending);
    assert_eq!(round.answer(NodeId(3), Ok(Some(b.clone()))), Step::Pending);
    let reply = done_read(round.answer(NodeId(1), Ok(Some(a.clone()))));
    assert_eq!(reply.value, Value::Counter(3));
    assert_eq!(reply.context, merged(&[&a, &b]).context());
    assert_eq!(reply.rule, Rule::Lww);
    assert_eq!(reply.replicas, replicas(2, 3, 2, "quorum", 0));
}

#[test]
fn a_read_of_a_missing_key_is_absent_once_r_answered() {
    let mut round = ReadRound::new(&three(1, &[2, 3]), &read(Level::One, false), Rule::Siblings)
        .expect("level applies");
    let reply = done_read(round.answer(NodeId(2), Ok(None)));
    assert_eq!(reply.value, Value::Absent);
    assert_eq!(reply.stamp, None);
    assert_eq!(reply.replicas, replicas(1, 3, 1, "one", 0));
    assert_eq!(round.into_repair().finish(), None, "nothing to repair with");
}

#[test]
fn a_read_fails_once_r_is_impossible_with_the_last_error() {
    let mut round = ReadRound::new(&three(1, &[2, 3]), &read(Level::All, false), Rule::Lww)
        .expect("level applies");
    assert_eq!(round.answer(NodeId(1), Ok(None)), Step::Pending);
    let step = round.answer(NodeId(2), Err(down()));
    assert_eq!(
        step,
        Step::Failed(unavailable(
            1,
            3,
            3,
            "all",
            "node 2: internal error: disk on fire"
        ))
    );
}

#[test]
fn a_read_past_its_deadline_fails_with_what_answered() {
    let mut round = ReadRound::new(&three(1, &[2]), &read(Level::Quorum, false), Rule::Lww)
        .expect("level applies");
    assert_eq!(
        round.asks(),
        [ask(1, None), ask(2, None)],
        "no spare reachable"
    );
    assert_eq!(round.answer(NodeId(2), Ok(None)), Step::Pending);
    assert_eq!(
        round.deadline(),
        Step::Failed(unavailable(1, 3, 2, "quorum", "2 of 3 replicas reachable"))
    );
}

#[test]
fn read_repair_sends_the_merge_to_primaries_that_differ_stragglers_included() {
    let (a, b) = (counter(1, 1), counter(2, 2));
    let both = merged(&[&a, &b]);
    // 1 and 2 are primaries; 4 stands in for 3 (down).
    let mut round = ReadRound::new(&three(1, &[2, 4]), &read(Level::Quorum, false), Rule::Lww)
        .expect("level applies");
    assert_eq!(
        round.answer(NodeId(1), Ok(Some(both.clone()))),
        Step::Pending
    );
    let reply = done_read(round.answer(NodeId(4), Ok(Some(a.clone()))));
    assert_eq!(reply.value, Value::Counter(3));
    let mut repair = round.into_repair();
    // The straggler holds an older copy: it is repaired even though the client has its answer.
    repair.answer(NodeId(2), Ok(Some(b)));
    let (object, targets) = repair.finish().expect("a merged copy");
    assert_eq!(object.digest(), both.digest());
    assert_eq!(
        targets,
        [NodeId(2)],
        "not 1 (up to date), not 4 (a fallback's hint)"
    );
}

#[test]
fn read_repair_covers_primaries_without_a_copy_and_skips_failures() {
    let a = counter(1, 1);
    let mut round = ReadRound::new(&three(1, &[2, 3]), &read(Level::One, false), Rule::Lww)
        .expect("level applies");
    done_read(round.answer(NodeId(2), Ok(None)));
    let mut repair = round.into_repair();
    repair.answer(NodeId(3), Err(down()));
    repair.answer(NodeId(1), Ok(Some(a.clone())));
    let (object, targets) = repair.finish().expect("a merged copy");
    assert_eq!(object, a);
    assert_eq!(targets, [NodeId(2)], "3 failed: nothing known to repair");
}

#[test]
fn repair_targets_are_primaries_whose_digest_differs() {
    let held = |node: u64, primary: bool, digest: Option<u128>| Held {
        node: NodeId(node),
        primary,
        digest,
    };
    let answers = [
        held(1, true, Some(7)),
        held(2, true, Some(6)),
        held(3, true, None),
        held(4, false, Some(6)),
        held(5, false, None),
    ];
    assert_eq!(repair_targets(&answers, 7), [NodeId(2), NodeId(3)]);
    assert_eq!(repair_targets(&answers, 6), [NodeId(1), NodeId(3)]);
    assert_eq!(repair_targets(&[], 6), []);
}

#[test]
fn writes_route_here_forward_once_or_refuse() {
    let ok = |p: &Placement, strict| route_write(p, &write(Level::Quorum, strict));
    // A primary coordinates, reachable peers or not.
    assert_eq!(ok(&three(2, &[]), true), Ok(Route::Here));
    // A non-primary forwards to the first reachable primary, and only to it.
    assert_eq!(
        ok(&three(4, &[1, 2, 3]), false),
        Ok(Route::Forward(NodeId(1)))
    );
    assert_eq!(ok(&three(4, &[3, 2]), true), Ok(Route::Forward(NodeId(2))));
    // No primary reachable: a fallback coordinates, unless strict.
    assert_eq!(ok(&three(4, &[5]), false), Ok(Route::Here));
    assert_eq!(
        ok(&three(4, &[5]), true),
        Err(unavailable(
            0,
            3,
            2,
            "quorum",
            "no primary replica reachable from this node (strict)"
        ))
    );
    // A level that cannot apply says so rather than "unavailable".
    assert!(matches!(
        route_write(&three(4, &[]), &write(Level::Count(4), true)),
        Err(ApError::Level(_))
    ));
}

#[test]
fn a_failed_forward_is_indeterminate() {
    let err = forward_failed(NodeId(3), &Level::All, &down());
    assert_eq!(
        err,
        unavailable(
            0,
            1,
            1,
            "all",
            "forwarded to primary 3, which did not answer (internal error: disk on fire); it may have applied the write"
        )
    );
    assert_eq!(err.kind(), isle_types::ErrorKind::Unknown);
}

#[test]
fn a_primary_coordinator_sends_to_the_other_replicas_or_their_fallbacks() {
    // (me, reachable besides me, strict, sends, fallbacks)
    type Case = (u64, &'static [u64], bool, Vec<Ask>, u32);
    let table: [Case; 4] = [
        (1, &[2, 3], false, vec![ask(2, None), ask(3, None)], 0),
        (2, &[3, 4, 5], false, vec![ask(4, Some(1)), ask(3, None)], 1),
        // No spare reachable: 2 goes without a stand-in.
        (1, &[3], false, vec![ask(3, None)], 0),
        (1, &[3, 4, 5], true, vec![ask(3, None)], 0),
    ];
    for (me, reachable, strict, sends, fallbacks) in table {
        let p = three(me, reachable);
        let round = WriteRound::new(&p, &write(Level::One, strict)).expect("level applies");
        assert_eq!(round.own(), ask(me, None), "a primary keeps its data");
        assert_eq!(round.sends(), sends, "me={me} {reachable:?}");
        assert_eq!(round.count.fallbacks, fallbacks);
    }
}

#[test]
fn a_fallback_coordinator_keeps_a_hint_for_the_first_primary() {
    let p = three(4, &[5]);
    let mut round = WriteRound::new(&p, &write(Level::Quorum, false)).expect("level applies");
    assert_eq!(round.own(), ask(4, Some(1)));
    // 2 gets a fallback (5); 3 none: the only spare is taken.
    assert_eq!(
        round.sends(),
        [ask(5, Some(2))],
        "never itself as a fallback"
    );
    assert_eq!(round.answer(NodeId(5), Ok(())), Step::Pending);
    assert_eq!(
        round.answer(NodeId(4), Ok(())),
        Step::Done(replicas(2, 3, 2, "quorum", 2))
    );
}

#[test]
fn w_is_met_impossible_or_late() {
    let p = three(1, &[2, 3]);
    let options = write(Level::Quorum, false);
    // Met: this node's durable copy and one more.
    let mut round = WriteRound::new(&p, &options).expect("level applies");
    assert_eq!(round.answer(NodeId(3), Ok(())), Step::Pending);
    assert_eq!(
        round.answer(NodeId(1), Ok(())),
        Step::Done(replicas(2, 3, 2, "quorum", 0))
    );
    // Impossible: two of three failed; the refusal names the last error.
    let mut round = WriteRound::new(&p, &options).expect("level applies");
    assert_eq!(round.answer(NodeId(2), Err(down())), Step::Pending);
    assert_eq!(round.answer(NodeId(1), Ok(())), Step::Pending);
    assert_eq!(
        round.answer(NodeId(3), Err(down())),
        Step::Failed(unavailable(
            1,
            3,
            2,
            "quorum",
            "node 3: internal error: disk on fire"
        ))
    );
    // Late: the deadline passes with one acknowledgement.
    let mut round = WriteRound::new(&p, &options).expect("level applies");
    assert_eq!(round.answer(NodeId(2), Ok(())), Step::Pending);
    assert_eq!(
        round.deadline(),
        Step::Failed(unavailable(
            1,
            3,
            2,
            "quorum",
            "replicas unreachable or too slow"
        ))
    );
    // The deadline after W was met changes nothing.
    let mut round = WriteRound::new(&p, &write(Level::One, false)).expect("level applies");
    let done = round.answer(NodeId(2), Ok(()));
    assert_eq!(done, Step::Done(replicas(1, 3, 1, "one", 0)));
    assert_eq!(round.deadline(), done);
}

#[test]
fn unreachable_primaries_without_a_stand_in_count_as_failed_from_the_start() {
    // Strict, 2 and 3 down: ALL is impossible before anything is sent.
    let round = WriteRound::new(&three(1, &[4, 5]), &write(Level::All, true)).expect("applies");
    assert_eq!(round.sends(), []);
    assert_eq!(
        round.step(),
        Step::Failed(unavailable(
            0,
            3,
            3,
            "all",
            "replicas unreachable or too slow"
        ))
    );
}

#[test]
fn a_strict_write_counts_no_hint_not_even_the_coordinators() {
    // A forwarded write reached node 4, which is no primary in its own view of the ring.
    let p = three(4, &[2, 3]);
    let mut round = WriteRound::new(&p, &write(Level::Quorum, true)).expect("level applies");
    assert_eq!(round.own(), ask(4, Some(1)));
    assert_eq!(round.sends(), [ask(2, None), ask(3, None)]);
    assert_eq!(round.answer(NodeId(4), Ok(())), Step::Pending);
    assert_eq!(round.answer(NodeId(2), Ok(())), Step::Pending);
    assert_eq!(
        round.answer(NodeId(3), Ok(())),
        Step::Done(replicas(2, 3, 2, "quorum", 1))
    );
}

#[test]
fn zone_levels_count_a_fallback_for_its_primarys_zone() {
    // 1, 2 in zone a, 3 in zone b; 3 is down and 4 (zone c) stands in for it.
    let zoned = |me, my_zone, reachable: &[u64]| {
        placement(
            &[(1, "a"), (2, "a"), (3, "b")],
            &[4],
            me,
            my_zone,
            reachable,
        )
    };
    let p = zoned(1, "a", &[2, 4]);
    let mut round =
        ReadRound::new(&p, &read(Level::EachQuorum, false), Rule::Lww).expect("level applies");
    assert_eq!(round.answer(NodeId(1), Ok(None)), Step::Pending);
    assert_eq!(
        round.answer(NodeId(2), Ok(None)),
        Step::Pending,
        "zone b not heard yet"
    );
    let reply = done_read(round.answer(NodeId(4), Ok(None)));
    assert_eq!(reply.replicas, replicas(3, 3, 3, "each_quorum", 1));
    // Strict: zone b has no primary to hear from.
    let round = ReadRound::new(&p, &read(Level::EachQuorum, true), Rule::Lww).expect("applies");
    assert!(matches!(round.step(), Step::Failed(_)));
    // LOCAL_QUORUM from zone b: the stand-in alone is zone b's quorum.
    let mut round = ReadRound::new(
        &zoned(4, "b", &[1, 2]),
        &read(Level::LocalQuorum, false),
        Rule::Lww,
    )
    .expect("level applies");
    assert_eq!(round.asks(), [ask(1, None), ask(2, None), ask(4, Some(3))]);
    let reply = done_read(round.answer(NodeId(4), Ok(None)));
    assert_eq!(reply.replicas, replicas(1, 3, 1, "local_quorum", 1));
    // LOCAL_QUORUM from a zone holding no replica cannot apply.
    let err = ReadRound::new(
        &zoned(4, "c", &[1]),
        &read(Level::LocalQuorum, false),
        Rule::Lww,
    );
    assert!(matches!(err, Err(ApError::Level(_))));
    // A fallback coordinator counts for the zone of the primary it stands in for: 1 is down,
    // so node 4 (zone c) keeps a hint for it and counts for zone a.
    let p = zoned(4, "c", &[2, 3]);
    let mut round = WriteRound::new(&p, &write(Level::EachQuorum, false)).expect("applies");
    assert_eq!(round.own(), ask(4, Some(1)));
    assert_eq!(round.answer(NodeId(3), Ok(())), Step::Pending);
    assert_eq!(
        round.answer(NodeId(2), Ok(())),
        Step::Pending,
        "zone a: 1 of 2"
    );
    assert_eq!(
        round.answer(NodeId(4), Ok(())),
        Step::Done(replicas(3, 3, 3, "each_quorum", 1))
    );
}
