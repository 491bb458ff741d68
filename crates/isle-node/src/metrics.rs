//! The node's Prometheus metrics: one registry per node (a simulated cluster holds several).

use std::sync::atomic::AtomicU64;

use isle_detect::{State, Transition};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::status::Status;

/// Every partition state, for the one-hot state gauge.
const STATES: [State; 5] = [
    State::Normal,
    State::PartitionDetected,
    State::Degraded,
    State::Emergency,
    State::Reconciling,
];

/// Labels naming a peer.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerLabel {
    /// Peer node id.
    pub peer: String,
}

/// Labels naming a partition state.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    /// State name.
    pub state: String,
}

/// Labels naming a transition.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransitionLabel {
    /// State left.
    pub from: String,
    /// State entered.
    pub to: String,
}

/// The node-level metrics (the transport registers its own under `isle_net`).
#[derive(Debug)]
pub struct NodeMetrics {
    peer_phi: Family<PeerLabel, Gauge<f64, AtomicU64>>,
    peer_reachable: Family<PeerLabel, Gauge>,
    state: Family<StateLabel, Gauge>,
    state_seconds: Gauge<f64, AtomicU64>,
    quorum_held: Gauge,
    partitions_detected: Counter,
    transitions: Family<TransitionLabel, Counter>,
    last_partition_seconds: Gauge<f64, AtomicU64>,
    last_recovery_seconds: Gauge<f64, AtomicU64>,
    partition_seconds: Histogram,
    recovery_seconds: Histogram,
}

fn seconds_buckets() -> Histogram {
    Histogram::new([
        0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0,
    ])
}

impl NodeMetrics {
    /// Metrics at zero.
    pub fn new() -> Self {
        NodeMetrics {
            peer_phi: Family::default(),
            peer_reachable: Family::default(),
            state: Family::default(),
            state_seconds: Gauge::default(),
            quorum_held: Gauge::default(),
            partitions_detected: Counter::default(),
            transitions: Family::default(),
            last_partition_seconds: Gauge::default(),
            last_recovery_seconds: Gauge::default(),
            partition_seconds: seconds_buckets(),
            recovery_seconds: seconds_buckets(),
        }
    }

    /// Registers everything under the `isle` prefix.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("isle");
        r.register(
            "peer_phi",
            "Phi-accrual suspicion of each peer",
            self.peer_phi.clone(),
        );
        r.register(
            "peer_reachable",
            "1 if the peer's heartbeats arrive",
            self.peer_reachable.clone(),
        );
        r.register(
            "partition_state",
            "1 for the node's current partition state",
            self.state.clone(),
        );
        r.register(
            "partition_state_seconds",
            "Time in the current state",
            self.state_seconds.clone(),
        );
        r.register(
            "quorum_held",
            "1 if this node's side holds quorum",
            self.quorum_held.clone(),
        );
        r.register(
            "partitions_detected",
            "Partitions detected",
            self.partitions_detected.clone(),
        );
        r.register(
            "partition_transitions",
            "State machine transitions",
            self.transitions.clone(),
        );
        r.register(
            "last_partition_duration_seconds",
            "Duration of the last partition, detection to heal",
            self.last_partition_seconds.clone(),
        );
        r.register(
            "last_recovery_seconds",
            "Time from the last heal back to Normal",
            self.last_recovery_seconds.clone(),
        );
        r.register(
            "partition_duration_seconds",
            "Partition durations, detection to heal",
            self.partition_seconds.clone(),
        );
        r.register(
            "recovery_seconds",
            "Times from heal back to Normal",
            self.recovery_seconds.clone(),
        );
    }

    /// Records one transition of the partition state machine.
    pub fn record_transition(&self, transition: &Transition, status: &Status) {
        let label = TransitionLabel {
            from: transition.from.to_string(),
            to: transition.to.to_string(),
        };
        self.transitions.get_or_create(&label).inc();
        if transition.to == State::PartitionDetected {
            self.partitions_detected.inc();
        }
        let Some(record) = status
            .last_partition
            .as_ref()
            .filter(|_| transition.to == State::Normal)
        else {
            return;
        };
        if let Some(d) = record.partition_duration() {
            self.partition_seconds.observe(d.as_secs_f64());
            self.last_partition_seconds.set(d.as_secs_f64());
        }
        if let Some(d) = record.recovery_time() {
            self.recovery_seconds.observe(d.as_secs_f64());
            self.last_recovery_seconds.set(d.as_secs_f64());
        }
    }

    /// Refreshes the gauges from a status snapshot.
    pub fn observe(&self, status: &Status) {
        for peer in &status.peers {
            let label = PeerLabel {
                peer: peer.id.to_string(),
            };
            self.peer_phi.get_or_create(&label).set(peer.phi);
            self.peer_reachable
                .get_or_create(&label)
                .set(i64::from(peer.reachable));
        }
        for state in STATES {
            let value = i64::from(state == status.state);
            self.state
                .get_or_create(&StateLabel {
                    state: state.to_string(),
                })
                .set(value);
        }
        self.state_seconds.set(status.state_for_ms as f64 / 1000.0);
        self.quorum_held.set(i64::from(status.quorum.held));
    }
}

impl Default for NodeMetrics {
    fn default() -> Self {
        Self::new()
    }
}
