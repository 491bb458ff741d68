//! AP keyspace checkers: after the partition heals and anti-entropy has run, every replica of a
//! key holds the same value, and that value keeps every acknowledged write under the key's merge
//! rule.
//!
//! Input: the history (AP operations) and the final read of every replica of every key
//! ([`FinalState`]), plus each bucket's [`MergeRule`] for plain values. Retries sharing a
//! request id are one operation (acknowledged if any attempt was). An operation counts as
//! *applied* if acknowledged, *maybe applied* if indeterminate, *not applied* if refused (so an
//! engine must record AP `Unavailable` answers as indeterminate: such a write may have reached
//! some replicas).
//!
//! The rules on the copies themselves ([`copies`]): the primary replicas hold equal copies
//! (equal values, and equal digests where the engine reads them; a replica with no copy differs
//! from one holding a tombstone), otherwise each distinct value is also checked on its own; a key
//! with an acknowledged mutation is held by some primary; no copy holds one written value as two
//! siblings. On reads ([`reads`]): what an acknowledged read returned was written.
//!
//! The rules on the value, per key type (the type is what the key's operations make it):
//! - **Plain values, `siblings`.** The client records, with each write or delete, the values its
//!   causal context covered (`covers`: what it had read). A value must be present if an
//!   acknowledged write wrote it and no write or delete that may have applied covered it (a
//!   `local` one, sent without a context, may have covered anything written before it
//!   completed; a delete sent with the context of a read the client never saw, anything
//!   written before the client gave up); may be present only if a write that may have applied
//!   wrote it; and must be absent if an acknowledged write or delete covered it and only one operation ever wrote it (one dot — a
//!   covered dot never comes back, so this is "deleted stays deleted").
//! - **Plain values, `lww`.** When acknowledgements carry their hybrid timestamps: the value is
//!   that of the acknowledged write or delete with the greatest timestamp, or of an
//!   indeterminate write or delete (whose timestamp is unknown). Without timestamps, only "was
//!   written by something that may have applied" is checked.
//! - **Counters.** The value lies in `[acknowledged sum + negative maybe-applied increments,
//!   acknowledged sum + positive maybe-applied increments]` — exact when every increment was
//!   acknowledged (retries with a request id count once). Not checked on keys that were
//!   deleted (a delete resets what its coordinator observed, which the history does not know).
//! - **Sets (add-wins).** A member must be present if an acknowledged add of it could not have
//!   been observed by any remove or delete of it: every such remove was acknowledged before the
//!   add was invoked (a remove cancels only the adds it observed; an indeterminate remove may
//!   have observed anything). A member may be present only if an add of it may have applied, and
//!   must be absent if an acknowledged delete covered it and only one add of it exists.
//! - **Maps of counters.** Each field as a counter; fields nobody incremented must be absent.
//!
//! Limits: causality is approximated by real time and by what clients say they covered; a remove
//! that observed an add is not distinguished from one that did not, so "removed stays removed"
//! is checked only through covered deletes. Keys whose operations give them two types are
//! reported as undecided.

mod copies;
mod reads;

use std::collections::{BTreeMap, BTreeSet};

pub use copies::{FinalCopy, FinalState};

use crate::history::{ApValue, History, MergeRule, Op, Operation, Outcome, Ret, Stamp, Value};
use crate::verdict::Verdict;

/// Whether an operation took effect, as far as the client knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Applied {
    Yes,
    Maybe,
}

/// A logical AP operation (retries merged) that may have applied.
struct Logical<'a> {
    id: usize,
    op: &'a Operation,
    applied: Applied,
    /// The acknowledged `lww` timestamp, if any.
    stamp: Option<Stamp>,
}

impl Logical<'_> {
    /// Completion time if acknowledged; `None` (never) if it may apply at any time.
    fn done(&self) -> Option<u64> {
        (self.applied == Applied::Yes).then_some(self.op.complete)
    }

    fn name(&self) -> String {
        format!("#{} {}", self.id, self.op)
    }
}

/// The type a key's operations give it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum KeyType {
    Plain,
    Counter,
    Set,
    Map,
}

