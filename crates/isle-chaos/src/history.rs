//! The history of a run: every client operation with its invocation time, its completion time and
//! what the client learned — a definite result, a definite refusal, or nothing (a timeout).
//!
//! A history is what the engines record and what every checker reads. It is plain data, stored
//! as JSON lines (one [`Operation`] per line) so a run can be kept, diffed and checked again.
//!
//! Conventions the checkers rely on:
//! - **Time** is one monotonic clock per run (the engines record nanoseconds since the run began;
//!   the checkers only compare times). `invoke <= complete`.
//! - **Outcome** `Ok` means the operation took effect and returned the recorded result; `Fail`
//!   means it *definitely* did not take effect (a CP `NoQuorum` refusal before proposing, a
//!   refused fenced write); `Indeterminate` means the client does not know (a timeout, a lost
//!   connection, an AP `Unavailable` whose write may have reached some replicas): it may take
//!   effect at any time after its invocation, or never. Its `complete` is when the client gave up,
//!   which bounds nothing.
//! - **Values** written are unique per key (the workloads write `"<client>-<n>"`), so a value read
//!   names the write that produced it. The checkers stay sound without this, but explain less.
//! - **Retries** of one logical request carry the same `request_id`; checkers merge them into one
//!   operation (applied at most once, thanks to the server's idempotency table).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::{BufRead, Write};

use serde::{Deserialize, Serialize};

/// A value written by a client. Workloads write unique values per key.
pub type Value = String;

/// A client (a logical process issuing one operation at a time, as Jepsen's processes do).
pub type ProcessId = u64;

/// A reading of the run's monotonic clock (nanoseconds since the run began, by convention).
pub type Time = u64;

/// Which keyspace an operation addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Keyspace {
    /// The CP keyspace (Raft): registers and locks.
    Cp,
    /// The AP keyspace (Dynamo-style): plain values and CRDTs.
    Ap,
}

impl fmt::Display for Keyspace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Keyspace::Cp => "cp",
            Keyspace::Ap => "ap",
        })
    }
}

/// A hybrid logical timestamp, as the AP keyspace stamps `lww` writes. Ordered field by field.
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

impl fmt::Display for Stamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}@{}", self.physical_ms, self.logical, self.node)
    }
}

/// How an AP bucket merges concurrent writes of plain values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MergeRule {
    /// Concurrent writes are kept side by side (dotted version vectors).
    Siblings,
    /// The write with the greatest hybrid timestamp wins; concurrent writes are discarded.
    Lww,
}

/// What an AP key reads as (in a client's read or in the final read of each replica).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApValue {
    /// Never written, or deleted.
    Absent,
    /// A plain value: one value, or several siblings.
    Values(BTreeSet<Value>),
    /// A counter.
    Counter(i64),
    /// A set's members.
    Set(BTreeSet<String>),
    /// A map of counter fields.
    Map(BTreeMap<String, i64>),
}

impl ApValue {
    /// Whether this reads as "nothing there" (absent, or an empty value, set or map).
    pub fn is_empty(&self) -> bool {
        match self {
            ApValue::Absent => true,
            ApValue::Values(values) => values.is_empty(),
            ApValue::Set(members) => members.is_empty(),
            ApValue::Map(fields) => fields.is_empty(),
            ApValue::Counter(_) => false,
        }
    }
}

