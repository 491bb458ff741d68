//! Availability figures: during each window (a partition, a pause, the time after a heal), what
//! fraction of requests succeeded — overall, per side of the partition and per node — and how
//! long after the window each group got its first success.
//!
//! A request belongs to a window if it was invoked inside it (`from <= invoke < to`), and to the
//! node it was sent to ([`Operation::node`](crate::history::Operation)); requests with no node
//! count only toward "all". A compare-and-set that did not apply is a success (the service
//! answered); refusals and timeouts are not.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::history::{History, Keyspace, Operation, Outcome, Time};

/// A named interval of the run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    /// Its name ("partition 1", "after heal").
    pub name: String,
    /// Start, inclusive.
    pub from: Time,
    /// End, exclusive.
    pub to: Time,
}

impl Window {
    /// A window from `from` (inclusive) to `to` (exclusive).
    pub fn new(name: impl Into<String>, from: Time, to: Time) -> Self {
        Self {
            name: name.into(),
            from,
            to,
        }
    }
}

/// One row of figures: a window, a group of requests, a keyspace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Availability {
    /// The window's name.
    pub window: String,
    /// `all`, `side NAME` or `node NAME`.
    pub group: String,
    /// The keyspace.
    pub keyspace: Keyspace,
    /// Requests invoked in the window.
    pub requests: usize,
    /// That succeeded.
    pub ok: usize,
    /// That were refused.
    pub refused: usize,
    /// That timed out (outcome unknown).
    pub indeterminate: usize,
    /// `ok / requests`; `None` without requests.
    pub fraction: Option<f64>,
    /// From the window's end to the first success of a request invoked after it, if any.
    pub first_ok_after: Option<Time>,
}

impl fmt::Display for Availability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {}: {}/{} ok",
            self.window, self.keyspace, self.group, self.ok, self.requests
        )?;
        if let Some(fraction) = self.fraction {
            write!(f, " ({:.1}%)", fraction * 100.0)?;
        }
        write!(
            f,
            ", {} refused, {} unknown",
            self.refused, self.indeterminate
        )?;
        if let Some(after) = self.first_ok_after {
            write!(f, "; first success {after} after the window")?;
        }
        Ok(())
    }
}

/// A named group of requests and the test for membership.
type Group<'a> = (String, Box<dyn Fn(&Operation) -> bool + 'a>);

/// Figures for every window × group × keyspace that had requests. `sides` names the sides of a
/// partition and their nodes (a node may be on several sides, as a bridge is).
pub fn figures(
    history: &History,
    windows: &[Window],
    sides: &BTreeMap<String, BTreeSet<String>>,
) -> Vec<Availability> {
    let mut groups: Vec<Group> = vec![("all".to_string(), Box::new(|_: &Operation| true))];
    for (side, nodes) in sides {
        groups.push((
            format!("side {side}"),
            Box::new(move |op: &Operation| op.node.as_ref().is_some_and(|n| nodes.contains(n))),
        ));
    }
    let nodes: BTreeSet<&str> = history
        .ops
        .iter()
        .filter_map(|op| op.node.as_deref())
        .collect();
    for node in nodes {
        groups.push((
            format!("node {node}"),
            Box::new(move |op: &Operation| op.node.as_deref() == Some(node)),
        ));
    }
    let keyspaces: BTreeSet<Keyspace> = history.ops.iter().map(|op| op.op.keyspace()).collect();
    let mut rows = Vec::new();
    for window in windows {
        for keyspace in &keyspaces {
            for (group, member) in &groups {
                let ops = || {
                    history
                        .ops
                        .iter()
                        .filter(|op| op.op.keyspace() == *keyspace && member(op))
                };
                let inside: Vec<&Operation> = ops()
                    .filter(|op| window.from <= op.invoke && op.invoke < window.to)
                    .collect();
                if inside.is_empty() {
                    continue;
                }
                let count =
                    |f: fn(&Outcome) -> bool| inside.iter().filter(|op| f(&op.outcome)).count();
                let ok = count(Outcome::is_ok);
                let first_ok_after = ops()
                    .filter(|op| op.invoke >= window.to && op.outcome.is_ok())
                    .map(|op| op.complete.saturating_sub(window.to))
                    .min();
                rows.push(Availability {
                    window: window.name.clone(),
                    group: group.clone(),
                    keyspace: *keyspace,
                    requests: inside.len(),
                    ok,
                    refused: count(|o| *o == Outcome::Fail),
                    indeterminate: count(|o| *o == Outcome::Indeterminate),
                    fraction: Some(ok as f64 / inside.len() as f64),
                    first_ok_after,
                });
            }
        }
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{Op, Ret};

    fn op(node: &str, invoke: u64, outcome: Outcome, ap: bool) -> Operation {
        let kind = if ap { Op::ApRead } else { Op::Read };
        Operation::new(1, "k", kind, invoke, invoke + 5, outcome).on(node)
    }

    #[test]
    fn minority_refuses_cp_while_ap_stays_up() {
        let ok = || Outcome::Ok(Ret::Value(None));
        let ap_ok = || Outcome::Ok(Ret::Ap(crate::history::ApValue::Absent));
        let history: History = vec![
            // Before the partition: everyone fine (outside the window).
            op("n3", 0, ok(), false),
            // During: the majority side answers, the minority refuses CP and answers AP.
            op("n1", 100, ok(), false),
            op("n2", 110, ok(), false),
            op("n3", 120, Outcome::Fail, false),
            op("n3", 130, Outcome::Indeterminate, false),
            op("n3", 140, ap_ok(), true),
            // After the heal, n3 succeeds again 30 after the window's end.
            op("n3", 225, ok(), false),
        ]
        .into_iter()
        .collect();
        let sides = BTreeMap::from([
            (
                "majority".to_string(),
                BTreeSet::from(["n1".to_string(), "n2".to_string()]),
            ),
            ("minority".to_string(), BTreeSet::from(["n3".to_string()])),
        ]);
        let rows = figures(&history, &[Window::new("partition", 100, 200)], &sides);
        for row in &rows {
            println!("{row}");
        }
        let find = |group: &str, keyspace| {
            rows.iter()
                .find(|r| r.group == group && r.keyspace == keyspace)
                .unwrap()
        };
        let minority = find("side minority", Keyspace::Cp);
        assert_eq!(
            (
                minority.requests,
                minority.ok,
                minority.refused,
                minority.indeterminate
            ),
            (2, 0, 1, 1)
        );
        assert_eq!(minority.fraction, Some(0.0));
        assert_eq!(minority.first_ok_after, Some(30));
        assert_eq!(find("side majority", Keyspace::Cp).fraction, Some(1.0));
        assert_eq!(find("all", Keyspace::Cp).requests, 4);
        assert_eq!(find("node n3", Keyspace::Ap).fraction, Some(1.0));
        assert_eq!(
            minority.to_string(),
            "partition cp side minority: 0/2 ok (0.0%), 1 refused, 1 unknown; first success 30 after the window"
        );
        assert!(
            rows.iter()
                .all(|r| r.group != "side majority" || r.keyspace == Keyspace::Cp)
        );
    }
}
