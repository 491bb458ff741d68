//! The history of a simulated run: every client operation with its invocation and completion
//! (simulated time) and what the client learned, plus every nemesis event.
//!
//! The shapes follow `isle-chaos`'s history (one record per operation, `Ok` / `Fail` /
//! `Indeterminate`, unique written values, retries sharing a request id) so the engine can switch
//! to that crate's format and checkers without changing what it records.
//!
//! - **Time** is simulated nanoseconds since the simulation began (turmoil's clock), the same
//!   on every replay.
//! - **Outcome** `Ok` means acknowledged; `Fail` means it definitely did not take effect (a
//!   malformed request, a read that found too few replicas, a delete whose read failed so
//!   nothing was sent); `Indeterminate` means the client does not know (`Unavailable` after the
//!   coordinator may have stored it, the node crashed with the request in flight, the run
//!   ended first).
//! - A serialized history (JSON lines, [`History::to_json_lines`]) is byte-identical for the
//!   same seed: the determinism test compares exactly that.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::nemesis::Nemesis;

/// A client: one logical process issuing one operation at a time. A process whose operation
/// was cut off by a crash is retired and replaced by a fresh one, as in Jepsen.
pub type ProcessId = u64;

/// A hybrid logical timestamp of an `lww` write, as the coordinator stamped it.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Stamp {
    /// Wall-clock milliseconds as the coordinator's hybrid clock saw them.
    pub physical_ms: u64,
    /// Tie-breaking counter within one millisecond.
    pub logical: u32,
    /// The node that stamped the write.
    pub node: u64,
}

impl From<isle_crdt::Stamp> for Stamp {
    fn from(stamp: isle_crdt::Stamp) -> Self {
        Stamp {
            physical_ms: stamp.physical_ms,
            logical: stamp.logical,
            node: stamp.node.0,
        }
    }
}

/// What an AP key reads as.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApValue {
    /// Never written, or deleted.
    Absent,
    /// A plain value: one value, or several siblings.
    Values(BTreeSet<String>),
    /// A counter.
    Counter(i64),
    /// A set's members.
    Set(BTreeSet<String>),
    /// A map's counter fields (text fields read as their text's integer value, or 0).
    Map(BTreeMap<String, i64>),
}

impl ApValue {
    /// The history's form of a value the node returned.
    pub fn from_value(value: &isle_ap::Value) -> ApValue {
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

    /// The plain values it holds (none for CRDTs and absent keys).
    pub fn values(&self) -> BTreeSet<String> {
        match self {
            ApValue::Values(values) => values.clone(),
            _ => BTreeSet::new(),
        }
    }
}

/// What a client asked the AP keyspace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApOp {
    /// Write a plain value blind (it becomes a sibling of whatever is there; under `lww` the
    /// greatest stamp wins).
    Write {
        /// The value, unique in the run.
        value: String,
    },
    /// Read, then delete with the read's causal context: removes exactly what was read.
    Delete {
        /// The values the read returned (the delete's context covers them); filled in when the
        /// read has answered.
        covers: Vec<String>,
        /// The client was cut off (crash, end of run) before learning what its read returned:
        /// the delete may have covered any value written before it completed.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        covers_unknown: bool,
    },
    /// Add `by` to a counter (idempotent by the operation's request id).
    Incr {
        /// The amount.
        by: i64,
    },
    /// Add a member to an add-wins set.
    SetAdd {
        /// The member, unique in the run.
        member: String,
    },
    /// Remove a member, as the coordinator observes the set.
    SetRemove {
        /// The member.
        member: String,
    },
    /// Add `by` to a counter field of a map (idempotent by the request id).
    MapIncr {
        /// The field.
        field: String,
        /// The amount.
        by: i64,
    },
    /// Read the key (R = quorum).
    Read,
}

impl ApOp {
    /// The operation as recorded when its client was cut off before the answer: a delete's
    /// covered values are then unknown.
    pub fn cut_off(self) -> ApOp {
        match self {
            ApOp::Delete { covers, .. } => ApOp::Delete {
                covers,
                covers_unknown: true,
            },
            other => other,
        }
    }

    /// Whether the operation may change state.
    pub fn is_mutation(&self) -> bool {
        !matches!(self, ApOp::Read)
    }
}

/// What an operation returned when it succeeded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ret {
    /// Acknowledged.
    Ack,
    /// An `lww` write acknowledged with its stamp.
    Stamp(Stamp),
    /// A read's value.
    Read(ApValue),
}

