//! What a run records, in `isle-chaos`'s model: every client operation of both keyspaces in
//! one [`isle_chaos::History`] (in completion order; keys `bucket/key` for AP, `cp/r*`, `cp/f*`
//! and lock names for CP; nodes `n1`, `n2`, ...; times in simulated nanoseconds since the
//! simulation began, the same on every replay), every replica's final copy of every AP key in
//! one [`isle_chaos::convergence::FinalState`], and the nemesis events.
//!
//! Outcomes: `Ok` means acknowledged; `Fail` means it definitely did not take effect (a
//! malformed request, a read that found too few replicas, a delete whose read failed so nothing
//! was sent); `Indeterminate` means the client does not know (`Unavailable` after the
//! coordinator may have stored it, the node crashed with the request in flight, the run ended
//! first).
//!
//! The run's JSON lines ([`Run::to_json_lines`]) are byte-identical for the same seed: the
//! determinism test compares exactly that.

use isle_chaos::{ApValue, Stamp};
use serde::{Deserialize, Serialize};

use crate::engine::Run;
use crate::nemesis::Nemesis;

/// A nemesis starting or stopping.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NemesisEvent {
    /// Simulated ns.
    pub at_ns: u64,
    /// Started (`true`) or stopped.
    pub start: bool,
    /// Which.
    pub nemesis: Nemesis,
}

/// The history's form of a value a node returned. Map text fields read as their text's integer
/// value, or 0 (the workload writes counter fields only).
pub fn ap_value(value: &isle_ap::Value) -> ApValue {
    let text = |bytes: &Vec<u8>| String::from_utf8_lossy(bytes).into_owned();
    match value {
        isle_ap::Value::Absent => ApValue::Absent,
        isle_ap::Value::Values(values) => ApValue::Values(values.iter().map(text).collect()),
        isle_ap::Value::Counter(n) => ApValue::Counter(*n),
        isle_ap::Value::Set(members) => ApValue::Set(members.iter().map(text).collect()),
        isle_ap::Value::Map(fields) => ApValue::Map(
            fields
                .iter()
                .map(|(field, value)| {
                    let n = match value {
                        isle_ap::FieldValue::Int(n) => *n,
                        isle_ap::FieldValue::Text(t) => {
                            String::from_utf8_lossy(t).parse().unwrap_or(0)
                        }
                    };
                    (text(field), n)
                })
                .collect(),
        ),
    }
}

/// The history's form of an `lww` write's stamp.
pub fn stamp(stamp: isle_crdt::Stamp) -> Stamp {
    Stamp {
        physical_ms: stamp.physical_ms,
        logical: stamp.logical,
        node: stamp.node.0,
    }
}

impl Run {
    /// The run as JSON lines: one header line (the seed), one line per nemesis event, one per
    /// operation, one per key's final copies. The same seed gives the same bytes.
    pub fn to_json_lines(&self) -> Result<String, serde_json::Error> {
        let mut out = serde_json::to_string(&serde_json::json!({ "seed": self.config.seed }))?;
        out.push('\n');
        for event in &self.nemeses {
            out.push_str(&serde_json::to_string(event)?);
            out.push('\n');
        }
        for op in &self.history.ops {
            out.push_str(&serde_json::to_string(op)?);
            out.push('\n');
        }
        for (key, copies) in &self.finals.keys {
            out.push_str(&serde_json::to_string(
                &serde_json::json!({ "final": key, "copies": copies }),
            )?);
            out.push('\n');
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_values_read_as_history_values() {
        let map = isle_ap::Value::Map(
            [
                (b"n".to_vec(), isle_ap::FieldValue::Int(4)),
                (b"t".to_vec(), isle_ap::FieldValue::Text(b"12".to_vec())),
                (b"x".to_vec(), isle_ap::FieldValue::Text(b"no".to_vec())),
            ]
            .into_iter()
            .collect(),
        );
        let expected = [("n", 4), ("t", 12), ("x", 0)]
            .into_iter()
            .map(|(k, n)| (k.to_string(), n))
            .collect();
        assert_eq!(ap_value(&map), ApValue::Map(expected));
        let values = isle_ap::Value::Values([b"a".to_vec()].into_iter().collect());
        assert_eq!(
            ap_value(&values),
            ApValue::Values(["a".to_string()].into_iter().collect())
        );
    }
}
