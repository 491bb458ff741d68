//! Turns a failed search into a story a person can check by hand: the longest consistent order
//! the search found, the operation that could not follow it, the operations still open at that
//! point, and — for a read or a compare-and-set — where the value it saw came from and what had
//! already replaced it.

use crate::history::{History, Op, Operation, Outcome, Ret, show};

use super::Prepared;
use super::search::{Kind, LOp};

/// Most steps of the consistent order shown.
const SHOWN_STEPS: usize = 8;
/// Most open operations shown.
const SHOWN_OPEN: usize = 8;
/// Most writers explained.
const SHOWN_WRITERS: usize = 3;

/// A violation, told.
pub(super) struct Story {
    /// One line.
    pub message: String,
    /// The rest.
    pub lines: Vec<String>,
}

/// Tells the story of a key whose search failed at `blocked` after `path`.
pub(super) fn tell(
    history: &History,
    key_ids: &[usize],
    prepared: &Prepared,
    path: &[u32],
    blocked: u32,
    states: usize,
) -> Story {
    let ops = &prepared.ops;
    let blocked_op = &ops[blocked as usize];
    let indeterminate = ops.iter().filter(|op| op.ret.is_none()).count();
    let mut lines = vec![format!(
        "no order of its {} operations ({indeterminate} indeterminate) respects real time and \
         gives every operation its result ({states} search states)",
        ops.len()
    )];

    // Replay the longest consistent order with concrete values.
    let mut register: Option<String> = None;
    let mut steps = Vec::new();
    for &index in path {
        let op = &ops[index as usize];
        if let Some(after) = concrete_effect(history, op) {
            register = after;
        }
        steps.push(format!(
            "{}  ⇒ {}",
            describe(history, op),
            show(register.as_ref())
        ));
    }
    if steps.is_empty() {
        lines.push("no operation can go first: the register starts absent".to_string());
    } else {
        lines.push(format!(
            "the longest consistent order found places {} operations; it ends:",
            steps.len()
        ));
        if steps.len() > SHOWN_STEPS {
            lines.push(format!(
                "  … {} earlier operations",
                steps.len() - SHOWN_STEPS
            ));
        }
        let skip = steps.len().saturating_sub(SHOWN_STEPS);
        lines.extend(steps.into_iter().skip(skip).map(|step| format!("  {step}")));
    }
    lines.push(format!(
        "then {} cannot take effect: the register holds {}",
        describe(history, blocked_op),
        show(register.as_ref())
    ));

    // What could still have gone before it.
    let placed: std::collections::BTreeSet<u32> = path.iter().copied().collect();
    let deadline = blocked_op.ret.unwrap_or(u64::MAX);
    let open: Vec<&LOp> = ops
        .iter()
        .enumerate()
        .filter(|(index, op)| {
            *index as u32 != blocked && !placed.contains(&(*index as u32)) && op.call <= deadline
        })
        .map(|(_, op)| op)
        .collect();
    if open.is_empty() {
        lines.push("no other operation was open at that point".to_string());
    } else {
        lines.push(format!(
            "operations invoked before it returned and not placed ({}):",
            open.len()
        ));
        for op in open.iter().take(SHOWN_OPEN) {
            lines.push(format!("  {}", describe(history, op)));
        }
        if open.len() > SHOWN_OPEN {
            lines.push(format!("  … and {} more", open.len() - SHOWN_OPEN));
        }
    }

    let (message, why) = explain(history, key_ids, blocked_op);
    lines.extend(why);
    Story { message, lines }
}

/// `#id client … → result [invoke..complete]`, with retries named.
fn describe(history: &History, op: &LOp) -> String {
    let mut text = format!("#{} {}", op.ids[0], history.ops[op.ids[0]]);
    if op.ids.len() > 1 {
        let others: Vec<String> = op.ids[1..].iter().map(|id| format!("#{id}")).collect();
        text.push_str(&format!(
            " (retried as {}; invoked at {})",
            others.join(" "),
            op.call
        ));
    }
    text
}

/// The register after `op` as placed in the order (`None`: unchanged).
fn concrete_effect(history: &History, op: &LOp) -> Option<Option<String>> {
    match op.kind {
        Kind::Read(_) | Kind::CasFail(_) => None,
        Kind::Write(_) | Kind::CasOk(..) | Kind::CasMaybe(..) => target(&history.ops[op.ids[0]].op),
    }
}

/// The value an operation writes, if it writes.
fn target(op: &Op) -> Option<Option<String>> {
    match op {
        Op::Write(value) | Op::FencedWrite { value, .. } => Some(Some(value.clone())),
        Op::Delete => Some(None),
        Op::Cas { new, .. } => Some(Some(new.clone())),
        _ => None,
    }
}

/// Whether the attempt may have written (refused attempts and failed compare-and-sets did not).
fn may_write(op: &Operation) -> bool {
    match &op.outcome {
        Outcome::Ok(Ret::Cas(applied)) => *applied,
        Outcome::Ok(_) | Outcome::Indeterminate => true,
        Outcome::Fail => false,
    }
}

/// Whether an acknowledged operation shows the register holding something other than `seen`:
/// `Some(true)` by writing another value, `Some(false)` by reading one (or failing to find
/// `seen`), `None` if it shows nothing of the kind.
fn shows_other(op: &Operation, seen: Option<&String>) -> Option<bool> {
    let Outcome::Ok(ret) = &op.outcome else {
        return None;
    };
    match (&op.op, ret) {
        (Op::Write(value) | Op::FencedWrite { value, .. }, _) => {
            (seen != Some(value)).then_some(true)
        }
        (Op::Delete, _) => seen.is_some().then_some(true),
        (Op::Cas { new, .. }, Ret::Cas(true)) if seen != Some(new) => Some(true),
        (Op::Cas { expect, .. }, Ret::Cas(true)) => (expect.as_ref() != seen).then_some(false),
        (Op::Cas { expect, .. }, Ret::Cas(false)) => (expect.as_ref() == seen).then_some(false),
        (Op::Read, Ret::Value(value)) => (value.as_ref() != seen).then_some(false),
        _ => None,
    }
}

