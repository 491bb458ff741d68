//! Quorum arithmetic used everywhere in Isle: plain majorities, read/write overlap (R+W>N),
//! weighted and zone-aware (hierarchical) quorums, a split analysis for the `isle quorum` CLI
//! command, and a pure result tracker for request coordination.
//!
//! Architecture invariant: this crate is pure and sans-IO. No tokio, no clock, no RNG; every
//! function is a deterministic function of its arguments, and collections whose order shows are
//! `BTree*`.
//!
//! Safety invariant every [`Policy`] keeps: two disjoint sets of voters never both hold quorum
//! (no split brain). Liveness-side invariants: holding quorum is monotonic in the reachable set,
//! and a valid, non-empty voter set holds quorum when everyone is reachable.
//!
//! Code map, one mechanism per file:
//! - `majority.rs`: counting arithmetic on plain node counts.
//! - `voter.rs`: the [`Voter`] record and validation.
//! - `policy.rs`: [`Policy`], [`Verdict`] and [`evaluate`].
//! - `tolerance.rs`: exact worst/best-case failure tolerance for any number of voters.
//! - `report.rs`: the split analysis behind `isle quorum`.
//! - `tracker.rs`: [`Tracker`], success/failure counting for one request.

mod error;
mod majority;
mod policy;
mod report;
mod tolerance;
mod tracker;
mod voter;

pub use error::{ParsePolicyError, QuorumError};
pub use majority::{majority, read_write_overlap, tolerated_failures, write_write_overlap};
pub use policy::{Policy, Unit, Verdict, evaluate};
pub use report::{MAX_SPLIT_VOTERS, Report, SplitOutcome, report};
pub use tolerance::{Tolerance, tolerance};
pub use tracker::{Outcome, Threshold, Tracker};
pub use voter::{Voter, uniform, validate};