impl fmt::Display for ApValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn list<'a>(items: impl Iterator<Item = &'a String>) -> String {
            items
                .map(|item| format!("{item:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        }
        match self {
            ApValue::Absent => f.write_str("absent"),
            ApValue::Values(values) => write!(f, "values [{}]", list(values.iter())),
            ApValue::Counter(n) => write!(f, "counter {n}"),
            ApValue::Set(members) => write!(f, "set {{{}}}", list(members.iter())),
            ApValue::Map(fields) => {
                let fields: Vec<String> =
                    fields.iter().map(|(k, v)| format!("{k:?}: {v}")).collect();
                write!(f, "map {{{}}}", fields.join(", "))
            }
        }
    }
}

/// What a client asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// CP: read the key (linearizable read). Returns [`Ret::Value`].
    Read,
    /// CP: write the key. Returns [`Ret::Ack`].
    Write(Value),
    /// CP: compare-and-set; `expect: None` means "the key is absent". Returns [`Ret::Cas`].
    Cas {
        /// The value the key must hold.
        expect: Option<Value>,
        /// The value written if it does.
        new: Value,
    },
    /// CP: delete the key. Returns [`Ret::Ack`].
    Delete,
    /// CP: acquire a lock (the operation's key is the lock's name). Returns [`Ret::Token`].
    Acquire {
        /// The lock.
        lock: String,
    },
    /// CP: release a lock held with `token`. Returns [`Ret::Ack`].
    Release {
        /// The lock.
        lock: String,
        /// The token it was held with.
        token: i64,
    },
    /// CP: a write of the operation's key fenced by `(lock, token)`. `Ok(Ack)` means accepted,
    /// `Fail` refused. An accepted fenced write is also a register write for linearizability.
    FencedWrite {
        /// The lock whose token fences the write.
        lock: String,
        /// The token presented.
        token: i64,
        /// The value written.
        value: Value,
    },
    /// AP: write a plain value in `bucket` (whose rule decides how concurrent writes merge).
    /// Returns [`Ret::Ack`] or, for `lww` buckets, [`Ret::Stamp`].
    ApWrite {
        /// The bucket.
        bucket: String,
        /// The value.
        value: Value,
        /// The values the client's causal context covered (what it had read and now replaces);
        /// empty for a blind write, which becomes a sibling of whatever is there.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        covers: Vec<Value>,
        /// Sent without a context, to replace whatever the coordinator holds (Redis `SET`): it
        /// may have covered any value written before it completed.
        #[serde(default, skip_serializing_if = "is_false")]
        local: bool,
    },
    /// AP: delete the key. `covers` and `local` as for [`Op::ApWrite`] (`covers`: values, or
    /// set members, that the client had read and whose context it sent). Returns [`Ret::Ack`]
    /// or [`Ret::Stamp`].
    ApDelete {
        /// The values or members the delete's causal context covered.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        covers: Vec<Value>,
        /// Sent without a context, deleting whatever the coordinator holds (Redis `DEL`).
        #[serde(default, skip_serializing_if = "is_false")]
        local: bool,
        /// Sent with the context of a read whose answer the client never learned (it was cut
        /// off): the read came before the client gave up, so the delete may have covered any
        /// value whose write was invoked before the operation's `complete`, and no later one.
        #[serde(default, skip_serializing_if = "is_false")]
        covers_unknown: bool,
    },
    /// AP: add `n` (signed) to a counter. Returns [`Ret::Ack`].
    Incr(i64),
    /// AP: add a member to an add-wins set. Returns [`Ret::Ack`].
    SetAdd(String),
    /// AP: remove a member from a set, as the coordinator observes it. Returns [`Ret::Ack`].
    SetRemove(String),
    /// AP: add `n` to a counter field of a map. Returns [`Ret::Ack`].
    MapIncr {
        /// The field.
        field: String,
        /// The amount.
        n: i64,
    },
    /// AP: read the key. Returns [`Ret::Ap`].
    ApRead,
}

impl Op {
    /// The keyspace the operation addresses.
    pub fn keyspace(&self) -> Keyspace {
        match self {
            Op::Read
            | Op::Write(_)
            | Op::Cas { .. }
            | Op::Delete
            | Op::Acquire { .. }
            | Op::Release { .. }
            | Op::FencedWrite { .. } => Keyspace::Cp,
            Op::ApWrite { .. }
            | Op::ApDelete { .. }
            | Op::Incr(_)
            | Op::SetAdd(_)
            | Op::SetRemove(_)
            | Op::MapIncr { .. }
            | Op::ApRead => Keyspace::Ap,
        }
    }

