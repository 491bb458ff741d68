//! One Isle node.
//!
//! - [`core`]: the sans-IO cluster core (membership, phi-accrual detection, who-sees-whom,
//!   quorum, partition state machine). Start reading here.
//! - [`node`]: the tokio shell that opens the store, runs the transport and drives the core.
//! - [`ap`]: the AP keyspace (Dynamo-style replicas, hinted handoff, anti-entropy).
//! - [`cp`]: the CP keyspace (Raft over [`rpc`], the MVCC replica, client paths).
//! - [`status`] and [`metrics`]: what the node reports.

pub mod ap;
pub mod config;
pub mod core;
pub mod cp;
pub mod message;
pub mod metrics;
pub mod node;
pub mod rpc;
pub mod status;

pub use config::{ConfigError, DetectionConfig, NodeConfig};
pub use node::{Env, NodeError, NodeHandle, start, start_with};
pub use status::{PeerStatus, Status, StatusReport};