/// What the client learned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// It took effect and returned this.
    Ok(Ret),
    /// It definitely did not take effect.
    Fail,
    /// Unknown: it may take effect at any time after its invocation, or never.
    Indeterminate,
}

impl Outcome {
    /// Whether the outcome is `Ok`.
    pub fn is_ok(&self) -> bool {
        matches!(self, Outcome::Ok(_))
    }

    /// Whether the operation may have taken effect.
    pub fn may_have_applied(&self) -> bool {
        !matches!(self, Outcome::Fail)
    }
}

/// One client operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Operation {
    /// The client.
    pub process: ProcessId,
    /// The node the client is attached to (it calls that node's AP coordinator in-process).
    pub node: u64,
    /// The bucket.
    pub bucket: String,
    /// The key.
    pub key: String,
    /// What was asked.
    pub op: ApOp,
    /// Shared by every retry of one logical request (increments only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Write level (`one`, `quorum`, ...) for mutations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<String>,
    /// When the client sent it, simulated ns.
    pub invoke_ns: u64,
    /// When the client learned the outcome (or gave up), simulated ns.
    pub complete_ns: u64,
    /// What the client learned.
    pub outcome: Outcome,
    /// The error the client saw.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

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

/// One replica's final copy of a key, read from its own store after the run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinalCopy {
    /// The node.
    pub node: u64,
    /// Whether the node is one of the key's N primary replicas.
    pub primary: bool,
    /// Its value and digest; `None`: it holds no copy.
    pub copy: Option<(ApValue, String)>,
    /// Values held as more than one sibling (one client write stored as two writes).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub duplicates: Vec<String>,
}

/// Everything a run recorded.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    /// The seed the run was derived from.
    pub seed: u64,
    /// AP operations, in completion order.
    pub ops: Vec<Operation>,
    /// CP operations, in completion order, in `isle-chaos`'s shape (keys `cp/r*`, `cp/f*`
    /// and lock names; nodes `n1`, `n2`, ...; times in simulated ns).
    #[serde(default)]
    pub cp: Vec<isle_chaos::history::Operation>,
    /// Nemesis events, in time order.
    pub nemeses: Vec<NemesisEvent>,
    /// Every replica's final copy of every key the workload touched, by `bucket/key`.
    pub finals: BTreeMap<String, Vec<FinalCopy>>,
}

impl History {
    /// The history as JSON lines: one header line, one line per nemesis event, one per
    /// operation, one per key's final copies. The same seed gives the same bytes.
    pub fn to_json_lines(&self) -> Result<String, serde_json::Error> {
        let mut out = serde_json::to_string(&serde_json::json!({ "seed": self.seed }))?;
        out.push('\n');
        for event in &self.nemeses {
            out.push_str(&serde_json::to_string(event)?);
            out.push('\n');
        }
        for op in &self.ops {
            out.push_str(&serde_json::to_string(op)?);
            out.push('\n');
        }
        for op in &self.cp {
            out.push_str(&serde_json::to_string(&serde_json::json!({ "cp": op }))?);
            out.push('\n');
        }
        for (key, copies) in &self.finals {
            out.push_str(&serde_json::to_string(
                &serde_json::json!({ "final": key, "copies": copies }),
            )?);
            out.push('\n');
        }
        Ok(out)
    }

    /// How many AP operations ended each way: `(ok, fail, indeterminate)`.
    pub fn outcome_counts(&self) -> (usize, usize, usize) {
        self.ops
            .iter()
            .fold((0, 0, 0), |(ok, fail, unknown), op| match op.outcome {
                Outcome::Ok(_) => (ok + 1, fail, unknown),
                Outcome::Fail => (ok, fail + 1, unknown),
                Outcome::Indeterminate => (ok, fail, unknown + 1),
            })
    }

    /// How many CP operations ended each way: `(ok, fail, indeterminate)`.
    pub fn cp_outcome_counts(&self) -> (usize, usize, usize) {
        use isle_chaos::history::Outcome as CpOutcome;
        self.cp
            .iter()
            .fold((0, 0, 0), |(ok, fail, unknown), op| match op.outcome {
                CpOutcome::Ok(_) => (ok + 1, fail, unknown),
                CpOutcome::Fail => (ok, fail + 1, unknown),
                CpOutcome::Indeterminate => (ok, fail, unknown + 1),
            })
    }
}