    /// Whether the operation may change state (everything but reads).
    pub fn is_mutation(&self) -> bool {
        !matches!(self, Op::Read | Op::ApRead)
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn covering(covers: &[Value]) -> String {
            if covers.is_empty() {
                String::new()
            } else {
                let values: Vec<String> = covers.iter().map(|v| format!("{v:?}")).collect();
                format!(" covering [{}]", values.join(", "))
            }
        }
        match self {
            Op::Read => f.write_str("read"),
            Op::Write(value) => write!(f, "write {value:?}"),
            Op::Cas { expect, new } => {
                write!(f, "cas {} → {new:?}", show(expect.as_ref()))
            }
            Op::Delete => f.write_str("delete"),
            Op::Acquire { lock } => write!(f, "acquire {lock:?}"),
            Op::Release { lock, token } => write!(f, "release {lock:?} token {token}"),
            Op::FencedWrite { lock, token, value } => {
                write!(f, "fenced write {value:?} with {lock:?} token {token}")
            }
            Op::ApWrite {
                bucket,
                value,
                covers,
                local,
            } => write!(
                f,
                "ap write {value:?} in {bucket:?}{}{}",
                covering(covers),
                if *local { " (local)" } else { "" }
            ),
            Op::ApDelete {
                covers,
                local,
                covers_unknown,
            } => write!(
                f,
                "ap delete{}{}{}",
                covering(covers),
                if *local { " (local)" } else { "" },
                if *covers_unknown {
                    " (covering what an unseen read returned)"
                } else {
                    ""
                }
            ),
            Op::Incr(n) => write!(f, "incr {n:+}"),
            Op::SetAdd(member) => write!(f, "set add {member:?}"),
            Op::SetRemove(member) => write!(f, "set remove {member:?}"),
            Op::MapIncr { field, n } => write!(f, "map incr {field:?} {n:+}"),
            Op::ApRead => f.write_str("ap read"),
        }
    }
}

/// For serde: skip `false` flags.
fn is_false(flag: &bool) -> bool {
    !*flag
}

/// How a register value reads in messages: `"v"` or `absent`.
pub(crate) fn show(value: Option<&Value>) -> String {
    match value {
        Some(value) => format!("{value:?}"),
        None => "absent".to_string(),
    }
}

/// What an operation returned when it succeeded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ret {
    /// Done (a write, delete, increment, set update, release, accepted fenced write).
    Ack,
    /// A CP read's value (`None`: absent).
    Value(Option<Value>),
    /// Whether a compare-and-set applied.
    Cas(bool),
    /// The fencing token of an acquired lock.
    Token(i64),
    /// An AP write or delete acknowledged with its `lww` timestamp.
    Stamp(Stamp),
    /// An AP read's value.
    Ap(ApValue),
}

impl fmt::Display for Ret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ret::Ack => f.write_str("ok"),
            Ret::Value(value) => f.write_str(&show(value.as_ref())),
            Ret::Cas(true) => f.write_str("applied"),
            Ret::Cas(false) => f.write_str("not applied"),
            Ret::Token(token) => write!(f, "token {token}"),
            Ret::Stamp(stamp) => write!(f, "ok at {stamp}"),
            Ret::Ap(value) => write!(f, "{value}"),
        }
    }
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

    /// Whether the operation may have taken effect (`Ok` or `Indeterminate`).
    pub fn may_have_applied(&self) -> bool {
        !matches!(self, Outcome::Fail)
    }
}

/// One client operation: who, on which key, what, when, and what came of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Operation {
    /// The client.
    pub process: ProcessId,
    /// The node the client sent the request to, if known (for availability figures).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// The key (for locks: the lock's name; for fenced writes: the key written).
    pub key: String,
    /// What was asked.
    pub op: Op,
    /// Shared by every retry of one logical request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// The consistency level asked for (an AP write's `one`, `quorum`, ...), for reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<String>,
    /// When the client sent it.
    pub invoke: Time,
    /// When the client learned the outcome (or, if indeterminate, gave up).
    pub complete: Time,
    /// What the client learned.
    pub outcome: Outcome,
    /// The error the client saw, for reports (`NoQuorum`, `Timeout`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Operation {
    /// An operation with no node, request id, level or error.
    pub fn new(
        process: ProcessId,
        key: impl Into<String>,
        op: Op,
        invoke: Time,
        complete: Time,
        outcome: Outcome,
    ) -> Self {
        Self {
            process,
            node: None,
            key: key.into(),
            op,
            request_id: None,
            level: None,
            invoke,
            complete,
            outcome,
            error: None,
        }
    }

    /// Sets the node the request went to.
    pub fn on(mut self, node: impl Into<String>) -> Self {
        self.node = Some(node.into());
        self
    }

    /// Sets the request id shared by retries.
    pub fn with_request_id(mut self, id: impl Into<String>) -> Self {
        self.request_id = Some(id.into());
        self
    }

    /// Sets the consistency level asked for.
    pub fn at_level(mut self, level: impl Into<String>) -> Self {
        self.level = Some(level.into());
        self
    }

    /// Sets the error the client saw.
    pub fn with_error(mut self, error: impl Into<String>) -> Self {
        self.error = Some(error.into());
        self
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "client {} {}", self.process, self.op)?;
        match &self.outcome {
            Outcome::Ok(ret) => write!(f, " → {ret} [{}..{}]", self.invoke, self.complete)?,
            Outcome::Fail => write!(f, " → refused [{}..{}]", self.invoke, self.complete)?,
            Outcome::Indeterminate => write!(
                f,
                " → unknown [{}..∞) (gave up at {})",
                self.invoke, self.complete
            )?,
        }
        if let Some(error) = &self.error {
            write!(f, " ({error})")?;
        }
        Ok(())
    }
}

