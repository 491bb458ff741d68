//! Isle's chaos lab, pure part: the **history** of a run and the **checkers** that judge it.
//!
//! The engines (the seeded simulation and the real processes in network namespaces) drive
//! clients against a cluster while nemeses cut, pause and kill; they record every client
//! operation — invocation, completion, outcome — as a [`History`], and read every replica after
//! the heal into a [`convergence::FinalState`]. This crate knows nothing of Isle's nodes: it
//! depends only on serde, so both engines, the CLI and the report share it, and a history saved
//! as JSON lines can be checked again at any time.
//!
//! Each checker returns a [`Verdict`]: ok, violated (each [`Violation`] told as a short story:
//! which key, which operations, in which order, why that cannot be), or inconclusive (a search
//! ran out of budget, an input was missing). Checkers never guess: whatever they cannot decide
//! is reported as undecided, and a violation is flagged only when the recorded results and real
//! time prove it.
//!
//! - [`history`]: the model — operations on CP registers and locks and on AP values and CRDTs;
//!   outcomes `Ok`, `Fail` (definitely not applied) and `Indeterminate` (a timeout: may apply at
//!   any time after its invocation, or never); retries grouped by request id; a [`Recorder`].
//! - [`linear`]: linearizability of every CP key as a register (read, write, delete,
//!   compare-and-set, accepted fenced writes): Wing–Gong–Lowe depth-first search with
//!   Porcupine's memoization, indeterminate operations linearized just in time, interchangeable
//!   ones merged. It checks 10,000 operations in milliseconds on realistic histories; the
//!   problem is NP-complete, so a pathological history (one hot key, very many clients and
//!   timeouts) can take seconds, and past a budget the key is undecided.
//! - [`fencing`]: tokens unique and growing in real time per lock; no fenced write accepted
//!   after a larger token was known to exist.
//! - [`convergence`]: after the heal, all primary replicas hold equal copies (value and, where
//!   read, digest), an acknowledged key is held somewhere, no copy holds one write as two
//!   siblings, reads returned only written values, and the value keeps every acknowledged
//!   write under its merge rule (`siblings` via the contexts clients wrote with, `lww` via the
//!   acknowledged timestamps, counters within the acknowledged sum plus the indeterminate
//!   increments, add-wins sets, maps of counters), with deletes not resurrected. Causality is
//!   approximated by real time and by what clients say they covered: see the module for what
//!   is and is not checked.
//! - [`availability`]: per window (partition, after heal), per side and per node, the fraction
//!   of requests that succeeded and the time to the first success after the window.
//!
//! Like the sans-IO cores, everything here is a deterministic function of its inputs: no clock,
//! no randomness, ordered collections wherever order shows.

pub mod availability;
pub mod convergence;
pub mod fencing;
pub mod history;
pub mod linear;
pub mod verdict;

pub use history::{
    ApValue, History, Keyspace, MergeRule, Op, Operation, Outcome, OutcomeCounts, ProcessId,
    Recorder, Ret, Stamp, Time, Value,
};
pub use verdict::{Status, Verdict, Violation};
