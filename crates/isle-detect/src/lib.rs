//! Failure detection and partition awareness for Isle, as pure sans-IO cores.
//!
//! Three parts, each a plain data structure driven by the caller with `now`:
//! - [`phi`]: a phi-accrual failure detector per peer ([`PhiAccrual`]), fed heartbeat arrivals.
//! - [`matrix`]: the gossiped who-sees-whom [`Matrix`] of [`View`]s, and [`classify`], which
//!   names the kind of [`Partition`] (none, complete, partial, asymmetric) from one node's seat.
//! - [`state`]: the per-node partition state [`Machine`]
//!   (Normal → PartitionDetected → Degraded/Emergency → Reconciling → Normal).
//!
//! How a node wires them, once per tick or event:
//! 1. Each peer heartbeat calls [`PhiAccrual::heartbeat`] on that peer's detector.
//! 2. The peers whose detectors report [`PhiAccrual::is_available`] form the node's own [`View`]
//!    (version bumped when it changes), stored with [`Matrix::set_own`].
//! 3. Gossip sends [`Matrix::views`]; received views go through [`Matrix::merge`].
//! 4. [`classify`] with `fresh` = the peers this node hears plus itself yields a [`Partition`].
//! 5. [`Machine::observe`] gets `partitioned = partition != Partition::None`, plus quorum and
//!    reconciliation status from other crates; the shell calls again at [`Machine::poll_timeout`].
//!
//! Architecture invariant: no clock reads, no RNG, no IO, no async; iteration order is
//! deterministic (`BTreeMap`/`BTreeSet` throughout).

pub mod matrix;
pub mod phi;
pub mod state;

pub use matrix::{Matrix, Partition, View, classify};
pub use phi::{PHI_MAX, PhiAccrual, PhiConfig};
pub use state::{
    ALLOWED_EDGES, Machine, Observation, PartitionRecord, State, StateConfig, Transition,
};