/// Checks convergence and the merge rules. `rules` gives each bucket's rule for plain values.
pub fn check(
    history: &History,
    rules: &BTreeMap<String, MergeRule>,
    final_state: &FinalState,
) -> Verdict {
    let mut verdict = Verdict::new("convergence");
    let mut by_key: BTreeMap<&str, KeyOps> = BTreeMap::new();
    for (id, op) in history.ops.iter().enumerate() {
        if op.op.keyspace() != crate::history::Keyspace::Ap {
            continue;
        }
        let entry = by_key.entry(&op.key).or_default();
        if op.op.is_mutation() {
            entry.mutations.push(id);
        } else if op.outcome.is_ok() {
            entry.reads.push(id);
        }
    }
    let keys: BTreeSet<&str> = by_key
        .keys()
        .copied()
        .chain(final_state.keys.keys().map(String::as_str))
        .collect();
    let mut diverged = 0;
    let none = KeyOps::default();
    for key in &keys {
        let ids = by_key.get(key).unwrap_or(&none);
        let copies = final_state.keys.get(*key);
        if check_key(history, rules, key, ids, copies, &mut verdict) {
            diverged += 1;
        }
    }
    verdict.note(format!(
        "{} keys, {} read on every replica, {} diverged",
        keys.len(),
        final_state.keys.len(),
        diverged
    ));
    verdict.notes.dedup();
    verdict.undecided.dedup();
    verdict
}

/// A key's operations: ids of mutations, and of acknowledged reads.
#[derive(Default)]
struct KeyOps {
    mutations: Vec<usize>,
    reads: Vec<usize>,
}

/// Checks one key; returns whether its replicas diverged.
fn check_key(
    history: &History,
    rules: &BTreeMap<String, MergeRule>,
    key: &str,
    ids: &KeyOps,
    copies: Option<&BTreeMap<String, FinalCopy>>,
    verdict: &mut Verdict,
) -> bool {
    let ops = logical(history, &ids.mutations);
    let types: BTreeSet<KeyType> = ops.iter().filter_map(|op| key_type(&op.op.op)).collect();
    let kind = match types.len() {
        0 | 1 => Some(types.iter().next().copied().unwrap_or(KeyType::Plain)),
        _ => None,
    };
    if let Some(kind) = kind {
        reads::check(history, key, &ids.reads, &ops, kind, verdict);
    }
    let acknowledged = ops.iter().any(|op| op.applied == Applied::Yes);
    let held = copies
        .filter(|c| !c.is_empty())
        .and_then(|copies| copies::check(key, copies, acknowledged, verdict));
    let Some(held) = held else {
        if acknowledged {
            verdict.undecided(format!("key {key:?}: no replica was read after the heal"));
        }
        return false;
    };
    let Some(kind) = kind else {
        verdict.undecided(format!(
            "key {key:?}: operations of several types ({types:?}); merge rules not checked"
        ));
        return held.diverged;
    };
    for (value, holders) in &held.values {
        let problems = match kind {
            KeyType::Plain => plain(&ops, rules, value, verdict, key),
            KeyType::Counter => counter(&ops, value, verdict, key),
            KeyType::Set => set(&ops, value),
            KeyType::Map => map(&ops, value, verdict, key),
        };
        for (message, story) in problems {
            let mut lines = vec![format!("held by {}: {value}", holders.join(", "))];
            lines.extend(story);
            verdict.violation(Some(key), message, lines);
        }
    }
    held.diverged
}

fn key_type(op: &Op) -> Option<KeyType> {
    match op {
        Op::ApWrite { .. } => Some(KeyType::Plain),
        Op::Incr(_) => Some(KeyType::Counter),
        Op::SetAdd(_) | Op::SetRemove(_) => Some(KeyType::Set),
        Op::MapIncr { .. } => Some(KeyType::Map),
        _ => None,
    }
}

/// Merges retries (same request id) and drops what was refused.
fn logical<'a>(history: &'a History, ids: &[usize]) -> Vec<Logical<'a>> {
    let mut by_request: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for &id in ids {
        match history.ops[id].request_id.as_deref() {
            Some(request) => by_request.entry(request).or_default().push(id),
            None => groups.push(vec![id]),
        }
    }
    groups.extend(by_request.into_values());
    let mut out: Vec<Logical> = groups
        .into_iter()
        .filter_map(|attempts| {
            let acked = attempts
                .iter()
                .copied()
                .find(|&id| history.ops[id].outcome.is_ok());
            let (id, applied) = match acked {
                Some(id) => (id, Applied::Yes),
                None => (
                    attempts
                        .iter()
                        .copied()
                        .find(|&id| history.ops[id].outcome == Outcome::Indeterminate)?,
                    Applied::Maybe,
                ),
            };
            let op = &history.ops[id];
            let stamp = match op.outcome {
                Outcome::Ok(Ret::Stamp(stamp)) => Some(stamp),
                _ => None,
            };
            Some(Logical {
                id,
                op,
                applied,
                stamp,
            })
        })
        .collect();
    out.sort_by_key(|op| op.id);
    out
}

