//! Transport metrics: per-peer prometheus families plus plain totals for tests and status pages.

use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Labels for per-peer series: the peer's node id, or its address while the id is unknown.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct PeerLabels {
    /// Node id (or dialled address, or `unknown` for an inbound connection not yet identified).
    pub peer: String,
}

/// Why a frame was dropped before delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// The peer's outbound queue was full.
    QueueFull,
    /// The peer's circuit breaker was open.
    BreakerOpen,
    /// A fault rule dropped it (or too many delayed messages were already held).
    Fault,
    /// The write failed or timed out and the connection was closed.
    WriteError,
    /// The node's inbound queue was full.
    InboundFull,
}

impl DropReason {
    /// The label value, as operators see it.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::QueueFull => "queue_full",
            DropReason::BreakerOpen => "breaker_open",
            DropReason::Fault => "fault",
            DropReason::WriteError => "write_error",
            DropReason::InboundFull => "inbound_full",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

// Hand-written because the derive would emit the CamelCase variant names.
impl EncodeLabelValue for DropReason {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        std::fmt::Write::write_str(encoder, self.as_str())
    }
}

/// Labels for dropped-frame series.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct DropLabels {
    /// As in [`PeerLabels`].
    pub peer: String,
    /// Why the frame was dropped.
    pub reason: DropReason,
}

/// Totals since start, summed over peers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetStats {
    /// Frames written to sockets.
    pub sent: u64,
    /// Valid frames read from sockets.
    pub received: u64,
    /// Frames dropped for any [`DropReason`].
    pub dropped: u64,
    /// Frames whose checksum failed (or that an inbound corrupt fault hit).
    pub corrupt: u64,
    /// Frames whose checksum held but that did not decode.
    pub undecodable: u64,
    /// Connections closed because a length prefix exceeded the frame limit.
    pub oversized: u64,
    /// Frames held back by a delay fault.
    pub delayed: u64,
    /// Outbound connections established.
    pub connects: u64,
    /// Outbound connection attempts that failed or timed out.
    pub connect_failures: u64,
}

/// The transport's metrics; share one per node behind an `Arc`.
#[derive(Debug, Default)]
pub struct NetMetrics {
    frames_sent: Family<PeerLabels, Counter>,
    frames_received: Family<PeerLabels, Counter>,
    frames_dropped: Family<DropLabels, Counter>,
    frames_corrupt: Family<PeerLabels, Counter>,
    frames_undecodable: Family<PeerLabels, Counter>,
    frames_oversized: Family<PeerLabels, Counter>,
    frames_delayed: Family<PeerLabels, Counter>,
    bytes_sent: Family<PeerLabels, Counter>,
    bytes_received: Family<PeerLabels, Counter>,
    connects: Family<PeerLabels, Counter>,
    connect_failures: Family<PeerLabels, Counter>,
    connection_up: Family<PeerLabels, Gauge>,
    breaker_state: Family<PeerLabels, Gauge>,
    totals: Totals,
}

#[derive(Debug, Default)]
struct Totals {
    sent: AtomicU64,
    received: AtomicU64,
    dropped: [AtomicU64; 5],
    corrupt: AtomicU64,
    undecodable: AtomicU64,
    oversized: AtomicU64,
    delayed: AtomicU64,
    connects: AtomicU64,
    connect_failures: AtomicU64,
}

fn labels(peer: &str) -> PeerLabels {
    PeerLabels {
        peer: peer.to_string(),
    }
}

fn bump(total: &AtomicU64, by: u64) {
    total.fetch_add(by, Ordering::Relaxed);
}

