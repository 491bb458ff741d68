//! Isle's CP keyspace core: a deterministic, sans-IO state machine modelled 1:1 on etcd v3's
//! MVCC, with leases, locks with fencing tokens, fenced writes and idempotent requests.
//!
//! # Model
//!
//! Raft (openraft, wired in the shell) orders [`Command`]s in a log; every replica feeds the
//! same entries to [`StateMachine::apply`] with the entry's log index and the leader's wall time
//! embedded in the entry, and so computes the same state. Nothing here reads a clock, draws
//! randomness or touches IO; every map whose order shows is a `BTreeMap`.
//!
//! - **Revisions.** One cluster-wide `revision`, 1 for an empty store. A command that writes
//!   (a put, a delete that deletes something, a transaction with writes, a revoke or a lock
//!   acquire that creates or deletes keys) raises it by exactly one; all writes of one command
//!   share it. Per key: `create_revision`, `mod_revision`, `version` (1 on create, +1 per put,
//!   gone on delete) and `lease`.
//! - **History.** Every (key, revision) → value or tombstone is kept until compacted, so reads
//!   at a past revision and watches ([`StateMachine::events_since`]) are served from it.
//! - **Leases** are granted and revoked by commands; expiry is the leader shell's decision,
//!   replicated as a `LeaseRevoke` (see `mvcc::lease`'s docs).
//! - **Locks** follow etcd's recipe; the state tracks, per lock, the highest fencing token ever
//!   granted, and fenced writes are refused unless they present exactly that token.
//! - **Idempotency.** A command with a request id is applied once within the configured
//!   window; a repeat returns the recorded outcome (errors included).
//!
//! # Invariants
//!
//! - `apply` is deterministic: same state + same (index, command, time) → same state and outcome.
//! - The revision never decreases and moves by at most one per command.
//! - A refused command changes nothing but `last_applied` (and its idempotency record).
//! - A read at revision `r >= compact_revision` returns the same result forever.
//! - The highest granted token of every lock never decreases, including across snapshots.
//! - `restore(snapshot())` is the same state, byte for byte.

pub mod command;
pub mod error;
pub mod limits;
pub mod mvcc;
pub mod raft;

pub use command::{Command, Request, RequestId, Response};
pub use error::CpError;
pub use mvcc::{Config, StateMachine};