type Problems = Vec<(String, Vec<String>)>;

fn wrong_type(value: &ApValue, expected: &str) -> Problems {
    vec![(
        format!("holds {value}, but the key's operations make it a {expected}"),
        Vec::new(),
    )]
}

fn plain(
    ops: &[Logical],
    rules: &BTreeMap<String, MergeRule>,
    value: &ApValue,
    verdict: &mut Verdict,
    key: &str,
) -> Problems {
    let held: BTreeSet<&Value> = match value {
        ApValue::Absent => BTreeSet::new(),
        ApValue::Values(values) => values.iter().collect(),
        other => return wrong_type(other, "plain value"),
    };
    let buckets: BTreeSet<&str> = ops
        .iter()
        .filter_map(|op| match &op.op.op {
            Op::ApWrite { bucket, .. } => Some(bucket.as_str()),
            _ => None,
        })
        .collect();
    let rule = match buckets
        .iter()
        .map(|b| rules.get(*b))
        .collect::<BTreeSet<_>>()
    {
        set if set.len() > 1 => {
            verdict.undecided(format!(
                "key {key:?}: written through buckets with different rules {buckets:?}"
            ));
            return Vec::new();
        }
        set => match set.into_iter().next() {
            Some(Some(rule)) => Some(*rule),
            Some(None) => {
                verdict.undecided(format!(
                    "key {key:?}: no merge rule given for bucket(s) {buckets:?}"
                ));
                return Vec::new();
            }
            None => None,
        },
    };
    match rule {
        Some(MergeRule::Lww) => lww(ops, &held, verdict, key),
        // Siblings, or deletes only (nothing may be there).
        _ => siblings(ops, &held),
    }
}

/// What a plain write writes, and what it covers.
fn plain_write(op: &Op) -> Option<(Option<&Value>, &[Value])> {
    match op {
        Op::ApWrite { value, covers, .. } => Some((Some(value), covers)),
        Op::ApDelete { covers, .. } => Some((None, covers)),
        _ => None,
    }
}

/// Whether the operation replaced whatever its coordinator held (no client context).
fn is_local(op: &Op) -> bool {
    matches!(
        op,
        Op::ApWrite { local: true, .. } | Op::ApDelete { local: true, .. }
    )
}

fn siblings(ops: &[Logical], held: &BTreeSet<&Value>) -> Problems {
    let mut problems = Vec::new();
    let mut writers: BTreeMap<&Value, Vec<&Logical>> = BTreeMap::new();
    let mut coverers: BTreeMap<&Value, Vec<&Logical>> = BTreeMap::new();
    for op in ops {
        if let Some((value, covers)) = plain_write(&op.op.op) {
            if let Some(value) = value {
                writers.entry(value).or_default().push(op);
            }
            for covered in covers {
                coverers.entry(covered).or_default().push(op);
            }
        }
    }
    // A local write or delete may have covered any write invoked before it completed; a
    // delete sent with an unseen read's context, any write invoked before its client gave up.
    let locals: Vec<&Logical> = ops.iter().filter(|op| is_local(&op.op.op)).collect();
    let unseen: Vec<&Logical> = ops
        .iter()
        .filter(|op| {
            matches!(
                op.op.op,
                Op::ApDelete {
                    covers_unknown: true,
                    ..
                }
            )
        })
        .collect();
    let maybe_replaced = |write: &Logical| {
        locals.iter().any(|local| {
            local.id != write.id && local.done().is_none_or(|done| write.op.invoke <= done)
        }) || unseen
            .iter()
            .any(|delete| write.op.invoke <= delete.op.complete)
    };
    // Required: acknowledged, and covered by nothing that may have applied.
    for (value, ws) in &writers {
        if held.contains(value) || coverers.contains_key(value) {
            continue;
        }
        if let Some(acked) = ws
            .iter()
            .find(|w| w.applied == Applied::Yes && !maybe_replaced(w))
        {
            problems.push((
                format!("acknowledged write lost: {value:?} is missing"),
                vec![format!(
                    "{} was acknowledged and no write or delete covered it",
                    acked.name()
                )],
            ));
        }
    }
    for value in held {
        match writers.get(value) {
            None => problems.push((
                format!("{value:?} was never written (or only by refused writes)"),
                Vec::new(),
            )),
            Some(ws) if ws.len() == 1 => {
                // One dot: if an acknowledged operation covered it, it is gone for good.
                if let Some(cover) = coverers
                    .get(value)
                    .and_then(|cs| cs.iter().find(|c| c.applied == Applied::Yes))
                {
                    let what = if matches!(cover.op.op, Op::ApDelete { .. }) {
                        "deleted value resurrected"
                    } else {
                        "replaced value resurrected"
                    };
                    problems.push((
                        format!("{what}: {value:?} is back"),
                        vec![
                            format!("written by {}", ws[0].name()),
                            format!("covered by {}, acknowledged", cover.name()),
                        ],
                    ));
                }
            }
            Some(_) => {}
        }
    }
    problems
}

