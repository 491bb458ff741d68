//! Node identity and the cluster member record every node gossips about itself.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A node's identity in the cluster: chosen by the operator, stable across restarts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NodeId(pub u64);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl FromStr for NodeId {
    type Err = MemberError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let digits = s.strip_prefix('n').unwrap_or(s);
        match digits.parse::<u64>() {
            Ok(0) | Err(_) => Err(MemberError::BadNodeId(s.to_string())),
            Ok(id) => Ok(NodeId(id)),
        }
    }
}

/// A failure domain (rack, data centre, island). Zone-aware quorums count zones.
pub type ZoneId = String;

/// Everything the cluster knows about one member: how to reach it and what its vote weighs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The member's id.
    pub id: NodeId,
    /// Address peers dial for the node-to-node transport.
    pub peer_addr: String,
    /// Address of the client/admin HTTP API.
    pub http_addr: String,
    /// Address of the etcd v3 gRPC API, if the node serves it.
    #[serde(default)]
    pub grpc_addr: Option<String>,
    /// Failure domain.
    pub zone: ZoneId,
    /// Vote weight in weighted quorums (1 for a plain majority).
    pub weight: u32,
}

/// Why a member record or node id was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MemberError {
    /// The text is not a positive integer node id.
    #[error("bad node id {0:?}: expected a positive integer such as 3 (or n3)")]
    BadNodeId(String),
    /// A member's weight must be at least 1.
    #[error("member {0} has weight 0: every voting member needs a weight of at least 1")]
    ZeroWeight(NodeId),
}

impl Member {
    /// Checks the record's invariants (weight > 0).
    pub fn validate(&self) -> Result<(), MemberError> {
        if self.weight == 0 {
            return Err(MemberError::ZeroWeight(self.id));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_parse() {
        assert_eq!("3".parse::<NodeId>(), Ok(NodeId(3)));
        assert_eq!("n12".parse::<NodeId>(), Ok(NodeId(12)));
        assert!("0".parse::<NodeId>().is_err());
        assert!("x".parse::<NodeId>().is_err());
    }
}

/// What a node persists about itself so that a restart on the same data dir is the same member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// The node's id, fixed when the data dir was created.
    pub node_id: NodeId,
    /// Bumped on every start; lets peers tell a restarted node's fresh state from stale gossip.
    pub incarnation: u64,
    /// Wall-clock time (Unix ms) when the data dir was created, for operators.
    pub created_unix_ms: u64,
}
