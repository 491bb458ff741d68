//! Property tests of the CP state machine over random command sequences: determinism,
//! snapshot transparency, revision accounting, stable MVCC reads and monotone fencing tokens.

use std::collections::BTreeMap;

use isle_cp::command::{
    CompactRequest, Compare, CompareResult, CompareTarget, DeleteRangeRequest, Fence, KeyValue,
    LeaseGrantRequest, LeaseRevokeRequest, LockAcquireRequest, LockReleaseRequest, Op, PutRequest,
    RangeRequest, TxnRequest,
};
use isle_cp::{Command, Config, CpError, Response, StateMachine};
use proptest::prelude::*;

const KEYS: [&[u8]; 5] = [b"a", b"b", b"c/x", b"l/1", b"l/2"];
const LOCK: &str = "l";

fn key() -> impl Strategy<Value = Vec<u8>> {
    prop::sample::select(KEYS.to_vec()).prop_map(|k| k.to_vec())
}

fn put() -> impl Strategy<Value = PutRequest> {
    let fence = prop::option::weighted(
        0.2,
        (0..14_i64).prop_map(|token| Fence {
            lock: LOCK.into(),
            token,
        }),
    );
    (
        key(),
        prop::collection::vec(any::<u8>(), 0..3),
        0..4_i64,
        any::<bool>(),
        fence,
    )
        .prop_map(|(key, value, lease, prev_kv, fence)| PutRequest {
            key,
            value,
            lease,
            prev_kv,
            fence,
            ..PutRequest::default()
        })
}

fn delete() -> impl Strategy<Value = DeleteRangeRequest> {
    (key(), any::<bool>(), any::<bool>()).prop_map(|(key, prefix, prev_kv)| {
        let base = if prefix {
            DeleteRangeRequest::prefix(&key[..1])
        } else {
            DeleteRangeRequest::key(&key)
        };
        DeleteRangeRequest { prev_kv, ..base }
    })
}

fn txn() -> impl Strategy<Value = TxnRequest> {
    let compare = (key(), 0..3_i64).prop_map(|(key, version)| {
        Compare::new(&key, CompareTarget::Version(version), CompareResult::Equal)
    });
    let op = prop_oneof![
        put().prop_map(Op::Put),
        delete().prop_map(Op::DeleteRange),
        key().prop_map(|k| Op::Range(RangeRequest::key(&k))),
    ];
    let ops = prop::collection::vec(op, 0..3);
    (prop::collection::vec(compare, 0..2), ops.clone(), ops).prop_map(
        |(compare, success, failure)| TxnRequest {
            compare,
            success,
            failure,
            fence: None,
        },
    )
}

fn command() -> impl Strategy<Value = Command> {
    let request = prop_oneof![
        4 => put().prop_map(Command::new),
        2 => delete().prop_map(Command::new),
        2 => txn().prop_map(Command::new),
        1 => (1..20_i64).prop_map(|revision| Command::new(CompactRequest { revision })),
        2 => (0..4_i64, 1..5_i64).prop_map(|(id, ttl_secs)| Command::new(LeaseGrantRequest { id, ttl_secs })),
        1 => (1..4_i64).prop_map(|id| Command::new(LeaseRevokeRequest { id })),
        2 => (1..4_i64).prop_map(|lease| Command::new(LockAcquireRequest { name: LOCK.into(), lease })),
        1 => (1..4_i64).prop_map(|lease| Command::new(LockReleaseRequest { key: format!("l/{lease:x}").into_bytes() })),
    ];
    let request_id = prop::option::weighted(0.3, 0..4_u8);
    (request, request_id).prop_map(|(command, id)| match id {
        Some(id) => command.with_request_id(format!("client:{id}")),
        None => command,
    })
}

/// Commands with the leader time advancing 0–400 ms per entry (the idempotency TTL is 1 s).
fn history() -> impl Strategy<Value = Vec<(Command, u64)>> {
    prop::collection::vec((command(), 0..400_u64), 1..60)
}

fn config() -> Config {
    Config {
        idempotency_ttl_ms: 1_000,
        idempotency_entries_max: 3,
    }
}

fn everything(revision: i64) -> RangeRequest {
    RangeRequest {
        revision,
        ..RangeRequest::prefix(b"")
    }
}

fn run(
    sm: &mut StateMachine,
    steps: &[(Command, u64)],
    first_index: u64,
    mut now: u64,
) -> Vec<Result<Response, CpError>> {
    let mut outcomes = Vec::new();
    for (offset, (command, delta)) in steps.iter().enumerate() {
        now += delta;
        outcomes.push(sm.apply(first_index + offset as u64, command.clone(), now));
    }
    outcomes
}

