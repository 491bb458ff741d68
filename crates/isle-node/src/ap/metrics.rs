//! The AP keyspace's metrics (`isle_ap_*`): requests, hinted handoff, anti-entropy.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use isle_storage::LogStats;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Labels of a client request.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabel {
    /// get, put, delete, incr, sadd, srem, map-update.
    pub op: String,
    /// ok, unavailable, rejected, error.
    pub outcome: String,
}

/// Every AP metric of one node.
#[derive(Debug)]
pub struct ApMetrics {
    /// Client requests coordinated here, by operation and outcome.
    pub requests: Family<RequestLabel, Counter>,
    /// Stale or missing replicas repaired after a read.
    pub read_repairs: Counter,
    /// Hints stored on this node for unreachable owners.
    pub hints_stored: Counter,
    /// Hints handed to their owners.
    pub hints_delivered: Counter,
    /// Hints held now.
    pub hints_pending: Gauge,
    /// Age of the oldest pending hint backlog, seconds.
    pub hints_oldest_seconds: Gauge<f64, AtomicU64>,
    /// Merkle exchanges run (as initiator).
    pub aae_exchanges: Counter,
    /// Keys found to differ between replicas.
    pub aae_keys_diverged: Counter,
    /// Keys repaired by anti-entropy (pushed or pulled).
    pub aae_keys_repaired: Counter,
    /// Bytes sent and received by anti-entropy (tree descent and repair).
    pub aae_bytes: Counter,
    /// Time from the first exchange that found a difference to the first round with none.
    pub aae_converge_seconds: Gauge<f64, AtomicU64>,
    /// Whether the last round found replicas in agreement (1) or not (0).
    pub aae_in_sync: Gauge,
    /// Changes committed per transaction (group commit).
    pub write_batch: Histogram,
    /// Changes written to the store (applies, merges, removals), however batched.
    pub store_writes: Counter,
    /// Tombstones dropped after every replica held them.
    pub tombstones_reaped: Counter,
}

impl Default for ApMetrics {
    fn default() -> Self {
        Self {
            requests: Family::default(),
            read_repairs: Counter::default(),
            hints_stored: Counter::default(),
            hints_delivered: Counter::default(),
            hints_pending: Gauge::default(),
            hints_oldest_seconds: Gauge::default(),
            aae_exchanges: Counter::default(),
            aae_keys_diverged: Counter::default(),
            aae_keys_repaired: Counter::default(),
            aae_bytes: Counter::default(),
            aae_converge_seconds: Gauge::default(),
            aae_in_sync: Gauge::default(),
            tombstones_reaped: Counter::default(),
            store_writes: Counter::default(),
            write_batch: Histogram::new([
                1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0,
            ]),
        }
    }
}

impl ApMetrics {
    /// Registers every metric under `isle_ap`.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("isle_ap");
        r.register(
            "requests",
            "AP client requests coordinated here",
            self.requests.clone(),
        );
        r.register(
            "read_repairs",
            "Replicas repaired after a read",
            self.read_repairs.clone(),
        );
        r.register(
            "hints_stored",
            "Hints stored for unreachable owners",
            self.hints_stored.clone(),
        );
        r.register(
            "hints_delivered",
            "Hints handed off to their owners",
            self.hints_delivered.clone(),
        );
        r.register(
            "hints_pending",
            "Hints held now",
            self.hints_pending.clone(),
        );
        r.register(
            "hints_oldest_seconds",
            "Age of the oldest pending hint backlog",
            self.hints_oldest_seconds.clone(),
        );
        r.register(
            "aae_exchanges",
            "Merkle exchanges run as initiator",
            self.aae_exchanges.clone(),
        );
        r.register(
            "aae_keys_diverged",
            "Keys found to differ between replicas",
            self.aae_keys_diverged.clone(),
        );
        r.register(
            "aae_keys_repaired",
            "Keys repaired by anti-entropy",
            self.aae_keys_repaired.clone(),
        );
        r.register(
            "aae_bytes",
            "Bytes exchanged by anti-entropy",
            self.aae_bytes.clone(),
        );
        r.register(
            "aae_converge_seconds",
            "Time from the first divergent exchange to replicas in agreement",
            self.aae_converge_seconds.clone(),
        );
        r.register(
            "aae_in_sync",
            "1 when the last round found no difference",
            self.aae_in_sync.clone(),
        );
        r.register(
            "tombstones_reaped",
            "Tombstones dropped after every replica held them",
            self.tombstones_reaped.clone(),
        );
        r.register(
            "store_writes",
            "Changes written to the AP store, however batched",
            self.store_writes.clone(),
        );
        r.register(
            "write_batch",
            "Changes committed per transaction",
            self.write_batch.clone(),
        );
    }

    /// Counts one client request.
    pub fn request(&self, op: &str, outcome: &str) {
        self.requests
            .get_or_create(&RequestLabel {
                op: op.to_string(),
                outcome: outcome.to_string(),
            })
            .inc();
    }

    /// Records one committed batch.
    pub fn write_batch(&self, size: usize) {
        self.write_batch.observe(size as f64);
        self.store_writes.inc_by(size as u64);
    }
}

/// `isle_ap_store_fsyncs`, read from the AP store's own counter at every scrape.
#[derive(Debug)]
pub(crate) struct StoreCollector(pub(crate) Arc<LogStats>);

impl Collector for StoreCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let counter = ConstCounter::new(LogStats::get(&self.0.fsyncs));
        let metric = encoder.encode_descriptor(
            "isle_ap_store_fsyncs",
            "fsyncs of the AP store (log flushes, each covering every batch written meanwhile; checkpoints)",
            None,
            counter.metric_type(),
        )?;
        counter.encode(metric)
    }
}