/// Why a history could not be read, written or recorded.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// A JSON line did not parse.
    #[error("history line {line}: {source}")]
    Json {
        /// 1-based line number.
        line: usize,
        /// The parser's complaint.
        source: serde_json::Error,
    },
    /// Reading or writing failed.
    #[error("history io: {0}")]
    Io(#[from] std::io::Error),
    /// An operation could not be encoded.
    #[error("history encoding: {0}")]
    Encode(serde_json::Error),
    /// [`Recorder::complete`] was given an operation that is not pending.
    #[error("operation {0} is not pending (unknown or completed twice)")]
    NotPending(usize),
}

/// A run's operations, in the order they were recorded. An operation's index is its id (`#i` in
/// the checkers' stories).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    /// The operations.
    pub ops: Vec<Operation>,
}

impl History {
    /// An empty history.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends an operation and returns its id.
    pub fn push(&mut self, op: Operation) -> usize {
        self.ops.push(op);
        self.ops.len() - 1
    }

    /// Number of operations.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether there are no operations.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// How many operations on `keyspace` ended each way.
    pub fn outcome_counts(&self, keyspace: Keyspace) -> OutcomeCounts {
        let mut counts = OutcomeCounts::default();
        for op in self.ops.iter().filter(|op| op.op.keyspace() == keyspace) {
            match op.outcome {
                Outcome::Ok(_) => counts.ok += 1,
                Outcome::Fail => counts.fail += 1,
                Outcome::Indeterminate => counts.indeterminate += 1,
            }
        }
        counts
    }

    /// The operations on `keyspace` (ids renumbered), for checkers of one keyspace.
    pub fn of_keyspace(&self, keyspace: Keyspace) -> History {
        self.ops
            .iter()
            .filter(|op| op.op.keyspace() == keyspace)
            .cloned()
            .collect()
    }

    /// The keys touched, sorted.
    pub fn keys(&self) -> BTreeSet<&str> {
        self.ops.iter().map(|op| op.key.as_str()).collect()
    }

    /// Problems that make the history malformed: completion before invocation, or a result whose
    /// type does not fit the operation. Checkers ignore the operations listed here.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for (id, op) in self.ops.iter().enumerate() {
            if op.complete < op.invoke {
                problems.push(format!("#{id} completes before it is invoked: {op}"));
            }
            if let Outcome::Ok(ret) = &op.outcome
                && !ret_fits(&op.op, ret)
            {
                problems.push(format!("#{id} has a result that does not fit it: {op}"));
            }
        }
        problems
    }

    /// The history as JSON lines, one operation per line.
    pub fn to_jsonl(&self) -> Result<String, HistoryError> {
        let mut out = Vec::new();
        self.write_jsonl(&mut out)?;
        String::from_utf8(out)
            .map_err(|e| HistoryError::Io(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))
    }

    /// Writes the history as JSON lines.
    pub fn write_jsonl(&self, mut out: impl Write) -> Result<(), HistoryError> {
        for op in &self.ops {
            serde_json::to_writer(&mut out, op).map_err(HistoryError::Encode)?;
            out.write_all(b"\n")?;
        }
        Ok(())
    }

    /// Parses JSON lines (blank lines are skipped).
    pub fn from_jsonl(text: &str) -> Result<History, HistoryError> {
        Self::read_jsonl(text.as_bytes())
    }

    /// Reads JSON lines (blank lines are skipped).
    pub fn read_jsonl(input: impl BufRead) -> Result<History, HistoryError> {
        let mut history = History::new();
        for (index, line) in input.lines().enumerate() {
            let line = line?;
            if line.trim().is_empty() {
                continue;
            }
            let op = serde_json::from_str(&line).map_err(|source| HistoryError::Json {
                line: index + 1,
                source,
            })?;
            history.push(op);
        }
        Ok(history)
    }
}

