//! Linearizability of the CP keyspace's registers, key by key.
//!
//! Each key is a register: `Read`, `Write`, `Delete`, `Cas` and accepted `FencedWrite`s.
//! Linearizability is compositional (Herlihy & Wing), so keys are checked one at a time. For a
//! key, the checker searches for a total order of its operations that (1) respects real time —
//! an operation that returned before another was invoked comes first — and (2) gives every
//! operation the result it returned when the register is run in that order from "absent".
//!
//! What goes into the search:
//! - `Fail` operations are left out (they definitely did not apply), and so are indeterminate
//!   reads (they change nothing and returned nothing). A compare-and-set that returned "not
//!   applied" stays in: it saw the register not holding its expected value.
//! - Indeterminate writes, deletes and compare-and-sets may be placed anywhere after their
//!   invocation, or nowhere.
//! - Retries sharing a request id are one operation: invoked with the first attempt, returning
//!   with the one that got an answer (indeterminate if none did).
//! - Values that no operation observes (no read returns them, no compare-and-set expects them)
//!   are indistinguishable to every operation, so they are merged into one abstract value. An
//!   indeterminate operation that can only produce that value matters only to a
//!   compare-and-set that failed; on keys without one it is dropped.
//!
//! The search itself is in `search.rs`; `story.rs` turns a failure into an explanation: the
//! longest consistent order found, the operation that could not follow it, and for reads the
//! write they saw and the write that had already replaced it.
//!
//! Limits: the search is exponential in the worst case (the problem is NP-complete); it stops
//! after [`LinearOptions::max_states`] stored states or [`LinearOptions::max_steps`] steps on one
//! key and reports that key as undecided rather than guessing.

mod search;
mod story;

use std::collections::{BTreeMap, BTreeSet};

use crate::history::{History, Op, Outcome, Ret, Time};
use crate::verdict::Verdict;
use search::{Kind, LOp};

/// Bounds on the search, per key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinearOptions {
    /// Most search states remembered for one key (each costs a few dozen bytes).
    pub max_states: usize,
    /// Most search steps for one key.
    pub max_steps: u64,
}

impl Default for LinearOptions {
    fn default() -> Self {
        Self {
            max_states: 2_000_000,
            max_steps: 200_000_000,
        }
    }
}

/// Checks every key's register operations for linearizability, with default bounds.
pub fn check(history: &History) -> Verdict {
    check_with(history, &LinearOptions::default())
}

/// Checks every key's register operations for linearizability.
pub fn check_with(history: &History, options: &LinearOptions) -> Verdict {
    let mut verdict = Verdict::new("linearizability");
    let malformed: BTreeSet<usize> = malformed(history);
    for id in &malformed {
        verdict.undecided(format!(
            "malformed operation #{id} left out: {}",
            history.ops[*id]
        ));
    }
    let mut keys: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (id, op) in history.ops.iter().enumerate() {
        if is_register_op(&op.op) && !malformed.contains(&id) {
            keys.entry(op.key.as_str()).or_default().push(id);
        }
    }
    let mut totals = Totals::default();
    for (key, ids) in &keys {
        let prepared = prepare(history, ids);
        totals.add(&prepared);
        let outcome = search::run(
            &prepared.ops,
            prepared.initial,
            options.max_states,
            options.max_steps,
        );
        match outcome {
            search::Outcome::Linearizable { states } => totals.states += states,
            search::Outcome::NotLinearizable {
                states,
                path,
                blocked,
            } => {
                totals.states += states;
                let story = story::tell(history, ids, &prepared, &path, blocked, states);
                verdict.violation(Some(key), story.message, story.lines);
            }
            search::Outcome::GaveUp { states, steps } => {
                totals.states += states;
                verdict.undecided(format!(
                    "key {key:?}: search gave up after {states} states and {steps} steps \
                     ({} operations, {} indeterminate)",
                    prepared.ops.len(),
                    prepared.indeterminate
                ));
            }
        }
    }
    verdict.note(format!(
        "{} keys, {} register operations: {} searched ({} indeterminate), {} refused, \
         {} indeterminate reads and {} unobservable indeterminate writes left out, \
         {} retries merged; {} search states",
        keys.len(),
        totals.recorded,
        totals.searched,
        totals.indeterminate,
        totals.refused,
        totals.dropped_reads,
        totals.dropped_writes,
        totals.merged,
        totals.states
    ));
    verdict
}

/// The operations the linearizability checker looks at.
fn is_register_op(op: &Op) -> bool {
    matches!(
        op,
        Op::Read | Op::Write(_) | Op::Cas { .. } | Op::Delete | Op::FencedWrite { .. }
    )
}

fn malformed(history: &History) -> BTreeSet<usize> {
    history
        .ops
        .iter()
        .enumerate()
        .filter(|(_, op)| {
            op.complete < op.invoke
                || matches!(&op.outcome, Outcome::Ok(ret) if !crate::history::ret_fits(&op.op, ret))
        })
        .map(|(id, _)| id)
        .collect()
}

#[derive(Default)]
struct Totals {
    recorded: usize,
    searched: usize,
    indeterminate: usize,
    refused: usize,
    dropped_reads: usize,
    dropped_writes: usize,
    merged: usize,
    states: usize,
}

impl Totals {
    fn add(&mut self, prepared: &Prepared) {
        self.recorded += prepared.recorded;
        self.searched += prepared.ops.len();
        self.indeterminate += prepared.indeterminate;
        self.refused += prepared.refused;
        self.dropped_reads += prepared.dropped_reads;
        self.dropped_writes += prepared.dropped_writes;
        self.merged += prepared.merged;
    }
}