fn lww(ops: &[Logical], held: &BTreeSet<&Value>, verdict: &mut Verdict, key: &str) -> Problems {
    if held.len() > 1 {
        return vec![(
            format!("an lww key holds {} values", held.len()),
            Vec::new(),
        )];
    }
    let held: Option<&Value> = held.iter().next().copied();
    let writes: Vec<(&Logical, Option<&Value>)> = ops
        .iter()
        .filter_map(|op| plain_write(&op.op.op).map(|(value, _)| (op, value)))
        .collect();
    let acked: Vec<&(&Logical, Option<&Value>)> = writes
        .iter()
        .filter(|(op, _)| op.applied == Applied::Yes)
        .collect();
    let written_by = |value: Option<&Value>| writes.iter().find(|(_, v)| *v == value);
    if acked.iter().any(|(op, _)| op.stamp.is_none()) {
        verdict.note(format!(
            "lww keys without acknowledged timestamps (e.g. {key:?}): only checked for phantom values"
        ));
        if held.is_some() && written_by(held).is_none() {
            return vec![(
                format!("{} was never written", crate::history::show(held)),
                Vec::new(),
            )];
        }
        return Vec::new();
    }
    let winner = acked.iter().max_by_key(|(op, _)| op.stamp);
    let mut allowed: Vec<Option<&Value>> = writes
        .iter()
        .filter(|(op, _)| op.applied == Applied::Maybe)
        .map(|(_, value)| *value)
        .collect();
    match winner {
        Some((_, value)) => allowed.push(*value),
        None => allowed.push(None),
    }
    if allowed.contains(&held) {
        return Vec::new();
    }
    let shown = crate::history::show(held);
    let mut story = Vec::new();
    if let Some((op, _)) = winner {
        story.push(format!(
            "the greatest acknowledged timestamp, {}, is that of {}",
            op.stamp.map(|s| s.to_string()).unwrap_or_default(),
            op.name()
        ));
    }
    if let Some((op, _)) = written_by(held) {
        story.push(format!("{shown} was written by {}", op.name()));
    }
    let message = if winner.is_some_and(|(_, v)| v.is_none()) && held.is_some() {
        format!("deleted key resurrected: holds {shown} after the latest acknowledged delete")
    } else if held.is_none() {
        "acknowledged write lost: the key is absent, but its latest acknowledged write is not a \
         delete"
            .to_string()
    } else if written_by(held).is_none() {
        format!("{shown} was never written")
    } else {
        format!("lww kept {shown}, not the write with the greatest acknowledged timestamp")
    };
    vec![(message, story)]
}

/// The sum range of increments: (acknowledged sum, lowest, highest possible).
fn sum_range<'a>(ops: impl Iterator<Item = (&'a Logical<'a>, i64)>) -> (i64, i64, i64) {
    let (mut acked, mut low, mut high) = (0i64, 0i64, 0i64);
    for (op, n) in ops {
        match op.applied {
            Applied::Yes => acked = acked.saturating_add(n),
            Applied::Maybe if n < 0 => low = low.saturating_add(n),
            Applied::Maybe => high = high.saturating_add(n),
        }
    }
    (acked, acked.saturating_add(low), acked.saturating_add(high))
}

fn deleted(ops: &[Logical]) -> bool {
    ops.iter().any(|op| matches!(op.op.op, Op::ApDelete { .. }))
}

