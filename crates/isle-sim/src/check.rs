//! The end-of-run AP checks, on a [`History`] with its final copies (read from every replica's
//! own store after the heal, the convergence wait and the quiet period):
//!
//! - **convergence**: every primary replica of a key holds the same copy;
//! - **`siblings` values** (`v*`): nothing is there that was never written; every
//!   acknowledged write is there unless a delete covered it; nothing an acknowledged delete
//!   covered is there (*deleted stays deleted*);
//! - **`lww` values** (`l*`): one value, one that was written, and when it was acknowledged
//!   its stamp is the greatest of every acknowledged write's;
//! - **counters** (`c*`) and **map fields** (`m*`): the value lies between the sum of the
//!   acknowledged increments and the sum of those that may have applied (equal once every
//!   increment was retried to an acknowledgement, as the engine does after the heal);
//! - **sets** (`s*`): every acknowledged add is there unless some remove of that member may
//!   have applied, and nothing is there that was never added;
//! - **reads** of `siblings` values returned only written values;
//! - **one write, one sibling**: no copy holds a value twice among its siblings (every value
//!   is written by one client request, so two siblings of it mean the request was applied as
//!   two writes, and a delete that covered one of them leaves the other).

use std::collections::{BTreeMap, BTreeSet};

use crate::history::{ApOp, ApValue, FinalCopy, History, Operation, Outcome, Ret, Stamp};
use crate::workload::LWW;

/// A broken promise, on one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// `bucket/key`.
    pub key: String,
    /// The promise.
    pub rule: &'static str,
    /// What was found.
    pub message: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} [{}]: {}", self.key, self.rule, self.message)
    }
}

/// Checks every key of `history`; an empty list means every promise held.
pub fn check(history: &History) -> Vec<Violation> {
    let mut by_key: BTreeMap<String, Vec<&Operation>> = BTreeMap::new();
    for op in &history.ops {
        by_key
            .entry(format!("{}/{}", op.bucket, op.key))
            .or_default()
            .push(op);
    }
    let mut violations = Vec::new();
    for (key, copies) in &history.finals {
        let ops = by_key.get(key).map(Vec::as_slice).unwrap_or(&[]);
        let mut found = |rule: &'static str, message: String| {
            violations.push(Violation {
                key: key.clone(),
                rule,
                message,
            });
        };
        for copy in copies.iter().filter(|c| !c.duplicates.is_empty()) {
            found(
                "one write, one sibling",
                format!(
                    "n{} holds {} as two siblings: one request applied twice",
                    copy.node,
                    copy.duplicates.join(", ")
                ),
            );
        }
        let Some(value) = converged(copies, ops, &mut found) else {
            continue;
        };
        let name = key.rsplit('/').next().unwrap_or("");
        match name.chars().next() {
            Some('v') => siblings(&value, ops, &mut found),
            Some('l') if key.starts_with(LWW) => lww(&value, ops, &mut found),
            Some('c') => counter(&value, ops, &mut found),
            Some('s') => set(&value, ops, &mut found),
            Some('m') => map(&value, ops, &mut found),
            _ => {}
        }
    }
    violations
}

