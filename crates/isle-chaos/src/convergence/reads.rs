//! Reads return only what was written: every plain value, set member or map field an
//! acknowledged read returned was written by an operation that may have applied (refused ones
//! do not count). Counters are not checked here (any partial sum is a possible read).

use std::collections::BTreeSet;

use super::{KeyType, Logical};
use crate::history::{ApValue, History, Op, Outcome, Ret};
use crate::verdict::Verdict;

/// Checks the acknowledged reads `read_ids` of `key`, whose mutations are `ops`.
pub(super) fn check(
    history: &History,
    key: &str,
    read_ids: &[usize],
    ops: &[Logical],
    kind: KeyType,
    verdict: &mut Verdict,
) {
    let written: BTreeSet<&str> = ops
        .iter()
        .filter_map(|op| match (&op.op.op, kind) {
            (Op::ApWrite { value, .. }, KeyType::Plain) => Some(value.as_str()),
            (Op::SetAdd(member), KeyType::Set) => Some(member.as_str()),
            (Op::MapIncr { field, .. }, KeyType::Map) => Some(field.as_str()),
            _ => None,
        })
        .collect();
    for &id in read_ids {
        let read = &history.ops[id];
        let Outcome::Ok(Ret::Ap(value)) = &read.outcome else {
            continue;
        };
        let returned: Vec<&str> = match (value, kind) {
            (ApValue::Values(values), KeyType::Plain) => {
                values.iter().map(String::as_str).collect()
            }
            (ApValue::Set(members), KeyType::Set) => members.iter().map(String::as_str).collect(),
            (ApValue::Map(fields), KeyType::Map) => fields.keys().map(String::as_str).collect(),
            _ => Vec::new(),
        };
        let phantoms: Vec<String> = returned
            .into_iter()
            .filter(|item| !written.contains(item))
            .map(|item| format!("{item:?}"))
            .collect();
        if !phantoms.is_empty() {
            verdict.violation(
                Some(key),
                format!(
                    "a read returned {}, never written (or only by refused operations)",
                    phantoms.join(", ")
                ),
                vec![format!("#{id} {read}")],
            );
        }
    }
}