fn range_problem(what: &str, value: i64, (acked, low, high): (i64, i64, i64)) -> Problems {
    if (low..=high).contains(&value) {
        return Vec::new();
    }
    let message = if low == high {
        format!("{what} is {value}, but the acknowledged increments sum to {acked}")
    } else {
        format!(
            "{what} is {value}, outside {low}..={high} (acknowledged increments sum to {acked}; \
             indeterminate ones may add {}..={})",
            low - acked,
            high - acked
        )
    };
    vec![(message, Vec::new())]
}

fn counter(ops: &[Logical], value: &ApValue, verdict: &mut Verdict, key: &str) -> Problems {
    let value = match value {
        ApValue::Counter(n) => *n,
        ApValue::Absent => 0,
        other => return wrong_type(other, "counter"),
    };
    if deleted(ops) {
        verdict.note(format!(
            "counter {key:?} was deleted: its sum is not checked"
        ));
        return Vec::new();
    }
    let range = sum_range(ops.iter().filter_map(|op| match op.op.op {
        Op::Incr(n) => Some((op, n)),
        _ => None,
    }));
    range_problem("the counter", value, range)
}

fn map(ops: &[Logical], value: &ApValue, verdict: &mut Verdict, key: &str) -> Problems {
    let empty = BTreeMap::new();
    let fields = match value {
        ApValue::Map(fields) => fields,
        ApValue::Absent => &empty,
        other => return wrong_type(other, "map"),
    };
    let mut names: BTreeSet<&str> = BTreeSet::new();
    for op in ops {
        if let Op::MapIncr { field, .. } = &op.op.op {
            names.insert(field);
        }
    }
    let mut problems = Vec::new();
    for field in fields.keys() {
        if !names.contains(field.as_str()) {
            problems.push((format!("field {field:?} was never written"), Vec::new()));
        }
    }
    if deleted(ops) {
        verdict.note(format!("map {key:?} was deleted: its sums are not checked"));
        return problems;
    }
    for name in names {
        let range = sum_range(ops.iter().filter_map(|op| match &op.op.op {
            Op::MapIncr { field, n } if field == name => Some((op, *n)),
            _ => None,
        }));
        let held = fields.get(name).copied().unwrap_or(0);
        problems.extend(range_problem(&format!("field {name:?}"), held, range));
    }
    problems
}

fn set(ops: &[Logical], value: &ApValue) -> Problems {
    let empty = BTreeSet::new();
    let members = match value {
        ApValue::Set(members) => members,
        ApValue::Absent => &empty,
        other => return wrong_type(other, "set"),
    };
    let mut adds: BTreeMap<&str, Vec<&Logical>> = BTreeMap::new();
    for op in ops {
        if let Op::SetAdd(member) = &op.op.op {
            adds.entry(member).or_default().push(op);
        }
    }
    // Removes of a member: its own removes and every delete of the key.
    let removes_of = |member: &str| -> Vec<&Logical> {
        ops.iter()
            .filter(|op| match &op.op.op {
                Op::SetRemove(m) => m == member,
                Op::ApDelete { .. } => true,
                _ => false,
            })
            .collect()
    };
    let mut problems = Vec::new();
    for (member, member_adds) in &adds {
        if members.contains(*member) {
            continue;
        }
        // An acknowledged add that no remove could have observed.
        let removes = removes_of(member);
        let unobserved = member_adds.iter().find(|add| {
            add.applied == Applied::Yes
                && removes
                    .iter()
                    .all(|r| r.done().is_some_and(|done| done < add.op.invoke))
        });
        if let Some(add) = unobserved {
            problems.push((
                format!("acknowledged add lost: {member:?} is missing"),
                vec![format!(
                    "{} was acknowledged, and every remove of it finished before it began",
                    add.name()
                )],
            ));
        }
    }
    for member in members {
        let Some(member_adds) = adds.get(member.as_str()) else {
            problems.push((
                format!("member {member:?} was never added (or only by refused adds)"),
                Vec::new(),
            ));
            continue;
        };
        if member_adds.len() != 1 {
            continue;
        }
        let covering_delete = ops.iter().find(|op| {
            op.applied == Applied::Yes
                && matches!(&op.op.op, Op::ApDelete { covers, .. } if covers.contains(member))
        });
        if let Some(delete) = covering_delete {
            problems.push((
                format!("deleted member resurrected: {member:?} is back"),
                vec![
                    format!("added by {}", member_adds[0].name()),
                    format!("covered by {}, acknowledged", delete.name()),
                ],
            ));
        }
    }
    problems
}

#[cfg(test)]
mod tests;