impl NetMetrics {
    /// Empty metrics.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers every family under the `isle_net` prefix.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("isle_net");
        r.register(
            "frames_sent",
            "Frames written to peers",
            self.frames_sent.clone(),
        );
        r.register(
            "frames_received",
            "Valid frames read from peers",
            self.frames_received.clone(),
        );
        r.register(
            "frames_dropped",
            "Frames dropped, by reason",
            self.frames_dropped.clone(),
        );
        r.register(
            "frames_corrupt",
            "Frames failing their checksum",
            self.frames_corrupt.clone(),
        );
        let undecodable = self.frames_undecodable.clone();
        r.register(
            "frames_undecodable",
            "Checksummed frames that did not decode",
            undecodable,
        );
        let oversized = self.frames_oversized.clone();
        r.register(
            "frames_oversized",
            "Connections closed on an oversized frame",
            oversized,
        );
        r.register(
            "frames_delayed",
            "Frames held by a delay fault",
            self.frames_delayed.clone(),
        );
        r.register(
            "bytes_sent",
            "Bytes written to peers",
            self.bytes_sent.clone(),
        );
        r.register(
            "bytes_received",
            "Bytes read from peers",
            self.bytes_received.clone(),
        );
        r.register(
            "connects",
            "Outbound connections established",
            self.connects.clone(),
        );
        let failures = self.connect_failures.clone();
        r.register(
            "connect_failures",
            "Failed outbound connection attempts",
            failures,
        );
        let up = self.connection_up.clone();
        r.register(
            "connection_up",
            "Outbound connection up (1) or down (0)",
            up,
        );
        let breaker = self.breaker_state.clone();
        r.register(
            "breaker_state",
            "Breaker: 0 closed, 1 half-open, 2 open",
            breaker,
        );
    }

    /// Plain totals over all peers.
    pub fn snapshot(&self) -> NetStats {
        let t = &self.totals;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        NetStats {
            sent: get(&t.sent),
            received: get(&t.received),
            dropped: t.dropped.iter().map(get).sum(),
            corrupt: get(&t.corrupt),
            undecodable: get(&t.undecodable),
            oversized: get(&t.oversized),
            delayed: get(&t.delayed),
            connects: get(&t.connects),
            connect_failures: get(&t.connect_failures),
        }
    }

    /// Frames dropped for `reason`, summed over peers.
    pub fn dropped_total(&self, reason: DropReason) -> u64 {
        self.totals.dropped[reason.index()].load(Ordering::Relaxed)
    }

    pub(crate) fn sent(&self, peer: &str, frames: u64, bytes: u64) {
        self.frames_sent.get_or_create(&labels(peer)).inc_by(frames);
        self.bytes_sent.get_or_create(&labels(peer)).inc_by(bytes);
        bump(&self.totals.sent, frames);
    }

    pub(crate) fn received(&self, peer: &str) {
        self.frames_received.get_or_create(&labels(peer)).inc();
        bump(&self.totals.received, 1);
    }

    pub(crate) fn bytes_received(&self, peer: &str, bytes: u64) {
        self.bytes_received
            .get_or_create(&labels(peer))
            .inc_by(bytes);
    }

    pub(crate) fn dropped(&self, peer: &str, reason: DropReason, frames: u64) {
        let key = DropLabels {
            peer: peer.to_string(),
            reason,
        };
        self.frames_dropped.get_or_create(&key).inc_by(frames);
        bump(&self.totals.dropped[reason.index()], frames);
    }

    pub(crate) fn corrupt(&self, peer: &str) {
        self.frames_corrupt.get_or_create(&labels(peer)).inc();
        bump(&self.totals.corrupt, 1);
    }

    pub(crate) fn undecodable(&self, peer: &str) {
        self.frames_undecodable.get_or_create(&labels(peer)).inc();
        bump(&self.totals.undecodable, 1);
    }

    pub(crate) fn oversized(&self, peer: &str) {
        self.frames_oversized.get_or_create(&labels(peer)).inc();
        bump(&self.totals.oversized, 1);
    }

    pub(crate) fn delayed(&self, peer: &str) {
        self.frames_delayed.get_or_create(&labels(peer)).inc();
        bump(&self.totals.delayed, 1);
    }

    pub(crate) fn connected(&self, peer: &str) {
        self.connects.get_or_create(&labels(peer)).inc();
        self.connection_up.get_or_create(&labels(peer)).set(1);
        bump(&self.totals.connects, 1);
    }

    pub(crate) fn disconnected(&self, peer: &str) {
        self.connection_up.get_or_create(&labels(peer)).set(0);
    }

    pub(crate) fn connect_failed(&self, peer: &str) {
        self.connect_failures.get_or_create(&labels(peer)).inc();
        bump(&self.totals.connect_failures, 1);
    }

    pub(crate) fn breaker(&self, peer: &str, state: i64) {
        self.breaker_state.get_or_create(&labels(peer)).set(state);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_and_exposition() {
        let metrics = NetMetrics::new();
        metrics.sent("2", 3, 300);
        metrics.received("2");
        metrics.dropped("2", DropReason::QueueFull, 2);
        metrics.dropped("3", DropReason::Fault, 1);
        metrics.corrupt("unknown");
        metrics.connected("2");
        let stats = metrics.snapshot();
        assert_eq!((stats.sent, stats.received, stats.dropped), (3, 1, 3));
        assert_eq!((stats.corrupt, stats.connects), (1, 1));
        assert_eq!(metrics.dropped_total(DropReason::QueueFull), 2);

        let mut registry = Registry::default();
        metrics.register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encodes");
        assert!(
            text.contains("isle_net_frames_sent_total{peer=\"2\"} 3"),
            "{text}"
        );
        assert!(text.contains("reason=\"queue_full\""), "{text}");
        assert!(
            text.contains("isle_net_connection_up{peer=\"2\"} 1"),
            "{text}"
        );
    }
}