/// How many operations ended each way.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutcomeCounts {
    /// Acknowledged.
    pub ok: usize,
    /// Definitely refused.
    pub fail: usize,
    /// Unknown.
    pub indeterminate: usize,
}

impl fmt::Display for OutcomeCounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.ok, self.fail, self.indeterminate)
    }
}

impl FromIterator<Operation> for History {
    fn from_iter<I: IntoIterator<Item = Operation>>(iter: I) -> Self {
        Self {
            ops: iter.into_iter().collect(),
        }
    }
}

/// Whether `ret` is a possible result of `op`.
pub(crate) fn ret_fits(op: &Op, ret: &Ret) -> bool {
    match op {
        Op::Read => matches!(ret, Ret::Value(_)),
        Op::Cas { .. } => matches!(ret, Ret::Cas(_)),
        Op::Acquire { .. } => matches!(ret, Ret::Token(_)),
        Op::Write(_) | Op::Delete | Op::Release { .. } | Op::FencedWrite { .. } => {
            matches!(ret, Ret::Ack)
        }
        Op::ApWrite { .. } | Op::ApDelete { .. } => matches!(ret, Ret::Ack | Ret::Stamp(_)),
        Op::Incr(_) | Op::SetAdd(_) | Op::SetRemove(_) | Op::MapIncr { .. } => {
            matches!(ret, Ret::Ack)
        }
        Op::ApRead => matches!(ret, Ret::Ap(_)),
    }
}

/// A handle on an invoked, not yet completed operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Pending(usize);

impl Pending {
    /// The operation's id in the history.
    pub fn id(self) -> usize {
        self.0
    }
}

/// Records a history as it happens: [`Recorder::invoke`] when a request is sent,
/// [`Recorder::complete`] when its outcome is known. Operations still pending at
/// [`Recorder::finish`] are indeterminate.
#[derive(Debug, Default)]
pub struct Recorder {
    history: History,
    pending: BTreeSet<usize>,
}

impl Recorder {
    /// An empty recorder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that `process` sent `op` on `key` at `at`.
    pub fn invoke(
        &mut self,
        process: ProcessId,
        key: impl Into<String>,
        op: Op,
        at: Time,
    ) -> Pending {
        self.invoke_operation(Operation::new(
            process,
            key,
            op,
            at,
            at,
            Outcome::Indeterminate,
        ))
    }

    /// Records an invocation given as a whole operation (to set its node or request id); its
    /// `complete` and `outcome` are overwritten on completion.
    pub fn invoke_operation(&mut self, op: Operation) -> Pending {
        let id = self.history.push(op);
        self.pending.insert(id);
        Pending(id)
    }

    /// Records the outcome of a pending operation.
    pub fn complete(
        &mut self,
        pending: Pending,
        outcome: Outcome,
        at: Time,
    ) -> Result<(), HistoryError> {
        self.complete_with_error(pending, outcome, None, at)
    }

    /// Records the outcome of a pending operation, with the error the client saw.
    pub fn complete_with_error(
        &mut self,
        pending: Pending,
        outcome: Outcome,
        error: Option<String>,
        at: Time,
    ) -> Result<(), HistoryError> {
        if !self.pending.remove(&pending.0) {
            return Err(HistoryError::NotPending(pending.0));
        }
        let op = self
            .history
            .ops
            .get_mut(pending.0)
            .ok_or(HistoryError::NotPending(pending.0))?;
        op.complete = at.max(op.invoke);
        op.outcome = outcome;
        op.error = error;
        Ok(())
    }

    /// Operations invoked and not yet completed.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// The history so far (pending operations show as indeterminate).
    pub fn history(&self) -> &History {
        &self.history
    }

