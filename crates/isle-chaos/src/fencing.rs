//! Fencing safety: lock tokens only grow, and no write is accepted from a holder whose token was
//! already superseded.
//!
//! Per lock, from the history's `Acquire` operations (that returned a token) and `FencedWrite`s:
//! - **Tokens are unique**: no token is granted twice (retries sharing a request id are one
//!   acquisition).
//! - **Tokens grow in real time**: if an acquisition returned before another was invoked, the
//!   later one holds the larger token.
//! - **No stale write is accepted**: a fenced write accepted with token `t` must not have been
//!   invoked after a larger token was known to exist — an acquisition returning it, or an
//!   accepted fenced write presenting it, completed before the write was invoked.
//!
//! Only what real time proves is flagged: a write that overlaps the acquisition of a newer token
//! may legitimately be accepted (it can take effect before the hand-over). Refused and
//! indeterminate writes prove nothing and are skipped; a refusal of a current holder's write is
//! a matter of availability, not safety.

use std::collections::BTreeMap;

use crate::history::{History, Op, Operation, Outcome, Ret};
use crate::verdict::Verdict;

/// An acquisition that returned a token.
struct Grant<'a> {
    id: usize,
    op: &'a Operation,
    token: i64,
}

/// Checks fencing safety for every lock in the history.
pub fn check(history: &History) -> Verdict {
    let mut verdict = Verdict::new("fencing");
    let mut grants: BTreeMap<&str, Vec<Grant>> = BTreeMap::new();
    let mut writes: BTreeMap<&str, Vec<(usize, i64)>> = BTreeMap::new();
    let mut counted_requests: BTreeMap<(&str, &str), i64> = BTreeMap::new();
    for (id, op) in history.ops.iter().enumerate() {
        match (&op.op, &op.outcome) {
            (Op::Acquire { lock }, Outcome::Ok(Ret::Token(token))) => {
                // Retries of one request return one token: count it once.
                if let Some(request) = op.request_id.as_deref() {
                    if counted_requests.get(&(lock.as_str(), request)) == Some(token) {
                        continue;
                    }
                    counted_requests.insert((lock.as_str(), request), *token);
                }
                grants.entry(lock).or_default().push(Grant {
                    id,
                    op,
                    token: *token,
                });
            }
            (Op::FencedWrite { lock, token, .. }, Outcome::Ok(_)) => {
                writes.entry(lock).or_default().push((id, *token));
            }
            _ => {}
        }
    }
    let locks: std::collections::BTreeSet<&str> =
        grants.keys().chain(writes.keys()).copied().collect();
    let mut checked = (0, 0);
    for lock in &locks {
        let mut grants = grants.remove(lock).unwrap_or_default();
        let writes = writes.remove(lock).unwrap_or_default();
        checked.0 += grants.len();
        checked.1 += writes.len();
        grants.sort_by_key(|grant| (grant.token, grant.id));
        unique_tokens(&mut verdict, lock, &grants);
        growing_tokens(&mut verdict, lock, &grants);
        no_stale_writes(&mut verdict, history, lock, &grants, &writes);
    }
    verdict.note(format!(
        "{} locks, {} tokens granted, {} fenced writes accepted",
        locks.len(),
        checked.0,
        checked.1
    ));
    verdict
}

fn unique_tokens(verdict: &mut Verdict, lock: &str, grants: &[Grant]) {
    for pair in grants.windows(2) {
        if pair[0].token == pair[1].token {
            verdict.violation(
                Some(lock),
                format!(
                    "token {} granted twice: #{} and #{}",
                    pair[0].token, pair[0].id, pair[1].id
                ),
                vec![
                    format!("#{} {}", pair[0].id, pair[0].op),
                    format!("#{} {}", pair[1].id, pair[1].op),
                ],
            );
        }
    }
}

fn growing_tokens(verdict: &mut Verdict, lock: &str, grants: &[Grant]) {
    // Walking from the largest token down, remember the earliest-completed acquisition so far:
    // if it completed before this (smaller) one was invoked, tokens went backwards.
    let mut earliest: Option<&Grant> = None;
    for grant in grants.iter().rev() {
        if let Some(newer) = earliest
            && newer.token > grant.token
            && newer.op.complete < grant.op.invoke
        {
            verdict.violation(
                Some(lock),
                format!(
                    "token went backwards: #{} got {} after #{} had got {}",
                    grant.id, grant.token, newer.id, newer.token
                ),
                vec![
                    format!("#{} {}", newer.id, newer.op),
                    format!(
                        "#{} {} — invoked at {}, after #{} returned at {}",
                        grant.id, grant.op, grant.op.invoke, newer.id, newer.op.complete
                    ),
                ],
            );
        }
        if earliest.is_none_or(|e| grant.op.complete < e.op.complete) {
            earliest = Some(grant);
        }
    }
}