/// The one-line message and the "why" lines for the blocked operation.
fn explain(history: &History, key_ids: &[usize], blocked: &LOp) -> (String, Vec<String>) {
    let first = blocked.ids[0];
    let attempt = &history.ops[first];
    let generic = format!(
        "not linearizable: #{first} ({}) cannot take effect in any order that respects real time",
        attempt.op
    );
    let (seen, verb, anomaly) = match (&attempt.op, &attempt.outcome) {
        (Op::Read, Outcome::Ok(Ret::Value(value))) => (value.clone(), "read", "stale read"),
        (Op::Cas { expect, .. }, Outcome::Ok(Ret::Cas(true))) => (
            expect.clone(),
            "compare-and-set found",
            "stale compare-and-set",
        ),
        (Op::Cas { expect, .. }, Outcome::Ok(Ret::Cas(false))) => {
            return (
                generic,
                vec![format!(
                    "why: it did not find {}, yet every order consistent with the other results \
                     leaves {} in the register at that point",
                    show(expect.as_ref()),
                    show(expect.as_ref())
                )],
            );
        }
        _ => return (generic, Vec::new()),
    };
    let shown = show(seen.as_ref());
    let (call, ret) = (blocked.call, blocked.ret.unwrap_or(u64::MAX));

    let writes_seen = |op: &Operation| target(&op.op).as_ref() == Some(&seen);
    let mut possible: Vec<usize> = Vec::new();
    let mut refused: Vec<usize> = Vec::new();
    for &id in key_ids {
        let op = &history.ops[id];
        if writes_seen(op) {
            if may_write(op) {
                possible.push(id);
            } else if op.outcome == Outcome::Fail {
                refused.push(id);
            }
        }
    }
    let names = |ids: &[usize]| {
        ids.iter()
            .map(|id| format!("#{id}"))
            .collect::<Vec<_>>()
            .join(", ")
    };

    if seen.is_some() && possible.is_empty() {
        if refused.is_empty() {
            return (
                format!("#{first} {verb} {shown}, which no operation wrote"),
                vec![format!("why: no operation on this key writes {shown}")],
            );
        }
        return (
            format!("#{first} {verb} {shown}, written only by refused operations"),
            vec![format!(
                "why: {shown} was written only by {}, refused (definitely not applied)",
                names(&refused)
            )],
        );
    }
    if seen.is_some() && possible.iter().all(|&id| history.ops[id].invoke > ret) {
        let earliest = possible
            .iter()
            .map(|&id| history.ops[id].invoke)
            .min()
            .unwrap_or(0);
        return (
            format!("#{first} {verb} {shown} before it was written"),
            vec![format!(
                "why: {shown} is written only by {}, invoked at {earliest} or later, after #{first} \
                 returned at {ret}",
                names(&possible)
            )],
        );
    }

    // A stale value: every write of it (and, for "absent", the start) was followed by an
    // acknowledged operation that shows the register holding something else — it began after the
    // write was acknowledged and finished before the blocked operation began.
    let replaced_by = |done: Option<u64>| -> Option<usize> {
        let evidence = |writes: bool| {
            key_ids.iter().copied().find(|&id| {
                let op = &history.ops[id];
                done.is_none_or(|done| op.invoke > done)
                    && op.complete < call
                    && shows_other(op, seen.as_ref()) == Some(writes)
            })
        };
        evidence(true).or_else(|| evidence(false))
    };
    let mut stale = Vec::new();
    if seen.is_none() {
        match replaced_by(None) {
            Some(replacer) => stale.push((None, replacer)),
            None => return (generic, Vec::new()),
        }
    }
    for &writer in possible.iter().filter(|&&id| history.ops[id].invoke <= ret) {
        let op = &history.ops[writer];
        let replacer = if op.outcome.is_ok() {
            replaced_by(Some(op.complete))
        } else {
            None
        };
        match replacer {
            Some(replacer) => stale.push((Some(writer), replacer)),
            None => return (generic, Vec::new()),
        }
    }
    let Some(&(_, first_replacer)) = stale.first() else {
        return (generic, Vec::new());
    };
    let mut lines = Vec::new();
    for (writer, replacer) in stale.iter().take(SHOWN_WRITERS) {
        let r = &history.ops[*replacer];
        let origin = match writer {
            Some(writer) => format!(
                "{shown} was written by #{writer} (acknowledged at {})",
                history.ops[*writer].complete
            ),
            None => "the key starts absent".to_string(),
        };
        let what = match &r.outcome {
            Outcome::Ok(Ret::Ack) => format!("{}", r.op),
            Outcome::Ok(ret) => format!("{} → {ret}", r.op),
            _ => format!("{}", r.op),
        };
        lines.push(format!(
            "why: {origin}; #{replacer} ({what}) began after that, at {}, and finished at {}, \
             before #{first} began at {call}",
            r.invoke, r.complete
        ));
    }
    if stale.len() > SHOWN_WRITERS {
        lines.push(format!(
            "… and {} more writes of {shown}, each replaced the same way",
            stale.len() - SHOWN_WRITERS
        ));
    }
    (
        format!("{anomaly}: #{first} {verb} {shown}, which #{first_replacer} had already replaced"),
        lines,
    )
}