/// The key's converged value, or `None` after reporting replicas that differ.
fn converged(
    copies: &[FinalCopy],
    ops: &[&Operation],
    found: &mut impl FnMut(&'static str, String),
) -> Option<ApValue> {
    let primaries: Vec<&FinalCopy> = copies.iter().filter(|c| c.primary).collect();
    let digests: BTreeSet<Option<&String>> = primaries
        .iter()
        .map(|c| c.copy.as_ref().map(|(_, d)| d))
        .collect();
    if digests.len() > 1 {
        let shown: Vec<String> = primaries
            .iter()
            .map(|c| match &c.copy {
                Some((value, digest)) => format!("n{}: {value:?} ({})", c.node, &digest[..8]),
                None => format!("n{}: no copy", c.node),
            })
            .collect();
        found(
            "convergence",
            format!("replicas differ: {}", shown.join("; ")),
        );
        return None;
    }
    let acked_mutation = ops
        .iter()
        .any(|op| op.op.is_mutation() && op.outcome.is_ok());
    let value = primaries
        .first()
        .and_then(|c| c.copy.as_ref())
        .map(|(v, _)| v.clone());
    if acked_mutation && value.is_none() {
        found(
            "durability",
            "an acknowledged mutation, but no replica holds a copy".into(),
        );
    }
    Some(value.unwrap_or(ApValue::Absent))
}

fn join(items: &BTreeSet<String>) -> String {
    items.iter().cloned().collect::<Vec<_>>().join(", ")
}

fn siblings(value: &ApValue, ops: &[&Operation], found: &mut impl FnMut(&'static str, String)) {
    let mut written = BTreeSet::new();
    let mut acked = BTreeSet::new();
    let mut deleted = BTreeSet::new();
    let mut maybe_deleted = BTreeSet::new();
    for op in ops {
        match (&op.op, &op.outcome) {
            (ApOp::Write { value }, outcome) if outcome.may_have_applied() => {
                written.insert(value.clone());
                if outcome.is_ok() {
                    acked.insert(value.clone());
                }
            }
            (
                ApOp::Delete {
                    covers_unknown: true,
                    ..
                },
                Outcome::Indeterminate,
            ) => {
                // Its read answered before the client was cut off: it may cover any value
                // whose write began before then.
                maybe_deleted.extend(ops.iter().filter_map(|w| match &w.op {
                    ApOp::Write { value } if w.invoke_ns <= op.complete_ns => Some(value.clone()),
                    _ => None,
                }));
            }
            (ApOp::Delete { covers, .. }, Outcome::Ok(_)) => deleted.extend(covers.iter().cloned()),
            (ApOp::Delete { covers, .. }, Outcome::Indeterminate) => {
                maybe_deleted.extend(covers.iter().cloned())
            }
            (ApOp::Read, Outcome::Ok(Ret::Read(read))) => {
                let phantom: BTreeSet<String> = read
                    .values()
                    .difference(&written_any(ops))
                    .cloned()
                    .collect();
                if !phantom.is_empty() {
                    found(
                        "no phantom read",
                        format!("a read returned never-written {}", join(&phantom)),
                    );
                }
            }
            _ => {}
        }
    }
    let held = value.values();
    let phantom: BTreeSet<String> = held.difference(&written).cloned().collect();
    if !phantom.is_empty() {
        found(
            "no phantom value",
            format!("holds never-written {}", join(&phantom)),
        );
    }
    let resurrected: BTreeSet<String> = held.intersection(&deleted).cloned().collect();
    if !resurrected.is_empty() {
        found(
            "deleted stays deleted",
            format!("holds deleted {}", join(&resurrected)),
        );
    }
    let lost: BTreeSet<String> = acked
        .iter()
        .filter(|v| !deleted.contains(*v) && !maybe_deleted.contains(*v) && !held.contains(*v))
        .cloned()
        .collect();
    if !lost.is_empty() {
        found(
            "no lost write",
            format!("acknowledged {} missing from {value:?}", join(&lost)),
        );
    }
}

/// Every value any write tried, whatever its outcome.
fn written_any(ops: &[&Operation]) -> BTreeSet<String> {
    ops.iter()
        .filter_map(|op| match &op.op {
            ApOp::Write { value } if op.outcome.may_have_applied() => Some(value.clone()),
            _ => None,
        })
        .collect()
}

fn lww(value: &ApValue, ops: &[&Operation], found: &mut impl FnMut(&'static str, String)) {
    let written = written_any(ops);
    let stamps: BTreeMap<&String, Stamp> = ops
        .iter()
        .filter_map(|op| match (&op.op, &op.outcome) {
            (ApOp::Write { value }, Outcome::Ok(Ret::Stamp(stamp))) => Some((value, *stamp)),
            _ => None,
        })
        .collect();
    let held = value.values();
    if held.len() > 1 {
        found(
            "lww keeps one",
            format!("holds {} values: {}", held.len(), join(&held)),
        );
        return;
    }
    let Some(winner) = held.iter().next() else {
        if !stamps.is_empty() {
            found(
                "lww keeps one",
                "acknowledged writes, but the key is empty".into(),
            );
        }
        return;
    };
    if !written.contains(winner) {
        found("no phantom value", format!("holds never-written {winner}"));
    }
    if let (Some(won), Some((latest, stamp))) =
        (stamps.get(winner), stamps.iter().max_by_key(|(_, s)| **s))
        && stamp > won
    {
        found(
            "lww keeps the latest",
            format!("kept {winner} at {won:?} over acknowledged {latest} at {stamp:?}"),
        );
    }
}

/// `(acknowledged sum, may-have-applied sum)` of increments by request id, per field (`""`
/// for a counter).
fn increments(ops: &[&Operation]) -> BTreeMap<String, (i64, i64)> {
    let mut by_id: BTreeMap<&str, (String, i64, bool, bool)> = BTreeMap::new();
    for op in ops {
        let (field, by) = match &op.op {
            ApOp::Incr { by } => (String::new(), *by),
            ApOp::MapIncr { field, by } => (field.clone(), *by),
            _ => continue,
        };
        let id = op.request_id.as_deref().unwrap_or("");
        let entry = by_id.entry(id).or_insert((field, by, false, false));
        entry.2 |= op.outcome.is_ok();
        entry.3 |= op.outcome.may_have_applied();
    }
    let mut sums: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for (field, by, acked, maybe) in by_id.into_values() {
        let sum = sums.entry(field).or_default();
        if acked {
            sum.0 += by;
        }
        if maybe {
            sum.1 += by;
        }
    }
    sums
}

fn check_sum(
    what: &str,
    held: i64,
    (acked, maybe): (i64, i64),
    found: &mut impl FnMut(&'static str, String),
) {
    if held < acked || held > maybe {
        found(
            "counter equals its increments",
            format!(
                "{what} is {held}, acknowledged increments sum to {acked}, all that may have applied to {maybe}"
            ),
        );
    }
}

fn counter(value: &ApValue, ops: &[&Operation], found: &mut impl FnMut(&'static str, String)) {
    let held = match value {
        ApValue::Counter(n) => *n,
        ApValue::Absent => 0,
        other => {
            found("type", format!("a counter key holds {other:?}"));
            return;
        }
    };
    let sums = increments(ops).get("").copied().unwrap_or_default();
    check_sum("the counter", held, sums, found);
}

fn map(value: &ApValue, ops: &[&Operation], found: &mut impl FnMut(&'static str, String)) {
    let fields = match value {
        ApValue::Map(fields) => fields.clone(),
        ApValue::Absent => BTreeMap::new(),
        other => {
            found("type", format!("a map key holds {other:?}"));
            return;
        }
    };
    let sums = increments(ops);
    for (field, sum) in &sums {
        let held = fields.get(field).copied().unwrap_or(0);
        check_sum(&format!("field {field}"), held, *sum, found);
    }
    for field in fields.keys().filter(|f| !sums.contains_key(*f)) {
        found(
            "no phantom value",
            format!("holds never-incremented field {field}"),
        );
    }
}

fn set(value: &ApValue, ops: &[&Operation], found: &mut impl FnMut(&'static str, String)) {
    let held = match value {
        ApValue::Set(members) => members.clone(),
        ApValue::Absent => BTreeSet::new(),
        other => {
            found("type", format!("a set key holds {other:?}"));
            return;
        }
    };
    let mut added = BTreeSet::new();
    let mut acked = BTreeSet::new();
    let mut removed = BTreeSet::new();
    for op in ops.iter().filter(|op| op.outcome.may_have_applied()) {
        match &op.op {
            ApOp::SetAdd { member } => {
                added.insert(member.clone());
                if op.outcome.is_ok() {
                    acked.insert(member.clone());
                }
            }
            ApOp::SetRemove { member } => {
                removed.insert(member.clone());
            }
            _ => {}
        }
    }
    let phantom: BTreeSet<String> = held.difference(&added).cloned().collect();
    if !phantom.is_empty() {
        found(
            "no phantom value",
            format!("holds never-added {}", join(&phantom)),
        );
    }
    let lost: BTreeSet<String> = acked
        .difference(&removed)
        .filter(|m| !held.contains(*m))
        .cloned()
        .collect();
    if !lost.is_empty() {
        found(
            "no lost write",
            format!("acknowledged adds {} missing", join(&lost)),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(key: &str, op: ApOp, outcome: Outcome) -> Operation {
        let bucket = if key.starts_with('l') {
            LWW
        } else {
            crate::workload::SIBLINGS
        };
        Operation {
            process: 1,
            node: 1,
            bucket: bucket.into(),
            key: key.into(),
            op,
            request_id: None,
            level: None,
            invoke_ns: 0,
            complete_ns: 1,
            outcome,
            error: None,
        }
    }

    fn ack() -> Outcome {
        Outcome::Ok(Ret::Ack)
    }

    fn history(ops: Vec<Operation>, finals: Vec<(&str, ApValue)>) -> History {
        History {
            seed: 0,
            ops,
            cp: Vec::new(),
            nemeses: Vec::new(),
            finals: finals
                .into_iter()
                .map(|(key, value)| {
                    let copies = (1..=3)
                        .map(|node| FinalCopy {
                            node,
                            primary: true,
                            copy: Some((value.clone(), "d".repeat(32))),
                            duplicates: Vec::new(),
                        })
                        .collect();
                    (key.to_string(), copies)
                })
                .collect(),
        }
    }

    fn write(value: &str) -> ApOp {
        ApOp::Write {
            value: value.into(),
        }
    }

    fn values(items: &[&str]) -> ApValue {
        ApValue::Values(items.iter().map(|s| s.to_string()).collect())
    }

    fn rules(history: &History) -> Vec<&'static str> {
        check(history).into_iter().map(|v| v.rule).collect()
    }

    #[test]
    fn siblings_keep_acknowledged_writes_and_deleted_stays_deleted() {
        let ops = vec![
            op("v0", write("w1"), ack()),
            op("v0", write("w2"), ack()),
            op("v0", write("w3"), Outcome::Indeterminate),
            op(
                "v0",
                ApOp::Delete {
                    covers: vec!["w1".into()],
                    covers_unknown: false,
                },
                ack(),
            ),
        ];
        let good = history(ops.clone(), vec![("siblings/v0", values(&["w2"]))]);
        assert!(check(&good).is_empty(), "{:?}", check(&good));
        let lost = history(ops.clone(), vec![("siblings/v0", values(&["w3"]))]);
        assert_eq!(rules(&lost), vec!["no lost write"]);
        let resurrected = history(ops.clone(), vec![("siblings/v0", values(&["w1", "w2"]))]);
        assert_eq!(rules(&resurrected), vec!["deleted stays deleted"]);
        let phantom = history(ops, vec![("siblings/v0", values(&["w2", "zz"]))]);
        assert_eq!(rules(&phantom), vec!["no phantom value"]);
    }

    #[test]
    fn a_delete_cut_off_before_its_read_may_have_covered_earlier_writes_only() {
        let mut early = op("v0", write("w1"), ack());
        early.invoke_ns = 10;
        let mut late = op("v0", write("w2"), ack());
        late.invoke_ns = 200;
        let mut cut = op(
            "v0",
            ApOp::Delete {
                covers: Vec::new(),
                covers_unknown: true,
            },
            Outcome::Indeterminate,
        );
        (cut.invoke_ns, cut.complete_ns) = (50, 100);
        let ops = vec![early, late, cut];
        let w1_gone = history(ops.clone(), vec![("siblings/v0", values(&["w2"]))]);
        assert!(check(&w1_gone).is_empty(), "{:?}", check(&w1_gone));
        let w2_gone = history(ops, vec![("siblings/v0", values(&["w1"]))]);
        assert_eq!(rules(&w2_gone), vec!["no lost write"]);
    }

    #[test]
    fn replicas_that_differ_are_reported() {
        let mut diverged = history(
            vec![op("v0", write("w1"), ack())],
            vec![("siblings/v0", values(&["w1"]))],
        );
        if let Some(copies) = diverged.finals.get_mut("siblings/v0") {
            copies[2].copy = None;
        }
        assert_eq!(rules(&diverged), vec!["convergence"]);
    }

    #[test]
    fn lww_keeps_one_value_with_the_greatest_acknowledged_stamp() {
        let stamp = |ms| {
            Outcome::Ok(Ret::Stamp(Stamp {
                physical_ms: ms,
                logical: 0,
                node: 1,
            }))
        };
        let ops = vec![
            op("l0", write("w1"), stamp(10)),
            op("l0", write("w2"), stamp(20)),
        ];
        assert!(check(&history(ops.clone(), vec![("lww/l0", values(&["w2"]))])).is_empty());
        assert_eq!(
            rules(&history(ops.clone(), vec![("lww/l0", values(&["w1"]))])),
            vec!["lww keeps the latest"]
        );
        assert_eq!(
            rules(&history(ops, vec![("lww/l0", values(&["w1", "w2"]))])),
            vec!["lww keeps one"]
        );
    }

    #[test]
    fn counters_and_map_fields_sum_their_increments_once_per_request_id() {
        let incr = |id: &str, by, outcome| {
            let mut o = op("c0", ApOp::Incr { by }, outcome);
            o.request_id = Some(id.into());
            o
        };
        let ops = vec![
            incr("r1", 2, ack()),
            incr("r2", 3, Outcome::Indeterminate),
            incr("r2", 3, ack()),
            incr("r3", 4, Outcome::Fail),
        ];
        assert!(
            check(&history(
                ops.clone(),
                vec![("siblings/c0", ApValue::Counter(5))]
            ))
            .is_empty()
        );
        assert_eq!(
            rules(&history(
                ops.clone(),
                vec![("siblings/c0", ApValue::Counter(8))]
            )),
            vec!["counter equals its increments"]
        );
        let mut field = op(
            "m0",
            ApOp::MapIncr {
                field: "f1".into(),
                by: 7,
            },
            ack(),
        );
        field.request_id = Some("r9".into());
        let fields = |n| ApValue::Map([("f1".to_string(), n)].into());
        assert!(
            check(&history(
                vec![field.clone()],
                vec![("siblings/m0", fields(7))]
            ))
            .is_empty()
        );
        assert_eq!(
            rules(&history(vec![field], vec![("siblings/m0", fields(14))])),
            vec!["counter equals its increments"]
        );
    }

    #[test]
    fn sets_keep_acknowledged_adds_unless_removed() {
        let add = |m: &str| op("s0", ApOp::SetAdd { member: m.into() }, ack());
        let ops = vec![
            add("m1"),
            add("m2"),
            op(
                "s0",
                ApOp::SetRemove {
                    member: "m2".into(),
                },
                Outcome::Indeterminate,
            ),
        ];
        let set = |items: &[&str]| ApValue::Set(items.iter().map(|s| s.to_string()).collect());
        assert!(check(&history(ops.clone(), vec![("siblings/s0", set(&["m1"]))])).is_empty());
        assert!(
            check(&history(
                ops.clone(),
                vec![("siblings/s0", set(&["m1", "m2"]))]
            ))
            .is_empty()
        );
        assert_eq!(
            rules(&history(ops, vec![("siblings/s0", set(&["m2"]))])),
            vec!["no lost write"]
        );
    }
}
