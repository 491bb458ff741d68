//! The node's status as `/v1/status` serves it and `isle status` reads it.

use std::collections::BTreeSet;

use isle_detect::{Partition, PartitionRecord, State, Transition};
use isle_quorum::Verdict;
use isle_types::{NodeId, ZoneId};
use serde::{Deserialize, Serialize};

/// One node's view of itself and the cluster.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    /// This node.
    pub node: NodeId,
    /// Its zone.
    pub zone: ZoneId,
    /// Its vote weight.
    pub weight: u32,
    /// How many times this data dir has been started.
    pub incarnation: u64,
    /// Its peer transport address.
    pub peer_addr: String,
    /// Its HTTP address.
    pub http_addr: String,
    /// Partition state.
    pub state: State,
    /// Monotonic time (node clock, ms) when the state was entered.
    pub state_since_ms: u64,
    /// How long the node has been in this state.
    pub state_for_ms: u64,
    /// Time since the node started.
    pub uptime_ms: u64,
    /// The kind of partition the node sees, if any.
    pub partition: Partition,
    /// Whether this node's side holds quorum, in numbers.
    pub quorum: Verdict,
    /// The same, as a sentence.
    pub quorum_reason: String,
    /// Peers this node currently hears.
    pub reachable: BTreeSet<NodeId>,
    /// Every known peer.
    pub peers: Vec<PeerStatus>,
    /// Partitions detected since start.
    pub partitions_detected: u64,
    /// The most recent partition episode, with its duration and recovery time.
    pub last_partition: Option<PartitionRecord>,
    /// Recent state transitions, oldest first.
    pub transitions: Vec<Transition>,
}

/// One peer as this node sees it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeerStatus {
    /// Peer id.
    pub id: NodeId,
    /// Its peer transport address.
    pub peer_addr: String,
    /// Its HTTP address.
    pub http_addr: String,
    /// Its etcd gRPC address, if it serves one.
    pub grpc_addr: Option<String>,
    /// Its zone.
    pub zone: ZoneId,
    /// Its vote weight.
    pub weight: u32,
    /// Whether its heartbeats arrive (phi below threshold).
    pub reachable: bool,
    /// Current suspicion level.
    pub phi: f64,
    /// Time since its last heartbeat, if any arrived.
    pub last_heartbeat_ms_ago: Option<u64>,
    /// Its incarnation as last heard.
    pub incarnation: u64,
    /// Whom it hears, as last gossiped.
    pub sees: Option<BTreeSet<NodeId>>,
}

/// `/v1/status` as served and as read: the node's view, its Raft side and its AP side. The one
/// contract the server, the CLI, the lab and the tests share.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusReport {
    /// The node's view of itself and the cluster.
    #[serde(flatten)]
    pub node: Status,
    /// The CP keyspace's Raft side.
    pub cp: crate::cp::RaftStatus,
    /// The AP keyspace.
    pub ap: crate::ap::ApStatus,
}
