//! openraft wiring for the CP keyspace: the type config, the state machine adapter over
//! [`crate::StateMachine`], and the network adapter over an [`RaftRpc`] the node provides.
//!
//! The pure state machine knows nothing of Raft; this module is the only place that does. Log
//! storage is `isle_storage::RedbLogStore`; snapshots persist through [`SnapshotStore`].

mod network;
mod state_machine;
mod types;

pub use network::{
    CpNetwork, CpNetworkFactory, RaftReply, RaftRequest, RaftRpc, RpcFailure, RpcFuture, serve,
};
pub use state_machine::{CpStateMachine, Replica, SharedState, SnapshotStore, StoredSnapshot};
pub use types::{Applied, CpRaft, CpRuntime, CpTypes, Proposal, seeded};
