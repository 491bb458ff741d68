//! Isle's chaos lab, pure part: the **history** of a run and the checkers that judge it (so far
//! [`linear`], linearizability of every CP key as a register, and [`fencing`], lock tokens and
//! fenced writes). The engines record every client operation — invocation, completion,
//! outcome — as a [`History`]; each checker returns a [`Verdict`]. No clock, no randomness:
//! everything here is a deterministic function of its inputs.

pub mod fencing;
pub mod history;
pub mod linear;
pub mod verdict;

pub use history::{
    ApValue, History, Keyspace, MergeRule, Op, Operation, Outcome, ProcessId, Recorder, Ret, Stamp,
    Time, Value,
};
pub use verdict::{Status, Verdict, Violation};