    /// Ends recording at `at`: still-pending operations stay indeterminate, given up at `at`.
    pub fn finish(mut self, at: Time) -> History {
        for id in std::mem::take(&mut self.pending) {
            if let Some(op) = self.history.ops.get_mut(id) {
                op.complete = at.max(op.invoke);
                op.outcome = Outcome::Indeterminate;
            }
        }
        self.history
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> History {
        let mut recorder = Recorder::new();
        let write = recorder.invoke(1, "x", Op::Write("a".into()), 10);
        let cas = recorder.invoke_operation(
            Operation::new(
                2,
                "x",
                Op::Cas {
                    expect: None,
                    new: "b".into(),
                },
                11,
                11,
                Outcome::Indeterminate,
            )
            .on("n2")
            .with_request_id("r1"),
        );
        recorder.complete(write, Outcome::Ok(Ret::Ack), 20).unwrap();
        recorder
            .complete_with_error(cas, Outcome::Fail, Some("NoQuorum".into()), 21)
            .unwrap();
        assert!(recorder.complete(cas, Outcome::Fail, 22).is_err());
        recorder.invoke(3, "x", Op::Read, 30);
        recorder.invoke(
            4,
            "s",
            Op::ApWrite {
                bucket: "b".into(),
                value: "v".into(),
                covers: vec!["u".into()],
                local: false,
            },
            31,
        );
        assert_eq!(recorder.pending(), 2);
        recorder.finish(40)
    }

    #[test]
    fn recorder_marks_unfinished_operations_indeterminate() {
        let history = sample();
        assert_eq!(history.len(), 4);
        assert_eq!(history.ops[0].outcome, Outcome::Ok(Ret::Ack));
        assert_eq!(history.ops[1].error.as_deref(), Some("NoQuorum"));
        assert_eq!(history.ops[2].outcome, Outcome::Indeterminate);
        assert_eq!(history.ops[2].complete, 40);
        assert!(history.problems().is_empty());
    }

    #[test]
    fn json_lines_round_trip() {
        let history = sample();
        let text = history.to_jsonl().unwrap();
        assert_eq!(text.lines().count(), history.len());
        assert_eq!(History::from_jsonl(&text).unwrap(), history);
        let first = text.lines().next().unwrap();
        assert_eq!(
            first,
            r#"{"process":1,"key":"x","op":{"write":"a"},"invoke":10,"complete":20,"outcome":{"ok":"ack"}}"#
        );
    }

    #[test]
    fn counts_and_keyspaces() {
        let history = sample();
        let cp = history.outcome_counts(Keyspace::Cp);
        assert_eq!((cp.ok, cp.fail, cp.indeterminate), (1, 1, 1));
        assert_eq!(history.outcome_counts(Keyspace::Ap).to_string(), "0/0/1");
        let ap = history.of_keyspace(Keyspace::Ap);
        assert_eq!(ap.len(), 1);
        assert_eq!(ap.ops[0].key, "s");
    }

    #[test]
    fn levels_and_unseen_covers_round_trip() {
        let op = Operation::new(
            1,
            "k",
            Op::ApDelete {
                covers: Vec::new(),
                local: false,
                covers_unknown: true,
            },
            1,
            2,
            Outcome::Indeterminate,
        )
        .at_level("one");
        let history: History = [op].into_iter().collect();
        let text = history.to_jsonl().unwrap();
        assert_eq!(
            text.trim_end(),
            r#"{"process":1,"key":"k","op":{"ap_delete":{"covers_unknown":true}},"level":"one","invoke":1,"complete":2,"outcome":"indeterminate"}"#
        );
        assert_eq!(History::from_jsonl(&text).unwrap(), history);
    }

    #[test]
    fn bad_json_names_the_line() {
        let error = History::from_jsonl("\n{\"process\": 1}\n").unwrap_err();
        assert!(error.to_string().starts_with("history line 2:"), "{error}");
    }

    #[test]
    fn problems_name_malformed_operations() {
        let history: History = [
            Operation::new(1, "x", Op::Read, 5, 4, Outcome::Ok(Ret::Value(None))),
            Operation::new(1, "x", Op::Read, 5, 6, Outcome::Ok(Ret::Ack)),
        ]
        .into_iter()
        .collect();
        let problems = history.problems();
        assert_eq!(problems.len(), 2, "{problems:?}");
    }

    #[test]
    fn operations_read_as_sentences() {
        let op = Operation::new(
            3,
            "x",
            Op::Cas {
                expect: Some("a".into()),
                new: "b".into(),
            },
            1,
            9,
            Outcome::Indeterminate,
        )
        .with_error("Timeout");
        assert_eq!(
            op.to_string(),
            r#"client 3 cas "a" → "b" → unknown [1..∞) (gave up at 9) (Timeout)"#
        );
    }
}