proptest! {
    #[test]
    fn replicas_agree_and_snapshots_are_transparent(steps in history(), cut in 0..60_usize) {
        let mut first = StateMachine::new(config());
        let mut second = StateMachine::new(config());
        let outcomes_first = run(&mut first, &steps, 1, 0);
        let outcomes_second = run(&mut second, &steps, 1, 0);
        prop_assert_eq!(&outcomes_first, &outcomes_second);
        prop_assert_eq!(first.digest(), second.digest());
        prop_assert_eq!(&first, &second);

        let cut = cut.min(steps.len());
        let mut before = StateMachine::new(config());
        let now: u64 = steps[..cut].iter().map(|(_, delta)| delta).sum();
        let mut outcomes = run(&mut before, &steps[..cut], 1, 0);
        let mut restored = StateMachine::restore(&before.snapshot()).expect("restore");
        prop_assert_eq!(&restored, &before);
        outcomes.extend(run(&mut restored, &steps[cut..], cut as u64 + 1, now));
        prop_assert_eq!(outcomes, outcomes_first);
        prop_assert_eq!(restored.snapshot(), first.snapshot());
    }

    #[test]
    fn revision_moves_by_one_exactly_on_writes(steps in history()) {
        let mut sm = StateMachine::new(config());
        let mut now = 0;
        for (index, (command, delta)) in steps.into_iter().enumerate() {
            now += delta;
            let before = sm.revision();
            let keys_before = sm.range(&everything(0)).expect("range").kvs;
            let is_put = matches!(command.request, isle_cp::Request::Put(_)) && command.request_id.is_none();
            let outcome = sm.apply(index as u64 + 1, command, now);
            let after = sm.revision();
            prop_assert!(after == before || after == before + 1, "{} -> {}", before, after);
            let wrote = !sm.events_since(before + 1, b"\0", b"\0", 0).expect("events").is_empty();
            prop_assert_eq!(after == before + 1, wrote);
            if outcome.is_err() {
                prop_assert_eq!(after, before);
                prop_assert_eq!(sm.range(&everything(0)).expect("range").kvs, keys_before);
            }
            if is_put && outcome.is_ok() {
                prop_assert_eq!(after, before + 1);
            }
            if let Ok(response) = &outcome {
                prop_assert!(response.header_revision() <= after);
            }
        }
    }

    #[test]
    fn reads_at_a_past_revision_never_change(steps in history()) {
        let mut sm = StateMachine::new(config());
        let mut seen: BTreeMap<i64, Vec<KeyValue>> = BTreeMap::new();
        let mut now = 0;
        for (index, (command, delta)) in steps.into_iter().enumerate() {
            now += delta;
            let revision = sm.revision();
            seen.entry(revision).or_insert_with(|| sm.range(&everything(revision)).expect("range").kvs);
            let _ = sm.apply(index as u64 + 1, command, now);
            for (revision, kvs) in &seen {
                match sm.range(&everything(*revision)) {
                    Ok(response) => prop_assert_eq!(&response.kvs, kvs, "at revision {}", revision),
                    Err(CpError::Compacted { compacted, .. }) => prop_assert!(*revision < compacted),
                    Err(other) => prop_assert!(false, "unexpected {:?}", other),
                }
            }
        }
    }

    #[test]
    fn fencing_tokens_never_go_back(steps in history(), cut in 0..60_usize) {
        let mut sm = StateMachine::new(config());
        let mut highest = 0;
        let mut now = 0;
        for (index, (command, delta)) in steps.into_iter().enumerate() {
            now += delta;
            let _ = sm.apply(index as u64 + 1, command, now);
            if index == cut {
                sm = StateMachine::restore(&sm.snapshot()).expect("restore");
            }
            let granted = sm.highest_granted(LOCK);
            prop_assert!(granted >= highest, "{} < {}", granted, highest);
            highest = granted;
            if let (Some(owner), true) = (sm.lock_owner(LOCK), granted > 0) {
                prop_assert_eq!(owner.token, granted, "the holder carries the newest token");
                prop_assert_eq!(sm.fence_check(LOCK, owner.token), Ok(()));
            }
        }
    }
}

#[test]
fn replaying_an_applied_index_is_refused_and_changes_nothing() {
    let mut sm = StateMachine::default();
    sm.apply(5, Command::new(PutRequest::new(b"k", b"v")), 0)
        .expect("put");
    let before = sm.clone();
    let cases = [5, 4, 0];
    for index in cases {
        let outcome = sm.apply(index, Command::new(PutRequest::new(b"k", b"w")), 0);
        assert_eq!(
            outcome,
            Err(CpError::StaleIndex {
                index,
                last_applied: 5
            })
        );
        assert_eq!(sm, before);
    }
    assert_eq!(sm.apply_blank(6), Ok(()));
    assert_eq!(sm.last_applied(), 6);
}
