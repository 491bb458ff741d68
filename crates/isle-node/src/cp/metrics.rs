//! The CP keyspace's disk and read-path counters in `/metrics`: what group commit and shared
//! ReadIndex rounds are judged by (fsyncs per committed entry, entries per batch, rounds per
//! read).

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use isle_storage::LogStats;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;

use super::ReadStats;

/// Reads the log's and the read path's atomics at every scrape.
#[derive(Debug)]
pub struct CpCollector {
    /// The Raft log's counters (shared by every handle on the node's store).
    pub log: Arc<LogStats>,
    /// The read path's counters.
    pub reads: Arc<ReadStats>,
}

impl CpCollector {
    fn counters(&self) -> [(&'static str, &'static str, &AtomicU64); 8] {
        let (log, reads) = (&*self.log, &*self.reads);
        [
            (
                "isle_cp_log_fsyncs",
                "fsyncs of the Raft log (group-commit flushes, votes, truncations, purges)",
                &log.fsyncs,
            ),
            (
                "isle_cp_log_append_batches",
                "Batches of entries appended to the Raft log (one write transaction each)",
                &log.append_batches,
            ),
            (
                "isle_cp_log_entries",
                "Entries appended to the Raft log",
                &log.entries_appended,
            ),
            (
                "isle_cp_log_flushes",
                "Group-commit flushes (one fsync covering every batch queued meanwhile)",
                &log.flushes,
            ),
            (
                "isle_cp_log_batches_flushed",
                "Batches made durable by group-commit flushes",
                &log.batches_flushed,
            ),
            (
                "isle_cp_linearizable_reads",
                "Linearizable reads confirmed by a ReadIndex round on this node",
                &reads.linearizable_reads,
            ),
            (
                "isle_cp_read_index_rounds",
                "ReadIndex rounds (quorum confirmations) run on this node",
                &reads.read_index_rounds,
            ),
            (
                "isle_cp_serializable_reads",
                "Serializable reads served from this node's replica without Raft",
                &reads.serializable_reads,
            ),
        ]
    }
}

impl Collector for CpCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for (name, help, value) in self.counters() {
            let counter = ConstCounter::new(LogStats::get(value));
            let metric = encoder.encode_descriptor(name, help, None, counter.metric_type())?;
            counter.encode(metric)?;
        }
        Ok(())
    }
}
