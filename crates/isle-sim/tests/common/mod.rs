//! Shared by the simulation tests: lighter clients in debug builds; the run and its checks are
//! `isle_sim::sweep::run_and_check`.

#![allow(dead_code)]

use isle_sim::SimConfig;
pub use isle_sim::sweep::run_and_check;

/// Lighter clients in debug builds (an operation costs ~5 ms of wall time unoptimized, ~0.1 ms
/// optimized), so the debug suite stays within a minute on 2 cores.
pub fn lighten(config: SimConfig) -> SimConfig {
    if cfg!(debug_assertions) {
        config.workload(|w| {
            w.clients_per_node = 1;
            w.think_ms_max = 120;
        })
    } else {
        config
    }
}
