//! The Raft type configuration: what a log entry carries and what applying it returns.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{Command, CpError, Response};

/// A command as the leader proposes it, stamped with the leader's wall time so every replica
/// applies it with the same `now` (lease grants, idempotency expiry).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Proposal {
    /// The client's command.
    pub command: Command,
    /// The proposing leader's wall clock, Unix milliseconds.
    pub proposed_unix_ms: u64,
}

impl fmt::Display for Proposal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "proposal@{}ms", self.proposed_unix_ms)
    }
}

/// What applying one entry produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Applied {
    /// A client command's answer from the state machine, error included.
    Command(Result<Response, CpError>),
    /// A blank or membership entry: nothing for a client, but the index was consumed.
    Internal(Result<(), CpError>),
}

/// openraft's tokio runtime with a seeded RNG. openraft draws election timeouts and its tick
/// phase from the runtime's RNG; seeded, a node's Raft makes the same draws every run, which
/// the simulator needs to replay a seed. Each Raft instance must be created inside
/// [`seeded`] (its tasks inherit seeds derived from the one given there).
pub type CpRuntime =
    openraft::rt::deterministic_rng::DeterministicRng<openraft_rt_tokio::TokioRuntime>;

/// Runs `future` (which creates a [`CpRaft`]) with openraft's RNG seeded by `seed`: in
/// production a seed from the OS, in simulation one drawn from the node's seeded RNG.
pub fn seeded<F: std::future::Future>(
    seed: u64,
    future: F,
) -> impl std::future::Future<Output = F::Output> {
    CpRuntime::scope(seed, future)
}

openraft::declare_raft_types!(
    /// Isle's CP Raft: proposals in, apply results out, `u64` node ids, nodes addressed by
    /// their peer transport address, openraft's tokio runtime with a seeded RNG.
    pub CpTypes:
        D = Proposal,
        R = Applied,
        Node = openraft::BasicNode,
        AsyncRuntime = CpRuntime,
);

/// A Raft instance of the CP keyspace.
pub type CpRaft = openraft::Raft<CpTypes, super::CpStateMachine>;