/// One key's operations, ready for the search.
pub(crate) struct Prepared {
    /// Sorted by call.
    ops: Vec<LOp>,
    /// The register's first value (the id of "absent").
    initial: u32,
    recorded: usize,
    indeterminate: usize,
    refused: usize,
    dropped_reads: usize,
    dropped_writes: usize,
    merged: usize,
}

/// A logical operation: one attempt, or the retries of one request.
struct Logical<'a> {
    /// History ids, the one whose outcome counts first.
    ids: Vec<usize>,
    call: Time,
    /// `None`: indeterminate.
    ret: Option<Time>,
    /// `None`: refused.
    outcome: Option<&'a Outcome>,
}

/// Merges retries (same request id) into logical operations.
fn logical<'a>(history: &'a History, ids: &[usize]) -> Vec<Logical<'a>> {
    let mut by_request: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    let mut out = Vec::new();
    for &id in ids {
        match history.ops[id].request_id.as_deref() {
            Some(request) => by_request.entry(request).or_default().push(id),
            None => out.push(vec![id]),
        }
    }
    out.extend(by_request.into_values());
    out.into_iter()
        .map(|mut attempts| {
            let ops = &history.ops;
            let call = attempts.iter().map(|&id| ops[id].invoke).min().unwrap_or(0);
            let answered = attempts
                .iter()
                .position(|&id| ops[id].outcome.is_ok())
                .or_else(|| {
                    attempts
                        .iter()
                        .position(|&id| ops[id].outcome == Outcome::Indeterminate)
                });
            let outcome = match answered {
                Some(index) => {
                    let id = attempts.remove(index);
                    attempts.insert(0, id);
                    Some(&ops[id].outcome)
                }
                None => None,
            };
            let ret = match outcome {
                Some(Outcome::Ok(_)) => Some(ops[attempts[0]].complete),
                _ => None,
            };
            Logical {
                ids: attempts,
                call,
                ret,
                outcome,
            }
        })
        .collect()
}

/// What a register operation needs from the register and leaves in it, with concrete values.
enum Effect<'a> {
    Read(Option<&'a str>),
    Write(Option<&'a str>),
    Cas {
        expect: Option<&'a str>,
        new: &'a str,
        applied: Option<bool>,
    },
}

fn effect<'a>(op: &'a Op, outcome: &'a Outcome) -> Option<Effect<'a>> {
    let applied = match outcome {
        Outcome::Ok(Ret::Cas(applied)) => Some(*applied),
        _ => None,
    };
    match op {
        Op::Read => match outcome {
            Outcome::Ok(Ret::Value(value)) => Some(Effect::Read(value.as_deref())),
            _ => None,
        },
        Op::Write(value) | Op::FencedWrite { value, .. } => Some(Effect::Write(Some(value))),
        Op::Delete => Some(Effect::Write(None)),
        Op::Cas { expect, new } => Some(Effect::Cas {
            expect: expect.as_deref(),
            new,
            applied,
        }),
        _ => None,
    }
}

fn prepare(history: &History, ids: &[usize]) -> Prepared {
    let logical = logical(history, ids);
    let merged = ids.len() - logical.len();
    // Values some operation can tell apart: read results and compare-and-set expectations.
    let mut observed: BTreeSet<Option<&str>> = BTreeSet::new();
    let mut cas_failed = false;
    for op in &logical {
        let Some(outcome) = op.outcome else { continue };
        let attempt = &history.ops[op.ids[0]];
        match effect(&attempt.op, outcome) {
            Some(Effect::Read(value)) => {
                observed.insert(value);
            }
            Some(Effect::Cas {
                expect, applied, ..
            }) => {
                observed.insert(expect);
                cas_failed |= applied == Some(false);
            }
            _ => {}
        }
    }
    // Id 0 is every unobserved value; observed values are 1.. in sorted order.
    let ids_of: BTreeMap<Option<&str>, u32> = observed
        .iter()
        .enumerate()
        .map(|(index, value)| (*value, index as u32 + 1))
        .collect();
    let id = |value: Option<&str>| ids_of.get(&value).copied().unwrap_or(0);

    let mut prepared = Prepared {
        ops: Vec::new(),
        initial: id(None),
        recorded: ids.len(),
        indeterminate: 0,
        refused: 0,
        dropped_reads: 0,
        dropped_writes: 0,
        merged,
    };
    for op in logical {
        let Some(outcome) = op.outcome else {
            prepared.refused += 1;
            continue;
        };
        let attempt = &history.ops[op.ids[0]];
        let Some(effect) = effect(&attempt.op, outcome) else {
            prepared.dropped_reads += 1;
            continue;
        };
        let determinate = op.ret.is_some();
        let kind = match effect {
            Effect::Read(value) => Kind::Read(id(value)),
            Effect::Write(value) => Kind::Write(id(value)),
            Effect::Cas {
                expect,
                applied: Some(true),
                new,
            } => Kind::CasOk(id(expect), id(Some(new))),
            Effect::Cas {
                expect,
                applied: Some(false),
                ..
            } => Kind::CasFail(id(expect)),
            Effect::Cas {
                expect,
                applied: None,
                new,
            } => Kind::CasMaybe(id(expect), id(Some(new))),
        };
        if !determinate {
            let target = match kind {
                Kind::Write(target) | Kind::CasMaybe(_, target) => Some(target),
                _ => None,
            };
            if target == Some(0) && !cas_failed {
                prepared.dropped_writes += 1;
                continue;
            }
            prepared.indeterminate += 1;
        }
        prepared.ops.push(LOp {
            ids: op.ids,
            call: op.call,
            ret: op.ret,
            kind,
        });
    }
    prepared
        .ops
        .sort_by_key(|op| (op.call, op.ids.first().copied()));
    prepared
}

#[cfg(test)]
mod tests;
