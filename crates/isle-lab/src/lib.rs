//! The lab: the one way Isle starts `isle node` processes — for `isle local`, the demo, the
//! chaos runner and every integration test.
//!
//! A [`NodeSpec`] says how one node runs (addresses, data dir, log, flags, and a command prefix
//! such as `ip netns exec NS`); [`plan`] lays out a cluster's specs on loopback. A [`Node`] is
//! one running process: kill -9, SIGTERM with a grace period, pause and resume, restart on the
//! same data dir, readiness. Every process the lab starts is registered so [`kill_all`] can
//! stop them from a signal handler's thread. [`netns`] puts nodes in network namespaces of
//! their own and cuts links with nftables; [`metrics`] reads the Prometheus text nodes serve.
//!
//! The API is blocking: each call is short (a signal, a reap after SIGKILL, an HTTP request on
//! loopback), and tests are synchronous.

pub mod admin;
pub mod bench;
pub mod chaos;
pub mod chaos_sim;
pub mod demo;
pub mod local;
pub mod metrics;
pub mod netns;
mod node;
mod ports;
mod spec;

pub use nix::sys::signal::Signal;
pub use node::{Node, Stopped, kill_all, stop_all};
pub use ports::spare_port;
pub use spec::{NodeSpec, Ports, mesh, plan};

/// What went wrong starting or driving a node process.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// A file or process operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        source: std::io::Error,
    },
    /// The cluster cannot be laid out as asked.
    #[error("{0}")]
    Plan(String),
    /// A signal could not be sent.
    #[error("sending {signal} to node {id} (pid {pid}): {source}")]
    Signal {
        /// The node.
        id: u64,
        /// Its process id.
        pid: u32,
        /// The signal's name.
        signal: &'static str,
        /// Why it failed.
        source: nix::errno::Errno,
    },
    /// The node is not running.
    #[error("node {0} is not running")]
    NotRunning(u64),
    /// The node did not become ready.
    #[error("node {id} not ready: {why}")]
    NotReady {
        /// The node.
        id: u64,
        /// What was seen last (with the end of its log when it exited).
        why: String,
    },
}

impl LabError {
    fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> LabError {
        let what = what.into();
        move |source| LabError::Io { what, source }
    }
}
