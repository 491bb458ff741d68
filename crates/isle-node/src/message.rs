//! What nodes say to each other over the peer transport.

use isle_detect::View;
use isle_types::Member;
use serde::{Deserialize, Serialize};

/// Every node-to-node message. Later keyspaces add their variants here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum PeerMessage {
    /// Liveness plus gossip: sent to every known peer each heartbeat interval.
    Heartbeat(Heartbeat),
}

/// A heartbeat: "I am alive", who I am, who I know, and who sees whom as far as I know.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// The sender's incarnation; a higher one means it restarted.
    pub incarnation: u64,
    /// Per-incarnation sequence number; stale or duplicated heartbeats are ignored.
    pub seq: u64,
    /// The sender's own record (authoritative about itself).
    pub member: Member,
    /// Other members the sender knows of (so seeds spread the full membership).
    pub members: Vec<Member>,
    /// The sender's reachability view and the latest views it holds of others.
    pub views: Vec<View>,
}