fn no_stale_writes(
    verdict: &mut Verdict,
    history: &History,
    lock: &str,
    grants: &[Grant],
    writes: &[(usize, i64)],
) {
    // Evidence that a token exists, by token: (when it was first known, by which operation).
    let mut known: Vec<(i64, u64, usize)> = grants
        .iter()
        .map(|grant| (grant.token, grant.op.complete, grant.id))
        .chain(
            writes
                .iter()
                .map(|&(id, token)| (token, history.ops[id].complete, id)),
        )
        .collect();
    known.sort_unstable();
    // suffix[i]: the earliest-known evidence among tokens known[i..].
    let mut suffix: Vec<(u64, usize, i64)> = vec![(u64::MAX, 0, 0); known.len() + 1];
    for index in (0..known.len()).rev() {
        let (token, at, id) = known[index];
        suffix[index] = suffix[index + 1].min((at, id, token));
    }
    for &(id, token) in writes {
        let write = &history.ops[id];
        let first_larger = known.partition_point(|&(t, _, _)| t <= token);
        let (at, witness, newer) = suffix[first_larger];
        if at < write.invoke {
            let how = match &history.ops[witness].op {
                Op::Acquire { .. } => "granted",
                _ => "used by an accepted write",
            };
            verdict.violation(
                Some(lock),
                format!(
                    "stale fenced write accepted: #{id} presented token {token} after token \
                     {newer} was {how} (#{witness})"
                ),
                vec![
                    format!("#{witness} {} — done at {at}", history.ops[witness]),
                    format!(
                        "#{id} {} — invoked at {}, so its holder had been superseded",
                        write, write.invoke
                    ),
                ],
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acquire(p: u64, token: i64, invoke: u64, complete: u64) -> Operation {
        Operation::new(
            p,
            "l",
            Op::Acquire { lock: "l".into() },
            invoke,
            complete,
            Outcome::Ok(Ret::Token(token)),
        )
    }

    fn write(p: u64, token: i64, invoke: u64, complete: u64, outcome: Outcome) -> Operation {
        Operation::new(
            p,
            "data",
            Op::FencedWrite {
                lock: "l".into(),
                token,
                value: format!("{p}-{token}"),
            },
            invoke,
            complete,
            outcome,
        )
    }

    fn accepted(p: u64, token: i64, invoke: u64, complete: u64) -> Operation {
        write(p, token, invoke, complete, Outcome::Ok(Ret::Ack))
    }

    fn verdict(ops: Vec<Operation>) -> Verdict {
        let verdict = check(&ops.into_iter().collect());
        println!("{verdict}");
        verdict
    }

    #[test]
    fn hand_overs_with_refused_stale_writes_are_safe() {
        let verdict = verdict(vec![
            acquire(1, 3, 0, 10),
            accepted(1, 3, 11, 20),
            acquire(2, 8, 30, 40),
            // The zombie holder's write is refused after the hand-over.
            write(1, 3, 50, 60, Outcome::Fail),
            write(1, 3, 51, 61, Outcome::Indeterminate),
            accepted(2, 8, 55, 65),
            acquire(3, 12, 70, 80),
        ]);
        assert!(verdict.is_ok(), "{verdict}");
        assert_eq!(
            verdict.notes,
            vec!["1 locks, 3 tokens granted, 2 fenced writes accepted"]
        );
    }

    #[test]
    fn a_write_overlapping_the_hand_over_may_be_accepted() {
        assert!(
            verdict(vec![
                acquire(1, 3, 0, 10),
                acquire(2, 8, 30, 40),
                accepted(1, 3, 35, 45)
            ])
            .is_ok()
        );
    }

    #[test]
    fn stale_write_accepted_after_a_newer_grant_is_caught() {
        let verdict = verdict(vec![
            acquire(1, 3, 0, 10),
            acquire(2, 8, 30, 40),
            accepted(1, 3, 50, 60),
        ]);
        assert!(verdict.is_violated());
        assert_eq!(
            verdict.violations[0].message,
            "stale fenced write accepted: #2 presented token 3 after token 8 was granted (#1)"
        );
    }

    #[test]
    fn stale_write_accepted_after_a_newer_accepted_write_is_caught() {
        // The grant of token 8 was never seen (its acquisition timed out), but a write with it
        // was accepted first.
        let verdict = verdict(vec![
            acquire(1, 3, 0, 10),
            accepted(2, 8, 30, 40),
            accepted(1, 3, 50, 60),
        ]);
        assert!(verdict.is_violated());
        assert!(
            verdict.violations[0]
                .message
                .contains("after token 8 was used by an accepted write (#1)")
        );
    }

    #[test]
    fn reused_and_backward_tokens_are_caught() {
        let reused = verdict(vec![acquire(1, 3, 0, 10), acquire(2, 3, 20, 30)]);
        assert!(reused.is_violated());
        assert_eq!(
            reused.violations[0].message,
            "token 3 granted twice: #0 and #1"
        );
        let backwards = verdict(vec![acquire(1, 9, 0, 10), acquire(2, 4, 20, 30)]);
        assert_eq!(
            backwards.violations[0].message,
            "token went backwards: #1 got 4 after #0 had got 9"
        );
        // Concurrent acquisitions may be granted in either order.
        assert!(verdict(vec![acquire(1, 9, 0, 30), acquire(2, 4, 20, 40)]).is_ok());
    }

    #[test]
    fn retried_acquisition_counts_once() {
        let first = acquire(1, 3, 0, 10).with_request_id("r");
        let retry = acquire(1, 3, 11, 12).with_request_id("r");
        assert!(verdict(vec![first, retry]).is_ok());
    }
}
